//! The one way state changes: a transaction that holds the change, its audit
//! rows and events, and — for a request with an `Idempotency-Key` — the
//! recorded response (contract §3, in the shape of zero2prod's idempotency:
//! insert the key first, then either process or replay). Events are
//! published after the commit (see `store::events` for who publishes what).

use crate::cache::{Cache, Claim};
use crate::context::Context;
use crate::db::Db;
use crate::reply::Reply;
use crate::request::Request;
use crate::store::events::{self, Inserted};
use crate::store::idempotency;
use orchestrator_core::ApiError;
use orchestrator_core::events::{Envelope, NewEvent};
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
        let committed = transaction(db, context, None, cache.is_ok(), change).await?;
        if let Ok(cache) = &cache {
            committed.publish(cache, &config.events_channel).await;
        }
        return Ok(committed.reply);
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
        Ok(db) => transaction(db, context, Some(&keyed), true, change).await,
        Err(e) => Err(e),
    };
    match &outcome {
        Ok(Committed { reply, .. }) => {
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
        }
        Err(_) => {
            cache
                .finish(&keyed.scope_key, None, config.idempotency_ttl_seconds)
                .await
        }
    }
    let committed = outcome?;
    committed.publish(&cache, &config.events_channel).await;
    Ok(committed.reply)
}

/// A committed transaction: its answer, its connection, and its events as stored.
struct Committed {
    reply: Reply,
    db: Db,
    events: Inserted,
}

/// The transaction. `publishing` says whether this request will publish its
/// events (it can reach Redis), so they are claimed for it.
async fn transaction<F>(
    db: Db,
    context: &Context,
    keyed: Option<&Keyed>,
    publishing: bool,
    change: F,
) -> Result<Committed, ApiError>
where
    F: AsyncFnOnce(&mut Tx) -> Result<Reply, ApiError>,
{
    db.execute("BEGIN", []).await?;
    let mut tx = Tx {
        db,
        actor: context.caller.subject.clone(),
        events: Vec::new(),
    };
    // Whatever fails from here on ends the transaction first: under Spin a connection goes back
    // to the pool as it is, and the next request to draw it must not inherit this one's work.
    let ended = match inside(&mut tx, context, keyed, publishing, change).await {
        Ok(ended) => ended,
        Err(error) => {
            tx.db.abandon().await;
            return Err(error);
        }
    };
    let (reply, events) = match ended {
        Ended::ToCommit(reply, events) => {
            // A COMMIT that fails has ended the transaction as well.
            tx.db.execute("COMMIT", []).await?;
            (reply, events)
        }
        Ended::RolledBack(reply) => (reply, Inserted::default()),
    };
    Ok(Committed {
        reply,
        db: tx.db,
        events,
    })
}

/// How the statements inside the transaction ended.
enum Ended {
    /// The change, or a refusal recorded under the key, waits for the COMMIT.
    ToCommit(Reply, Inserted),
    /// Another request had recorded this key: the transaction is over, and this is its replay.
    RolledBack(Reply),
}

/// Everything between `BEGIN` and `COMMIT`.
async fn inside<F>(
    tx: &mut Tx,
    context: &Context,
    keyed: Option<&Keyed>,
    publishing: bool,
    change: F,
) -> Result<Ended, ApiError>
where
    F: AsyncFnOnce(&mut Tx) -> Result<Reply, ApiError>,
{
    if let Some(keyed) = keyed {
        let ttl = context.config.idempotency_ttl_seconds;
        if !idempotency::claim(&tx.db, &keyed.scope_key, &keyed.fingerprint, ttl).await? {
            tx.db.execute("ROLLBACK", []).await?;
            let (stored, headers) = idempotency::load(&tx.db, &keyed.scope_key)
                .await?
                .ok_or_else(|| ApiError::Internal("claimed idempotency record vanished".into()))?;
            return Ok(Ended::RolledBack(replay(
                stored,
                headers,
                &keyed.fingerprint,
            )?));
        }
        tx.db.execute("SAVEPOINT change", []).await?;
    }
    let reply = match change(tx).await {
        Ok(reply) => reply,
        // A refusal is an answer too: record it (without the change) so a
        // retry gets the same answer.
        Err(error) if keyed.is_some() && rules::is_recordable(error.status()) => {
            tx.db.execute("ROLLBACK TO SAVEPOINT change", []).await?;
            tx.events.clear();
            Reply::error(&error)
        }
        Err(error) => return Err(error),
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
    // Last before the commit: inserting events takes the lock that orders
    // every writer's events, held until the commit.
    let inserted = events::insert(&tx.db, &tx.events, publishing).await?;
    Ok(Ended::ToCommit(reply, inserted))
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

impl Committed {
    /// Publishes the transaction's events. When none are waiting from before (the usual case) they
    /// go out straight away and one statement marks them (and looks for a dead publisher's events,
    /// which are then drained); otherwise the waiting ones are drained first, oldest first, with
    /// this request's own. Failures are logged: what was not published stays in the outbox for a
    /// later request.
    async fn publish(&self, cache: &Cache, channel: &str) {
        let own = &self.events.envelopes;
        if own.is_empty() {
            return;
        }
        let outcome = if self.events.leftovers {
            drain(&self.db, cache, channel, own).await
        } else {
            publish_own(&self.db, cache, channel, own).await
        };
        if let Err(e) = outcome {
            eprintln!("events not published yet: {e}");
        }
    }
}

async fn publish_own(
    db: &Db,
    cache: &Cache,
    channel: &str,
    own: &[Envelope],
) -> Result<(), ApiError> {
    match send(cache, channel, own).await {
        Ok(published) => {
            if events::mark_own_published(db, &published).await? {
                drain(db, cache, channel, &[]).await?;
            }
            Ok(())
        }
        Err(failure) => {
            events::release_claims(db, &seqs(own)).await?;
            Err(failure)
        }
    }
}

/// Publishes the oldest unclaimed or abandoned events and this request's own, in `seq` order, under
/// row locks so that two requests draining at once do not both publish an event.
async fn drain(db: &Db, cache: &Cache, channel: &str, own: &[Envelope]) -> Result<(), ApiError> {
    let own = seqs(own);
    db.execute("BEGIN", []).await?;
    let locked = async {
        let pending = events::lock_unpublished(db, &own, PUBLISH_BATCH).await?;
        let sent = send(cache, channel, &pending).await;
        match &sent {
            Ok(published) => events::mark_published(db, published).await?,
            Err(_) => events::release_claims(db, &own).await?,
        }
        db.execute("COMMIT", []).await?;
        Ok::<_, ApiError>(sent)
    }
    .await;
    match locked {
        Ok(sent) => sent.map(drop),
        Err(e) => {
            db.abandon().await;
            Err(e)
        }
    }
}

/// Publishes `envelopes` in order, in one round trip. Returns their seqs once they went out.
async fn send(cache: &Cache, channel: &str, envelopes: &[Envelope]) -> Result<Vec<i64>, ApiError> {
    if envelopes.is_empty() {
        return Ok(Vec::new());
    }
    let payloads = envelopes
        .iter()
        .map(serde_json::to_vec)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    cache.publish(channel, payloads).await?;
    Ok(seqs(envelopes))
}

fn seqs(envelopes: &[Envelope]) -> Vec<i64> {
    envelopes.iter().map(|e| e.seq).collect()
}
