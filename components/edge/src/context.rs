//! Who is calling, under which configuration: established once per request,
//! after routing and before any handler (401 comes before 403 and 404).

use crate::cache::Cache;
use crate::config::Config;
use crate::db::Db;
use crate::request::Request;
use orchestrator_core::ApiError;
use orchestrator_core::auth::{Principal, authenticate};

pub struct Context {
    pub config: Config,
    pub caller: Principal,
}

impl Context {
    pub async fn authenticate(request: &Request) -> Result<Self, ApiError> {
        let config = Config::load().await?;
        let now_secs = crate::now_millis() / 1000;
        let caller = authenticate(request.header("authorization"), &config.auth, now_secs)?;
        check_not_revoked(&config, &caller).await?;
        Ok(Self { config, caller })
    }

    /// A connection to the app's database, opened on first need.
    pub async fn db(&self) -> Result<Db, ApiError> {
        Db::connect(&self.config.database_url).await
    }
}

/// 401 for a revoked token. Fails open: while Redis cannot be reached a token
/// is checked for its signature and claims only, so reads keep working through
/// a Redis outage, as they do for everything else; the exposure is bounded by
/// the token's lifetime, and a retired account cannot mint new tokens.
async fn check_not_revoked(config: &Config, caller: &Principal) -> Result<(), ApiError> {
    let record = match Cache::connect(&config.redis_url, &config.database_url).await {
        Ok(cache) => cache.revocation(caller).await,
        Err(unreachable) => Err(unreachable),
    };
    match record {
        Ok(record) => record.check(caller),
        Err(ApiError::Unavailable(reason)) => {
            eprintln!("revocation not checked for {}: {reason}", caller.subject);
            Ok(())
        }
        Err(other) => Err(other),
    }
}
