//! The last statement of a write: the writes its handler deferred, its audit rows, its events and,
//! for a keyed request, its idempotency record, in one round trip (issue 10: a keyed pause was 13 statements, each two round
//! trips under Spin, which prepares every one).
//!
//! Each table's module renders its part as a data-modifying `WITH` query ([`Statement::with`]);
//! Postgres runs every one of them exactly once, in the statement's snapshot, so the parts cannot see
//! each other's rows and need not: none reads what another writes.

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

/// What the statement did.
pub struct Settled {
    /// `false`: another request's record of the key is live, so nothing of this one may commit.
    pub recorded: bool,
    /// The events' `pos`, in insert order (what stamping needs).
    pub events: Vec<i64>,
}

/// Runs the settlement as one statement, or none when there is nothing to write.
pub async fn settle(db: &Db, settlement: Settlement<'_>) -> Result<Settled, ApiError> {
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
        return Ok(Settled {
            recorded: true,
            events: Vec::new(),
        });
    }
    let sql = format!(
        "WITH {} SELECT {recorded}, {positions}",
        statement.parts.join(", ")
    );
    let row = db.row(&sql, statement.params).await?;
    Ok(Settled {
        recorded: row.boolean(0)?,
        events: row.ints(1)?,
    })
}

/// A statement being assembled from `WITH` parts, each binding its own parameters.
#[derive(Default)]
pub struct Statement {
    parts: Vec<String>,
    params: Vec<ParameterValue>,
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
}
