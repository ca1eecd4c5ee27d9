//! `workers` (and the `worker_counts` a trigger keeps beside it).

use super::{Millis, ms};
use crate::db::{Columns, Db, Row, text};
use orchestrator_core::ApiError;
use orchestrator_core::ids::{WorkerId, WorkspaceId};
use orchestrator_core::lifecycle::State;
use orchestrator_core::worker::WorkerState;
use serde::Serialize;
use spin_sdk::pg::ParameterValue;

/// A worker as the API shows it.
#[derive(Debug, Serialize)]
pub struct Worker {
    pub id: String,
    pub workspace_id: String,
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
        Ok(Self {
            id: row.text(0)?,
            workspace_id: row.text(1)?,
            status: row.state(2)?,
            metadata: row.json(3)?.unwrap_or_default(),
            created_at: Millis(row.int(4)?),
            updated_at: Millis(row.int(5)?),
            version: row.int(6)?,
            last_heartbeat_at: row.optional_int(7)?.map(Millis),
        })
    }
}

/// Which workers a list shows.
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

pub async fn get(db: &Db, id: &WorkerId) -> Result<Option<Worker>, ApiError> {
    let sql = format!("SELECT {COLUMNS} FROM workers WHERE id = $1");
    db.optional_row(&sql, [text(id.as_str())])
        .await?
        .as_ref()
        .map(Worker::from_row)
        .transpose()
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
