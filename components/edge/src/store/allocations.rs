//! `allocations`: one row per grant; a release closes a job's open rows at one depth.
//!
//! The rows are the ledger; `quotas.allocated` and `jobs.allocated_workers` mirror it and change in the
//! same transaction (the database checks they agree at commit). Allocations are always at their job's
//! depth (a foreign key), so a job's holdings are all at one depth.

use super::quotas;
use super::settle::{Deferred, Statement};
use crate::db::{Columns, Db, text};
use orchestrator_core::ApiError;
use orchestrator_core::ids::{AllocationId, JobId, WorkspaceId};
use orchestrator_core::job::JobState;
use orchestrator_core::lifecycle::State;
use orchestrator_core::quota::Release;
use orchestrator_core::validation::Depth;

/// A grant of `workers` to a job at its depth, whose limit is `max_workers` as configured: the
/// ledger row, the depth's count (the row's limit following the configuration, as
/// [`super::quotas::sync`] would make it) and the job's holdings, which makes it RUNNING. The caller
/// holds the job's and the depth's rows locked and has decided the grant under them; it is written by
/// the transaction's last statement ([`crate::Tx::defer`]).
pub struct Grant {
    id: String,
    job: String,
    workspace: String,
    depth: i64,
    max_workers: i64,
    workers: i64,
}

impl Grant {
    pub fn new(
        id: &AllocationId,
        job: &JobId,
        workspace: &WorkspaceId,
        (depth, max_workers): (Depth, i64),
        workers: i64,
    ) -> Self {
        Self {
            id: id.as_str().to_owned(),
            job: job.as_str().to_owned(),
            workspace: workspace.as_str().to_owned(),
            depth: depth.get(),
            max_workers,
            workers,
        }
    }
}

impl Deferred for Grant {
    fn with(&self, statement: &mut Statement) {
        let [id, job, workspace] =
            [&self.id, &self.job, &self.workspace].map(|v| statement.bind(text(v)));
        let [depth, max_workers, workers] =
            [self.depth, self.max_workers, self.workers].map(|v| statement.bind(v));
        let running = statement.bind(text(JobState::Running.as_str()));
        statement.with(
            "ledger",
            format!(
                "INSERT INTO allocations (id, job_id, workspace_id, depth, workers) \
                 VALUES ({id}, {job}, {workspace}, {depth}::int8, {workers}::int8)"
            ),
        );
        statement.with(
            "quota",
            format!(
                "UPDATE quotas SET allocated = allocated + {workers}::int8, \
                     max_workers = GREATEST({max_workers}::int8, allocated + {workers}::int8) \
                 WHERE depth = {depth}::int8"
            ),
        );
        statement.with(
            "holdings",
            format!(
                "UPDATE jobs SET allocated_workers = allocated_workers + {workers}::int8, \
                     status = {running}, started_at = coalesce(started_at, clock_timestamp()), \
                     version = version + 1, updated_at = clock_timestamp() \
                 WHERE id = {job}"
            ),
        );
    }
}

/// Frees everything `holders` (job and its depth) hold: closes their open allocations and gives the
/// workers back to their depths, in one statement once the depths' rows are locked (after the jobs,
/// which the caller has locked, and in ascending depth: see [`quotas`]). An allocation is always at
/// its job's depth, so the ledger rows say which depth gets what back. The caller lowers the jobs'
/// own counters. Returns what each job freed, in job id order.
pub async fn release(db: &Db, holders: &[(JobId, Depth)]) -> Result<Vec<Release>, ApiError> {
    if holders.is_empty() {
        return Ok(Vec::new());
    }
    let depths: Vec<Depth> = holders.iter().map(|(_, depth)| *depth).collect();
    quotas::lock(db, &depths).await?;
    let jobs: Vec<Option<String>> = holders
        .iter()
        .map(|(job, _)| Some(job.as_str().to_owned()))
        .collect();
    let rows = db
        .rows(
            "WITH closed AS ( \
                 UPDATE allocations SET released_at = clock_timestamp() \
                 WHERE job_id = ANY($1::text[]) AND released_at IS NULL \
                 RETURNING job_id, depth, workers), \
             given_back AS ( \
                 UPDATE quotas q SET allocated = q.allocated - freed.workers \
                 FROM (SELECT depth, sum(workers) AS workers FROM closed GROUP BY depth) freed \
                 WHERE q.depth = freed.depth) \
             SELECT job_id, depth::int8, sum(workers)::int8 FROM closed \
             GROUP BY job_id, depth ORDER BY job_id",
            [jobs.into()],
        )
        .await?;
    rows.iter()
        .map(|row| {
            let job = row.text(0)?;
            let job = JobId::parse(&job)
                .map_err(|_| ApiError::Internal(format!("stored job id {job:?}")))?;
            let depth = Depth::new(row.int(1)?)
                .map_err(|_| ApiError::Internal(format!("released allocations of {job}")))?;
            Ok(Release::new(job, depth, row.int(2)?))
        })
        .collect()
}
