//! `events`: the outbox. Events are written in the transaction of the change
//! they describe, without a `seq`; after the commit, [`stamp`] numbers them
//! (with everything else committed by then), and the request that numbered them
//! reads the numbered ones not yet published ([`unpublished`]), publishes them
//! to Redis and marks them ([`published_through`]). Why the order is kept this
//! way, and what that promises readers and subscribers: migrations 0007 and 0013.

use super::ms;
use super::settle::Statement;
use crate::db::{Columns, Db, Row};
use orchestrator_core::ApiError;
use orchestrator_core::events::{Envelope, EventType, NewEvent, Subject, SubjectKind};
use orchestrator_core::ids::WorkspaceId;
use spin_sdk::pg::ParameterValue;

/// The `WITH` part that inserts a transaction's events, in order, returning their `pos` (insert
/// order): what [`stamp`] needs to know whether they still wait for their `seq`. `None` for no
/// events.
pub(super) fn with_insert(statement: &mut Statement, events: &[NewEvent]) -> Option<&'static str> {
    if events.is_empty() {
        return None;
    }
    let mut column = |f: fn(&NewEvent) -> String| -> String {
        statement.bind(events.iter().map(|e| Some(f(e))).collect::<Vec<_>>())
    };
    let [types, workspaces, kinds, subjects, actors, data] = [
        column(|e| e.event_type.as_str().to_owned()),
        column(|e| e.workspace_id.as_str().to_owned()),
        column(|e| e.subject.kind.as_str().to_owned()),
        column(|e| e.subject.id.clone()),
        column(|e| e.actor.clone()),
        column(|e| e.data.to_string()),
    ];
    Some(statement.with(
        "inserted_events",
        format!(
            "INSERT INTO events (type, workspace_id, subject_kind, subject_id, actor, data) \
             SELECT t, w, k, i, a, d::jsonb \
             FROM unnest({types}::text[], {workspaces}::text[], {kinds}::text[], {subjects}::text[], \
                         {actors}::text[], {data}::text[]) \
                  WITH ORDINALITY AS e(t, w, k, i, a, d, n) ORDER BY n \
             RETURNING pos"
        ),
    ))
}

/// Gives `own` (committed events, by `pos`) their `seq`, with every other committed event still
/// waiting, unless another writer's stamp has done it already. Not inside a transaction: the lock
/// that orders events is held for this statement alone. Whether this call stamped them: that
/// writer publishes what it stamped, the others leave their events to it (migration 0013).
pub async fn stamp(db: &Db, own: &[i64]) -> Result<bool, ApiError> {
    db.row("SELECT events_stamp_turn($1::int8[])", [positions(own)])
        .await?
        .boolean(0)
}

/// How many events one request publishes at most: those it stamped and those waiting before them.
const PUBLISH_BATCH: i32 = 200;

/// The batch to publish: the oldest stamped events after `head` not yet marked published (up to
/// [`PUBLISH_BATCH`]), in `seq` order. `head` is the newest `seq` the channel has carried: those
/// before it are out, marked or not, so the batch holds only what may still need sending. Read
/// without a lock: successive stampers may send the same events, and Redis sends each once (see
/// [`crate::cache::Cache::publish`]); mark them with [`published_through`] once sent.
pub async fn unpublished(db: &Db, head: i64) -> Result<Vec<Envelope>, ApiError> {
    let sql = format!(
        "SELECT {ENVELOPE} FROM events WHERE published_at IS NULL AND seq > $1::int8 \
         ORDER BY seq LIMIT $2::int4"
    );
    envelopes(db.rows(&sql, [head.into(), PUBLISH_BATCH.into()]).await?)
}

/// Marks the events up to `seq` published: a batch that far has been sent.
pub async fn published_through(db: &Db, seq: i64) -> Result<(), ApiError> {
    db.execute("SELECT events_published_through($1::int8)", [seq.into()])
        .await
        .map(drop)
}

fn envelopes(rows: Vec<Row>) -> Result<Vec<Envelope>, ApiError> {
    rows.iter().map(envelope).collect()
}

/// Stamps events whose writer committed them over a second ago and never stamped them (it died in
/// between), so that a catch-up read does not wait for the next write to see them.
async fn stamp_stragglers(db: &Db) -> Result<(), ApiError> {
    db.execute(
        "SELECT events_stamp_turn(ARRAY(SELECT pos FROM events \
             WHERE seq IS NULL AND occurred_at < now() - interval '1 second'))",
        [],
    )
    .await?;
    Ok(())
}

fn positions(pos: &[i64]) -> ParameterValue {
    pos.iter().copied().map(Some).collect::<Vec<_>>().into()
}

const ENVELOPE: &str = concat!(
    "seq, id::text, type, ",
    ms!("occurred_at"),
    ", workspace_id, subject_kind, subject_id, actor, data"
);

fn envelope(row: &Row) -> Result<Envelope, ApiError> {
    let unknown = |what: &str| ApiError::Internal(format!("stored event has an unknown {what}"));
    let event = NewEvent {
        event_type: EventType::parse(&row.text(2)?).ok_or_else(|| unknown("type"))?,
        workspace_id: WorkspaceId::parse(&row.text(4)?).map_err(|_| unknown("workspace"))?,
        subject: Subject {
            kind: SubjectKind::parse(&row.text(5)?).ok_or_else(|| unknown("subject kind"))?,
            id: row.text(6)?,
        },
        actor: row.text(7)?,
        data: row.json(8)?.unwrap_or_default(),
    };
    Ok(Envelope::new(row.text(1)?, row.int(0)?, row.int(3)?, event))
}

/// The cursor after which the last `count` numbered events (of `workspace`) follow: a stream's
/// `tail`. The filters of a stream are not counted: the tail is of the outbox, not of the matches.
pub async fn tail_cursor(
    db: &Db,
    workspace: Option<&WorkspaceId>,
    count: i64,
) -> Result<i64, ApiError> {
    let row = match workspace {
        Some(workspace) => {
            db.optional_row(
                "SELECT seq FROM events WHERE workspace_id = $1 AND seq IS NOT NULL \
                 ORDER BY seq DESC OFFSET $2 LIMIT 1",
                [crate::db::text(workspace.as_str()), count.into()],
            )
            .await?
        }
        None => {
            db.optional_row(
                "SELECT seq FROM events WHERE seq IS NOT NULL ORDER BY seq DESC OFFSET $1 LIMIT 1",
                [count.into()],
            )
            .await?
        }
    };
    row.map_or(Ok(0), |row| row.int(0))
}

/// Events after `after_seq`, oldest first, for subscribers catching up.
pub async fn after(
    db: &Db,
    after_seq: i64,
    workspace: Option<&WorkspaceId>,
    limit: i64,
) -> Result<Vec<Envelope>, ApiError> {
    stamp_stragglers(db).await?;
    let rows = match workspace {
        Some(workspace) => {
            let sql = format!(
                "SELECT {ENVELOPE} FROM events WHERE workspace_id = $1 AND seq > $2 ORDER BY seq LIMIT $3"
            );
            db.rows(
                &sql,
                [
                    crate::db::text(workspace.as_str()),
                    after_seq.into(),
                    limit.into(),
                ],
            )
            .await?
        }
        None => {
            let sql = format!("SELECT {ENVELOPE} FROM events WHERE seq > $1 ORDER BY seq LIMIT $2");
            db.rows(&sql, [after_seq.into(), limit.into()]).await?
        }
    };
    envelopes(rows)
}
