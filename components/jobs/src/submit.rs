//! Submitting jobs.

use orchestrator_core::ApiError;
use orchestrator_core::auth::Scope;
use orchestrator_core::events::NewEvent;
use orchestrator_core::ids::JobId;
use orchestrator_core::job::{check_parent, submission_transitions};
use orchestrator_core::requests::SubmitJob;
use orchestrator_edge::db::Db;
use orchestrator_edge::store::jobs::{self, Job, NewJob};
use orchestrator_edge::{Context, Reply, Request, random_bytes, write};

/// `POST /api/jobs/submit`: creates a PENDING job (recorded as SUBMITTED, then PENDING).
pub async fn submit(request: &Request, context: &Context) -> Result<Reply, ApiError> {
    context.caller.require(Scope::JobsWrite)?;
    let body: SubmitJob = request.json()?;
    let workspace = context
        .caller
        .workspace_for_create(body.workspace_id.clone())?;
    write(context, request, async |tx| {
        if let Some(parent) = &body.parent_job_id {
            let loaded = jobs::lock_parent(&tx.db, parent).await?;
            check_parent(parent, loaded.as_ref(), &workspace, body.depth)?;
        }
        let new = NewJob {
            workspace_id: &workspace,
            task_description: &body.task_description,
            worker_count: body.worker_count,
            depth: body.depth,
            parent_job_id: body.parent_job_id.as_ref(),
        };
        let job = insert_with_fresh_id(&tx.db, &new).await?;
        let records = submission_transitions(&job.id, &tx.actor);
        tx.audit(&records);
        let data = serde_json::to_value(&job)
            .map_err(|e| ApiError::Internal(format!("job is not JSON: {e}")))?;
        tx.emit(NewEvent::job_submitted(
            &job.id,
            &job.workspace_id,
            &tx.actor,
            data,
        ));
        let [_, pending] = &records;
        tx.emit(NewEvent::state_changed(pending, &job.workspace_id));
        Reply::json(201, &job).map(|reply| reply.with_etag(job.version))
    })
    .await
}

/// Draws of a fresh id before giving up. Ids carry 48 random bits: a clash is rare, but over millions
/// of jobs not negligible, so a taken id is drawn again rather than failing the request.
const ID_DRAWS: usize = 3;

async fn insert_with_fresh_id(db: &Db, new: &NewJob<'_>) -> Result<Job, ApiError> {
    for _ in 0..ID_DRAWS {
        if let Some(job) = jobs::insert(db, &JobId::generate(random_bytes()), new).await? {
            return Ok(job);
        }
    }
    Err(ApiError::Internal(format!(
        "no free job id in {ID_DRAWS} draws"
    )))
}
