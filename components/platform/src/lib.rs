//! The platform component: health, the OpenAPI document and the token
//! endpoint — the routes that need no bearer token.

use orchestrator_core::ApiError;
use orchestrator_edge::routing::{Routes, dispatch};
use orchestrator_edge::{Reply, Request, serve};
use spin_sdk::http::IntoResponse;
use spin_sdk::http_service;

#[derive(Clone, Copy)]
enum Endpoint {}

const ROUTES: &Routes<Endpoint> = &[];

#[http_service]
async fn handle(request: spin_sdk::http::Request) -> impl IntoResponse {
    serve(request, route).await
}

async fn route(request: Request) -> Result<Reply, ApiError> {
    let (endpoint, _params) = dispatch(ROUTES, &request.method, &request.path)?;
    match endpoint {}
}
