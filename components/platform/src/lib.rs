//! The platform component: health, the OpenAPI document and the token and
//! revocation endpoints — the routes that need no bearer token.

mod health;
mod revoke;
mod token;

use orchestrator_core::ApiError;
use orchestrator_edge::routing::{Routes, dispatch};
use orchestrator_edge::{Reply, Request, serve};
use spin_sdk::http::IntoResponse;
use spin_sdk::http_service;

#[derive(Clone, Copy)]
enum Endpoint {
    Health,
    OpenApi,
    Token,
    Revoke,
}

const ROUTES: &Routes<Endpoint> = &[
    ("GET", "/api/health", Endpoint::Health),
    ("GET", "/api/openapi.json", Endpoint::OpenApi),
    ("POST", "/api/auth/token", Endpoint::Token),
    ("POST", "/api/auth/revoke", Endpoint::Revoke),
];

/// The OpenAPI 3.1 document of the whole API, served as written.
const OPENAPI: &str = include_str!("../openapi.json");

#[http_service]
async fn handle(request: spin_sdk::http::Request) -> impl IntoResponse {
    serve(request, route).await
}

async fn route(request: Request) -> Result<Reply, ApiError> {
    let (endpoint, _params) = dispatch(ROUTES, &request.method, &request.path)?;
    match endpoint {
        Endpoint::Health => health::check().await,
        Endpoint::OpenApi => Ok(Reply {
            status: 200,
            headers: Vec::new(),
            body: OPENAPI.as_bytes().to_vec(),
        }),
        Endpoint::Token => token::issue(&request).await,
        Endpoint::Revoke => revoke::revoke(&request).await,
    }
}
