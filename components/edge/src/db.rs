//! Postgres through `spin:postgres`: a connection per request — kept by the
//! instance between its requests when the request left it clean — errors
//! mapped to the contract (an unreachable database is 503, anything else a
//! bug), and typed access to row values.

use orchestrator_core::ApiError;
use spin_sdk::pg::{self, DbValue, ParameterValue, PgError, QueryError};
use std::cell::{Cell, RefCell};
use std::time::{Duration, Instant};

pub use spin_sdk::pg::Row;

/// A request's connection, and what it knows of the connection's state.
pub struct Db {
    /// `None` only once dropped.
    connection: Option<pg::Connection>,
    url: String,
    state: Cell<State>,
}

/// Whether a connection may serve another request as it is.
#[derive(Clone, Copy, PartialEq, Debug)]
enum State {
    /// Outside any transaction, every statement so far answered.
    Clean,
    InTransaction,
    /// A statement failed: the connection may be gone, or in a state this code does not know.
    Doubtful,
}

/// How many clean connections an instance keeps between its requests, and for how long. Every
/// instance of every component draws on one pool per database (64 under Spin) that never times a
/// wait out, so a kept connection is one another instance cannot have: an instance keeps few,
/// briefly, and only while it is serving (see [`Serving`]) — enough for requests that overlap,
/// which then skip the pool's reset and the `ROLLBACK` that [`Db::connect`] needs.
const KEPT: usize = 4;
const KEPT_FOR: Duration = Duration::from_millis(250);

/// The longest the app waits for Postgres in one call: opening a connection (with the wait for
/// Spin's pool, which never times out) or one statement. Neither Spin nor its driver bounds them
/// (no statement timeout, no TCP keepalive), so a Postgres that stops answering without closing the
/// connection (a partition, a hung host) would hold each request until the operating system gives
/// up, minutes later, and every later request would pile up behind the pool. After this the
/// request is a 503, and the connection it was on is let go.
pub const POSTGRES_WAIT: Duration = Duration::from_secs(4);

thread_local! {
    /// Connections a request left clean, newest last, with when they were left.
    static IDLE: RefCell<Vec<(String, pg::Connection, Instant)>> = const { RefCell::new(Vec::new()) };
    /// Requests of this instance waiting for the pool. While one waits, a connection let go goes
    /// back to the pool, where it is waited for: kept here, nobody could take it, and with the
    /// pool exhausted the waiter (and the instance) would wait for ever.
    static OPENING: Cell<usize> = const { Cell::new(0) };
    /// Requests this instance is serving.
    static SERVING: Cell<usize> = const { Cell::new(0) };
}

/// Counts itself in a per-instance counter for as long as it lives, so the count stays right
/// when a request is dropped half-way.
struct Counted(&'static std::thread::LocalKey<Cell<usize>>);

impl Counted {
    fn new(counter: &'static std::thread::LocalKey<Cell<usize>>) -> Self {
        counter.set(counter.get() + 1);
        Self(counter)
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.set(self.0.get() - 1);
    }
}

/// A request being served. When the instance's last one ends, its kept Postgres connections go
/// back to the pool (an instance between bursts, or retired after its last request, keeps none
/// from the instances that are serving), and its Redis connection is kept only briefly (see
/// [`crate::cache`]).
pub struct Serving {
    _counted: Counted,
}

impl Serving {
    pub fn start() -> Self {
        Self {
            _counted: Counted::new(&SERVING),
        }
    }
}

impl Drop for Serving {
    fn drop(&mut self) {
        // The count still includes this request: its `Counted` is dropped after this runs.
        if SERVING.get() == 1 {
            IDLE.with_borrow_mut(Vec::clear);
            crate::cache::went_idle();
        }
    }
}

impl Db {
    /// A connection that is outside any transaction: one this instance's last request left clean,
    /// or a new one from Spin's pool.
    ///
    /// Spin hands out pooled connections as they were left: one whose earlier request trapped,
    /// or whose component (this app's or another on the same database) returned without
    /// committing, is still inside that transaction — Spin's `Clean` recycling ends none. Run in
    /// it, this request would see and could commit someone else's half-done change, and wait on
    /// its locks. So the first statement on a new one ends whatever is open; on a clean
    /// connection it is a no-op (Postgres only warns).
    pub async fn connect(url: &str) -> Result<Self, ApiError> {
        if let Some(connection) = kept(url) {
            return Ok(Self::new(connection, url, State::Clean));
        }
        let waiting = Counted::new(&OPENING);
        let opened = bounded("opening a connection", pg::Connection::open(url)).await;
        drop(waiting);
        let connection = opened?.map_err(|e| match e {
            pg::Error::PgError(e) => map_error(e),
            other => ApiError::Internal(other.to_string()),
        })?;
        let db = Self::new(connection, url, State::Doubtful);
        db.execute("ROLLBACK", []).await?;
        Ok(db)
    }

    fn new(connection: pg::Connection, url: &str, state: State) -> Self {
        Self {
            connection: Some(connection),
            url: url.to_owned(),
            state: Cell::new(state),
        }
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
        self.running(self.query(sql, params), &[])
            .await
            .map_err(ApiError::from)
    }

    /// The one row a statement must return, or which of `outcomes` (SQLSTATEs the statement raises
    /// on purpose) it raised instead. Such an outcome is an answer, not a fault: the connection
    /// stays as it was (outside a transaction, the failed statement wrote nothing).
    pub async fn row_or_raised(
        &self,
        sql: &str,
        params: impl Into<Vec<ParameterValue>>,
        outcomes: &[&'static str],
    ) -> Result<Result<Row, &'static str>, ApiError> {
        match self.running(self.query(sql, params), outcomes).await {
            Ok(rows) => the_one_row(rows, sql).map(Ok),
            Err(Failed::Raised(code)) => Ok(Err(code)),
            Err(Failed::Error(e)) => Err(e),
        }
    }

    async fn query(
        &self,
        sql: &str,
        params: impl Into<Vec<ParameterValue>>,
    ) -> Result<Vec<Row>, pg::Error> {
        self.connection().query(sql, params).await?.collect().await
    }

    /// The one row a statement must return.
    pub async fn row(
        &self,
        sql: &str,
        params: impl Into<Vec<ParameterValue>>,
    ) -> Result<Row, ApiError> {
        the_one_row(self.rows(sql, params).await?, sql)
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
        // What a statement does to the transaction, for `Drop` to know whether it may keep the
        // connection: every transaction in this crate is begun and ended by these three words.
        let after = match sql {
            "BEGIN" => State::InTransaction,
            "COMMIT" | "ROLLBACK" => State::Clean,
            _ => self.state.get(),
        };
        let executed = self
            .running(self.connection().execute(sql, params), &[])
            .await?;
        self.state.set(after);
        Ok(executed)
    }

    /// Whether a transaction is open: rows read to be changed are then locked until it ends.
    pub fn in_transaction(&self) -> bool {
        self.state.get() == State::InTransaction
    }

    fn connection(&self) -> &pg::Connection {
        self.connection
            .as_ref()
            .expect("a Db has its connection until dropped")
    }

    /// Runs a statement. While it runs, and after it failed, the connection is doubtful: a request
    /// dropped mid-statement does not leave it for the next, nor does one whose statement failed —
    /// unless it raised one of the `outcomes` its caller expects. When the database looks gone, the
    /// instance's idle connections are let go too.
    async fn running<T>(
        &self,
        statement: impl Future<Output = Result<T, pg::Error>>,
        outcomes: &[&'static str],
    ) -> Result<T, Failed> {
        let before = self.state.replace(State::Doubtful);
        let answer = match bounded("a statement", statement).await {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(e)) => Err(match raised(&e, outcomes) {
                Some(code) => Failed::Raised(code),
                None => Failed::Error(query_error(e)),
            }),
            Err(timed_out) => Err(Failed::Error(timed_out)),
        };
        match &answer {
            Ok(_) | Err(Failed::Raised(_)) => self.state.set(before),
            Err(Failed::Error(ApiError::Unavailable(_))) => IDLE.with_borrow_mut(Vec::clear),
            Err(Failed::Error(_)) => {}
        }
        answer
    }
}

/// The first row of what `sql` returned, which must have returned one.
fn the_one_row(rows: Vec<Row>, sql: &str) -> Result<Row, ApiError> {
    rows.into_iter()
        .next()
        .ok_or_else(|| ApiError::Internal(format!("no row from: {sql}")))
}

/// How a statement failed.
enum Failed {
    /// With one of the outcomes its caller expects.
    Raised(&'static str),
    Error(ApiError),
}

impl From<Failed> for ApiError {
    fn from(failed: Failed) -> Self {
        match failed {
            Failed::Error(e) => e,
            Failed::Raised(code) => ApiError::Internal(format!("SQLSTATE {code} not handled")),
        }
    }
}

/// Which of `outcomes` the statement's error is.
fn raised(e: &pg::Error, outcomes: &[&'static str]) -> Option<&'static str> {
    match e {
        pg::Error::PgError(PgError::QueryFailed(QueryError::DbError(db))) => {
            outcomes.iter().copied().find(|code| *code == db.code)
        }
        _ => None,
    }
}

impl Drop for Db {
    /// Keeps a clean connection for the instance's next request, unless one of its requests waits
    /// for the pool; any other goes back to Spin's pool.
    fn drop(&mut self) {
        if !may_keep(self.state.get(), OPENING.get()) {
            return;
        }
        if let Some(connection) = self.connection.take() {
            IDLE.with_borrow_mut(|idle| {
                if idle.len() < KEPT {
                    idle.push((std::mem::take(&mut self.url), connection, Instant::now()));
                }
            });
        }
    }
}

/// Whether a connection in `state` may be kept while `waiting` requests of the instance wait for
/// the pool: only a clean one, and only while nobody waits.
fn may_keep(state: State, waiting: usize) -> bool {
    state == State::Clean && waiting == 0
}

/// The newest connection to `url` kept within [`KEPT_FOR`]; older ones are let go.
fn kept(url: &str) -> Option<pg::Connection> {
    IDLE.with_borrow_mut(|idle| {
        idle.retain(|(_, _, since)| since.elapsed() < KEPT_FOR);
        let newest = idle.iter().rposition(|(kept_for, ..)| kept_for == url)?;
        Some(idle.remove(newest).1)
    })
}

/// `call`, unless it takes longer than [`POSTGRES_WAIT`]: then a 503. Dropping the call abandons it;
/// the connection it was on is doubtful and is not kept.
async fn bounded<T>(what: &str, call: impl Future<Output = T>) -> Result<T, ApiError> {
    crate::within(POSTGRES_WAIT, call).await.ok_or_else(|| {
        ApiError::Unavailable(format!(
            "Postgres did not answer {what} within {POSTGRES_WAIT:?}"
        ))
    })
}

fn query_error(e: pg::Error) -> ApiError {
    match e {
        pg::Error::PgError(e) => map_error(e),
        pg::Error::Decode(e) => ApiError::Internal(format!("decoding a row: {e}")),
    }
}

/// Lost or refused connections, and transactions Postgres rolled back to
/// break a deadlock or a serialization conflict, are 503 (nothing was
/// written; the client may retry); a statement the database rejects is a bug
/// in this code, so 500.
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

/// SQLSTATEs of a lost connection (class 08), a server out of resources (53)
/// or going away (57), and of the two rollbacks Postgres makes to resolve a
/// conflict with other transactions: a serialization failure and a deadlock.
/// Not all of class 40: 40003 says a statement's completion is unknown, and
/// 503 promises nothing was written.
fn is_unavailable(code: &str) -> bool {
    ["08", "53", "57"]
        .iter()
        .any(|class| code.starts_with(class))
        || ["40001", "40P01"].contains(&code)
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

    fn boolean(&self, i: usize) -> Result<bool, ApiError> {
        match self.value(i) {
            DbValue::Boolean(b) => Ok(*b),
            other => Err(mismatch(i, "boolean", other)),
        }
    }

    /// An `int8[]` column; its elements are never null here.
    fn ints(&self, i: usize) -> Result<Vec<i64>, ApiError> {
        match self.value(i) {
            DbValue::ArrayInt64(values) => values
                .iter()
                .map(|value| value.ok_or_else(|| ApiError::Internal(format!("column {i}: a null"))))
                .collect(),
            other => Err(mismatch(i, "int8[]", other)),
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

#[cfg(test)]
mod tests {
    use super::{State, may_keep};

    #[test]
    fn only_a_clean_connection_is_kept_and_only_while_nobody_waits_for_the_pool() {
        assert!(may_keep(State::Clean, 0));
        assert!(!may_keep(State::Clean, 1));
        assert!(!may_keep(State::InTransaction, 0));
        assert!(!may_keep(State::Doubtful, 0));
    }
}
