//! The outbox and idempotency under stress, through the host: events written while Redis cannot
//! be reached wait in the `events` table and go out, in order and once, with a later request; and
//! one `Idempotency-Key` sent many times at once changes state once.

use api_tests::{
    Answer, TestApp, WORKSPACE, assert_error, assert_error_body, assert_replay_of, spawn_app,
    spawn_app_on, spawn_app_with, supervisor_writer, token, unique, without_redis,
};
use orchestrator_core::auth::Scope;
use serde_json::{Value, json};

const WORKERS: &str = "/api/supervisor/workers";

#[tokio::test]
async fn with_publishing_failing_events_stay_in_the_outbox_and_are_delivered_later() {
    let cut_off = spawn_app_with(without_redis).await;
    // Without a key a write needs nothing from Redis: it commits, and its events wait.
    cut_off.register_worker("w_1", WORKSPACE).await;
    cut_off.move_worker("w_1", "start", Some("go")).await;
    cut_off.register_worker("w_2", "ws_b").await;

    // A keyed write cannot take its in-flight lock: 503 with Retry-After, and nothing written.
    let keyed = json!({"id": "w_keyed", "workspace_id": WORKSPACE});
    let key = ("Idempotency-Key", "while-redis-is-down");
    let response = cut_off
        .post_with(WORKERS, &supervisor_writer(None), key, Some(keyed))
        .await;
    assert!(
        response.headers().contains_key("retry-after"),
        "{response:?}"
    );
    assert_error(response, 503, "UNAVAILABLE").await;
    assert_eq!(
        cut_off
            .select_int("SELECT count(*) FROM workers WHERE id = 'w_keyed'")
            .await,
        0
    );
    assert_eq!(
        cut_off
            .select_int("SELECT count(*) FROM idempotency_records")
            .await,
        0
    );

    let waiting = cut_off.events().await;
    let kinds: Vec<&str> = waiting.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "worker.registered",
            "worker.state.changed",
            "worker.registered"
        ]
    );
    assert_eq!(
        cut_off
            .select_int("SELECT count(*) FROM events WHERE published_at IS NULL")
            .await,
        3
    );

    // Another instance of the service on the same database, with Redis: its next write
    // publishes what waited, oldest first, then its own event.
    let connected = spawn_app_on(&cut_off.db, |options| options).await;
    let mut subscriber = connected.subscribe().await;
    connected.move_worker("w_2", "terminate", None).await;
    let received = subscriber.receive_exactly(4).await;

    let stored = connected.events().await;
    assert_eq!(stored.len(), 4);
    assert!(stored.iter().all(|e| e.published), "{stored:?}");
    let seqs: Vec<i64> = received
        .iter()
        .map(|e| e["seq"].as_i64().unwrap())
        .collect();
    assert_eq!(seqs, stored.iter().map(|e| e.seq).collect::<Vec<_>>());
    assert!(seqs.windows(2).all(|pair| pair[0] < pair[1]), "{seqs:?}");
    // What went out is exactly what catch-up serves.
    let reader = token(&[Scope::SupervisorRead], None);
    let committed = connected.get_ok("/api/events", &reader).await["events"].clone();
    assert_eq!(Value::Array(received), committed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_concurrent_duplicate_gets_409_or_the_replay() {
    let app = spawn_app().await;
    let operator = supervisor_writer(None);
    let key = format!("twin-{}", unique());
    // No id: the service generates one, so only one registration can have happened if every
    // answer names the same worker.
    let body = json!({"workspace_id": WORKSPACE, "metadata": {"n": 1}});
    let attempts = (0..20).map(|_| async {
        let key = ("Idempotency-Key", key.as_str());
        let response = app
            .post_with(WORKERS, &operator, key, Some(body.clone()))
            .await;
        Answer::read(response).await
    });
    let answers = futures_util::future::join_all(attempts).await;

    let (originals, others): (Vec<&Answer>, Vec<&Answer>) = answers
        .iter()
        .partition(|answer| answer.status == 201 && !answer.replayed());
    assert_eq!(originals.len(), 1, "{answers:?}");
    let first = originals[0];
    for answer in others {
        if answer.status == 409 {
            assert_error_body(answer.status, &answer.json(), 409, "IDEMPOTENCY_KEY_IN_USE");
        } else {
            assert_replay_of(answer, first);
        }
    }
    // Once the first is done, a retry is its replay.
    let key = ("Idempotency-Key", key.as_str());
    let retry = app.post_with(WORKERS, &operator, key, Some(body)).await;
    assert_replay_of(&Answer::read(retry).await, first);

    assert_eq!(app.select_int("SELECT count(*) FROM workers").await, 1);
    assert_eq!(
        app.select_int("SELECT count(*) FROM worker_transitions")
            .await,
        1
    );
    assert_eq!(app.select_int("SELECT count(*) FROM events").await, 1);
}

/// Inserts an event as a writer that committed it and died before it got its seq would leave it,
/// `age` old.
async fn left_unnumbered(app: &TestApp, worker: &str, age: &str) {
    app.run_sql(&format!(
        "INSERT INTO events (type, occurred_at, workspace_id, subject_kind, subject_id, actor) \
         VALUES ('worker.registered', now() - interval '{age}', '{WORKSPACE}', 'worker', '{worker}', 'x')"
    ))
    .await;
}

/// The subject of each event of a catch-up page, or of the envelopes received.
fn subjects(events: &[Value]) -> Vec<&str> {
    events
        .iter()
        .map(|e| e["subject"]["id"].as_str().unwrap())
        .collect()
}

#[tokio::test]
async fn events_a_dead_writer_left_unnumbered_are_read_and_published_in_order() {
    let app = spawn_app().await;
    app.register_worker("w_before", WORKSPACE).await;
    let reader = token(&[Scope::SupervisorRead], None);
    let read = async || app.get_ok("/api/events", &reader).await["events"].clone();
    let unnumbered = async || {
        app.select_int("SELECT count(*) FROM events WHERE seq IS NULL")
            .await
    };

    // A catch-up read leaves a fresh one to its writer, which may still be at work…
    left_unnumbered(&app, "w_dead_just_now", "0 seconds").await;
    assert_eq!(subjects(read().await.as_array().unwrap()), ["w_before"]);
    assert_eq!(unnumbered().await, 1);
    // …but once one is over a second old, it numbers every one waiting, in insert order.
    left_unnumbered(&app, "w_dead_long_ago", "1 minute").await;
    assert_eq!(
        subjects(read().await.as_array().unwrap()),
        ["w_before", "w_dead_just_now", "w_dead_long_ago"]
    );
    assert_eq!(unnumbered().await, 0);

    // A read cannot publish: the next write publishes them before its own, in seq order.
    let mut subscriber = app.subscribe().await;
    app.register_worker("w_next", WORKSPACE).await;
    let received = subscriber.receive_exactly(3).await;
    assert_eq!(
        subjects(&received),
        ["w_dead_just_now", "w_dead_long_ago", "w_next"]
    );
    let seqs: Vec<i64> = received
        .iter()
        .map(|e| e["seq"].as_i64().unwrap())
        .collect();
    assert!(seqs.windows(2).all(|pair| pair[0] < pair[1]), "{seqs:?}");
    assert!(app.events().await.iter().all(|e| e.published));
}

#[tokio::test]
async fn events_sent_but_never_marked_are_marked_by_a_later_batch_and_not_sent_again() {
    /// How many events a write publishes at most (edge's `PUBLISH_BATCH`).
    const BATCH: usize = 200;
    let app = spawn_app().await;
    for n in 0..BATCH {
        app.register_worker(&format!("w_{n}"), WORKSPACE).await;
    }
    // As the publishers of all of them would leave them had each died between its publish and its
    // mark: out on the channel (Redis's head has passed them), unmarked in the outbox.
    app.run_sql(
        "ALTER TABLE events DISABLE TRIGGER events_guard; \
         UPDATE events SET published_at = NULL; \
         ALTER TABLE events ENABLE TRIGGER events_guard",
    )
    .await;

    let mut subscriber = app.subscribe().await;
    // The next writers send none of them again (all are at or below the head), and their marks
    // cover them: a batch read from the oldest unmarked event, full of those, would stay full
    // and stop the channel unless it were marked although it sent nothing.
    app.register_worker("w_after", WORKSPACE).await;
    app.register_worker("w_next", WORKSPACE).await;
    let received = subscriber.receive_exactly(2).await;
    assert_eq!(subjects(&received), ["w_after", "w_next"]);
    assert!(app.events().await.iter().all(|e| e.published));
}
