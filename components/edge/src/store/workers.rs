//! `workers` (and the `worker_counts` a trigger keeps beside it).
//!
//! Changes to an existing worker are stamped with `clock_timestamp()`, not `now()`: the row lock is
//! taken after the transaction began, so `now()` can precede the commit of a registration that raced
//! it, and `updated_at` would then fall before `created_at` (a CHECK violation).

use super::{Millis, ms};
use crate::db::{Columns, Db, Row, text};
use orchestrator_core::ApiError;
use orchestrator_core::ids::{WorkerId, WorkspaceId};
use orchestrator_core::lifecycle::State;
use orchestrator_core::validation::JsonObject;
use orchestrator_core::worker::WorkerState;
use serde::Serialize;
use spin_sdk::pg::ParameterValue;

/// A worker as the API shows it.
#[derive(Debug, Serialize)]
pub struct Worker {
    pub id: WorkerId,
    pub workspace_id: WorkspaceId,
    pub status: WorkerState,
    pub metadata: serde_json::Value,
    pub created_at: Millis,
    pub updated_at: Millis,
    pub version: i64,
    pub last_heartbeat_at: Option<Millis>,
}

const COLUMNS: &str = concat!(
    "id, workspace_id, status, metadata, ",
    ms!("created_at"),
    ", ",
    ms!("updated_at"),
    ", version, ",
    ms!("last_heartbeat_at")
);

impl Worker {
    fn from_row(row: &Row) -> Result<Self, ApiError> {
        let stored = |what: &str| ApiError::Internal(format!("stored worker has a bad {what}"));
        Ok(Self {
            id: WorkerId::parse(&row.text(0)?).map_err(|_| stored("id"))?,
            workspace_id: WorkspaceId::parse(&row.text(1)?).map_err(|_| stored("workspace_id"))?,
            status: row.state(2)?,
            metadata: row.json(3)?.unwrap_or_default(),
            created_at: Millis(row.int(4)?),
            updated_at: Millis(row.int(5)?),
            version: row.int(6)?,
            last_heartbeat_at: row.optional_int(7)?.map(Millis),
        })
    }
}

/// Which workers a list (or a count) covers.
#[derive(Debug, Default)]
pub struct Filter {
    pub workspace: Option<WorkspaceId>,
    pub status: Option<WorkerState>,
}

impl Filter {
    /// The `WHERE` clause and its parameters, with only the filters present,
    /// so each combination gets a plan that uses its index.
    fn clause(&self) -> (String, Vec<ParameterValue>) {
        let mut conditions = Vec::new();
        let mut params = Vec::new();
        if let Some(workspace) = &self.workspace {
            params.push(text(workspace.as_str()));
            conditions.push(format!("workspace_id = ${}", params.len()));
        }
        if let Some(status) = self.status {
            params.push(text(status.as_str()));
            conditions.push(format!("status = ${}", params.len()));
        }
        let clause = if conditions.is_empty() {
            String::new()
        } else {
            format!(" WHERE {}", conditions.join(" AND "))
        };
        (clause, params)
    }
}

/// Runs a statement about one worker (`$1` is its id) that returns its columns, if it exists.
async fn one(db: &Db, sql: &str, params: Vec<ParameterValue>) -> Result<Option<Worker>, ApiError> {
    db.optional_row(sql, params)
        .await?
        .as_ref()
        .map(Worker::from_row)
        .transpose()
}

pub async fn get(db: &Db, id: &WorkerId) -> Result<Option<Worker>, ApiError> {
    let sql = format!("SELECT {COLUMNS} FROM workers WHERE id = $1");
    one(db, &sql, vec![text(id.as_str())]).await
}

/// Reads a worker and locks its row until the transaction ends: every change to a worker starts here,
/// so concurrent actions on it are decided one after the other.
pub async fn lock(db: &Db, id: &WorkerId) -> Result<Option<Worker>, ApiError> {
    let sql = format!("SELECT {COLUMNS} FROM workers WHERE id = $1 FOR UPDATE");
    one(db, &sql, vec![text(id.as_str())]).await
}

/// Registers a worker, IDLE at version 1. `None` when the id is already taken (in any workspace):
/// the conflict is an answer, not an error, so the transaction stays usable.
pub async fn insert(
    db: &Db,
    id: &WorkerId,
    workspace: &WorkspaceId,
    metadata: &JsonObject,
) -> Result<Option<Worker>, ApiError> {
    let metadata = serde_json::to_vec(metadata)
        .map_err(|e| ApiError::Internal(format!("metadata is not JSON: {e}")))?;
    let sql = format!(
        "INSERT INTO workers (id, workspace_id, metadata) VALUES ($1, $2, $3) \
         ON CONFLICT (id) DO NOTHING RETURNING {COLUMNS}"
    );
    let params = vec![
        text(id.as_str()),
        text(workspace.as_str()),
        ParameterValue::Jsonb(metadata),
    ];
    one(db, &sql, params).await
}

/// Moves a worker locked by [`lock`] to `status`: one version more, updated now.
pub async fn set_status(db: &Db, id: &WorkerId, status: WorkerState) -> Result<Worker, ApiError> {
    let sql = format!(
        "UPDATE workers SET status = $2, version = version + 1, updated_at = clock_timestamp() \
         WHERE id = $1 RETURNING {COLUMNS}"
    );
    one(db, &sql, vec![text(id.as_str()), text(status.as_str())])
        .await?
        .ok_or_else(|| id.not_found())
}

/// Records that a worker locked by [`lock`] is alive. Not a change of the worker (no version, no
/// `updated_at`): see the heartbeat endpoint.
pub async fn record_heartbeat(db: &Db, id: &WorkerId) -> Result<Worker, ApiError> {
    let sql = format!(
        "UPDATE workers SET last_heartbeat_at = clock_timestamp() WHERE id = $1 RETURNING {COLUMNS}"
    );
    one(db, &sql, vec![text(id.as_str())])
        .await?
        .ok_or_else(|| id.not_found())
}

/// One page in the stable order (`created_at`, then `id`).
pub async fn list(
    db: &Db,
    filter: &Filter,
    limit: i64,
    offset: i64,
) -> Result<Vec<Worker>, ApiError> {
    let (clause, mut params) = filter.clause();
    let sql = format!(
        "SELECT {COLUMNS} FROM workers{clause} ORDER BY created_at, id LIMIT ${} OFFSET ${}",
        params.len() + 1,
        params.len() + 2
    );
    params.extend([limit.into(), offset.into()]);
    db.rows(&sql, params)
        .await?
        .iter()
        .map(Worker::from_row)
        .collect()
}

/// How many workers match, from the counters rather than a table scan.
pub async fn count(db: &Db, filter: &Filter) -> Result<i64, ApiError> {
    let (clause, params) = filter.clause();
    let sql = format!("SELECT coalesce(sum(count), 0)::int8 FROM worker_counts{clause}");
    db.row(&sql, params).await?.int(0)
}

/// Workers per status, from the counters rather than a table scan. A status no worker ever had in
/// the filtered workspaces is absent.
pub async fn count_by_status(
    db: &Db,
    workspace: Option<WorkspaceId>,
) -> Result<Vec<(WorkerState, i64)>, ApiError> {
    let filter = Filter {
        workspace,
        status: None,
    };
    let (clause, params) = filter.clause();
    let sql = format!("SELECT status, sum(count)::int8 FROM worker_counts{clause} GROUP BY status");
    db.rows(&sql, params)
        .await?
        .iter()
        .map(|row| Ok((row.state(0)?, row.int(1)?)))
        .collect()
}
