//! `idempotency_records`: the durable record of a keyed request's response,
//! written in the same statement as the change's audit rows and events.

use super::settle::Statement;
use crate::db::{Columns, Db, text};
use orchestrator_core::ApiError;
use orchestrator_core::idempotency::StoredResponse;
use spin_sdk::pg::ParameterValue;

/// A keyed request's response, to be recorded in the statement that ends its transaction (see
/// [`super::settle`]) — or alone, for a refusal recorded after its change was rolled back.
pub struct Record<'a> {
    pub scope_key: &'a str,
    pub fingerprint: &'a str,
    pub ttl_seconds: i64,
    pub status: u16,
    pub body: &'a [u8],
    pub headers: &'a [(String, String)],
}

impl Record<'_> {
    /// The `WITH` part that writes the record: a first use, or the reuse of an expired record. It
    /// returns no row when a live record of the key exists, and waits while another transaction
    /// holds an uncommitted one, so of two requests racing on a key exactly one records (and
    /// commits); the other rolls back and replays the first one's answer.
    pub(super) fn with(&self, statement: &mut Statement) -> &'static str {
        let headers: serde_json::Map<String, serde_json::Value> = self
            .headers
            .iter()
            .map(|(name, value)| (name.clone(), value.clone().into()))
            .collect();
        let values = [
            statement.bind(text(self.scope_key)),
            statement.bind(text(self.fingerprint)),
            statement.bind(ParameterValue::Int16(self.status as i16)),
            statement.bind(self.body.to_vec()),
            statement.bind(ParameterValue::Jsonb(
                serde_json::Value::Object(headers).to_string().into_bytes(),
            )),
            statement.bind(self.ttl_seconds),
        ];
        let [key, fingerprint, status, body, headers, ttl] = values;
        statement.with(
            "record",
            format!(
                "INSERT INTO idempotency_records \
                     (scope_key, fingerprint, status, body, response_headers, expires_at) \
                 VALUES ({key}, {fingerprint}, {status}, {body}, {headers}, \
                         now() + {ttl}::int8 * interval '1 second') \
                 ON CONFLICT (scope_key) DO UPDATE \
                     SET fingerprint = EXCLUDED.fingerprint, status = EXCLUDED.status, body = EXCLUDED.body, \
                         response_headers = EXCLUDED.response_headers, created_at = now(), \
                         expires_at = EXCLUDED.expires_at \
                     WHERE idempotency_records.expires_at <= now() \
                 RETURNING 1"
            ),
        )
    }
}

/// The recorded response, with the headers it was sent with.
pub async fn load(
    db: &Db,
    scope_key: &str,
) -> Result<Option<(StoredResponse, Vec<(String, String)>)>, ApiError> {
    let Some(row) = db
        .optional_row(
            "SELECT fingerprint, status, body, response_headers FROM idempotency_records \
             WHERE scope_key = $1",
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
