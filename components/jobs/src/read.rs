//! Reading jobs.

use orchestrator_core::ApiError;
use orchestrator_core::auth::Scope;
use orchestrator_core::ids::{JobId, WorkspaceId};
use orchestrator_edge::store::jobs;
use orchestrator_edge::{Context, Reply};

/// `GET /api/jobs/{id}`: another workspace's job is as unknown as a missing one.
pub async fn get(id: &str, context: &Context) -> Result<Reply, ApiError> {
    context.caller.require(Scope::JobsRead)?;
    let id = JobId::from_path(id)?;
    let db = context.db().await?;
    let job = jobs::get(&db, &id).await?.ok_or_else(|| id.not_found())?;
    let workspace = WorkspaceId::parse(&job.workspace_id)
        .map_err(|_| ApiError::Internal("stored workspace id".into()))?;
    context.caller.check_visible(&workspace, &id)?;
    Reply::ok(&job).map(|reply| reply.with_etag(job.version))
}
