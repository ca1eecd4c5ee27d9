//! Granting workers to jobs, and taking them back.
//!
//! Both change the job (its `allocated_workers`, its version, and for a first grant its state), so
//! both honour `If-Match` against the job's version, like every state-changing POST.

use crate::quotas::configured;
use orchestrator_core::ApiError;
use orchestrator_core::auth::Scope;
use orchestrator_core::events::NewEvent;
use orchestrator_core::ids::{AllocationId, JobId};
use orchestrator_core::job::plan_allocation;
use orchestrator_core::quota::{Grant, Release, grant_across};
use orchestrator_core::requests::{AllocateWorkers, ReleaseWorkers};
use orchestrator_core::validation::Depth;
use orchestrator_edge::store::{allocations, jobs, quotas};
use orchestrator_edge::{Context, Reply, Request, random_bytes, write};

/// `POST /api/resources/allocate`: grants up to `worker_count` workers at the job's depth, starting a
/// PENDING job.
pub async fn allocate(request: &Request, context: &Context) -> Result<Reply, ApiError> {
    context.caller.require(Scope::ResourcesWrite)?;
    let body: AllocateWorkers = request.json()?;
    let max_workers = configured().await?.max_workers(body.depth);
    let if_match = request.header("if-match");
    write(context, request, async |tx| {
        // Never over-grant, however many requests race on however many instances: the decision is
        // made under row locks held until commit. First the job (so its state, depth and holdings
        // cannot change underneath, and concurrent allocations for one job queue here), then the
        // depth's quota: the job's own stripe when it can cover the whole request (exact, and only
        // allocations hashed to that stripe wait for it), else every stripe of the depth, in order,
        // so the depth's total is exact until commit. Jobs before stripes is the order every writer
        // follows (cancel, complete, fail, release), so none of them can deadlock with this.
        let job = jobs::lock_for_change(&tx.db, &body.job_id, &context.caller, if_match.as_deref())
            .await?;
        let start = plan_allocation(&job.id, job.depth, job.status, body.depth, &tx.actor)?;
        let requested = body.worker_count.get();
        let granted =
            if quotas::take_from_own_stripe(&tx.db, &job.id, body.depth, max_workers, requested)
                .await?
            {
                requested
            } else {
                let depth = quotas::lock_depth(&tx.db, &job.id, body.depth).await?;
                let (granted, layout) = grant_across(
                    body.depth,
                    body.worker_count,
                    max_workers,
                    depth.allocated,
                    depth.home,
                )?;
                tx.defer(quotas::Relayout::new(body.depth, max_workers, layout));
                granted
            };
        let grant = Grant {
            job_id: job.id.clone(),
            depth: body.depth,
            requested: body.worker_count,
            granted,
            allocation_id: AllocationId::generate(random_bytes()),
        };
        tx.defer(allocations::Grant::new(
            &grant.allocation_id,
            &job.id,
            &job.workspace_id,
            body.depth,
            granted,
        ));
        if let Some(start) = start {
            tx.audit(std::slice::from_ref(&start));
            tx.emit(NewEvent::state_changed(&start, &job.workspace_id));
        }
        tx.emit(NewEvent::resources_allocated(
            &grant,
            &job.workspace_id,
            &tx.actor,
        ));
        Reply::json(201, &grant)
    })
    .await
}

/// `POST /api/resources/release`: frees everything the job holds at that depth. Holding nothing there
/// (including at a depth other than the job's, where it can never hold anything) is `released: false`,
/// with no change and no event.
pub async fn release(request: &Request, context: &Context) -> Result<Reply, ApiError> {
    context.caller.require(Scope::ResourcesWrite)?;
    let body: ReleaseWorkers = request.json()?;
    let if_match = request.header("if-match");
    write(context, request, async |tx| {
        // Same lock order as allocating: the job, then (inside `allocations::release`) its stripe.
        let job = jobs::lock_for_change(&tx.db, &body.job_id, &context.caller, if_match.as_deref())
            .await?;
        let holding: Vec<(JobId, Depth)> = (job.depth == body.depth && job.allocated_workers > 0)
            .then(|| (job.id.clone(), job.depth))
            .into_iter()
            .collect();
        let release = match allocations::release(&tx.db, &holding).await?.pop() {
            Some(release) => {
                tx.defer(jobs::RemoveWorkers::new(&job.id, release.released_workers));
                tx.emit(NewEvent::resources_released(
                    &release,
                    &job.workspace_id,
                    &tx.actor,
                ));
                release
            }
            None => Release::new(job.id, body.depth, 0),
        };
        Reply::ok(&release)
    })
    .await
}
