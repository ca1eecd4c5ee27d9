//! The jobs component: hierarchical jobs and their lifecycle, under
//! `/api/jobs`.

mod read;

use orchestrator_core::ApiError;
use orchestrator_edge::routing::{Routes, dispatch};
use orchestrator_edge::{Context, Reply, Request, serve};
use spin_sdk::http::IntoResponse;
use spin_sdk::http_service;

#[derive(Clone, Copy)]
enum Endpoint {
    GetJob,
}

const ROUTES: &Routes<Endpoint> = &[("GET", "/api/jobs/{id}", Endpoint::GetJob)];

#[http_service]
async fn handle(request: spin_sdk::http::Request) -> impl IntoResponse {
    serve(request, route).await
}

async fn route(request: Request) -> Result<Reply, ApiError> {
    let (endpoint, params) = dispatch(ROUTES, &request.method, &request.path)?;
    let context = Context::authenticate(&request).await?;
    match endpoint {
        Endpoint::GetJob => read::get(&params[0], &context).await,
    }
}
