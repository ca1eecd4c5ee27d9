//! One request, from the Spin SDK's request to its response.

use crate::reply::{JSON, Reply};
use crate::request::Request;
use bytes::Bytes;
use futures::StreamExt;
use http_body_util::{Either, StreamBody};
use orchestrator_core::ApiError;
use spin_sdk::http::{FullBody, HeaderValue, Response, StatusCode};

/// A response's body: whole, or streamed as it is produced.
pub type Body = Either<FullBody<Bytes>, StreamBody<Frames>>;
type Frames = futures::stream::LocalBoxStream<
    'static,
    Result<http_body::Frame<Bytes>, std::convert::Infallible>,
>;

const REQUEST_ID: &str = "x-request-id";

/// Runs `handler` and renders its outcome. Every response gets
/// `X-Request-Id` (the client's, if it sent a sane one); a 500 is logged
/// with it, and its body says nothing about the cause.
pub async fn serve<F>(request: spin_sdk::http::Request, handler: F) -> Response<Body>
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

/// Every whole response says its length: without `Content-Length` the body goes out chunked, and
/// the chunked terminator leaves in a second write that Nagle holds for ~40 ms on a keep-alive
/// connection (Spin sets no `TCP_NODELAY`). A streamed body is chunked by nature; its producer
/// makes each chunk one write and spaces them (see the event stream).
fn render(reply: Reply, request_id: &str) -> Response<Body> {
    let length = HeaderValue::from(reply.body.len());
    let status = StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let streamed = reply.stream.is_some();
    let body = match reply.stream {
        Some(chunks) => Either::Right(StreamBody::new(
            chunks
                .map(|chunk| Ok(http_body::Frame::data(chunk)))
                .boxed_local(),
        )),
        None => Either::Left(FullBody::new(Bytes::from(reply.body))),
    };
    let mut response = Response::new(body);
    *response.status_mut() = status;
    let headers = response.headers_mut();
    if status != StatusCode::NOT_MODIFIED {
        headers.insert("content-type", HeaderValue::from_static(JSON));
    }
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
    // A 304 has no body, and the length of the body it stands for is not known here.
    if !streamed && status != StatusCode::NOT_MODIFIED {
        headers.insert("content-length", length);
    }
    response
}
