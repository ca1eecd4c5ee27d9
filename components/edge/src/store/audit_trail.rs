//! What `worker_transitions` and `job_transitions` share: the two audit tables have the same columns
//! but for the id of their subject, so one [`Trail`] names the table and builds their SQL.

use super::{Millis, ms};
use crate::db::{Columns, Db, Row, text};
use orchestrator_core::ApiError;
use orchestrator_core::lifecycle::{State, Transition};
use serde::Serialize;
use spin_sdk::pg::ParameterValue;

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
pub(super) struct Trail {
    pub table: &'static str,
    pub subject: &'static str,
}

impl Trail {
    /// Records `transitions` in order, in one statement. `at` is the clock at the insert, not the
    /// transaction's start, so a trail ordered by `at` reads in the order its locked changes happened.
    pub async fn insert<S: State>(
        &self,
        db: &Db,
        transitions: &[Transition<S>],
    ) -> Result<(), ApiError> {
        let column = |f: fn(&Transition<S>) -> Option<String>| -> ParameterValue {
            transitions.iter().map(f).collect::<Vec<_>>().into()
        };
        let sql = format!(
            "INSERT INTO {} ({}, from_state, to_state, reason, actor, at) \
             SELECT s, f, t, r, a, clock_timestamp() \
             FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[]) \
                  WITH ORDINALITY AS e(s, f, t, r, a, n) ORDER BY n",
            self.table, self.subject
        );
        db.execute(
            &sql,
            [
                column(|t| Some(t.id.as_ref().to_owned())),
                column(|t| t.from.map(|s| s.as_str().to_owned())),
                column(|t| Some(t.to.as_str().to_owned())),
                column(|t| t.reason.clone()),
                column(|t| Some(t.actor.clone())),
            ],
        )
        .await?;
        Ok(())
    }

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
