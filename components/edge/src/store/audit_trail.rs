//! What `worker_transitions` and `job_transitions` share: the two audit tables have the same columns
//! but for the id of their subject, so one [`Trail`] names the table and builds their SQL.

use super::settle::Statement;
use super::{Millis, ms};
use crate::db::{Columns, Db, Row, text};
use orchestrator_core::ApiError;
use orchestrator_core::lifecycle::{State, Transition};
use serde::Serialize;

/// One audit row as the API shows it.
#[derive(Debug, Serialize)]
pub struct AuditRow<S> {
    /// `null` for the row that records the object's creation.
    pub from_state: Option<S>,
    pub to_state: S,
    pub reason: Option<String>,
    pub actor: String,
    pub at: Millis,
}

/// A state machine whose moves are audited, and the table they go to.
pub trait Audited: State {
    const TRAIL: Trail;
}

/// The audit rows a transaction has made, per trail, in the order they were made: written by the
/// statement that ends the transaction ([`super::settle`]), still under the locks of the moves.
#[derive(Default)]
pub struct AuditRows {
    trails: Vec<(Trail, Vec<[Option<String>; 5]>)>,
}

impl AuditRows {
    pub fn push<S: Audited>(&mut self, transitions: &[Transition<S>]) {
        let rows = transitions.iter().map(|t| {
            [
                Some(t.id.as_ref().to_owned()),
                t.from.map(|s| s.as_str().to_owned()),
                Some(t.to.as_str().to_owned()),
                t.reason.clone(),
                Some(t.actor.clone()),
            ]
        });
        match self.trails.iter_mut().find(|(trail, _)| *trail == S::TRAIL) {
            Some((_, queued)) => queued.extend(rows),
            None => self.trails.push((S::TRAIL, rows.collect())),
        }
    }

    /// One `WITH` part per trail. `at` is the clock at the insert, not the transaction's start, so a
    /// trail ordered by `at` reads in the order its locked changes happened; rows of one statement
    /// keep the order they were made in.
    pub(super) fn with(&self, statement: &mut Statement) {
        for (trail, rows) in &self.trails {
            let [subjects, from, to, reasons, actors] = std::array::from_fn(|column| {
                statement.bind(
                    rows.iter()
                        .map(|row| row[column].clone())
                        .collect::<Vec<_>>(),
                )
            });
            statement.with(
                trail.rows_name,
                format!(
                    "INSERT INTO {} ({}, from_state, to_state, reason, actor, at) \
                     SELECT s, f, t, r, a, clock_timestamp() \
                     FROM unnest({subjects}::text[], {from}::text[], {to}::text[], {reasons}::text[], \
                                 {actors}::text[]) \
                          WITH ORDINALITY AS e(s, f, t, r, a, n) ORDER BY n",
                    trail.table, trail.subject
                ),
            );
        }
    }
}

impl<S: State> AuditRow<S> {
    fn from_row(row: &Row) -> Result<Self, ApiError> {
        Ok(Self {
            from_state: row.optional_text(0)?.map(|_| row.state(0)).transpose()?,
            to_state: row.state(1)?,
            reason: row.optional_text(2)?,
            actor: row.text(3)?,
            at: Millis(row.int(4)?),
        })
    }
}

/// An audit table and the column holding its subject's id.
#[derive(Clone, Copy, PartialEq)]
pub struct Trail {
    pub table: &'static str,
    pub subject: &'static str,
    /// What the statement ending a transaction calls the rows it inserts.
    pub rows_name: &'static str,
}

impl Trail {
    /// One page of the trail of `id`, oldest first.
    pub async fn list<S: State>(
        &self,
        db: &Db,
        id: &S::Id,
        limit: i64,
        offset: i64,
    ) -> Result<Vec<AuditRow<S>>, ApiError> {
        let sql = format!(
            concat!(
                "SELECT from_state, to_state, reason, actor, ",
                ms!("at"),
                " FROM {} WHERE {} = $1 ORDER BY at, id LIMIT $2 OFFSET $3"
            ),
            self.table, self.subject
        );
        db.rows(&sql, [text(id.as_ref()), limit.into(), offset.into()])
            .await?
            .iter()
            .map(AuditRow::from_row)
            .collect()
    }

    /// How many rows the trail of `id` has.
    pub async fn count(&self, db: &Db, id: &str) -> Result<i64, ApiError> {
        let sql = format!(
            "SELECT count(*) FROM {} WHERE {} = $1",
            self.table, self.subject
        );
        db.row(&sql, [text(id)]).await?.int(0)
    }
}
