//! `POST /api/auth/token`: OAuth2 client credentials for service accounts.

use orchestrator_core::ApiError;
use orchestrator_core::credentials::{Issue, TokenRequest, authenticate_client};
use orchestrator_edge::config::{Config, seconds_variable, variable};
use orchestrator_edge::db::Db;
use orchestrator_edge::store::service_accounts;
use orchestrator_edge::{Reply, Request, now_millis, random_bytes};

pub async fn issue(request: &Request) -> Result<Reply, ApiError> {
    let token_request =
        TokenRequest::parse(request.header("content-type").as_deref(), &request.body)?;
    let config = Config::shared().await?;
    let ttl_secs = seconds_variable("token_ttl_seconds").await?;
    let db = Db::connect(&config.database_url).await?;
    let account = service_accounts::find(&db, &token_request.client_id).await?;
    let grant = authenticate_client(&token_request, account.as_ref())?;
    // `Config` keeps only the verification key; signing needs the secret itself.
    let secret = variable("jwt_secret").await?;
    let issue = Issue {
        now_secs: now_millis() / 1000,
        ttl_secs,
        jti_random: random_bytes(),
    };
    let issued = grant.issue(&config.auth, secret.as_bytes(), issue)?;
    // RFC 6749 §5.1: responses carrying tokens must not be cached.
    Ok(Reply::ok(&issued)?
        .with_header("cache-control", "no-store")
        .with_header("pragma", "no-cache"))
}
