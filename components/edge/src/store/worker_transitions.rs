//! `worker_transitions`: the audit trail of worker state changes, written in the transaction of the
//! change (contract §4).

use super::audit_trail::{Audited, Trail};
use crate::db::Db;
use orchestrator_core::ApiError;
use orchestrator_core::ids::WorkerId;
use orchestrator_core::worker::WorkerState;

/// One audit row as the API shows it; `from_state` is `null` for the registration row.
pub type Record = super::audit_trail::AuditRow<WorkerState>;

impl Audited for WorkerState {
    const TRAIL: Trail = Trail {
        table: "worker_transitions",
        subject: "worker_id",
        rows_name: "worker_moves",
    };
}

/// One page of a worker's trail, oldest first.
pub async fn list(
    db: &Db,
    worker: &WorkerId,
    limit: i64,
    offset: i64,
) -> Result<Vec<Record>, ApiError> {
    WorkerState::TRAIL.list(db, worker, limit, offset).await
}

pub async fn count(db: &Db, worker: &WorkerId) -> Result<i64, ApiError> {
    WorkerState::TRAIL.count(db, worker.as_str()).await
}
