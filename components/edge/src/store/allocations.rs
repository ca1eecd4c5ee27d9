//! `allocations`: one row per grant; a release closes a job's open rows at one depth.
//!
//! The rows are the ledger; `quotas.allocated` and `jobs.allocated_workers` mirror it and change in the
//! same transaction (the database checks they agree at commit). Allocations are always at their job's
//! depth (a foreign key), so a job's holdings are all at one depth.

use super::quotas;
use crate::db::{Columns, Db, text};
use orchestrator_core::ApiError;
use orchestrator_core::ids::{AllocationId, JobId, WorkspaceId};
use orchestrator_core::job::JobState;
use orchestrator_core::lifecycle::State;
use orchestrator_core::quota::Release;
use orchestrator_core::validation::Depth;

/// Grants `workers` to `job` at `depth`, whose limit is `max_workers` as configured, in one
/// statement: the ledger row, the depth's count (the row's limit following the configuration, as
/// [`super::quotas::sync`] would make it) and the job's holdings, which makes it RUNNING. The caller
/// holds the job's and the depth's rows locked and has decided the grant under them.
pub async fn grant(
    db: &Db,
    id: &AllocationId,
    job: &JobId,
    workspace: &WorkspaceId,
    (depth, max_workers): (Depth, i64),
    workers: i64,
) -> Result<(), ApiError> {
    db.execute(
        "WITH ledger AS ( \
             INSERT INTO allocations (id, job_id, workspace_id, depth, workers) \
             VALUES ($1, $2, $3, $4::int8, $5::int8)), \
         quota AS ( \
             UPDATE quotas SET allocated = allocated + $5::int8, \
                 max_workers = GREATEST($6::int8, allocated + $5::int8) \
             WHERE depth = $4::int8) \
         UPDATE jobs SET allocated_workers = allocated_workers + $5::int8, status = $7, \
             started_at = coalesce(started_at, clock_timestamp()), \
             version = version + 1, updated_at = clock_timestamp() \
         WHERE id = $2",
        [
            text(id.as_str()),
            text(job.as_str()),
            text(workspace.as_str()),
            depth.get().into(),
            workers.into(),
            max_workers.into(),
            text(JobState::Running.as_str()),
        ],
    )
    .await?;
    Ok(())
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
