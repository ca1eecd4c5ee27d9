//! The events, live: `GET /api/events/stream`, server-sent events.
//!
//! A stream is the catch-up read repeated: it reads the outbox after its cursor, in `seq` order,
//! so it makes the catch-up read's promise (no gap, nothing twice, across reconnects with
//! `Last-Event-ID`). Between reads it holds no Postgres connection; it watches its workspace's
//! doorbell ([`Doorbell`]) and reads again when that rings.
//!
//! A ring wakes every stream of its workspace at once; those of one instance share one read of the
//! outbox ([`SharedRead`]) instead of each reading the same rows.
//!
//! Writes: each read's events leave as one chunk, one write, and reads are at least a
//! [`orchestrator_edge::live::TICK`] apart, so no write waits on Nagle's algorithm for the ACK of
//! the previous one.

use futures::StreamExt;
use orchestrator_core::ApiError;
use orchestrator_core::auth::Scope;
use orchestrator_core::events::Envelope;
use orchestrator_core::ids::WorkspaceId;
use orchestrator_core::live::{self, KEEP_ALIVE_FRAME, Resume, StreamFilter};
use orchestrator_edge::config::seconds_variable;
use orchestrator_edge::db::Serving;
use orchestrator_edge::live::{Doorbell, TICK, Wake};
use orchestrator_edge::store::events;
use orchestrator_edge::{Config, Context, Reply, Request};
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// How many events one read takes; a full batch is followed by another read at once.
const BATCH: i64 = 500;

/// When a client whose stream ended should reconnect.
const RECONNECT_MILLIS: u64 = 1000;

/// The stream's lifetime and keep-alive interval (Spin variables `events_stream_seconds`,
/// `events_stream_keepalive_seconds`), read once per instance.
struct Timing {
    lifetime: Duration,
    keep_alive: Duration,
}

impl Timing {
    async fn shared() -> Result<&'static Self, ApiError> {
        static SHARED: OnceLock<Timing> = OnceLock::new();
        if let Some(timing) = SHARED.get() {
            return Ok(timing);
        }
        let seconds = async |name| {
            Ok::<_, ApiError>(Duration::from_secs(seconds_variable(name).await? as u64))
        };
        let timing = Self {
            lifetime: seconds("events_stream_seconds").await?,
            keep_alive: seconds("events_stream_keepalive_seconds").await?,
        };
        Ok(SHARED.get_or_init(|| timing))
    }
}

/// `GET /api/events/stream?after_seq=|tail=&types=&subject=` (or `Last-Event-ID`): everything the
/// checks can refuse, and the first read, happen before the `200`, so a bad request or a database
/// that is down still gets its status.
pub async fn open(request: &Request, context: &Context) -> Result<Reply, ApiError> {
    context.caller.require(Scope::SupervisorRead)?;
    let start = live::resume(request.header("last-event-id").as_deref(), &request.query)?;
    let filter = StreamFilter::from_query(&request.query)?;
    let timing = Timing::shared().await?;
    let workspace = context.caller.workspace_id.clone();
    let after_seq = match start {
        Resume::After(seq) => seq,
        Resume::Tail(count) => {
            let db = context.db().await?;
            events::tail_cursor(&db, workspace.as_ref(), count).await?
        }
    };
    let bell = Doorbell::listen(context.config, workspace.as_ref(), TICK).await;
    let now = Instant::now();
    let mut stream = Stream {
        config: context.config,
        workspace,
        filter,
        cursor: after_seq,
        bell,
        ends_at: now + timing.lifetime,
        keep_alive: timing.keep_alive,
        last_write: now,
        ended: false,
        _serving: Serving::start(),
    };
    let first = stream.read(Wake::Look).await?;
    let chunks = futures::stream::once(async move { first.into_bytes().into() })
        .chain(futures::stream::unfold(stream, Stream::next_chunk))
        .boxed_local();
    Ok(Reply::streamed("text/event-stream", chunks)
        .with_header("cache-control", "no-cache")
        // Proxies that buffer responses (nginx) would hold the events back.
        .with_header("x-accel-buffering", "no"))
}

struct Stream {
    config: &'static Config,
    workspace: Option<WorkspaceId>,
    filter: StreamFilter,
    /// The last `seq` read, sent or filtered out.
    cursor: i64,
    bell: Doorbell,
    ends_at: Instant,
    keep_alive: Duration,
    last_write: Instant,
    ended: bool,
    /// The instance keeps its connections for its other requests while a stream is open.
    _serving: Serving,
}

impl Stream {
    /// The next chunk to send: new events, a keep-alive after a quiet interval, or the retry hint
    /// that ends the stream at the end of its lifetime.
    async fn next_chunk(mut self) -> Option<(bytes::Bytes, Self)> {
        if self.ended {
            return None;
        }
        loop {
            let until = self.ends_at.min(self.last_write + self.keep_alive);
            let wake = self.bell.wait(until).await;
            let frame = if wake != Wake::Deadline {
                match self.read(wake).await {
                    Ok(frame) if frame.is_empty() => continue,
                    Ok(frame) => frame,
                    // The client has its 200; a failing database only delays its events. The bell's
                    // fallback look retries.
                    Err(error) => {
                        eprintln!("event stream: {error}");
                        continue;
                    }
                }
            } else if Instant::now() >= self.ends_at {
                self.ended = true;
                live::retry_frame(RECONNECT_MILLIS)
            } else {
                KEEP_ALIVE_FRAME.to_owned()
            };
            self.last_write = Instant::now();
            return Some((frame.into(), self));
        }
    }

    /// The frames of the events committed after the cursor that pass the filter; the cursor moves
    /// past those that do not too, so a narrow filter does not read the same events again.
    async fn read(&mut self, wake: Wake) -> Result<String, ApiError> {
        let ring = match wake {
            Wake::Rang => self.bell.heard().map(<[u8]>::to_vec),
            Wake::Look | Wake::Deadline => None,
        };
        let shared = ring
            .as_deref()
            .and_then(|ring| SharedRead::find(self.workspace.as_ref(), ring, self.cursor));
        let batch = match shared {
            Some(batch) => batch,
            None => {
                let db = orchestrator_edge::db::Db::connect(&self.config.database_url).await?;
                let batch =
                    Rc::new(events::after(&db, self.cursor, self.workspace.as_ref(), BATCH).await?);
                if let Some(ring) = ring {
                    SharedRead::keep(
                        self.workspace.as_ref(),
                        ring,
                        self.cursor,
                        Rc::clone(&batch),
                    );
                }
                batch
            }
        };
        if batch.len() as i64 == BATCH {
            self.bell.look_again();
        } else {
            self.bell.looked();
        }
        let mut frame = String::new();
        for event in batch.iter().filter(|event| event.seq > self.cursor) {
            if self.filter.matches(event) {
                live::push_event_frame(&mut frame, event);
            }
        }
        if let Some(last) = batch.last() {
            self.cursor = self.cursor.max(last.seq);
        }
        Ok(frame)
    }
}

/// The last read of the outbox a ring caused in this instance, per workspace (`None`: all).
///
/// A read begun after a ring was heard sees everything that ring announces (it rings only once its
/// events are committed and numbered), and, being a catch-up read, every event after its cursor up
/// to the last it returned. So a stream that heard the same ring, with a cursor at or past that
/// read's, may take the read's events after its own cursor instead of reading them again.
struct SharedRead {
    ring: Vec<u8>,
    after: i64,
    events: Rc<Vec<Envelope>>,
}

thread_local! {
    static LAST_READS: RefCell<HashMap<Option<WorkspaceId>, SharedRead>> = RefCell::new(HashMap::new());
}

impl SharedRead {
    fn find(
        workspace: Option<&WorkspaceId>,
        ring: &[u8],
        cursor: i64,
    ) -> Option<Rc<Vec<Envelope>>> {
        LAST_READS.with_borrow(|reads| {
            let read = reads.get(&workspace.cloned())?;
            (read.ring == ring && read.after <= cursor).then(|| Rc::clone(&read.events))
        })
    }

    fn keep(workspace: Option<&WorkspaceId>, ring: Vec<u8>, after: i64, events: Rc<Vec<Envelope>>) {
        LAST_READS.with_borrow_mut(|reads| {
            reads.insert(
                workspace.cloned(),
                Self {
                    ring,
                    after,
                    events,
                },
            );
        });
    }
}
