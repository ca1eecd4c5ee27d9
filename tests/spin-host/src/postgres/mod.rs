//! `spin:postgres/postgres@4.2.0` on tokio-postgres, pooled as Spin pools it.
//!
//! As in Spin (`factor-outbound-pg`), there is one deadpool pool per address and root
//! certificate, of [`SPIN_POOL_SIZE`] connections, recycled with `RecyclingMethod::Clean`: each
//! checkout first resets session state in one round trip (`CLOSE ALL; … DISCARD SEQUENCES;`),
//! and nothing ends a transaction. A connection resource holds its pooled connection for its
//! whole life, so `BEGIN` … `COMMIT` sent as statements is a real transaction — and a
//! connection dropped with a transaction open (by the guest, or because its instance trapped)
//! goes back to the pool *inside* that transaction, to be drawn by a later request, exactly as
//! under `spin up`. Protecting against that is the component's job.
//!
//! TLS follows the URL's `sslmode` as Spin's does: `disable` is plain TCP; anything else
//! (`prefer` when absent, `require`) negotiates TLS when the server offers it, through
//! native-tls (OpenSSL), which verifies the server's certificate and name against the system's
//! roots plus the root a guest set with `connection-builder.set-ca-root`.

mod convert;
mod host;

use crate::bindings::spin::postgres::postgres::{self as wit, Column, ParameterValue, RowSet};
use crate::outbound::{AllowList, suggestion};
use crate::state::Usage;
use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use tokio_postgres::NoTls;
use tokio_postgres::config::SslMode;

/// Spin's pool size per address (`CONNECTION_POOL_SIZE` in `factor-outbound-pg`).
pub const SPIN_POOL_SIZE: usize = 64;

/// Connection pools shared by every instance of every component of an app.
pub struct Pools {
    by_target: Mutex<HashMap<(String, Option<String>), Arc<Target>>>,
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
    usage: Arc<Usage>,
}

/// A root certificate a guest added with `set-ca-root`, and its digest (which, with the
/// address, names the pool its connections come from).
#[derive(Clone)]
pub struct RootCertificate {
    certificate: native_tls::Certificate,
    digest: String,
}

impl RootCertificate {
    /// Parses a PEM certificate, refusing what Spin refuses.
    pub fn from_pem(pem: &str) -> Result<Self, wit::Error> {
        let certificate = native_tls::Certificate::from_pem(pem.as_bytes())
            .map_err(|e| wit::Error::Other(format!("invalid root certificate: {e}")))?;
        let digest = Sha256::digest(pem.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        Ok(Self {
            certificate,
            digest,
        })
    }
}

/// The host side of a guest's `connection-builder` resource.
pub struct ConnectionBuilder {
    pub(crate) address: String,
    pub(crate) root: Option<RootCertificate>,
}

impl Pools {
    pub fn new(max_size: usize) -> Self {
        Self {
            by_target: Mutex::default(),
            max_size,
        }
    }

    /// Opens a connection for a component, enforcing its allow-list. Like Spin, it waits as
    /// long as it takes for a free connection, and a connection that cannot be made is
    /// `connection-failed` with the whole error chain.
    pub async fn open(
        &self,
        allowed: &AllowList,
        address: &str,
        root: Option<&RootCertificate>,
        usage: Arc<Usage>,
    ) -> Result<Connection, wit::Error> {
        let target = self.target(address, root)?;
        check_allowed(allowed, &target.config)?;
        let client =
            target.pool.get().await.map_err(|e| {
                wit::Error::ConnectionFailed(format!("{:?}", anyhow::Error::new(e)))
            })?;
        Ok(Connection {
            client: Arc::new(client),
            usage,
        })
    }

    /// The parsed address and its pool, made on first use: a request only looks them up.
    fn target(
        &self,
        address: &str,
        root: Option<&RootCertificate>,
    ) -> Result<Arc<Target>, wit::Error> {
        let key = (address.to_owned(), root.map(|r| r.digest.clone()));
        let mut targets = self.by_target.lock().unwrap();
        if let Some(target) = targets.get(&key) {
            return Ok(target.clone());
        }
        let config = tokio_postgres::Config::from_str(address)
            .map_err(|e| wit::Error::ConnectionFailed(format!("invalid address: {e}")))?;
        let manager_config = ManagerConfig {
            recycling_method: RecyclingMethod::Clean,
        };
        let manager = if config.get_ssl_mode() == SslMode::Disable {
            Manager::from_config(config.clone(), NoTls, manager_config)
        } else {
            let mut tls = native_tls::TlsConnector::builder();
            if let Some(root) = root {
                tls.add_root_certificate(root.certificate.clone());
            }
            let tls = tls
                .build()
                .map_err(|e| wit::Error::ConnectionFailed(format!("TLS setup: {e}")))?;
            Manager::from_config(
                config.clone(),
                postgres_native_tls::MakeTlsConnector::new(tls),
                manager_config,
            )
        };
        let pool = Pool::builder(manager)
            .max_size(self.max_size)
            .build()
            .map_err(|e| wit::Error::ConnectionFailed(e.to_string()))?;
        let target = Arc::new(Target { config, pool });
        targets.insert(key, target.clone());
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

impl Connection {
    /// A cheap handle for running a statement without borrowing the resource
    /// table across an `await`.
    pub(crate) fn handle(&self) -> Handle {
        Handle {
            client: self.client.clone(),
            usage: self.usage.clone(),
        }
    }
}

/// A connection's client, usable while the store is not borrowed.
pub(crate) struct Handle {
    client: Arc<Object>,
    usage: Arc<Usage>,
}

// Each statement is prepared afresh, as Spin's `query_raw(&str)` / `execute(&str)` do: a round
// trip to parse it, then one to run it (Spin caches no prepared statements).
impl Handle {
    fn note(&self, statement: &str) {
        Usage::count(&self.usage.postgres_statements);
        // `RUST_LOG=spin_host=trace` shows each statement: how an endpoint's SQL is read off.
        tracing::trace!(target: "spin_host::postgres", "{statement}");
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
            .prepare(statement)
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
            .prepare(statement)
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
