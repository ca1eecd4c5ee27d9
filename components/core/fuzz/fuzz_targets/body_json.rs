//! Request bodies through `body::parse_json` into every request type the components decode.
//!
//! The request types live in the components, so they are mirrored here field for field (same core
//! types, same `deny_unknown_fields`). Invariants: never a panic; a refusal is 400, 413, 415 or 422
//! with the contract's body; a missing `Content-Type` reads like `application/json`; and what parses,
//! re-serialised, parses back to the same value.
#![no_main]

use std::fmt::Debug;

use libfuzzer_sys::fuzz_target;
use orchestrator_core::body::{MAX_BODY_BYTES, parse_json};
use orchestrator_core::ids::{JobId, WorkerId, WorkspaceId};
use orchestrator_core::validation::{
    Depth, JobError, JsonObject, Reason, TaskDescription, WorkerCount,
};
use orchestrator_core_fuzz::assert_refusal;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// `POST /api/supervisor/workers`
#[derive(Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Registration {
    id: Option<WorkerId>,
    workspace_id: Option<WorkspaceId>,
    metadata: Option<JsonObject>,
}

/// `POST /api/supervisor/workers/{id}/<action>` and `POST /api/jobs/{id}/cancel`
#[derive(Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct WithReason {
    reason: Option<Reason>,
}

/// `POST /api/supervisor/workers/{id}/heartbeat`
#[derive(Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct NoFields {}

/// `POST /api/jobs/submit`
#[derive(Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Submit {
    task_description: TaskDescription,
    worker_count: WorkerCount,
    #[serde(default)]
    depth: Depth,
    parent_job_id: Option<JobId>,
    workspace_id: Option<WorkspaceId>,
}

/// `POST /api/jobs/{id}/complete`
#[derive(Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Complete {
    result: Option<JsonObject>,
}

/// `POST /api/jobs/{id}/fail`
#[derive(Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Fail {
    error: JobError,
}

/// `POST /api/resources/allocate`
#[derive(Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Allocate {
    job_id: JobId,
    depth: Depth,
    worker_count: WorkerCount,
}

/// `POST /api/resources/release`
#[derive(Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReleaseBody {
    job_id: JobId,
    depth: Depth,
}

fn check<T: DeserializeOwned + Serialize + PartialEq + Debug>(body: &[u8]) {
    let declared = parse_json::<T>(Some("application/json; charset=utf-8"), body);
    let undeclared = parse_json::<T>(None, body);
    assert_eq!(declared, undeclared, "a missing Content-Type reads as JSON");
    match declared {
        Ok(value) => {
            let again = serde_json::to_vec(&value).expect("a request serialises");
            assert!(again.len() <= MAX_BODY_BYTES);
            let reparsed = parse_json::<T>(Some("application/json"), &again);
            assert_eq!(
                reparsed.as_ref(),
                Ok(&value),
                "{}",
                String::from_utf8_lossy(&again)
            );
        }
        Err(error) => {
            assert_refusal(&error, &[400, 413, 422]);
            assert_eq!(error.status() == 413, body.len() > MAX_BODY_BYTES);
        }
    }
    let blank = body.iter().all(u8::is_ascii_whitespace);
    match parse_json::<T>(Some("text/plain"), body) {
        Ok(_) => assert!(blank, "only an empty body passes as text/plain"),
        Err(error) => assert_refusal(&error, &[400, 413, 415, 422]),
    }
}

fuzz_target!(|body: &[u8]| {
    check::<Registration>(body);
    check::<WithReason>(body);
    check::<NoFields>(body);
    check::<Submit>(body);
    check::<Complete>(body);
    check::<Fail>(body);
    check::<Allocate>(body);
    check::<ReleaseBody>(body);
});
