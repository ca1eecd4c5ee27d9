//! `jobs`.
//!
//! Writers lock jobs `FOR UPDATE` before touching them and, when they lock several, in ascending
//! (depth, id): a parent before its children, which is also the order every cascade walks a tree in, so
//! concurrent cancels, allocations and lifecycle moves never wait on each other in a cycle. Quota rows
//! come after jobs (see [`super::quotas`]).
//!
//! Times written here use `clock_timestamp()`, not the transaction's `now()`: a transaction may start
//! before another one that creates the job it later updates, and `started_at`/`completed_at` must not
//! precede `created_at` (the table checks it).

use super::settle::{Deferred, Statement};
use super::{Millis, ms};
use crate::db::{Columns, Db, Row, text};
use orchestrator_core::ApiError;
use orchestrator_core::auth::Principal;
use orchestrator_core::ids::{Id, IdKind, JobId, WorkspaceId};
use orchestrator_core::job::{JobState, ParentJob};
use orchestrator_core::lifecycle::State;
use orchestrator_core::validation::{Depth, JsonObject, TaskDescription, WorkerCount};
use orchestrator_core::version::check_if_match;
use serde::Serialize;
use spin_sdk::pg::ParameterValue;

/// A job as the API shows it.
#[derive(Debug, Serialize)]
pub struct Job {
    pub id: JobId,
    pub workspace_id: WorkspaceId,
    pub status: JobState,
    pub task_description: String,
    pub worker_count: i64,
    pub depth: Depth,
    pub parent_job_id: Option<JobId>,
    pub allocated_workers: i64,
    pub created_at: Millis,
    pub updated_at: Millis,
    pub started_at: Option<Millis>,
    pub completed_at: Option<Millis>,
    pub version: i64,
    pub result: Option<serde_json::Value>,
    pub error: Option<String>,
}

const COLUMNS: &str = concat!(
    "id, workspace_id, status, task_description, worker_count, depth, parent_job_id, allocated_workers, ",
    ms!("created_at"),
    ", ",
    ms!("updated_at"),
    ", ",
    ms!("started_at"),
    ", ",
    ms!("completed_at"),
    ", version, result, error"
);

impl Job {
    fn from_row(row: &Row) -> Result<Self, ApiError> {
        Ok(Self {
            id: column_id(row, 0)?,
            workspace_id: column_id(row, 1)?,
            status: row.state(2)?,
            task_description: row.text(3)?,
            worker_count: row.int(4)?,
            depth: depth(row, 5)?,
            parent_job_id: row
                .optional_text(6)?
                .map(|raw| parse_id(&raw, 6))
                .transpose()?,
            allocated_workers: row.int(7)?,
            created_at: Millis(row.int(8)?),
            updated_at: Millis(row.int(9)?),
            started_at: row.optional_int(10)?.map(Millis),
            completed_at: row.optional_int(11)?.map(Millis),
            version: row.int(12)?,
            result: row.json(13)?,
            error: row.optional_text(14)?,
        })
    }

    fn from_rows(rows: Vec<Row>) -> Result<Vec<Self>, ApiError> {
        rows.iter().map(Self::from_row).collect()
    }
}

fn parse_id<K: IdKind>(raw: &str, column: usize) -> Result<Id<K>, ApiError> {
    Id::parse(raw).map_err(|_| ApiError::Internal(format!("column {column}: stored id {raw:?}")))
}

fn column_id<K: IdKind>(row: &Row, column: usize) -> Result<Id<K>, ApiError> {
    parse_id(&row.text(column)?, column)
}

fn depth(row: &Row, column: usize) -> Result<Depth, ApiError> {
    let value = row.int(column)?;
    Depth::new(value).map_err(|_| ApiError::Internal(format!("column {column}: depth {value}")))
}

fn ids(jobs: &[JobId]) -> ParameterValue {
    jobs.iter()
        .map(|id| Some(id.as_str().to_owned()))
        .collect::<Vec<_>>()
        .into()
}

pub async fn get(db: &Db, id: &JobId) -> Result<Option<Job>, ApiError> {
    let sql = format!("SELECT {COLUMNS} FROM jobs WHERE id = $1");
    one(db, &sql, id).await
}

/// Locks a job for a change (see the module's lock order).
pub async fn lock(db: &Db, id: &JobId) -> Result<Option<Job>, ApiError> {
    let sql = format!("SELECT {COLUMNS} FROM jobs WHERE id = $1 FOR UPDATE");
    one(db, &sql, id).await
}

/// Locks a job `caller` is about to change: 404 when it does not exist or lives in a workspace the
/// caller cannot see, 412 when `if_match` names another version than the locked, current one.
pub async fn lock_for_change(
    db: &Db,
    id: &JobId,
    caller: &Principal,
    if_match: Option<&str>,
) -> Result<Job, ApiError> {
    let job = lock(db, id).await?.ok_or_else(|| id.not_found())?;
    caller.check_visible(&job.workspace_id, id)?;
    check_if_match(if_match, job.version)?;
    Ok(job)
}

async fn one(db: &Db, sql: &str, id: &JobId) -> Result<Option<Job>, ApiError> {
    db.optional_row(sql, [text(id.as_str())])
        .await?
        .as_ref()
        .map(Job::from_row)
        .transpose()
}

/// Reads the parent a submission names, sharing its lock until the child is committed: a cancel of
/// the parent waits for the child (and then cascades to it), and a parent canceled first is seen as
/// such. Shared, so siblings submitted at once do not queue behind each other.
pub async fn lock_parent(db: &Db, id: &JobId) -> Result<Option<ParentJob>, ApiError> {
    let row = db
        .optional_row(
            "SELECT id, workspace_id, depth, status FROM jobs WHERE id = $1 FOR SHARE",
            [text(id.as_str())],
        )
        .await?;
    row.map(|row| {
        Ok(ParentJob {
            id: column_id(&row, 0)?,
            workspace_id: column_id(&row, 1)?,
            depth: depth(&row, 2)?,
            state: row.state(3)?,
        })
    })
    .transpose()
}

/// Locks the tree below `root` (which the caller has locked) and returns it, root first, then level by
/// level in id order: ascending (depth, id), the module's lock order.
///
/// One level per statement rather than one recursive query: a recursive query reads one snapshot, so a
/// child committed while the query waits for its parent's lock would be missed. Here each level is read
/// after its parents are locked, when every submission under them has committed (a submission shares
/// its parent's lock) and no new one can start. Depth bounds the number of levels to six.
pub async fn lock_tree(db: &Db, root: Job) -> Result<Vec<Job>, ApiError> {
    let sql = format!(
        "SELECT {COLUMNS} FROM jobs WHERE parent_job_id = ANY($1::text[]) ORDER BY id FOR UPDATE"
    );
    let mut tree = vec![root];
    let mut level = 0;
    loop {
        let parents: Vec<JobId> = tree[level..].iter().map(|job| job.id.clone()).collect();
        let children = Job::from_rows(db.rows(&sql, [ids(&parents)]).await?)?;
        if children.is_empty() {
            return Ok(tree);
        }
        level = tree.len();
        tree.extend(children);
    }
}

/// A job to create, PENDING (its SUBMITTED step is only in the audit trail).
pub struct NewJob<'a> {
    pub workspace_id: &'a WorkspaceId,
    pub task_description: &'a TaskDescription,
    pub worker_count: WorkerCount,
    pub depth: Depth,
    pub parent_job_id: Option<&'a JobId>,
}

/// Creates the job as `id`; `None` if that (random) id is already taken.
pub async fn insert(db: &Db, id: &JobId, job: &NewJob<'_>) -> Result<Option<Job>, ApiError> {
    let sql = format!(
        "INSERT INTO jobs (id, workspace_id, status, task_description, worker_count, depth, parent_job_id) \
         VALUES ($1, $2, $3, $4, $5::int8, $6::int8, $7) \
         ON CONFLICT (id) DO NOTHING RETURNING {COLUMNS}"
    );
    let row = db
        .optional_row(
            &sql,
            [
                text(id.as_str()),
                text(job.workspace_id.as_str()),
                text(JobState::Pending.as_str()),
                text(job.task_description.as_str()),
                job.worker_count.get().into(),
                job.depth.get().into(),
                job.parent_job_id.map(|id| id.as_str().to_owned()).into(),
            ],
        )
        .await?;
    row.as_ref().map(Job::from_row).transpose()
}

/// The job holds `workers` fewer: written by the transaction's last statement
/// ([`crate::Tx::defer`]).
pub struct RemoveWorkers {
    job: String,
    workers: i64,
}

impl RemoveWorkers {
    pub fn new(id: &JobId, workers: i64) -> Self {
        Self {
            job: id.as_str().to_owned(),
            workers,
        }
    }
}

impl Deferred for RemoveWorkers {
    fn with(&self, statement: &mut Statement) {
        let job = statement.bind(text(&self.job));
        let workers = statement.bind(self.workers);
        statement.with(
            "holdings",
            format!(
                "UPDATE jobs SET allocated_workers = allocated_workers - {workers}::int8, \
                     version = version + 1, updated_at = clock_timestamp() \
                 WHERE id = {job}"
            ),
        );
    }
}

/// How a job ends: its terminal state, and what it produced.
pub enum Outcome {
    Completed(Option<JsonObject>),
    Failed(String),
    Canceled,
}

impl Outcome {
    pub fn state(&self) -> JobState {
        match self {
            Self::Completed(_) => JobState::Completed,
            Self::Failed(_) => JobState::Failed,
            Self::Canceled => JobState::Canceled,
        }
    }
}

/// Ends `jobs` with `outcome`, holding nothing: the caller closes their allocations in the same
/// transaction ([`super::allocations::release`]), as the commit-time ledger check requires. Returns
/// them as they now are, in id order.
pub async fn finish(db: &Db, jobs: &[JobId], outcome: &Outcome) -> Result<Vec<Job>, ApiError> {
    let (result, error) = match outcome {
        Outcome::Completed(Some(result)) => (Some(result.clone().into_value()), None),
        Outcome::Failed(error) => (None, Some(error.clone())),
        Outcome::Completed(None) | Outcome::Canceled => (None, None),
    };
    let result = match result {
        Some(value) => ParameterValue::Jsonb(value.to_string().into_bytes()),
        None => ParameterValue::DbNull,
    };
    let sql = format!(
        "UPDATE jobs SET status = $2, result = $3::jsonb, error = $4, allocated_workers = 0, \
             completed_at = clock_timestamp(), version = version + 1, updated_at = clock_timestamp() \
         WHERE id = ANY($1::text[]) RETURNING {COLUMNS}"
    );
    let params = [
        ids(jobs),
        text(outcome.state().as_str()),
        result,
        error.into(),
    ];
    let mut finished = Job::from_rows(db.rows(&sql, params).await?)?;
    finished.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(finished)
}

/// Which jobs a list shows.
#[derive(Debug, Default)]
pub struct Filter {
    pub workspace: Option<WorkspaceId>,
    pub status: Option<JobState>,
    pub depth: Option<Depth>,
    pub parent: Option<JobId>,
}

impl Filter {
    /// The `WHERE` clause and its parameters, with only the filters present,
    /// so each combination gets a plan that uses its index.
    fn clause(&self) -> (String, Vec<ParameterValue>) {
        let mut conditions = Vec::new();
        let mut params = Vec::new();
        let mut condition = |column: &str, cast: &str, param: ParameterValue| {
            params.push(param);
            conditions.push(format!("{column} = ${}{cast}", params.len()));
        };
        if let Some(workspace) = &self.workspace {
            condition("workspace_id", "", text(workspace.as_str()));
        }
        if let Some(status) = self.status {
            condition("status", "", text(status.as_str()));
        }
        if let Some(depth) = self.depth {
            condition("depth", "::int8", depth.get().into());
        }
        if let Some(parent) = &self.parent {
            condition("parent_job_id", "", text(parent.as_str()));
        }
        let clause = if conditions.is_empty() {
            String::new()
        } else {
            format!(" WHERE {}", conditions.join(" AND "))
        };
        (clause, params)
    }
}

/// One page in the stable order (`created_at`, then `id`).
pub async fn list(db: &Db, filter: &Filter, limit: i64, offset: i64) -> Result<Vec<Job>, ApiError> {
    let (clause, mut params) = filter.clause();
    let sql = format!(
        "SELECT {COLUMNS} FROM jobs{clause} ORDER BY created_at, id LIMIT ${} OFFSET ${}",
        params.len() + 1,
        params.len() + 2
    );
    params.extend([limit.into(), offset.into()]);
    Job::from_rows(db.rows(&sql, params).await?)
}

/// How many jobs match: from the counters (`job_counts`) unless a parent is named, whose children
/// are counted over their index.
pub async fn count(db: &Db, filter: &Filter) -> Result<i64, ApiError> {
    let (clause, params) = filter.clause();
    let sql = if filter.parent.is_some() {
        format!("SELECT count(*) FROM jobs{clause}")
    } else {
        format!("SELECT coalesce(sum(count), 0)::int8 FROM job_counts{clause}")
    };
    db.row(&sql, params).await?.int(0)
}
