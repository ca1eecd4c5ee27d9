//! `quotas`: one row per depth, whose lock serialises allocations.

use crate::db::{Columns, Db};
use orchestrator_core::ApiError;
use orchestrator_core::quota::Quotas;
use orchestrator_core::validation::Depth;

/// Brings the table's limits in line with the configured `depth_quotas` (a
/// write only where they differ; never below what is already allocated) and
/// returns the configured limits.
pub async fn sync(db: &Db, quotas: &Quotas) -> Result<Vec<(i64, i64)>, ApiError> {
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
             SELECT depth::int8, max_workers::int8 FROM configured ORDER BY depth",
            [limits.into()],
        )
        .await?;
    rows.iter()
        .map(|row| Ok((row.int(0)?, row.int(1)?)))
        .collect()
}
