//! Races through the host with real concurrency (many connections, requests released together):
//! allocations against one depth never over-grant; one idempotency key changes state once; concurrent
//! moves of one worker leave a legal state and a legal audit trail; cancels of a job tree racing with
//! allocations into it leave no allocation on a terminal job.
//!
//! Each test is bounded: a fixed number of requests, every one under a timeout, and the whole test under
//! [`TEST_BUDGET`].

use api_tests::{TestApp, all_scopes, assert_one_of, spawn_app, token, worker_may_become};
use reqwest::Method;
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Barrier;
use tokio::task::JoinSet;

const WORKSPACE: &str = "ws_race";
/// The longest any one test may take once its database is ready.
const TEST_BUDGET: Duration = Duration::from_secs(30);
/// The longest any one request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(20);

fn member() -> String {
    token(&all_scopes(), Some(WORKSPACE))
}

/// A client that opens as many connections as there are requests in flight.
fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        .timeout(REQUEST_TIMEOUT)
        .build()
        .unwrap()
}

/// One request of a race.
#[derive(Clone)]
struct Call {
    method: Method,
    path: String,
    body: Option<Value>,
    idempotency_key: Option<String>,
    /// How long after the common start this one goes: spreads a race over a few milliseconds so
    /// that more of its interleavings happen.
    delay: Duration,
}

impl Call {
    fn post(path: impl Into<String>, body: Value) -> Self {
        Self {
            method: Method::POST,
            path: path.into(),
            body: Some(body),
            idempotency_key: None,
            delay: Duration::ZERO,
        }
    }

    fn after(self, millis: u64) -> Self {
        Self {
            delay: Duration::from_millis(millis),
            ..self
        }
    }
}

/// What came back: status, the body byte for byte, and whether it was a replay.
#[derive(Debug, Clone)]
struct Answer {
    status: u16,
    raw: Vec<u8>,
    replayed: bool,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.raw).unwrap_or_else(|_| {
            panic!(
                "{}: not JSON: {}",
                self.status,
                String::from_utf8_lossy(&self.raw)
            )
        })
    }
}

/// Sends every call at once: each waits at a barrier until all are ready, so they hit the server
/// together. Answers come back in the order of `calls`.
async fn race(app: &TestApp, calls: Vec<Call>) -> Vec<Answer> {
    let http = client();
    let bearer = member();
    let barrier = Arc::new(Barrier::new(calls.len()));
    let mut racers = JoinSet::new();
    for (index, call) in calls.into_iter().enumerate() {
        let mut request = http
            .request(call.method, format!("{}{}", app.address, call.path))
            .bearer_auth(&bearer);
        if let Some(body) = &call.body {
            request = request.json(body);
        }
        if let Some(key) = &call.idempotency_key {
            request = request.header("idempotency-key", key);
        }
        let barrier = Arc::clone(&barrier);
        let delay = call.delay;
        racers.spawn(async move {
            barrier.wait().await;
            tokio::time::sleep(delay).await;
            let response = request.send().await.expect("an answer in time");
            let status = response.status().as_u16();
            let replayed = response.headers().contains_key("idempotent-replayed");
            let raw = response.bytes().await.expect("a body").to_vec();
            (
                index,
                Answer {
                    status,
                    raw,
                    replayed,
                },
            )
        });
    }
    let mut answers = BTreeMap::new();
    while let Some(joined) = racers.join_next().await {
        let (index, answer) = joined.unwrap();
        answers.insert(index, answer);
    }
    answers.into_values().collect()
}

async fn send(app: &TestApp, call: Call) -> Answer {
    race(app, vec![call]).await.remove(0)
}

async fn query_ints(app: &TestApp, sql: &str) -> Vec<i64> {
    let client = app.db.client().await.unwrap();
    let rows = client.query(sql, &[]).await.unwrap();
    rows.iter().map(|row| row.get(0)).collect()
}

async fn query_int(app: &TestApp, sql: &str) -> i64 {
    query_ints(app, sql).await[0]
}

async fn submit(app: &TestApp, depth: i64, parent: Option<&str>, workers: i64) -> String {
    let body = json!({"task_description": "race", "worker_count": workers, "depth": depth,
                      "parent_job_id": parent});
    let answer = send(app, Call::post("/api/jobs/submit", body)).await;
    assert_eq!(answer.status, 201, "{}", answer.json());
    answer.json()["id"].as_str().unwrap().to_owned()
}

async fn register_running(app: &TestApp, id: &str) {
    let answer = send(
        app,
        Call::post("/api/supervisor/workers", json!({ "id": id })),
    )
    .await;
    assert_eq!(answer.status, 201, "{}", answer.json());
    let path = format!("/api/supervisor/workers/{id}/start");
    let answer = send(app, Call::post(path, json!({}))).await;
    assert_eq!(answer.status, 200, "{}", answer.json());
}

/// Every answer is one of `allowed` (status, error code; `""` for a success).
fn assert_only(answers: &[Answer], allowed: &[(u16, &str)]) {
    for answer in answers {
        assert_one_of(answer.status, &answer.json(), allowed);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 8)]
async fn two_hundred_racing_allocations_never_over_grant() {
    let app = spawn_app().await;
    // From here: creating and migrating the database is not the race's time.
    let started = Instant::now();
    // Twenty jobs at depth 0 (quota 10), ten racers each asking for 1 to 3 workers.
    let mut jobs = Vec::new();
    for _ in 0..20 {
        jobs.push(submit(&app, 0, None, 10).await);
    }
    let calls: Vec<Call> = (0..200)
        .map(|i| {
            let body =
                json!({"job_id": jobs[i % jobs.len()], "depth": 0, "worker_count": 1 + i % 3});
            Call::post("/api/resources/allocate", body)
        })
        .collect();
    let answers = race(&app, calls).await;
    assert_only(&answers, &[(201, ""), (409, "QUOTA_EXCEEDED")]);

    let grants: Vec<Value> = answers
        .iter()
        .filter(|answer| answer.status == 201)
        .map(Answer::json)
        .collect();
    let granted: i64 = grants.iter().map(|g| g["granted"].as_i64().unwrap()).sum();
    eprintln!(
        "200 racing allocations: {} grants, {granted} workers granted, {} refused",
        grants.len(),
        answers.len() - grants.len()
    );
    assert_eq!(granted, 10, "the whole quota and not one worker more");

    // Usage, the quota stripes, the ledger and the jobs agree with the grants.
    let usage = send(
        &app,
        Call {
            method: Method::GET,
            path: "/api/resources/usage".into(),
            body: None,
            idempotency_key: None,
            delay: Duration::ZERO,
        },
    )
    .await
    .json();
    assert_eq!(usage["usage"][0]["allocated"], granted, "{usage}");
    assert_eq!(usage["usage"][0]["available"], 0, "{usage}");
    let quota = query_int(&app, "SELECT allocated FROM quota_usage WHERE depth = 0").await;
    let ledger = query_int(
        &app,
        "SELECT coalesce(sum(workers), 0)::int8 FROM allocations WHERE released_at IS NULL",
    )
    .await;
    let held = query_int(&app, "SELECT sum(allocated_workers)::int8 FROM jobs").await;
    assert_eq!((quota, ledger, held), (granted, granted, granted));

    // Each grant is one allocation row of its size and one `resources.allocated` event saying so.
    let client = app.db.client().await.unwrap();
    let rows = client
        .query("SELECT a.id, a.workers::int8, e.data->>'granted', count(e.seq) OVER (PARTITION BY a.id) \
                FROM allocations a LEFT JOIN events e \
                  ON e.type = 'resources.allocated' AND e.subject_id = a.id",
               &[])
        .await
        .unwrap();
    assert_eq!(rows.len(), grants.len(), "one allocation per grant");
    for grant in &grants {
        let id = grant["allocation_id"].as_str().unwrap();
        let row = rows
            .iter()
            .find(|row| row.get::<_, String>(0) == id)
            .unwrap_or_else(|| panic!("no allocation {id}"));
        let granted = grant["granted"].as_i64().unwrap();
        assert_eq!(row.get::<_, i64>(1), granted);
        assert_eq!(
            row.get::<_, Option<String>>(2),
            Some(granted.to_string()),
            "its event"
        );
        assert_eq!(row.get::<_, i64>(3), 1, "exactly one event");
    }
    let events = query_int(
        &app,
        "SELECT count(*) FROM events WHERE type = 'resources.allocated'",
    )
    .await;
    assert_eq!(events, grants.len() as i64, "no event without a grant");
    assert!(started.elapsed() < TEST_BUDGET, "{:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 8)]
async fn fifty_requests_with_one_idempotency_key_change_state_once() {
    let app = spawn_app().await;
    // From here: creating and migrating the database is not the race's time.
    let started = Instant::now();
    register_running(&app, "w_once").await;
    let audit = "SELECT count(*) FROM worker_transitions WHERE worker_id = 'w_once'";
    let changed =
        "SELECT count(*) FROM events WHERE type = 'worker.state.changed' AND subject_id = 'w_once'";
    let (audit_before, events_before) =
        (query_int(&app, audit).await, query_int(&app, changed).await);

    let call = Call {
        idempotency_key: Some("pause-once".into()),
        ..Call::post(
            "/api/supervisor/workers/w_once/pause",
            json!({"reason": "one pause"}),
        )
    };
    // Half at once, half spread over the next 50 ms: both in-flight and recorded answers get hit.
    let calls = (0..50u64)
        .map(|i| call.clone().after(if i < 25 { 0 } else { 2 * (i - 25) }))
        .collect();
    let answers = race(&app, calls).await;
    assert_only(&answers, &[(200, ""), (409, "IDEMPOTENCY_KEY_IN_USE")]);
    let successes: Vec<&Answer> = answers.iter().filter(|a| a.status == 200).collect();
    let first = successes
        .iter()
        .find(|answer| !answer.replayed)
        .expect("one request ran");
    assert_eq!(first.json()["status"], "PAUSED");
    assert_eq!(
        successes.iter().filter(|answer| !answer.replayed).count(),
        1,
        "exactly one answer is not a replay"
    );
    for answer in &successes {
        assert_eq!(
            answer.raw, first.raw,
            "every replay is the first answer, byte for byte"
        );
    }
    eprintln!(
        "50 racing requests, one key: {} ran, {} replayed, {} in use",
        1,
        successes.len() - 1,
        answers.len() - successes.len()
    );

    // A retry after the race replays too.
    let retry = send(&app, call).await;
    assert!(retry.replayed && retry.raw == first.raw && retry.status == 200);

    assert_eq!(
        query_int(&app, audit).await,
        audit_before + 1,
        "one audit row"
    );
    assert_eq!(
        query_int(&app, changed).await,
        events_before + 1,
        "one event"
    );
    let version = query_int(&app, "SELECT version FROM workers WHERE id = 'w_once'").await;
    assert_eq!(version, 3, "registered (1), started (2), paused once (3)");
    let records = query_int(&app, "SELECT count(*) FROM idempotency_records").await;
    assert_eq!(records, 1);
    assert!(started.elapsed() < TEST_BUDGET, "{:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 8)]
async fn racing_moves_of_one_worker_leave_a_legal_state_and_trail() {
    let app = spawn_app().await;
    // From here: creating and migrating the database is not the race's time.
    let started = Instant::now();
    let workers: Vec<String> = (0..5).map(|i| format!("w_race_{i}")).collect();
    for worker in &workers {
        register_running(&app, worker).await;
    }
    // Pause and resume, which can go on for a while, spread over some 40 ms; then the moves that end a
    // worker (and a start, which only an IDLE worker may take) race with the last of them.
    let mut calls = Vec::new();
    for worker in &workers {
        let path = |action: &str| format!("/api/supervisor/workers/{worker}/{action}");
        for i in 0..40u64 {
            let action = if i % 2 == 0 { "pause" } else { "resume" };
            let body = json!({"reason": format!("{action} {i}")});
            calls.push(Call::post(path(action), body).after(i));
        }
        for (action, at) in [
            ("terminate", 30),
            ("complete", 32),
            ("fail", 34),
            ("start", 36),
            ("terminate", 38),
        ] {
            calls.push(Call::post(path(action), json!({"reason": action})).after(at));
        }
    }
    let count = calls.len();
    let answers = race(&app, calls).await;
    assert_only(&answers, &[(200, ""), (409, "INVALID_STATE_TRANSITION")]);
    let moved = answers.iter().filter(|a| a.status == 200).count() as i64;
    eprintln!("{count} racing moves of 5 workers: {moved} accepted");

    let client = app.db.client().await.unwrap();
    let mut rows_total = 0;
    for worker in &workers {
        let trail = client
            .query(
                "SELECT from_state, to_state FROM worker_transitions WHERE worker_id = $1 ORDER BY id",
                &[worker],
            )
            .await
            .unwrap();
        let trail: Vec<(Option<String>, String)> =
            trail.iter().map(|row| (row.get(0), row.get(1))).collect();
        assert_eq!(trail[0], (None, "IDLE".to_owned()), "{worker}: {trail:?}");
        for pair in trail.windows(2) {
            let (previous, next) = (&pair[0].1, &pair[1]);
            assert_eq!(
                next.0.as_ref(),
                Some(previous),
                "{worker}: a gap in {trail:?}"
            );
            assert!(
                worker_may_become(previous).contains(&next.1.as_str()),
                "{worker}: {previous} -> {} in {trail:?}",
                next.1
            );
        }
        let (status, version) = {
            let row = client
                .query_one(
                    "SELECT status, version FROM workers WHERE id = $1",
                    &[worker],
                )
                .await
                .unwrap();
            (row.get::<_, String>(0), row.get::<_, i64>(1))
        };
        assert_eq!(
            &status,
            &trail.last().unwrap().1,
            "{worker}: the state is the trail's end"
        );
        assert_eq!(
            version,
            trail.len() as i64,
            "{worker}: one version per move"
        );
        let events = client
            .query_one(
                "SELECT count(*) FROM events WHERE type = 'worker.state.changed' AND subject_id = $1",
                &[worker],
            )
            .await
            .unwrap()
            .get::<_, i64>(0);
        assert_eq!(
            events,
            trail.len() as i64 - 1,
            "{worker}: one event per move"
        );
        // Two moves before the race: registration and start.
        rows_total += trail.len() as i64 - 2;
    }
    assert_eq!(
        rows_total, moved,
        "one audit row per accepted move, none for a refused one"
    );
    assert!(started.elapsed() < TEST_BUDGET, "{:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 8)]
async fn cancels_racing_allocations_leave_nothing_on_terminal_jobs() {
    let app = spawn_app().await;
    // From here: creating and migrating the database is not the race's time.
    let started = Instant::now();
    // Three trees: a root at depth 0, two children at depth 1, two grandchildren under each child.
    let mut trees: Vec<Vec<(String, i64)>> = Vec::new();
    for _ in 0..3 {
        let root = submit(&app, 0, None, 3).await;
        let mut tree = vec![(root.clone(), 0)];
        for _ in 0..2 {
            let child = submit(&app, 1, Some(&root), 3).await;
            for _ in 0..2 {
                tree.push((submit(&app, 2, Some(&child), 3).await, 2));
            }
            tree.push((child, 1));
        }
        trees.push(tree);
    }
    // Every job gets allocations and releases; every root and child gets cancels, and completes and
    // fails race in too.
    let mut calls = Vec::new();
    for tree in &trees {
        for (job, depth) in tree {
            for (workers, at) in [(1, 0), (2, 5), (1, 10), (1, 15)] {
                let body = json!({"job_id": job, "depth": depth, "worker_count": workers});
                calls.push(Call::post("/api/resources/allocate", body).after(at));
            }
            let release = json!({"job_id": job, "depth": depth});
            calls.push(Call::post("/api/resources/release", release).after(8));
            // The moves that end jobs come a little later than the first allocations, so that there
            // is something to free; the last allocations race with them.
            let path = |action: &str| format!("/api/jobs/{job}/{action}");
            if *depth < 2 {
                for at in [5, 15] {
                    calls.push(Call::post(path("cancel"), json!({"reason": "race"})).after(at));
                }
            } else {
                calls.push(Call::post(path("complete"), json!({})).after(10));
                calls.push(Call::post(path("fail"), json!({"error": "race"})).after(10));
            }
        }
    }
    let count = calls.len();
    let answers = race(&app, calls).await;
    assert_only(
        &answers,
        &[
            (200, ""),
            (201, ""),
            (409, "QUOTA_EXCEEDED"),
            (409, "INVALID_STATE_TRANSITION"),
        ],
    );
    let granted = answers.iter().filter(|a| a.status == 201).count();
    eprintln!(
        "{count} racing cancels, allocations, releases, completes and fails: {granted} grants"
    );

    let on_terminal = query_int(
        &app,
        "SELECT count(*) FROM allocations a JOIN jobs j ON j.id = a.job_id \
         WHERE a.released_at IS NULL AND j.status IN ('COMPLETED', 'FAILED', 'CANCELED')",
    )
    .await;
    assert_eq!(on_terminal, 0, "no allocation survives on a terminal job");
    let holding_terminal = query_int(
        &app,
        "SELECT count(*) FROM jobs WHERE allocated_workers <> 0 \
         AND status IN ('COMPLETED', 'FAILED', 'CANCELED')",
    )
    .await;
    assert_eq!(holding_terminal, 0);
    let mismatched_stripes = query_int(
        &app,
        "SELECT count(*) FROM quota_stripes s WHERE s.allocated <> (SELECT coalesce(sum(workers), 0) \
         FROM allocations a WHERE (a.depth, a.stripe) = (s.depth, s.stripe) AND a.released_at IS NULL)",
    )
    .await;
    assert_eq!(
        mismatched_stripes, 0,
        "each quota stripe's allocated equals its open allocations"
    );
    let mismatched_jobs = query_int(
        &app,
        "SELECT count(*) FROM jobs j WHERE j.allocated_workers <> (SELECT coalesce(sum(workers), 0) \
         FROM allocations a WHERE a.job_id = j.id AND a.released_at IS NULL)",
    )
    .await;
    assert_eq!(mismatched_jobs, 0, "each job holds its open allocations");
    let over = query_int(
        &app,
        "SELECT count(*) FROM quota_usage WHERE allocated > max_workers",
    )
    .await;
    assert_eq!(over, 0);

    // Every root was canceled, so every job is terminal, and the cascade left none behind.
    let statuses: BTreeSet<String> = {
        let client = app.db.client().await.unwrap();
        let rows = client
            .query("SELECT DISTINCT status FROM jobs", &[])
            .await
            .unwrap();
        rows.iter().map(|row| row.get(0)).collect()
    };
    assert!(
        statuses
            .iter()
            .all(|s| ["COMPLETED", "FAILED", "CANCELED"].contains(&s.as_str())),
        "{statuses:?}"
    );
    for tree in &trees {
        let root = &tree[0].0;
        let status = query_int(
            &app,
            &format!("SELECT count(*) FROM jobs WHERE id = '{root}' AND status = 'CANCELED'"),
        )
        .await;
        assert_eq!(status, 1, "{root} is canceled");
    }
    // Every grant has its event; every closed allocation was released with one.
    let allocated_events = query_int(
        &app,
        "SELECT count(*) FROM events WHERE type = 'resources.allocated'",
    )
    .await;
    assert_eq!(allocated_events, granted as i64);
    let released_by_events = query_int(
        &app,
        "SELECT coalesce(sum((data->>'released_workers')::int8), 0)::int8 FROM events \
         WHERE type = 'resources.released'",
    )
    .await;
    let closed = query_int(
        &app,
        "SELECT coalesce(sum(workers), 0)::int8 FROM allocations WHERE released_at IS NOT NULL",
    )
    .await;
    assert_eq!(
        released_by_events, closed,
        "every freed worker is in a resources.released event"
    );
    assert!(started.elapsed() < TEST_BUDGET, "{:?}", started.elapsed());
}
