//! `quotas` and `quota_stripes`: each depth's limit, spread over [`STRIPES`] rows so that allocations
//! for different jobs at one depth commit in parallel (migrations/0010, [`Layout`]).
//!
//! A job draws from its own stripe (a hash of its id, [`super::allocations`] records it). Lock order:
//! a writer locks the jobs it changes first ([`super::jobs`]), then stripes in (depth, stripe) order,
//! then, only in a step over a whole depth, the depth's `quotas` row. A stripe's `allocated` only
//! changes together with the allocations ledger; the database checks they agree at commit, and that
//! a depth's stripes add up to its limit.

use super::settle::{Deferred, Statement};
use crate::db::{Columns, Db, text};
use orchestrator_core::ApiError;
use orchestrator_core::ids::JobId;
use orchestrator_core::quota::{Layout, Quotas, STRIPES, Usage};
use orchestrator_core::validation::Depth;
use spin_sdk::pg::ParameterValue;

/// Each depth's configured limit and what its stripes hold. The rows follow a changed limit at the
/// next grant that meets it ([`take_from_own_stripe`]), which is the only place the limit acts.
pub async fn usage(db: &Db, quotas: &Quotas) -> Result<Vec<Usage>, ApiError> {
    let rows = db
        .rows("SELECT allocated FROM quota_usage ORDER BY depth", [])
        .await?;
    if rows.len() != Depth::all().count() {
        return Err(ApiError::Internal(format!(
            "quota_usage has {} of the six depths",
            rows.len()
        )));
    }
    Depth::all()
        .zip(&rows)
        .map(|(depth, row)| Ok(Usage::new(depth, quotas.max_workers(depth), row.int(0)?)))
        .collect()
}

/// Takes `workers` at `depth` from `job`'s own stripe, if that stripe has them free and the rows are
/// laid out for `max_workers`: the stripe's row is then locked until commit, and the grant is exact,
/// since the depth has at least what one of its stripes has free. `false` otherwise, with nothing
/// locked (`quota_take`, migrations/0010, says why that needs care): the grant is then decided over
/// the whole depth ([`lock_depth`]).
pub async fn take_from_own_stripe(
    db: &Db,
    job: &JobId,
    depth: Depth,
    max_workers: i64,
    workers: i64,
) -> Result<bool, ApiError> {
    db.row(
        "SELECT quota_take($1, $2, $3, $4)",
        [
            text(job.as_str()),
            depth.get().into(),
            max_workers.into(),
            workers.into(),
        ],
    )
    .await?
    .boolean(0)
}

/// A depth with every stripe locked: what each holds, and which one is the job's.
pub struct LockedDepth {
    pub allocated: [i64; STRIPES],
    pub home: usize,
}

/// Locks every stripe of `depth`, in stripe order, for a grant to `job` decided over the whole depth.
pub async fn lock_depth(db: &Db, job: &JobId, depth: Depth) -> Result<LockedDepth, ApiError> {
    let rows = db
        .rows(
            "SELECT allocated::int8, (stripe = quota_stripe($1))::bool FROM quota_stripes \
             WHERE depth = $2::int8 ORDER BY stripe FOR UPDATE",
            [text(job.as_str()), depth.get().into()],
        )
        .await?;
    let mut allocated = [0; STRIPES];
    let mut home = None;
    if rows.len() != STRIPES {
        return Err(ApiError::Internal(format!(
            "depth {depth} has {} of its {STRIPES} stripes",
            rows.len()
        )));
    }
    for (stripe, row) in rows.iter().enumerate() {
        allocated[stripe] = row.int(0)?;
        if row.boolean(1)? {
            home = Some(stripe);
        }
    }
    let home =
        home.ok_or_else(|| ApiError::Internal(format!("no stripe of depth {depth} is {job}'s")))?;
    Ok(LockedDepth { allocated, home })
}

/// Locks the stripes `holders` (jobs and their depths) draw from, in (depth, stripe) order, before
/// one statement gives back what they hold ([`super::allocations::release`]): that statement alone
/// would lock them in whatever order its plan meets them, and two of them could deadlock.
pub async fn lock_stripes_of(db: &Db, holders: &[(JobId, Depth)]) -> Result<(), ApiError> {
    let jobs = holder_jobs(holders);
    let depths: Vec<Option<i64>> = holders.iter().map(|(_, depth)| Some(depth.get())).collect();
    db.rows(
        "SELECT 1 FROM quota_stripes WHERE (depth, stripe) IN \
             (SELECT depth, quota_stripe(job) FROM unnest($1::text[], $2::int8[]) AS h(job, depth)) \
         ORDER BY depth, stripe FOR UPDATE",
        [ParameterValue::from(jobs), depths.into()],
    )
    .await
    .map(drop)
}

/// The jobs of `holders`, as a `text[]` parameter.
pub(super) fn holder_jobs(holders: &[(JobId, Depth)]) -> Vec<Option<String>> {
    holders
        .iter()
        .map(|(job, _)| Some(job.as_str().to_owned()))
        .collect()
}

/// A depth laid out anew for `max_workers` by a step that holds all its stripes: written by the
/// transaction's last statement ([`crate::Tx::defer`]), with the limit the layout is for.
pub struct Relayout {
    depth: i64,
    max_workers: i64,
    layout: Layout,
}

impl Relayout {
    pub fn new(depth: Depth, max_workers: i64, layout: Layout) -> Self {
        Self {
            depth: depth.get(),
            max_workers,
            layout,
        }
    }
}

impl Deferred for Relayout {
    fn with(&self, statement: &mut Statement) {
        let [depth, max_workers] = [self.depth, self.max_workers].map(|v| statement.bind(v));
        let [capacity, allocated] = [self.layout.capacity, self.layout.allocated]
            .map(|column| statement.bind(column.map(Some).to_vec()));
        statement.with(
            "layout",
            format!(
                "UPDATE quota_stripes s SET capacity = l.capacity, allocated = l.allocated \
                 FROM unnest({capacity}::int8[], {allocated}::int8[]) WITH ORDINALITY \
                     AS l(capacity, allocated, n) \
                 WHERE s.depth = {depth}::int8 AND s.stripe = l.n - 1"
            ),
        );
        statement.with(
            "laid_out_for",
            format!(
                "UPDATE quotas SET max_workers = {max_workers}::int8 \
                 WHERE depth = {depth}::int8 AND max_workers <> {max_workers}::int8"
            ),
        );
    }
}
