//! The outbox and idempotency under stress, through the host: events written while Redis cannot
//! be reached wait in the `events` table and go out, in order and once, with a later request; and
//! one `Idempotency-Key` sent many times at once changes state once.

use api_tests::{
    Answer, WORKSPACE, assert_error, assert_error_body, assert_replay_of, spawn_app, spawn_app_on,
    spawn_app_with, supervisor_writer, token, unique, without_redis,
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

#[tokio::test]
async fn a_live_claim_keeps_other_publishers_away_and_an_abandoned_one_is_taken_over() {
    let app = spawn_app().await;
    app.register_worker("w_abandoned", WORKSPACE).await;
    app.register_worker("w_in_flight", WORKSPACE).await;
    // As if their publishers were still at work (claimed just now), or had died a minute ago. The
    // table's guard keeps a published event published, so it is set aside for this.
    app.run_sql(
        "SET session_replication_role = replica; \
         UPDATE events SET published_at = NULL, publishing_since = CASE subject_id \
             WHEN 'w_in_flight' THEN now() ELSE now() - interval '1 minute' END; \
         SET session_replication_role = origin",
    )
    .await;
    let mut subscriber = app.subscribe().await;

    app.register_worker("w_next", WORKSPACE).await;

    // Its own event goes out first; marking it finds the dead publisher's, which it then drains.
    let received = subscriber.receive_exactly(2).await;
    let subjects: Vec<&str> = received
        .iter()
        .map(|e| e["subject"]["id"].as_str().unwrap())
        .collect();
    assert_eq!(subjects, ["w_next", "w_abandoned"]);
    let waiting: Vec<String> = app
        .events()
        .await
        .into_iter()
        .filter(|e| !e.published)
        .map(|e| e.subject)
        .collect();
    assert_eq!(waiting, ["w_in_flight"]);
}
