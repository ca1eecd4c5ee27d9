//! Reading jobs, their children and their audit trail.

use orchestrator_core::ApiError;
use orchestrator_core::auth::{Scope, WorkspaceFilter};
use orchestrator_core::ids::{JobId, WorkspaceId};
use orchestrator_core::job::JobState;
use orchestrator_core::query::Page;
use orchestrator_core::validation::Depth;
use orchestrator_edge::db::Db;
use orchestrator_edge::live::{Versioned, read_or_wait};
use orchestrator_edge::store::job_transitions;
use orchestrator_edge::store::jobs::{self, Filter, Job};
use orchestrator_edge::{Context, Reply, Request};

/// The job `id` names, if the caller may see it: another workspace's job is as unknown as a missing one.
async fn visible(db: &Db, id: &JobId, context: &Context) -> Result<Job, ApiError> {
    let job = jobs::get(db, id).await?.ok_or_else(|| id.not_found())?;
    context.caller.check_visible(&job.workspace_id, id)?;
    Ok(job)
}

/// `GET /api/jobs/{id}`, which may wait for the job to change (`?wait=&after_version=`, see
/// [`orchestrator_core::live::WaitingRead`]): what a manager waiting for a child job needs.
pub async fn get(id: &str, request: &Request, context: &Context) -> Result<Reply, ApiError> {
    context.caller.require(Scope::JobsRead)?;
    let id = JobId::from_path(id)?;
    let waiting = request.waiting_read()?;
    read_or_wait(context, waiting, async |db| {
        let job = visible(db, &id, context).await?;
        Ok(Versioned {
            version: job.version,
            workspace: job.workspace_id.clone(),
            reply: Reply::ok(&job)?.with_etag(job.version),
        })
    })
    .await
}

/// `GET /api/jobs?depth=&status=&parent_job_id=&workspace_id=&limit=&offset=`
pub async fn list(request: &Request, context: &Context) -> Result<Reply, ApiError> {
    context.caller.require(Scope::JobsRead)?;
    let page = Page::from_query(&request.query)?;
    let status = request.query.field::<JobState>("status")?;
    let depth = request.query.field::<Depth>("depth")?;
    let parent = request.query.field::<JobId>("parent_job_id")?;
    let requested = request.query.field::<WorkspaceId>("workspace_id")?;
    let workspace = match context.caller.list_filter(requested) {
        WorkspaceFilter::All => None,
        WorkspaceFilter::Only(workspace) => Some(workspace),
        // A confined token asking for another workspace sees nothing there.
        WorkspaceFilter::Nothing => return Reply::ok(&page.body::<Job>("jobs", &[], 0)?),
    };
    let filter = Filter {
        workspace,
        status,
        depth,
        parent,
    };
    page_of_jobs(&context.db().await?, &filter, page).await
}

/// `GET /api/jobs/{id}/children`: the job's direct children, which share its workspace.
pub async fn children(id: &str, request: &Request, context: &Context) -> Result<Reply, ApiError> {
    context.caller.require(Scope::JobsRead)?;
    let id = JobId::from_path(id)?;
    let page = Page::from_query(&request.query)?;
    let db = context.db().await?;
    let parent = visible(&db, &id, context).await?;
    let filter = Filter {
        parent: Some(parent.id),
        ..Filter::default()
    };
    page_of_jobs(&db, &filter, page).await
}

async fn page_of_jobs(db: &Db, filter: &Filter, page: Page) -> Result<Reply, ApiError> {
    let (items, total) = futures::try_join!(
        jobs::list(db, filter, page.limit, page.offset),
        jobs::count(db, filter)
    )?;
    Reply::ok(&page.body("jobs", &items, total)?)
}

/// `GET /api/jobs/{id}/transitions`: the audit trail, oldest first.
pub async fn transitions(
    id: &str,
    request: &Request,
    context: &Context,
) -> Result<Reply, ApiError> {
    context.caller.require(Scope::JobsRead)?;
    let id = JobId::from_path(id)?;
    let page = Page::from_query(&request.query)?;
    let db = context.db().await?;
    visible(&db, &id, context).await?;
    let (items, total) = futures::try_join!(
        job_transitions::list(&db, &id, page.limit, page.offset),
        job_transitions::count(&db, &id)
    )?;
    Reply::ok(&page.body("transitions", &items, total)?)
}
