//! The resources component: the per-depth worker quotas shared by all jobs,
//! under `/api/resources/`.

mod allocations;
mod quotas;

use orchestrator_core::ApiError;
use orchestrator_edge::routing::{Routes, dispatch};
use orchestrator_edge::{Context, Reply, Request, serve};
use spin_sdk::http::IntoResponse;
use spin_sdk::http_service;

#[derive(Clone, Copy)]
enum Endpoint {
    Quotas,
    Usage,
    Allocate,
    Release,
}

const ROUTES: &Routes<Endpoint> = &[
    ("GET", "/api/resources/quotas", Endpoint::Quotas),
    ("GET", "/api/resources/usage", Endpoint::Usage),
    ("POST", "/api/resources/allocate", Endpoint::Allocate),
    ("POST", "/api/resources/release", Endpoint::Release),
];

#[http_service]
async fn handle(request: spin_sdk::http::Request) -> impl IntoResponse {
    serve(request, route).await
}

async fn route(request: Request) -> Result<Reply, ApiError> {
    let (endpoint, _params) = dispatch(ROUTES, &request.method, &request.path)?;
    Context::run(&request, async |context| match endpoint {
        Endpoint::Quotas => quotas::list(context).await,
        Endpoint::Usage => quotas::usage(context).await,
        Endpoint::Allocate => allocations::allocate(&request, context).await,
        Endpoint::Release => allocations::release(&request, context).await,
    })
    .await
}
