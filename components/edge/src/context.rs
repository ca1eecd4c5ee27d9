//! Who is calling, under which configuration: established once per request,
//! after routing and before any handler's answer (401 comes before 403 and
//! 404).

use crate::cache::Cache;
use crate::config::Config;
use crate::db::Db;
use crate::reply::Reply;
use crate::request::Request;
use orchestrator_core::ApiError;
use orchestrator_core::auth::{Principal, authenticate};

pub struct Context {
    pub config: &'static Config,
    pub caller: Principal,
}

impl Context {
    /// Authenticates the caller and runs `handler` for it. The revocation
    /// check costs a Redis round trip, so a read runs it alongside the handler
    /// and drops the handler's answer for a revoked token (the 401 still comes
    /// first); a write waits for it, since its transaction must not commit for
    /// a revoked token.
    pub async fn run<F>(request: &Request, handler: F) -> Result<Reply, ApiError>
    where
        F: AsyncFnOnce(&Context) -> Result<Reply, ApiError>,
    {
        let config = Config::shared().await?;
        let now_secs = crate::now_millis() / 1000;
        let caller = authenticate(
            request.header("authorization").as_deref(),
            &config.auth,
            now_secs,
        )?;
        let context = Self { config, caller };
        let revocation = check_not_revoked(context.config, &context.caller);
        if request.method == "GET" {
            let (revocation, reply) = futures::join!(revocation, handler(&context));
            revocation.and(reply)
        } else {
            revocation.await?;
            handler(&context).await
        }
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
