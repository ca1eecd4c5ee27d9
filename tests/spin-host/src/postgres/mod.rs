//! `spin:postgres/postgres@4.2.0` on tokio-postgres.
//!
//! As in Spin, a connection resource holds one pooled connection (a pool per
//! address) for its whole life, so `BEGIN` … `COMMIT` sent as statements is a
//! real transaction. A connection dropped with a transaction open — by the
//! guest, or because the instance trapped and its store was dropped — is
//! rolled back before the pool hands it out again.

mod convert;
mod host;

use crate::bindings::spin::postgres::postgres::{self as wit, Column, ParameterValue, RowSet};
use crate::outbound::{AllowList, suggestion};
use crate::state::Usage;
use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod, Runtime};
use std::collections::HashMap;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_postgres::NoTls;

/// Connection pools shared by every instance of every component of an app.
pub struct Pools {
    by_address: Mutex<HashMap<String, Arc<Target>>>,
    max_size: usize,
}

/// A Postgres address as parsed, and the pool of connections to it.
struct Target {
    config: tokio_postgres::Config,
    pool: Pool,
}

/// The host side of a guest's `connection` resource.
pub struct Connection {
    client: Arc<Object>,
    in_transaction: Arc<AtomicBool>,
    usage: Arc<Usage>,
}

/// The host side of a guest's `connection-builder` resource.
pub struct ConnectionBuilder {
    pub(crate) address: String,
    pub(crate) ca_root: Option<String>,
}

const WAIT_FOR_CONNECTION: Duration = Duration::from_secs(5);

impl Pools {
    pub fn new(max_size: usize) -> Self {
        Self {
            by_address: Mutex::default(),
            max_size,
        }
    }

    /// Opens a connection for a component, enforcing its allow-list.
    pub async fn open(
        &self,
        allowed: &AllowList,
        address: &str,
        usage: Arc<Usage>,
    ) -> Result<Connection, wit::Error> {
        let target = self.target(address)?;
        check_allowed(allowed, &target.config)?;
        let client = target
            .pool
            .get()
            .await
            .map_err(|e| wit::Error::ConnectionFailed(e.to_string()))?;
        Ok(Connection {
            client: Arc::new(client),
            in_transaction: Arc::default(),
            usage,
        })
    }

    /// The parsed address and its pool, made on first use: a request only looks them up.
    fn target(&self, address: &str) -> Result<Arc<Target>, wit::Error> {
        let mut targets = self.by_address.lock().unwrap();
        if let Some(target) = targets.get(address) {
            return Ok(target.clone());
        }
        let config = tokio_postgres::Config::from_str(address)
            .map_err(|e| wit::Error::ConnectionFailed(format!("invalid address: {e}")))?;
        let manager = Manager::from_config(
            config.clone(),
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(self.max_size)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(WAIT_FOR_CONNECTION))
            .create_timeout(Some(WAIT_FOR_CONNECTION))
            .build()
            .map_err(|e| wit::Error::ConnectionFailed(e.to_string()))?;
        let target = Arc::new(Target { config, pool });
        targets.insert(address.to_owned(), target.clone());
        Ok(target)
    }
}

fn check_allowed(allowed: &AllowList, config: &tokio_postgres::Config) -> Result<(), wit::Error> {
    let port = config.get_ports().first().copied().unwrap_or(5432);
    for host in config.get_hosts() {
        let host = match host {
            tokio_postgres::config::Host::Tcp(host) => host.as_str(),
            #[cfg(unix)]
            tokio_postgres::config::Host::Unix(_) => {
                return Err(wit::Error::ConnectionFailed(
                    "Unix-socket addresses are not permitted".into(),
                ));
            }
        };
        if !allowed.allows("postgres", host, port) {
            let address = format!("postgres://{host}:{port}");
            tracing::warn!(
                "A component tried to make an outbound connection to {address}, which is not permitted; \
                 to allow it, add {} to the component in spin.toml",
                suggestion("postgres", host, port)
            );
            return Err(wit::Error::ConnectionFailed(format!(
                "address {address} is not permitted"
            )));
        }
    }
    Ok(())
}

/// What a statement does to the connection's transaction state, judged from
/// its first keyword. A statement that fails inside a transaction leaves it
/// open (aborted), so only the explicit ends close it.
fn transaction_effect(statement: &str) -> Option<bool> {
    let first = statement
        .trim_start()
        .split(|c: char| !c.is_ascii_alphabetic())
        .next()?;
    let second_is_to = || {
        statement
            .trim_start()
            .get(first.len()..)
            .and_then(|rest| rest.split_whitespace().next())
            .is_some_and(|w| w.eq_ignore_ascii_case("to"))
    };
    match first.to_ascii_lowercase().as_str() {
        "begin" | "start" => Some(true),
        "rollback" if second_is_to() => None,
        "commit" | "end" | "rollback" | "abort" => Some(false),
        _ => None,
    }
}

impl Connection {
    /// A cheap handle for running a statement without borrowing the resource
    /// table across an `await`.
    pub(crate) fn handle(&self) -> Handle {
        Handle {
            client: self.client.clone(),
            in_transaction: self.in_transaction.clone(),
            usage: self.usage.clone(),
        }
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        if !self.in_transaction.load(Ordering::Acquire) {
            return;
        }
        let client = self.client.clone();
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(async move {
                    if let Err(e) = client.batch_execute("ROLLBACK").await {
                        tracing::warn!("rolling back an abandoned transaction failed: {e}");
                        discard(client);
                    }
                });
            }
            Err(_) => discard(client),
        }
    }
}

/// Keeps a connection whose state is unknown out of the pool.
fn discard(client: Arc<Object>) {
    if let Ok(object) = Arc::try_unwrap(client) {
        drop(Object::take(object));
    }
}

/// A connection's client, usable while the store is not borrowed.
pub(crate) struct Handle {
    client: Arc<Object>,
    in_transaction: Arc<AtomicBool>,
    usage: Arc<Usage>,
}

impl Handle {
    fn note(&self, statement: &str) {
        Usage::count(&self.usage.postgres_statements);
        // `RUST_LOG=spin_host=trace` shows each statement: how an endpoint's SQL is read off.
        tracing::trace!(target: "spin_host::postgres", "{statement}");
        if let Some(open) = transaction_effect(statement) {
            self.in_transaction.store(open, Ordering::Release);
        }
    }

    pub async fn execute(
        &self,
        statement: &str,
        params: Vec<ParameterValue>,
    ) -> Result<u64, wit::Error> {
        let params = convert::parameters(&params)?;
        self.note(statement);
        let prepared = self
            .client
            .prepare_cached(statement)
            .await
            .map_err(convert::error)?;
        self.client
            .execute_raw(
                &prepared,
                params
                    .iter()
                    .map(|p| p.as_ref() as &(dyn tokio_postgres::types::ToSql + Sync)),
            )
            .await
            .map_err(convert::error)
    }

    /// Starts a query: its columns, and the rows as they arrive.
    pub async fn query(
        &self,
        statement: &str,
        params: Vec<ParameterValue>,
    ) -> Result<(Vec<Column>, tokio_postgres::RowStream), wit::Error> {
        let params = convert::parameters(&params)?;
        self.note(statement);
        let prepared = self
            .client
            .prepare_cached(statement)
            .await
            .map_err(convert::error)?;
        let columns = prepared.columns().iter().map(convert::column).collect();
        let rows = self
            .client
            .query_raw(
                &prepared,
                params
                    .iter()
                    .map(|p| p.as_ref() as &(dyn tokio_postgres::types::ToSql + Sync)),
            )
            .await
            .map_err(convert::error)?;
        Ok((columns, rows))
    }

    /// Runs a query to the end and returns every row.
    pub async fn query_all(
        &self,
        statement: &str,
        params: Vec<ParameterValue>,
    ) -> Result<RowSet, wit::Error> {
        use futures::TryStreamExt;
        let (columns, rows) = self.query(statement, params).await?;
        let rows: Vec<tokio_postgres::Row> = rows.try_collect().await.map_err(convert::error)?;
        let rows = rows.iter().map(convert::row).collect::<Result<_, _>>()?;
        Ok(RowSet { columns, rows })
    }
}

#[cfg(test)]
mod tests {
    use super::transaction_effect;

    #[test]
    fn transaction_statements_are_recognised() {
        assert_eq!(transaction_effect("BEGIN"), Some(true));
        assert_eq!(
            transaction_effect("  begin isolation level serializable"),
            Some(true)
        );
        assert_eq!(transaction_effect("START TRANSACTION"), Some(true));
        assert_eq!(transaction_effect("COMMIT"), Some(false));
        assert_eq!(transaction_effect("rollback;"), Some(false));
        assert_eq!(transaction_effect("ROLLBACK TO SAVEPOINT a"), None);
        assert_eq!(transaction_effect("END"), Some(false));
        assert_eq!(transaction_effect("SELECT 1"), None);
        assert_eq!(transaction_effect(""), None);
    }
}
