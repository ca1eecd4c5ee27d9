//! `events`: the outbox. Events are written in the transaction of the change
//! they describe, published to Redis after it commits, then marked.
//!
//! A request that can reach Redis claims the events it writes (`publishing_since`)
//! and publishes them itself, with no transaction around the publishing: one
//! statement marks them afterwards. Unclaimed events (written while Redis was
//! out, or whose publishing failed or was abandoned) are drained oldest first,
//! under row locks, by the next request that sees them.

use super::ms;
use crate::db::{Columns, Db, Row};
use orchestrator_core::ApiError;
use orchestrator_core::events::{Envelope, EventType, NewEvent, Subject, SubjectKind};
use orchestrator_core::ids::WorkspaceId;
use spin_sdk::pg::{DbValue, ParameterValue};

/// A transaction's events as stored, and whether older ones wait to be published.
#[derive(Default)]
pub struct Inserted {
    /// In `seq` order.
    pub envelopes: Vec<Envelope>,
    /// Events no publisher is working on are waiting: left by a Redis outage, a failed publish, or a
    /// publisher that died before marking what it claimed.
    pub leftovers: bool,
}

/// Inserts a transaction's events, in order, in one statement, and returns them as stored. The table
/// assigns `seq` under a transaction-wide lock, so this must come after every row lock the transaction
/// takes. With `claim`, the events are marked as being published by this request (see [`Inserted`]).
pub async fn insert(db: &Db, events: &[NewEvent], claim: bool) -> Result<Inserted, ApiError> {
    if events.is_empty() {
        return Ok(Inserted::default());
    }
    let column = |f: fn(&NewEvent) -> String| -> ParameterValue {
        events.iter().map(|e| Some(f(e))).collect::<Vec<_>>().into()
    };
    let sql = format!(
        "WITH inserted AS ( \
             INSERT INTO events (type, workspace_id, subject_kind, subject_id, actor, data, publishing_since) \
             SELECT t, w, k, i, a, d::jsonb, CASE WHEN $7 THEN clock_timestamp() END \
             FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[]) \
                  WITH ORDINALITY AS e(t, w, k, i, a, d, n) ORDER BY n \
             RETURNING {ENVELOPE}) \
         SELECT *, EXISTS (SELECT 1 FROM events WHERE {UNCLAIMED}) FROM inserted ORDER BY seq"
    );
    let rows = db
        .rows(
            &sql,
            [
                column(|e| e.event_type.as_str().to_owned()),
                column(|e| e.workspace_id.as_str().to_owned()),
                column(|e| e.subject.kind.as_str().to_owned()),
                column(|e| e.subject.id.clone()),
                column(|e| e.actor.clone()),
                column(|e| e.data.to_string()),
                ParameterValue::Boolean(claim),
            ],
        )
        .await?;
    let leftovers = match rows.first().map(|row| &row[9]) {
        Some(DbValue::Boolean(waiting)) => *waiting,
        other => return Err(ApiError::Internal(format!("inserted events: {other:?}"))),
    };
    Ok(Inserted {
        envelopes: rows.iter().map(envelope).collect::<Result<_, _>>()?,
        leftovers,
    })
}

const ENVELOPE: &str = concat!(
    "seq, id::text, type, ",
    ms!("occurred_at"),
    ", workspace_id, subject_kind, subject_id, actor, data"
);

/// Unpublished events nobody claimed: written while Redis was out, or whose publishing failed. Their
/// partial index only ever holds these few rows, so looking costs nothing on every write.
const UNCLAIMED: &str = "published_at IS NULL AND publishing_since IS NULL";

/// Claimed events still unpublished after 30 seconds: their publisher died. Looked for after
/// publishing, outside the lock that orders writers.
const ABANDONED: &str = "published_at IS NULL AND publishing_since < now() - interval '30 seconds'";

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

/// Locks the oldest unclaimed or abandoned events, and `own` (the caller's claimed ones), skipping
/// those another publisher holds; call inside a transaction that marks them once published.
pub async fn lock_unpublished(db: &Db, own: &[i64], limit: i64) -> Result<Vec<Envelope>, ApiError> {
    let sql = format!(
        "SELECT {ENVELOPE} FROM events \
         WHERE published_at IS NULL AND seq IN ( \
             SELECT seq FROM events WHERE {UNCLAIMED} \
             UNION ALL SELECT seq FROM events WHERE {ABANDONED} \
             UNION ALL SELECT unnest($2::int8[])) \
         ORDER BY seq LIMIT $1 FOR UPDATE SKIP LOCKED"
    );
    db.rows(&sql, [limit.into(), seqs(own)])
        .await?
        .iter()
        .map(envelope)
        .collect()
}

fn seqs(seqs: &[i64]) -> ParameterValue {
    seqs.iter().copied().map(Some).collect::<Vec<_>>().into()
}

/// Marks events as published. The clock, not the transaction's start: a drain's transaction may have
/// begun before the events it locked were written.
pub async fn mark_published(db: &Db, published: &[i64]) -> Result<(), ApiError> {
    db.execute(MARK_PUBLISHED, [seqs(published)]).await?;
    Ok(())
}

/// Marks a request's own events as published, and says whether a dead publisher's events wait.
pub async fn mark_own_published(db: &Db, published: &[i64]) -> Result<bool, ApiError> {
    // A data-modifying WITH runs whether or not the query reads it.
    let sql = format!(
        "WITH marked AS ({MARK_PUBLISHED}) SELECT EXISTS (SELECT 1 FROM events WHERE {ABANDONED})"
    );
    match &db.row(&sql, [seqs(published)]).await?[0] {
        DbValue::Boolean(abandoned) => Ok(*abandoned),
        other => Err(ApiError::Internal(format!("marking events: {other:?}"))),
    }
}

const MARK_PUBLISHED: &str = "UPDATE events SET published_at = clock_timestamp() \
     WHERE seq = ANY($1::int8[]) AND published_at IS NULL";

/// Gives up the claim on events that could not be published, so the next request publishes them.
pub async fn release_claims(db: &Db, unpublished: &[i64]) -> Result<(), ApiError> {
    db.execute(
        "UPDATE events SET publishing_since = NULL WHERE seq = ANY($1::int8[]) AND published_at IS NULL",
        [seqs(unpublished)],
    )
    .await?;
    Ok(())
}

/// Events after `after_seq`, oldest first, for subscribers catching up.
pub async fn after(
    db: &Db,
    after_seq: i64,
    workspace: Option<&WorkspaceId>,
    limit: i64,
) -> Result<Vec<Envelope>, ApiError> {
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
    rows.iter().map(envelope).collect()
}
