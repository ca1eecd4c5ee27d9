//! The jobs component: hierarchical jobs and their lifecycle, under
//! `/api/jobs`.

mod lifecycle;
mod read;
mod submit;

use orchestrator_core::ApiError;
use orchestrator_edge::routing::{Routes, dispatch};
use orchestrator_edge::{Context, Reply, Request, serve};
use spin_sdk::http::IntoResponse;
use spin_sdk::http_service;

#[derive(Clone, Copy)]
enum Endpoint {
    ListJobs,
    Submit,
    GetJob,
    Transitions,
    Children,
    Cancel,
    Complete,
    Fail,
}

const ROUTES: &Routes<Endpoint> = &[
    ("GET", "/api/jobs", Endpoint::ListJobs),
    ("POST", "/api/jobs/submit", Endpoint::Submit),
    ("GET", "/api/jobs/{id}", Endpoint::GetJob),
    ("GET", "/api/jobs/{id}/transitions", Endpoint::Transitions),
    ("GET", "/api/jobs/{id}/children", Endpoint::Children),
    ("POST", "/api/jobs/{id}/cancel", Endpoint::Cancel),
    ("POST", "/api/jobs/{id}/complete", Endpoint::Complete),
    ("POST", "/api/jobs/{id}/fail", Endpoint::Fail),
];

#[http_service]
async fn handle(request: spin_sdk::http::Request) -> impl IntoResponse {
    serve(request, route).await
}

async fn route(request: Request) -> Result<Reply, ApiError> {
    let (endpoint, params) = dispatch(ROUTES, &request.method, &request.path)?;
    let id = || params.first().map_or("", String::as_str);
    Context::run(&request, async |context| match endpoint {
        Endpoint::ListJobs => read::list(&request, context).await,
        Endpoint::Submit => submit::submit(&request, context).await,
        Endpoint::GetJob => read::get(id(), &request, context).await,
        Endpoint::Transitions => read::transitions(id(), &request, context).await,
        Endpoint::Children => read::children(id(), &request, context).await,
        Endpoint::Cancel => lifecycle::cancel(id(), &request, context).await,
        Endpoint::Complete => lifecycle::complete(id(), &request, context).await,
        Endpoint::Fail => lifecycle::fail(id(), &request, context).await,
    })
    .await
}
