//! Idempotency keys through the host (contract §3): a duplicate of a request still in flight is
//! refused with 409, a key is scoped to (token `sub`, method, path), `Request-Id` is its alias, it
//! lives for `idempotency_ttl_seconds`, Postgres answers a replay when Redis has lost the key, and
//! every kind of write replays without a second change.

use api_tests::{
    Answer, REDIS, TestApp, WORKSPACE, assert_error_body, assert_replay_of, member, spawn_app,
    spawn_app_with, supervisor_writer, token_for, unique,
};
use orchestrator_core::auth::Scope;
use orchestrator_core::idempotency::{IdempotencyKey, scope_key};
use reqwest::Method;
use serde_json::{Value, json};
use std::time::Duration;

const WORKERS: &str = "/api/supervisor/workers";
/// How long a duplicate may take to be refused: the service answers it from Redis without waiting
/// for the first request, so anything near this means it waited.
const REFUSAL_WITHIN: Duration = Duration::from_secs(5);

/// POSTs `body` with `header: key` as `bearer`, read whole.
async fn send_keyed(
    app: &TestApp,
    path: &str,
    bearer: &str,
    (header, key): (&str, &str),
    body: &Value,
) -> Answer {
    let response = app
        .post_with(path, bearer, (header, key), Some(body.clone()))
        .await;
    Answer::read(response).await
}

/// POSTs `body` under `Idempotency-Key: key` as an operator of workers.
async fn keyed(app: &TestApp, path: &str, key: &str, body: &Value) -> Answer {
    let bearer = supervisor_writer(None);
    send_keyed(app, path, &bearer, ("Idempotency-Key", key), body).await
}

/// Waits until a connection to the app's database waits for a lock: the request holding `key` is
/// then inside its write, past taking the key.
async fn until_a_request_waits_for_a_lock(app: &TestApp) {
    app.until_requests_wait_for_a_lock(1).await
}

/// Sends `body` under `Idempotency-Key: key` as `bearer` from a task of its own, for a test that
/// holds a lock the request will wait for; its answer, read whole, when it ends.
fn keyed_in_background(
    app: &TestApp,
    path: &str,
    bearer: &str,
    key: &str,
    body: &Value,
) -> tokio::task::JoinHandle<Answer> {
    let request = app
        .request(Method::POST, path, Some(bearer))
        .header("Idempotency-Key", key)
        .json(body);
    tokio::spawn(async move { Answer::read(request.send().await.unwrap()).await })
}

/// Registers worker `id` and starts it; the path that pauses it.
async fn pause_of_a_running_worker(app: &TestApp, id: &str) -> String {
    app.register_worker(id, WORKSPACE).await;
    app.move_worker(id, "start", None).await;
    format!("/api/supervisor/workers/{id}/pause")
}

/// A keyed pause of running worker `id`: its path, a body giving `id` as the reason, a fresh key.
async fn keyed_pause_of_a_running_worker(app: &TestApp, id: &str) -> (String, Value, String) {
    let path = pause_of_a_running_worker(app, id).await;
    (path, json!({"reason": id}), format!("{id}-{}", unique()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duplicate_of_a_request_still_in_flight_is_refused_with_409_in_use() {
    let app = spawn_app().await;
    let (path, body, key) = &keyed_pause_of_a_running_worker(&app, "w_held").await;

    // The test holds the worker's row lock, so the first pause waits inside its write, holding
    // the key, until the test lets go.
    let holder = app
        .holding("SELECT 1 FROM workers WHERE id = 'w_held' FOR UPDATE")
        .await;
    let first = keyed_in_background(&app, path, &supervisor_writer(None), &key, &body);
    until_a_request_waits_for_a_lock(&app).await;

    let duplicate = tokio::time::timeout(REFUSAL_WITHIN, keyed(&app, path, &key, &body))
        .await
        .expect("the duplicate is refused at once, not made to wait for the first");
    assert_error_answer(&duplicate, 409, "IDEMPOTENCY_KEY_IN_USE");
    assert!(!first.is_finished(), "the first request went past the lock");

    holder.batch_execute("ROLLBACK").await.unwrap();
    let first = first.await.unwrap();
    assert_eq!((first.status, first.replayed()), (200, false), "{first:?}");
    assert_eq!(first.json()["status"], "PAUSED");
    // The refused duplicate left no record of its own: a retry now replays the first.
    assert_replay_of(&keyed(&app, path, &key, &body).await, &first);
    let moves = "SELECT count(*) FROM worker_transitions WHERE to_state = 'PAUSED'";
    assert_eq!(app.select_int(moves).await, 1);
}

/// Asserts an answer read whole is the contract's error `code` with `status`.
fn assert_error_answer(answer: &Answer, status: u16, code: &str) {
    assert_error_body(answer.status, &answer.json(), status, code);
}

#[tokio::test]
async fn a_key_is_scoped_to_the_tokens_subject_and_the_path() {
    let app = spawn_app().await;
    let writer = |sub: &str| token_for(sub, &[Scope::SupervisorRead, Scope::SupervisorWrite], None);
    let (alice, bob) = (writer("alice"), writer("bob"));
    let key = ("Idempotency-Key", "shared-key");
    // No id: a replay would carry the first answer's generated id.
    let registration = json!({"workspace_id": WORKSPACE});

    let by_alice = send_keyed(&app, WORKERS, &alice, key, &registration).await;
    let by_bob = send_keyed(&app, WORKERS, &bob, key, &registration).await;
    for answer in [&by_alice, &by_bob] {
        assert_eq!(
            (answer.status, answer.replayed()),
            (201, false),
            "{answer:?}"
        );
    }
    assert_ne!(by_alice.json()["id"], by_bob.json()["id"]);
    assert_replay_of(
        &send_keyed(&app, WORKERS, &alice, key, &registration).await,
        &by_alice,
    );

    // The same subject, key and body on another path is another request.
    let mut started = Vec::new();
    for answer in [&by_alice, &by_bob] {
        let id = answer.json()["id"].as_str().unwrap().to_owned();
        let path = format!("{WORKERS}/{id}/start");
        started.push(send_keyed(&app, &path, &alice, key, &json!({})).await);
    }
    for answer in &started {
        assert_eq!(
            (answer.status, answer.replayed()),
            (200, false),
            "{answer:?}"
        );
        assert_eq!(answer.json()["status"], "RUNNING");
    }
    // The method is part of the scope too, but only POSTs take keys: there is no other method to
    // send the key with.
    assert_eq!(app.select_int("SELECT count(*) FROM workers").await, 2);
    assert_eq!(
        app.select_int("SELECT count(*) FROM idempotency_records")
            .await,
        4
    );
}

#[tokio::test]
async fn request_id_is_an_alias_of_the_idempotency_key() {
    let app = spawn_app().await;
    let bearer = supervisor_writer(None);
    let registration = json!({"workspace_id": WORKSPACE});
    let by_alias = ("Request-Id", "alias-key");

    let first = send_keyed(&app, WORKERS, &bearer, by_alias, &registration).await;
    assert_eq!((first.status, first.replayed()), (201, false), "{first:?}");
    assert_replay_of(
        &send_keyed(&app, WORKERS, &bearer, by_alias, &registration).await,
        &first,
    );
    // Either header names the same key.
    assert_replay_of(
        &keyed(&app, WORKERS, "alias-key", &registration).await,
        &first,
    );
    let other = json!({"workspace_id": "ws_b"});
    let reused = send_keyed(&app, WORKERS, &bearer, by_alias, &other).await;
    assert_error_answer(&reused, 422, "IDEMPOTENCY_KEY_REUSED");
    assert_eq!(app.select_int("SELECT count(*) FROM workers").await, 1);
}

#[tokio::test]
async fn a_key_can_be_used_again_once_its_ttl_is_over() {
    const TTL: Duration = Duration::from_secs(1);
    let app = spawn_app_with(|options| {
        options.variable("idempotency_ttl_seconds", TTL.as_secs().to_string())
    })
    .await;
    let first_body = json!({"workspace_id": WORKSPACE});
    let first = keyed(&app, WORKERS, "short-lived", &first_body).await;
    assert_eq!(first.status, 201, "{first:?}");
    let other_body = json!({"workspace_id": "ws_b"});
    let reused = keyed(&app, WORKERS, "short-lived", &other_body).await;
    assert_error_answer(&reused, 422, "IDEMPOTENCY_KEY_REUSED");

    // Past the TTL in Redis and in Postgres (their clocks tick whole seconds).
    tokio::time::sleep(TTL * 2 + Duration::from_millis(200)).await;
    let later = keyed(&app, WORKERS, "short-lived", &other_body).await;
    assert_eq!((later.status, later.replayed()), (201, false), "{later:?}");
    assert_eq!(later.json()["workspace_id"], "ws_b");
    assert_eq!(app.select_int("SELECT count(*) FROM workers").await, 2);
}

/// Deletes what Redis caches of `key` as `sub` used it on `POST path`, asserting there was a record.
async fn forget_in_redis(sub: &str, path: &str, key: &str) {
    forget_in_redis_as("idempotency", sub, path, key).await
}

/// Deletes the Redis entry of `kind` (`idempotency`: the cached record; `idempotency-lock`: the
/// in-flight lock) of `key` as `sub` used it on `POST path`, asserting there was one.
async fn forget_in_redis_as(kind: &str, sub: &str, path: &str, key: &str) {
    let (mut redis, entry) = in_redis(kind, sub, path, key).await;
    let deleted: i64 = redis::cmd("DEL")
        .arg(&entry)
        .query_async(&mut redis)
        .await
        .unwrap();
    assert_eq!(deleted, 1);
}

/// What Redis caches of `key` as `sub` used it on `POST path`: the recorded answer, as JSON.
async fn cached_in_redis(sub: &str, path: &str, key: &str) -> Value {
    let (mut redis, entry) = in_redis("idempotency", sub, path, key).await;
    let cached: Vec<u8> = redis::cmd("GET")
        .arg(&entry)
        .query_async(&mut redis)
        .await
        .unwrap();
    serde_json::from_slice(&cached).unwrap()
}

/// A connection to Redis, and the one entry of `kind` it holds for `key` as `sub` used it on
/// `POST path`.
async fn in_redis(
    kind: &str,
    sub: &str,
    path: &str,
    key: &str,
) -> (redis::aio::MultiplexedConnection, String) {
    let key = IdempotencyKey::parse(key).unwrap();
    // The prefix holds the app's namespace; the scope key is a digest unique to this test's key.
    let pattern = format!(
        "orchestrator:*:{kind}:{}",
        scope_key(sub, "POST", path, &key)
    );
    let mut redis = redis::Client::open(REDIS)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let mut entries: Vec<String> = redis::cmd("KEYS")
        .arg(&pattern)
        .query_async(&mut redis)
        .await
        .unwrap();
    assert_eq!(entries.len(), 1, "{pattern}: {entries:?}");
    (redis, entries.remove(0))
}

#[tokio::test]
async fn postgres_answers_a_replay_once_redis_has_lost_the_key() {
    let app = spawn_app().await;
    let key = format!("forgotten-{}", unique());
    let registration = json!({"workspace_id": WORKSPACE});
    let first = keyed(&app, WORKERS, &key, &registration).await;
    assert_eq!(first.status, 201, "{first:?}");
    let before = app.row_counts().await;

    // `supervisor_writer` tokens are for `sub` "tester".
    forget_in_redis("tester", WORKERS, &key).await;
    assert_replay_of(&keyed(&app, WORKERS, &key, &registration).await, &first);
    let other = json!({"workspace_id": "ws_b"});
    assert_error_answer(
        &keyed(&app, WORKERS, &key, &other).await,
        422,
        "IDEMPOTENCY_KEY_REUSED",
    );
    assert_eq!(app.row_counts().await, before, "a replay changes nothing");
}

/// Two requests with one key that both get past Redis (it lost the first one's lock) race in
/// Postgres, where the key is recorded in the statement that ends each one's transaction: exactly
/// one of them makes its change, and the other rolls its own back and replays the first's answer.
/// A registration without an id is used because a second one would succeed (a second worker) if
/// the loser committed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_requests_racing_on_a_key_past_redis_make_one_change_and_one_replay() {
    let app = spawn_app().await;
    let key = format!("raced-{}", unique());
    let registration = json!({"workspace_id": WORKSPACE});
    // The test holds back every audit insert, so both requests wait inside their writes.
    let holder = app
        .holding("LOCK TABLE worker_transitions IN SHARE MODE")
        .await;
    let send = || keyed_in_background(&app, WORKERS, &supervisor_writer(None), &key, &registration);
    let first = send();
    app.until_requests_wait_for_a_lock(1).await;
    forget_in_redis_as("idempotency-lock", "tester", WORKERS, &key).await;
    let second = send();
    app.until_requests_wait_for_a_lock(2).await;

    holder.batch_execute("ROLLBACK").await.unwrap();
    let mut answers = [first.await.unwrap(), second.await.unwrap()];
    answers.sort_by_key(Answer::replayed);
    let [made, replayed] = &answers;
    assert_eq!(made.status, 201, "{made:?}");
    assert_replay_of(replayed, made);
    // Redis holds the first answer as it was given (the replay cached nothing of its own), and a
    // retry replays it from there.
    let cached = cached_in_redis("tester", WORKERS, &key).await;
    assert_eq!(cached["status"], 201, "{cached}");
    let headers = cached["headers"].as_array().unwrap();
    assert!(
        !headers.iter().any(|h| h[0] == "idempotent-replayed"),
        "a replay's marker was cached as a recorded header: {cached}"
    );
    assert_replay_of(&keyed(&app, WORKERS, &key, &registration).await, made);
    assert_eq!(app.select_int("SELECT count(*) FROM workers").await, 1);
    let registered = "SELECT count(*) FROM events WHERE type = 'worker.registered'";
    assert_eq!(app.select_int(registered).await, 1);
}

/// Sends `body` to `path` twice under one key as a [`member`]: the second is the first replayed,
/// and changes nothing. Returns the first answer.
async fn assert_replayed_without_change(app: &TestApp, path: &str, body: Value) -> Answer {
    let key = format!("replay-{}", unique());
    let bearer = member();
    let send = async || send_keyed(app, path, &bearer, ("Idempotency-Key", &key), &body).await;
    let first = send().await;
    assert!(
        (200..300).contains(&first.status) && !first.replayed(),
        "{path}: {first:?}"
    );
    let after_first = app.row_counts().await;
    assert_replay_of(&send().await, &first);
    assert_eq!(
        app.row_counts().await,
        after_first,
        "{path}: the replay wrote"
    );
    first
}

#[tokio::test]
async fn keyed_allocate_release_cancel_complete_and_fail_replay_without_a_second_change() {
    let app = spawn_app().await;
    let job = app.submit_at(0, None).await;
    let allocation = json!({"job_id": job, "depth": 0, "worker_count": 2});
    let granted = assert_replayed_without_change(&app, "/api/resources/allocate", allocation).await;
    assert_eq!(granted.json()["granted"], 2);
    let release = json!({"job_id": job, "depth": 0});
    let released = assert_replayed_without_change(&app, "/api/resources/release", release).await;
    assert_eq!(released.json()["released_workers"], 2);
    assert_eq!(app.allocated().await, [0; 6]);

    let canceled = assert_replayed_without_change(
        &app,
        &format!("/api/jobs/{job}/cancel"),
        json!({"reason": "once"}),
    )
    .await;
    assert_eq!(canceled.json()["status"], "CANCELED");
    for (action, body, status) in [
        ("complete", json!({"result": {"n": 1}}), "COMPLETED"),
        ("fail", json!({"error": "once"}), "FAILED"),
    ] {
        let job = app.submit_at(0, None).await;
        assert_eq!(app.granted(&job, 0, 1).await, 1);
        let path = format!("/api/jobs/{job}/{action}");
        let ended = assert_replayed_without_change(&app, &path, body).await;
        assert_eq!(ended.json()["status"], status);
    }
    assert_eq!(app.allocated().await, [0; 6]);
}

/// The same refusal for a heartbeat and a release, whose rows a held lock keeps them waiting on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeats_and_releases_in_flight_refuse_their_duplicates_too() {
    let app = spawn_app().await;
    app.register_worker("w_beat", WORKSPACE).await;
    let job = app.submit_at(0, None).await;
    assert_eq!(app.granted(&job, 0, 1).await, 1);
    let cases = [
        (
            "/api/supervisor/workers/w_beat/heartbeat".to_owned(),
            json!({}),
            "SELECT 1 FROM workers WHERE id = 'w_beat' FOR UPDATE".to_owned(),
        ),
        (
            "/api/resources/release".to_owned(),
            json!({"job_id": job, "depth": 0}),
            format!("SELECT 1 FROM jobs WHERE id = '{job}' FOR UPDATE"),
        ),
    ];
    for (path, body, hold) in cases {
        let key = format!("held-{}", unique());
        let holder = app.holding(&hold).await;
        let first = keyed_in_background(&app, &path, &member(), &key, &body);
        until_a_request_waits_for_a_lock(&app).await;
        let bearer = member();
        let duplicate = send_keyed(&app, &path, &bearer, ("Idempotency-Key", &key), &body);
        let duplicate = tokio::time::timeout(REFUSAL_WITHIN, duplicate)
            .await
            .expect("the duplicate is refused at once");
        assert_error_answer(&duplicate, 409, "IDEMPOTENCY_KEY_IN_USE");
        holder.batch_execute("ROLLBACK").await.unwrap();
        assert_eq!(first.await.unwrap().status, 200, "{path}");
    }
}

#[tokio::test]
async fn a_key_or_precondition_with_bytes_outside_ascii_is_refused_not_ignored() {
    let app = spawn_app().await;
    let bearer = supervisor_writer(None);
    let latin1 = reqwest::header::HeaderValue::from_bytes(b"k\xe9y").unwrap();
    let registration = json!({"workspace_id": WORKSPACE});
    for header in ["Idempotency-Key", "Request-Id"] {
        let response = app
            .request(Method::POST, WORKERS, Some(&bearer))
            .header(header, latin1.clone())
            .json(&registration)
            .send()
            .await
            .unwrap();
        let body = api_tests::assert_error(response, 422, "VALIDATION_FAILED").await;
        assert_eq!(body["error"]["details"]["fields"][0]["field"], header);
    }
    // An overridden alias is still checked.
    let response = app
        .request(Method::POST, WORKERS, Some(&bearer))
        .header("Idempotency-Key", "good-key")
        .header("Request-Id", latin1.clone())
        .json(&registration)
        .send()
        .await
        .unwrap();
    api_tests::assert_error(response, 422, "VALIDATION_FAILED").await;
    assert_eq!(app.select_int("SELECT count(*) FROM workers").await, 0);

    // An If-Match that cannot be read as ASCII matches no version: 412, and the worker is unchanged.
    app.register_worker("w_1", WORKSPACE).await;
    let response = app
        .request(Method::POST, &format!("{WORKERS}/w_1/pause"), Some(&bearer))
        .header("If-Match", latin1)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    api_tests::assert_error(response, 412, "VERSION_MISMATCH").await;
    let version = "SELECT version FROM workers WHERE id = 'w_1'";
    assert_eq!(app.select_int(version).await, 1);
}

/// A write that Postgres picks as a deadlock's victim was rolled back whole: it is the contract's
/// 503 (nothing half-written, the client may retry), not a 500, and a retry with its key makes the
/// change once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_rolled_back_to_break_a_deadlock_is_a_503_its_retry_completes() {
    let app = spawn_app().await;
    let (path, body, key) = &keyed_pause_of_a_running_worker(&app, "w_deadlock").await;

    // The test holds the RUNNING counter the pause will decrement, so the pause waits for it
    // holding the worker's row; then the test asks for that row. The pause waited first, so its
    // deadlock check runs first and it is the one rolled back.
    let holder = app
        .holding(&format!(
            "SELECT 1 FROM worker_counts WHERE workspace_id = '{WORKSPACE}' AND status = 'RUNNING' \
             AND stripe = worker_counts_stripe('w_deadlock') FOR UPDATE"
        ))
        .await;
    let pause = keyed_in_background(&app, path, &supervisor_writer(None), &key, &body);
    until_a_request_waits_for_a_lock(&app).await;
    holder
        .batch_execute("SELECT 1 FROM workers WHERE id = 'w_deadlock' FOR UPDATE")
        .await
        .unwrap();
    holder.batch_execute("ROLLBACK").await.unwrap();

    let refused = pause.await.unwrap();
    assert!(refused.headers.contains_key("retry-after"));
    assert_error_answer(&refused, 503, "UNAVAILABLE");
    let moves = "SELECT count(*) FROM worker_transitions WHERE to_state = 'PAUSED'";
    assert_eq!(app.select_int(moves).await, 0, "nothing half-written");

    let retried = keyed(&app, path, &key, &body).await;
    assert_eq!(
        (retried.status, retried.replayed()),
        (200, false),
        "{retried:?}"
    );
    assert_eq!(app.select_int(moves).await, 1);
}

/// A move is decided on the worker as read, without a lock, and written by one statement only onto
/// the version read (`edge::write_if_unchanged`). When another change commits in between, that
/// statement writes nothing and the move is decided again on the worker as it is then: the answer
/// is the worker as stored, with one audit row, one event and the record of its key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_move_whose_worker_changed_after_it_was_read_is_decided_again() {
    let app = spawn_app().await;
    let (path, body, key) = &keyed_pause_of_a_running_worker(&app, "w_raced").await;

    // The change commits while the pause's write waits for its row: after the pause read it.
    let meanwhile = app
        .holding(
            "UPDATE workers SET metadata = '{\"changed\": \"meanwhile\"}', version = version + 1 \
             WHERE id = 'w_raced'",
        )
        .await;
    let pause = keyed_in_background(&app, path, &supervisor_writer(None), &key, &body);
    until_a_request_waits_for_a_lock(&app).await;
    meanwhile.batch_execute("COMMIT").await.unwrap();

    let paused = pause.await.unwrap();
    assert_eq!(paused.status, 200, "{paused:?}");
    let answered = paused.json();
    let stored = app
        .get_ok("/api/supervisor/workers/w_raced", &member())
        .await;
    assert_eq!(answered, stored, "the answer is the worker as stored");
    assert_eq!(
        (&answered["version"], &answered["metadata"]["changed"]),
        (&json!(4), &json!("meanwhile")),
        "registered, started, changed meanwhile, paused"
    );
    let pauses = "SELECT count(*) FROM worker_transitions WHERE worker_id = 'w_raced' \
                  AND to_state = 'PAUSED'";
    assert_eq!(app.select_int(pauses).await, 1);
    let events = "SELECT count(*) FROM events WHERE subject_id = 'w_raced' \
                  AND data->>'to' = 'PAUSED'";
    assert_eq!(app.select_int(events).await, 1);
    assert_replay_of(&keyed(&app, path, &key, &body).await, &paused);
}

/// A move whose worker changes under it every time it is read unlocked stops racing: after two
/// tries it is a transaction that locks the row (`edge::write_if_unchanged`). The changes are
/// played by a trigger that makes the move's `UPDATE` find no row, as a change committed between
/// the read and the write would, on the first two tries only.
#[tokio::test]
async fn a_move_that_keeps_finding_its_worker_changed_locks_it_and_completes() {
    let app = spawn_app().await;
    let path = &pause_of_a_running_worker(&app, "w_contended").await;
    app.run_sql(
        "CREATE SEQUENCE tries;
         CREATE FUNCTION changed_under_the_move() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN
             IF nextval('tries') <= 2 THEN RETURN NULL; END IF;
             RETURN NEW;
         END $$;
         CREATE TRIGGER changed_under_the_move BEFORE UPDATE ON workers
             FOR EACH ROW WHEN (NEW.status = 'PAUSED') EXECUTE FUNCTION changed_under_the_move();",
    )
    .await;

    let paused = keyed(&app, path, "contended", &json!({})).await;
    assert_eq!(paused.status, 200, "{paused:?}");
    let stored = app
        .get_ok("/api/supervisor/workers/w_contended", &member())
        .await;
    assert_eq!(paused.json(), stored, "the answer is the worker as stored");
    assert_eq!(
        (&stored["status"], &stored["version"]),
        (&json!("PAUSED"), &json!(3))
    );
    let tries = "SELECT last_value FROM tries";
    assert_eq!(
        app.select_int(tries).await,
        3,
        "two unlocked tries, one locked"
    );
    let pauses = "SELECT count(*) FROM worker_transitions WHERE worker_id = 'w_contended' \
                  AND to_state = 'PAUSED'";
    assert_eq!(app.select_int(pauses).await, 1);
    assert_replay_of(&keyed(&app, path, "contended", &json!({})).await, &paused);
}
