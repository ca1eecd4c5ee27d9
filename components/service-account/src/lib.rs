//! Service accounts for `POST /api/auth/token`, created natively (by `scripts/service-account` and the
//! API tests) with the same Argon2id parameters the platform component verifies with, since both use
//! `orchestrator_core::credentials`.

use std::collections::BTreeSet;

use anyhow::{Context, ensure};
use orchestrator_core::auth::Scope;
use orchestrator_core::credentials::{SALT_BYTES, SECRET_BYTES, hash_secret, new_secret};
use orchestrator_core::ids::{WorkspaceId, is_valid_id};

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

fn random<const N: usize>() -> anyhow::Result<[u8; N]> {
    let mut bytes = [0; N];
    getrandom::fill(&mut bytes).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
    Ok(bytes)
}
