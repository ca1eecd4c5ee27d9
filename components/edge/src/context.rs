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
    /// The request's Redis connection, opened once for the revocation check and the write's
    /// idempotency and publishing; the error when Redis could not be reached.
    pub cache: Result<Cache, ApiError>,
}

impl Context {
    /// Authenticates the caller and runs `handler` for it. The revocation
    /// check costs a Redis round trip, so a read runs it alongside the handler
    /// and drops the handler's answer for a revoked token (the 401 still comes
    /// first); a write waits for it, since its transaction must not commit for
    /// a revoked token. A write whose check found Redis unreachable does not try it again: its
    /// idempotency claim fails at once, its events wait for a later write.
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
        let cache = Cache::connect(&config.redis_url, &config.database_url).await;
        let mut context = Self {
            config,
            caller,
            cache,
        };
        if request.method == "GET" {
            let (revocation, reply) = futures::join!(revocation(&context), handler(&context));
            fail_open(revocation, &context.caller).and(reply)
        } else {
            let checked = revocation(&context).await;
            if let Err(unreachable @ ApiError::Unavailable(_)) = &checked {
                context.cache = Err(unreachable.clone());
            }
            fail_open(checked, &context.caller)?;
            handler(&context).await
        }
    }

    /// A connection to the app's database, opened on first need.
    pub async fn db(&self) -> Result<Db, ApiError> {
        Db::connect(&self.config.database_url).await
    }
}

/// 401 for a revoked token; `Unavailable` when Redis could not be asked.
async fn revocation(context: &Context) -> Result<(), ApiError> {
    match &context.cache {
        Ok(cache) => cache
            .revocation(&context.caller)
            .await?
            .check(&context.caller),
        Err(unreachable) => Err(unreachable.clone()),
    }
}

/// The revocation check fails open: while Redis cannot be reached a token is checked for its
/// signature and claims only, so reads keep working through a Redis outage, as they do for
/// everything else; the exposure is bounded by the token's lifetime, and a retired account cannot
/// mint new tokens.
fn fail_open(checked: Result<(), ApiError>, caller: &Principal) -> Result<(), ApiError> {
    match checked {
        Err(ApiError::Unavailable(reason)) => {
            eprintln!("revocation not checked for {}: {reason}", caller.subject);
            Ok(())
        }
        other => other,
    }
}
