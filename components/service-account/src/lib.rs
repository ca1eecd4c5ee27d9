//! Service accounts for `POST /api/auth/token`, created natively (by `scripts/service-account` and the
//! API tests) with the same Argon2id parameters the platform component verifies with, since both use
//! `orchestrator_core::credentials`; and retired (disabled or deleted) together with every token they
//! hold, through the same Redis keys the components check (`orchestrator_core::keyspace`).

use std::collections::BTreeSet;

use anyhow::{Context, ensure};
use orchestrator_core::auth::Scope;
use orchestrator_core::credentials::{SALT_BYTES, SECRET_BYTES, hash_secret, new_secret};
use orchestrator_core::ids::{WorkspaceId, is_valid_id};
use orchestrator_core::keyspace::Keyspace;

/// What an account may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub client_id: String,
    pub scopes: BTreeSet<Scope>,
    /// Confines the account's tokens to one workspace; `None` gives operator tokens.
    pub workspace_id: Option<WorkspaceId>,
}

impl Account {
    pub fn new(
        client_id: &str,
        scopes: BTreeSet<Scope>,
        workspace_id: Option<WorkspaceId>,
    ) -> anyhow::Result<Self> {
        ensure!(
            is_valid_id(client_id),
            "client id {client_id:?} must be 1-64 characters of A-Z, a-z, 0-9, '_', '.', ':' or '-', \
             starting with a letter or digit"
        );
        Ok(Self {
            client_id: client_id.to_owned(),
            scopes,
            workspace_id,
        })
    }
}

/// Creates the account, or replaces an existing one's secret, scopes and workspace and enables it.
/// Returns the new secret: only its hash is stored, so this is the one time it can be seen.
pub async fn upsert(db: &tokio_postgres::Client, account: &Account) -> anyhow::Result<String> {
    let secret = new_secret(random::<SECRET_BYTES>()?);
    let hash = hash_secret(&secret, random::<SALT_BYTES>()?)?;
    let scopes: Vec<&str> = account.scopes.iter().map(|scope| scope.as_str()).collect();
    db.execute(
        "INSERT INTO service_accounts (client_id, secret_hash, scopes, workspace_id) \
         VALUES ($1, $2, $3, $4) \
         ON CONFLICT (client_id) DO UPDATE \
             SET secret_hash = EXCLUDED.secret_hash, scopes = EXCLUDED.scopes, \
                 workspace_id = EXCLUDED.workspace_id, disabled = false",
        &[
            &account.client_id,
            &hash,
            &scopes,
            &account.workspace_id.as_ref().map(WorkspaceId::as_str),
        ],
    )
    .await
    .context("storing the service account")?;
    Ok(secret)
}

/// How an account is retired.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retirement {
    /// Kept, but refused by the token endpoint (until `upsert` enables it again).
    Disable,
    Delete,
}

/// Where the components look for revocations: the app's Redis, under the app's database URL.
pub struct Revocations {
    connection: redis::aio::MultiplexedConnection,
    keys: Keyspace,
}

impl Revocations {
    /// `database_url` must be the app's `database_url` exactly: it names the app's keys.
    pub async fn connect(redis_url: &str, database_url: &str) -> anyhow::Result<Self> {
        let connection = redis::Client::open(redis_url)
            .context("the Redis URL")?
            .get_multiplexed_async_connection()
            .await
            .context("connecting to Redis")?;
        Ok(Self {
            connection,
            keys: Keyspace::for_database(database_url),
        })
    }
}

/// Disables or deletes the account and revokes every token issued to it until now, by recording now
/// as its subject's not-before (kept without expiry: tokens may have any lifetime). Returns `false`,
/// changing nothing, when there is no such account. Nothing changes either when Redis cannot record
/// the not-before: the account change is committed only after it.
pub async fn retire(
    db: &mut tokio_postgres::Client,
    revocations: &mut Revocations,
    client_id: &str,
    retirement: Retirement,
) -> anyhow::Result<bool> {
    let transaction = db.transaction().await?;
    let statement = match retirement {
        Retirement::Disable => "UPDATE service_accounts SET disabled = true WHERE client_id = $1",
        Retirement::Delete => "DELETE FROM service_accounts WHERE client_id = $1",
    };
    if transaction.execute(statement, &[&client_id]).await? == 0 {
        return Ok(false);
    }
    let now_secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    redis::cmd("SET")
        .arg(revocations.keys.subject_not_before(client_id))
        .arg(now_secs)
        .query_async::<()>(&mut revocations.connection)
        .await
        .context("recording the revocation in Redis")?;
    transaction.commit().await?;
    Ok(true)
}

fn random<const N: usize>() -> anyhow::Result<[u8; N]> {
    let mut bytes = [0; N];
    getrandom::fill(&mut bytes).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
    Ok(bytes)
}
