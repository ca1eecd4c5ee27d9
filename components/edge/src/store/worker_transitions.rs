//! `worker_transitions`: the audit trail of worker state changes, written in the transaction of the
//! change (contract §4).

use super::{Millis, ms};
use crate::db::{Columns, Db, Row, text};
use orchestrator_core::ApiError;
use orchestrator_core::ids::WorkerId;
use orchestrator_core::lifecycle::{State, Transition};
use orchestrator_core::worker::WorkerState;
use serde::Serialize;

/// One audit row as the API shows it.
#[derive(Debug, Serialize)]
pub struct Record {
    /// `null` for the registration row.
    pub from_state: Option<WorkerState>,
    pub to_state: WorkerState,
    pub reason: Option<String>,
    pub actor: String,
    pub at: Millis,
}

impl Record {
    fn from_row(row: &Row) -> Result<Self, ApiError> {
        let from_state = match row.optional_text(0)? {
            Some(_) => Some(row.state(0)?),
            None => None,
        };
        Ok(Self {
            from_state,
            to_state: row.state(1)?,
            reason: row.optional_text(2)?,
            actor: row.text(3)?,
            at: Millis(row.int(4)?),
        })
    }
}

/// Records a move of a worker whose row the transaction holds locked. `at` is the clock, not the
/// transaction's start, so the trail's order by `at` is the order of the moves (see `workers`).
pub async fn insert(db: &Db, transition: &Transition<WorkerState>) -> Result<(), ApiError> {
    db.execute(
        "INSERT INTO worker_transitions (worker_id, from_state, to_state, reason, actor, at) \
         VALUES ($1, $2, $3, $4, $5, clock_timestamp())",
        [
            text(transition.id.as_str()),
            transition.from.map(|s| s.as_str().to_owned()).into(),
            text(transition.to.as_str()),
            transition.reason.clone().into(),
            text(&transition.actor),
        ],
    )
    .await?;
    Ok(())
}

/// One page of a worker's trail, oldest first.
pub async fn list(
    db: &Db,
    worker: &WorkerId,
    limit: i64,
    offset: i64,
) -> Result<Vec<Record>, ApiError> {
    let sql = concat!(
        "SELECT from_state, to_state, reason, actor, ",
        ms!("at"),
        " FROM worker_transitions WHERE worker_id = $1 ORDER BY at, id LIMIT $2 OFFSET $3"
    );
    db.rows(sql, [text(worker.as_str()), limit.into(), offset.into()])
        .await?
        .iter()
        .map(Record::from_row)
        .collect()
}

pub async fn count(db: &Db, worker: &WorkerId) -> Result<i64, ApiError> {
    db.row(
        "SELECT count(*) FROM worker_transitions WHERE worker_id = $1",
        [text(worker.as_str())],
    )
    .await?
    .int(0)
}
