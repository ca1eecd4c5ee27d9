//! Serving a WASIp3 component from reused instances, as Spin 4.1's HTTP trigger does
//! (`crates/trigger-http`, through wasmtime-wasi-http's `handler::ProxyHandler`).
//!
//! An instance takes up to [`InstanceReuse::max_requests`] requests in its life, up to
//! [`InstanceReuse::max_concurrent`] of them at once, and is dropped once it has been idle for
//! [`InstanceReuse::idle_timeout`]; each bound may be a range, drawn anew for every instance.
//! Two requests can therefore run inside one instance at the same time, and when one of them
//! traps, the instance — and every request still inside it — ends with it (each gets an empty
//! 500), exactly as under `spin up`. `1` for both counts gives every request a fresh instance.

use crate::state::{ComponentContext, HostState, Services, Usage};
use std::future::Future;
use std::ops::RangeInclusive;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use wasmtime::component::GuestTaskId;
use wasmtime::{Engine, Store, StoreContextMut};
use wasmtime_wasi_http::WasiHttpView;
use wasmtime_wasi_http::handler::{
    HandlerState, Instance, Proxy, ShouldAccept, WorkerExpiration, WorkerState, WorkerStatus,
};
use wasmtime_wasi_http::p3::bindings::ServicePre;

/// How instances are reused: Spin's `--max-instance-reuse-count`,
/// `--max-instance-concurrent-reuse-count`, `--idle-instance-timeout` and `--request-timeout`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceReuse {
    pub max_requests: RangeInclusive<usize>,
    pub max_concurrent: RangeInclusive<usize>,
    pub idle_timeout: RangeInclusive<Duration>,
    /// Off by default, as in Spin.
    pub request_timeout: Option<RangeInclusive<Duration>>,
}

impl Default for InstanceReuse {
    /// Spin 4.1's defaults for a WASIp3 component.
    fn default() -> Self {
        Self {
            max_requests: 128..=128,
            max_concurrent: 16..=16,
            idle_timeout: Duration::from_secs(1)..=Duration::from_secs(1),
            request_timeout: None,
        }
    }
}

impl InstanceReuse {
    /// A fresh instance for every request.
    pub fn off() -> Self {
        Self {
            max_requests: 1..=1,
            max_concurrent: 1..=1,
            ..Self::default()
        }
    }
}

/// A count as Spin's flags take it: `N` or `A..B` (a range drawn from per instance).
pub fn parse_count(raw: &str) -> anyhow::Result<RangeInclusive<usize>> {
    parse_range(raw, |part| {
        part.parse::<usize>()
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| anyhow::anyhow!("{part:?} is not a positive number"))
    })
}

/// A duration as Spin's flags take it: `500ms`, `1s`, `2m`, or a range of them (`1s..5s`).
pub fn parse_duration(raw: &str) -> anyhow::Result<RangeInclusive<Duration>> {
    parse_range(raw, |part| {
        let (number, unit) = part.split_at(
            part.find(|c: char| !c.is_ascii_digit())
                .unwrap_or(part.len()),
        );
        let n: u64 = number
            .parse()
            .map_err(|_| anyhow::anyhow!("{part:?} is not a duration such as 500ms or 2s"))?;
        Ok(match unit {
            "ms" => Duration::from_millis(n),
            "s" | "" => Duration::from_secs(n),
            "m" => Duration::from_secs(n * 60),
            _ => anyhow::bail!("{part:?} is not a duration such as 500ms or 2s"),
        })
    })
}

fn parse_range<T: PartialOrd + Copy>(
    raw: &str,
    one: impl Fn(&str) -> anyhow::Result<T>,
) -> anyhow::Result<RangeInclusive<T>> {
    let (low, high) = match raw.split_once("..") {
        Some((low, high)) => (one(low.trim())?, one(high.trim())?),
        None => {
            let n = one(raw.trim())?;
            (n, n)
        }
    };
    anyhow::ensure!(low <= high, "{raw:?}: the range is empty");
    Ok(low..=high)
}

fn draw_count(range: &RangeInclusive<usize>) -> usize {
    fastrand::usize(range.clone())
}

fn draw_duration(range: &RangeInclusive<Duration>) -> Duration {
    let (low, high) = (
        range.start().as_nanos() as u64,
        range.end().as_nanos() as u64,
    );
    Duration::from_nanos(fastrand::u64(low..=high))
}

/// One live instance, as the request log names it.
#[derive(Debug, Default)]
pub struct InstanceInfo {
    pub id: u64,
    /// Requests it has taken so far.
    pub served: AtomicU32,
    /// What its requests asked of Postgres and Redis, all together.
    pub usage: Arc<Usage>,
}

/// What the host has seen of a component's instances, for tests and the bench.
#[derive(Debug, Default)]
pub struct InstanceStats {
    /// Instances made so far.
    pub started: AtomicU64,
    /// The most linear memory any one instance has held, in bytes.
    pub largest_memory: Arc<AtomicUsize>,
}

/// Watches an instance's linear memories grow, keeping [`InstanceStats::largest_memory`].
pub(crate) struct MemoryWatch {
    total: usize,
    largest: Arc<AtomicUsize>,
}

impl MemoryWatch {
    pub(crate) fn new(largest: Arc<AtomicUsize>) -> Self {
        Self { total: 0, largest }
    }
}

impl wasmtime::ResourceLimiter for MemoryWatch {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        self.total += desired - current;
        self.largest.fetch_max(self.total, Ordering::Relaxed);
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        _desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(true)
    }
}

/// What the host learns about one request once an instance has taken it.
#[derive(Debug, Default)]
pub struct RequestRecord {
    taken: OnceLock<Taken>,
}

#[derive(Debug)]
struct Taken {
    instance: Arc<InstanceInfo>,
    /// This request's number in its instance's life (1 for the first).
    number: u32,
    postgres_before: u32,
    redis_before: u32,
}

impl RequestRecord {
    /// `instance=… request=n/… postgres=… redis=…` for the request log: the counts are the
    /// instance's during this request, exact when nothing else ran in it meanwhile.
    pub fn describe(&self) -> String {
        match self.taken.get() {
            Some(taken) => {
                let usage = &taken.instance.usage;
                format!(
                    "instance={} request={} postgres={} redis={}",
                    taken.instance.id,
                    taken.number,
                    usage.postgres_statements.load(Ordering::Relaxed) - taken.postgres_before,
                    usage.redis_commands.load(Ordering::Relaxed) - taken.redis_before,
                )
            }
            None => "instance=none".into(),
        }
    }
}

/// Makes instances of one component for the [`wasmtime_wasi_http::handler::ProxyHandler`].
pub(crate) struct ComponentInstances {
    pub(crate) engine: Engine,
    pub(crate) pre: ServicePre<HostState>,
    pub(crate) context: Arc<ComponentContext>,
    pub(crate) services: Arc<Services>,
    /// The pooling allocator's instance slots, shared by every component.
    pub(crate) slots: Arc<Semaphore>,
    pub(crate) reuse: InstanceReuse,
    /// Numbers instances across the app's components.
    pub(crate) next_id: Arc<AtomicU64>,
    pub(crate) stats: InstanceStats,
}

impl ComponentInstances {
    /// A store for one instance of this component.
    pub(crate) fn store(&self, usage: Arc<Usage>) -> Store<HostState> {
        let watch = MemoryWatch::new(self.stats.largest_memory.clone());
        let mut store = Store::new(
            &self.engine,
            HostState::new(self.context.clone(), self.services.clone(), usage, watch),
        );
        store.limiter(|state| &mut state.memory);
        store
    }
}

impl HandlerState for ComponentInstances {
    type StoreData = HostState;
    type WorkerExpiration = Expiration;
    type WorkerState = Worker;

    async fn instantiate(&self) -> wasmtime::Result<Instance<HostState, Expiration, Worker>> {
        // Beyond the allocator's slots, a new instance waits for one to be given back.
        let slot = self
            .slots
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| wasmtime::format_err!("the host is stopping"))?;
        self.stats.started.fetch_add(1, Ordering::Relaxed);
        let info = Arc::new(InstanceInfo {
            id: self.next_id.fetch_add(1, Ordering::Relaxed) + 1,
            ..InstanceInfo::default()
        });
        let mut store = self.store(info.usage.clone());
        let service = self.pre.instantiate_async(&mut store).await?;
        let request_timeout = self.reuse.request_timeout.as_ref().map(draw_duration);
        Ok(Instance {
            store,
            proxy: Proxy::P3(service),
            view: http_view,
            expiration: Expiration {
                idle_timeout: draw_duration(&self.reuse.idle_timeout),
                request_timeout,
                sleep: Box::pin(tokio::time::sleep(Duration::ZERO)),
                deadline: None,
            },
            state: Worker {
                component: self.context.id.clone(),
                info,
                max_requests: draw_count(&self.reuse.max_requests),
                max_concurrent: draw_count(&self.reuse.max_concurrent),
                request_timeout,
                _slot: slot,
            },
        })
    }
}

fn http_view(state: &mut HostState) -> wasmtime_wasi_http::WasiHttpCtxView<'_> {
    state.http()
}

/// An instance's limits, and its allocator slot (given back when it is dropped).
pub(crate) struct Worker {
    component: String,
    info: Arc<InstanceInfo>,
    max_requests: usize,
    max_concurrent: usize,
    request_timeout: Option<Duration>,
    _slot: OwnedSemaphorePermit,
}

impl WorkerState for Worker {
    type StoreData = HostState;
    type RequestData = Arc<RequestRecord>;

    fn should_accept_request(&self, concurrent: usize, total: usize) -> ShouldAccept {
        if total >= self.max_requests {
            ShouldAccept::Never
        } else if concurrent >= self.max_concurrent {
            ShouldAccept::No
        } else {
            ShouldAccept::Yes
        }
    }

    fn on_request_start(
        &self,
        _store: StoreContextMut<'_, HostState>,
        record: Arc<RequestRecord>,
        _task: GuestTaskId,
    ) -> Pin<Box<dyn Future<Output = ()> + Send + Sync + 'static>> {
        let usage = &self.info.usage;
        let _ = record.taken.set(Taken {
            instance: self.info.clone(),
            number: self.info.served.fetch_add(1, Ordering::Relaxed) + 1,
            postgres_before: usage.postgres_statements.load(Ordering::Relaxed),
            redis_before: usage.redis_commands.load(Ordering::Relaxed),
        });
        match self.request_timeout {
            Some(timeout) => Box::pin(tokio::time::sleep(timeout)),
            None => Box::pin(std::future::pending()),
        }
    }

    fn drop(&self, store: Store<HostState>, result: wasmtime::Result<()>) {
        if let Err(e) = result {
            tracing::error!(
                "component {:?}, instance {}: {e:#}",
                self.component,
                self.info.id
            );
        }
        // The store goes before the slot, so the allocator has the slot back when it is reused.
        drop(store);
    }
}

/// When an instance is dropped: idle for its idle timeout, or (with a request timeout) busy
/// for longer than that — Spin's `HttpWorkerExpiration`.
pub(crate) struct Expiration {
    idle_timeout: Duration,
    request_timeout: Option<Duration>,
    sleep: Pin<Box<tokio::time::Sleep>>,
    deadline: Option<Instant>,
}

impl WorkerExpiration for Expiration {
    fn poll(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        status: WorkerStatus,
        start: Instant,
    ) -> Poll<()> {
        let timeout = match status {
            WorkerStatus::Idle => Some(self.idle_timeout),
            WorkerStatus::Requests | WorkerStatus::PostReturn => self.request_timeout,
        };
        let Some(deadline) = timeout.and_then(|timeout| start.checked_add(timeout)) else {
            return Poll::Pending;
        };
        if self.deadline != Some(deadline) {
            self.deadline = Some(deadline);
            self.sleep.as_mut().reset(deadline.into());
        }
        self.sleep.as_mut().poll(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_durations_parse_as_spins_flags_do() {
        assert_eq!(parse_count("128").unwrap(), 128..=128);
        assert_eq!(parse_count("1..8").unwrap(), 1..=8);
        assert!(parse_count("0").is_err());
        assert!(parse_count("8..1").is_err());
        assert_eq!(
            parse_duration("500ms").unwrap(),
            Duration::from_millis(500)..=Duration::from_millis(500)
        );
        assert_eq!(
            parse_duration("1s..2m").unwrap(),
            Duration::from_secs(1)..=Duration::from_secs(120)
        );
        assert!(parse_duration("soon").is_err());
    }

    #[test]
    fn spins_defaults_reuse_an_instance_for_128_requests_16_at_once() {
        let reuse = InstanceReuse::default();
        assert_eq!(
            (reuse.max_requests, reuse.max_concurrent),
            (128..=128, 16..=16)
        );
        assert_eq!(
            reuse.idle_timeout,
            Duration::from_secs(1)..=Duration::from_secs(1)
        );
        assert_eq!(reuse.request_timeout, None);
        let worker_limits = |concurrent, total| {
            let worker = Worker {
                component: "c".into(),
                info: Arc::default(),
                max_requests: 128,
                max_concurrent: 16,
                request_timeout: None,
                _slot: Arc::new(Semaphore::new(1)).try_acquire_owned().unwrap(),
            };
            matches!(
                worker.should_accept_request(concurrent, total),
                ShouldAccept::Yes
            )
        };
        assert!(worker_limits(15, 127));
        assert!(!worker_limits(16, 10));
        assert!(!worker_limits(0, 128));
    }
}
