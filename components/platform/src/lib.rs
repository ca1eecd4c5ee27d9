//! The platform component: health, the OpenAPI document, the token and
//! revocation endpoints and the operator dashboard — the routes that need no
//! bearer token.

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
    Dashboard,
}

const ROUTES: &Routes<Endpoint> = &[
    ("GET", "/api/health", Endpoint::Health),
    ("GET", "/api/openapi.json", Endpoint::OpenApi),
    ("POST", "/api/auth/token", Endpoint::Token),
    ("POST", "/api/auth/revoke", Endpoint::Revoke),
    ("GET", "/", Endpoint::Dashboard),
];

/// The OpenAPI 3.1 document of the whole API, served as written.
const OPENAPI: &str = include_str!("../openapi.json");

/// The operator dashboard: one page with its styles and script inline, so it needs nothing but
/// this API, and the browser signs its requests with a token the operator gives it.
const DASHBOARD: &str = include_str!("../dashboard.html");

/// The page may run only its own inline script and talk only to this origin: whatever text from
/// the API it shows cannot load or send anything elsewhere, and no other site may frame it.
const DASHBOARD_POLICY: &str = "default-src 'none'; script-src 'unsafe-inline'; \
     style-src 'unsafe-inline'; connect-src 'self'; img-src 'self' data:; \
     base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

#[http_service]
async fn handle(request: spin_sdk::http::Request) -> impl IntoResponse {
    serve(request, route).await
}

async fn route(request: Request) -> Result<Reply, ApiError> {
    let (endpoint, _params) = dispatch(ROUTES, &request.method, &request.path)?;
    match endpoint {
        Endpoint::Health => health::check().await,
        Endpoint::OpenApi => Ok(Reply::new(200, OPENAPI.as_bytes().to_vec())),
        Endpoint::Token => token::issue(&request).await,
        Endpoint::Revoke => revoke::revoke(&request).await,
        Endpoint::Dashboard => Ok(dashboard()),
    }
}

fn dashboard() -> Reply {
    Reply::new(200, DASHBOARD.as_bytes().to_vec())
        .with_header("content-type", "text/html; charset=utf-8")
        .with_header("content-security-policy", DASHBOARD_POLICY)
        .with_header("x-content-type-options", "nosniff")
        .with_header("referrer-policy", "no-referrer")
}
