//! `quotas`: one row per depth, whose lock serialises allocations.
//!
//! Lock order: a writer locks the jobs it changes first ([`super::jobs`]), then the quota rows it needs,
//! in ascending depth. `allocated` only changes together with the allocations ledger
//! ([`super::allocations`]); the database checks they agree at commit.

use crate::db::{Columns, Db};
use orchestrator_core::ApiError;
use orchestrator_core::quota::{Quotas, Usage};
use orchestrator_core::validation::Depth;
use spin_sdk::pg::ParameterValue;

/// Brings the table's limits in line with the configured `depth_quotas` (a
/// write only where they differ; never below what is already allocated) and
/// returns each depth's configured limit and current allocation.
pub async fn sync(db: &Db, quotas: &Quotas) -> Result<Vec<Usage>, ApiError> {
    let limits: Vec<Option<i32>> = Depth::all()
        .map(|depth| i32::try_from(quotas.max_workers(depth)).ok())
        .collect();
    let rows = db
        .rows(
            "WITH configured AS ( \
                 SELECT (ordinality - 1)::int2 AS depth, max_workers \
                 FROM unnest($1::int4[]) WITH ORDINALITY AS c(max_workers, ordinality)), \
             synced AS ( \
                 UPDATE quotas q SET max_workers = GREATEST(c.max_workers, q.allocated) \
                 FROM configured c \
                 WHERE q.depth = c.depth AND q.max_workers <> GREATEST(c.max_workers, q.allocated) \
                 RETURNING q.depth) \
             SELECT q.allocated::int8 FROM configured c JOIN quotas q USING (depth) ORDER BY depth",
            [limits.into()],
        )
        .await?;
    if rows.len() != Depth::all().count() {
        return Err(ApiError::Internal(format!(
            "quotas has {} of the six depths",
            rows.len()
        )));
    }
    Depth::all()
        .zip(&rows)
        .map(|(depth, row)| Ok(Usage::new(depth, quotas.max_workers(depth), row.int(0)?)))
        .collect()
}

fn depths(depths: &[Depth]) -> ParameterValue {
    depths
        .iter()
        .map(|depth| Some(depth.get()))
        .collect::<Vec<_>>()
        .into()
}

/// Locks the rows of `depths` in ascending depth and returns how many workers each has allocated,
/// in that order. Whoever holds a row decides alone what its depth can still grant.
pub async fn lock(db: &Db, depths: &[Depth]) -> Result<Vec<i64>, ApiError> {
    let mut ordered = depths.to_vec();
    ordered.sort();
    ordered.dedup();
    db.rows(
        "SELECT allocated::int8 FROM quotas WHERE depth = ANY($1::int8[]) ORDER BY depth FOR UPDATE",
        [self::depths(&ordered)],
    )
    .await?
    .iter()
    .map(|row| row.int(0))
    .collect()
}
