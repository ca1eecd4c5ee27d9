//! OAuth2 client credentials (contract §2): a service account proves itself with a secret whose
//! Argon2id hash is stored, and gets a bearer token carrying some or all of the account's scopes.
//!
//! Telling a wrong secret from an unknown client must not be possible by timing, so [`verify_secret`]
//! runs one Argon2id verification in every case — against [`DUMMY_HASH`] when there is no usable stored
//! hash — and every refusal reads the same. The parameters live here so that the component verifying
//! secrets and the tool creating accounts cannot drift apart.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use serde::{Deserialize, Deserializer, Serialize};

use crate::auth::{Audience, AuthConfig, Claims, Scope, encode_hs256};
use crate::body::parse_form_or_json;
use crate::error::ApiError;
use crate::hex::lower_hex;
use crate::ids::WorkspaceId;
use crate::revocation::{JTI_BYTES, TokenId};
use crate::validation::InvalidValue;

/// Argon2id memory cost in KiB (19 MiB), with [`ITERATIONS`] and [`PARALLELISM`]: OWASP's minimum
/// recommendation, which keeps one verification inside a WebAssembly instance well under a second.
pub const MEMORY_KIB: u32 = 19_456;
pub const ITERATIONS: u32 = 2;
pub const PARALLELISM: u32 = 1;
/// Length of the derived hash.
pub const OUTPUT_BYTES: usize = 32;
/// Random bytes in a salt.
pub const SALT_BYTES: usize = 16;
/// Random bytes in a generated client secret (shown as hex).
pub const SECRET_BYTES: usize = 32;

/// The hash of a random secret nobody knows, with the parameters above: what an unknown client id is
/// verified against, so that it costs as much as a wrong secret.
pub const DUMMY_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$YgzuA04QZQsYXPnX7Guxbw$Q4HoV6Fd2Kh61xn/z0U0Ga7pB55Ga+ueVI7uqa3XwzA";

const PARAMS: Params = match Params::new(MEMORY_KIB, ITERATIONS, PARALLELISM, Some(OUTPUT_BYTES)) {
    Ok(params) => params,
    Err(_) => panic!("the Argon2id parameters are out of range"),
};

fn argon2id() -> Argon2<'static> {
    Argon2::new(Algorithm::Argon2id, Version::V0x13, PARAMS)
}

/// A new client secret from the caller's random bytes.
pub fn new_secret(random: [u8; SECRET_BYTES]) -> String {
    lower_hex(&random)
}

/// The PHC string (`$argon2id$v=19$m=19456,t=2,p=1$<salt>$<hash>`) to store for `secret`.
pub fn hash_secret(secret: &str, salt: [u8; SALT_BYTES]) -> Result<String, ApiError> {
    let failed = |e: argon2::password_hash::Error| ApiError::Internal(format!("argon2id: {e}"));
    let salt = SaltString::encode_b64(&salt).map_err(failed)?;
    let hash = argon2id()
        .hash_password(secret.as_bytes(), &salt)
        .map_err(failed)?;
    Ok(hash.to_string())
}

/// Whether `secret` matches `stored`. Costs one Argon2id verification whatever `stored` is: a missing
/// or unparseable hash is replaced by [`DUMMY_HASH`] and the answer is `false`.
pub fn verify_secret(stored: Option<&str>, secret: &str) -> bool {
    let stored = stored.and_then(|hash| PasswordHash::new(hash).ok());
    let (hash, real) = match stored {
        Some(hash) if hash.algorithm == Algorithm::Argon2id.ident() => (hash, true),
        _ => match PasswordHash::new(DUMMY_HASH) {
            Ok(dummy) => (dummy, false),
            Err(_) => return false,
        },
    };
    let matches = argon2id().verify_password(secret.as_bytes(), &hash).is_ok();
    matches && real
}

/// `POST /api/auth/token`'s body, as JSON or `application/x-www-form-urlencoded`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenRequest {
    pub client_id: String,
    pub client_secret: String,
    /// Space-separated; absent or empty asks for every scope of the account.
    #[serde(default)]
    pub scope: Option<RequestedScopes>,
    /// OAuth2's `grant_type`; optional, but when present only `client_credentials`.
    #[serde(default)]
    pub grant_type: Option<GrantType>,
}

impl TokenRequest {
    /// Form-encoded when the content type says so, JSON otherwise.
    pub fn parse(content_type: Option<&str>, body: &[u8]) -> Result<Self, ApiError> {
        parse_form_or_json(content_type, body)
    }
}

/// A client's id and secret, as the revoke endpoint receives them.
pub struct ClientCredentials {
    pub client_id: String,
    pub client_secret: String,
}

/// The secret stays out of logs.
impl fmt::Debug for ClientCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientCredentials")
            .field("client_id", &self.client_id)
            .finish_non_exhaustive()
    }
}

impl ClientCredentials {
    /// The account, once the secret verifies against it; see [`verify_client`].
    pub fn verify<'a>(
        &self,
        account: Option<&'a ServiceAccount>,
    ) -> Result<&'a ServiceAccount, ApiError> {
        verify_client(&self.client_secret, account)
    }
}

/// The secret stays out of logs.
impl fmt::Debug for TokenRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenRequest")
            .field("client_id", &self.client_id)
            .field("scope", &self.scope)
            .field("grant_type", &self.grant_type)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum GrantType {
    #[serde(rename = "client_credentials")]
    ClientCredentials,
}

/// The scopes a token request names; each must be one of the six the API knows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestedScopes(BTreeSet<Scope>);

impl FromStr for RequestedScopes {
    type Err = InvalidValue;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.split_whitespace()
            .map(str::parse)
            .collect::<Result<_, _>>()
            .map(Self)
    }
}

impl<'de> Deserialize<'de> for RequestedScopes {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// A service account as stored.
#[derive(Clone, PartialEq, Eq)]
pub struct ServiceAccount {
    pub secret_hash: String,
    pub scopes: BTreeSet<Scope>,
    /// Tokens of an account with a workspace are confined to it; without one they are operator tokens.
    pub workspace_id: Option<WorkspaceId>,
    pub disabled: bool,
}

/// The hash stays out of logs.
impl fmt::Debug for ServiceAccount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServiceAccount")
            .field("scopes", &self.scopes)
            .field("workspace_id", &self.workspace_id)
            .field("disabled", &self.disabled)
            .finish_non_exhaustive()
    }
}

/// What a verified client may have in its token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub subject: String,
    pub scopes: BTreeSet<Scope>,
    pub workspace_id: Option<WorkspaceId>,
}

/// The account `secret` belongs to: 401 for an unknown client (`None`), a wrong secret or a disabled
/// account, alike and after the same work.
fn verify_client<'a>(
    secret: &str,
    account: Option<&'a ServiceAccount>,
) -> Result<&'a ServiceAccount, ApiError> {
    let verified = verify_secret(account.map(|account| account.secret_hash.as_str()), secret);
    account
        .filter(|account| verified && !account.disabled)
        .ok_or(ApiError::Unauthenticated("invalid client credentials"))
}

/// Verifies the client ([`verify_client`]), then narrows its scopes to those requested (403 for a
/// scope the account lacks).
pub fn authenticate_client(
    request: &TokenRequest,
    account: Option<&ServiceAccount>,
) -> Result<Grant, ApiError> {
    let account = verify_client(&request.client_secret, account)?;
    let scopes = match &request.scope {
        Some(RequestedScopes(requested)) if !requested.is_empty() => {
            if let Some(missing) = requested.difference(&account.scopes).next() {
                return Err(ApiError::Forbidden(format!(
                    "client {} may not request scope {missing}",
                    request.client_id
                )));
            }
            requested.clone()
        }
        _ => account.scopes.clone(),
    };
    Ok(Grant {
        subject: request.client_id.clone(),
        scopes,
        workspace_id: account.workspace_id.clone(),
    })
}

/// When a token is minted, for how long, and the caller's random bytes for its `jti`.
#[derive(Debug, Clone, Copy)]
pub struct Issue {
    pub now_secs: i64,
    pub ttl_secs: i64,
    pub jti_random: [u8; JTI_BYTES],
}

/// The token endpoint's success body (RFC 6749 §5.1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TokenResponse {
    pub access_token: String,
    pub token_type: &'static str,
    pub expires_in: i64,
    pub scope: String,
}

impl Grant {
    /// The claims of the token: both scope forms, the workspace, a `jti` for revoking it, and `iss` /
    /// `aud` when the service checks them, so the token passes this service's own verification.
    pub fn claims(&self, auth: &AuthConfig, issued: Issue) -> Claims {
        let Issue {
            now_secs,
            ttl_secs,
            jti_random,
        } = issued;
        Claims {
            sub: self.subject.clone(),
            exp: now_secs.saturating_add(ttl_secs),
            nbf: None,
            iat: Some(now_secs),
            iss: auth.issuer().map(str::to_owned),
            aud: auth.audience().map(|aud| Audience::One(aud.to_owned())),
            scopes: self.scopes.iter().map(|s| s.as_str().to_owned()).collect(),
            scope: Some(self.scope_string()),
            workspace_id: self.workspace_id.clone(),
            jti: Some(TokenId::new_jti(jti_random)),
        }
    }

    /// Signs the token with the HS256 secret and describes it.
    pub fn issue(
        &self,
        auth: &AuthConfig,
        secret: &[u8],
        issued: Issue,
    ) -> Result<TokenResponse, ApiError> {
        Ok(TokenResponse {
            access_token: encode_hs256(&self.claims(auth, issued), secret)?,
            token_type: "Bearer",
            expires_in: issued.ttl_secs,
            scope: self.scope_string(),
        })
    }

    fn scope_string(&self) -> String {
        let names: Vec<&str> = self.scopes.iter().map(|s| s.as_str()).collect();
        names.join(" ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::authenticate;

    const SECRET: &str = "a-jwt-secret-that-is-at-least-32-bytes";

    fn account(secret: &str, scopes: &[Scope], workspace: Option<&str>) -> ServiceAccount {
        ServiceAccount {
            secret_hash: hash_secret(secret, [7; SALT_BYTES]).unwrap(),
            scopes: scopes.iter().copied().collect(),
            workspace_id: workspace.map(|w| WorkspaceId::parse(w).unwrap()),
            disabled: false,
        }
    }

    fn request(secret: &str, scope: Option<&str>) -> TokenRequest {
        TokenRequest {
            client_id: "ci-bot".into(),
            client_secret: secret.into(),
            scope: scope.map(|s| s.parse().unwrap()),
            grant_type: None,
        }
    }

    #[test]
    fn hashes_are_argon2id_phc_strings_with_the_shared_parameters() {
        let hash = hash_secret("s3cret", [1; SALT_BYTES]).unwrap();
        assert!(
            hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
            "{hash}"
        );
        assert!(verify_secret(Some(&hash), "s3cret"));
        assert!(!verify_secret(Some(&hash), "s3cret "));
        assert_ne!(hash, hash_secret("s3cret", [2; SALT_BYTES]).unwrap());
    }

    #[test]
    fn only_argon2id_hashes_verify() {
        let salt = SaltString::encode_b64(&[3; SALT_BYTES]).unwrap();
        for algorithm in [Algorithm::Argon2i, Algorithm::Argon2d] {
            let hash = Argon2::new(algorithm, Version::V0x13, PARAMS)
                .hash_password(b"s3cret", &salt)
                .unwrap()
                .to_string();
            assert!(!verify_secret(Some(&hash), "s3cret"), "{hash}");
        }
    }

    #[test]
    fn debug_output_names_the_client_but_not_its_secret() {
        let credentials = ClientCredentials {
            client_id: "ci-bot".into(),
            client_secret: "hunter2-secret".into(),
        };
        let token_request = request("hunter2-secret", Some("jobs:read"));
        let stored = account("hunter2-secret", &[Scope::JobsRead], Some("team-a"));
        for (debug, expected) in [
            (
                format!("{credentials:?}"),
                r#"ClientCredentials { client_id: "ci-bot", .. }"#,
            ),
            (
                format!("{token_request:?}"),
                r#"TokenRequest { client_id: "ci-bot", scope: Some(RequestedScopes({JobsRead})), grant_type: None, .. }"#,
            ),
        ] {
            assert_eq!(debug, expected);
        }
        let debug = format!("{stored:?}");
        assert!(
            debug.starts_with("ServiceAccount { scopes: {JobsRead}, workspace_id: Some(")
                && debug.ends_with("disabled: false, .. }"),
            "{debug}"
        );
        assert!(
            !debug.contains(&stored.secret_hash) && !debug.contains("argon2"),
            "{debug}"
        );
    }

    #[test]
    fn the_dummy_hash_costs_what_a_real_one_costs() {
        let dummy = PasswordHash::new(DUMMY_HASH).unwrap();
        assert_eq!(dummy.algorithm, Algorithm::Argon2id.ident());
        assert_eq!(Params::try_from(&dummy).unwrap(), PARAMS);
        assert_eq!(dummy.hash.unwrap().len(), OUTPUT_BYTES);
        assert!(!verify_secret(None, ""));
        assert!(!verify_secret(Some("not a hash"), "x"));
        assert!(!verify_secret(
            Some(&DUMMY_HASH.replacen("argon2id", "argon2i", 1)),
            ""
        ));
    }

    #[test]
    fn generated_secrets_are_64_hex_characters() {
        let secret = new_secret([0xab; SECRET_BYTES]);
        assert_eq!(secret.len(), 64);
        assert!(secret.chars().all(|c| c.is_ascii_hexdigit()));
    }

    #[test]
    fn wrong_unknown_and_disabled_clients_get_the_same_401() {
        let mut stored = account("right", &[Scope::JobsRead], None);
        let refusals = [
            authenticate_client(&request("wrong", None), Some(&stored)),
            authenticate_client(&request("right", None), None),
        ];
        stored.disabled = true;
        let disabled = authenticate_client(&request("right", None), Some(&stored));
        for refusal in refusals.into_iter().chain([disabled]) {
            assert_eq!(
                refusal,
                Err(ApiError::Unauthenticated("invalid client credentials"))
            );
        }
    }

    #[test]
    fn requested_scopes_must_be_a_subset() {
        let stored = account("s", &[Scope::JobsRead, Scope::JobsWrite], Some("ws_a"));
        let all = authenticate_client(&request("s", None), Some(&stored)).unwrap();
        assert_eq!(
            all.scopes,
            BTreeSet::from([Scope::JobsRead, Scope::JobsWrite])
        );
        assert_eq!(all.subject, "ci-bot");
        let empty = authenticate_client(&request("s", Some("  ")), Some(&stored)).unwrap();
        assert_eq!(empty.scopes, all.scopes);
        let narrowed =
            authenticate_client(&request("s", Some("jobs:read")), Some(&stored)).unwrap();
        assert_eq!(narrowed.scopes, BTreeSet::from([Scope::JobsRead]));
        let error = authenticate_client(
            &request("s", Some("jobs:read supervisor:read")),
            Some(&stored),
        )
        .unwrap_err();
        assert_eq!(error.status(), 403);
        assert_eq!(
            error.message(),
            "client ci-bot may not request scope supervisor:read"
        );
        // Credentials are checked before scopes: 401 comes before 403.
        let error = authenticate_client(&request("x", Some("supervisor:read")), Some(&stored));
        assert_eq!(error.unwrap_err().status(), 401);
    }

    #[test]
    fn token_bodies_as_json_or_form() {
        let json = TokenRequest::parse(
            Some("application/json"),
            br#"{"client_id": "c", "client_secret": "s", "scope": "jobs:read", "grant_type": "client_credentials"}"#,
        )
        .unwrap();
        let form = TokenRequest::parse(
            Some("application/x-www-form-urlencoded"),
            b"grant_type=client_credentials&client_id=c&client_secret=s&scope=jobs%3Aread",
        )
        .unwrap();
        for parsed in [json, form] {
            assert_eq!(
                (parsed.client_id.as_str(), parsed.client_secret.as_str()),
                ("c", "s")
            );
            assert_eq!(parsed.scope, Some("jobs:read".parse().unwrap()));
            assert_eq!(parsed.grant_type, Some(GrantType::ClientCredentials));
        }
        let invalid: [(&str, &[u8], &str); 4] = [
            (
                "application/json",
                br#"{"client_id": "c"}"#,
                "client_secret",
            ),
            (
                "application/x-www-form-urlencoded",
                b"client_id=c&client_secret=s&grant_type=password",
                "grant_type",
            ),
            (
                "application/x-www-form-urlencoded",
                b"client_id=c&client_secret=s&scope=jobs:admin",
                "scope",
            ),
            (
                "application/json",
                br#"{"client_id": "c", "client_secret": "s", "extra": 1}"#,
                "extra",
            ),
        ];
        for (content_type, body, field) in invalid {
            let error = TokenRequest::parse(Some(content_type), body).unwrap_err();
            assert_eq!(error.status(), 422, "{error}");
            assert_eq!(error.details()["fields"][0]["field"], field, "{error}");
        }
        let error = TokenRequest::parse(Some("text/plain"), b"client_id=c").unwrap_err();
        assert_eq!(error.status(), 415);
    }

    #[test]
    fn issued_tokens_pass_this_services_verification() {
        let auth =
            AuthConfig::from_variables(SECRET, None, Some("https://issuer"), Some("orchestrator"))
                .unwrap();
        let grant = Grant {
            subject: "ci-bot".into(),
            scopes: BTreeSet::from([Scope::JobsWrite, Scope::JobsRead]),
            workspace_id: Some(WorkspaceId::parse("ws_a").unwrap()),
        };
        let issue = Issue {
            now_secs: 1_000,
            ttl_secs: 3_600,
            jti_random: [7; JTI_BYTES],
        };
        let issued = grant.issue(&auth, SECRET.as_bytes(), issue).unwrap();
        assert_eq!(issued.token_type, "Bearer");
        assert_eq!(issued.expires_in, 3_600);
        assert_eq!(issued.scope, "jobs:read jobs:write");
        let claims = grant.claims(&auth, issue);
        assert_eq!((claims.iat, claims.exp), (Some(1_000), 4_600));
        assert_eq!(claims.jti, Some("07".repeat(JTI_BYTES)));
        assert_eq!(claims.scopes, ["jobs:read", "jobs:write"]);
        let header = format!("Bearer {}", issued.access_token);
        let principal = authenticate(Some(&header), &auth, 1_010).unwrap();
        assert_eq!(principal.subject, "ci-bot");
        assert_eq!(principal.scopes, grant.scopes);
        assert_eq!(principal.workspace_id, grant.workspace_id);
        assert_eq!(principal.token_id, TokenId::Jti("07".repeat(JTI_BYTES)));
        assert_eq!(
            authenticate(Some(&header), &auth, 4_600 + 31)
                .unwrap_err()
                .status(),
            401
        );
    }
}
