//! The configured quotas, and how much of each is in use.

use orchestrator_core::ApiError;
use orchestrator_core::auth::Scope;
use orchestrator_core::quota::{Quota, Quotas, Usage};
use orchestrator_edge::config::optional_variable;
use orchestrator_edge::store::quotas;
use orchestrator_edge::{Context, Reply};
use serde_json::json;

/// The `depth_quotas` variable, or the contract's defaults when it is empty.
pub async fn configured() -> Result<Quotas, ApiError> {
    match optional_variable("depth_quotas").await? {
        Some(raw) => Ok(Quotas::parse(&raw)?),
        None => Ok(Quotas::default()),
    }
}

/// Every depth's limit and allocation, with the table brought in line with the configuration first.
async fn synced_usage(context: &Context) -> Result<Vec<Usage>, ApiError> {
    context.caller.require(Scope::ResourcesRead)?;
    let quotas = configured().await?;
    let db = context.db().await?;
    quotas::sync(&db, &quotas).await
}

/// `GET /api/resources/quotas`
pub async fn list(context: &Context) -> Result<Reply, ApiError> {
    let quotas: Vec<Quota> = synced_usage(context)
        .await?
        .into_iter()
        .map(|usage| Quota {
            depth: usage.depth,
            max_workers: usage.max_workers,
        })
        .collect();
    Reply::ok(&json!({ "quotas": quotas }))
}

/// `GET /api/resources/usage`
pub async fn usage(context: &Context) -> Result<Reply, ApiError> {
    Reply::ok(&json!({ "usage": synced_usage(context).await? }))
}
