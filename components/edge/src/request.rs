//! An incoming request, read whole (bodies are capped at 64 KiB).

use std::borrow::Cow;

use futures::StreamExt;
use orchestrator_core::ApiError;
use orchestrator_core::body::MAX_BODY_BYTES;
use orchestrator_core::query::Query;
use spin_sdk::http::HeaderMap;
use spin_sdk::http::body::IncomingBodyExt;

pub struct Request {
    pub method: String,
    pub path: String,
    pub query: Query,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

impl Request {
    /// Reads the body, refusing it as soon as it is known to be too large:
    /// by `Content-Length` before reading anything, and otherwise (a chunked
    /// body) at the first chunk past the limit, so no more than the limit is
    /// ever buffered.
    pub async fn read(request: spin_sdk::http::Request) -> Result<Self, ApiError> {
        let (parts, body) = request.into_parts();
        let declared = parts
            .headers
            .get("content-length")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > MAX_BODY_BYTES as u64) {
            return Err(ApiError::PayloadTooLarge);
        }
        let mut chunks = body.stream();
        let mut body = Vec::new();
        while let Some(chunk) = chunks.next().await {
            let chunk = chunk.map_err(|e| {
                ApiError::BadRequest(format!("could not read the request body: {e:?}"))
            })?;
            if body.len() + chunk.len() > MAX_BODY_BYTES {
                return Err(ApiError::PayloadTooLarge);
            }
            body.extend_from_slice(&chunk);
        }
        Ok(Self {
            method: parts.method.as_str().to_owned(),
            path: parts.uri.path().to_owned(),
            query: Query::parse(parts.uri.query().unwrap_or("")),
            headers: parts.headers,
            body,
        })
    }

    /// A header's value. One with bytes outside visible ASCII is read lossily rather than dropped:
    /// dropping it would turn a malformed `If-Match` into no precondition and a malformed
    /// `Idempotency-Key` into no key, where each header's own parse now refuses it or finds that it
    /// matches nothing.
    pub fn header(&self, name: &str) -> Option<Cow<'_, str>> {
        self.headers
            .get(name)
            .map(|v| String::from_utf8_lossy(v.as_bytes()))
    }

    /// Whether this read may wait for its object to change, and for what (see
    /// [`orchestrator_core::live::WaitingRead`]).
    pub fn waiting_read(&self) -> Result<Option<orchestrator_core::live::WaitingRead>, ApiError> {
        orchestrator_core::live::WaitingRead::from_request(
            &self.query,
            self.header("if-none-match").as_deref(),
            self.header("prefer").as_deref(),
        )
    }

    /// Decodes the JSON body into a request type (422 names the bad field).
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T, ApiError> {
        orchestrator_core::body::parse_json(self.header("content-type").as_deref(), &self.body)
    }
}
