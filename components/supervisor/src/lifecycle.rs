//! Moving a worker through its lifecycle, and its heartbeat.

use orchestrator_core::ApiError;
use orchestrator_core::auth::Scope;
use orchestrator_core::events::NewEvent;
use orchestrator_core::ids::WorkerId;
use orchestrator_core::lifecycle::plan_transition;
use orchestrator_core::requests::{NoFields, WithReason};
use orchestrator_core::version::check_if_match;
use orchestrator_core::worker::WorkerAction;
use orchestrator_edge::store::workers::{self, Seen};
use orchestrator_edge::{Context, Reply, Request, Tx, write_if_unchanged};

use crate::workers::reply;

/// `POST /api/supervisor/workers/{id}/{start|pause|resume|complete|fail|terminate}`: one handler for
/// all six, since the state table in core decides every one of them. 200 with the moved worker; the
/// audit row and `worker.state.changed` are written with the move.
pub async fn act(
    action: WorkerAction,
    id: &str,
    request: &Request,
    context: &Context,
) -> Result<Reply, ApiError> {
    context.caller.require(Scope::SupervisorWrite)?;
    let id = WorkerId::from_path(id)?;
    let body: WithReason = request.json()?;
    let reason = action.reason(body.reason)?;
    write_if_unchanged(context, request, async |tx| {
        let seen = read_to_change(tx, &id, request, context).await?;
        let transition = plan_transition(
            &id,
            seen.worker.status,
            action.target(),
            reason.clone(),
            &tx.actor,
        )?;
        let (moved, change) = seen.moved(transition.to);
        tx.defer(change);
        tx.audit(std::slice::from_ref(&transition));
        tx.emit(NewEvent::state_changed(&transition, &moved.workspace_id));
        reply(200, &moved)
    })
    .await
}

/// `POST /api/supervisor/workers/{id}/heartbeat` (body empty or `{}`): sets `last_heartbeat_at`.
///
/// A heartbeat reports liveness; it is not a change of the worker. So it bumps neither `version` (the
/// `ETag` stays) nor `updated_at`, writes no audit row and emits no event: a worker beating every few
/// seconds would otherwise make its supervisor's every `If-Match` stale and flood the trail and the
/// channel. It is accepted in every state, terminal ones included, since the state machine governs
/// moves and a heartbeat is none: the response's `status` tells a process that outlived its worker
/// that it is finished, and `last_heartbeat_at` shows operators that it is still running.
/// `If-Match`, when sent, is checked as on every POST.
pub async fn heartbeat(id: &str, request: &Request, context: &Context) -> Result<Reply, ApiError> {
    context.caller.require(Scope::SupervisorWrite)?;
    let id = WorkerId::from_path(id)?;
    let NoFields {} = request.json()?;
    write_if_unchanged(context, request, async |tx| {
        let (worker, change) = read_to_change(tx, &id, request, context).await?.beat();
        tx.defer(change);
        reply(200, &worker)
    })
    .await
}

/// Reads the worker to change it (see [`workers::read_to_change`]), then checks what must be
/// checked on the row the change is made on: 404 when it is missing or in a workspace the caller
/// cannot see (before `If-Match`, so a version never leaks), 412 when `If-Match` names another
/// version.
async fn read_to_change(
    tx: &Tx,
    id: &WorkerId,
    request: &Request,
    context: &Context,
) -> Result<Seen, ApiError> {
    let seen = workers::read_to_change(&tx.db, id)
        .await?
        .ok_or_else(|| id.not_found())?;
    context
        .caller
        .check_visible(&seen.worker.workspace_id, id)?;
    check_if_match(request.header("if-match").as_deref(), seen.worker.version)?;
    Ok(seen)
}
