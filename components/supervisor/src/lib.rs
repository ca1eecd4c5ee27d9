//! The supervisor component: AI workers and their lifecycle, under
//! `/api/supervisor/`, and the events: their catch-up read, `/api/events`,
//! and their live stream, `/api/events/stream`.

mod events;
mod lifecycle;
mod stream;
mod transitions;
mod workers;

use orchestrator_core::ApiError;
use orchestrator_core::worker::WorkerAction;
use orchestrator_edge::routing::{Routes, dispatch};
use orchestrator_edge::{Context, Reply, Request, serve};
use spin_sdk::http::IntoResponse;
use spin_sdk::http_service;

#[derive(Clone, Copy)]
enum Endpoint {
    ListWorkers,
    RegisterWorker,
    GetWorker,
    Act(WorkerAction),
    Heartbeat,
    Transitions,
    Metrics,
    Events,
    EventStream,
}

const ROUTES: &Routes<Endpoint> = &[
    ("GET", "/api/supervisor/workers", Endpoint::ListWorkers),
    ("POST", "/api/supervisor/workers", Endpoint::RegisterWorker),
    ("GET", "/api/supervisor/workers/{id}", Endpoint::GetWorker),
    (
        "POST",
        "/api/supervisor/workers/{id}/start",
        Endpoint::Act(WorkerAction::Start),
    ),
    (
        "POST",
        "/api/supervisor/workers/{id}/pause",
        Endpoint::Act(WorkerAction::Pause),
    ),
    (
        "POST",
        "/api/supervisor/workers/{id}/resume",
        Endpoint::Act(WorkerAction::Resume),
    ),
    (
        "POST",
        "/api/supervisor/workers/{id}/complete",
        Endpoint::Act(WorkerAction::Complete),
    ),
    (
        "POST",
        "/api/supervisor/workers/{id}/fail",
        Endpoint::Act(WorkerAction::Fail),
    ),
    (
        "POST",
        "/api/supervisor/workers/{id}/terminate",
        Endpoint::Act(WorkerAction::Terminate),
    ),
    (
        "POST",
        "/api/supervisor/workers/{id}/heartbeat",
        Endpoint::Heartbeat,
    ),
    (
        "GET",
        "/api/supervisor/workers/{id}/transitions",
        Endpoint::Transitions,
    ),
    ("GET", "/api/supervisor/metrics", Endpoint::Metrics),
    ("GET", "/api/events", Endpoint::Events),
    ("GET", "/api/events/stream", Endpoint::EventStream),
];

#[http_service]
async fn handle(request: spin_sdk::http::Request) -> impl IntoResponse {
    serve(request, route).await
}

async fn route(request: Request) -> Result<Reply, ApiError> {
    let (endpoint, params) = dispatch(ROUTES, &request.method, &request.path)?;
    // Every pattern with an `{id}` has exactly one parameter.
    let id = params.first().map_or("", String::as_str);
    Context::run(&request, async |context| match endpoint {
        Endpoint::ListWorkers => workers::list(&request, context).await,
        Endpoint::RegisterWorker => workers::register(&request, context).await,
        Endpoint::GetWorker => workers::get(id, &request, context).await,
        Endpoint::Act(action) => lifecycle::act(action, id, &request, context).await,
        Endpoint::Heartbeat => lifecycle::heartbeat(id, &request, context).await,
        Endpoint::Transitions => transitions::list(id, &request, context).await,
        Endpoint::Metrics => workers::metrics(&request, context).await,
        Endpoint::Events => events::catch_up(&request, context).await,
        Endpoint::EventStream => stream::open(&request, context).await,
    })
    .await
}
