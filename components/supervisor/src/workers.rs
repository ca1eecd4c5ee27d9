//! Workers themselves: listing, reading, registering and counting them.

use orchestrator_core::ApiError;
use orchestrator_core::auth::{Principal, Scope, WorkspaceFilter};
use orchestrator_core::events::NewEvent;
use orchestrator_core::ids::{WorkerId, WorkspaceId};
use orchestrator_core::lifecycle::State;
use orchestrator_core::query::Page;
use orchestrator_core::requests::RegisterWorker;
use orchestrator_core::worker::{WorkerState, registration_transition};
use orchestrator_edge::db::Db;
use orchestrator_edge::live::{Versioned, read_or_wait};
use orchestrator_edge::store::workers::{self, Filter, Worker};
use orchestrator_edge::{Context, Reply, Request, write};
use serde_json::{Map, json};

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

/// `GET /api/supervisor/workers/{id}`
pub async fn get(id: &str, request: &Request, context: &Context) -> Result<Reply, ApiError> {
    context.caller.require(Scope::SupervisorRead)?;
    let id = WorkerId::from_path(id)?;
    let waiting = request.waiting_read()?;
    read_or_wait(context, waiting, async |db| {
        let worker = visible(db, &id, &context.caller).await?;
        Ok(Versioned {
            version: worker.version,
            workspace: worker.workspace_id.clone(),
            reply: reply(200, &worker)?,
        })
    })
    .await
}

/// The worker, if `caller` may see it: another workspace's worker is as unknown as a missing one.
pub async fn visible(db: &Db, id: &WorkerId, caller: &Principal) -> Result<Worker, ApiError> {
    let worker = workers::get(db, id).await?.ok_or_else(|| id.not_found())?;
    caller.check_visible(&worker.workspace_id, id)?;
    Ok(worker)
}

/// A response about one worker carries its version as `ETag`.
pub fn reply(status: u16, worker: &Worker) -> Result<Reply, ApiError> {
    Reply::json(status, worker).map(|reply| reply.with_etag(worker.version))
}

/// `POST /api/supervisor/workers`: 201 with the IDLE worker and its `Location`. The audit trail starts
/// here (`null → IDLE`), and `worker.registered` carries the worker as this response shows it.
/// An id that is taken is 409 `ALREADY_EXISTS`, whichever workspace holds it: ids are global.
pub async fn register(request: &Request, context: &Context) -> Result<Reply, ApiError> {
    context.caller.require(Scope::SupervisorWrite)?;
    let body: RegisterWorker = request.json()?;
    let workspace = context.caller.workspace_for_create(body.workspace_id)?;
    let id = body
        .id
        .unwrap_or_else(|| WorkerId::generate(orchestrator_edge::random_bytes()));
    let metadata = body.metadata.unwrap_or_default();
    write(context, request, async |tx| {
        let worker = workers::insert(&tx.db, &id, &workspace, &metadata)
            .await?
            .ok_or_else(|| ApiError::AlreadyExists(format!("Worker {id} already exists")))?;
        let registration = registration_transition(&id, &tx.actor);
        tx.audit(std::slice::from_ref(&registration));
        let data = serde_json::to_value(&worker)
            .map_err(|e| ApiError::Internal(format!("worker is not JSON: {e}")))?;
        tx.emit(NewEvent::worker_registered(
            &id, &workspace, &tx.actor, data,
        ));
        let location = format!("/api/supervisor/workers/{id}");
        reply(201, &worker).map(|reply| reply.with_header("location", location))
    })
    .await
}

/// `GET /api/supervisor/metrics[?workspace_id=]`: `{total_workers, by_status}` with all six states,
/// from the counters a trigger keeps (never a scan of `workers`). A confined token counts only its
/// workspace; `workspace_id` narrows an operator's count like it narrows the list.
pub async fn metrics(request: &Request, context: &Context) -> Result<Reply, ApiError> {
    context.caller.require(Scope::SupervisorRead)?;
    let requested = request.query.field::<WorkspaceId>("workspace_id")?;
    let workspace = match context.caller.list_filter(requested) {
        WorkspaceFilter::All => None,
        WorkspaceFilter::Only(workspace) => Some(workspace),
        // A confined token asking for another workspace counts nothing there.
        WorkspaceFilter::Nothing => return metrics_reply(&[]),
    };
    let counts = workers::count_by_status(&context.db().await?, workspace).await?;
    metrics_reply(&counts)
}

/// `{total_workers, by_status}`, listing every state in the contract's order, zeros included.
fn metrics_reply(counts: &[(WorkerState, i64)]) -> Result<Reply, ApiError> {
    let count_of = |state: WorkerState| {
        counts
            .iter()
            .find(|(counted, _)| *counted == state)
            .map_or(0, |(_, count)| *count)
    };
    let by_status: Map<String, serde_json::Value> = WorkerState::ALL
        .iter()
        .map(|&state| (state.as_str().to_owned(), json!(count_of(state))))
        .collect();
    let total: i64 = counts.iter().map(|(_, count)| count).sum();
    Reply::ok(&json!({"total_workers": total, "by_status": by_status}))
}
