//! The one way state changes: a transaction that holds the change, its audit
//! rows and events, and — for a request with an `Idempotency-Key` — the
//! recorded response (contract §3, in the shape of zero2prod's idempotency:
//! insert the key first, then either process or replay). Events are
//! published after the commit.

use crate::cache::{Cache, Claim};
use crate::context::Context;
use crate::db::Db;
use crate::reply::Reply;
use crate::request::Request;
use crate::store::{events, idempotency};
use orchestrator_core::ApiError;
use orchestrator_core::events::NewEvent;
use orchestrator_core::idempotency::{
    self as rules, Decision, IdempotencyKey, REPLAYED_HEADER, StoredResponse,
};

/// What a handler may use inside the transaction.
pub struct Tx {
    pub db: Db,
    /// The token's subject: the actor of audit rows and events.
    pub actor: String,
    events: Vec<NewEvent>,
}

impl Tx {
    /// Queues an event; events are inserted last, just before the commit.
    pub fn emit(&mut self, event: NewEvent) {
        self.events.push(event);
    }
}

/// A keyed request: where its record lives and what it must match.
struct Keyed {
    scope_key: String,
    fingerprint: String,
}

/// How many unpublished events one request publishes at most.
const PUBLISH_BATCH: i64 = 200;

/// Runs `change` as one idempotent transaction and publishes its events.
///
/// Without Redis, a request with a key is refused (503: its in-flight lock
/// cannot be taken) while one without a key goes ahead; its events wait in
/// the outbox for a later request to publish.
pub async fn write<F>(context: &Context, request: &Request, change: F) -> Result<Reply, ApiError>
where
    F: AsyncFnOnce(&mut Tx) -> Result<Reply, ApiError>,
{
    let key = IdempotencyKey::from_headers(
        request.header(rules::HEADER),
        request.header(rules::ALIAS_HEADER),
    )?;
    let config = &context.config;
    let cache = Cache::connect(&config.redis_url, &config.database_url).await;
    let Some(key) = key else {
        let db = context.db().await?;
        let ((reply, db), published) = transaction(db, context, None, change).await?;
        if let (Ok(cache), true) = (&cache, published) {
            publish_pending(&db, cache, &config.events_channel).await;
        }
        return Ok(reply);
    };
    let cache = cache?;
    let keyed = Keyed {
        scope_key: rules::scope_key(
            &context.caller.subject,
            &request.method,
            &request.path,
            &key,
        ),
        fingerprint: rules::fingerprint(&request.method, &request.path, &request.body),
    };
    match cache.claim(&keyed.scope_key).await? {
        Claim::Recorded(stored, headers) => return replay(stored, headers, &keyed.fingerprint),
        Claim::InUse => return Err(ApiError::IdempotencyKeyInUse),
        Claim::Claimed => {}
    }
    // Every outcome from here on releases the lock, an unreachable database
    // too: a retry of a 503 must not meet 409 until the lock expires.
    let outcome = match context.db().await {
        Ok(db) => transaction(db, context, Some(&keyed), change).await,
        Err(e) => Err(e),
    };
    match &outcome {
        Ok(((reply, db), published)) => {
            let stored = StoredResponse {
                fingerprint: keyed.fingerprint.clone(),
                status: reply.status,
                body: reply.body.clone(),
            };
            let recorded =
                rules::is_recordable(reply.status).then_some((&stored, reply.headers.as_slice()));
            cache
                .finish(&keyed.scope_key, recorded, config.idempotency_ttl_seconds)
                .await;
            if *published {
                publish_pending(db, &cache, &config.events_channel).await;
            }
        }
        Err(_) => {
            cache
                .finish(&keyed.scope_key, None, config.idempotency_ttl_seconds)
                .await
        }
    }
    outcome.map(|((reply, _), _)| reply)
}

/// The transaction. Returns the reply, the connection (for publishing), and
/// whether events were committed.
async fn transaction<F>(
    db: Db,
    context: &Context,
    keyed: Option<&Keyed>,
    change: F,
) -> Result<((Reply, Db), bool), ApiError>
where
    F: AsyncFnOnce(&mut Tx) -> Result<Reply, ApiError>,
{
    db.execute("BEGIN", []).await?;
    if let Some(keyed) = keyed {
        let ttl = context.config.idempotency_ttl_seconds;
        if !idempotency::claim(&db, &keyed.scope_key, &keyed.fingerprint, ttl).await? {
            db.execute("ROLLBACK", []).await?;
            let (stored, headers) = idempotency::load(&db, &keyed.scope_key)
                .await?
                .ok_or_else(|| ApiError::Internal("claimed idempotency record vanished".into()))?;
            return Ok(((replay(stored, headers, &keyed.fingerprint)?, db), false));
        }
        db.execute("SAVEPOINT change", []).await?;
    }
    let mut tx = Tx {
        db,
        actor: context.caller.subject.clone(),
        events: Vec::new(),
    };
    let reply = match change(&mut tx).await {
        Ok(reply) => {
            events::insert(&tx.db, &tx.events).await?;
            reply
        }
        // A refusal is an answer too: record it (without the change) so a
        // retry gets the same answer.
        Err(error) if keyed.is_some() && rules::is_recordable(error.status()) => {
            tx.db.execute("ROLLBACK TO SAVEPOINT change", []).await?;
            tx.events.clear();
            Reply::error(&error)
        }
        Err(error) => {
            // A failed rollback is moot: the host rolls back abandoned transactions.
            let _ = tx.db.execute("ROLLBACK", []).await;
            return Err(error);
        }
    };
    if let Some(keyed) = keyed {
        idempotency::save(
            &tx.db,
            &keyed.scope_key,
            reply.status,
            &reply.body,
            &reply.headers,
        )
        .await?;
    }
    tx.db.execute("COMMIT", []).await?;
    let published = !tx.events.is_empty();
    Ok(((reply, tx.db), published))
}

fn replay(
    stored: StoredResponse,
    headers: Vec<(String, String)>,
    fingerprint: &str,
) -> Result<Reply, ApiError> {
    match rules::decide(Some(stored), fingerprint)? {
        Decision::Replay(stored) => {
            let mut reply = Reply {
                status: stored.status,
                headers,
                body: stored.body,
            };
            reply.headers.push((
                REPLAYED_HEADER.0.to_ascii_lowercase(),
                REPLAYED_HEADER.1.to_owned(),
            ));
            Ok(reply)
        }
        Decision::Proceed => Err(ApiError::Internal("a stored response must replay".into())),
    }
}

/// Publishes the oldest unpublished events (this request's and any a Redis
/// outage left behind), in `seq` order, and marks those that went out.
/// Failures are logged: the events stay in the outbox for a later request.
async fn publish_pending(db: &Db, cache: &Cache, channel: &str) {
    if let Err(e) = try_publish_pending(db, cache, channel).await {
        let _ = db.execute("ROLLBACK", []).await;
        eprintln!("events not published yet: {e}");
    }
}

async fn try_publish_pending(db: &Db, cache: &Cache, channel: &str) -> Result<(), ApiError> {
    db.execute("BEGIN", []).await?;
    let pending = events::lock_unpublished(db, PUBLISH_BATCH).await?;
    let mut published = Vec::with_capacity(pending.len());
    let mut failure = None;
    for envelope in &pending {
        let payload =
            serde_json::to_vec(envelope).map_err(|e| ApiError::Internal(e.to_string()))?;
        match cache.publish(channel, &payload).await {
            Ok(()) => published.push(envelope.seq),
            Err(e) => {
                failure = Some(e);
                break;
            }
        }
    }
    events::mark_published(db, published).await?;
    db.execute("COMMIT", []).await?;
    failure.map_or(Ok(()), Err)
}
