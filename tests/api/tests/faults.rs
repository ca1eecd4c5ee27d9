//! Faults, on a Postgres cluster and a Redis server each test starts for
//! itself on spare ports (never the shared ones, which other tests use):
//! Redis stopped and started again, Postgres restarted under a write load,
//! Postgres absent when the service starts. Every scenario is bounded in time
//! and talks only to 127.0.0.1.

use api_tests::{SECRET, assert_error, member, parts, repo_root, unique};
use futures_util::StreamExt;
use reqwest::{Response, StatusCode};
use serde_json::{Value, json};
use spin_host::{App, AppOptions, Running};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long the harness waits for a server it started to accept connections.
const SERVER_READY: Duration = Duration::from_secs(30);
/// The longest a request may take before the client counts it as a hang.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a fault's end may take to be noticed by the service.
const RECOVERY: Duration = Duration::from_secs(10);

/// How many ports a server is tried on before the test gives up.
const PORT_ATTEMPTS: usize = 5;

/// A port nobody listens on right now, outside the kernel's ephemeral range: a port that
/// `bind(0)` or an outgoing connection handed out could be taken again before the server this is
/// for binds it (the host of a parallel test listens on such ports). Random, so that tests starting
/// servers at once pick different ones; a server that still finds its port taken is started on
/// another ([`PORT_ATTEMPTS`]).
fn spare_port() -> u16 {
    use std::hash::{BuildHasher, RandomState};
    let ephemeral = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    let (low, high) = if ephemeral > 11_000 {
        (10_000, ephemeral)
    } else {
        (61_000, u16::MAX)
    };
    loop {
        let random = RandomState::new().hash_one(Instant::now());
        let port = low + (random % u64::from(high - low)) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// Waits until something accepts connections on `port`.
fn wait_for_port(port: u16) {
    let deadline = Instant::now() + SERVER_READY;
    let address = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    while std::net::TcpStream::connect_timeout(&address, Duration::from_millis(200)).is_err() {
        assert!(Instant::now() < deadline, "nothing listens on {address}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Runs `command` to the end; panics with its output if it fails.
fn run(command: &mut Command) {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("{command:?}: {e}"));
    assert!(
        output.status.success(),
        "{command:?} failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A `redis-server` on a spare port, without persistence; killed on drop.
struct ThrowawayRedis {
    port: u16,
    process: Option<Child>,
}

impl ThrowawayRedis {
    fn start() -> Self {
        for _ in 0..PORT_ATTEMPTS {
            let mut redis = Self {
                port: spare_port(),
                process: None,
            };
            if redis.try_resume() {
                return redis;
            }
        }
        panic!("redis-server found its port taken {PORT_ATTEMPTS} times");
    }

    /// Starts the server again on the same port, empty.
    fn resume(&mut self) {
        assert!(self.try_resume(), "port {} was taken meanwhile", self.port);
    }

    /// Starts the server on its port; `false` when what listens there is not the server started.
    fn try_resume(&mut self) -> bool {
        let mut process = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server (scripts/setup installs it)");
        wait_for_port(self.port);
        // Something listening is not enough: it must be this process, not one that had the port.
        if redis_process_id(self.port) != Some(process.id()) {
            let _ = process.kill();
            let _ = process.wait();
            return false;
        }
        self.process = Some(process);
        true
    }

    fn stop(&mut self) {
        if let Some(mut process) = self.process.take() {
            let _ = process.kill();
            let _ = process.wait();
        }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
}

/// The `process_id` the Redis server on `port` reports, once it answers.
fn redis_process_id(port: u16) -> Option<u32> {
    use std::io::{Read, Write};
    let deadline = Instant::now() + SERVER_READY;
    while Instant::now() < deadline {
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
        stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        stream.write_all(b"INFO server\r\n").ok()?;
        let mut reply = vec![0; 64 * 1024];
        let read = stream.read(&mut reply).ok()?;
        let reply = String::from_utf8_lossy(&reply[..read]);
        // A server still loading answers `-LOADING …`: ask again.
        if let Some(line) = reply
            .lines()
            .find_map(|line| line.strip_prefix("process_id:"))
        {
            return line.trim().parse().ok();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

impl Drop for ThrowawayRedis {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A Postgres cluster of its own in a temporary directory, trusting
/// loopback connections, with the app's database migrated; stopped and
/// deleted on drop. Postgres refuses to run as root, so under root its
/// tools run as the `postgres` user.
struct ThrowawayPostgres {
    root: PathBuf,
    port: u16,
    tools: PathBuf,
    as_postgres_user: bool,
}

impl ThrowawayPostgres {
    /// A new cluster, running, with the database migrated.
    fn start() -> Self {
        let root = std::env::temp_dir().join(format!("orchestrator-faults-{}", unique()));
        std::fs::create_dir_all(&root).expect("a temporary directory");
        let mut postgres = Self {
            root,
            port: spare_port(),
            tools: postgres_tools(),
            as_postgres_user: running_as_root(),
        };
        if postgres.as_postgres_user {
            run(Command::new("chown").arg("postgres:").arg(&postgres.root));
        }
        run(postgres
            .tool("initdb")
            .arg("-D")
            .arg(postgres.data())
            .args([
                "-U",
                "postgres",
                "--auth=trust",
                "--no-sync",
                "--encoding=UTF8",
                "--locale=C",
            ]));
        // `pg_ctl start` fails when the port was taken meanwhile: then try another.
        let mut attempts = 1;
        while !postgres.try_resume() {
            assert!(
                attempts < PORT_ATTEMPTS,
                "postgres failed to start {PORT_ATTEMPTS} times: {}",
                std::fs::read_to_string(postgres.root.join("server.log")).unwrap_or_default()
            );
            attempts += 1;
            postgres.port = spare_port();
        }
        run(Command::new(repo_root().join("scripts/migrate"))
            .args(["--database-url", &postgres.database_url()]));
        postgres
    }

    fn data(&self) -> PathBuf {
        self.root.join("data")
    }

    /// `name` from the Postgres binaries, as the user that may run it.
    fn tool(&self, name: &str) -> Command {
        let path = self.tools.join(name);
        if self.as_postgres_user {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(path);
            command
        } else {
            Command::new(path)
        }
    }

    /// Starts the server on its port; returns when it accepts connections.
    fn resume(&self) {
        assert!(
            self.try_resume(),
            "postgres did not start again on {}",
            self.port
        );
    }

    /// Starts the server on its port; `false` if it did not start (its port was taken).
    fn try_resume(&self) -> bool {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.port,
            self.root.display()
        );
        self.tool("pg_ctl")
            .arg("-D")
            .arg(self.data())
            .arg("-l")
            .arg(self.root.join("server.log"))
            .args(["-o", &options, "-w", "-t", "30", "start"])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|status| status.success())
    }

    /// Stops the server: `mode` "fast" terminates open sessions and rolls
    /// their transactions back; "immediate" kills it, as a crash would.
    fn stop(&self, mode: &str) {
        run(self
            .tool("pg_ctl")
            .arg("-D")
            .arg(self.data())
            .args(["-m", mode, "-w", "-t", "30", "stop"]));
    }

    fn database_url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/orchestrator", self.port)
    }

    async fn client(&self) -> tokio_postgres::Client {
        let (client, connection) =
            tokio_postgres::connect(&self.database_url(), tokio_postgres::NoTls)
                .await
                .expect("the throwaway database");
        tokio::spawn(connection);
        client
    }
}

impl Drop for ThrowawayPostgres {
    fn drop(&mut self) {
        let _ = self
            .tool("pg_ctl")
            .arg("-D")
            .arg(self.data())
            .args(["-m", "fast", "-w", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

/// The directory holding `initdb` and `pg_ctl`: on `PATH`, else the newest
/// of Debian's versioned directories.
fn postgres_tools() -> PathBuf {
    let has_tools = |dir: &Path| dir.join("initdb").is_file() && dir.join("pg_ctl").is_file();
    let on_path = std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .unwrap_or_default();
    if let Some(dir) = on_path.into_iter().find(|dir| has_tools(dir)) {
        return dir;
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse().ok()?;
            Some((version, entry.path().join("bin")))
        })
        .filter(|(_, dir)| has_tools(dir))
        .collect();
    versions.sort();
    versions
        .pop()
        .map(|(_, dir)| dir)
        .expect("initdb and pg_ctl (scripts/setup installs Postgres)")
}

fn running_as_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|output| output.stdout.trim_ascii() == b"0")
}

/// The app served through the host against the throwaway servers only.
struct FaultApp {
    address: String,
    http: reqwest::Client,
    events_channel: String,
    token: String,
    _running: Running,
}

async fn serve(postgres: &ThrowawayPostgres, redis: &ThrowawayRedis) -> FaultApp {
    let events_channel = format!("test.events.{}", unique());
    let mut options = AppOptions::new(repo_root().join("spin.toml"))
        .variable("database_url", postgres.database_url())
        .variable("database_host", format!("127.0.0.1:{}", postgres.port))
        .variable("redis_url", redis.url())
        .variable("redis_host", format!("127.0.0.1:{}", redis.port))
        .variable("jwt_secret", SECRET)
        .variable("events_channel", &events_channel);
    options.use_environment = false;
    options.max_instances = 64;
    options.postgres_pool_size = 8;
    let app = App::load(&options).expect("the app loads (are the components built?)");
    let running = app
        .serve("127.0.0.1:0".parse().unwrap(), false)
        .await
        .expect("serve");
    FaultApp {
        address: format!("http://{}", running.addr),
        http: reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .build()
            .expect("an HTTP client"),
        events_channel,
        token: member(),
        _running: running,
    }
}

impl FaultApp {
    async fn get(&self, path: &str) -> Response {
        self.http
            .get(format!("{}{path}", self.address))
            .bearer_auth(&self.token)
            .send()
            .await
            .expect("an answer")
    }

    /// A POST of `body`, with an `Idempotency-Key` if `key` is given.
    fn keyed_post(&self, path: &str, body: &Value, key: Option<&str>) -> reqwest::RequestBuilder {
        let request = self
            .http
            .post(format!("{}{path}", self.address))
            .bearer_auth(&self.token)
            .json(body);
        match key {
            Some(key) => request.header("idempotency-key", key),
            None => request,
        }
    }

    async fn post(&self, path: &str, body: Value, key: Option<&str>) -> Response {
        self.keyed_post(path, &body, key)
            .send()
            .await
            .expect("an answer")
    }

    /// Registers worker `id` and moves it by `actions`, without keys; asserts each succeeded.
    async fn worker_through(&self, id: &str, actions: &[&str]) {
        let response = self
            .post("/api/supervisor/workers", json!({ "id": id }), None)
            .await;
        assert_eq!(response.status(), StatusCode::CREATED);
        for action in actions {
            let path = format!("/api/supervisor/workers/{id}/{action}");
            let response = self.post(&path, json!({}), None).await;
            assert_eq!(response.status(), StatusCode::OK, "{action} {id}");
        }
    }

    /// `GET /api/health`'s status and body.
    async fn health(&self) -> (u16, Value) {
        let response = self
            .http
            .get(format!("{}/api/health", self.address))
            .send()
            .await
            .expect("an answer");
        parts(response).await
    }

    /// Polls the health check until it answers 200; returns how long that took.
    async fn until_healthy(&self) -> Duration {
        let started = Instant::now();
        loop {
            let (status, body) = self.health().await;
            if status == 200 {
                return started.elapsed();
            }
            assert!(
                started.elapsed() < RECOVERY,
                "still unhealthy after {RECOVERY:?}: {body}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Asserts the contract's 503: `UNAVAILABLE`, `Retry-After`, the error body.
async fn assert_unavailable(response: Response) -> Value {
    assert!(
        response.headers().contains_key("retry-after"),
        "{:?}",
        response.headers()
    );
    assert_error(response, 503, "UNAVAILABLE").await
}

/// Listens on an app's events channel on the throwaway Redis.
struct Subscriber(redis::aio::PubSub);

impl Subscriber {
    async fn on(redis: &ThrowawayRedis, channel: &str) -> Self {
        let client = redis::Client::open(redis.url()).expect("a Redis URL");
        let mut pubsub = client.get_async_pubsub().await.expect("a subscription");
        pubsub.subscribe(channel).await.expect("subscribed");
        Self(pubsub)
    }

    /// The next `count` envelopes, each within 10 s; then nothing more for half a second.
    async fn receive_exactly(&mut self, count: usize) -> Vec<Value> {
        let mut messages = self.0.on_message();
        let mut received = Vec::new();
        while received.len() < count {
            let message = tokio::time::timeout(Duration::from_secs(10), messages.next())
                .await
                .unwrap_or_else(|_| panic!("event {} of {count} within 10 s", received.len() + 1))
                .expect("the subscription is open");
            let payload: String = message.get_payload().expect("a text payload");
            received.push(serde_json::from_str(&payload).expect("a JSON envelope"));
        }
        let extra = tokio::time::timeout(Duration::from_millis(500), messages.next()).await;
        assert!(extra.is_err(), "an extra event: {extra:?}");
        received
    }
}

async fn select_int(db: &tokio_postgres::Client, sql: &str) -> i64 {
    db.query_one(sql, &[]).await.expect(sql).get(0)
}

/// What a write could leave behind, table by table.
async fn written(db: &tokio_postgres::Client) -> Vec<i64> {
    let mut counts = Vec::new();
    for table in [
        "workers",
        "worker_transitions",
        "events",
        "idempotency_records",
    ] {
        counts.push(select_int(db, &format!("SELECT count(*) FROM {table}")).await);
    }
    counts.push(select_int(db, "SELECT coalesce(sum(version), 0)::bigint FROM workers").await);
    counts
}

/// The seq of every event in the outbox, and of those not yet published.
async fn outbox(db: &tokio_postgres::Client) -> (Vec<i64>, Vec<i64>) {
    let rows = db
        .query(
            "SELECT seq, published_at IS NULL FROM events ORDER BY seq",
            &[],
        )
        .await
        .expect("the outbox");
    let all = rows.iter().map(|row| row.get(0)).collect();
    let pending = rows
        .iter()
        .filter(|row| row.get(1))
        .map(|row| row.get(0))
        .collect();
    (all, pending)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_redis_reads_work_keyed_writes_wait_and_the_outbox_drains_on_its_return() {
    let postgres = ThrowawayPostgres::start();
    let mut redis = ThrowawayRedis::start();
    let app = serve(&postgres, &redis).await;
    let db = postgres.client().await;

    let mut subscriber = Subscriber::on(&redis, &app.events_channel).await;
    let response = app
        .post(
            "/api/supervisor/workers",
            json!({"id": "w_before"}),
            Some("before"),
        )
        .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    subscriber.receive_exactly(1).await;
    let (published_before, pending) = outbox(&db).await;
    assert!(pending.is_empty(), "{pending:?}");

    redis.stop();
    drop(subscriber);

    let (status, body) = app.health().await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["status"], "degraded", "{body}");
    let (status, worker) = parts(app.get("/api/supervisor/workers/w_before").await).await;
    assert_eq!(
        (status, &worker["status"]),
        (200, &json!("IDLE")),
        "{worker}"
    );
    let (status, list) = parts(app.get("/api/supervisor/workers").await).await;
    assert_eq!((status, &list["total"]), (200, &json!(1)), "{list}");

    // Keyed writes are refused and leave nothing behind.
    let outage = Instant::now();
    let before = written(&db).await;
    let keyed = [
        ("/api/supervisor/workers", json!({"id": "w_keyed"})),
        ("/api/supervisor/workers/w_before/start", json!({})),
    ];
    for (i, (path, body)) in keyed.iter().enumerate() {
        let key = format!("down-{i}");
        assert_unavailable(app.post(path, body.clone(), Some(&key)).await).await;
    }
    assert_eq!(written(&db).await, before);

    // Writes without a key go ahead; their events wait in the outbox.
    app.worker_through("w_down_1", &["start", "pause"]).await;
    app.worker_through("w_down_2", &[]).await;
    let (_, pending) = outbox(&db).await;
    assert_eq!(pending.len(), 4, "{pending:?}");
    println!(
        "redis down: 2 keyed writes refused, 4 unkeyed writes done, in {:?}",
        outage.elapsed()
    );

    redis.resume();
    let mut subscriber = Subscriber::on(&redis, &app.events_channel).await;
    // The host reconnects by itself: the very first keyed write succeeds.
    let started = Instant::now();
    let response = app
        .post(
            "/api/supervisor/workers/w_before/start",
            json!({}),
            Some("after"),
        )
        .await;
    let (status, worker) = parts(response).await;
    assert_eq!(
        (status, &worker["status"]),
        (200, &json!("RUNNING")),
        "{worker}"
    );
    println!(
        "redis back: the first keyed write succeeded in {:?}",
        started.elapsed()
    );

    // Every event of the outage, and the new one, once each, in seq order.
    let received = subscriber.receive_exactly(5).await;
    let received: Vec<i64> = received
        .iter()
        .map(|envelope| envelope["seq"].as_i64().expect("a seq"))
        .collect();
    let (all, pending) = outbox(&db).await;
    assert!(pending.is_empty(), "still unpublished: {pending:?}");
    let produced_since: Vec<i64> = all
        .into_iter()
        .filter(|seq| !published_before.contains(seq))
        .collect();
    assert_eq!(received, produced_since);

    // Idempotency works again end to end: the retry replays.
    let replay = app
        .post(
            "/api/supervisor/workers/w_before/start",
            json!({}),
            Some("after"),
        )
        .await;
    assert_eq!(
        replay
            .headers()
            .get("idempotent-replayed")
            .and_then(|v| v.to_str().ok()),
        Some("true")
    );
    assert_eq!(parts(replay).await, (200, worker));
    app.until_healthy().await;
}

/// One acknowledged (2xx) write, as the client saw it.
#[derive(Debug)]
struct Ack {
    worker: String,
    status: String,
    version: i64,
    replayed: bool,
    at: Instant,
}

/// What one load client saw.
#[derive(Default)]
struct ClientLog {
    acks: Vec<Ack>,
    /// When each of the contract's 503s arrived.
    unavailable_at: Vec<Instant>,
    /// Attempts the client stopped waiting for on purpose: outcome unknown.
    abandoned: usize,
    /// Retries that found an abandoned attempt still running (409 `IDEMPOTENCY_KEY_IN_USE`).
    still_in_flight: usize,
    /// Answers the contract does not allow here, and connections lost without an answer; each
    /// fails the test.
    failures: Vec<String>,
    slowest: Duration,
}

/// How long the load runs, when Postgres stops and how long it stays down.
const LOAD: Duration = Duration::from_secs(10);
const RESTART_AT: Duration = Duration::from_secs(3);
const DOWN_FOR: Duration = Duration::from_secs(1);
const CLIENTS: usize = 8;
/// How long a client retries one write before giving up on it.
const GIVE_UP: Duration = Duration::from_secs(30);
/// The first attempt of every `ABANDON_EVERY`-th write is abandoned after
/// `ABANDON_AFTER`, as by a client whose connection dropped: it cannot know
/// whether the write happened, and retries with the same key.
const ABANDON_EVERY: usize = 7;
const ABANDON_AFTER: Duration = Duration::from_millis(2);

/// What the retry loop does after one attempt.
enum Next {
    Done,
    Retry,
    GiveUp,
}

impl ClientLog {
    /// Sends a keyed write until it is acknowledged, retrying 503s and lost
    /// connections with the same key, as a careful client does. A lost
    /// connection is still a failure: only Postgres goes away, the service in
    /// front of it stays up and must answer every request (with a 503 while
    /// it cannot reach the database), so none of its connections may drop.
    async fn acknowledge(
        &mut self,
        app: &FaultApp,
        path: &str,
        body: &Value,
        key: &str,
        abandon_first: bool,
    ) -> bool {
        let started = Instant::now();
        let mut abandon = abandon_first;
        let mut in_doubt = false;
        loop {
            let mut request = app.keyed_post(path, body, Some(key));
            if abandon {
                request = request.timeout(ABANDON_AFTER);
            }
            let sent = Instant::now();
            let result = request.send().await;
            let next = match result {
                Err(e) if abandon && e.is_timeout() => {
                    self.abandoned += 1;
                    in_doubt = true;
                    Next::Retry
                }
                Err(e) if e.is_timeout() => {
                    self.failures
                        .push(format!("{path}: no answer within {REQUEST_TIMEOUT:?}"));
                    Next::GiveUp
                }
                Err(e) => {
                    self.failures.push(format!(
                        "{path} [{key}]: no answer, the connection was lost: {e}"
                    ));
                    Next::Retry
                }
                Ok(response) => {
                    self.slowest = self.slowest.max(sent.elapsed());
                    self.answer(response, path, key, in_doubt).await
                }
            };
            abandon = false;
            match next {
                Next::Done => return true,
                Next::GiveUp => return false,
                Next::Retry if started.elapsed() > GIVE_UP => {
                    self.failures
                        .push(format!("{path}: not acknowledged within {GIVE_UP:?}"));
                    return false;
                }
                Next::Retry => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    }

    /// Logs an answer: a 2xx is acknowledged; the contract's 503 (and, after
    /// an abandoned attempt, 409 while it still runs) is retried; anything
    /// else is a failure.
    async fn answer(&mut self, response: Response, path: &str, key: &str, in_doubt: bool) -> Next {
        let status = response.status();
        let replayed = response.headers().contains_key("idempotent-replayed");
        let retry_after = response.headers().contains_key("retry-after");
        let body: Value = response.json().await.unwrap_or(Value::Null);
        if status.is_success() {
            self.acks.push(Ack {
                worker: body["id"].as_str().unwrap_or_default().to_owned(),
                status: body["status"].as_str().unwrap_or_default().to_owned(),
                version: body["version"].as_i64().unwrap_or_default(),
                replayed,
                at: Instant::now(),
            });
            return Next::Done;
        }
        let contract_body =
            body["detail"].is_string() && body["detail"] == body["error"]["message"];
        match (status.as_u16(), body["error"]["code"].as_str()) {
            (503, Some("UNAVAILABLE")) if retry_after && contract_body => {
                self.unavailable_at.push(Instant::now());
                Next::Retry
            }
            (409, Some("IDEMPOTENCY_KEY_IN_USE")) if in_doubt && contract_body => {
                self.still_in_flight += 1;
                Next::Retry
            }
            _ => {
                self.failures.push(format!(
                    "{path} [{key}]: {status} (Retry-After: {retry_after}) {body}"
                ));
                Next::GiveUp
            }
        }
    }
}

/// Registers workers and moves each through start, pause and resume, one
/// keyed write at a time, until `until`.
async fn load_client(app: Arc<FaultApp>, client: usize, until: Instant) -> ClientLog {
    let mut log = ClientLog::default();
    let mut writes = 0;
    let mut cycle = 0;
    while Instant::now() < until {
        let id = format!("w_c{client}_{cycle}");
        let steps = [
            ("/api/supervisor/workers".to_owned(), json!({ "id": id })),
            (format!("/api/supervisor/workers/{id}/start"), json!({})),
            (format!("/api/supervisor/workers/{id}/pause"), json!({})),
            (format!("/api/supervisor/workers/{id}/resume"), json!({})),
        ];
        for (step, (path, body)) in steps.iter().enumerate() {
            let key = format!("{id}-{step}");
            writes += 1;
            let abandon = writes % ABANDON_EVERY == 0;
            if !log.acknowledge(&app, path, body, &key, abandon).await {
                return log;
            }
        }
        cycle += 1;
    }
    log
}

/// The audit path and event path the acknowledged answers of one worker
/// imply: `(from, to)` per change, registration coming from nothing.
fn expected_path(acks: &[&Ack]) -> Vec<(Option<String>, String)> {
    let mut previous: Option<String> = None;
    acks.iter()
        .map(|ack| {
            let step = (previous.clone(), ack.status.clone());
            previous = Some(ack.status.clone());
            step
        })
        .collect()
}

/// `(subject, from, to)` rows of `sql`, grouped by subject in row order.
async fn paths(
    db: &tokio_postgres::Client,
    sql: &str,
) -> BTreeMap<String, Vec<(Option<String>, String)>> {
    let mut by_worker: BTreeMap<String, Vec<_>> = BTreeMap::new();
    for row in db.query(sql, &[]).await.expect(sql) {
        by_worker
            .entry(row.get(0))
            .or_default()
            .push((row.get(1), row.get(2)));
    }
    by_worker
}

/// Runs [`CLIENTS`] load clients for [`LOAD`], stops Postgres with
/// `pg_ctl stop -m <mode>` at [`RESTART_AT`] and starts it [`DOWN_FOR`]
/// later; then compares every acknowledged write with the tables.
async fn restart_under_load(mode: &'static str) {
    let postgres = Arc::new(ThrowawayPostgres::start());
    let redis = ThrowawayRedis::start();
    let app = Arc::new(serve(&postgres, &redis).await);

    let began = Instant::now();
    let restart = {
        let postgres = postgres.clone();
        tokio::spawn(async move {
            tokio::time::sleep(RESTART_AT).await;
            tokio::task::spawn_blocking(move || {
                let stopping = Instant::now();
                postgres.stop(mode);
                let stopped = Instant::now();
                std::thread::sleep(DOWN_FOR);
                postgres.resume();
                (stopping, stopped, Instant::now())
            })
            .await
            .expect("the restart")
        })
    };
    let clients: Vec<_> = (0..CLIENTS)
        .map(|client| tokio::spawn(load_client(app.clone(), client, began + LOAD)))
        .collect();
    let mut logs = Vec::new();
    for client in clients {
        logs.push(client.await.expect("a load client"));
    }
    let (stopping, stopped, restarted) = restart.await.expect("the restart");

    let failures: Vec<&String> = logs.iter().flat_map(|log| &log.failures).collect();
    assert!(failures.is_empty(), "{failures:#?}");
    let acks: Vec<&Ack> = logs.iter().flat_map(|log| &log.acks).collect();
    let mut by_worker: BTreeMap<&str, Vec<&Ack>> = BTreeMap::new();
    for ack in &acks {
        by_worker.entry(&ack.worker).or_default().push(ack);
    }
    for (worker, acks) in &by_worker {
        let versions: Vec<i64> = acks.iter().map(|ack| ack.version).collect();
        let consecutive: Vec<i64> = (1..=acks.len() as i64).collect();
        assert_eq!(versions, consecutive, "{worker}: {acks:?}");
    }
    let expected: BTreeMap<String, Vec<(Option<String>, String)>> = by_worker
        .iter()
        .map(|(worker, acks)| (worker.to_string(), expected_path(acks)))
        .collect();

    let db = postgres.client().await;
    let rows = db
        .query("SELECT id, status, version FROM workers ORDER BY id", &[])
        .await
        .expect("workers");
    let stored: BTreeMap<String, (String, i64)> = rows
        .iter()
        .map(|row| (row.get(0), (row.get(1), row.get(2))))
        .collect();
    let acknowledged: BTreeMap<String, (String, i64)> = by_worker
        .iter()
        .map(|(worker, acks)| {
            let last = acks.last().expect("one ack at least");
            (worker.to_string(), (last.status.clone(), last.version))
        })
        .collect();
    assert_eq!(
        stored, acknowledged,
        "workers differ from the acknowledged writes"
    );
    let audit = paths(
        &db,
        "SELECT worker_id, from_state, to_state FROM worker_transitions ORDER BY id",
    )
    .await;
    assert_eq!(audit, expected, "the audit trail differs");
    let events = paths(
        &db,
        "SELECT subject_id, data->>'from', coalesce(data->>'to', data->>'status') \
         FROM events ORDER BY seq",
    )
    .await;
    assert_eq!(events, expected, "the events differ");
    let mistyped = select_int(
        &db,
        "SELECT count(*) FROM events WHERE type <> CASE WHEN data ? 'from' \
         THEN 'worker.state.changed' ELSE 'worker.registered' END",
    )
    .await;
    assert_eq!(mistyped, 0, "events of the wrong type");
    let records = select_int(&db, "SELECT count(*) FROM idempotency_records").await;
    assert_eq!(
        records,
        acks.len() as i64,
        "one idempotency record per write"
    );

    let after_restart = acks.iter().filter(|ack| ack.at > restarted).count();
    assert!(after_restart > 0, "nothing succeeded after the restart");
    // The outage was seen as the contract says, 503 with Retry-After (anything else is among the
    // failures above), and only while Postgres was away or being reached again.
    let unavailable_at: Vec<Instant> = logs
        .iter()
        .flat_map(|log| log.unavailable_at.clone())
        .collect();
    assert!(
        !unavailable_at.is_empty(),
        "no 503 while Postgres was down: the outage went unseen"
    );
    let outside: Vec<Duration> = unavailable_at
        .iter()
        .filter(|at| **at < stopping || **at > restarted + RECOVERY)
        .map(|at| at.duration_since(began))
        .collect();
    assert!(
        outside.is_empty(),
        "503s outside the outage ({:?} to {:?} after the start): {outside:?}",
        stopping.duration_since(began),
        (restarted + RECOVERY).duration_since(began)
    );
    let outage = match (unavailable_at.iter().min(), unavailable_at.iter().max()) {
        (Some(first), Some(last)) => last.duration_since(*first),
        _ => Duration::ZERO,
    };
    let total = |count: fn(&ClientLog) -> usize| logs.iter().map(count).sum::<usize>();
    println!(
        "postgres stop -m {mode} under {CLIENTS} clients for {LOAD:?}: {} writes acknowledged \
         ({after_restart} after the restart), 0 lost, 0 duplicated; stopping took {:?}, down \
         {:?}; clients saw 503s for {outage:?}: {} answered 503, 0 lost connections; \
         {} attempts abandoned by the client, {} retries found them in flight (409), \
         {} acknowledged by a replay; slowest answer {:?}",
        acks.len(),
        stopped.duration_since(stopping),
        restarted.duration_since(stopped),
        unavailable_at.len(),
        total(|log| log.abandoned),
        total(|log| log.still_in_flight),
        acks.iter().filter(|ack| ack.replayed).count(),
        logs.iter().map(|log| log.slowest).max().unwrap_or_default(),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_restart_under_load_loses_and_duplicates_no_acknowledged_write() {
    restart_under_load("fast").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_crash_under_load_loses_and_duplicates_no_acknowledged_write() {
    restart_under_load("immediate").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_postgres_at_start_everything_is_503_until_it_comes() {
    let postgres = ThrowawayPostgres::start();
    postgres.stop("fast");
    let redis = ThrowawayRedis::start();
    let app = serve(&postgres, &redis).await;

    let (status, body) = app.health().await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["status"], "unavailable", "{body}");
    assert_eq!(
        body["checks"],
        json!({"postgres": "unavailable", "redis": "ok"})
    );
    assert_unavailable(app.get("/api/supervisor/workers").await).await;
    let registration = json!({"id": "w_late"});
    for key in [Some("late"), None] {
        let response = app
            .post("/api/supervisor/workers", registration.clone(), key)
            .await;
        assert_unavailable(response).await;
    }

    postgres.resume();
    let took = app.until_healthy().await;
    println!("postgres up: healthy after {took:?}");
    // The refused attempt did not hold its key: the retry goes through.
    let response = app
        .post("/api/supervisor/workers", registration, Some("late"))
        .await;
    let (status, worker) = parts(response).await;
    assert_eq!(
        (status, &worker["status"]),
        (201, &json!("IDLE")),
        "{worker}"
    );
}
