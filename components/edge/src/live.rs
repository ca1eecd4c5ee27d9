//! Requests held open until something happens: the doorbell they watch, and waiting reads.
//!
//! A component cannot SUBSCRIBE through `spin:redis`, and a live read that polled Postgres would
//! cost the database a query per tick per open request. So every batch of published events also
//! sets a Redis key per workspace and one for all ([`Cache::publish`]); a live read polls that key
//! on one Redis connection it keeps — a GET every [`TICK`] for a stream, every [`WAIT_TICK`] for a
//! waiting read, shared by the live reads of an instance — and looks in Postgres only when the key
//! changed, or every [`FALLBACK`] anyway (every [`FALLBACK_WITHOUT_REDIS`] while Redis is out, when
//! nothing rings).

use crate::Context;
use crate::cache::Cache;
use crate::config::Config;
use crate::db::Db;
use crate::reply::Reply;
use orchestrator_core::ApiError;
use orchestrator_core::ids::WorkspaceId;
use orchestrator_core::live::WaitingRead;
use std::cell::RefCell;
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// How often an event stream asks Redis whether its doorbell rang. Longer than the 40 ms a client
/// may delay its ACK, so that a stream's writes, at most one per tick, never wait on Nagle's
/// algorithm for the ACK of the one before (Spin sets no `TCP_NODELAY`).
pub const TICK: Duration = Duration::from_millis(50);

/// The same for a waiting read, whose one answer carries its length (no Nagle wait): shorter, so
/// it answers well within 100 ms of the change.
pub const WAIT_TICK: Duration = Duration::from_millis(20);

/// How often a live read looks in Postgres when nothing rang, while Redis answers: every publish
/// rings, so only events whose writer could not reach Redis (or died before publishing) and that
/// no later publish announced are found this way.
pub const FALLBACK: Duration = Duration::from_secs(10);

/// The same while Redis cannot be reached, when nothing can ring.
pub const FALLBACK_WITHOUT_REDIS: Duration = Duration::from_secs(2);

/// Why a [`Doorbell::wait`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wake {
    /// The bell rang: everything it announces is committed and numbered.
    Rang,
    /// Time to look anyway, or the caller asked to look again.
    Look,
    /// The caller's deadline.
    Deadline,
}

/// The doorbell of one workspace (of all, with `None`).
pub struct Doorbell {
    config: &'static Config,
    workspace: Option<WorkspaceId>,
    /// `None` while Redis cannot be reached: then only [`FALLBACK_WITHOUT_REDIS`] looks happen.
    cache: Option<Cache>,
    /// When to try Redis again while it cannot be reached: not every tick, which would open a
    /// connection (or wait on one that hangs) twenty times a second.
    reconnect_at: Instant,
    /// The value last heard, so a change is a ring.
    heard: Option<Vec<u8>>,
    /// When to look in Postgres whatever the bell says.
    look_at: Instant,
    /// How often to ask Redis.
    tick: Duration,
}

impl Doorbell {
    /// Starts listening. The first [`Doorbell::wait`] returns at once: whatever happened before
    /// the bell was first heard rang for nobody, so the caller looks once after listening starts.
    pub async fn listen(
        config: &'static Config,
        workspace: Option<&WorkspaceId>,
        tick: Duration,
    ) -> Self {
        let mut bell = Self {
            config,
            workspace: workspace.cloned(),
            cache: None,
            heard: None,
            look_at: Instant::now(),
            reconnect_at: Instant::now(),
            tick,
        };
        bell.heard = bell.hear().await;
        bell
    }

    /// Have the next [`Doorbell::wait`] return at once (the last look found a full batch).
    pub fn look_again(&mut self) {
        self.look_at = Instant::now();
    }

    /// The caller just looked: the next fallback look is due a fallback interval from now.
    pub fn looked(&mut self) {
        let interval = if self.cache.is_some() {
            FALLBACK
        } else {
            FALLBACK_WITHOUT_REDIS
        };
        self.look_at = Instant::now() + interval;
    }

    /// What the bell last said: two looks after the same ring may share what they read.
    pub fn heard(&self) -> Option<&[u8]> {
        self.heard.as_deref()
    }

    /// Waits until the bell rings, it is time to look anyway, or `until`.
    pub async fn wait(&mut self, until: Instant) -> Wake {
        loop {
            let now = Instant::now();
            if now >= self.look_at {
                self.looked();
                return Wake::Look;
            }
            if now >= until {
                return Wake::Deadline;
            }
            spin_sdk::time::sleep(self.tick.min(until - now).min(self.look_at - now)).await;
            let head = self.hear().await;
            if head.is_some() && head != self.heard {
                self.heard = head;
                self.looked();
                return Wake::Rang;
            }
        }
    }

    /// The bell's value now; `None` if it never rang or Redis is out (tried again every
    /// [`FALLBACK_WITHOUT_REDIS`]). The live reads of one instance that watch one bell share what it said within half a
    /// tick, so an instance asks Redis about a bell about twice a tick however many of its requests
    /// wait on it, and a ring is heard at most a tick and a half after it rang.
    async fn hear(&mut self) -> Option<Vec<u8>> {
        if let Some(fresh) = LAST_HEARD.with_borrow(|heard| {
            heard
                .get(&self.workspace)
                .filter(|(at, _)| at.elapsed() < self.tick / 2)
                .map(|(_, value)| value.clone())
        }) {
            return fresh;
        }
        if self.cache.is_none() {
            if Instant::now() < self.reconnect_at {
                return None;
            }
            self.reconnect_at = Instant::now() + FALLBACK_WITHOUT_REDIS;
            self.cache = Cache::connect(&self.config.redis_url, &self.config.database_url)
                .await
                .ok();
        }
        let cache = self.cache.as_ref()?;
        match cache.events_head(self.workspace.as_ref()).await {
            Ok(head) => {
                LAST_HEARD.with_borrow_mut(|heard| {
                    heard.insert(self.workspace.clone(), (Instant::now(), head.clone()));
                });
                head
            }
            Err(_) => {
                self.cache = None;
                None
            }
        }
    }
}

/// When a bell was last asked, and what it said then.
type Heard = (Instant, Option<Vec<u8>>);

thread_local! {
    /// What each bell (of a workspace, or of all with `None`) said when this instance last asked.
    static LAST_HEARD: RefCell<HashMap<Option<WorkspaceId>, Heard>> = RefCell::new(HashMap::new());
}

/// What a waiting read reads: the object's version, where it lives, and the reply showing it.
pub struct Versioned {
    pub version: i64,
    pub workspace: WorkspaceId,
    pub reply: Reply,
}

/// Answers a read that may wait ([`WaitingRead`]): at once when the object is not the one the
/// client has, else as soon as it changes, else `304 Not Modified` when the wait is over. No
/// connection is held while waiting: the object is read again when its workspace's bell rings.
pub async fn read_or_wait(
    context: &Context,
    waiting: Option<WaitingRead>,
    read: impl AsyncFn(&Db) -> Result<Versioned, ApiError>,
) -> Result<Reply, ApiError> {
    let until =
        Instant::now() + Duration::from_millis(waiting.as_ref().map_or(0, |w| w.wait_millis));
    let mut current = read(&context.db().await?).await?;
    let Some(waiting) = waiting else {
        return Ok(current.reply);
    };
    if !waiting.unchanged(current.version) {
        return Ok(current.reply);
    }
    if Instant::now() < until {
        let mut bell = Doorbell::listen(context.config, Some(&current.workspace), WAIT_TICK).await;
        while bell.wait(until).await != Wake::Deadline {
            current = read(&context.db().await?).await?;
            if !waiting.unchanged(current.version) {
                return Ok(current.reply);
            }
        }
    }
    Ok(Reply::not_modified(current.version))
}
