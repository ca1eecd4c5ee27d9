//! `auth::authenticate` on tokens correctly signed (HS256) over arbitrary payload bytes: the claims
//! checks, which a forged signature never reaches, get the hostile input.
//!
//! Invariants: never a panic; a refusal is 401; an accepted token has a non-empty `sub`, is within its
//! time window (with the leeway), carries the configured issuer and audience, and yields exactly the
//! known scopes it names and the workspace it names.
#![no_main]

use std::collections::BTreeSet;
use std::sync::OnceLock;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey};
use libfuzzer_sys::fuzz_target;
use orchestrator_core::auth::{Audience, AuthConfig, Claims, LEEWAY_SECS, Scope, authenticate};
use orchestrator_core_fuzz::assert_refusal;

/// The secret the tokens are signed with; it protects nothing.
const SECRET: &str = "fuzzing-secret-0123456789abcdef0123456789";
const ISSUER: &str = "https://issuer.test";
const AUDIENCE: &str = "orchestrator";
const NOW: i64 = 1_800_000_000;

fn config() -> &'static AuthConfig {
    static CONFIG: OnceLock<AuthConfig> = OnceLock::new();
    CONFIG.get_or_init(|| {
        AuthConfig::from_variables(SECRET, None, Some(ISSUER), Some(AUDIENCE))
            .expect("a valid configuration")
    })
}

/// A compact JWS over exactly `payload`, signed with the test secret.
fn signed(payload: &[u8]) -> String {
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
    let message = format!("{header}.{}", URL_SAFE_NO_PAD.encode(payload));
    let key = EncodingKey::from_secret(SECRET.as_bytes());
    let signature = jsonwebtoken::crypto::sign(message.as_bytes(), &key, Algorithm::HS256)
        .expect("HS256 signs");
    format!("{message}.{signature}")
}

fuzz_target!(|payload: &[u8]| {
    let header = format!("Bearer {}", signed(payload));
    match authenticate(Some(&header), config(), NOW) {
        Ok(principal) => {
            let claims: Claims = serde_json::from_slice(payload).expect("accepted claims decode");
            assert!(!claims.sub.is_empty());
            assert_eq!(principal.subject, claims.sub);
            assert!(NOW <= claims.exp.saturating_add(LEEWAY_SECS));
            assert!(claims.nbf.is_none_or(|nbf| nbf <= NOW + LEEWAY_SECS));
            assert!(claims.iat.is_none_or(|iat| iat <= NOW + LEEWAY_SECS));
            assert_eq!(claims.iss.as_deref(), Some(ISSUER));
            match claims.aud {
                Some(Audience::One(one)) => assert_eq!(one, AUDIENCE),
                Some(Audience::Many(many)) => assert!(many.iter().any(|aud| aud == AUDIENCE)),
                None => panic!("accepted without an audience"),
            }
            let named: BTreeSet<Scope> = claims
                .scopes
                .iter()
                .map(String::as_str)
                .chain(claims.scope.iter().flat_map(|s| s.split_whitespace()))
                .filter_map(|name| name.parse().ok())
                .collect();
            assert_eq!(principal.scopes, named);
            assert_eq!(principal.workspace_id, claims.workspace_id);
        }
        Err(error) => assert_refusal(&error, &[401]),
    }
});
