//! A Postgres or a Redis that stops answering without closing its connections — a partition, a
//! hung host — between the app and the server: every request answers within a bounded time
//! instead of waiting for the operating system to give up (neither Spin nor its drivers bound a
//! wait), requests do not pile up, nothing is half-written, and the app serves again as soon as
//! the server answers again.
//!
//! The partition is a throwaway TCP proxy on 127.0.0.1 in front of the shared server that, when
//! told to, keeps every connection open but forwards nothing.

use api_tests::{TestApp, TestDatabase, assert_error, member, spawn_app_on};
use reqwest::Method;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

/// What the issue asks of a partition: a 503 within this.
const BOUND: Duration = Duration::from_secs(5);

/// Forwards 127.0.0.1:<port> to a shared server while `forwarding` is true; while it is false,
/// holds every byte (and every new connection's handshake) without closing anything.
struct BlackHoleProxy {
    port: u16,
    forwarding: watch::Sender<bool>,
    tasks: JoinSet<()>,
}

impl BlackHoleProxy {
    async fn start(server_port: u16) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (forwarding, gate) = watch::channel(true);
        let mut tasks = JoinSet::new();
        tasks.spawn(async move {
            let mut pumps = JoinSet::new();
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(("127.0.0.1", server_port)).await else {
                    continue;
                };
                let (client_read, client_write) = client.into_split();
                let (server_read, server_write) = server.into_split();
                pumps.spawn(pump(client_read, server_write, gate.clone()));
                pumps.spawn(pump(server_read, client_write, gate.clone()));
            }
        });
        Self {
            port,
            forwarding,
            tasks,
        }
    }

    fn black_hole(&self) {
        self.forwarding.send_replace(false);
    }

    fn forward(&self) {
        self.forwarding.send_replace(true);
    }
}

impl Drop for BlackHoleProxy {
    fn drop(&mut self) {
        // Aborting the accept loop drops its pumps, and with them every connection.
        self.tasks.abort_all();
    }
}

/// Copies `from` to `to`, each chunk only once the gate is open.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut gate: watch::Receiver<bool>,
) {
    let mut buffer = vec![0u8; 16 * 1024];
    loop {
        let Ok(read) = from.read(&mut buffer).await else {
            return;
        };
        if read == 0 || gate.wait_for(|open| *open).await.is_err() {
            return;
        }
        if to.write_all(&buffer[..read]).await.is_err() {
            return;
        }
    }
}

/// Sends one request and measures how long its answer took.
async fn timed(
    app: &TestApp,
    method: Method,
    path: &str,
    body: Option<Value>,
    key: Option<&str>,
) -> (u16, Value, Duration) {
    let mut request = app.request(method, path, Some(&member()));
    if let Some(body) = body {
        request = request.json(&body);
    }
    if let Some(key) = key {
        request = request.header("idempotency-key", key);
    }
    let started = Instant::now();
    let response = request.send().await.expect("an answer");
    let status = response.status().as_u16();
    let body = response.json().await.unwrap_or(Value::Null);
    (status, body, started.elapsed())
}

/// Sends the request until it answers 200 (each earlier answer a 503), at most 30 s after the
/// partition ended, and returns that answer's body.
async fn served_again(
    app: &TestApp,
    method: Method,
    path: &str,
    body: Option<Value>,
    key: Option<&str>,
) -> Value {
    let recovered = Instant::now();
    loop {
        let (status, answer, _) = timed(app, method.clone(), path, body.clone(), key).await;
        if status == 200 {
            return answer;
        }
        assert_eq!(status, 503, "{path} after the partition: {answer}");
        assert!(
            recovered.elapsed() < Duration::from_secs(30),
            "no recovery after the partition"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A wave of reads, keyed writes and health checks sent at once while Postgres is black-holed: each
/// must be a 503 within [`BOUND`].
async fn wave(app: &Arc<TestApp>, wave: usize) {
    let mut requests = JoinSet::new();
    for n in 0..12 {
        let app = Arc::clone(app);
        requests.spawn(async move {
            let (method, path, body, key) = match n % 4 {
                0 | 1 => (
                    Method::GET,
                    "/api/supervisor/workers/w_1".to_owned(),
                    None,
                    None,
                ),
                2 => (
                    Method::POST,
                    "/api/supervisor/workers/w_1/start".to_owned(),
                    Some(json!({})),
                    Some(format!("partition-{wave}-{n}")),
                ),
                _ => (Method::GET, "/api/health".to_owned(), None, None),
            };
            let (status, answer, took) = timed(&app, method, &path, body, key.as_deref()).await;
            (path, status, answer, took)
        });
    }
    while let Some(outcome) = requests.join_next().await {
        let (path, status, answer, took) = outcome.unwrap();
        assert_eq!(status, 503, "{path} during the partition: {answer}");
        assert!(took < BOUND, "{path} took {took:?} to say 503");
        if path != "/api/health" {
            assert_eq!(answer["error"]["code"], "UNAVAILABLE", "{answer}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_postgres_that_stops_answering_is_a_503_in_bounded_time_and_service_resumes() {
    let db = Arc::new(TestDatabase::create().await.expect("test database"));
    let proxy = BlackHoleProxy::start(5432).await;
    let through_proxy = db
        .url
        .replace("127.0.0.1:5432", &format!("127.0.0.1:{}", proxy.port));
    let app = Arc::new(
        spawn_app_on(&db, |options| {
            options
                .variable("database_url", &through_proxy)
                .variable("database_host", format!("127.0.0.1:{}", proxy.port))
        })
        .await,
    );
    app.register_worker("w_1", "ws_a").await;

    proxy.black_hole();
    let started = Instant::now();
    // Two waves, the second while the first's connections are still stuck: no pile-up.
    wave(&app, 1).await;
    wave(&app, 2).await;
    let partitioned_for = started.elapsed();
    assert!(partitioned_for < 2 * BOUND, "{partitioned_for:?}");

    proxy.forward();
    served_again(&app, Method::GET, "/api/health", None, None).await;
    // Nothing was half-written: the worker is as registered, with one audit row and one event.
    let worker = app.get_ok("/api/supervisor/workers/w_1", &member()).await;
    assert_eq!(
        (worker["status"].as_str(), worker["version"].as_i64()),
        (Some("IDLE"), Some(1)),
        "{worker}"
    );
    assert_eq!(
        app.select_int("SELECT count(*) FROM worker_transitions WHERE worker_id = 'w_1'")
            .await,
        1
    );
    assert_eq!(app.select_int("SELECT count(*) FROM events").await, 1);
    // A write refused during the partition goes through when retried with its key.
    let (status, moved, _) = timed(
        &app,
        Method::POST,
        "/api/supervisor/workers/w_1/start",
        Some(json!({})),
        Some("partition-1-2"),
    )
    .await;
    assert_eq!(
        (status, moved["status"].as_str()),
        (200, Some("RUNNING")),
        "{moved}"
    );
    let again = app
        .request(
            Method::POST,
            "/api/supervisor/workers/w_1/start",
            Some(&member()),
        )
        .json(&json!({}))
        .header("idempotency-key", "partition-2-2")
        .send()
        .await
        .unwrap();
    assert_error(again, 409, "INVALID_STATE_TRANSITION").await;
    api_tests::forget_redis_keys(&through_proxy).await;
}

/// Each kind of request at once while Redis is black-holed, twice over: reads answer (the
/// revocation check fails open), keyed writes are refused with 503 and write nothing, a write
/// without a key commits and its event waits in the outbox; each within [`BOUND`].
async fn redis_wave(app: &Arc<TestApp>, wave: usize) {
    let mut requests = JoinSet::new();
    for n in 0..12 {
        let app = Arc::clone(app);
        requests.spawn(async move {
            let worker = format!("w_{wave}_{n}");
            let (method, path, body, key, expected) = match n % 3 {
                0 => (
                    Method::GET,
                    "/api/supervisor/workers/w_1".to_owned(),
                    None,
                    None,
                    200,
                ),
                1 => (
                    Method::POST,
                    "/api/supervisor/workers/w_1/start".to_owned(),
                    Some(json!({})),
                    Some(format!("redis-partition-{wave}-{n}")),
                    503,
                ),
                _ => (
                    Method::POST,
                    "/api/supervisor/workers".to_owned(),
                    Some(json!({"id": worker, "workspace_id": "ws_a"})),
                    None,
                    201,
                ),
            };
            // A request that hangs fails the test instead of hanging it.
            let answer = timed(&app, method, &path, body, key.as_deref());
            let (status, answer, took) = tokio::time::timeout(2 * BOUND, answer)
                .await
                .unwrap_or_else(|_| panic!("{path}: no answer within {:?}", 2 * BOUND));
            (path, expected, status, answer, took)
        });
    }
    while let Some(outcome) = requests.join_next().await {
        let (path, expected, status, answer, took) = outcome.unwrap();
        assert_eq!(status, expected, "{path} with Redis black-holed: {answer}");
        assert!(took < BOUND, "{path} took {took:?} to answer {status}");
        if status == 503 {
            assert_eq!(answer["error"]["code"], "UNAVAILABLE", "{answer}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_redis_that_stops_answering_costs_a_bounded_wait_and_service_resumes() {
    let db = Arc::new(TestDatabase::create().await.expect("test database"));
    let proxy = BlackHoleProxy::start(6379).await;
    let app = Arc::new(
        spawn_app_on(&db, |options| {
            options
                .variable("redis_url", format!("redis://127.0.0.1:{}", proxy.port))
                .variable("redis_host", format!("127.0.0.1:{}", proxy.port))
        })
        .await,
    );
    app.register_worker("w_1", "ws_a").await;
    let mut subscriber = app.subscribe().await;
    // A read waiting for w_1 to change, on a Redis connection it already has (the doorbell it
    // watches is read on it) when Redis goes dark.
    let waiting = {
        let app = Arc::clone(&app);
        tokio::spawn(async move {
            let path = "/api/supervisor/workers/w_1?wait=30&after_version=1";
            timed(&app, Method::GET, path, None, None).await
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;

    proxy.black_hole();
    let started = Instant::now();
    redis_wave(&app, 1).await;
    redis_wave(&app, 2).await;
    let partitioned_for = started.elapsed();
    assert!(partitioned_for < 2 * BOUND, "{partitioned_for:?}");
    // The keyed starts wrote nothing; the eight registrations committed, their events waiting.
    let worker = app.get_ok("/api/supervisor/workers/w_1", &member()).await;
    assert_eq!(worker["status"], "IDLE", "{worker}");
    assert_eq!(
        app.select_int("SELECT count(*) FROM events WHERE published_at IS NULL")
            .await,
        8
    );
    // Started without a key, w_1 changes while Redis is still dark: the waiting read, whose
    // doorbell went silent, sees it from Postgres (it looks every 2 s while Redis is out).
    let (status, moved, _) = timed(
        &app,
        Method::POST,
        "/api/supervisor/workers/w_1/start",
        Some(json!({})),
        None,
    )
    .await;
    assert_eq!(
        (status, moved["status"].as_str()),
        (200, Some("RUNNING")),
        "{moved}"
    );
    let (status, read, _) = tokio::time::timeout(BOUND, waiting)
        .await
        .expect("the waiting read answers while Redis is dark")
        .unwrap();
    assert_eq!(
        (status, read["status"].as_str()),
        (200, Some("RUNNING")),
        "{read}"
    );

    proxy.forward();
    let moved = served_again(
        &app,
        Method::POST,
        "/api/supervisor/workers/w_1/pause",
        Some(json!({})),
        Some("redis-partition-after"),
    )
    .await;
    assert_eq!(moved["status"], "PAUSED", "{moved}");
    // The events that waited go out with the first write after, oldest first, then its own.
    let received = subscriber.receive_exactly(10).await;
    let kinds: Vec<&str> = received.iter().filter_map(|e| e["type"].as_str()).collect();
    assert_eq!(
        kinds,
        [
            ["worker.registered"; 8].as_slice(),
            &["worker.state.changed"; 2]
        ]
        .concat(),
        "{kinds:?}"
    );
    assert!(app.events().await.iter().all(|e| e.published));
    api_tests::forget_redis_keys(&db.url).await;
}
