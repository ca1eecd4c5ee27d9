//! Token revocation (contract §2): the seed's Redis-backed blacklist, in two forms.
//!
//! - One token: `POST /api/auth/revoke` records the token's [`TokenId`] until the token would expire
//!   anyway ([`Revocation::ttl_secs`]), so the record never outlives what it guards.
//! - Every token of a subject: disabling or deleting a service account records a *not-before* for its
//!   subject, and any token of that subject issued at or before it is refused. It has no expiry, since
//!   tokens may be minted elsewhere with any lifetime; one small record per retired account.
//!
//! The shells fetch both records for each authenticated request and ask [`RevocationRecord::check`].

use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::auth::{AuthConfig, LEEWAY_SECS, Principal, verify};
use crate::body::parse_form_or_json;
use crate::credentials::ClientCredentials;
use crate::error::ApiError;
use crate::hex::lower_hex;

/// Random bytes in a minted token's `jti` (shown as hex).
pub const JTI_BYTES: usize = 16;

/// What a revocation of one token names.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum TokenId {
    /// The token's `jti`: every token this service mints has one.
    Jti(String),
    /// The SHA-256 of the compact token, for tokens minted without a `jti` (`scripts/token`, other
    /// issuers), so that they can be revoked too.
    Digest(String),
}

impl TokenId {
    pub fn of(jti: Option<&str>, compact_token: &str) -> Self {
        match jti {
            Some(jti) => Self::Jti(jti.to_owned()),
            None => Self::Digest(lower_hex(&Sha256::digest(compact_token.as_bytes()))),
        }
    }

    /// A fresh `jti` from random bytes the caller draws.
    pub fn new_jti(random: [u8; JTI_BYTES]) -> String {
        lower_hex(&random)
    }
}

/// What the revocation store holds for one authenticated request's token.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RevocationRecord {
    /// The token itself was revoked.
    pub token_revoked: bool,
    /// Tokens of this subject issued at or before this moment (Unix seconds) are refused.
    pub subject_not_before: Option<i64>,
}

impl RevocationRecord {
    /// 401 when the record refuses the caller's token. A token without `iat` cannot show it was issued
    /// after the subject's not-before, so it is refused too.
    pub fn check(&self, caller: &Principal) -> Result<(), ApiError> {
        let issued_before_cutoff = self
            .subject_not_before
            .is_some_and(|cutoff| caller.issued_at.is_none_or(|iat| iat <= cutoff));
        if self.token_revoked || issued_before_cutoff {
            Err(ApiError::Unauthenticated("token revoked"))
        } else {
            Ok(())
        }
    }
}

/// `POST /api/auth/revoke`'s body (RFC 7009 §2.1), as JSON or `application/x-www-form-urlencoded`.
#[derive(Debug)]
pub struct RevokeRequest {
    pub token: String,
    /// The client's credentials; without them the token authenticates itself.
    pub client: Option<ClientCredentials>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RevokeBody {
    token: String,
    /// RFC 7009's hint only: every token of this service is an access token, so it changes nothing.
    #[serde(default, rename = "token_type_hint")]
    _token_type_hint: Option<String>,
    #[serde(default)]
    client_id: Option<String>,
    #[serde(default)]
    client_secret: Option<String>,
}

impl RevokeRequest {
    pub fn parse(content_type: Option<&str>, body: &[u8]) -> Result<Self, ApiError> {
        let body: RevokeBody = parse_form_or_json(content_type, body)?;
        if body.token.is_empty() {
            return Err(ApiError::invalid("token", "must not be empty"));
        }
        let client = match (body.client_id, body.client_secret) {
            (None, None) => None,
            (Some(client_id), Some(client_secret)) => Some(ClientCredentials {
                client_id,
                client_secret,
            }),
            (Some(_), None) => {
                return Err(ApiError::invalid(
                    "client_secret",
                    "is required with client_id",
                ));
            }
            (None, Some(_)) => {
                return Err(ApiError::invalid(
                    "client_id",
                    "is required with client_secret",
                ));
            }
        };
        Ok(Self {
            token: body.token,
            client,
        })
    }
}

/// A token to record as revoked, and for how long.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revocation {
    pub id: TokenId,
    /// Until the token's `exp` plus the leeway: after that no request accepts it anyway.
    pub ttl_secs: i64,
}

/// What revoking `token` records, for a caller authenticated as `client` (its client id) or, without
/// one, by the token itself. `None` when there is nothing to record: a token that does not verify or
/// has expired is accepted by no request, and RFC 7009 answers 200 for it all the same. A client may
/// only revoke its own tokens (403).
pub fn revocation_of(
    token: &str,
    client: Option<&str>,
    config: &AuthConfig,
    now_secs: i64,
) -> Result<Option<Revocation>, ApiError> {
    let Ok(claims) = verify(token, config, now_secs) else {
        return Ok(None);
    };
    if let Some(client) = client
        && claims.sub != client
    {
        return Err(ApiError::Forbidden(format!(
            "the token was not issued to client {client}"
        )));
    }
    Ok(Some(Revocation {
        id: TokenId::of(claims.jti.as_deref(), token),
        ttl_secs: claims
            .exp
            .saturating_add(LEEWAY_SECS)
            .saturating_sub(now_secs)
            .max(1),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::{Claims, encode_hs256};
    use std::collections::BTreeSet;

    const SECRET: &str = "a-jwt-secret-that-is-at-least-32-bytes";
    const NOW: i64 = 1_000_000;

    fn config() -> AuthConfig {
        AuthConfig::from_variables(SECRET, None, None, None).unwrap()
    }

    fn token(sub: &str, jti: Option<&str>, exp: i64) -> String {
        let claims = Claims {
            sub: sub.into(),
            exp,
            iat: Some(NOW),
            jti: jti.map(str::to_owned),
            ..Claims::default()
        };
        encode_hs256(&claims, SECRET.as_bytes()).unwrap()
    }

    fn caller(issued_at: Option<i64>) -> Principal {
        Principal {
            subject: "ci-bot".into(),
            scopes: BTreeSet::new(),
            workspace_id: None,
            token_id: TokenId::Jti("j1".into()),
            issued_at,
        }
    }

    #[test]
    fn tokens_are_named_by_jti_or_else_by_digest() {
        assert_eq!(
            TokenId::of(Some("abc"), "x.y.z"),
            TokenId::Jti("abc".into())
        );
        let TokenId::Digest(digest) = TokenId::of(None, "x.y.z") else {
            panic!("a digest")
        };
        assert_eq!(digest.len(), 64);
        assert_ne!(TokenId::of(None, "x.y.z"), TokenId::of(None, "x.y.w"));
        assert_eq!(TokenId::new_jti([0xab; JTI_BYTES]), "ab".repeat(JTI_BYTES));
    }

    #[test]
    fn a_revoked_token_and_tokens_issued_up_to_the_subjects_cutoff_are_refused() {
        let refused = Err(ApiError::Unauthenticated("token revoked"));
        let nothing = RevocationRecord::default();
        assert_eq!(nothing.check(&caller(Some(NOW))), Ok(()));
        let revoked = RevocationRecord {
            token_revoked: true,
            ..RevocationRecord::default()
        };
        assert_eq!(revoked.check(&caller(Some(NOW))), refused);
        let cutoff = RevocationRecord {
            subject_not_before: Some(NOW),
            ..RevocationRecord::default()
        };
        assert_eq!(cutoff.check(&caller(Some(NOW - 1))), refused);
        // The same second counts as before: the account was retired while it was issued.
        assert_eq!(cutoff.check(&caller(Some(NOW))), refused);
        assert_eq!(cutoff.check(&caller(None)), refused);
        assert_eq!(cutoff.check(&caller(Some(NOW + 1))), Ok(()));
    }

    #[test]
    fn a_valid_token_is_recorded_until_it_would_expire() {
        let own = token("ci-bot", Some("j1"), NOW + 600);
        let expected = Revocation {
            id: TokenId::Jti("j1".into()),
            ttl_secs: 600 + LEEWAY_SECS,
        };
        assert_eq!(
            revocation_of(&own, None, &config(), NOW),
            Ok(Some(expected.clone()))
        );
        assert_eq!(
            revocation_of(&own, Some("ci-bot"), &config(), NOW),
            Ok(Some(expected))
        );
        let error = revocation_of(&own, Some("other"), &config(), NOW).unwrap_err();
        assert_eq!(error.status(), 403);
    }

    #[test]
    fn tokens_no_request_accepts_need_no_record() {
        let expired = token("ci-bot", Some("j1"), NOW - LEEWAY_SECS - 1);
        let forged = token("ci-bot", Some("j1"), NOW + 600).replace('.', ".x");
        for dead in [expired, forged, "not a token".to_owned()] {
            // Not even a client that is not the token's subject learns anything from the answer.
            assert_eq!(
                revocation_of(&dead, Some("other"), &config(), NOW),
                Ok(None)
            );
        }
    }

    #[test]
    fn revoke_bodies_as_json_or_form() {
        let form = RevokeRequest::parse(
            Some("application/x-www-form-urlencoded"),
            b"token=t.o.k&token_type_hint=access_token&client_id=c&client_secret=s",
        )
        .unwrap();
        assert_eq!(form.token, "t.o.k");
        let client = form.client.unwrap();
        assert_eq!(
            (client.client_id.as_str(), client.client_secret.as_str()),
            ("c", "s")
        );
        let json = RevokeRequest::parse(Some("application/json"), br#"{"token": "t"}"#).unwrap();
        assert_eq!((json.token.as_str(), json.client.is_none()), ("t", true));
        let invalid: [(&[u8], &str); 5] = [
            (br#"{}"#, "token"),
            (br#"{"token": ""}"#, "token"),
            (br#"{"token": "t", "client_id": "c"}"#, "client_secret"),
            (br#"{"token": "t", "client_secret": "s"}"#, "client_id"),
            (br#"{"token": "t", "extra": 1}"#, "extra"),
        ];
        for (body, field) in invalid {
            let error = RevokeRequest::parse(Some("application/json"), body).unwrap_err();
            assert_eq!(error.status(), 422, "{error}");
            assert_eq!(error.details()["fields"][0]["field"], field, "{error}");
        }
    }
}
