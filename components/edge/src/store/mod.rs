//! The SQL of each table, in one module per table. Functions take a [`Db`]
//! so a caller can run several of them in one transaction.
//!
//! Timestamps are selected as Unix milliseconds (`ms(col)`) and rendered as
//! the contract's RFC 3339 strings by [`Millis`]: the same on any host, and
//! independent of the session's time zone.
//!
//! [`Db`]: crate::db::Db

pub mod allocations;
pub mod audit_trail;
pub mod events;
pub mod idempotency;
pub mod job_transitions;
pub mod jobs;
pub mod quotas;
pub mod service_accounts;
pub mod settle;
pub mod worker_transitions;
pub mod workers;

use serde::{Serialize, Serializer};

/// A point in time, serialised as `2026-11-26T10:00:00.123Z`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Millis(pub i64);

impl Serialize for Millis {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&orchestrator_core::time::rfc3339_millis(self.0))
    }
}

/// SQL selecting a `timestamptz` column as Unix milliseconds (`int8`).
macro_rules! ms {
    ($column:literal) => {
        concat!("(extract(epoch from ", $column, ") * 1000)::int8")
    };
}
pub(crate) use ms;
