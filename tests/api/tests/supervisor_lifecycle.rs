//! Workers moving through their lifecycle, through the host against a fresh
//! database: every action, every forbidden move, the audit trail, `If-Match`,
//! heartbeats, workspace confinement and idempotent retries.

use api_tests::{TestApp, assert_error, parts, sign, spawn_app, token};
use orchestrator_core::auth::{Claims, Scope};
use orchestrator_core::lifecycle::State;
use orchestrator_core::worker::{WorkerAction, WorkerState};
use reqwest::{Method, Response};
use serde_json::{Value, json};

/// A token for `sub` with both supervisor scopes, in `workspace` if given.
fn supervisor(sub: &str, workspace: Option<&str>) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    sign(Claims {
        sub: sub.into(),
        exp: now + 3600,
        scopes: vec!["supervisor:read".into(), "supervisor:write".into()],
        workspace_id: workspace.map(|w| w.parse().unwrap()),
        ..Default::default()
    })
}

fn operator() -> String {
    supervisor("tester", None)
}

async fn post(app: &TestApp, path: &str, token: &str, body: Option<Value>) -> Response {
    let request = app.request(Method::POST, path, Some(token));
    let request = match body {
        Some(body) => request.json(&body),
        None => request,
    };
    request.send().await.unwrap()
}

/// Registers `id` in `ws_a` and returns it as the API shows it.
async fn register(app: &TestApp, id: &str) -> Value {
    let body = json!({"id": id, "workspace_id": "ws_a"});
    let (status, worker) =
        parts(post(app, "/api/supervisor/workers", &operator(), Some(body)).await).await;
    assert_eq!(status, 201, "{worker}");
    worker
}

async fn act(app: &TestApp, id: &str, action: WorkerAction, body: Option<Value>) -> Response {
    let path = format!("/api/supervisor/workers/{id}/{}", action.as_str());
    post(app, &path, &operator(), body).await
}

/// Performs `action` and returns the worker, asserting 200.
async fn act_ok(app: &TestApp, id: &str, action: WorkerAction, body: Option<Value>) -> Value {
    let (status, worker) = parts(act(app, id, action, body).await).await;
    assert_eq!(status, 200, "{} {id}: {worker}", action.as_str());
    worker
}

/// A body `fail` accepts.
fn with_reason(action: WorkerAction) -> Option<Value> {
    (action == WorkerAction::Fail).then(|| json!({"reason": "crashed"}))
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
    register(app, id).await;
    for &action in path_to(state) {
        act_ok(app, id, action, with_reason(action)).await;
    }
}

async fn transitions(app: &TestApp, id: &str) -> Value {
    let path = format!("/api/supervisor/workers/{id}/transitions");
    let (status, body) = parts(app.get(&path, &operator()).await).await;
    assert_eq!(status, 200, "{body}");
    body
}

async fn count(app: &TestApp, sql: &str) -> i64 {
    let client = app.db.client().await.unwrap();
    client.query_one(sql, &[]).await.unwrap().get(0)
}

#[tokio::test]
async fn a_worker_lives_from_registration_to_completion() {
    let app = spawn_app().await;
    let alice = supervisor("alice", None);
    let body = json!({"id": "w_life", "workspace_id": "ws_a", "metadata": {"model": "small"}});
    let response = post(&app, "/api/supervisor/workers", &alice, Some(body)).await;
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
        let response = post(&app, &path, &alice, body).await;
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
    let client = app.db.client().await.unwrap();
    let events: Vec<(String, String, Value)> = client
        .query(
            "SELECT type, actor, data::text FROM events ORDER BY seq",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| {
            let data: String = row.get(2);
            (row.get(0), row.get(1), serde_json::from_str(&data).unwrap())
        })
        .collect();
    assert_eq!(events.len(), 5);
    assert_eq!(events[0].0, "worker.registered");
    assert_eq!(events[0].2["id"], "w_life");
    assert_eq!(
        events[1..].iter().map(|e| e.2.clone()).collect::<Vec<_>>(),
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
            .all(|e| e.0 == "worker.state.changed" && e.1 == "alice")
    );
}

#[tokio::test]
async fn terminate_works_from_idle_running_and_paused() {
    let app = spawn_app().await;
    for state in [WorkerState::Idle, WorkerState::Running, WorkerState::Paused] {
        let id = format!("w_{}", state.as_str().to_lowercase());
        worker_in(&app, &id, state).await;
        let worker = act_ok(
            &app,
            &id,
            WorkerAction::Terminate,
            Some(json!({"reason": "budget"})),
        )
        .await;
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

#[tokio::test]
async fn every_forbidden_move_is_409_with_where_the_worker_may_go() {
    let app = spawn_app().await;
    for &state in WorkerState::ALL {
        for action in WorkerAction::ALL {
            let id = format!("w_{}_{}", state.as_str().to_lowercase(), action.as_str());
            worker_in(&app, &id, state).await;
            let response = act(&app, &id, action, with_reason(action)).await;
            let target = action.target();
            if state.can_become(target) {
                let (status, worker) = parts(response).await;
                assert_eq!(
                    (status, worker["status"].as_str()),
                    (200, Some(target.as_str())),
                    "{id}"
                );
                continue;
            }
            let body = assert_error(response, 409, "INVALID_STATE_TRANSITION").await;
            let allowed: Vec<&str> = state.allowed_next().iter().map(|s| s.as_str()).collect();
            assert_eq!(
                body["error"]["details"],
                json!({"id": id, "current_state": state.as_str(),
                       "requested_state": target.as_str(), "allowed": allowed}),
                "{id}"
            );
            assert_eq!(
                body["detail"],
                format!(
                    "Worker {id} cannot go from {} to {}",
                    state.as_str(),
                    target.as_str()
                )
            );
            // A refused move changes nothing and leaves no trace.
            let worker = parts(
                app.get(&format!("/api/supervisor/workers/{id}"), &operator())
                    .await,
            )
            .await
            .1;
            assert_eq!(worker["status"], state.as_str());
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
    register(&app, "w_v").await;
    let start = |if_match: &'static str| {
        app.request(
            Method::POST,
            "/api/supervisor/workers/w_v/start",
            Some(&operator()),
        )
        .header("if-match", if_match)
        .send()
    };
    let body = assert_error(start("\"2\"").await.unwrap(), 412, "VERSION_MISMATCH").await;
    assert_eq!(body["error"]["details"]["current_version"], 1);
    let worker = parts(app.get("/api/supervisor/workers/w_v", &operator()).await)
        .await
        .1;
    assert_eq!(
        (worker["status"].as_str(), worker["version"].as_i64()),
        (Some("IDLE"), Some(1))
    );
    assert_eq!(transitions(&app, "w_v").await["total"], 1);

    let response = start("\"1\"").await.unwrap();
    assert_eq!(response.headers()["etag"], "\"2\"");
    assert_eq!(parts(response).await.1["status"], "RUNNING");
    // The old tag is now stale; `*` matches any version.
    let pause = |if_match: &'static str| {
        app.request(
            Method::POST,
            "/api/supervisor/workers/w_v/pause",
            Some(&operator()),
        )
        .header("if-match", if_match)
        .send()
    };
    assert_error(pause("\"1\"").await.unwrap(), 412, "VERSION_MISMATCH").await;
    let response = pause("*").await.unwrap();
    assert_eq!(response.headers()["etag"], "\"3\"");

    // A worker the caller cannot see is 404 whatever If-Match says: its version must not leak.
    let outsider = supervisor("tester", Some("ws_b"));
    let response = app
        .request(
            Method::POST,
            "/api/supervisor/workers/w_v/resume",
            Some(&outsider),
        )
        .header("if-match", "\"99\"")
        .send()
        .await
        .unwrap();
    assert_error(response, 404, "NOT_FOUND").await;
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
        let body = assert_error(
            act(&app, "w_r", WorkerAction::Fail, body).await,
            422,
            "VALIDATION_FAILED",
        )
        .await;
        assert_eq!(body["error"]["details"]["fields"][0]["field"], "reason");
    }
    let too_long = json!({"reason": "x".repeat(1001)});
    assert_error(
        act(&app, "w_r", WorkerAction::Fail, Some(too_long)).await,
        422,
        "VALIDATION_FAILED",
    )
    .await;
    let typo = assert_error(
        act(
            &app,
            "w_r",
            WorkerAction::Pause,
            Some(json!({"reson": "x"})),
        )
        .await,
        422,
        "VALIDATION_FAILED",
    )
    .await;
    assert_eq!(typo["error"]["details"]["fields"][0]["field"], "reson");
    let not_json = app
        .request(
            Method::POST,
            "/api/supervisor/workers/w_r/pause",
            Some(&operator()),
        )
        .header("content-type", "application/json")
        .body("{reason")
        .send()
        .await
        .unwrap();
    assert_error(not_json, 400, "BAD_REQUEST").await;
    assert_eq!(transitions(&app, "w_r").await["total"], 2);

    let longest = "é".repeat(1000);
    let worker = act_ok(
        &app,
        "w_r",
        WorkerAction::Fail,
        Some(json!({"reason": longest})),
    )
    .await;
    assert_eq!(worker["status"], "FAILED");
    let trail = transitions(&app, "w_r").await;
    assert_eq!(trail["transitions"][2]["reason"], longest);
}

#[tokio::test]
async fn heartbeats_record_liveness_without_changing_the_worker() {
    let app = spawn_app().await;
    let registered = register(&app, "w_hb").await;
    assert!(registered["last_heartbeat_at"].is_null());
    let events_before = count(&app, "SELECT count(*) FROM events").await;

    let response = post(
        &app,
        "/api/supervisor/workers/w_hb/heartbeat",
        &operator(),
        None,
    )
    .await;
    assert_eq!(response.headers()["etag"], "\"1\"");
    let (status, first) = parts(response).await;
    assert_eq!(status, 200);
    let beat = first["last_heartbeat_at"].as_str().unwrap().to_owned();
    assert!(beat.ends_with('Z') && beat.as_str() >= registered["created_at"].as_str().unwrap());
    assert_eq!(
        (first["version"].as_i64(), &first["updated_at"]),
        (Some(1), &registered["updated_at"])
    );

    let second = parts(
        post(
            &app,
            "/api/supervisor/workers/w_hb/heartbeat",
            &operator(),
            Some(json!({})),
        )
        .await,
    )
    .await
    .1;
    assert!(second["last_heartbeat_at"].as_str().unwrap() >= beat.as_str());
    assert_eq!(second["version"], 1);
    assert_eq!(transitions(&app, "w_hb").await["total"], 1);
    assert_eq!(
        count(&app, "SELECT count(*) FROM events").await,
        events_before
    );

    let body = assert_error(
        post(
            &app,
            "/api/supervisor/workers/w_hb/heartbeat",
            &operator(),
            Some(json!({"alive": true})),
        )
        .await,
        422,
        "VALIDATION_FAILED",
    )
    .await;
    assert_eq!(body["error"]["details"]["fields"][0]["field"], "alive");
    let stale = app
        .request(
            Method::POST,
            "/api/supervisor/workers/w_hb/heartbeat",
            Some(&operator()),
        )
        .header("if-match", "\"7\"")
        .send()
        .await
        .unwrap();
    assert_error(stale, 412, "VERSION_MISMATCH").await;

    // A finished worker's heartbeat is recorded, and the answer tells its process it is finished.
    act_ok(&app, "w_hb", WorkerAction::Terminate, None).await;
    let late = parts(
        post(
            &app,
            "/api/supervisor/workers/w_hb/heartbeat",
            &operator(),
            None,
        )
        .await,
    )
    .await;
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
        assert_error(post(&app, &path, &operator(), None).await, 404, "NOT_FOUND").await;
    }
}

#[tokio::test]
async fn actions_check_the_token_then_the_worker() {
    let app = spawn_app().await;
    register(&app, "w_auth").await;
    let reader = token(&[Scope::SupervisorRead], None);
    let outsider = supervisor("tester", Some("ws_b"));
    let insider = supervisor("tester", Some("ws_a"));
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
        let anonymous = app.request(Method::POST, path, None).send().await.unwrap();
        assert_error(anonymous, 401, "UNAUTHENTICATED").await;
        assert_error(
            post(&app, path, &reader, body.clone()).await,
            403,
            "FORBIDDEN",
        )
        .await;
        // Scope comes before existence.
        let unknown = path.replace("w_auth", "w_unknown");
        assert_error(
            post(&app, &unknown, &reader, body.clone()).await,
            403,
            "FORBIDDEN",
        )
        .await;
        assert_error(
            post(&app, &unknown, &operator(), body.clone()).await,
            404,
            "NOT_FOUND",
        )
        .await;
        let malformed = path.replace("w_auth", "w%20auth");
        assert_error(
            post(&app, &malformed, &operator(), body.clone()).await,
            404,
            "NOT_FOUND",
        )
        .await;
        // Another workspace's worker is as unknown as a missing one.
        let hidden = assert_error(
            post(&app, path, &outsider, body.clone()).await,
            404,
            "NOT_FOUND",
        )
        .await;
        assert_eq!(hidden["detail"], "Worker w_auth not found");
        let wrong_method = app
            .request(Method::GET, path, Some(&operator()))
            .send()
            .await
            .unwrap();
        assert_eq!(wrong_method.headers()["allow"], "POST");
        assert_error(wrong_method, 405, "METHOD_NOT_ALLOWED").await;
    }
    let worker = parts(app.get("/api/supervisor/workers/w_auth", &operator()).await)
        .await
        .1;
    assert_eq!(
        (worker["status"].as_str(), worker["version"].as_i64()),
        (Some("IDLE"), Some(1))
    );
    assert!(worker["last_heartbeat_at"].is_null());
    assert_error(
        post(
            &app,
            "/api/supervisor/workers/w_auth/launch",
            &operator(),
            None,
        )
        .await,
        404,
        "NOT_FOUND",
    )
    .await;

    // The worker's own workspace may move it.
    let response = post(&app, "/api/supervisor/workers/w_auth/start", &insider, None).await;
    assert_eq!(parts(response).await.1["status"], "RUNNING");
}

#[tokio::test]
async fn a_retried_registration_is_answered_once() {
    let app = spawn_app().await;
    let register_with_key = |key: &'static str, body: Value| {
        app.request(Method::POST, "/api/supervisor/workers", Some(&operator()))
            .header("idempotency-key", key)
            .json(&body)
            .send()
    };
    // No id: the first answer's generated id is what a retry must see again.
    let body = json!({"workspace_id": "ws_a", "metadata": {"n": 1}});
    let first = register_with_key("key-1", body.clone()).await.unwrap();
    assert!(!first.headers().contains_key("idempotent-replayed"));
    let first_etag = first.headers()["etag"].clone();
    let (first_status, first_bytes) = (first.status(), first.bytes().await.unwrap());
    assert_eq!(first_status, 201);

    let replay = register_with_key("key-1", body.clone()).await.unwrap();
    assert_eq!(replay.headers()["idempotent-replayed"], "true");
    assert_eq!(replay.headers()["etag"], first_etag);
    assert_eq!(replay.status(), first_status);
    assert_eq!(replay.bytes().await.unwrap(), first_bytes);
    assert_eq!(count(&app, "SELECT count(*) FROM workers").await, 1);
    assert_eq!(count(&app, "SELECT count(*) FROM events").await, 1);
    assert_eq!(
        count(&app, "SELECT count(*) FROM worker_transitions").await,
        1
    );

    let reused = register_with_key("key-1", json!({"workspace_id": "ws_a"}))
        .await
        .unwrap();
    assert_error(reused, 422, "IDEMPOTENCY_KEY_REUSED").await;
    assert_eq!(count(&app, "SELECT count(*) FROM workers").await, 1);

    // Another key is another request.
    let second = register_with_key("key-2", body).await.unwrap();
    assert_eq!(second.status(), 201);
    assert_eq!(count(&app, "SELECT count(*) FROM workers").await, 2);
}

#[tokio::test]
async fn a_retried_action_replays_instead_of_conflicting() {
    let app = spawn_app().await;
    register(&app, "w_retry").await;
    let start = || {
        app.request(
            Method::POST,
            "/api/supervisor/workers/w_retry/start",
            Some(&operator()),
        )
        .header("idempotency-key", "start-once")
        .json(&json!({"reason": "go"}))
        .send()
    };
    let (status, worker) = parts(start().await.unwrap()).await;
    assert_eq!((status, worker["version"].as_i64()), (200, Some(2)));
    let replay = start().await.unwrap();
    assert_eq!(replay.headers()["idempotent-replayed"], "true");
    assert_eq!(parts(replay).await, (200, worker));
    assert_eq!(transitions(&app, "w_retry").await["total"], 2);
    assert_eq!(count(&app, "SELECT count(*) FROM events").await, 2);
    // Without the key, the same move is a second attempt, which the state machine refuses.
    let again = act(&app, "w_retry", WorkerAction::Start, None).await;
    assert_error(again, 409, "INVALID_STATE_TRANSITION").await;
}

#[tokio::test]
async fn concurrent_moves_of_one_worker_are_decided_one_at_a_time() {
    let app = spawn_app().await;
    register(&app, "w_race").await;
    let attempts = (0..8).map(|_| act(&app, "w_race", WorkerAction::Start, None));
    let statuses: Vec<u16> = futures_util::future::join_all(attempts)
        .await
        .into_iter()
        .map(|response| response.status().as_u16())
        .collect();
    assert_eq!(
        statuses.iter().filter(|&&s| s == 200).count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|&&s| s == 409).count(),
        7,
        "{statuses:?}"
    );
    let worker = parts(app.get("/api/supervisor/workers/w_race", &operator()).await)
        .await
        .1;
    assert_eq!(
        (worker["status"].as_str(), worker["version"].as_i64()),
        (Some("RUNNING"), Some(2))
    );
    assert_eq!(transitions(&app, "w_race").await["total"], 2);
    assert_eq!(count(&app, "SELECT count(*) FROM events").await, 2);
}

#[tokio::test]
async fn concurrent_registrations_of_one_id_create_one_worker() {
    let app = spawn_app().await;
    let operator = operator();
    let attempts = (0..8).map(|_| {
        let body = json!({"id": "w_twin", "workspace_id": "ws_a"});
        post(&app, "/api/supervisor/workers", &operator, Some(body))
    });
    let statuses: Vec<u16> = futures_util::future::join_all(attempts)
        .await
        .into_iter()
        .map(|response| response.status().as_u16())
        .collect();
    assert_eq!(
        statuses.iter().filter(|&&s| s == 201).count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|&&s| s == 409).count(),
        7,
        "{statuses:?}"
    );
    assert_eq!(count(&app, "SELECT count(*) FROM workers").await, 1);
    assert_eq!(
        count(&app, "SELECT count(*) FROM worker_transitions").await,
        1
    );
    assert_eq!(count(&app, "SELECT count(*) FROM events").await, 1);
}
