//! `POST /api/auth/revoke`: token revocation (RFC 7009).

use orchestrator_core::ApiError;
use orchestrator_core::revocation::{RevokeRequest, revocation_of};
use orchestrator_edge::cache::Cache;
use orchestrator_edge::config::Config;
use orchestrator_edge::db::Db;
use orchestrator_edge::store::service_accounts;
use orchestrator_edge::{Reply, Request, now_millis};
use serde_json::json;

/// 200 `{}` whether or not there was anything to revoke (RFC 7009 §2.2), so the answer tells nobody
/// whether a token is valid; 503 when Redis cannot record it, so the client knows to retry.
pub async fn revoke(request: &Request) -> Result<Reply, ApiError> {
    let revoke = RevokeRequest::parse(request.header("content-type").as_deref(), &request.body)?;
    let config = Config::shared().await?;
    let client = match &revoke.client {
        Some(credentials) => {
            let db = Db::connect(&config.database_url).await?;
            let account = service_accounts::find(&db, &credentials.client_id).await?;
            credentials.verify(account.as_ref())?;
            Some(credentials.client_id.as_str())
        }
        None => None,
    };
    let now_secs = now_millis() / 1000;
    if let Some(revocation) = revocation_of(&revoke.token, client, &config.auth, now_secs)? {
        let cache = Cache::connect(&config.redis_url, &config.database_url).await?;
        cache.revoke(&revocation).await?;
    }
    Ok(Reply::ok(&json!({}))?.with_header("cache-control", "no-store"))
}
