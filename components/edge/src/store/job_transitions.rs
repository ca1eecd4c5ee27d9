//! `job_transitions`: the audit trail of job state changes.

use super::audit_trail::{Audited, Trail};
use crate::db::Db;
use orchestrator_core::ApiError;
use orchestrator_core::ids::JobId;
use orchestrator_core::job::JobState;

/// One audit row as the API shows it.
pub type AuditRow = super::audit_trail::AuditRow<JobState>;

impl Audited for JobState {
    const TRAIL: Trail = Trail {
        table: "job_transitions",
        subject: "job_id",
        rows_name: "job_moves",
    };
}

/// One page of a job's trail, oldest first.
pub async fn list(
    db: &Db,
    job: &JobId,
    limit: i64,
    offset: i64,
) -> Result<Vec<AuditRow>, ApiError> {
    JobState::TRAIL.list(db, job, limit, offset).await
}

pub async fn count(db: &Db, job: &JobId) -> Result<i64, ApiError> {
    JobState::TRAIL.count(db, job.as_str()).await
}
