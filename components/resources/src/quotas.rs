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

/// Every depth's limit and allocation.
async fn usage_now(context: &Context) -> Result<Vec<Usage>, ApiError> {
    context.caller.require(Scope::ResourcesRead)?;
    let quotas = configured().await?;
    let db = context.db().await?;
    quotas::usage(&db, &quotas).await
}

/// `GET /api/resources/quotas`: the configured limits, read with the stored rows as the usage is,
/// so that it answers 503 without the database as its documentation says.
pub async fn list(context: &Context) -> Result<Reply, ApiError> {
    let quotas: Vec<Quota> = usage_now(context)
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
    Reply::ok(&json!({ "usage": usage_now(context).await? }))
}
