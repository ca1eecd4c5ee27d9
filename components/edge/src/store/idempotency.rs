//! `idempotency_records`: the durable record of a keyed request's response,
//! written in the same transaction as the change it describes.

use crate::db::{Columns, Db, text};
use orchestrator_core::ApiError;
use orchestrator_core::idempotency::StoredResponse;
use spin_sdk::pg::ParameterValue;

/// Claims the key for this transaction. `false` means a live record already
/// exists (committed by an earlier request); the insert waits while another
/// transaction holds the same key uncommitted.
pub async fn claim(
    db: &Db,
    scope_key: &str,
    fingerprint: &str,
    ttl_seconds: i64,
) -> Result<bool, ApiError> {
    let claimed = db
        .optional_row(
            "INSERT INTO idempotency_records (scope_key, fingerprint, expires_at) \
             VALUES ($1, $2, now() + $3::int8 * interval '1 second') \
             ON CONFLICT (scope_key) DO UPDATE \
                 SET fingerprint = EXCLUDED.fingerprint, status = NULL, body = NULL, response_headers = NULL, \
                     created_at = now(), expires_at = EXCLUDED.expires_at \
                 WHERE idempotency_records.expires_at <= now() \
             RETURNING 1",
            [text(scope_key), text(fingerprint), ttl_seconds.into()],
        )
        .await?;
    Ok(claimed.is_some())
}

/// The recorded response, with the headers it was sent with.
pub async fn load(
    db: &Db,
    scope_key: &str,
) -> Result<Option<(StoredResponse, Vec<(String, String)>)>, ApiError> {
    let Some(row) = db
        .optional_row(
            "SELECT fingerprint, status, body, response_headers FROM idempotency_records \
             WHERE scope_key = $1 AND status IS NOT NULL",
            [text(scope_key)],
        )
        .await?
    else {
        return Ok(None);
    };
    let body = match &row[2] {
        spin_sdk::pg::DbValue::Binary(bytes) => bytes.clone(),
        other => return Err(ApiError::Internal(format!("idempotency body: {other:?}"))),
    };
    let headers = match row.json(3)? {
        Some(serde_json::Value::Object(map)) => map
            .into_iter()
            .filter_map(|(name, value)| Some((name, value.as_str()?.to_owned())))
            .collect(),
        _ => Vec::new(),
    };
    let status =
        u16::try_from(row.int(1)?).map_err(|_| ApiError::Internal("stored status".into()))?;
    Ok(Some((
        StoredResponse {
            fingerprint: row.text(0)?,
            status,
            body,
        },
        headers,
    )))
}

/// Records the response the claimed key's request is about to commit.
pub async fn save(
    db: &Db,
    scope_key: &str,
    status: u16,
    body: &[u8],
    headers: &[(String, String)],
) -> Result<(), ApiError> {
    let headers: serde_json::Map<String, serde_json::Value> = headers
        .iter()
        .map(|(name, value)| (name.clone(), value.clone().into()))
        .collect();
    db.execute(
        "UPDATE idempotency_records SET status = $2, body = $3, response_headers = $4 WHERE scope_key = $1",
        [
            text(scope_key),
            ParameterValue::Int16(status as i16),
            body.to_vec().into(),
            ParameterValue::Jsonb(serde_json::Value::Object(headers).to_string().into_bytes()),
        ],
    )
    .await?;
    Ok(())
}
