//! `worker_transitions`: the audit trail of worker state changes, written in the transaction of the
//! change (contract §4).

use super::audit_trail::Trail;
use crate::db::Db;
use orchestrator_core::ApiError;
use orchestrator_core::ids::WorkerId;
use orchestrator_core::lifecycle::Transition;
use orchestrator_core::worker::WorkerState;

/// One audit row as the API shows it; `from_state` is `null` for the registration row.
pub type Record = super::audit_trail::AuditRow<WorkerState>;

const TRAIL: Trail = Trail {
    table: "worker_transitions",
    subject: "worker_id",
};

/// Records a move of a worker whose row the transaction holds locked. `at` is the clock, not the
/// transaction's start, so the trail's order by `at` is the order of the moves (see `workers`).
pub async fn insert(db: &Db, transition: &Transition<WorkerState>) -> Result<(), ApiError> {
    TRAIL.insert(db, std::slice::from_ref(transition)).await
}

/// One page of a worker's trail, oldest first.
pub async fn list(
    db: &Db,
    worker: &WorkerId,
    limit: i64,
    offset: i64,
) -> Result<Vec<Record>, ApiError> {
    TRAIL.list(db, worker, limit, offset).await
}

pub async fn count(db: &Db, worker: &WorkerId) -> Result<i64, ApiError> {
    TRAIL.count(db, worker.as_str()).await
}
