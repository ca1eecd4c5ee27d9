//! The one error type every handler returns, and the one place it becomes HTTP.
//!
//! Each variant is a row of the contract's error table (§1). Status, code, message, details and extra
//! headers are all derived here so that no component invents its own error shape: a component returns
//! `Err(ApiError::…)` and its shell renders [`ApiError::status`], [`ApiError::extra_headers`] and
//! [`ApiError::body`].

use std::fmt;

use serde::Serialize;
use serde_json::{Value, json};

use crate::body::MAX_BODY_BYTES;
use crate::events::SubjectKind;
use crate::validation::Depth;

/// Seconds a client should wait before retrying after a 503; short because outages of Postgres or Redis
/// behind a healthy edge are usually brief, and retries are safe thanks to idempotency keys.
pub const RETRY_AFTER_SECS: u32 = 1;

/// Everything that can go wrong in a request, as the client will see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiError {
    /// 400: the body is not JSON (or not decodable at all).
    BadRequest(String),
    /// 401: no token, or one that does not verify. The reason is safe to show (it names no key or claim value).
    Unauthenticated(&'static str),
    /// 403: a valid token without the scope, or a write into another workspace.
    Forbidden(String),
    /// 404: unknown id, or an id of another workspace (the message must read the same for both).
    NotFound(String),
    /// 405: the path exists but not with this method; `allow` becomes the `Allow` header.
    MethodNotAllowed { allow: Vec<&'static str> },
    /// 409: the state machine forbids the move. `allowed` lists where `current_state` may go.
    InvalidStateTransition {
        subject: SubjectKind,
        id: String,
        current_state: &'static str,
        requested_state: &'static str,
        allowed: Vec<&'static str>,
    },
    /// 409: a child job names a parent that is already COMPLETED, FAILED or CANCELED. The parent's state
    /// machine forbids it, so the code is the state machine's; the details name the parent instead of a move.
    ParentTerminal {
        parent_job_id: String,
        parent_state: &'static str,
    },
    /// 409: nothing left at that depth.
    QuotaExceeded {
        depth: Depth,
        requested: i64,
        available: i64,
    },
    /// 409: creating something whose id is taken.
    AlreadyExists(String),
    /// 409: the same idempotency key is still being processed by another request.
    IdempotencyKeyInUse,
    /// 412: `If-Match` names another version than the current one.
    VersionMismatch { current_version: i64 },
    /// 413: body over [`MAX_BODY_BYTES`].
    PayloadTooLarge,
    /// 415: a body with a content type that is not JSON.
    UnsupportedMediaType,
    /// 422: one or more fields are invalid (never empty).
    ValidationFailed { fields: Vec<FieldError> },
    /// 422: the idempotency key was used before for a different request.
    IdempotencyKeyReused,
    /// 503: Postgres or Redis unreachable. The text is for the log only, never the body.
    Unavailable(String),
    /// 500: a bug. The text is for the log only, never the body.
    Internal(String),
}

/// One invalid field of a 422, e.g. `{"field": "depth", "message": "must be between 0 and 5"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

impl From<FieldError> for ApiError {
    fn from(field: FieldError) -> Self {
        Self::ValidationFailed {
            fields: vec![field],
        }
    }
}

impl ApiError {
    /// A 422 about a single field: the common case.
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        FieldError::new(field, message).into()
    }

    pub fn status(&self) -> u16 {
        match self {
            Self::BadRequest(_) => 400,
            Self::Unauthenticated(_) => 401,
            Self::Forbidden(_) => 403,
            Self::NotFound(_) => 404,
            Self::MethodNotAllowed { .. } => 405,
            Self::InvalidStateTransition { .. }
            | Self::ParentTerminal { .. }
            | Self::QuotaExceeded { .. }
            | Self::AlreadyExists(_)
            | Self::IdempotencyKeyInUse => 409,
            Self::VersionMismatch { .. } => 412,
            Self::PayloadTooLarge => 413,
            Self::UnsupportedMediaType => 415,
            Self::ValidationFailed { .. } | Self::IdempotencyKeyReused => 422,
            Self::Internal(_) => 500,
            Self::Unavailable(_) => 503,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            Self::BadRequest(_) => "BAD_REQUEST",
            Self::Unauthenticated(_) => "UNAUTHENTICATED",
            Self::Forbidden(_) => "FORBIDDEN",
            Self::NotFound(_) => "NOT_FOUND",
            Self::MethodNotAllowed { .. } => "METHOD_NOT_ALLOWED",
            Self::InvalidStateTransition { .. } | Self::ParentTerminal { .. } => {
                "INVALID_STATE_TRANSITION"
            }
            Self::QuotaExceeded { .. } => "QUOTA_EXCEEDED",
            Self::AlreadyExists(_) => "ALREADY_EXISTS",
            Self::IdempotencyKeyInUse => "IDEMPOTENCY_KEY_IN_USE",
            Self::VersionMismatch { .. } => "VERSION_MISMATCH",
            Self::PayloadTooLarge => "PAYLOAD_TOO_LARGE",
            Self::UnsupportedMediaType => "UNSUPPORTED_MEDIA_TYPE",
            Self::ValidationFailed { .. } => "VALIDATION_FAILED",
            Self::IdempotencyKeyReused => "IDEMPOTENCY_KEY_REUSED",
            Self::Unavailable(_) => "UNAVAILABLE",
            Self::Internal(_) => "INTERNAL",
        }
    }

    /// The human sentence for `detail` and `error.message`. Never contains log-only text.
    pub fn message(&self) -> String {
        match self {
            Self::BadRequest(message)
            | Self::Forbidden(message)
            | Self::NotFound(message)
            | Self::AlreadyExists(message) => message.clone(),
            Self::Unauthenticated(reason) => (*reason).to_owned(),
            Self::MethodNotAllowed { allow } => {
                format!("method not allowed; allowed: {}", allow.join(", "))
            }
            Self::InvalidStateTransition {
                subject,
                id,
                current_state,
                requested_state,
                ..
            } => format!(
                "{} {id} cannot go from {current_state} to {requested_state}",
                subject.noun()
            ),
            Self::ParentTerminal {
                parent_job_id,
                parent_state,
            } => format!(
                "Job {parent_job_id} is {parent_state}: no child job can be submitted under it"
            ),
            Self::QuotaExceeded {
                depth,
                requested,
                available,
            } => format!(
                "no workers available at depth {depth}: requested {requested}, available {available}"
            ),
            Self::IdempotencyKeyInUse => {
                "a request with this Idempotency-Key is still being processed".to_owned()
            }
            Self::VersionMismatch { current_version } => {
                format!("If-Match does not match the current version {current_version}")
            }
            Self::PayloadTooLarge => format!("request body is larger than {MAX_BODY_BYTES} bytes"),
            Self::UnsupportedMediaType => "request body must be application/json".to_owned(),
            Self::ValidationFailed { fields } => {
                let problems: Vec<String> = fields
                    .iter()
                    .map(|f| format!("{}: {}", f.field, f.message))
                    .collect();
                format!("validation failed: {}", problems.join("; "))
            }
            Self::IdempotencyKeyReused => {
                "Idempotency-Key was already used for a different request".to_owned()
            }
            Self::Unavailable(_) => "service temporarily unavailable, retry later".to_owned(),
            Self::Internal(_) => "internal server error".to_owned(),
        }
    }

    /// Machine-readable specifics; `{}` for errors that have none.
    pub fn details(&self) -> Value {
        match self {
            Self::MethodNotAllowed { allow } => json!({ "allow": allow }),
            Self::InvalidStateTransition {
                id,
                current_state,
                requested_state,
                allowed,
                ..
            } => json!({
                "id": id,
                "current_state": current_state,
                "requested_state": requested_state,
                "allowed": allowed,
            }),
            Self::ParentTerminal {
                parent_job_id,
                parent_state,
            } => json!({ "parent_job_id": parent_job_id, "parent_state": parent_state }),
            Self::QuotaExceeded {
                depth,
                requested,
                available,
            } => json!({ "depth": depth, "requested": requested, "available": available }),
            Self::VersionMismatch { current_version } => {
                json!({ "current_version": current_version })
            }
            Self::PayloadTooLarge => json!({ "limit_bytes": MAX_BODY_BYTES }),
            Self::ValidationFailed { fields } => json!({ "fields": fields }),
            _ => json!({}),
        }
    }

    /// The response body of contract §1: `detail` for FastAPI-era clients, `error` for programs.
    pub fn body(&self) -> Value {
        let message = self.message();
        json!({
            "detail": message,
            "error": { "code": self.code(), "message": message, "details": self.details() },
        })
    }

    /// Headers the contract requires next to some statuses.
    pub fn extra_headers(&self) -> Vec<(&'static str, String)> {
        match self {
            Self::Unauthenticated(_) => vec![(
                "WWW-Authenticate",
                r#"Bearer error="invalid_token""#.to_owned(),
            )],
            Self::MethodNotAllowed { allow } => vec![("Allow", allow.join(", "))],
            Self::Unavailable(_) => vec![("Retry-After", RETRY_AFTER_SECS.to_string())],
            _ => Vec::new(),
        }
    }
}

/// For logs: unlike [`ApiError::message`] this includes the log-only text of 500 and 503.
impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Internal(log) | Self::Unavailable(log) => {
                write!(f, "{} ({}): {log}", self.code(), self.status())
            }
            _ => write!(f, "{} ({}): {}", self.code(), self.status(), self.message()),
        }
    }
}

impl std::error::Error for ApiError {}

/// A Spin variable that cannot be used. Raised at start-up of a request, so a component maps it to a
/// logged 500 (`ApiError::Internal`) rather than blaming the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "configuration error: {}", self.0)
    }
}

impl std::error::Error for ConfigError {}

impl From<ConfigError> for ApiError {
    fn from(error: ConfigError) -> Self {
        Self::Internal(error.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_has_exactly_detail_and_error() {
        let error = ApiError::InvalidStateTransition {
            subject: SubjectKind::Worker,
            id: "w_1".into(),
            current_state: "COMPLETED",
            requested_state: "PAUSED",
            allowed: vec![],
        };
        assert_eq!(
            error.body(),
            json!({
                "detail": "Worker w_1 cannot go from COMPLETED to PAUSED",
                "error": {
                    "code": "INVALID_STATE_TRANSITION",
                    "message": "Worker w_1 cannot go from COMPLETED to PAUSED",
                    "details": {"id": "w_1", "current_state": "COMPLETED",
                                "requested_state": "PAUSED", "allowed": []}
                }
            })
        );
        assert_eq!(error.status(), 409);
    }

    #[test]
    fn errors_without_details_have_an_empty_object() {
        let body = ApiError::NotFound("Job j_1 not found".into()).body();
        assert_eq!(body["error"]["details"], json!({}));
        assert_eq!(body["detail"], "Job j_1 not found");
    }

    #[test]
    fn validation_failed_lists_fields() {
        let error = ApiError::invalid("depth", "must be between 0 and 5");
        assert_eq!(error.status(), 422);
        assert_eq!(
            error.body()["error"]["details"],
            json!({"fields": [{"field": "depth", "message": "must be between 0 and 5"}]})
        );
        assert_eq!(
            error.message(),
            "validation failed: depth: must be between 0 and 5"
        );
    }

    #[test]
    fn internal_and_unavailable_do_not_leak() {
        for error in [
            ApiError::Internal("pg: password authentication failed for user admin".into()),
            ApiError::Unavailable("redis://10.0.0.7:6379 refused".into()),
        ] {
            let body = error.body().to_string();
            assert!(
                !body.contains("admin") && !body.contains("10.0.0.7"),
                "{body}"
            );
            assert!(error.to_string().contains(match &error {
                ApiError::Internal(log) | ApiError::Unavailable(log) => log.as_str(),
                _ => unreachable!(),
            }));
        }
    }

    #[test]
    fn statuses_codes_and_headers_follow_the_table() {
        let table: Vec<(ApiError, u16, &str)> = vec![
            (ApiError::BadRequest("x".into()), 400, "BAD_REQUEST"),
            (ApiError::Unauthenticated("x"), 401, "UNAUTHENTICATED"),
            (ApiError::Forbidden("x".into()), 403, "FORBIDDEN"),
            (ApiError::NotFound("x".into()), 404, "NOT_FOUND"),
            (
                ApiError::MethodNotAllowed { allow: vec!["GET"] },
                405,
                "METHOD_NOT_ALLOWED",
            ),
            (
                ApiError::QuotaExceeded {
                    depth: Depth::new(1).unwrap(),
                    requested: 2,
                    available: 0,
                },
                409,
                "QUOTA_EXCEEDED",
            ),
            (ApiError::AlreadyExists("x".into()), 409, "ALREADY_EXISTS"),
            (ApiError::IdempotencyKeyInUse, 409, "IDEMPOTENCY_KEY_IN_USE"),
            (
                ApiError::VersionMismatch { current_version: 2 },
                412,
                "VERSION_MISMATCH",
            ),
            (ApiError::PayloadTooLarge, 413, "PAYLOAD_TOO_LARGE"),
            (
                ApiError::UnsupportedMediaType,
                415,
                "UNSUPPORTED_MEDIA_TYPE",
            ),
            (
                ApiError::IdempotencyKeyReused,
                422,
                "IDEMPOTENCY_KEY_REUSED",
            ),
            (ApiError::Unavailable("x".into()), 503, "UNAVAILABLE"),
            (ApiError::Internal("x".into()), 500, "INTERNAL"),
        ];
        for (error, status, code) in table {
            assert_eq!((error.status(), error.code()), (status, code), "{error:?}");
        }
        assert_eq!(
            ApiError::Unauthenticated("x").extra_headers(),
            vec![(
                "WWW-Authenticate",
                r#"Bearer error="invalid_token""#.to_owned()
            )]
        );
        assert_eq!(
            ApiError::MethodNotAllowed {
                allow: vec!["GET", "POST"]
            }
            .extra_headers(),
            vec![("Allow", "GET, POST".to_owned())]
        );
        assert_eq!(
            ApiError::Unavailable("x".into()).extra_headers(),
            vec![("Retry-After", "1".to_owned())]
        );
        assert_eq!(
            ApiError::QuotaExceeded {
                depth: Depth::new(1).unwrap(),
                requested: 2,
                available: 0
            }
            .details(),
            json!({"depth": 1, "requested": 2, "available": 0})
        );
        assert_eq!(
            ApiError::MethodNotAllowed {
                allow: vec!["GET", "POST"]
            }
            .details(),
            json!({"allow": ["GET", "POST"]})
        );
        assert_eq!(
            ApiError::PayloadTooLarge.details(),
            json!({"limit_bytes": 65536})
        );
    }
}
