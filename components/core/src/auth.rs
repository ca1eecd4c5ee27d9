//! Bearer tokens and what they allow (contract §2).
//!
//! Verification never trusts the token about *how* to verify it: the header's `alg` only selects among
//! the keys the operator configured (HS256 secret, optionally one public key), so `alg: none` and
//! HS256-signed-with-the-public-key confusion fail like any bad signature. Time claims are checked here
//! against the caller's clock, not jsonwebtoken's, so results are deterministic and independent of the
//! WebAssembly host's clock access. Every failure is a 401; malformed claims never panic.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Deserializer, Serialize};

use crate::error::{ApiError, ConfigError};
use crate::ids::{Id, IdKind, WorkspaceId};
use crate::revocation::TokenId;
use crate::validation::InvalidValue;

/// Clock skew tolerated on `exp`, `nbf` and `iat`.
pub const LEEWAY_SECS: i64 = 30;
/// Shortest acceptable HS256 secret (RFC 7518 §3.2: at least the hash size).
pub const MIN_SECRET_BYTES: usize = 32;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Scope {
    #[serde(rename = "supervisor:read")]
    SupervisorRead,
    #[serde(rename = "supervisor:write")]
    SupervisorWrite,
    #[serde(rename = "resources:read")]
    ResourcesRead,
    #[serde(rename = "resources:write")]
    ResourcesWrite,
    #[serde(rename = "jobs:read")]
    JobsRead,
    #[serde(rename = "jobs:write")]
    JobsWrite,
}

impl Scope {
    pub const ALL: [Scope; 6] = [
        Self::SupervisorRead,
        Self::SupervisorWrite,
        Self::ResourcesRead,
        Self::ResourcesWrite,
        Self::JobsRead,
        Self::JobsWrite,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::SupervisorRead => "supervisor:read",
            Self::SupervisorWrite => "supervisor:write",
            Self::ResourcesRead => "resources:read",
            Self::ResourcesWrite => "resources:write",
            Self::JobsRead => "jobs:read",
            Self::JobsWrite => "jobs:write",
        }
    }
}

impl FromStr for Scope {
    type Err = InvalidValue;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|scope| scope.as_str() == s)
            .ok_or_else(|| InvalidValue::new(format!("unknown scope {s:?}")))
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The registered and private claims this service reads and, for its own tokens, writes.
///
/// Unknown claims are ignored. Times are NumericDate seconds (fractions are truncated).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    #[serde(deserialize_with = "numeric_date")]
    pub exp: i64,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "optional_numeric_date"
    )]
    pub nbf: Option<i64>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "optional_numeric_date"
    )]
    pub iat: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aud: Option<Audience>,
    /// *compat*: the original service's array form.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scopes: Vec<String>,
    /// OAuth2's space-separated form.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    /// Confines the token to one workspace; absent for operator tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workspace_id: Option<WorkspaceId>,
    /// Names the token for revocation; this service's tokens always carry one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jti: Option<String>,
}

/// `aud` is a string or an array of strings (RFC 7519 §4.1.3).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Audience {
    One(String),
    Many(Vec<String>),
}

impl Audience {
    fn contains(&self, audience: &str) -> bool {
        match self {
            Self::One(one) => one == audience,
            Self::Many(many) => many.iter().any(|a| a == audience),
        }
    }
}

#[derive(Deserialize)]
#[serde(untagged)]
enum NumericDate {
    Integer(i64),
    Fractional(f64),
}

impl From<NumericDate> for i64 {
    fn from(date: NumericDate) -> Self {
        match date {
            NumericDate::Integer(seconds) => seconds,
            // Saturating: absurd values are rejected by the time checks, not by a panic.
            NumericDate::Fractional(seconds) => seconds as i64,
        }
    }
}

fn numeric_date<'de, D: Deserializer<'de>>(deserializer: D) -> Result<i64, D::Error> {
    NumericDate::deserialize(deserializer).map(i64::from)
}

fn optional_numeric_date<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<i64>, D::Error> {
    Option::<NumericDate>::deserialize(deserializer).map(|date| date.map(i64::from))
}

/// How tokens are verified, from the Spin variables `jwt_secret`, `jwt_public_key`, `jwt_issuer` and
/// `jwt_audience`.
#[derive(Clone)]
pub struct AuthConfig {
    hs256: DecodingKey,
    public_key: Option<(Algorithm, DecodingKey)>,
    issuer: Option<String>,
    audience: Option<String>,
}

impl AuthConfig {
    /// Empty optional variables count as unset (Spin variables default to `""`). The public key's type
    /// (RSA → RS256, P-256 → ES256, Ed25519 → EdDSA) is read from the PEM; a PEM whose newlines arrive
    /// as literal `\n` (common in environment variables) is accepted.
    pub fn from_variables(
        secret: &str,
        public_key_pem: Option<&str>,
        issuer: Option<&str>,
        audience: Option<&str>,
    ) -> Result<Self, ConfigError> {
        if secret.len() < MIN_SECRET_BYTES {
            return Err(ConfigError(format!(
                "jwt_secret must be at least {MIN_SECRET_BYTES} bytes"
            )));
        }
        Ok(Self {
            hs256: DecodingKey::from_secret(secret.as_bytes()),
            public_key: non_empty(public_key_pem)
                .map(parse_public_key)
                .transpose()?,
            issuer: non_empty(issuer).map(str::to_owned),
            audience: non_empty(audience).map(str::to_owned),
        })
    }

    /// The algorithm of the configured public key, if any (HS256 is always accepted).
    pub fn public_key_algorithm(&self) -> Option<Algorithm> {
        self.public_key.as_ref().map(|(algorithm, _)| *algorithm)
    }

    /// The `iss` tokens must carry; the token endpoint puts it in the tokens it mints.
    pub fn issuer(&self) -> Option<&str> {
        self.issuer.as_deref()
    }

    /// The `aud` tokens must carry; the token endpoint puts it in the tokens it mints.
    pub fn audience(&self) -> Option<&str> {
        self.audience.as_deref()
    }

    fn key_for(&self, algorithm: Algorithm) -> Option<&DecodingKey> {
        match &self.public_key {
            Some((configured, key)) if *configured == algorithm => Some(key),
            _ if algorithm == Algorithm::HS256 => Some(&self.hs256),
            _ => None,
        }
    }

    fn check_claims(&self, claims: &Claims, now: i64) -> Result<(), ApiError> {
        let reject = |reason| Err(ApiError::Unauthenticated(reason));
        if claims.sub.is_empty() {
            return reject("token subject is empty");
        }
        // The subject is the actor of audit rows and events, and Postgres text cannot hold U+0000.
        if claims.sub.contains('\0') {
            return reject("token subject contains U+0000");
        }
        if now > claims.exp.saturating_add(LEEWAY_SECS) {
            return reject("token expired");
        }
        if claims
            .nbf
            .is_some_and(|nbf| nbf > now.saturating_add(LEEWAY_SECS))
        {
            return reject("token not yet valid");
        }
        if claims
            .iat
            .is_some_and(|iat| iat > now.saturating_add(LEEWAY_SECS))
        {
            return reject("token issued in the future");
        }
        if let Some(issuer) = &self.issuer
            && claims.iss.as_ref() != Some(issuer)
        {
            return reject("wrong token issuer");
        }
        if let Some(audience) = &self.audience
            && !claims
                .aud
                .as_ref()
                .is_some_and(|aud| aud.contains(audience))
        {
            return reject("wrong token audience");
        }
        Ok(())
    }
}

/// Keys stay out of logs.
impl fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthConfig")
            .field("public_key_algorithm", &self.public_key_algorithm())
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .finish_non_exhaustive()
    }
}

fn non_empty(value: Option<&str>) -> Option<&str> {
    value.map(str::trim).filter(|v| !v.is_empty())
}

fn parse_public_key(pem: &str) -> Result<(Algorithm, DecodingKey), ConfigError> {
    let pem = if pem.contains('\n') {
        pem.to_owned()
    } else {
        pem.replace("\\n", "\n")
    };
    let unusable = |why: &str| ConfigError(format!("jwt_public_key {why}"));
    if !pem.contains("-----BEGIN PUBLIC KEY-----")
        && !pem.contains("-----BEGIN RSA PUBLIC KEY-----")
    {
        return Err(unusable("must be a PEM public key (BEGIN PUBLIC KEY)"));
    }
    let bytes = pem.as_bytes();
    if let Ok(key) = DecodingKey::from_rsa_pem(bytes) {
        return Ok((Algorithm::RS256, key));
    }
    if let Ok(key) = DecodingKey::from_ec_pem(bytes) {
        // An uncompressed or compressed P-256 point; P-384 keys would fail every ES256 check.
        return match key.try_get_as_bytes().map(<[u8]>::len) {
            Ok(65 | 33) => Ok((Algorithm::ES256, key)),
            _ => Err(unusable("is an EC key but not P-256 (ES256)")),
        };
    }
    if let Ok(key) = DecodingKey::from_ed_pem(bytes) {
        return Ok((Algorithm::EdDSA, key));
    }
    Err(unusable("is not an RSA, P-256 or Ed25519 public key"))
}

/// Who is calling and what they may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The token's `sub`: the actor in audit rows and events, and the idempotency scope.
    pub subject: String,
    pub scopes: BTreeSet<Scope>,
    /// `None` for operator tokens, which see every workspace.
    pub workspace_id: Option<WorkspaceId>,
    /// Which token this is, for the revocation check.
    pub token_id: TokenId,
    /// The token's `iat`, compared with its subject's revocation not-before.
    pub issued_at: Option<i64>,
}

/// Which workspaces a list may show.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WorkspaceFilter {
    /// Operator token, no filter requested.
    All,
    Only(WorkspaceId),
    /// A confined token asked for another workspace: the answer is an empty list, not a hint that the
    /// workspace exists.
    Nothing,
}

impl Principal {
    /// 403 unless the token has `scope`. Call after authentication and before any lookup (401 → 403 →
    /// 404/422).
    pub fn require(&self, scope: Scope) -> Result<(), ApiError> {
        if self.scopes.contains(&scope) {
            Ok(())
        } else {
            Err(ApiError::Forbidden(format!("token lacks scope {scope}")))
        }
    }

    pub fn can_see(&self, workspace: &WorkspaceId) -> bool {
        self.workspace_id
            .as_ref()
            .is_none_or(|own| own == workspace)
    }

    /// 404 for `id` when it lives in a workspace this token cannot see: the same answer as for an id
    /// that does not exist.
    pub fn check_visible<K: IdKind>(
        &self,
        workspace: &WorkspaceId,
        id: &Id<K>,
    ) -> Result<(), ApiError> {
        if self.can_see(workspace) {
            Ok(())
        } else {
            Err(id.not_found())
        }
    }

    /// The workspace a new worker or job goes to. A confined token defaults to its own and may not name
    /// another (403); an operator token that names none writes into [`WorkspaceId::default_workspace`],
    /// so clients of the original service, which has no workspaces, work unchanged.
    pub fn workspace_for_create(
        &self,
        requested: Option<WorkspaceId>,
    ) -> Result<WorkspaceId, ApiError> {
        match (&self.workspace_id, requested) {
            (Some(own), None) => Ok(own.clone()),
            (Some(own), Some(requested)) if *own == requested => Ok(requested),
            (Some(_), Some(requested)) => Err(ApiError::Forbidden(format!(
                "token may not write into workspace {requested}"
            ))),
            (None, Some(requested)) => Ok(requested),
            (None, None) => Ok(WorkspaceId::default_workspace()),
        }
    }

    /// Combines the token's confinement with a `workspace_id` query filter.
    pub fn list_filter(&self, requested: Option<WorkspaceId>) -> WorkspaceFilter {
        match (&self.workspace_id, requested) {
            (None, None) => WorkspaceFilter::All,
            (Some(own), None) => WorkspaceFilter::Only(own.clone()),
            (Some(own), Some(requested)) if *own != requested => WorkspaceFilter::Nothing,
            (_, Some(requested)) => WorkspaceFilter::Only(requested),
        }
    }

    fn from_claims(claims: Claims, compact_token: &str) -> Self {
        let named = claims
            .scopes
            .iter()
            .map(String::as_str)
            .chain(claims.scope.iter().flat_map(|s| s.split_whitespace()));
        Self {
            // Unknown scopes are ignored: tokens may be shared with other services.
            scopes: named.filter_map(|name| name.parse().ok()).collect(),
            token_id: TokenId::of(claims.jti.as_deref(), compact_token),
            issued_at: claims.iat,
            subject: claims.sub,
            workspace_id: claims.workspace_id,
        }
    }
}

/// Verifies the `Authorization` header at `now` (Unix seconds) and returns the caller. Revocation is
/// checked apart ([`crate::revocation::RevocationRecord::check`]): its records live in Redis.
pub fn authenticate(
    authorization: Option<&str>,
    config: &AuthConfig,
    now_unix_secs: i64,
) -> Result<Principal, ApiError> {
    let token = bearer_token(authorization)?;
    let claims = verify(token, config, now_unix_secs)?;
    Ok(Principal::from_claims(claims, token))
}

/// The claims of a compact token whose signature and claims verify at `now_unix_secs`.
pub(crate) fn verify(
    token: &str,
    config: &AuthConfig,
    now_unix_secs: i64,
) -> Result<Claims, ApiError> {
    crate::jwt_crypto::install();
    let header = jsonwebtoken::decode_header(token)
        .map_err(|_| ApiError::Unauthenticated("malformed token"))?;
    let key = config
        .key_for(header.alg)
        .ok_or(ApiError::Unauthenticated("token algorithm not accepted"))?;
    let claims = jsonwebtoken::decode::<Claims>(token, key, &signature_only(header.alg))
        .map_err(|error| {
            ApiError::Unauthenticated(match error.kind() {
                ErrorKind::InvalidSignature => "invalid token signature",
                ErrorKind::Json(_) => "malformed token claims",
                _ => "malformed token",
            })
        })?
        .claims;
    config.check_claims(&claims, now_unix_secs)?;
    Ok(claims)
}

/// jsonwebtoken checks the signature with exactly `algorithm`; every claim check is ours
/// ([`AuthConfig::check_claims`]), because its time checks read the system clock.
fn signature_only(algorithm: Algorithm) -> Validation {
    let mut validation = Validation::new(algorithm);
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    validation.required_spec_claims.clear();
    validation
}

fn bearer_token(authorization: Option<&str>) -> Result<&str, ApiError> {
    const MISSING: ApiError = ApiError::Unauthenticated("missing bearer token");
    let (scheme, token) = authorization
        .map(str::trim)
        .and_then(|value| value.split_once(' '))
        .ok_or(MISSING)?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(ApiError::Unauthenticated(
            "authorization scheme must be Bearer",
        ));
    }
    let token = token.trim();
    if token.is_empty() {
        return Err(MISSING);
    }
    Ok(token)
}

/// Signs `claims` with the HS256 secret: for the token endpoint and for tests.
pub fn encode_hs256(claims: &Claims, secret: &[u8]) -> Result<String, ApiError> {
    crate::jwt_crypto::install();
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret),
    )
    .map_err(|e| ApiError::Internal(format!("signing a token failed: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn principal(workspace: Option<&str>) -> Principal {
        Principal {
            subject: "alice".into(),
            scopes: BTreeSet::from([Scope::JobsRead]),
            workspace_id: workspace.map(|w| WorkspaceId::parse(w).unwrap()),
            token_id: TokenId::Jti("j1".into()),
            issued_at: None,
        }
    }

    fn ws(raw: &str) -> WorkspaceId {
        WorkspaceId::parse(raw).unwrap()
    }

    #[test]
    fn scopes_round_trip() {
        for scope in Scope::ALL {
            assert_eq!(scope.as_str().parse::<Scope>(), Ok(scope));
            assert_eq!(serde_json::json!(scope), serde_json::json!(scope.as_str()));
        }
        assert!("jobs:admin".parse::<Scope>().is_err());
    }

    #[test]
    fn require_is_403_without_scope() {
        let p = principal(None);
        assert_eq!(p.require(Scope::JobsRead), Ok(()));
        let error = p.require(Scope::JobsWrite).unwrap_err();
        assert_eq!(error.status(), 403);
        assert_eq!(error.message(), "token lacks scope jobs:write");
    }

    #[test]
    fn confined_tokens_see_and_write_only_their_workspace() {
        let confined = principal(Some("a"));
        assert!(confined.can_see(&ws("a")));
        assert!(!confined.can_see(&ws("b")));
        assert_eq!(confined.workspace_for_create(None), Ok(ws("a")));
        assert_eq!(confined.workspace_for_create(Some(ws("a"))), Ok(ws("a")));
        assert_eq!(
            confined
                .workspace_for_create(Some(ws("b")))
                .unwrap_err()
                .status(),
            403
        );
        assert_eq!(confined.list_filter(None), WorkspaceFilter::Only(ws("a")));
        assert_eq!(
            confined.list_filter(Some(ws("a"))),
            WorkspaceFilter::Only(ws("a"))
        );
        assert_eq!(
            confined.list_filter(Some(ws("b"))),
            WorkspaceFilter::Nothing
        );
        let job = crate::ids::JobId::parse("j_1").unwrap();
        assert_eq!(confined.check_visible(&ws("a"), &job), Ok(()));
        assert_eq!(
            confined.check_visible(&ws("b"), &job).unwrap_err(),
            job.not_found()
        );
    }

    #[test]
    fn operator_tokens_see_all_and_create_in_default_unless_they_name_a_workspace() {
        let operator = principal(None);
        assert!(operator.can_see(&ws("anything")));
        assert_eq!(operator.workspace_for_create(Some(ws("b"))), Ok(ws("b")));
        assert_eq!(operator.workspace_for_create(None), Ok(ws("default")));
        assert_eq!(operator.list_filter(None), WorkspaceFilter::All);
        assert_eq!(
            operator.list_filter(Some(ws("b"))),
            WorkspaceFilter::Only(ws("b"))
        );
    }

    #[test]
    fn bearer_header_parsing() {
        assert_eq!(bearer_token(Some("Bearer abc")), Ok("abc"));
        assert_eq!(bearer_token(Some("bEaReR   abc ")), Ok("abc"));
        for bad in [
            None,
            Some(""),
            Some("Bearer"),
            Some("Bearer  "),
            Some("Basic abc"),
        ] {
            assert_eq!(bearer_token(bad).unwrap_err().status(), 401, "{bad:?}");
        }
    }
}
