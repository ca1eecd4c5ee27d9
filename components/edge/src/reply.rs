//! Responses: JSON bodies with the contract's headers.

use orchestrator_core::ApiError;
use serde::Serialize;

pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

pub const JSON: &str = "application/json; charset=utf-8";

impl Reply {
    pub fn json<T: Serialize + ?Sized>(status: u16, value: &T) -> Result<Self, ApiError> {
        let body = serde_json::to_vec(value)
            .map_err(|e| ApiError::Internal(format!("response is not JSON: {e}")))?;
        Ok(Self {
            status,
            headers: Vec::new(),
            body,
        })
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
            status: error.status(),
            headers: error
                .extra_headers()
                .into_iter()
                .map(|(name, value)| (name.to_ascii_lowercase(), value))
                .collect(),
            body: error.body().to_string().into_bytes(),
        }
    }
}
