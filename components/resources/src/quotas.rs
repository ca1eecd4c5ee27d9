//! The configured quotas.

use orchestrator_core::ApiError;
use orchestrator_core::auth::Scope;
use orchestrator_core::quota::Quotas;
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

/// `GET /api/resources/quotas`
pub async fn list(context: &Context) -> Result<Reply, ApiError> {
    context.caller.require(Scope::ResourcesRead)?;
    let quotas = configured().await?;
    let db = context.db().await?;
    let rows = quotas::sync(&db, &quotas).await?;
    let quotas: Vec<_> = rows
        .into_iter()
        .map(|(depth, max_workers)| json!({"depth": depth, "max_workers": max_workers}))
        .collect();
    Reply::ok(&json!({ "quotas": quotas }))
}
