//! Workers moving through their lifecycle, through the host against a fresh
//! database: every action, every forbidden move, the audit trail, `If-Match`,
//! heartbeats, workspace confinement and idempotent retries.

use api_tests::{
    Answer, TestApp, WORKSPACE, assert_error, assert_invalid_field, assert_not_found,
    assert_one_of, assert_replay_of, parts, spawn_app, supervisor_writer, token, token_for,
    worker_may_become,
};
use orchestrator_core::auth::Scope;
use orchestrator_core::lifecycle::State;
use orchestrator_core::worker::{WorkerAction, WorkerState};
use reqwest::{Method, Response};
use serde_json::{Value, json};

fn operator() -> String {
    supervisor_writer(None)
}

async fn act(app: &TestApp, id: &str, action: WorkerAction, body: Option<Value>) -> Response {
    let path = format!("/api/supervisor/workers/{id}/{}", action.as_str());
    app.post_optional(&path, &operator(), body).await
}

/// The reason `fail` needs; the other actions go without one.
fn reason_for(action: WorkerAction) -> Option<&'static str> {
    (action == WorkerAction::Fail).then_some("crashed")
}

/// A body `action` accepts.
fn with_reason(action: WorkerAction) -> Option<Value> {
    reason_for(action).map(|reason| json!({ "reason": reason }))
}

/// The actions that take a freshly registered worker to `state`.
fn path_to(state: WorkerState) -> &'static [WorkerAction] {
    use WorkerAction::*;
    match state {
        WorkerState::Idle => &[],
        WorkerState::Running => &[Start],
        WorkerState::Paused => &[Start, Pause],
        WorkerState::Completed => &[Start, Complete],
        WorkerState::Failed => &[Start, Fail],
        WorkerState::Terminated => &[Terminate],
    }
}

/// Registers `id` and drives it to `state`.
async fn worker_in(app: &TestApp, id: &str, state: WorkerState) {
    app.register_worker(id, WORKSPACE).await;
    for &action in path_to(state) {
        app.move_worker(id, action.as_str(), reason_for(action))
            .await;
    }
}

/// Worker `id` as an operator reads it.
async fn worker(app: &TestApp, id: &str) -> Value {
    app.get_ok(&format!("/api/supervisor/workers/{id}"), &operator())
        .await
}

async fn transitions(app: &TestApp, id: &str) -> Value {
    let path = format!("/api/supervisor/workers/{id}/transitions");
    app.get_ok(&path, &operator()).await
}

/// Asserts that of `attempts` made at once exactly one got `winner`, and every other a 409 `loser`.
async fn assert_one_wins(
    attempts: impl IntoIterator<Item = impl Future<Output = Response>>,
    winner: u16,
    loser: &str,
) {
    let answers = futures_util::future::join_all(attempts.into_iter().map(async |attempt| {
        let (status, body) = parts(attempt.await).await;
        assert_one_of(status, &body, &[(winner, ""), (409, loser)]);
        status
    }))
    .await;
    assert_eq!(
        answers.iter().filter(|&&s| s == winner).count(),
        1,
        "{answers:?}"
    );
}

#[tokio::test]
async fn a_worker_lives_from_registration_to_completion() {
    let app = spawn_app().await;
    let alice = token_for(
        "alice",
        &[Scope::SupervisorRead, Scope::SupervisorWrite],
        None,
    );
    let body = json!({"id": "w_life", "workspace_id": "ws_a", "metadata": {"model": "small"}});
    let response = app.post("/api/supervisor/workers", &alice, body).await;
    assert_eq!(response.headers()["etag"], "\"1\"");
    assert_eq!(
        response.headers()["location"],
        "/api/supervisor/workers/w_life"
    );
    let (status, worker) = parts(response).await;
    assert_eq!(status, 201);
    assert_eq!(worker["status"], "IDLE");
    assert_eq!(worker["version"], 1);
    assert_eq!(worker["metadata"], json!({"model": "small"}));

    let steps = [
        (WorkerAction::Start, Some("go"), "RUNNING"),
        (WorkerAction::Pause, None, "PAUSED"),
        (WorkerAction::Resume, Some("back"), "RUNNING"),
        (WorkerAction::Complete, Some("done"), "COMPLETED"),
    ];
    for (i, (action, reason, status)) in steps.into_iter().enumerate() {
        let body = reason.map(|r| json!({"reason": r}));
        let path = format!("/api/supervisor/workers/w_life/{}", action.as_str());
        let response = app.post_optional(&path, &alice, body).await;
        let version = i as i64 + 2;
        assert_eq!(response.headers()["etag"], format!("\"{version}\""));
        let (code, worker) = parts(response).await;
        assert_eq!(code, 200, "{worker}");
        assert_eq!(
            (worker["status"].as_str(), worker["version"].as_i64()),
            (Some(status), Some(version))
        );
        assert!(worker["updated_at"].as_str() >= worker["created_at"].as_str());
    }

    let response = app.get("/api/supervisor/workers/w_life", &alice).await;
    assert_eq!(response.headers()["etag"], "\"5\"");
    assert_eq!(parts(response).await.1["status"], "COMPLETED");

    let trail = transitions(&app, "w_life").await;
    assert_eq!(trail["total"], 5);
    let rows = trail["transitions"].as_array().unwrap();
    let moves: Vec<(Value, Value, Value)> = rows
        .iter()
        .map(|r| {
            (
                r["from_state"].clone(),
                r["to_state"].clone(),
                r["reason"].clone(),
            )
        })
        .collect();
    assert_eq!(
        moves,
        [
            (Value::Null, json!("IDLE"), Value::Null),
            (json!("IDLE"), json!("RUNNING"), json!("go")),
            (json!("RUNNING"), json!("PAUSED"), Value::Null),
            (json!("PAUSED"), json!("RUNNING"), json!("back")),
            (json!("RUNNING"), json!("COMPLETED"), json!("done")),
        ]
    );
    assert!(rows.iter().all(|r| r["actor"] == "alice"));
    let times: Vec<&str> = rows.iter().map(|r| r["at"].as_str().unwrap()).collect();
    assert!(times.windows(2).all(|pair| pair[0] <= pair[1]), "{times:?}");
    assert!(
        times.iter().all(|t| t.ends_with('Z') && t.len() == 24),
        "{times:?}"
    );

    // Registration and each move wrote one event, in the order they happened.
    let events = app.events().await;
    assert_eq!(events.len(), 5);
    assert_eq!(events[0].kind, "worker.registered");
    assert_eq!(events[0].data["id"], "w_life");
    assert_eq!(
        events[1..]
            .iter()
            .map(|e| e.data.clone())
            .collect::<Vec<_>>(),
        [
            json!({"from": "IDLE", "to": "RUNNING", "reason": "go"}),
            json!({"from": "RUNNING", "to": "PAUSED", "reason": null}),
            json!({"from": "PAUSED", "to": "RUNNING", "reason": "back"}),
            json!({"from": "RUNNING", "to": "COMPLETED", "reason": "done"}),
        ]
    );
    assert!(
        events[1..]
            .iter()
            .all(|e| e.kind == "worker.state.changed" && e.actor == "alice")
    );
}

#[tokio::test]
async fn terminate_works_from_idle_running_and_paused() {
    let app = spawn_app().await;
    for state in [WorkerState::Idle, WorkerState::Running, WorkerState::Paused] {
        let id = format!("w_{}", state.as_str().to_lowercase());
        worker_in(&app, &id, state).await;
        let worker = app.move_worker(&id, "terminate", Some("budget")).await;
        assert_eq!(worker["status"], "TERMINATED");
        let trail = transitions(&app, &id).await;
        let last = trail["transitions"]
            .as_array()
            .unwrap()
            .last()
            .unwrap()
            .clone();
        assert_eq!(last["from_state"], state.as_str());
        assert_eq!(
            (last["to_state"].as_str(), last["reason"].as_str()),
            (Some("TERMINATED"), Some("budget"))
        );
    }
}

/// Each action and the state it asks for, as contract §6 names them.
const ACTIONS: [(WorkerAction, &str); 6] = [
    (WorkerAction::Start, "RUNNING"),
    (WorkerAction::Pause, "PAUSED"),
    (WorkerAction::Resume, "RUNNING"),
    (WorkerAction::Complete, "COMPLETED"),
    (WorkerAction::Fail, "FAILED"),
    (WorkerAction::Terminate, "TERMINATED"),
];

#[tokio::test]
async fn every_forbidden_move_is_409_with_where_the_worker_may_go() {
    let app = spawn_app().await;
    assert_eq!(ACTIONS.len(), WorkerAction::ALL.len());
    for &state in WorkerState::ALL {
        let current = state.as_str();
        for (action, target) in ACTIONS {
            let id = format!("w_{}_{}", current.to_lowercase(), action.as_str());
            worker_in(&app, &id, state).await;
            let response = act(&app, &id, action, with_reason(action)).await;
            if worker_may_become(current).contains(&target) {
                let (status, worker) = parts(response).await;
                assert_eq!(
                    (status, worker["status"].as_str()),
                    (200, Some(target)),
                    "{id}"
                );
                continue;
            }
            let body = assert_error(response, 409, "INVALID_STATE_TRANSITION").await;
            assert_eq!(
                body["error"]["details"],
                json!({"id": id, "current_state": current, "requested_state": target,
                       "allowed": worker_may_become(current)}),
                "{id}"
            );
            assert_eq!(
                body["detail"],
                format!("Worker {id} cannot go from {current} to {target}")
            );
            // A refused move changes nothing and leaves no trace.
            let worker = worker(&app, &id).await;
            assert_eq!(worker["status"], current);
            assert_eq!(worker["version"], path_to(state).len() as i64 + 1);
            assert_eq!(
                transitions(&app, &id).await["total"],
                path_to(state).len() as i64 + 1
            );
        }
    }
}

#[tokio::test]
async fn if_match_guards_every_action() {
    let app = spawn_app().await;
    app.register_worker("w_v", WORKSPACE).await;
    let act_if_match = async |action: &str, token: &str, if_match: &str| {
        let path = format!("/api/supervisor/workers/w_v/{action}");
        app.post_with(&path, token, ("if-match", if_match), None)
            .await
    };
    let start = async |if_match: &str| act_if_match("start", &operator(), if_match).await;
    let body = assert_error(start("\"2\"").await, 412, "VERSION_MISMATCH").await;
    assert_eq!(body["error"]["details"]["current_version"], 1);
    let unchanged = worker(&app, "w_v").await;
    assert_eq!(
        (unchanged["status"].as_str(), unchanged["version"].as_i64()),
        (Some("IDLE"), Some(1))
    );
    assert_eq!(transitions(&app, "w_v").await["total"], 1);

    let response = start("\"1\"").await;
    assert_eq!(response.headers()["etag"], "\"2\"");
    assert_eq!(parts(response).await.1["status"], "RUNNING");
    // The old tag is now stale; `*` matches any version.
    let pause = async |if_match: &str| act_if_match("pause", &operator(), if_match).await;
    assert_error(pause("\"1\"").await, 412, "VERSION_MISMATCH").await;
    let response = pause("*").await;
    assert_eq!(response.headers()["etag"], "\"3\"");

    // A worker the caller cannot see is 404 whatever If-Match says: its version must not leak.
    let outsider = supervisor_writer(Some("ws_b"));
    let response = act_if_match("resume", &outsider, "\"99\"").await;
    assert_not_found(response).await;

    // Every action, from a state it may leave: a stale tag is refused and changes nothing, the
    // current one goes through.
    for (action, target) in ACTIONS {
        let from = [WorkerState::Idle, WorkerState::Running, WorkerState::Paused]
            .into_iter()
            .find(|state| worker_may_become(state.as_str()).contains(&target))
            .expect("some live state allows it");
        let id = format!("w_v_{}", action.as_str());
        worker_in(&app, &id, from).await;
        let version = path_to(from).len() as i64 + 1;
        let path = format!("/api/supervisor/workers/{id}/{}", action.as_str());
        let send = async |tag: String| {
            app.post_with(&path, &operator(), ("if-match", &tag), with_reason(action))
                .await
        };
        let stale = send(format!("\"{}\"", version - 1)).await;
        let body = assert_error(stale, 412, "VERSION_MISMATCH").await;
        assert_eq!(body["error"]["details"]["current_version"], version, "{id}");
        let unchanged = worker(&app, &id).await;
        assert_eq!(
            (unchanged["status"].as_str(), unchanged["version"].as_i64()),
            (Some(from.as_str()), Some(version)),
            "{id}"
        );
        assert_eq!(transitions(&app, &id).await["total"], version, "{id}");

        let response = send(format!("\"{version}\"")).await;
        assert_eq!(response.headers()["etag"], format!("\"{}\"", version + 1));
        let (status, moved) = parts(response).await;
        assert_eq!(
            (status, moved["status"].as_str()),
            (200, Some(target)),
            "{id}"
        );
    }
}

#[tokio::test]
async fn reasons_are_optional_except_to_fail_and_bodies_are_checked() {
    let app = spawn_app().await;
    worker_in(&app, "w_r", WorkerState::Running).await;
    for body in [
        None,
        Some(json!({})),
        Some(json!({"reason": ""})),
        Some(json!({"reason": "   "})),
    ] {
        assert_invalid_field(act(&app, "w_r", WorkerAction::Fail, body).await, "reason").await;
    }
    let too_long = json!({"reason": "x".repeat(1001)});
    assert_error(
        act(&app, "w_r", WorkerAction::Fail, Some(too_long)).await,
        422,
        "VALIDATION_FAILED",
    )
    .await;
    let typo = json!({"reson": "x"});
    assert_invalid_field(
        act(&app, "w_r", WorkerAction::Pause, Some(typo)).await,
        "reson",
    )
    .await;
    let not_json = app
        .post_raw(
            "/api/supervisor/workers/w_r/pause",
            Some(&operator()),
            "application/json",
            "{reason",
        )
        .await;
    assert_error(not_json, 400, "BAD_REQUEST").await;
    assert_eq!(transitions(&app, "w_r").await["total"], 2);

    let longest = "é".repeat(1000);
    let worker = app.move_worker("w_r", "fail", Some(&longest)).await;
    assert_eq!(worker["status"], "FAILED");
    let trail = transitions(&app, "w_r").await;
    assert_eq!(trail["transitions"][2]["reason"], longest);
}

#[tokio::test]
async fn heartbeats_record_liveness_without_changing_the_worker() {
    let app = spawn_app().await;
    let registered = app.register_worker("w_hb", WORKSPACE).await;
    assert!(registered["last_heartbeat_at"].is_null());
    let events_before = app.select_int("SELECT count(*) FROM events").await;
    let heartbeat = "/api/supervisor/workers/w_hb/heartbeat";

    let response = app.post_optional(heartbeat, &operator(), None).await;
    assert_eq!(response.headers()["etag"], "\"1\"");
    let (status, first) = parts(response).await;
    assert_eq!(status, 200);
    let beat = first["last_heartbeat_at"].as_str().unwrap().to_owned();
    assert!(beat.ends_with('Z') && beat.as_str() >= registered["created_at"].as_str().unwrap());
    assert_eq!(
        (first["version"].as_i64(), &first["updated_at"]),
        (Some(1), &registered["updated_at"])
    );

    let second = parts(app.post(heartbeat, &operator(), json!({})).await)
        .await
        .1;
    assert!(second["last_heartbeat_at"].as_str().unwrap() >= beat.as_str());
    assert_eq!(second["version"], 1);
    assert_eq!(transitions(&app, "w_hb").await["total"], 1);
    assert_eq!(
        app.select_int("SELECT count(*) FROM events").await,
        events_before
    );

    assert_invalid_field(
        app.post(heartbeat, &operator(), json!({"alive": true}))
            .await,
        "alive",
    )
    .await;
    let stale = app
        .post_with(heartbeat, &operator(), ("if-match", "\"7\""), None)
        .await;
    assert_error(stale, 412, "VERSION_MISMATCH").await;

    // A finished worker's heartbeat is recorded, and the answer tells its process it is finished.
    app.move_worker("w_hb", "terminate", None).await;
    let late = parts(app.post_optional(heartbeat, &operator(), None).await).await;
    assert_eq!(
        (
            late.0,
            late.1["status"].as_str(),
            late.1["version"].as_i64()
        ),
        (200, Some("TERMINATED"), Some(2))
    );

    for id in ["w_none", "bad%20id"] {
        let path = format!("/api/supervisor/workers/{id}/heartbeat");
        assert_not_found(app.post_optional(&path, &operator(), None).await).await;
    }
}

#[tokio::test]
async fn actions_check_the_token_then_the_worker() {
    let app = spawn_app().await;
    app.register_worker("w_auth", WORKSPACE).await;
    let reader = token(&[Scope::SupervisorRead], None);
    let outsider = supervisor_writer(Some("ws_b"));
    let insider = supervisor_writer(Some(WORKSPACE));
    // Each action with a body it accepts (`fail` needs a reason), and the heartbeat.
    let mut calls: Vec<(String, Option<Value>)> = WorkerAction::ALL
        .iter()
        .map(|&a| {
            (
                format!("/api/supervisor/workers/w_auth/{}", a.as_str()),
                with_reason(a),
            )
        })
        .collect();
    calls.push(("/api/supervisor/workers/w_auth/heartbeat".into(), None));
    for (path, body) in &calls {
        let post =
            async |path: &str, token: &str| app.post_optional(path, token, body.clone()).await;
        let anonymous = app.send_anonymous(Method::POST, path).await;
        assert_error(anonymous, 401, "UNAUTHENTICATED").await;
        assert_error(post(path, &reader).await, 403, "FORBIDDEN").await;
        // Scope comes before existence.
        let unknown = path.replace("w_auth", "w_unknown");
        assert_error(post(&unknown, &reader).await, 403, "FORBIDDEN").await;
        assert_not_found(post(&unknown, &operator()).await).await;
        let malformed = path.replace("w_auth", "w%20auth");
        assert_not_found(post(&malformed, &operator()).await).await;
        // Another workspace's worker is as unknown as a missing one.
        let hidden = assert_not_found(post(path, &outsider).await).await;
        assert_eq!(hidden["detail"], "Worker w_auth not found");
        let wrong_method = app.get(path, &operator()).await;
        assert_eq!(wrong_method.headers()["allow"], "POST");
        assert_error(wrong_method, 405, "METHOD_NOT_ALLOWED").await;
    }
    let worker = worker(&app, "w_auth").await;
    assert_eq!(
        (worker["status"].as_str(), worker["version"].as_i64()),
        (Some("IDLE"), Some(1))
    );
    assert!(worker["last_heartbeat_at"].is_null());
    let launch = "/api/supervisor/workers/w_auth/launch";
    assert_not_found(app.post_optional(launch, &operator(), None).await).await;

    // The worker's own workspace may move it.
    let start = "/api/supervisor/workers/w_auth/start";
    let response = app.post_optional(start, &insider, None).await;
    assert_eq!(parts(response).await.1["status"], "RUNNING");
}

#[tokio::test]
async fn a_retried_registration_is_answered_once() {
    let app = spawn_app().await;
    let register_with_key = async |key: &str, body: Value| {
        let key = ("idempotency-key", key);
        app.post_with("/api/supervisor/workers", &operator(), key, Some(body))
            .await
    };
    // No id: the first answer's generated id is what a retry must see again.
    let body = json!({"workspace_id": "ws_a", "metadata": {"n": 1}});
    let first = Answer::read(register_with_key("key-1", body.clone()).await).await;
    assert_eq!(first.status, 201);

    let replay = Answer::read(register_with_key("key-1", body.clone()).await).await;
    assert_replay_of(&replay, &first);
    assert_eq!(app.select_int("SELECT count(*) FROM workers").await, 1);
    assert_eq!(app.select_int("SELECT count(*) FROM events").await, 1);
    assert_eq!(
        app.select_int("SELECT count(*) FROM worker_transitions")
            .await,
        1
    );

    let reused = register_with_key("key-1", json!({"workspace_id": "ws_a"})).await;
    assert_error(reused, 422, "IDEMPOTENCY_KEY_REUSED").await;
    assert_eq!(app.select_int("SELECT count(*) FROM workers").await, 1);

    // Another key is another request.
    let second = register_with_key("key-2", body).await;
    assert_eq!(second.status(), 201);
    assert_eq!(app.select_int("SELECT count(*) FROM workers").await, 2);
}

#[tokio::test]
async fn a_retried_action_replays_instead_of_conflicting() {
    let app = spawn_app().await;
    app.register_worker("w_retry", WORKSPACE).await;
    let start = async || {
        let path = "/api/supervisor/workers/w_retry/start";
        let key = ("idempotency-key", "start-once");
        let body = json!({"reason": "go"});
        app.post_with(path, &operator(), key, Some(body)).await
    };
    let (status, worker) = parts(start().await).await;
    assert_eq!((status, worker["version"].as_i64()), (200, Some(2)));
    let replay = start().await;
    assert_eq!(replay.headers()["idempotent-replayed"], "true");
    assert_eq!(parts(replay).await, (200, worker));
    assert_eq!(transitions(&app, "w_retry").await["total"], 2);
    assert_eq!(app.select_int("SELECT count(*) FROM events").await, 2);
    // Without the key, the same move is a second attempt, which the state machine refuses.
    let again = act(&app, "w_retry", WorkerAction::Start, None).await;
    assert_error(again, 409, "INVALID_STATE_TRANSITION").await;
}

#[tokio::test]
async fn concurrent_moves_of_one_worker_are_decided_one_at_a_time() {
    let app = spawn_app().await;
    app.register_worker("w_race", WORKSPACE).await;
    let attempts = (0..8).map(|_| act(&app, "w_race", WorkerAction::Start, None));
    assert_one_wins(attempts, 200, "INVALID_STATE_TRANSITION").await;
    let worker = worker(&app, "w_race").await;
    assert_eq!(
        (worker["status"].as_str(), worker["version"].as_i64()),
        (Some("RUNNING"), Some(2))
    );
    assert_eq!(transitions(&app, "w_race").await["total"], 2);
    assert_eq!(app.select_int("SELECT count(*) FROM events").await, 2);
}

#[tokio::test]
async fn concurrent_registrations_of_one_id_create_one_worker() {
    let app = spawn_app().await;
    let operator = operator();
    let attempts = (0..8).map(|_| {
        let body = json!({"id": "w_twin", "workspace_id": WORKSPACE});
        app.post("/api/supervisor/workers", &operator, body)
    });
    assert_one_wins(attempts, 201, "ALREADY_EXISTS").await;
    assert_eq!(app.select_int("SELECT count(*) FROM workers").await, 1);
    assert_eq!(
        app.select_int("SELECT count(*) FROM worker_transitions")
            .await,
        1
    );
    assert_eq!(app.select_int("SELECT count(*) FROM events").await, 1);
}

/// A move or a heartbeat answers the worker as it then stands: the service builds the answer
/// from the locked row and writes the change with the transaction's last statement, so the two
/// must agree to the millisecond and the version.
#[tokio::test]
async fn a_move_and_a_heartbeat_answer_the_worker_as_it_is_stored() {
    let app = spawn_app().await;
    app.register_worker("w_stored", WORKSPACE).await;
    let path = "/api/supervisor/workers/w_stored";
    for action in ["start", "heartbeat", "pause", "resume", "heartbeat"] {
        let (status, answered) = parts(
            app.post_optional(&format!("{path}/{action}"), &operator(), None)
                .await,
        )
        .await;
        assert_eq!(status, 200, "{action}: {answered}");
        assert_eq!(answered, app.get_ok(path, &operator()).await, "{action}");
    }
}
