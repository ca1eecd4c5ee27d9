//! The request bodies of the API, decoded with [`crate::body::parse_json`].
//!
//! They live here, not in the components, so the components and the fuzz targets decode exactly the
//! same types. Every field is one of this crate's validated types, and unknown fields are refused.

use serde::{Deserialize, Serialize};

use crate::ids::{JobId, WorkerId, WorkspaceId};
use crate::validation::{Depth, JobError, JsonObject, Reason, TaskDescription, WorkerCount};

/// `POST /api/supervisor/workers`; every field is optional.
#[derive(Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegisterWorker {
    pub id: Option<WorkerId>,
    pub workspace_id: Option<WorkspaceId>,
    pub metadata: Option<JsonObject>,
}

/// A worker's lifecycle actions and a job's cancel: `{reason?}`, or empty.
#[derive(Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WithReason {
    pub reason: Option<Reason>,
}

/// A body that must be empty or `{}` (a heartbeat).
#[derive(Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoFields {}

/// `POST /api/jobs/submit`
#[derive(Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubmitJob {
    pub task_description: TaskDescription,
    pub worker_count: WorkerCount,
    #[serde(default)]
    pub depth: Depth,
    pub parent_job_id: Option<JobId>,
    pub workspace_id: Option<WorkspaceId>,
}

/// `POST /api/jobs/{id}/complete`
#[derive(Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CompleteJob {
    pub result: Option<JsonObject>,
}

/// `POST /api/jobs/{id}/fail`
#[derive(Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FailJob {
    pub error: JobError,
}

/// `POST /api/resources/allocate`
#[derive(Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AllocateWorkers {
    pub job_id: JobId,
    pub depth: Depth,
    pub worker_count: WorkerCount,
}

/// `POST /api/resources/release`
#[derive(Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReleaseWorkers {
    pub job_id: JobId,
    pub depth: Depth,
}
