//! `events`: the outbox. Events are written in the transaction of the change
//! they describe, published to Redis after it commits, then marked.

use super::ms;
use crate::db::{Columns, Db, Row};
use orchestrator_core::ApiError;
use orchestrator_core::events::{Envelope, EventType, NewEvent, Subject, SubjectKind};
use orchestrator_core::ids::WorkspaceId;
use spin_sdk::pg::ParameterValue;

/// Inserts a transaction's events, in order, in one statement. The table
/// assigns `seq` under a transaction-wide lock, so this must come after every
/// row lock the transaction takes.
pub async fn insert(db: &Db, events: &[NewEvent]) -> Result<(), ApiError> {
    if events.is_empty() {
        return Ok(());
    }
    let column = |f: fn(&NewEvent) -> String| -> ParameterValue {
        events.iter().map(|e| Some(f(e))).collect::<Vec<_>>().into()
    };
    db.execute(
        "INSERT INTO events (type, workspace_id, subject_kind, subject_id, actor, data) \
         SELECT t, w, k, i, a, d::jsonb \
         FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[]) \
              WITH ORDINALITY AS e(t, w, k, i, a, d, n) ORDER BY n",
        [
            column(|e| e.event_type.as_str().to_owned()),
            column(|e| e.workspace_id.as_str().to_owned()),
            column(|e| e.subject.kind.as_str().to_owned()),
            column(|e| e.subject.id.clone()),
            column(|e| e.actor.clone()),
            column(|e| e.data.to_string()),
        ],
    )
    .await?;
    Ok(())
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

/// Locks the oldest unpublished events (skipping those another publisher
/// holds); call inside a transaction that marks them once published.
pub async fn lock_unpublished(db: &Db, limit: i64) -> Result<Vec<Envelope>, ApiError> {
    let sql = format!(
        "SELECT {ENVELOPE} FROM events WHERE published_at IS NULL ORDER BY seq LIMIT $1 FOR UPDATE SKIP LOCKED"
    );
    db.rows(&sql, [limit.into()])
        .await?
        .iter()
        .map(envelope)
        .collect()
}

pub async fn mark_published(db: &Db, seqs: Vec<i64>) -> Result<(), ApiError> {
    let seqs: Vec<Option<i64>> = seqs.into_iter().map(Some).collect();
    db.execute(
        "UPDATE events SET published_at = now() WHERE seq = ANY($1::int8[]) AND published_at IS NULL",
        [seqs.into()],
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
