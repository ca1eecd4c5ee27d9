//! Who is calling, under which configuration: established once per request,
//! after routing and before any handler (401 comes before 403 and 404).

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
        Ok(Self { config, caller })
    }

    /// A connection to the app's database, opened on first need.
    pub async fn db(&self) -> Result<Db, ApiError> {
        Db::connect(&self.config.database_url).await
    }
}
