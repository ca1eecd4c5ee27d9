//! The app's configuration: Spin variables (`SPIN_VARIABLE_<NAME>` under
//! `spin up`), read once per instance — they are the same for every request,
//! and Spin serves many requests from one instance.

use orchestrator_core::ApiError;
use orchestrator_core::auth::AuthConfig;
use spin_sdk::variables;
use std::sync::OnceLock;

pub struct Config {
    pub database_url: String,
    pub redis_url: String,
    pub events_channel: String,
    pub idempotency_ttl_seconds: i64,
    pub auth: AuthConfig,
}

/// Reads a variable the manifest must map for this component.
pub async fn variable(name: &str) -> Result<String, ApiError> {
    variables::get(name)
        .await
        .map_err(|e| ApiError::Internal(format!("variable {name}: {e:?}")))
}

/// Reads a variable that may be empty; empty means unset.
pub async fn optional_variable(name: &str) -> Result<Option<String>, ApiError> {
    Ok(Some(variable(name).await?).filter(|v| !v.is_empty()))
}

impl Config {
    /// The instance's configuration, read (and its keys built) by the first request that needs
    /// it. Requests racing for it inside one instance may each read it; the first to finish wins
    /// and the values are the same.
    pub async fn shared() -> Result<&'static Self, ApiError> {
        static SHARED: OnceLock<Config> = OnceLock::new();
        if let Some(config) = SHARED.get() {
            return Ok(config);
        }
        let config = Self::load().await?;
        Ok(SHARED.get_or_init(|| config))
    }

    async fn load() -> Result<Self, ApiError> {
        let secret = variable("jwt_secret").await?;
        let public_key = optional_variable("jwt_public_key").await?;
        let issuer = optional_variable("jwt_issuer").await?;
        let audience = optional_variable("jwt_audience").await?;
        let auth = AuthConfig::from_variables(
            &secret,
            public_key.as_deref(),
            issuer.as_deref(),
            audience.as_deref(),
        )?;
        Ok(Self {
            database_url: variable("database_url").await?,
            redis_url: variable("redis_url").await?,
            events_channel: variable("events_channel").await?,
            idempotency_ttl_seconds: seconds_variable("idempotency_ttl_seconds").await?,
            auth,
        })
    }
}

/// Reads a variable holding a positive number of seconds (a TTL).
pub async fn seconds_variable(name: &str) -> Result<i64, ApiError> {
    parse_seconds(name, &variable(name).await?)
}

fn parse_seconds(name: &str, raw: &str) -> Result<i64, ApiError> {
    raw.trim()
        .parse::<i64>()
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| {
            ApiError::Internal(format!(
                "variable {name} must be a positive number of seconds, not {raw:?}"
            ))
        })
}
