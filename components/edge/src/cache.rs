//! Redis: the fast path and the short lock of idempotency, the events
//! channel, and revoked tokens. For idempotency Postgres holds the durable
//! record; Redis only saves a round trip and turns a concurrent duplicate into
//! 409 instead of a wait. Revocations live in Redis alone (the seed's token
//! blacklist).
//!
//! Under Spin every `Connection::open` is a new TCP connection, whose commands
//! wait for ever if Redis stops answering. So an instance keeps one
//! connection for its requests (multiplexed: its concurrent requests share
//! it) while it is serving and briefly after, lets it go when a command on it
//! fails, and bounds every call by [`REDIS_WAIT`].

use orchestrator_core::ApiError;
use orchestrator_core::auth::Principal;
use orchestrator_core::events::Envelope;
use orchestrator_core::idempotency::StoredResponse;
use orchestrator_core::ids::WorkspaceId;
use orchestrator_core::keyspace::Keyspace;
use orchestrator_core::revocation::{Revocation, RevocationRecord};
use serde::{Deserialize, Serialize};
use spin_sdk::redis::{Connection, RedisParameter, RedisResult};
use std::cell::RefCell;
use std::rc::Rc;
use std::time::{Duration, Instant};

pub struct Cache {
    connection: Rc<Connection>,
    keys: Keyspace,
}

/// The longest the app waits for Redis in one call, opening a connection or one command; then
/// the call fails as if Redis were out (a keyed write answers 503, a revocation check fails open).
pub const REDIS_WAIT: Duration = Duration::from_secs(2);

/// How long an instance keeps its connection once its last request ended: under load its
/// requests come and go, and between two of them it may serve none for a moment.
const KEPT_IDLE: Duration = Duration::from_millis(250);

/// The connection an instance's requests share.
struct Kept {
    url: String,
    connection: Rc<Connection>,
    /// Since when the instance has served no request, if it serves none now.
    idle_since: Option<Instant>,
}

thread_local! {
    static KEPT: RefCell<Option<Kept>> = const { RefCell::new(None) };
}

/// The instance's last request ended (see [`crate::db::Serving`]): its connection is kept for
/// [`KEPT_IDLE`] only, so one that Redis closed meanwhile (a restart) is rarely met.
pub(crate) fn went_idle() {
    KEPT.with_borrow_mut(|kept| {
        if let Some(kept) = kept {
            kept.idle_since = Some(Instant::now());
        }
    });
}

/// The kept connection to `url`, unless it has been idle too long.
fn kept(url: &str) -> Option<Rc<Connection>> {
    KEPT.with_borrow_mut(|slot| {
        slot.take_if(|kept| {
            kept.url != url
                || kept
                    .idle_since
                    .is_some_and(|since| since.elapsed() >= KEPT_IDLE)
        });
        let kept = slot.as_mut()?;
        kept.idle_since = None;
        Some(kept.connection.clone())
    })
}

/// What Redis knows of an idempotency key.
pub enum Claim {
    /// A response was recorded for it: replay or refuse.
    Recorded(StoredResponse, Vec<(String, String)>),
    /// Another request with the key is in flight.
    InUse,
    /// This request now holds the key's lock.
    Claimed,
}

/// How long a claimed key stays locked if its request never finishes.
const LOCK_MILLIS: i64 = 30_000;

/// Returns the recorded response, or takes the lock, in one round trip.
const CLAIM: &str = "local r = redis.call('GET', KEYS[1]) \
    if r then return r end \
    if redis.call('SET', KEYS[2], '1', 'NX', 'PX', ARGV[1]) then return 1 end \
    return 0";

/// Caches the recorded response (when there is one) and releases the lock.
const FINISH: &str = "if ARGV[1] ~= '' then redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2]) end \
    redis.call('DEL', KEYS[2]) return 1";

/// Publishes the batch's events (`seq` in `ARGV[1 + i]`, payload in `ARGV[1 + n + i]`, `n` in
/// `ARGV[1]`) to the channel (`KEYS[1]`) in order, but only those above the head (`KEYS[2]`: the
/// newest `seq` published, the doorbell of every workspace), which then moves to the last sent. So
/// the channel carries `seq`s in strictly increasing order however publishers race, and an event
/// is sent once however many batches hold it (migration 0013). When it sent any, it rings the
/// doorbells of the batch's workspaces too: each key after the head (`KEYS[j]`) is set to its
/// `seq` (`ARGV[2n + j - 1]`; see [`orchestrator_core::live::doorbells`]). In one script, so a
/// doorbell never rings before the events it announces are out. A doorbell lasts a day after its
/// last ring: one that expired rings as it is set again. `seq`s are compared as Lua numbers
/// (doubles: exact below 2^53, some 9 × 10^15 events), and the head is set from the argument, which
/// Lua would print in exponent notation past 14 digits.
const PUBLISH_NEW: &str = "local n = tonumber(ARGV[1]) \
    local before = tonumber(redis.call('GET', KEYS[2]) or 0) \
    local head, last = before, nil \
    for i = 1, n do \
        local seq = tonumber(ARGV[1 + i]) \
        if seq > head then redis.call('PUBLISH', KEYS[1], ARGV[1 + n + i]) head, last = seq, ARGV[1 + i] end \
    end \
    if last then \
        redis.call('SET', KEYS[2], last, 'EX', 86400) \
        for j = 3, #KEYS do redis.call('SET', KEYS[j], ARGV[2 * n + j - 1], 'EX', 86400) end \
    end \
    return head";

#[derive(Serialize, Deserialize)]
struct Cached {
    fingerprint: String,
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Cache {
    /// The instance's connection to `redis_url`, opened if it has none.
    pub async fn connect(redis_url: &str, database_url: &str) -> Result<Self, ApiError> {
        let connection = match kept(redis_url) {
            Some(connection) => connection,
            None => {
                let opened = crate::within(REDIS_WAIT, Connection::open(redis_url))
                    .await
                    .ok_or_else(|| timed_out("a connection"))?;
                let connection = Rc::new(opened.map_err(unavailable)?);
                KEPT.set(Some(Kept {
                    url: redis_url.to_owned(),
                    connection: connection.clone(),
                    idle_since: None,
                }));
                connection
            }
        };
        Ok(Self {
            connection,
            keys: Keyspace::for_database(database_url),
        })
    }

    /// Runs one command, bounded by [`REDIS_WAIT`]. A failure may have left the connection
    /// broken (Redis restarted) or in an unknown state (a reply never came): the instance lets it
    /// go, and its next request opens another.
    async fn execute(
        &self,
        command: &str,
        arguments: impl IntoIterator<Item = RedisParameter>,
    ) -> Result<Vec<RedisResult>, ApiError> {
        let answer = crate::within(REDIS_WAIT, self.connection.execute(command, arguments))
            .await
            .ok_or_else(|| timed_out(command))
            .and_then(|answer| answer.map_err(unavailable));
        if answer.is_err() {
            KEPT.with_borrow_mut(|kept| {
                kept.take_if(|kept| Rc::ptr_eq(&kept.connection, &self.connection))
            });
        }
        answer
    }

    fn keys(&self, scope_key: &str) -> [String; 2] {
        [
            self.keys.idempotency_record(scope_key),
            self.keys.idempotency_lock(scope_key),
        ]
    }

    /// Whether Redis answers on this connection.
    pub async fn ping(&self) -> Result<(), ApiError> {
        self.execute("PING", []).await.map(drop)
    }

    /// What is recorded against the caller's token and its subject, in one round trip.
    pub async fn revocation(&self, caller: &Principal) -> Result<RevocationRecord, ApiError> {
        let keys = [
            self.keys.revoked_token(&caller.token_id),
            self.keys.subject_not_before(&caller.subject),
        ];
        let arguments = keys.map(|key| RedisParameter::Binary(key.into_bytes()));
        let values = self.execute("MGET", arguments).await?;
        let present = |value: Option<&RedisResult>| matches!(value, Some(RedisResult::Binary(_)));
        let subject_not_before = match values.get(1) {
            Some(RedisResult::Binary(bytes)) => Some(
                std::str::from_utf8(bytes)
                    .ok()
                    .and_then(|text| text.parse().ok())
                    .ok_or_else(|| {
                        ApiError::Internal(format!(
                            "the not-before of {} is not a number of seconds",
                            caller.subject
                        ))
                    })?,
            ),
            _ => None,
        };
        Ok(RevocationRecord {
            token_revoked: present(values.first()),
            subject_not_before,
        })
    }

    /// Records `revocation` until its token would expire anyway.
    pub async fn revoke(&self, revocation: &Revocation) -> Result<(), ApiError> {
        let arguments = [
            RedisParameter::Binary(self.keys.revoked_token(&revocation.id).into_bytes()),
            RedisParameter::Binary(b"1".to_vec()),
            RedisParameter::Binary(b"EX".to_vec()),
            RedisParameter::Int64(revocation.ttl_secs),
        ];
        self.execute("SET", arguments).await.map(drop)
    }

    pub async fn claim(&self, scope_key: &str) -> Result<Claim, ApiError> {
        let [record, lock] = self.keys(scope_key);
        let result = self
            .eval(CLAIM, [record, lock], [RedisParameter::Int64(LOCK_MILLIS)])
            .await?;
        match result.first() {
            Some(RedisResult::Binary(bytes)) => {
                let cached: Cached = serde_json::from_slice(bytes)
                    .map_err(|e| ApiError::Internal(format!("cached idempotency record: {e}")))?;
                let stored = StoredResponse {
                    fingerprint: cached.fingerprint,
                    status: cached.status,
                    body: cached.body.into_bytes(),
                };
                Ok(Claim::Recorded(stored, cached.headers))
            }
            Some(RedisResult::Int64(1)) => Ok(Claim::Claimed),
            _ => Ok(Claim::InUse),
        }
    }

    /// Best effort: a failure leaves the lock to expire and the record in Postgres.
    pub async fn finish(
        &self,
        scope_key: &str,
        recorded: Option<(&StoredResponse, &[(String, String)])>,
        ttl_seconds: i64,
    ) {
        let [record, lock] = self.keys(scope_key);
        let value = recorded
            .and_then(|(stored, headers)| {
                serde_json::to_vec(&Cached {
                    fingerprint: stored.fingerprint.clone(),
                    status: stored.status,
                    headers: headers.to_vec(),
                    body: String::from_utf8_lossy(&stored.body).into_owned(),
                })
                .ok()
            })
            .unwrap_or_default();
        let args = [
            RedisParameter::Binary(value),
            RedisParameter::Int64(ttl_seconds),
        ];
        if let Err(e) = self.eval(FINISH, [record, lock], args).await {
            eprintln!("idempotency cache not updated: {e}");
        }
    }

    /// Publishes those of `batch` (in `seq` order) that Redis has not sent yet, and rings their
    /// doorbells, in one round trip: once it has run, every event of the batch is out. Should it
    /// fail, any of them may have gone out: delivery is at-least-once.
    pub async fn publish(&self, channel: &str, batch: &[Envelope]) -> Result<(), ApiError> {
        if batch.is_empty() {
            return Ok(());
        }
        let binary = |text: &str| RedisParameter::Binary(text.as_bytes().to_vec());
        let rung = orchestrator_core::live::doorbells(batch);
        let mut arguments = vec![
            binary(PUBLISH_NEW),
            RedisParameter::Int64(2 + rung.len() as i64),
            binary(channel),
            binary(&self.keys.events_head(None)),
        ];
        for (workspace, _) in &rung {
            arguments.push(binary(&self.keys.events_head(Some(workspace.as_str()))));
        }
        arguments.push(RedisParameter::Int64(batch.len() as i64));
        arguments.extend(batch.iter().map(|event| RedisParameter::Int64(event.seq)));
        for event in batch {
            let payload =
                serde_json::to_vec(event).map_err(|e| ApiError::Internal(e.to_string()))?;
            arguments.push(RedisParameter::Binary(payload));
        }
        arguments.extend(rung.iter().map(|(_, seq)| RedisParameter::Int64(*seq)));
        self.execute("EVAL", arguments).await.map(drop)
    }

    /// What rings when events of `workspace` (of any, with `None`) are published: it changes with
    /// every batch, and says nothing else.
    pub async fn events_head(
        &self,
        workspace: Option<&WorkspaceId>,
    ) -> Result<Option<Vec<u8>>, ApiError> {
        let key = self.keys.events_head(workspace.map(WorkspaceId::as_str));
        let values = self
            .execute("GET", [RedisParameter::Binary(key.into_bytes())])
            .await?;
        Ok(match values.into_iter().next() {
            Some(RedisResult::Binary(bytes)) => Some(bytes),
            _ => None,
        })
    }

    /// The newest `seq` the channel has carried (0 when Redis has none: then nothing is known to
    /// have gone out): every event up to it is out ([`PUBLISH_NEW`]).
    pub async fn published_head(&self) -> Result<i64, ApiError> {
        let head = self.events_head(None).await?;
        Ok(head
            .and_then(|bytes| std::str::from_utf8(&bytes).ok()?.parse().ok())
            .unwrap_or(0))
    }

    async fn eval<const K: usize, const A: usize>(
        &self,
        script: &str,
        keys: [String; K],
        args: [RedisParameter; A],
    ) -> Result<Vec<RedisResult>, ApiError> {
        let mut arguments = vec![
            RedisParameter::Binary(script.as_bytes().to_vec()),
            RedisParameter::Int64(K as i64),
        ];
        arguments.extend(
            keys.into_iter()
                .map(|k| RedisParameter::Binary(k.into_bytes())),
        );
        arguments.extend(args);
        self.execute("EVAL", arguments).await
    }
}

fn unavailable(error: spin_sdk::redis::Error) -> ApiError {
    ApiError::Unavailable(format!("redis: {error:?}"))
}

fn timed_out(what: &str) -> ApiError {
    ApiError::Unavailable(format!("Redis did not answer {what} within {REDIS_WAIT:?}"))
}
