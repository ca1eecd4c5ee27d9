//! One request, from the Spin SDK's request to its response.

use crate::reply::{JSON, Reply};
use crate::request::Request;
use orchestrator_core::ApiError;
use spin_sdk::http::{HeaderValue, Response, StatusCode};

const REQUEST_ID: &str = "x-request-id";

/// Runs `handler` and renders its outcome. Every response gets
/// `X-Request-Id` (the client's, if it sent a sane one); a 500 is logged
/// with it, and its body says nothing about the cause.
pub async fn serve<F>(
    request: spin_sdk::http::Request,
    handler: F,
) -> Response<spin_sdk::http::FullBody<bytes::Bytes>>
where
    F: AsyncFnOnce(Request) -> Result<Reply, ApiError>,
{
    let _serving = crate::db::Serving::start();
    let request_id = request
        .headers()
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|id| (1..=128).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_graphic()))
        .map_or_else(new_request_id, str::to_owned);
    let method = request.method().to_string();
    let path = request.uri().path().to_owned();
    let outcome = match Request::read(request).await {
        Ok(request) => handler(request).await,
        Err(e) => Err(e),
    };
    let reply = outcome.unwrap_or_else(|error| {
        if error.status() >= 500 {
            eprintln!("request {request_id}: {method} {path}: {error}");
        }
        Reply::error(&error)
    });
    render(reply, &request_id)
}

fn new_request_id() -> String {
    crate::random_bytes::<16>()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Every response says its length: without `Content-Length` the body goes out chunked, and the
/// chunked terminator leaves in a second write that Nagle holds for ~40 ms on a keep-alive
/// connection (Spin sets no `TCP_NODELAY`).
fn render(reply: Reply, request_id: &str) -> Response<spin_sdk::http::FullBody<bytes::Bytes>> {
    let length = HeaderValue::from(reply.body.len());
    let mut response = Response::new(spin_sdk::http::FullBody::new(bytes::Bytes::from(
        reply.body,
    )));
    *response.status_mut() =
        StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let headers = response.headers_mut();
    headers.insert("content-type", HeaderValue::from_static(JSON));
    if let Ok(value) = HeaderValue::from_str(request_id) {
        headers.insert(REQUEST_ID, value);
    }
    for (name, value) in reply.headers {
        if let (Ok(name), Ok(value)) = (
            spin_sdk::http::HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(&value),
        ) {
            headers.insert(name, value);
        }
    }
    headers.insert("content-length", length);
    response
}
