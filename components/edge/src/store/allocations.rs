//! `allocations`: one row per grant; a release closes a job's open rows at one depth.
//!
//! The rows are the ledger; the stripes' `allocated` ([`super::quotas`]) and `jobs.allocated_workers`
//! mirror it and change in the same transaction (the database checks they agree at commit).
//! Allocations are always at their job's depth (a foreign key) and in its stripe (a generated
//! column), so a job's holdings are all in one row of one depth.

use super::quotas;
use super::settle::{Deferred, Statement};
use crate::db::{Columns, Db, text};
use orchestrator_core::ApiError;
use orchestrator_core::ids::{AllocationId, JobId, WorkspaceId};
use orchestrator_core::job::JobState;
use orchestrator_core::lifecycle::State;
use orchestrator_core::quota::Release;
use orchestrator_core::validation::Depth;

/// A grant of `workers` to a job at its depth: the ledger row and the job's holdings, which makes it
/// RUNNING. The caller holds the job's row locked and has taken the workers from the depth's stripes
/// ([`super::quotas`]); it is written by the transaction's last statement ([`crate::Tx::defer`]).
pub struct Grant {
    id: String,
    job: String,
    workspace: String,
    depth: i64,
    workers: i64,
}

impl Grant {
    pub fn new(
        id: &AllocationId,
        job: &JobId,
        workspace: &WorkspaceId,
        depth: Depth,
        workers: i64,
    ) -> Self {
        Self {
            id: id.as_str().to_owned(),
            job: job.as_str().to_owned(),
            workspace: workspace.as_str().to_owned(),
            depth: depth.get(),
            workers,
        }
    }
}

impl Deferred for Grant {
    fn with(&self, statement: &mut Statement) {
        let [id, job, workspace] =
            [&self.id, &self.job, &self.workspace].map(|v| statement.bind(text(v)));
        let [depth, workers] = [self.depth, self.workers].map(|v| statement.bind(v));
        let running = statement.bind(text(JobState::Running.as_str()));
        statement.with(
            "ledger",
            format!(
                "INSERT INTO allocations (id, job_id, workspace_id, depth, workers) \
                 VALUES ({id}, {job}, {workspace}, {depth}::int8, {workers}::int8)"
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
/// workers back to their stripes, in one statement. One holder's allocations are all in one
/// stripe; several holders' stripes are locked first, in order. The caller has locked the jobs and
/// lowers their own counters. Returns what each job freed, in job id order.
pub async fn release(db: &Db, holders: &[(JobId, Depth)]) -> Result<Vec<Release>, ApiError> {
    match holders {
        [] => return Ok(Vec::new()),
        [_] => {}
        _ => quotas::lock_stripes_of(db, holders).await?,
    }
    let jobs = quotas::holder_jobs(holders);
    let rows = db
        .rows(
            "WITH closed AS ( \
                 UPDATE allocations SET released_at = clock_timestamp() \
                 WHERE job_id = ANY($1::text[]) AND released_at IS NULL \
                 RETURNING job_id, depth, stripe, workers), \
             given_back AS ( \
                 UPDATE quota_stripes s SET allocated = s.allocated - freed.workers \
                 FROM (SELECT depth, stripe, sum(workers) AS workers FROM closed \
                       GROUP BY depth, stripe) freed \
                 WHERE s.depth = freed.depth AND s.stripe = freed.stripe) \
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
