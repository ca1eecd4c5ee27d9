//! `GET /api/health`: can this instance reach Postgres and Redis right now?
//!
//! Without Postgres nothing works ("unavailable"); without Redis reads and
//! unkeyed writes still do, while keyed writes are refused and events wait in
//! the outbox ("degraded"). Either is a 503 with `Retry-After`, so load
//! balancers take the instance out until both answer.

use orchestrator_core::ApiError;
use orchestrator_edge::Reply;
use orchestrator_edge::cache::Cache;
use orchestrator_edge::config::variable;
use orchestrator_edge::db::Db;
use serde_json::{Map, json};

const OK: &str = "ok";
const FAILED: &str = "unavailable";

pub async fn check() -> Result<Reply, ApiError> {
    let database_url = variable("database_url").await?;
    let redis_url = variable("redis_url").await?;
    let (postgres, redis) =
        futures::join!(postgres(&database_url), redis(&redis_url, &database_url));
    let mut checks = Map::new();
    let mut failed = Vec::new();
    for (name, result) in [("postgres", postgres), ("redis", redis)] {
        let outcome = match result {
            Ok(()) => OK,
            Err(e) => {
                eprintln!("health: the {name} check failed: {e}");
                failed.push(name);
                FAILED
            }
        };
        checks.insert(name.to_owned(), json!(outcome));
    }
    let status = match failed.as_slice() {
        [] => return Reply::ok(&json!({ "status": OK, "checks": checks })),
        ["redis"] => "degraded",
        _ => FAILED,
    };
    let error = ApiError::Unavailable(format!("{} unreachable", failed.join(" and ")));
    // The contract's error body, with the health fields beside it.
    let mut body = error.body();
    body["status"] = json!(status);
    body["checks"] = json!(checks);
    body["error"]["details"] = json!({ "checks": checks });
    let mut reply = Reply::error(&error);
    reply.body = body.to_string().into_bytes();
    Ok(reply)
}

async fn postgres(url: &str) -> Result<(), ApiError> {
    Db::connect(url).await?.ping().await
}

/// A `PING`, bounded as every Redis call is ([`orchestrator_edge::cache::REDIS_WAIT`]).
async fn redis(url: &str, database_url: &str) -> Result<(), ApiError> {
    Cache::connect(url, database_url).await?.ping().await
}
