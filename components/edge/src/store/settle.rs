//! The last statement of a write: the writes its handler deferred, its audit rows, its events and,
//! for a keyed request, its idempotency record, in one round trip (issue 10: a keyed pause was 13 statements, each two round
//! trips under Spin, which prepares every one).
//!
//! Each table's module renders its part as a data-modifying `WITH` query ([`Statement::with`]);
//! Postgres runs every one of them exactly once, in the statement's snapshot, so the parts cannot see
//! each other's rows and need not: none reads what another writes. The statement ends by checking
//! that it may stand (`settle_check`, migration 0012): the key was not recorded by another request,
//! and every change made on a row as it was read found the row so ([`Statement::change`]). If not,
//! it fails as a whole, which is what lets a write of this one statement go without a transaction.

use super::audit_trail::AuditRows;
use super::{events, idempotency};
use crate::db::{Columns, Db};
use orchestrator_core::ApiError;
use orchestrator_core::events::NewEvent;
use spin_sdk::pg::ParameterValue;

/// A write a handler leaves to the statement that ends its transaction because it needs no answer
/// from it (e.g. an allocation's ledger row and counters): a round trip fewer, and the rows it locks
/// are held for that one statement and the COMMIT only.
pub trait Deferred {
    /// Adds its `WITH` parts; their names must be its own.
    fn with(&self, statement: &mut Statement);
}

/// What a write leaves to its last statement.
pub struct Settlement<'a> {
    pub record: Option<idempotency::Record<'a>>,
    pub deferred: &'a [Box<dyn Deferred>],
    pub audit: &'a AuditRows,
    pub events: &'a [NewEvent],
}

/// Why the statement wrote nothing: it failed as a whole (migration 0012).
pub enum Lost {
    /// Another request's record of the key is live (or committed while this one waited for it).
    KeyRecorded,
    /// A change conditional on what was read found its row changed since.
    Stale,
}

const KEY_RECORDED: &str = "OR002";
const STALE: &str = "OR001";

/// Runs the settlement as one statement, or none when there is nothing to write. It either writes
/// everything and returns the events' `pos` (in insert order: what stamping needs), or nothing.
pub async fn settle(
    db: &Db,
    settlement: Settlement<'_>,
) -> Result<Result<Vec<i64>, Lost>, ApiError> {
    let mut statement = Statement::default();
    let recorded = match &settlement.record {
        Some(record) => {
            let name = record.with(&mut statement);
            format!("EXISTS (SELECT 1 FROM {name})")
        }
        None => "true".to_owned(),
    };
    for write in settlement.deferred {
        write.with(&mut statement);
    }
    settlement.audit.with(&mut statement);
    let positions = match events::with_insert(&mut statement, settlement.events) {
        Some(name) => format!("ARRAY(SELECT pos FROM {name} ORDER BY pos)"),
        None => "'{}'::int8[]".to_owned(),
    };
    if statement.parts.is_empty() {
        return Ok(Ok(Vec::new()));
    }
    let changed = match statement.changes.as_slice() {
        [] => "true".to_owned(),
        changes => changes
            .iter()
            .map(|name| format!("EXISTS (SELECT 1 FROM {name})"))
            .collect::<Vec<_>>()
            .join(" AND "),
    };
    let sql = format!(
        "WITH {} SELECT settle_check({recorded}, {changed}), {positions}",
        statement.parts.join(", ")
    );
    Ok(
        match db
            .row_or_raised(&sql, statement.params, &[KEY_RECORDED, STALE])
            .await?
        {
            Ok(row) => Ok(row.ints(1)?),
            Err(KEY_RECORDED) => Err(Lost::KeyRecorded),
            Err(_) => Err(Lost::Stale),
        },
    )
}

/// A statement being assembled from `WITH` parts, each binding its own parameters.
#[derive(Default)]
pub struct Statement {
    parts: Vec<String>,
    params: Vec<ParameterValue>,
    /// Parts that must return a row, or the whole statement fails ([`Lost::Stale`]).
    changes: Vec<&'static str>,
}

impl Statement {
    /// Binds a parameter; the placeholder (`$n`) to write in its place.
    pub(crate) fn bind(&mut self, value: impl Into<ParameterValue>) -> String {
        self.params.push(value.into());
        format!("${}", self.params.len())
    }

    /// Adds `name AS (query)`; `name` is what the rest of the statement reads it by.
    pub(crate) fn with(&mut self, name: &'static str, query: String) -> &'static str {
        self.parts.push(format!("{name} AS ({query})"));
        name
    }

    /// Adds a part, like [`Statement::with`], that changes rows only if they are as they were read
    /// and returns a row when it did: when it returns none, nothing of the statement is written.
    pub(crate) fn change(&mut self, name: &'static str, query: String) {
        let name = self.with(name, query);
        self.changes.push(name);
    }
}
