//! The test harness: [`spawn_app`] serves `spin.toml` through the host on a
//! free port, against a database of its own that is dropped afterwards, and
//! the requests, tokens, reads of the database and assertions that several
//! test files share.

pub mod processes;
pub mod sse;

use futures_util::StreamExt;
use orchestrator_core::auth::{Claims, Scope, encode_hs256};
use reqwest::{Method, RequestBuilder, Response};
use serde_json::{Value, json};
use spin_host::{App, AppOptions, Running};
use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{OnceCell, OwnedSemaphorePermit, Semaphore};

pub const SERVER: &str = "postgres://postgres@127.0.0.1:5432";
pub const REDIS: &str = "redis://127.0.0.1:6379";
pub const SECRET: &str = "test-secret-that-is-at-least-32-bytes-long!";
/// The workspace confined tokens ([`member`]) work in.
pub const WORKSPACE: &str = "ws_a";
/// Another workspace, for what must hold across workspaces.
pub const OTHER_WORKSPACE: &str = "ws_b";
/// The longest any request of the harness's client may take: a deadlock fails its test instead of
/// hanging the suite.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Pooled Postgres connections each app may open.
const POOL_SIZE: usize = 8;
/// Connections of the shared server left to everything but the tests: migrations, dropping
/// databases, `psql`, a `scripts/up` running alongside.
const CONNECTIONS_LEFT_OVER: u32 = 20;
/// How long a test waits for its share of connections before failing.
const CONNECTIONS_WAIT: Duration = Duration::from_secs(120);

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A migrated database that exists for one test.
pub struct TestDatabase {
    pub name: String,
    pub url: String,
}

impl TestDatabase {
    pub async fn create() -> anyhow::Result<Self> {
        let name = format!("test_{}", unique());
        // As under `spin up`, a URL without `sslmode` would negotiate TLS and verify the certificate.
        let url = format!("{SERVER}/{name}?sslmode=disable");
        let output = tokio::process::Command::new(repo_root().join("scripts/migrate"))
            .args(["--database-url", &url])
            .output()
            .await?;
        anyhow::ensure!(
            output.status.success(),
            "scripts/migrate failed for {url}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        Ok(Self { name, url })
    }

    /// A connection of its own, counted against the tests' share of the server's connections.
    pub async fn client(&self) -> anyhow::Result<DbClient> {
        let permit = connections(1).await;
        let (client, connection) =
            tokio_postgres::connect(&self.url, tokio_postgres::NoTls).await?;
        tokio::spawn(connection);
        Ok(DbClient {
            client,
            _permit: permit,
        })
    }
}

/// A Postgres connection that holds its share of [`connections`] while open.
pub struct DbClient {
    client: tokio_postgres::Client,
    _permit: OwnedSemaphorePermit,
}

impl DbClient {
    /// Every row of the `events` table (the outbox), in `seq` order.
    pub async fn events(&self) -> Vec<StoredEvent> {
        let rows = self
            .client
            .query(
                "SELECT id::text, seq, type, subject_id, actor, data::text, published_at IS NOT NULL \
                 FROM events ORDER BY seq",
                &[],
            )
            .await
            .unwrap();
        rows.iter()
            .map(|row| StoredEvent {
                id: row.get(0),
                seq: row.get(1),
                kind: row.get(2),
                subject: row.get(3),
                actor: row.get(4),
                data: serde_json::from_str(row.get::<_, &str>(5)).unwrap(),
                published: row.get(6),
            })
            .collect()
    }
}

impl std::ops::Deref for DbClient {
    type Target = tokio_postgres::Client;
    fn deref(&self) -> &Self::Target {
        &self.client
    }
}

impl std::ops::DerefMut for DbClient {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.client
    }
}

/// Takes `count` of the connections the tests of this process may hold at once: what the shared
/// server allows (`max_connections` less its reserved ones) less [`CONNECTIONS_LEFT_OVER`], so that
/// however many tests run in parallel, none is refused a connection.
async fn connections(count: u32) -> OwnedSemaphorePermit {
    static BUDGET: OnceCell<Arc<Semaphore>> = OnceCell::const_new();
    let budget = BUDGET
        .get_or_init(async || {
            let (client, connection) =
                tokio_postgres::connect(&format!("{SERVER}/postgres"), tokio_postgres::NoTls)
                    .await
                    .expect("the shared Postgres");
            let connection = tokio::spawn(connection);
            let allowed: i32 = client
                .query_one(
                    "SELECT current_setting('max_connections')::int \
                     - current_setting('superuser_reserved_connections')::int",
                    &[],
                )
                .await
                .expect("max_connections")
                .get(0);
            drop(client);
            let _ = connection.await;
            let budget = (allowed as u32).saturating_sub(CONNECTIONS_LEFT_OVER);
            assert!(
                budget as usize >= 2 * POOL_SIZE,
                "max_connections leaves the tests only {budget} connections"
            );
            Arc::new(Semaphore::new(budget as usize))
        })
        .await;
    let waiting = Arc::clone(budget).acquire_many_owned(count);
    tokio::time::timeout(CONNECTIONS_WAIT, waiting)
        .await
        .unwrap_or_else(|_| {
            panic!("no {count} Postgres connections free within {CONNECTIONS_WAIT:?}")
        })
        .expect("the budget is never closed")
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let name = self.name.clone();
        let url = self.url.clone();
        // Drop runs outside async context; a thread of its own may block.
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(async {
                let (client, connection) =
                    tokio_postgres::connect(&format!("{SERVER}/postgres"), tokio_postgres::NoTls)
                        .await?;
                tokio::spawn(connection);
                client
                    .batch_execute(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                    .await?;
                // The app's Redis keys (idempotency records, doorbells) go with its database.
                forget_redis_keys(&url).await;
                anyhow::Ok(())
            })
        })
        .join();
    }
}

/// Deletes the Redis keys of the app whose database URL is `database_url` (they are namespaced by
/// it): what a test leaves there goes with its database. Best effort: Redis may be down.
pub async fn forget_redis_keys(database_url: &str) {
    let pattern = orchestrator_core::keyspace::Keyspace::for_database(database_url).every_key();
    let forget = async {
        let mut redis = redis::Client::open(REDIS)?
            .get_multiplexed_async_connection()
            .await?;
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(&pattern)
            .query_async(&mut redis)
            .await?;
        if !keys.is_empty() {
            redis::cmd("DEL")
                .arg(keys)
                .query_async::<()>(&mut redis)
                .await?;
        }
        redis::RedisResult::Ok(())
    };
    let _ = forget.await;
}

/// `value` percent-encoded for a query string (RFC 3986 unreserved characters kept), so tests can
/// pass URLs and SQL to the probe component.
pub fn percent_encoded(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A process-wide unique suffix for names (databases, channels, keys).
pub fn unique() -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!(
        "{}_{}_{nanos}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

pub struct TestApp {
    pub address: String,
    /// Shared with any app [`spawn_app_on`] serves on it; dropped with the last.
    pub db: Arc<TestDatabase>,
    /// The Redis channel this app publishes its events on.
    pub events_channel: String,
    pub http: reqwest::Client,
    _running: Running,
    /// The connections its pool may open, taken from [`connections`] for as long as it serves.
    _connections: OwnedSemaphorePermit,
}

/// Serves the app for one test with its own database.
pub async fn spawn_app() -> TestApp {
    spawn_app_with(|options| options).await
}

/// Like [`spawn_app`], with extra variable overrides.
pub async fn spawn_app_with(configure: impl FnOnce(AppOptions) -> AppOptions) -> TestApp {
    let db = TestDatabase::create().await.expect("test database");
    spawn_app_on(&Arc::new(db), configure).await
}

/// Serves a further app on an existing database (as a second instance of the
/// service would), with its own events channel unless `configure` sets one.
pub async fn spawn_app_on(
    db: &Arc<TestDatabase>,
    configure: impl FnOnce(AppOptions) -> AppOptions,
) -> TestApp {
    let mut options = AppOptions::new(repo_root().join("spin.toml"))
        .variable("database_url", &db.url)
        .variable("jwt_secret", SECRET)
        .variable("events_channel", format!("test.events.{}", unique()));
    options.use_environment = false;
    options.max_instances = 64;
    // Instances are reused as Spin reuses them; `TEST_INSTANCE_REUSE=off scripts/test` gives every
    // request a fresh one instead.
    if std::env::var("TEST_INSTANCE_REUSE").as_deref() == Ok("off") {
        options.reuse = spin_host::InstanceReuse::off();
    }
    options.postgres_pool_size = POOL_SIZE;
    let options = configure(options);
    let connections = connections(options.postgres_pool_size as u32).await;
    let events_channel = options.variables["events_channel"].clone();
    let app = App::load(&options).expect("the app loads (are the components built?)");
    let running = app
        .serve("127.0.0.1:0".parse().unwrap(), false)
        .await
        .expect("serve");
    TestApp {
        address: format!("http://{}", running.addr),
        db: Arc::clone(db),
        events_channel,
        http: client(),
        _running: running,
        _connections: connections,
    }
}

/// An HTTP client whose every request is bounded by [`REQUEST_TIMEOUT`].
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .build()
        .expect("an HTTP client")
}

/// Points the app at a port where no Redis listens.
pub fn without_redis(options: AppOptions) -> AppOptions {
    options
        .variable("redis_url", "redis://127.0.0.1:1")
        .variable("redis_host", "127.0.0.1:1")
}

/// Points the app at a port where no Postgres listens.
pub fn without_postgres(options: AppOptions) -> AppOptions {
    options
        .variable("database_url", "postgres://postgres@127.0.0.1:1/none")
        .variable("database_host", "127.0.0.1:1")
}

/// A token with the given scopes, for `sub` "tester", valid for an hour.
pub fn token(scopes: &[Scope], workspace: Option<&str>) -> String {
    token_for("tester", scopes, workspace)
}

/// A token with the given scopes for `sub`, valid for an hour.
pub fn token_for(sub: &str, scopes: &[Scope], workspace: Option<&str>) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    sign(Claims {
        sub: sub.into(),
        exp: now + 3600,
        iat: Some(now),
        scopes: scopes.iter().map(|s| s.as_str().to_owned()).collect(),
        workspace_id: workspace.map(|w| w.parse().expect("workspace id")),
        ..Default::default()
    })
}

/// A token for everything in [`WORKSPACE`].
pub fn member() -> String {
    token(&all_scopes(), Some(WORKSPACE))
}

/// A token that may read and change workers, in `workspace` if given.
pub fn supervisor_writer(workspace: Option<&str>) -> String {
    token(&[Scope::SupervisorRead, Scope::SupervisorWrite], workspace)
}

/// An operator token with every scope but `scope`: what a 403 needs.
pub fn lacking(scope: Scope) -> String {
    let others: Vec<Scope> = all_scopes().into_iter().filter(|s| *s != scope).collect();
    token(&others, None)
}

pub fn sign(claims: Claims) -> String {
    encode_hs256(&claims, SECRET.as_bytes()).expect("token")
}

pub fn all_scopes() -> Vec<Scope> {
    Scope::ALL.to_vec()
}

impl TestApp {
    /// The host serving this app, for what a test observes of it (its instances).
    pub fn host(&self) -> &App {
        &self._running.app
    }

    pub fn request(&self, method: Method, path: &str, token: Option<&str>) -> RequestBuilder {
        let request = self.http.request(method, format!("{}{path}", self.address));
        match token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }

    pub async fn get(&self, path: &str, token: &str) -> Response {
        self.request(Method::GET, path, Some(token))
            .send()
            .await
            .expect("request")
    }

    /// GETs `path`, asserting 200, and returns the JSON body.
    pub async fn get_ok(&self, path: &str, token: &str) -> Value {
        let (status, body) = parts(self.get(path, token).await).await;
        assert_eq!(status, 200, "{path}: {body}");
        body
    }

    /// A request without a token, as a client that has none sends it.
    pub async fn send_anonymous(&self, method: Method, path: &str) -> Response {
        self.request(method, path, None)
            .send()
            .await
            .expect("request")
    }

    /// POSTs `body` as JSON.
    pub async fn post(&self, path: &str, token: &str, body: Value) -> Response {
        self.post_optional(path, token, Some(body)).await
    }

    /// POSTs `body` as JSON, or an empty body for `None`.
    pub async fn post_optional(&self, path: &str, token: &str, body: Option<Value>) -> Response {
        let request = self.request(Method::POST, path, Some(token));
        with_json(request, body).send().await.expect("request")
    }

    /// Like [`Self::post_optional`], with one more header: `If-Match`, `Idempotency-Key`, ….
    pub async fn post_with(
        &self,
        path: &str,
        token: &str,
        (name, value): (&str, &str),
        body: Option<Value>,
    ) -> Response {
        let request = self.request(Method::POST, path, Some(token));
        let request = with_json(request, body).header(name, value);
        request.send().await.expect("request")
    }

    /// POSTs `body` verbatim as `content_type`: what JSON helpers cannot send.
    pub async fn post_raw(
        &self,
        path: &str,
        token: Option<&str>,
        content_type: &str,
        body: &str,
    ) -> Response {
        self.request(Method::POST, path, token)
            .header("content-type", content_type)
            .body(body.to_owned())
            .send()
            .await
            .expect("request")
    }

    /// Asserts that `method path` with `body` is refused without a token (401) and with a token
    /// that has every scope but `scope` (403).
    pub async fn assert_needs_scope(&self, method: Method, path: &str, scope: Scope, body: &Value) {
        let anonymous = self.request(method.clone(), path, None).json(body);
        let response = anonymous.send().await.expect("request");
        assert_error(response, 401, "UNAUTHENTICATED").await;
        let lacking = self.request(method, path, Some(&lacking(scope))).json(body);
        let response = lacking.send().await.expect("request");
        assert_error(response, 403, "FORBIDDEN").await;
    }

    /// Registers worker `id` in `workspace` with an operator token; asserts 201 and returns it.
    pub async fn register_worker(&self, id: &str, workspace: &str) -> Value {
        let body = json!({"id": id, "workspace_id": workspace});
        let response = self
            .post("/api/supervisor/workers", &supervisor_writer(None), body)
            .await;
        let (status, worker) = parts(response).await;
        assert_eq!(status, 201, "{worker}");
        worker
    }

    /// Moves worker `id` by `action` (`start`, `pause`, …) with an operator token, with `reason`
    /// as the body if given and none otherwise; asserts 200 and returns the worker.
    pub async fn move_worker(&self, id: &str, action: &str, reason: Option<&str>) -> Value {
        let path = format!("/api/supervisor/workers/{id}/{action}");
        let body = reason.map(|reason| json!({ "reason": reason }));
        let response = self
            .post_optional(&path, &supervisor_writer(None), body)
            .await;
        let (status, worker) = parts(response).await;
        assert_eq!(status, 200, "{action} {id}: {worker}");
        worker
    }

    /// Submits a job; asserts 201 and returns it.
    pub async fn submit_job(&self, token: &str, body: Value) -> Value {
        let (status, job) = parts(self.post("/api/jobs/submit", token, body).await).await;
        assert_eq!(status, 201, "{job}");
        job
    }

    /// Submits a job for 3 workers at `depth` under `parent` as a [`member`]; returns its id.
    pub async fn submit_at(&self, depth: i64, parent: Option<&str>) -> String {
        let body = json!({"task_description": "t", "worker_count": 3, "depth": depth, "parent_job_id": parent});
        let job = self.submit_job(&member(), body).await;
        job["id"].as_str().unwrap().to_owned()
    }

    /// A job as a [`member`] reads it.
    pub async fn job(&self, id: &str) -> Value {
        self.get_ok(&format!("/api/jobs/{id}"), &member()).await
    }

    /// The audit trail of job `id` as a [`member`] reads it; `query` is a query string or empty.
    pub async fn job_transitions(&self, id: &str, query: &str) -> Value {
        self.get_ok(&format!("/api/jobs/{id}/transitions{query}"), &member())
            .await
    }

    /// Asks, as a [`member`], for `workers` at `depth` for `job`.
    pub async fn allocate(&self, job: &str, depth: i64, workers: i64) -> Response {
        let body = json!({"job_id": job, "depth": depth, "worker_count": workers});
        self.post("/api/resources/allocate", &member(), body).await
    }

    /// Allocates and returns the number granted (asserting 201).
    pub async fn granted(&self, job: &str, depth: i64, workers: i64) -> i64 {
        let (status, grant) = parts(self.allocate(job, depth, workers).await).await;
        assert_eq!(status, 201, "{grant}");
        grant["granted"].as_i64().unwrap()
    }

    /// `allocated` per depth, from `GET /api/resources/usage`, checking each row's arithmetic and
    /// that [`WORKSPACE`], [`OTHER_WORKSPACE`] and an operator read the same usage: the quotas are one
    /// pool per depth, shared by every workspace.
    pub async fn allocated(&self) -> Vec<i64> {
        let readers = [
            token(&[Scope::ResourcesRead], Some(WORKSPACE)),
            token(&[Scope::ResourcesRead], Some(OTHER_WORKSPACE)),
            token(&[Scope::ResourcesRead], None),
        ];
        let mut usages = Vec::new();
        for reader in &readers {
            usages.push(self.get_ok("/api/resources/usage", reader).await["usage"].clone());
        }
        assert!(
            usages.iter().all(|usage| *usage == usages[0]),
            "workspaces see different pools: {usages:?}"
        );
        usages[0]
            .as_array()
            .unwrap()
            .iter()
            .enumerate()
            .map(|(depth, row)| {
                assert_eq!(row["depth"], depth as i64);
                let (max, used) = (
                    row["max_workers"].as_i64().unwrap(),
                    row["allocated"].as_i64().unwrap(),
                );
                assert_eq!(
                    row["available"].as_i64().unwrap(),
                    (max - used).max(0),
                    "{row}"
                );
                used
            })
            .collect()
    }

    /// Runs `statements` against the app's database: seeding it, or changing what the API cannot.
    pub async fn run_sql(&self, statements: &str) {
        self.db
            .client()
            .await
            .unwrap()
            .batch_execute(statements)
            .await
            .unwrap();
    }

    /// What any write would change: the row count of every table a write adds to, and the sums that
    /// change without a new row (counters, versions, heartbeats).
    pub async fn row_counts(&self) -> Vec<(&'static str, i64)> {
        let tables = [
            "workers",
            "jobs",
            "allocations",
            "events",
            "idempotency_records",
            "worker_transitions",
            "job_transitions",
        ];
        let mut counts = Vec::new();
        for table in tables {
            let count = self
                .select_int(&format!("SELECT count(*) FROM {table}"))
                .await;
            counts.push((table, count));
        }
        for (what, sql) in [
            (
                "quota_stripes.allocated",
                "SELECT sum(allocated)::int8 FROM quota_stripes",
            ),
            (
                "workers.version",
                "SELECT coalesce(sum(version), 0)::int8 FROM workers",
            ),
            (
                "jobs.version",
                "SELECT coalesce(sum(version), 0)::int8 FROM jobs",
            ),
            ("heartbeats", "SELECT count(last_heartbeat_at) FROM workers"),
        ] {
            counts.push((what, self.select_int(sql).await));
        }
        counts
    }

    /// A connection of the test's own, inside a transaction that ran `statements`: it holds the
    /// locks they took until the test sends `COMMIT` or `ROLLBACK`.
    pub async fn holding(&self, statements: &str) -> DbClient {
        let holder = self.db.client().await.unwrap();
        holder
            .batch_execute(&format!("BEGIN; {statements}"))
            .await
            .unwrap();
        holder
    }

    /// Waits until `count` connections to the app's database wait for a lock: requests blocked
    /// behind a row the test holds are then inside their writes.
    pub async fn until_requests_wait_for_a_lock(&self, count: i64) {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let waiting = "SELECT count(*) FROM pg_stat_activity \
                       WHERE datname = current_database() AND wait_event_type = 'Lock'";
        while self.select_int(waiting).await < count {
            assert!(
                std::time::Instant::now() < deadline,
                "fewer than {count} requests wait for a lock"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The one integer `sql` selects, e.g. a `count(*)`.
    pub async fn select_int(&self, sql: &str) -> i64 {
        let client = self.db.client().await.unwrap();
        client.query_one(sql, &[]).await.unwrap().get(0)
    }

    /// Every row of the `events` table (the outbox), in `seq` order.
    pub async fn events(&self) -> Vec<StoredEvent> {
        self.db.client().await.unwrap().events().await
    }

    /// The events of `kinds`, in `seq` order.
    pub async fn events_of(&self, kinds: &[&str]) -> Vec<StoredEvent> {
        let mut events = self.events().await;
        events.retain(|event| kinds.contains(&event.kind.as_str()));
        events
    }

    /// The events after `seq`, in `seq` order.
    pub async fn events_after(&self, seq: i64) -> Vec<StoredEvent> {
        let mut events = self.events().await;
        events.retain(|event| event.seq > seq);
        events
    }

    /// A subscription to this app's events channel, from now on.
    pub async fn subscribe(&self) -> Subscriber {
        let client = redis::Client::open(REDIS).unwrap();
        let mut pubsub = client.get_async_pubsub().await.unwrap();
        pubsub.subscribe(&self.events_channel).await.unwrap();
        Subscriber(pubsub)
    }
}

/// `request` with `body` as JSON, or without a body for `None`.
fn with_json(request: RequestBuilder, body: Option<Value>) -> RequestBuilder {
    match body {
        Some(body) => request.json(&body),
        None => request,
    }
}

/// One row of the `events` table.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredEvent {
    pub id: String,
    pub seq: i64,
    /// The event's `type`.
    pub kind: String,
    /// The subject's id.
    pub subject: String,
    pub actor: String,
    pub data: Value,
    /// Whether it went out on the channel (`published_at` is set).
    pub published: bool,
}

/// Listens on an app's events channel.
pub struct Subscriber(redis::aio::PubSub);

impl Subscriber {
    /// The next `count` envelopes published, each within 10 s; then asserts that
    /// nothing more arrives for half a second, so none was published twice.
    pub async fn receive_exactly(&mut self, count: usize) -> Vec<Value> {
        let mut messages = self.0.on_message();
        let mut received = Vec::new();
        while received.len() < count {
            received.push(next_envelope(&mut messages).await);
        }
        let extra = tokio::time::timeout(Duration::from_millis(500), messages.next()).await;
        assert!(extra.is_err(), "unexpected extra event: {extra:?}");
        received
    }

    /// Every envelope published until those with each of `ids` have arrived (duplicates
    /// included, in arrival order), each message within 10 s.
    pub async fn receive_covering(&mut self, ids: &HashSet<String>) -> Vec<Value> {
        let mut messages = self.0.on_message();
        let mut missing = ids.clone();
        let mut received = Vec::new();
        while !missing.is_empty() {
            let envelope = next_envelope(&mut messages).await;
            missing.remove(envelope["id"].as_str().unwrap());
            received.push(envelope);
        }
        received
    }
}

/// The next envelope on a subscription, within 10 s.
async fn next_envelope(
    messages: &mut (impl futures_util::Stream<Item = redis::Msg> + Unpin),
) -> Value {
    let message = tokio::time::timeout(Duration::from_secs(10), messages.next())
        .await
        .expect("an event within 10 s")
        .expect("the subscription is open");
    let payload: String = message.get_payload().unwrap();
    serde_json::from_str(&payload).unwrap()
}

/// The status and JSON body of a response.
pub async fn parts(response: Response) -> (u16, Value) {
    let status = response.status().as_u16();
    let body = response.json().await.expect("a JSON body");
    (status, body)
}

/// Asserts an error response has the contract's shape and code.
pub async fn assert_error(response: Response, status: u16, code: &str) -> Value {
    let (actual, body) = parts(response).await;
    assert_error_body(actual, &body, status, code);
    body
}

/// Like [`assert_error`], for a response already read: its status and JSON body.
pub fn assert_error_body(actual: u16, body: &Value, status: u16, code: &str) {
    assert_eq!(actual, status, "{body}");
    assert_eq!(body["error"]["code"], code, "{body}");
    assert!(body["detail"].is_string(), "{body}");
    assert_eq!(body["detail"], body["error"]["message"], "{body}");
}

/// Asserts an answer is one of `allowed`: `(status, error code)`, the code `""` for a success. An
/// error must also have the contract's body.
pub fn assert_one_of(status: u16, body: &Value, allowed: &[(u16, &str)]) {
    let code = if status < 300 {
        ""
    } else {
        assert_eq!(body["detail"], body["error"]["message"], "{status}: {body}");
        body["error"]["code"].as_str().unwrap_or_default()
    };
    assert!(
        allowed.contains(&(status, code)),
        "unexpected {status} {code}: {body}"
    );
}

/// The worker state machine of contract §4 written out (the oracle, not core's own table): the
/// states a worker in `from` may move to, in the contract's order.
pub fn worker_may_become(from: &str) -> &'static [&'static str] {
    match from {
        "IDLE" => &["RUNNING", "TERMINATED"],
        "RUNNING" => &["PAUSED", "COMPLETED", "FAILED", "TERMINATED"],
        "PAUSED" => &["RUNNING", "TERMINATED"],
        "COMPLETED" | "FAILED" | "TERMINATED" => &[],
        _ => panic!("{from} is no worker state"),
    }
}

/// A response read whole, to compare with another.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Vec<u8>,
}

impl Answer {
    pub async fn read(response: Response) -> Self {
        Self {
            status: response.status().as_u16(),
            headers: response.headers().clone(),
            body: response.bytes().await.expect("a body").to_vec(),
        }
    }

    /// Whether it is marked `Idempotent-Replayed: true`, once.
    pub fn replayed(&self) -> bool {
        let marks: Vec<_> = self.headers.get_all("idempotent-replayed").iter().collect();
        marks == ["true"]
    }

    /// The body as JSON.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("a JSON body")
    }
}

/// Asserts `replay` is `first` answered again under its `Idempotency-Key`: the same
/// status, `ETag` (or none) and body, byte for byte, marked as a replay where `first` is not.
pub fn assert_replay_of(replay: &Answer, first: &Answer) {
    assert!(
        !first.headers.contains_key("idempotent-replayed"),
        "{first:?}"
    );
    assert!(replay.replayed(), "not a replay: {replay:?}");
    assert_eq!(replay.headers.get("etag"), first.headers.get("etag"));
    assert_eq!(replay.status, first.status);
    assert_eq!(replay.body, first.body);
}

/// Asserts a 422 `VALIDATION_FAILED` whose first field error names `field`.
pub async fn assert_invalid_field(response: Response, field: &str) -> Value {
    let body = assert_error(response, 422, "VALIDATION_FAILED").await;
    assert_eq!(
        body["error"]["details"]["fields"][0]["field"], field,
        "{body}"
    );
    body
}

/// Asserts the contract's 404 `NOT_FOUND`.
pub async fn assert_not_found(response: Response) -> Value {
    assert_error(response, 404, "NOT_FOUND").await
}

/// `(total, limit, offset)` of a page of a list.
pub fn paging(page: &Value) -> (Option<i64>, Option<i64>, Option<i64>) {
    (
        page["total"].as_i64(),
        page["limit"].as_i64(),
        page["offset"].as_i64(),
    )
}

/// Asserts `id` is `prefix` and 12 lowercase hex digits, the shape of every generated id.
pub fn assert_generated_id(id: &str, prefix: &str) {
    let digits = id.strip_prefix(prefix).unwrap_or_default();
    assert!(
        digits.len() == 12
            && digits
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
        "{id}"
    );
}

/// The field names of a JSON object, in the order it has them.
pub fn keys(object: &Value) -> Vec<&str> {
    object
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect()
}

/// `field` of each item of the array `items` as text, e.g. the ids of a page of workers.
pub fn texts<'a>(items: &'a Value, field: &str) -> Vec<&'a str> {
    items
        .as_array()
        .unwrap()
        .iter()
        .map(|item| item[field].as_str().unwrap())
        .collect()
}

/// `field` of each item of the array `items` as a number.
pub fn numbers(items: &Value, field: &str) -> Vec<i64> {
    items
        .as_array()
        .unwrap()
        .iter()
        .map(|item| item[field].as_i64().unwrap())
        .collect()
}
