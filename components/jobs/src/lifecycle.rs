//! The moves that end a job: cancel (with its whole subtree), complete and fail.
//!
//! A job that ends frees every worker it holds in the same transaction, and each ended job gets its
//! own audit row and events.

use orchestrator_core::ApiError;
use orchestrator_core::auth::Scope;
use orchestrator_core::events::NewEvent;
use orchestrator_core::ids::JobId;
use orchestrator_core::job::{JobNode, JobState, plan_cancel};
use orchestrator_core::lifecycle::{Transition, plan_transition};
use orchestrator_core::requests::{CompleteJob, FailJob, WithReason};
use orchestrator_core::validation::Depth;
use orchestrator_edge::store::allocations;
use orchestrator_edge::store::jobs::{self, Job, Outcome};
use orchestrator_edge::{Context, Reply, Request, Tx, write};

/// `POST /api/jobs/{id}/cancel`: cancels the job and every non-terminal job below it.
pub async fn cancel(id: &str, request: &Request, context: &Context) -> Result<Reply, ApiError> {
    context.caller.require(Scope::JobsWrite)?;
    let id = JobId::from_path(id)?;
    let body: WithReason = request.json()?;
    write(context, request, async |tx| {
        let root = locked(tx, &id, request, context).await?;
        // The whole tree is locked (root first, then by depth and id) before planning, so no job of it
        // can change, and none can be added under it, until this commits.
        let tree = jobs::lock_tree(&tx.db, root).await?;
        let nodes: Vec<JobNode> = tree
            .iter()
            .map(|job| JobNode {
                id: job.id.clone(),
                parent_id: job.parent_job_id.clone(),
                state: job.status,
            })
            .collect();
        let plan = plan_cancel(&id, &nodes, body.reason.clone(), &tx.actor)?;
        end(tx, &tree, &plan, &Outcome::Canceled, &id).await
    })
    .await
}

/// `POST /api/jobs/{id}/complete`
pub async fn complete(id: &str, request: &Request, context: &Context) -> Result<Reply, ApiError> {
    context.caller.require(Scope::JobsWrite)?;
    let id = JobId::from_path(id)?;
    let body: CompleteJob = request.json()?;
    let outcome = Outcome::Completed(body.result);
    finish_one(&id, &outcome, request, context).await
}

/// `POST /api/jobs/{id}/fail`
pub async fn fail(id: &str, request: &Request, context: &Context) -> Result<Reply, ApiError> {
    context.caller.require(Scope::JobsWrite)?;
    let id = JobId::from_path(id)?;
    let body: FailJob = request.json()?;
    let outcome = Outcome::Failed(body.error.into_string());
    finish_one(&id, &outcome, request, context).await
}

/// Ends one job with `outcome`, if the state table allows it (only RUNNING may complete or fail).
async fn finish_one(
    id: &JobId,
    outcome: &Outcome,
    request: &Request,
    context: &Context,
) -> Result<Reply, ApiError> {
    write(context, request, async |tx| {
        let job = locked(tx, id, request, context).await?;
        let transition = plan_transition(id, job.status, outcome.state(), None, &tx.actor)?;
        end(tx, &[job], &[transition], outcome, id).await
    })
    .await
}

/// The job the path names, locked for the change (404, then 412 on `If-Match`).
async fn locked(
    tx: &Tx,
    id: &JobId,
    request: &Request,
    context: &Context,
) -> Result<Job, ApiError> {
    jobs::lock_for_change(
        &tx.db,
        id,
        &context.caller,
        request.header("if-match").as_deref(),
    )
    .await
}

/// Carries out `plan` over the `tree` of jobs it was made from (all locked): frees what the ending jobs hold, ends them with `outcome`,
/// records each move, and emits per job `resources.released` (if it held anything) and
/// `job.state.changed`. Replies with the job `id` names, as it now is.
async fn end(
    tx: &mut Tx,
    tree: &[Job],
    plan: &[Transition<JobState>],
    outcome: &Outcome,
    id: &JobId,
) -> Result<Reply, ApiError> {
    let ending = plan
        .iter()
        .map(|transition| {
            tree.iter()
                .find(|job| job.id == transition.id)
                .map(|job| (transition, job))
                .ok_or_else(|| ApiError::Internal(format!("{} is not locked", transition.id)))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let holders: Vec<(JobId, Depth)> = ending
        .iter()
        .filter(|(_, job)| job.allocated_workers > 0)
        .map(|(_, job)| (job.id.clone(), job.depth))
        .collect();
    let releases = allocations::release(&tx.db, &holders).await?;
    let ids: Vec<JobId> = ending.iter().map(|(_, job)| job.id.clone()).collect();
    let ended = jobs::finish(&tx.db, &ids, outcome).await?;
    tx.audit(plan);
    for (transition, job) in ending {
        if let Some(release) = releases.iter().find(|release| release.job_id == job.id) {
            tx.emit(NewEvent::resources_released(
                release,
                &job.workspace_id,
                &tx.actor,
            ));
        }
        tx.emit(NewEvent::state_changed(transition, &job.workspace_id));
    }
    let job = ended
        .into_iter()
        .find(|job| &job.id == id)
        .ok_or_else(|| ApiError::Internal(format!("job {id} did not end")))?;
    Reply::ok(&job).map(|reply| reply.with_etag(job.version))
}
