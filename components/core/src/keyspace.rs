//! The names of the Redis keys the service keeps, in one place: the components and the native
//! `service-account` tool must agree on them, or a revocation would be written where no request looks.

use sha2::{Digest, Sha256};

use crate::hex::lower_hex;
use crate::revocation::TokenId;

/// The keys of one app. They are namespaced by its database URL, so apps on separate databases that
/// share a Redis never see each other's keys; whoever writes a key must therefore use the URL the app
/// is configured with, byte for byte.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keyspace {
    prefix: String,
}

impl Keyspace {
    pub fn for_database(database_url: &str) -> Self {
        let digest = Sha256::digest(database_url.as_bytes());
        Self {
            prefix: format!("orchestrator:{}", lower_hex(&digest[..8])),
        }
    }

    /// A `SCAN MATCH` pattern for every key of this app (what a test drops with its database).
    pub fn every_key(&self) -> String {
        format!("{}:*", self.prefix)
    }

    /// The recorded response of an idempotency key's scope.
    pub fn idempotency_record(&self, scope_key: &str) -> String {
        format!("{}:idempotency:{scope_key}", self.prefix)
    }

    /// The in-flight lock of an idempotency key's scope.
    pub fn idempotency_lock(&self, scope_key: &str) -> String {
        format!("{}:idempotency-lock:{scope_key}", self.prefix)
    }

    /// Present while a revoked token could still be accepted.
    pub fn revoked_token(&self, id: &TokenId) -> String {
        match id {
            TokenId::Jti(jti) => format!("{}:revoked-jti:{jti}", self.prefix),
            TokenId::Digest(digest) => format!("{}:revoked-token:{digest}", self.prefix),
        }
    }

    /// The `seq` of the newest event published for `workspace` (for every workspace with `None`):
    /// the doorbell live reads watch, so they look in Postgres only when something happened.
    pub fn events_head(&self, workspace: Option<&str>) -> String {
        match workspace {
            Some(workspace) => format!("{}:events-head:{workspace}", self.prefix),
            None => format!("{}:events-head", self.prefix),
        }
    }

    /// A subject's revocation not-before, in Unix seconds.
    pub fn subject_not_before(&self, subject: &str) -> String {
        format!("{}:tokens-not-before:{subject}", self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_namespaced_by_database_and_kept_apart_by_kind() {
        let one = Keyspace::for_database("postgres://db/one");
        let other = Keyspace::for_database("postgres://db/other");
        assert_ne!(
            one.subject_not_before("bot"),
            other.subject_not_before("bot")
        );
        // The idempotency keys keep the spelling they had before this module, so records survive.
        let prefix = &one.prefix;
        assert_eq!(prefix.len(), "orchestrator:".len() + 16);
        assert_eq!(
            one.idempotency_record("k"),
            format!("{prefix}:idempotency:k")
        );
        assert_eq!(
            one.idempotency_lock("k"),
            format!("{prefix}:idempotency-lock:k")
        );
        // A `jti` that spells a digest does not name the token with that digest.
        let digest = "ab".repeat(32);
        assert_ne!(
            one.revoked_token(&TokenId::Jti(digest.clone())),
            one.revoked_token(&TokenId::Digest(digest))
        );
    }
}
