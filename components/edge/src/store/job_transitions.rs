//! `job_transitions`: the audit trail of job state changes.

use super::{Millis, ms};
use crate::db::{Columns, Db, Row, text};
use orchestrator_core::ApiError;
use orchestrator_core::ids::JobId;
use orchestrator_core::job::JobState;
use orchestrator_core::lifecycle::{State, Transition};
use serde::Serialize;
use spin_sdk::pg::ParameterValue;

/// One audit row as the API shows it.
#[derive(Debug, Serialize)]
pub struct AuditRow {
    pub from_state: Option<JobState>,
    pub to_state: JobState,
    pub reason: Option<String>,
    pub actor: String,
    pub at: Millis,
}

impl AuditRow {
    fn from_row(row: &Row) -> Result<Self, ApiError> {
        Ok(Self {
            from_state: row.optional_text(0)?.map(|_| row.state(0)).transpose()?,
            to_state: row.state(1)?,
            reason: row.optional_text(2)?,
            actor: row.text(3)?,
            at: Millis(row.int(4)?),
        })
    }
}

/// Records `transitions` in order, in one statement. `at` is the clock at the insert, not the
/// transaction's start, so the trail of a job reads in the order its locked changes happened.
pub async fn insert(db: &Db, transitions: &[Transition<JobState>]) -> Result<(), ApiError> {
    let column = |f: fn(&Transition<JobState>) -> Option<String>| -> ParameterValue {
        transitions.iter().map(f).collect::<Vec<_>>().into()
    };
    db.execute(
        "INSERT INTO job_transitions (job_id, from_state, to_state, reason, actor, at) \
         SELECT j, f, t, r, a, clock_timestamp() \
         FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[]) \
              WITH ORDINALITY AS e(j, f, t, r, a, n) ORDER BY n",
        [
            column(|t| Some(t.id.as_str().to_owned())),
            column(|t| t.from.map(|s| s.as_str().to_owned())),
            column(|t| Some(t.to.as_str().to_owned())),
            column(|t| t.reason.clone()),
            column(|t| Some(t.actor.clone())),
        ],
    )
    .await?;
    Ok(())
}

/// One page of a job's trail, oldest first.
pub async fn list(
    db: &Db,
    job: &JobId,
    limit: i64,
    offset: i64,
) -> Result<Vec<AuditRow>, ApiError> {
    let sql = concat!(
        "SELECT from_state, to_state, reason, actor, ",
        ms!("at"),
        " FROM job_transitions WHERE job_id = $1 ORDER BY at, id LIMIT $2 OFFSET $3"
    );
    db.rows(sql, [text(job.as_str()), limit.into(), offset.into()])
        .await?
        .iter()
        .map(AuditRow::from_row)
        .collect()
}

pub async fn count(db: &Db, job: &JobId) -> Result<i64, ApiError> {
    db.row(
        "SELECT count(*) FROM job_transitions WHERE job_id = $1",
        [text(job.as_str())],
    )
    .await?
    .int(0)
}
