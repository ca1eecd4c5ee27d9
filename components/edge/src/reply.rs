//! Responses: JSON bodies with the contract's headers, and the few that are not JSON (a page, an
//! event stream).

use orchestrator_core::ApiError;
use serde::Serialize;

pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// A body sent as it is produced, instead of `body`.
    pub(crate) stream: Option<Chunks>,
}

/// The chunks of a streamed body, in order; each leaves in one write.
pub type Chunks = futures::stream::LocalBoxStream<'static, bytes::Bytes>;

pub const JSON: &str = "application/json; charset=utf-8";

impl Reply {
    /// A body of any content type, which `headers` must then name.
    pub fn new(status: u16, body: Vec<u8>) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body,
            stream: None,
        }
    }

    pub fn json<T: Serialize + ?Sized>(status: u16, value: &T) -> Result<Self, ApiError> {
        let body = serde_json::to_vec(value)
            .map_err(|e| ApiError::Internal(format!("response is not JSON: {e}")))?;
        Ok(Self::new(status, body))
    }

    /// A 200 whose body is `chunks`, sent as they come, of `content_type`.
    pub fn streamed(content_type: &str, chunks: Chunks) -> Self {
        Self {
            stream: Some(chunks),
            ..Self::new(200, Vec::new())
        }
        .with_header("content-type", content_type)
    }

    /// `304 Not Modified`: the client's copy, at `version`, is current.
    pub fn not_modified(version: i64) -> Self {
        Self::new(304, Vec::new()).with_etag(version)
    }

    pub fn ok<T: Serialize + ?Sized>(value: &T) -> Result<Self, ApiError> {
        Self::json(200, value)
    }

    /// A response about one versioned object carries its `ETag`.
    pub fn with_etag(mut self, version: i64) -> Self {
        self.headers
            .push(("etag".into(), orchestrator_core::version::etag(version)));
        self
    }

    pub fn with_header(mut self, name: &str, value: impl Into<String>) -> Self {
        self.headers.push((name.to_owned(), value.into()));
        self
    }

    pub fn error(error: &ApiError) -> Self {
        Self {
            headers: error
                .extra_headers()
                .into_iter()
                .map(|(name, value)| (name.to_ascii_lowercase(), value))
                .collect(),
            ..Self::new(error.status(), error.body().to_string().into_bytes())
        }
    }
}
