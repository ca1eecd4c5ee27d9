//! `jobs`.

use super::{Millis, ms};
use crate::db::{Columns, Db, Row, text};
use orchestrator_core::ApiError;
use orchestrator_core::ids::JobId;
use orchestrator_core::job::JobState;
use serde::Serialize;

/// A job as the API shows it.
#[derive(Debug, Serialize)]
pub struct Job {
    pub id: String,
    pub workspace_id: String,
    pub status: JobState,
    pub task_description: String,
    pub worker_count: i64,
    pub depth: i64,
    pub parent_job_id: Option<String>,
    pub allocated_workers: i64,
    pub created_at: Millis,
    pub updated_at: Millis,
    pub started_at: Option<Millis>,
    pub completed_at: Option<Millis>,
    pub version: i64,
    pub result: Option<serde_json::Value>,
    pub error: Option<String>,
}

const COLUMNS: &str = concat!(
    "id, workspace_id, status, task_description, worker_count, depth, parent_job_id, allocated_workers, ",
    ms!("created_at"),
    ", ",
    ms!("updated_at"),
    ", ",
    ms!("started_at"),
    ", ",
    ms!("completed_at"),
    ", version, result, error"
);

impl Job {
    fn from_row(row: &Row) -> Result<Self, ApiError> {
        Ok(Self {
            id: row.text(0)?,
            workspace_id: row.text(1)?,
            status: row.state(2)?,
            task_description: row.text(3)?,
            worker_count: row.int(4)?,
            depth: row.int(5)?,
            parent_job_id: row.optional_text(6)?,
            allocated_workers: row.int(7)?,
            created_at: Millis(row.int(8)?),
            updated_at: Millis(row.int(9)?),
            started_at: row.optional_int(10)?.map(Millis),
            completed_at: row.optional_int(11)?.map(Millis),
            version: row.int(12)?,
            result: row.json(13)?,
            error: row.optional_text(14)?,
        })
    }
}

pub async fn get(db: &Db, id: &JobId) -> Result<Option<Job>, ApiError> {
    let sql = format!("SELECT {COLUMNS} FROM jobs WHERE id = $1");
    db.optional_row(&sql, [text(id.as_str())])
        .await?
        .as_ref()
        .map(Job::from_row)
        .transpose()
}
