//! Idempotent POSTs (contract §3): which key, which request it is bound to, and what a repeat gets.
//!
//! A key is scoped to (token `sub`, method, path) so two clients cannot collide or probe each other's
//! keys, and bound to a fingerprint of the request so a reused key with another body is caught rather
//! than answered with the wrong response.

use sha2::{Digest, Sha256};

use crate::error::ApiError;
use crate::hex::lower_hex;
use crate::validation::InvalidValue;

/// The header clients send.
pub const HEADER: &str = "Idempotency-Key";
/// Accepted in its place (*compat* with the original service).
pub const ALIAS_HEADER: &str = "Request-Id";
/// Set on a replayed response.
pub const REPLAYED_HEADER: (&str, &str) = ("Idempotent-Replayed", "true");

/// 1–255 printable ASCII characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    pub const MAX_LEN: usize = 255;

    pub fn parse(raw: &str) -> Result<Self, InvalidValue> {
        let printable = raw.bytes().all(|b| (0x20..=0x7e).contains(&b));
        if !raw.is_empty() && raw.len() <= Self::MAX_LEN && printable {
            Ok(Self(raw.to_owned()))
        } else {
            Err(InvalidValue::new(
                "must be 1-255 printable ASCII characters",
            ))
        }
    }

    /// The key of a request, from `Idempotency-Key` or else its alias `Request-Id`; `None` when the client
    /// sent neither (the request then simply runs). Every key header sent must be well formed, even the
    /// alias that `Idempotency-Key` overrides: a malformed one is a 422 naming it (`Idempotency-Key`
    /// first), never silently ignored.
    pub fn from_headers(
        idempotency_key: Option<&str>,
        request_id: Option<&str>,
    ) -> Result<Option<Self>, ApiError> {
        let parse = |header: &str, raw: Option<&str>| {
            raw.map(|raw| Self::parse(raw).map_err(|e| e.at(header)))
                .transpose()
        };
        let key = parse(HEADER, idempotency_key)?;
        let alias = parse(ALIAS_HEADER, request_id)?;
        Ok(key.or(alias))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// What a request is, for telling a replay from a reuse: SHA-256 (hex) over method, path and body bytes.
pub fn fingerprint(method: &str, path: &str, body: &[u8]) -> String {
    digest(&[method.as_bytes(), path.as_bytes(), body])
}

/// A stable storage key (Postgres column, Redis key suffix) for `key` as used by `subject` on
/// `method path`. Hex of a SHA-256 over length-prefixed parts: no choice of `sub` or key can make two
/// different tuples collide, and the result is safe in any key syntax.
pub fn scope_key(subject: &str, method: &str, path: &str, key: &IdempotencyKey) -> String {
    digest(&[
        subject.as_bytes(),
        method.as_bytes(),
        path.as_bytes(),
        key.as_str().as_bytes(),
    ])
}

fn digest(parts: &[&[u8]]) -> String {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update((part.len() as u64).to_be_bytes());
        hasher.update(part);
    }
    lower_hex(&hasher.finalize())
}

/// A recorded final response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredResponse {
    pub fingerprint: String,
    pub status: u16,
    /// Exactly the bytes sent the first time, so a replay is byte for byte.
    pub body: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// First use of the key: run the request (and record its response if [`is_recordable`]).
    Proceed,
    /// Same key, same request: send this again with [`REPLAYED_HEADER`], change nothing, emit nothing.
    Replay(StoredResponse),
}

/// What to do with a request whose key has `stored` as its recorded response, if any. Same key with a
/// different fingerprint is 422 `IDEMPOTENCY_KEY_REUSED`.
pub fn decide(stored: Option<StoredResponse>, fingerprint: &str) -> Result<Decision, ApiError> {
    match stored {
        None => Ok(Decision::Proceed),
        Some(stored) if stored.fingerprint == fingerprint => Ok(Decision::Replay(stored)),
        Some(_) => Err(ApiError::IdempotencyKeyReused),
    }
}

/// Server errors are not recorded, so the client's retry runs again instead of replaying the failure.
pub fn is_recordable(status: u16) -> bool {
    status < 500
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_printable_ascii_up_to_255() {
        assert!(IdempotencyKey::parse("a").is_ok());
        assert!(IdempotencyKey::parse(" ~ !").is_ok());
        assert!(IdempotencyKey::parse(&"k".repeat(255)).is_ok());
        for bad in ["", "tab\there", "é", "nl\n", "\u{7f}"] {
            assert!(IdempotencyKey::parse(bad).is_err(), "{bad:?}");
        }
        assert!(IdempotencyKey::parse(&"k".repeat(256)).is_err());
    }

    #[test]
    fn header_or_alias() {
        let key = |a, b| IdempotencyKey::from_headers(a, b);
        assert_eq!(key(None, None), Ok(None));
        assert_eq!(key(Some("k1"), Some("k2")).unwrap().unwrap().as_str(), "k1");
        assert_eq!(key(None, Some("k2")).unwrap().unwrap().as_str(), "k2");
        let error = key(None, Some("")).unwrap_err();
        assert_eq!(error.status(), 422);
        assert_eq!(error.details()["fields"][0]["field"], "Request-Id");
        // The overridden alias is still checked; the key's own error comes first.
        let error = key(Some("k1"), Some("é")).unwrap_err();
        assert_eq!(error.details()["fields"][0]["field"], "Request-Id");
        let error = key(Some(""), Some("é")).unwrap_err();
        assert_eq!(error.details()["fields"][0]["field"], "Idempotency-Key");
    }

    #[test]
    fn fingerprints_and_scope_keys() {
        let a = fingerprint("POST", "/api/jobs/submit", b"{}");
        assert_eq!(a.len(), 64);
        assert!(
            a.bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        );
        assert_eq!(a, fingerprint("POST", "/api/jobs/submit", b"{}"));
        assert_ne!(a, fingerprint("POST", "/api/jobs/submit", b"{ }"));
        assert_ne!(a, fingerprint("POST", "/api/jobs/x", b"{}"));

        let key = IdempotencyKey::parse("k").unwrap();
        let base = scope_key("alice", "POST", "/p", &key);
        assert_ne!(base, scope_key("bob", "POST", "/p", &key));
        // Shifting bytes between parts must not collide.
        assert_ne!(
            scope_key("ab", "c", "/p", &key),
            scope_key("a", "bc", "/p", &key)
        );
        assert_ne!(
            scope_key("a\0b", "c", "/p", &key),
            scope_key("a", "b\0c", "/p", &key)
        );
    }

    #[test]
    fn decisions() {
        let stored = StoredResponse {
            fingerprint: "f1".into(),
            status: 201,
            body: br#"{"id":"j_1"}"#.to_vec(),
        };
        assert_eq!(decide(None, "f1"), Ok(Decision::Proceed));
        assert_eq!(
            decide(Some(stored.clone()), "f1"),
            Ok(Decision::Replay(stored.clone()))
        );
        assert_eq!(
            decide(Some(stored), "f2"),
            Err(ApiError::IdempotencyKeyReused)
        );
        assert!(is_recordable(201) && is_recordable(409) && is_recordable(499));
        assert!(!is_recordable(500) && !is_recordable(503));
    }
}
