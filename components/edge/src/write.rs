//! The one way state changes: a transaction that holds the change, its audit
//! rows and events, and — for a request with an `Idempotency-Key` — the
//! recorded response (contract §3). The audit rows, the events and the record
//! are written by one statement just before the COMMIT ([`settle`]); when that
//! statement finds the key recorded by another request, the change rolls back
//! and that request's answer is replayed. So the key is claimed last, not first
//! as in zero2prod's shape: a race on a key (rare: the Redis lock in front
//! answers 409 first) costs the loser its rolled-back work, and every write
//! saves the claim, a savepoint and a round trip. After the commit the events
//! get their `seq` and are published (see [`Committed::publish`]).
//!
//! A handler whose change is decided on rows it can read without locking them
//! writes through [`write_if_unchanged`] instead: no transaction, only that last
//! statement, written only if those rows are still as read (migration 0012).

use crate::cache::{Cache, Claim};
use crate::context::Context;
use crate::db::Db;
use crate::reply::Reply;
use crate::request::Request;
use crate::store::audit_trail::{AuditRows, Audited};
use crate::store::events;
use crate::store::idempotency::{self, Record};
use crate::store::settle::{Deferred, Lost, Settlement, settle};
use orchestrator_core::ApiError;
use orchestrator_core::events::NewEvent;
use orchestrator_core::idempotency::{
    self as rules, Decision, IdempotencyKey, REPLAYED_HEADER, StoredResponse,
};
use orchestrator_core::lifecycle::Transition;

/// What a handler may use inside the transaction.
pub struct Tx {
    pub db: Db,
    /// The token's subject: the actor of audit rows and events.
    pub actor: String,
    deferred: Vec<Box<dyn Deferred>>,
    audit: AuditRows,
    events: Vec<NewEvent>,
}

impl Tx {
    /// Leaves a write whose answer the handler does not need to the transaction's last statement.
    pub fn defer(&mut self, write: impl Deferred + 'static) {
        self.deferred.push(Box::new(write));
    }

    /// Queues the audit rows of moves made in this transaction (their rows locked until it ends);
    /// they are inserted last, with the events.
    pub fn audit<S: Audited>(&mut self, transitions: &[Transition<S>]) {
        self.audit.push(transitions);
    }

    /// Queues an event; events are inserted last, just before the commit.
    pub fn emit(&mut self, event: NewEvent) {
        self.events.push(event);
    }

    fn new(db: Db, context: &Context) -> Self {
        Self {
            db,
            actor: context.caller.subject.clone(),
            deferred: Vec::new(),
            audit: AuditRows::default(),
            events: Vec::new(),
        }
    }

    /// What the handler left to the last statement, with the record of a keyed request.
    fn settlement<'a>(&'a self, record: Option<Record<'a>>) -> Settlement<'a> {
        Settlement {
            record,
            deferred: &self.deferred,
            audit: &self.audit,
            events: &self.events,
        }
    }
}

/// A keyed request: where its record lives and what it must match.
struct Keyed {
    scope_key: String,
    fingerprint: String,
    ttl_seconds: i64,
}

impl Keyed {
    fn record<'a>(&'a self, reply: &'a Reply) -> Record<'a> {
        Record {
            scope_key: &self.scope_key,
            fingerprint: &self.fingerprint,
            ttl_seconds: self.ttl_seconds,
            status: reply.status,
            body: &reply.body,
            headers: &reply.headers,
        }
    }

    /// The answer of the request that recorded this key first.
    async fn replay_recorded(&self, db: &Db) -> Result<Reply, ApiError> {
        let (stored, headers) = idempotency::load(db, &self.scope_key)
            .await?
            .ok_or_else(|| ApiError::Internal("recorded idempotency record vanished".into()))?;
        replay(stored, headers, &self.fingerprint)
    }
}

/// Runs `change` as one idempotent transaction and publishes its events.
///
/// Without Redis, a request with a key is refused (503: its in-flight lock
/// cannot be taken) while one without a key goes ahead; its events wait in
/// the outbox for a later request to publish.
pub async fn write<F>(context: &Context, request: &Request, change: F) -> Result<Reply, ApiError>
where
    F: AsyncFnOnce(&mut Tx) -> Result<Reply, ApiError>,
{
    door(context, request, async |db, keyed| {
        transaction(db, context, keyed, change).await
    })
    .await
}

/// Like [`write`], for a change whose handler reads its rows without locking them and defers every
/// write, each conditional on its row being as read ([`crate::store::settle::Statement::change`]):
/// then the write is its last statement alone, with no `BEGIN` and no `COMMIT` — two statements
/// fewer, and the rows it changes are held only while Postgres commits it. When a row changed in
/// between, nothing was written and `change` runs again on what is there now. Rows changed that
/// often are taken in turn: after [`UNLOCKED_TRIES`] the write is a transaction that locks what
/// it reads, which always completes.
pub async fn write_if_unchanged<F>(
    context: &Context,
    request: &Request,
    change: F,
) -> Result<Reply, ApiError>
where
    F: AsyncFn(&mut Tx) -> Result<Reply, ApiError>,
{
    door(context, request, async |mut db, keyed| {
        for _ in 0..UNLOCKED_TRIES {
            let mut tx = Tx::new(db, context);
            let ended = decide(&mut tx, keyed, &change).await;
            db = tx.db;
            if let Some(ended) = ended? {
                return Ok(Committed::new(db, ended));
            }
        }
        transaction(db, context, keyed, change).await
    })
    .await
}

/// How many times a write of one statement is tried before it locks its rows.
const UNLOCKED_TRIES: usize = 2;

/// The request's idempotency around one way of making the change: the Redis claim in front, the
/// answer cached after, and the events published.
async fn door<W>(context: &Context, request: &Request, way: W) -> Result<Reply, ApiError>
where
    W: AsyncFnOnce(Db, Option<&Keyed>) -> Result<Committed, ApiError>,
{
    let key = IdempotencyKey::from_headers(
        request.header(rules::HEADER).as_deref(),
        request.header(rules::ALIAS_HEADER).as_deref(),
    )?;
    let config = &context.config;
    let Some(key) = key else {
        let db = context.db().await?;
        let committed = way(db, None).await?;
        committed
            .publish(context.cache.as_ref().ok(), &config.events_channel)
            .await;
        return Ok(committed.reply);
    };
    let cache = context.cache.as_ref().map_err(Clone::clone)?;
    let keyed = Keyed {
        scope_key: rules::scope_key(
            &context.caller.subject,
            &request.method,
            &request.path,
            &key,
        ),
        fingerprint: rules::fingerprint(&request.method, &request.path, &request.body),
        ttl_seconds: config.idempotency_ttl_seconds,
    };
    match cache.claim(&keyed.scope_key).await? {
        Claim::Recorded(stored, headers) => return replay(stored, headers, &keyed.fingerprint),
        Claim::InUse => return Err(ApiError::IdempotencyKeyInUse),
        Claim::Claimed => {}
    }
    // Every outcome from here on releases the lock, an unreachable database
    // too: a retry of a 503 must not meet 409 until the lock expires.
    let outcome = match context.db().await {
        Ok(db) => way(db, Some(&keyed)).await,
        Err(e) => Err(e),
    };
    match &outcome {
        Ok(Committed {
            reply, replayed, ..
        }) => {
            let stored = StoredResponse {
                fingerprint: keyed.fingerprint.clone(),
                status: reply.status,
                body: reply.body.clone(),
            };
            // A replay caches nothing: what Redis should hold is the answer as the request that
            // recorded it gave it, which that request caches itself.
            let recorded = (!replayed && rules::is_recordable(reply.status))
                .then_some((&stored, reply.headers.as_slice()));
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
    committed.publish(Some(cache), &config.events_channel).await;
    Ok(committed.reply)
}

/// A write that ended: its answer, its connection, and its events' `pos`.
struct Committed {
    reply: Reply,
    /// The answer is another request's, replayed: this one changed and recorded nothing.
    replayed: bool,
    db: Db,
    events: Vec<i64>,
}

impl Committed {
    fn new(db: Db, ended: Ended) -> Self {
        let (reply, replayed, events) = match ended {
            Ended::Committed(reply, events) => (reply, false, events),
            Ended::RefusalRecorded(reply) => (reply, false, Vec::new()),
            Ended::Replayed(reply) => (reply, true, Vec::new()),
        };
        Self {
            reply,
            replayed,
            db,
            events,
        }
    }
}

/// The transaction.
async fn transaction<F>(
    db: Db,
    context: &Context,
    keyed: Option<&Keyed>,
    change: F,
) -> Result<Committed, ApiError>
where
    F: AsyncFnOnce(&mut Tx) -> Result<Reply, ApiError>,
{
    db.execute("BEGIN", []).await?;
    let mut tx = Tx::new(db, context);
    // Whatever fails from here on ends the transaction first: under Spin a connection goes back
    // to the pool as it is, and the next request to draw it must not inherit this one's work.
    let decided = decide(&mut tx, keyed, change).await.and_then(|ended| {
        ended.ok_or_else(|| ApiError::Internal("a row locked by the transaction changed".into()))
    });
    let ended = match decided {
        Ok(ended) => ended,
        Err(error) => {
            tx.db.abandon().await;
            return Err(error);
        }
    };
    if let Ended::Committed(..) = ended {
        // A COMMIT that fails has ended the transaction as well.
        tx.db.execute("COMMIT", []).await?;
    }
    Ok(Committed::new(tx.db, ended))
}

/// How a write ended.
enum Ended {
    /// The change is committed (inside a transaction: once it commits), with its events' `pos`.
    Committed(Reply, Vec<i64>),
    /// The change was refused and not written; the refusal is recorded on its own.
    RefusalRecorded(Reply),
    /// Nothing written: another request recorded this key first, and this is its answer.
    Replayed(Reply),
}

/// The change and the statement that settles it, inside a transaction or as that one statement;
/// `None` when the statement wrote nothing because a row read without a lock had changed since.
async fn decide<F>(tx: &mut Tx, keyed: Option<&Keyed>, change: F) -> Result<Option<Ended>, ApiError>
where
    F: AsyncFnOnce(&mut Tx) -> Result<Reply, ApiError>,
{
    let reply = match (change(tx).await, keyed) {
        (Ok(reply), _) => reply,
        (Err(error), Some(keyed)) if rules::is_recordable(error.status()) => {
            roll_back_if_open(&tx.db).await?;
            return record_refusal(&tx.db, keyed, &error).await.map(Some);
        }
        (Err(error), _) => return Err(error),
    };
    let settlement = tx.settlement(keyed.map(|keyed| keyed.record(&reply)));
    Ok(match (settle(&tx.db, settlement).await?, keyed) {
        (Ok(events), _) => Some(Ended::Committed(reply, events)),
        (Err(Lost::KeyRecorded), Some(keyed)) => {
            roll_back_if_open(&tx.db).await?;
            Some(Ended::Replayed(keyed.replay_recorded(&tx.db).await?))
        }
        (Err(Lost::Stale), _) => None,
        (Err(Lost::KeyRecorded), None) => {
            return Err(ApiError::Internal("an unkeyed write found a key".into()));
        }
    })
}

/// Ends the transaction the change ran in, if any, undoing it: what follows is written on its own.
async fn roll_back_if_open(db: &Db) -> Result<(), ApiError> {
    if db.in_transaction() {
        db.execute("ROLLBACK", []).await?;
    }
    Ok(())
}

/// A refusal is an answer too: recorded without the change, so a retry gets the same answer.
async fn record_refusal(db: &Db, keyed: &Keyed, error: &ApiError) -> Result<Ended, ApiError> {
    let reply = Reply::error(error);
    let settlement = Settlement {
        record: Some(keyed.record(&reply)),
        deferred: &[],
        audit: &AuditRows::default(),
        events: &[],
    };
    Ok(match settle(db, settlement).await? {
        Ok(_) => Ended::RefusalRecorded(reply),
        Err(_) => Ended::Replayed(keyed.replay_recorded(db).await?),
    })
}

fn replay(
    stored: StoredResponse,
    headers: Vec<(String, String)>,
    fingerprint: &str,
) -> Result<Reply, ApiError> {
    match rules::decide(Some(stored), fingerprint)? {
        Decision::Replay(stored) => {
            let mut reply = Reply::new(stored.status, stored.body);
            reply.headers = headers;
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
    /// Gives the committed events their `seq` (a short step under the lock that numbers events),
    /// then, if this request numbered them, publishes every event not yet published: a batch read
    /// without a lock, sent to Redis (which sends only what it has not sent yet, in `seq` order),
    /// then marked (migrations 0007 and 0013). A request whose events another numbered leaves them
    /// to it. Without Redis the events are only stamped, so catch-up reads see them; they go out
    /// with a later request's batch. Failures are logged; an event left without a `seq` is stamped
    /// by the next writer or catch-up read, one left unmarked goes out with the next batch.
    async fn publish(&self, cache: Option<&Cache>, channel: &str) {
        if self.events.is_empty() {
            return;
        }
        let outcome = async {
            let stamped = events::stamp(&self.db, &self.events).await?;
            let Some(cache) = cache.filter(|_| stamped) else {
                return Ok(());
            };
            // Only what is after the head may still need sending: under load most of what is
            // unmarked is the batch another stamper is sending and marking at this moment.
            let head = cache.published_head().await?;
            let batch = events::unpublished(&self.db, head).await?;
            // Nothing after the head: another stamper sent it all, and marks it.
            let Some(last) = batch.last() else {
                return Ok(());
            };
            cache.publish(channel, &batch).await?;
            // Once the script has run, every event up to the batch's last is out: sent by it, or
            // before it (the head had passed it). So all of them are marked, even when it sent
            // none, or events another publisher sent and failed to mark would stay unmarked.
            events::published_through(&self.db, last.seq).await
        };
        if let Err(e) = outcome.await {
            eprintln!("events not published yet: {e}");
        }
    }
}
