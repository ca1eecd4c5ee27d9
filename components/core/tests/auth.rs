//! Token verification against hostile and malformed tokens, through the public API only.
//!
//! The PEM files in `tests/keys/` are throwaway keys generated for these tests (openssl genpkey); they
//! protect nothing.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey};
use orchestrator_core::auth::{AuthConfig, Claims, Principal, Scope, authenticate, encode_hs256};
use orchestrator_core::ids::WorkspaceId;
use serde::Serialize;
use serde_json::{Value, json};

#[path = "support/signing.rs"]
mod signing;
use signing::sign;

const SECRET: &str = "0123456789abcdef0123456789abcdef-test-secret";
const NOW: i64 = 1_800_000_000;

const RSA_PRIVATE: &str = include_str!("keys/rsa_private.pem");
const RSA_PUBLIC: &str = include_str!("keys/rsa_public.pem");
const EC_PRIVATE: &str = include_str!("keys/ec_private.pem");
const EC_PUBLIC: &str = include_str!("keys/ec_public.pem");
const ED_PRIVATE: &str = include_str!("keys/ed_private.pem");
const ED_PUBLIC: &str = include_str!("keys/ed_public.pem");
const P384_PUBLIC: &str = include_str!("keys/p384_public.pem");

fn hs_config() -> AuthConfig {
    AuthConfig::from_variables(SECRET, None, None, None).unwrap()
}

fn config_with_key(pem: &str) -> AuthConfig {
    AuthConfig::from_variables(SECRET, Some(pem), None, None).unwrap()
}

fn claims() -> Claims {
    Claims {
        sub: "alice".into(),
        exp: NOW + 600,
        iat: Some(NOW),
        scopes: vec!["jobs:read".into(), "jobs:write".into()],
        ..Claims::default()
    }
}

fn hs256(claims: &impl Serialize) -> String {
    sign(
        claims,
        Algorithm::HS256,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

fn verify(token: &str, config: &AuthConfig) -> Result<Principal, String> {
    authenticate(Some(&bearer(token)), config, NOW).map_err(|error| {
        assert_eq!(error.status(), 401, "{error}");
        assert_eq!(
            error.extra_headers(),
            vec![(
                "WWW-Authenticate",
                r#"Bearer error="invalid_token""#.to_owned()
            )]
        );
        error.message()
    })
}

/// Claims as raw JSON, signed correctly: the signature is fine, the content is the problem.
fn with_claims(raw: Value) -> Result<Principal, String> {
    verify(&hs256(&raw), &hs_config())
}

fn base_claims() -> Value {
    json!({"sub": "alice", "exp": NOW + 600})
}

fn merged(extra: Value) -> Value {
    let mut value = base_claims();
    for (k, v) in extra.as_object().unwrap() {
        value[k] = v.clone();
    }
    value
}

#[test]
fn a_valid_hs256_token_yields_the_principal() {
    let mut claims = claims();
    claims.workspace_id = Some(WorkspaceId::parse("team-a").unwrap());
    let token = encode_hs256(&claims, SECRET.as_bytes()).unwrap();
    let principal = verify(&token, &hs_config()).unwrap();
    assert_eq!(principal.subject, "alice");
    assert_eq!(
        principal.scopes.into_iter().collect::<Vec<_>>(),
        [Scope::JobsRead, Scope::JobsWrite]
    );
    assert_eq!(principal.workspace_id.unwrap().as_str(), "team-a");
}

#[test]
fn scopes_come_from_either_form_and_unknown_ones_are_ignored() {
    let array = with_claims(merged(json!({"scopes": ["jobs:read", "admin:everything"]}))).unwrap();
    assert_eq!(
        array.scopes.into_iter().collect::<Vec<_>>(),
        [Scope::JobsRead]
    );
    let string = with_claims(merged(
        json!({"scope": "supervisor:read  resources:write x:y"}),
    ))
    .unwrap();
    assert_eq!(
        string.scopes.into_iter().collect::<Vec<_>>(),
        [Scope::SupervisorRead, Scope::ResourcesWrite]
    );
    let both = with_claims(merged(
        json!({"scopes": ["jobs:read"], "scope": "jobs:write"}),
    ))
    .unwrap();
    assert_eq!(both.scopes.len(), 2);
    let none = with_claims(base_claims()).unwrap();
    assert!(none.scopes.is_empty());
    assert!(none.workspace_id.is_none());
}

#[test]
fn time_claims_are_checked_against_now_with_30s_leeway() {
    assert!(with_claims(json!({"sub": "a", "exp": NOW - 30})).is_ok());
    assert_eq!(
        with_claims(json!({"sub": "a", "exp": NOW - 31})).unwrap_err(),
        "token expired"
    );
    assert!(with_claims(merged(json!({"nbf": NOW + 30}))).is_ok());
    assert_eq!(
        with_claims(merged(json!({"nbf": NOW + 31}))).unwrap_err(),
        "token not yet valid"
    );
    assert!(with_claims(merged(json!({"iat": NOW + 30}))).is_ok());
    assert_eq!(
        with_claims(merged(json!({"iat": NOW + 31}))).unwrap_err(),
        "token issued in the future"
    );
    // NumericDate may be fractional.
    assert!(with_claims(json!({"sub": "a", "exp": (NOW + 10) as f64 + 0.5})).is_ok());
    assert!(with_claims(json!({"sub": "a", "exp": 1e300})).is_ok());
}

#[test]
fn malformed_claims_are_401_never_a_panic() {
    let cases = [
        json!({"exp": NOW + 600}),                    // no sub
        json!({"sub": 42, "exp": NOW + 600}),         // sub not a string
        json!({"sub": null, "exp": NOW + 600}),       // sub null
        json!({"sub": "a"}),                          // no exp
        json!({"sub": "a", "exp": "tomorrow"}),       // exp not a number
        merged(json!({"nbf": "soon"})),               // nbf not a number
        merged(json!({"scopes": "jobs:read"})),       // scopes not an array
        merged(json!({"scopes": ["jobs:read", 1]})),  // scopes with a non-string
        merged(json!({"scope": ["jobs:read"]})),      // scope not a string
        merged(json!({"workspace_id": "not valid"})), // workspace of another shape
        merged(json!({"workspace_id": 7})),
        merged(json!({"iss": 7})),
        json!([1, 2, 3]),
        json!("just a string"),
    ];
    for raw in cases {
        assert_eq!(
            with_claims(raw.clone()).unwrap_err(),
            "malformed token claims",
            "{raw}"
        );
    }
    assert_eq!(
        with_claims(json!({"sub": "", "exp": NOW + 600})).unwrap_err(),
        "token subject is empty"
    );
    assert_eq!(
        with_claims(json!({"sub": "a\u{0}b", "exp": NOW + 600})).unwrap_err(),
        "token subject contains U+0000"
    );
}

#[test]
fn bad_signatures_and_shapes_are_401() {
    let other_secret = sign(
        &claims(),
        Algorithm::HS256,
        &EncodingKey::from_secret(b"another-secret-another-secret-xx"),
    );
    assert_eq!(
        verify(&other_secret, &hs_config()).unwrap_err(),
        "invalid token signature"
    );

    let token = hs256(&claims());
    let (head, _) = token.rsplit_once('.').unwrap();
    let tampered_payload = format!(
        "{}.{}.{}",
        head.split('.').next().unwrap(),
        URL_SAFE_NO_PAD.encode(merged(json!({"sub": "mallory"})).to_string()),
        token.rsplit('.').next().unwrap()
    );
    assert!(verify(&tampered_payload, &hs_config()).is_err());

    for garbage in [
        "abc",
        "a.b.c",
        "..",
        "a.b",
        "Zm9v.YmFy.YmF6",
        &format!("{token}.x"),
    ] {
        assert!(verify(garbage, &hs_config()).is_err(), "{garbage}");
    }
    for header in [None, Some(""), Some("Bearer"), Some("Basic dXNlcjpwYXNz")] {
        assert_eq!(
            authenticate(header, &hs_config(), NOW)
                .unwrap_err()
                .status(),
            401
        );
    }
    // Scheme is case-insensitive.
    assert!(authenticate(Some(&format!("bearer {token}")), &hs_config(), NOW).is_ok());
}

#[test]
fn alg_none_is_rejected() {
    let payload = URL_SAFE_NO_PAD.encode(base_claims().to_string());
    for header in [
        json!({"alg": "none", "typ": "JWT"}),
        json!({"alg": "None"}),
        json!({"alg": "NONE"}),
    ] {
        let head = URL_SAFE_NO_PAD.encode(header.to_string());
        for token in [format!("{head}.{payload}."), format!("{head}.{payload}")] {
            assert!(verify(&token, &hs_config()).is_err(), "{token}");
        }
    }
}

#[test]
fn public_key_algorithms_verify_their_own_tokens() {
    let cases = [
        (
            RSA_PUBLIC,
            Algorithm::RS256,
            EncodingKey::from_rsa_pem(RSA_PRIVATE.as_bytes()).unwrap(),
        ),
        (
            EC_PUBLIC,
            Algorithm::ES256,
            EncodingKey::from_ec_pem(EC_PRIVATE.as_bytes()).unwrap(),
        ),
        (
            ED_PUBLIC,
            Algorithm::EdDSA,
            EncodingKey::from_ed_pem(ED_PRIVATE.as_bytes()).unwrap(),
        ),
    ];
    for (public_pem, algorithm, private_key) in &cases {
        let config = config_with_key(public_pem);
        assert_eq!(config.public_key_algorithm(), Some(*algorithm));
        let token = sign(&claims(), *algorithm, private_key);
        assert_eq!(verify(&token, &config).unwrap().subject, "alice");
        // Its signature does not carry over to other claims.
        let mallory = Claims {
            sub: "mallory".into(),
            ..claims()
        };
        let other = sign(&mallory, *algorithm, private_key);
        let (other_head_and_claims, _) = other.rsplit_once('.').unwrap();
        let (_, signature) = token.rsplit_once('.').unwrap();
        assert_eq!(
            verify(&format!("{other_head_and_claims}.{signature}"), &config).unwrap_err(),
            "invalid token signature"
        );
        // HS256 stays accepted next to the public key.
        assert!(verify(&hs256(&claims()), &config).is_ok());
        // The same token is refused where that key is not configured.
        assert_eq!(
            verify(&token, &hs_config()).unwrap_err(),
            "token algorithm not accepted"
        );
    }
    // A token of one public-key type against a config of another.
    let rs_token = sign(&claims(), cases[0].1, &cases[0].2);
    assert!(verify(&rs_token, &config_with_key(ED_PUBLIC)).is_err());
    // Another algorithm of the same family is not configured either.
    let rs512 = sign(&claims(), Algorithm::RS512, &cases[0].2);
    assert!(verify(&rs512, &config_with_key(RSA_PUBLIC)).is_err());
}

#[test]
fn hs256_signed_with_the_public_key_is_rejected() {
    for public_pem in [RSA_PUBLIC, EC_PUBLIC, ED_PUBLIC] {
        let config = config_with_key(public_pem);
        let forged = sign(
            &claims(),
            Algorithm::HS256,
            &EncodingKey::from_secret(public_pem.as_bytes()),
        );
        assert_eq!(
            verify(&forged, &config).unwrap_err(),
            "invalid token signature"
        );
    }
}

#[test]
fn issuer_and_audience_are_checked_when_configured() {
    let config =
        AuthConfig::from_variables(SECRET, None, Some("https://issuer"), Some("orchestrator"))
            .unwrap();
    let check = |extra: Value| verify(&hs256(&merged(extra)), &config);
    assert!(check(json!({"iss": "https://issuer", "aud": "orchestrator"})).is_ok());
    assert!(check(json!({"iss": "https://issuer", "aud": ["x", "orchestrator"]})).is_ok());
    assert_eq!(
        check(json!({"iss": "https://evil", "aud": "orchestrator"})).unwrap_err(),
        "wrong token issuer"
    );
    assert_eq!(
        check(json!({"aud": "orchestrator"})).unwrap_err(),
        "wrong token issuer"
    );
    assert_eq!(
        check(json!({"iss": "https://issuer", "aud": "other"})).unwrap_err(),
        "wrong token audience"
    );
    assert_eq!(
        check(json!({"iss": "https://issuer", "aud": ["x", "other"]})).unwrap_err(),
        "wrong token audience"
    );
    assert_eq!(
        check(json!({"iss": "https://issuer"})).unwrap_err(),
        "wrong token audience"
    );
    // Unconfigured: iss and aud are not required, and an aud is not a reason to refuse.
    assert!(with_claims(merged(json!({"iss": "x", "aud": "y"}))).is_ok());
}

#[test]
fn configuration_is_validated() {
    assert!(AuthConfig::from_variables("short", None, None, None).is_err());
    assert!(AuthConfig::from_variables(&"s".repeat(31), None, None, None).is_err());
    assert!(AuthConfig::from_variables(&"s".repeat(32), None, None, None).is_ok());
    let empty = AuthConfig::from_variables(SECRET, Some(""), Some(""), Some(" ")).unwrap();
    assert_eq!(empty.public_key_algorithm(), None);
    assert_eq!((empty.issuer(), empty.audience()), (None, None));

    for bad in [
        "not a pem",
        RSA_PRIVATE,
        ED_PRIVATE,
        EC_PRIVATE,
        P384_PUBLIC,
    ] {
        assert!(
            AuthConfig::from_variables(SECRET, Some(bad), None, None).is_err(),
            "{bad}"
        );
    }
    // Newlines escaped as in an environment variable.
    let escaped = ED_PUBLIC.trim().replace('\n', "\\n");
    assert_eq!(
        config_with_key(&escaped).public_key_algorithm(),
        Some(Algorithm::EdDSA)
    );
    // Debug output shows what was configured, never key material.
    let configured =
        AuthConfig::from_variables(SECRET, Some(RSA_PUBLIC), Some("iss"), None).unwrap();
    let debug = format!("{configured:?}");
    assert!(!debug.contains("MII") && !debug.contains(SECRET), "{debug}");
    assert!(
        debug.starts_with("AuthConfig {")
            && debug.contains("public_key_algorithm: Some(RS256)")
            && debug.contains(r#"issuer: Some("iss")"#),
        "{debug}"
    );
}
