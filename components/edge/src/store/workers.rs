//! `workers` (and the `worker_counts` a trigger keeps beside it).
//!
//! Changes to an existing worker are stamped with `clock_timestamp()` read with its row lock, not
//! `now()`: the lock is taken after the transaction began, so `now()` can precede the commit of a
//! registration that raced it, and `updated_at` would then fall before `created_at` (a CHECK
//! violation). The change itself is deferred to the transaction's last statement ([`Change`]): the
//! handler knows the new row from the locked one, so the UPDATE needs no round trip of its own, and
//! the worker's row and status counters are written just before the COMMIT.

use super::settle::{Deferred, Statement};
use super::{Millis, ms};
use crate::db::{Columns, Db, Row, text};
use orchestrator_core::ApiError;
use orchestrator_core::ids::{WorkerId, WorkspaceId};
use orchestrator_core::lifecycle::State;
use orchestrator_core::validation::JsonObject;
use orchestrator_core::worker::WorkerState;
use serde::Serialize;
use spin_sdk::pg::ParameterValue;

/// A worker as the API shows it.
#[derive(Debug, Serialize)]
pub struct Worker {
    pub id: WorkerId,
    pub workspace_id: WorkspaceId,
    pub status: WorkerState,
    pub metadata: serde_json::Value,
    pub created_at: Millis,
    pub updated_at: Millis,
    pub version: i64,
    pub last_heartbeat_at: Option<Millis>,
}

const COLUMNS: &str = concat!(
    "id, workspace_id, status, metadata, ",
    ms!("created_at"),
    ", ",
    ms!("updated_at"),
    ", version, ",
    ms!("last_heartbeat_at")
);

impl Worker {
    fn from_row(row: &Row) -> Result<Self, ApiError> {
        let stored = |what: &str| ApiError::Internal(format!("stored worker has a bad {what}"));
        Ok(Self {
            id: WorkerId::parse(&row.text(0)?).map_err(|_| stored("id"))?,
            workspace_id: WorkspaceId::parse(&row.text(1)?).map_err(|_| stored("workspace_id"))?,
            status: row.state(2)?,
            metadata: row.json(3)?.unwrap_or_default(),
            created_at: Millis(row.int(4)?),
            updated_at: Millis(row.int(5)?),
            version: row.int(6)?,
            last_heartbeat_at: row.optional_int(7)?.map(Millis),
        })
    }
}

/// Which workers a list (or a count) covers.
#[derive(Debug, Default)]
pub struct Filter {
    pub workspace: Option<WorkspaceId>,
    pub status: Option<WorkerState>,
}

impl Filter {
    /// The `WHERE` clause and its parameters, with only the filters present,
    /// so each combination gets a plan that uses its index.
    fn clause(&self) -> (String, Vec<ParameterValue>) {
        let mut conditions = Vec::new();
        let mut params = Vec::new();
        if let Some(workspace) = &self.workspace {
            params.push(text(workspace.as_str()));
            conditions.push(format!("workspace_id = ${}", params.len()));
        }
        if let Some(status) = self.status {
            params.push(text(status.as_str()));
            conditions.push(format!("status = ${}", params.len()));
        }
        let clause = if conditions.is_empty() {
            String::new()
        } else {
            format!(" WHERE {}", conditions.join(" AND "))
        };
        (clause, params)
    }
}

/// Runs a statement about one worker (`$1` is its id) that returns its columns, if it exists.
async fn one(db: &Db, sql: &str, params: Vec<ParameterValue>) -> Result<Option<Worker>, ApiError> {
    db.optional_row(sql, params)
        .await?
        .as_ref()
        .map(Worker::from_row)
        .transpose()
}

pub async fn get(db: &Db, id: &WorkerId) -> Result<Option<Worker>, ApiError> {
    let sql = format!("SELECT {COLUMNS} FROM workers WHERE id = $1");
    one(db, &sql, vec![text(id.as_str())]).await
}

/// Reads a worker to change it. Inside a transaction its row is locked until the end, so concurrent
/// changes of it are decided one after the other; in a write of one statement (see
/// [`crate::write_if_unchanged`]) it is read as it is, and the change is written only if the row is
/// still at the version read.
pub async fn read_to_change(db: &Db, id: &WorkerId) -> Result<Option<Seen>, ApiError> {
    let lock = if db.in_transaction() {
        " FOR UPDATE"
    } else {
        ""
    };
    let sql = format!(
        "SELECT {COLUMNS}, (extract(epoch from clock_timestamp()) * 1000000)::int8 \
         FROM workers WHERE id = $1{lock}"
    );
    db.optional_row(&sql, vec![text(id.as_str())])
        .await?
        .map(|row| {
            Ok(Seen {
                worker: Worker::from_row(&row)?,
                at_micros: row.int(8)?,
            })
        })
        .transpose()
}

/// A worker read by [`read_to_change`], and when: the time its change is stamped with. The time is
/// read by the same statement, so it follows every change before the one read: a row read under a
/// lock is read (with the clock) again when it changed while the statement waited for the lock; a
/// row read without one was committed before the statement began.
pub struct Seen {
    pub worker: Worker,
    at_micros: i64,
}

impl Seen {
    /// When the row was read, in milliseconds as `ms!` rounds them.
    fn at(&self) -> Millis {
        Millis((self.at_micros + 500).div_euclid(1000))
    }

    /// The worker moved to `status`: one version more, updated when read. Defer the change to
    /// write it.
    pub fn moved(self, status: WorkerState) -> (Worker, Change) {
        let change = self.change(Some(status));
        let worker = Worker {
            status,
            version: self.worker.version + 1,
            updated_at: self.at(),
            ..self.worker
        };
        (worker, change)
    }

    /// The worker seen alive when read: not a change of the worker (no version, no `updated_at`;
    /// see the heartbeat endpoint). Defer the change to write it.
    pub fn beat(self) -> (Worker, Change) {
        let change = self.change(None);
        let worker = Worker {
            last_heartbeat_at: Some(self.at()),
            ..self.worker
        };
        (worker, change)
    }

    fn change(&self, moved_to: Option<WorkerState>) -> Change {
        Change {
            id: self.worker.id.clone(),
            version: self.worker.version,
            moved_to,
            at_micros: self.at_micros,
        }
    }
}

/// What happens to a worker read by [`read_to_change`], written by the write's last statement: a
/// move to `moved_to`, or without one a heartbeat, at the time it was read. Only onto the version
/// read, and a heartbeat only onto an older one: otherwise the statement writes nothing
/// ([`Statement::change`]) and the write reads the worker again.
pub struct Change {
    id: WorkerId,
    version: i64,
    moved_to: Option<WorkerState>,
    at_micros: i64,
}

impl Deferred for Change {
    fn with(&self, statement: &mut Statement) {
        let id = statement.bind(text(self.id.as_str()));
        let version = statement.bind(self.version);
        let at = format!(
            "'epoch'::timestamptz + {}::int8 * interval '1 microsecond'",
            statement.bind(self.at_micros)
        );
        let (set, unless_later) = match self.moved_to {
            Some(status) => {
                let status = statement.bind(text(status.as_str()));
                let set = format!("status = {status}, version = version + 1, updated_at = {at}");
                (set, String::new())
            }
            None => (
                format!("last_heartbeat_at = {at}"),
                format!(" AND (last_heartbeat_at IS NULL OR last_heartbeat_at <= {at})"),
            ),
        };
        statement.change(
            "worker_change",
            format!(
                "UPDATE workers SET {set} WHERE id = {id} AND version = {version}{unless_later} \
                 RETURNING 1"
            ),
        );
    }
}

/// Registers a worker, IDLE at version 1. `None` when the id is already taken (in any workspace):
/// the conflict is an answer, not an error, so the transaction stays usable.
pub async fn insert(
    db: &Db,
    id: &WorkerId,
    workspace: &WorkspaceId,
    metadata: &JsonObject,
) -> Result<Option<Worker>, ApiError> {
    let metadata = serde_json::to_vec(metadata)
        .map_err(|e| ApiError::Internal(format!("metadata is not JSON: {e}")))?;
    let sql = format!(
        "INSERT INTO workers (id, workspace_id, metadata) VALUES ($1, $2, $3) \
         ON CONFLICT (id) DO NOTHING RETURNING {COLUMNS}"
    );
    let params = vec![
        text(id.as_str()),
        text(workspace.as_str()),
        ParameterValue::Jsonb(metadata),
    ];
    one(db, &sql, params).await
}

/// One page in the stable order (`created_at`, then `id`).
pub async fn list(
    db: &Db,
    filter: &Filter,
    limit: i64,
    offset: i64,
) -> Result<Vec<Worker>, ApiError> {
    let (clause, mut params) = filter.clause();
    let sql = format!(
        "SELECT {COLUMNS} FROM workers{clause} ORDER BY created_at, id LIMIT ${} OFFSET ${}",
        params.len() + 1,
        params.len() + 2
    );
    params.extend([limit.into(), offset.into()]);
    db.rows(&sql, params)
        .await?
        .iter()
        .map(Worker::from_row)
        .collect()
}

/// How many workers match, from the counters rather than a table scan.
pub async fn count(db: &Db, filter: &Filter) -> Result<i64, ApiError> {
    let (clause, params) = filter.clause();
    let sql = format!("SELECT coalesce(sum(count), 0)::int8 FROM worker_counts{clause}");
    db.row(&sql, params).await?.int(0)
}

/// Workers per status, from the counters rather than a table scan. A status no worker ever had in
/// the filtered workspaces is absent.
pub async fn count_by_status(
    db: &Db,
    workspace: Option<WorkspaceId>,
) -> Result<Vec<(WorkerState, i64)>, ApiError> {
    let filter = Filter {
        workspace,
        status: None,
    };
    let (clause, params) = filter.clause();
    let sql = format!("SELECT status, sum(count)::int8 FROM worker_counts{clause} GROUP BY status");
    db.rows(&sql, params)
        .await?
        .iter()
        .map(|row| Ok((row.state(0)?, row.int(1)?)))
        .collect()
}
