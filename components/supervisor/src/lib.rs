//! The supervisor component: AI workers and their lifecycle, under
//! `/api/supervisor/`.

mod workers;

use orchestrator_core::ApiError;
use orchestrator_edge::routing::{Routes, dispatch};
use orchestrator_edge::{Context, Reply, Request, serve};
use spin_sdk::http::IntoResponse;
use spin_sdk::http_service;

#[derive(Clone, Copy)]
enum Endpoint {
    ListWorkers,
}

const ROUTES: &Routes<Endpoint> = &[("GET", "/api/supervisor/workers", Endpoint::ListWorkers)];

#[http_service]
async fn handle(request: spin_sdk::http::Request) -> impl IntoResponse {
    serve(request, route).await
}

async fn route(request: Request) -> Result<Reply, ApiError> {
    let (endpoint, _params) = dispatch(ROUTES, &request.method, &request.path)?;
    let context = Context::authenticate(&request).await?;
    match endpoint {
        Endpoint::ListWorkers => workers::list(&request, &context).await,
    }
}
