//! `service_accounts`: OAuth2 client-credentials accounts with Argon2id secrets.

use crate::db::{Columns, Db, text};
use orchestrator_core::ApiError;
use orchestrator_core::credentials::ServiceAccount;
use orchestrator_core::ids::WorkspaceId;
use spin_sdk::pg::Decode;

/// The account of `client_id`, disabled or not: the caller verifies a secret either way, so both
/// answers take the same time.
pub async fn find(db: &Db, client_id: &str) -> Result<Option<ServiceAccount>, ApiError> {
    let Some(row) = db
        .optional_row(
            "SELECT secret_hash, scopes, workspace_id, disabled FROM service_accounts WHERE client_id = $1",
            [text(client_id)],
        )
        .await?
    else {
        return Ok(None);
    };
    let corrupt = |what: &str| ApiError::Internal(format!("service account {client_id}: {what}"));
    let scopes = Vec::<Option<String>>::decode(&row[1])
        .map_err(|_| corrupt("scopes is not a text array"))?
        .into_iter()
        .map(|scope| scope.and_then(|name| name.parse().ok()))
        .collect::<Option<_>>()
        .ok_or_else(|| corrupt("unknown scope"))?;
    let workspace_id = row
        .optional_text(2)?
        .map(|raw| WorkspaceId::parse(&raw))
        .transpose()
        .map_err(|_| corrupt("workspace_id"))?;
    let disabled = bool::decode(&row[3]).map_err(|_| corrupt("disabled is not a boolean"))?;
    Ok(Some(ServiceAccount {
        secret_hash: row.text(0)?,
        scopes,
        workspace_id,
        disabled,
    }))
}
