//! A worker's audit trail.

use orchestrator_core::ApiError;
use orchestrator_core::auth::Scope;
use orchestrator_core::ids::WorkerId;
use orchestrator_core::query::Page;
use orchestrator_edge::store::worker_transitions;
use orchestrator_edge::{Context, Reply, Request};

use crate::workers::visible;

/// `GET /api/supervisor/workers/{id}/transitions?limit=&offset=`: every move, oldest first, starting
/// with the registration (`from_state: null`, `to_state: "IDLE"`).
pub async fn list(id: &str, request: &Request, context: &Context) -> Result<Reply, ApiError> {
    context.caller.require(Scope::SupervisorRead)?;
    let id = WorkerId::from_path(id)?;
    let page = Page::from_query(&request.query)?;
    let db = context.db().await?;
    visible(&db, &id, &context.caller).await?;
    let (items, total) = futures::try_join!(
        worker_transitions::list(&db, &id, page.limit, page.offset),
        worker_transitions::count(&db, &id)
    )?;
    Reply::ok(&page.body("transitions", &items, total)?)
}
