//! Postgres through `spin:postgres`: one connection per request, drawn
//! outside any transaction, errors mapped to the contract (an unreachable
//! database is 503, anything else a bug), and typed access to row values.

use orchestrator_core::ApiError;
use spin_sdk::pg::{self, DbValue, ParameterValue, PgError, QueryError};

pub use spin_sdk::pg::Row;

pub struct Db(pg::Connection);

impl Db {
    /// Opens a connection that is outside any transaction.
    ///
    /// Spin hands out pooled connections as they were left: one whose earlier request trapped,
    /// or whose component (this app's or another on the same database) returned without
    /// committing, is still inside that transaction — Spin's `Clean` recycling ends none. Run in
    /// it, this request would see and could commit someone else's half-done change, and wait on
    /// its locks. So the first statement ends whatever is open; on a clean connection it is a
    /// no-op (Postgres only warns).
    pub async fn connect(url: &str) -> Result<Self, ApiError> {
        let db = pg::Connection::open(url)
            .await
            .map(Db)
            .map_err(|e| match e {
                pg::Error::PgError(e) => map_error(e),
                other => ApiError::Internal(other.to_string()),
            })?;
        db.execute("ROLLBACK", []).await?;
        Ok(db)
    }

    /// Ends the open transaction on a path that is already failing. A rollback that fails
    /// too is left to the next request to draw this connection (see [`Db::connect`]).
    pub async fn abandon(&self) {
        let _ = self.execute("ROLLBACK", []).await;
    }

    pub async fn rows(
        &self,
        sql: &str,
        params: impl Into<Vec<ParameterValue>>,
    ) -> Result<Vec<Row>, ApiError> {
        let result = self.0.query(sql, params).await.map_err(query_error)?;
        result.collect().await.map_err(query_error)
    }

    /// The one row a statement must return.
    pub async fn row(
        &self,
        sql: &str,
        params: impl Into<Vec<ParameterValue>>,
    ) -> Result<Row, ApiError> {
        self.optional_row(sql, params)
            .await?
            .ok_or_else(|| ApiError::Internal(format!("no row from: {sql}")))
    }

    pub async fn optional_row(
        &self,
        sql: &str,
        params: impl Into<Vec<ParameterValue>>,
    ) -> Result<Option<Row>, ApiError> {
        Ok(self.rows(sql, params).await?.into_iter().next())
    }

    /// A round trip that touches no table: is the database there and answering?
    pub async fn ping(&self) -> Result<(), ApiError> {
        self.execute("SELECT 1", []).await.map(drop)
    }

    pub async fn execute(
        &self,
        sql: &str,
        params: impl Into<Vec<ParameterValue>>,
    ) -> Result<u64, ApiError> {
        self.0.execute(sql, params).await.map_err(query_error)
    }
}

fn query_error(e: pg::Error) -> ApiError {
    match e {
        pg::Error::PgError(e) => map_error(e),
        pg::Error::Decode(e) => ApiError::Internal(format!("decoding a row: {e}")),
    }
}

/// Lost or refused connections are 503 (the client may retry); a statement
/// the database rejects is a bug in this code, so 500.
fn map_error(e: PgError) -> ApiError {
    match &e {
        PgError::ConnectionFailed(_) => ApiError::Unavailable(format!("{e:?}")),
        PgError::QueryFailed(QueryError::Text(_)) => ApiError::Unavailable(format!("{e:?}")),
        PgError::QueryFailed(QueryError::DbError(db)) if is_unavailable(&db.code) => {
            ApiError::Unavailable(format!("{e:?}"))
        }
        _ => ApiError::Internal(format!("{e:?}")),
    }
}

/// SQLSTATE classes for a server that is going away or out of resources.
fn is_unavailable(code: &str) -> bool {
    ["08", "53", "57"]
        .iter()
        .any(|class| code.starts_with(class))
}

/// Typed, index-based access to a row: a column of another type is a bug in
/// the SQL next to it, so it is reported as a 500 with the column number.
pub trait Columns {
    fn value(&self, i: usize) -> &DbValue;

    fn text(&self, i: usize) -> Result<String, ApiError> {
        match self.value(i) {
            DbValue::Str(s) => Ok(s.clone()),
            other => Err(mismatch(i, "text", other)),
        }
    }

    fn optional_text(&self, i: usize) -> Result<Option<String>, ApiError> {
        match self.value(i) {
            DbValue::DbNull => Ok(None),
            _ => self.text(i).map(Some),
        }
    }

    fn int(&self, i: usize) -> Result<i64, ApiError> {
        match self.value(i) {
            DbValue::Int16(n) => Ok((*n).into()),
            DbValue::Int32(n) => Ok((*n).into()),
            DbValue::Int64(n) => Ok(*n),
            other => Err(mismatch(i, "integer", other)),
        }
    }

    fn optional_int(&self, i: usize) -> Result<Option<i64>, ApiError> {
        match self.value(i) {
            DbValue::DbNull => Ok(None),
            _ => self.int(i).map(Some),
        }
    }

    fn json(&self, i: usize) -> Result<Option<serde_json::Value>, ApiError> {
        match self.value(i) {
            DbValue::DbNull => Ok(None),
            DbValue::Jsonb(bytes) => serde_json::from_slice(bytes)
                .map(Some)
                .map_err(|e| ApiError::Internal(format!("column {i}: {e}"))),
            other => Err(mismatch(i, "jsonb", other)),
        }
    }

    /// A state column, parsed into its state machine's type.
    fn state<S: orchestrator_core::lifecycle::State>(&self, i: usize) -> Result<S, ApiError> {
        let name = self.text(i)?;
        orchestrator_core::lifecycle::parse_state(&name)
            .map_err(|_| ApiError::Internal(format!("column {i}: unknown state {name}")))
    }
}

impl Columns for Row {
    fn value(&self, i: usize) -> &DbValue {
        &self[i]
    }
}

fn mismatch(i: usize, expected: &str, found: &DbValue) -> ApiError {
    ApiError::Internal(format!("column {i}: expected {expected}, found {found:?}"))
}

/// A text parameter.
pub fn text(value: &str) -> ParameterValue {
    ParameterValue::Str(value.to_owned())
}
