//! Catching up on the events channel.

use orchestrator_core::ApiError;
use orchestrator_core::auth::Scope;
use orchestrator_core::events::Envelope;
use orchestrator_core::query::Page;
use orchestrator_core::validation::{Limit, NonNegative};
use orchestrator_edge::store::events;
use orchestrator_edge::{Context, Reply, Request};
use serde::Serialize;

#[derive(Serialize)]
struct CatchUp {
    events: Vec<Envelope>,
    /// Where the next call continues: the last `seq` returned, or `after_seq` when there was none.
    next_after_seq: i64,
}

/// `GET /api/events?after_seq=&limit=`: for a subscriber that was offline, the events committed after
/// `after_seq` (default 0), oldest first, in the envelopes the channel carries (including any a Redis
/// outage has kept off the channel so far). A confined token sees only its workspace's events.
pub async fn catch_up(request: &Request, context: &Context) -> Result<Reply, ApiError> {
    context.caller.require(Scope::SupervisorRead)?;
    let after_seq = request
        .query
        .field::<NonNegative>("after_seq")?
        .map_or(0, NonNegative::get);
    let limit = request
        .query
        .field::<Limit>("limit")?
        .map_or(Page::DEFAULT_LIMIT, Limit::get);
    let db = context.db().await?;
    let workspace = context.caller.workspace_id.as_ref();
    let events = events::after(&db, after_seq, workspace, limit).await?;
    let next_after_seq = events.last().map_or(after_seq, |event| event.seq);
    Reply::ok(&CatchUp {
        events,
        next_after_seq,
    })
}
