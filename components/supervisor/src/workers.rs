//! Reading workers.

use orchestrator_core::ApiError;
use orchestrator_core::auth::{Scope, WorkspaceFilter};
use orchestrator_core::ids::WorkspaceId;
use orchestrator_core::query::Page;
use orchestrator_core::worker::WorkerState;
use orchestrator_edge::store::workers::{self, Filter, Worker};
use orchestrator_edge::{Context, Reply, Request};

/// `GET /api/supervisor/workers?workspace_id=&status=&limit=&offset=`
pub async fn list(request: &Request, context: &Context) -> Result<Reply, ApiError> {
    context.caller.require(Scope::SupervisorRead)?;
    let page = Page::from_query(&request.query)?;
    let status = request.query.field::<WorkerState>("status")?;
    let requested = request.query.field::<WorkspaceId>("workspace_id")?;
    let workspace = match context.caller.list_filter(requested) {
        WorkspaceFilter::All => None,
        WorkspaceFilter::Only(workspace) => Some(workspace),
        // A confined token asking for another workspace sees nothing there.
        WorkspaceFilter::Nothing => return Reply::ok(&page.body::<Worker>("workers", &[], 0)?),
    };
    let filter = Filter { workspace, status };
    let db = context.db().await?;
    let (items, total) = futures::try_join!(
        workers::list(&db, &filter, page.limit, page.offset),
        workers::count(&db, &filter)
    )?;
    Reply::ok(&page.body("workers", &items, total)?)
}
