//! Registering, reading, listing and counting workers, and reading their
//! audit trail, through the host against a fresh database.

use api_tests::{
    TestApp, assert_error, assert_generated_id, assert_invalid_field, assert_not_found, keys,
    lacking, paging, parts, spawn_app, supervisor_writer, texts, token,
};
use orchestrator_core::auth::Scope;
use reqwest::{Method, Response};
use serde_json::{Value, json};

const WORKERS: &str = "/api/supervisor/workers";

async fn register_as(app: &TestApp, token: &str, body: Value) -> Response {
    app.post(WORKERS, token, body).await
}

async fn metrics(app: &TestApp, token: &str, query: &str) -> Value {
    app.get_ok(&format!("/api/supervisor/metrics{query}"), token)
        .await
}

/// The metrics body for `total_workers` and the counts in the contract's order of states
/// (IDLE, RUNNING, PAUSED, COMPLETED, FAILED, TERMINATED).
fn counted(total: i64, [idle, running, paused, completed, failed, terminated]: [i64; 6]) -> Value {
    json!({"total_workers": total, "by_status": {
        "IDLE": idle, "RUNNING": running, "PAUSED": paused,
        "COMPLETED": completed, "FAILED": failed, "TERMINATED": terminated}})
}

fn ids(list: &Value) -> Vec<&str> {
    texts(&list["workers"], "id")
}

#[tokio::test]
async fn registering_defaults_generates_and_echoes() {
    let app = spawn_app().await;
    let confined = supervisor_writer(Some("ws_a"));
    let response = register_as(&app, &confined, json!({})).await;
    assert_eq!(response.headers()["etag"], "\"1\"");
    let (status, worker) = parts(response).await;
    assert_eq!(status, 201);
    let id = worker["id"].as_str().unwrap();
    assert_generated_id(id, "w_");
    assert_eq!(worker["workspace_id"], "ws_a");
    assert_eq!(worker["status"], "IDLE");
    assert_eq!(worker["metadata"], json!({}));
    assert_eq!(worker["version"], 1);
    assert!(worker["last_heartbeat_at"].is_null());
    assert_eq!(worker["created_at"], worker["updated_at"]);
    assert!(worker["created_at"].as_str().unwrap().ends_with('Z'));

    // An empty body is the same as {}.
    let response = app.post_optional(WORKERS, &confined, None).await;
    let (status, other) = parts(response).await;
    assert_eq!(status, 201);
    assert_ne!(other["id"], worker["id"]);

    // The response is what a read shows.
    let read = parts(
        app.get(&format!("/api/supervisor/workers/{id}"), &confined)
            .await,
    )
    .await
    .1;
    assert_eq!(read, worker);

    let metadata =
        json!({"model": "small", "tags": ["a", "b"], "limits": {"tokens": 1000}, "note": null});
    let body = json!({"id": "w_meta", "workspace_id": "ws_a", "metadata": metadata});
    let worker = parts(register_as(&app, &supervisor_writer(None), body).await)
        .await
        .1;
    assert_eq!(worker["metadata"], metadata);
    // `null` for an optional field means "not given".
    let body = json!({"id": null, "workspace_id": "ws_a", "metadata": null});
    let worker = parts(register_as(&app, &supervisor_writer(None), body).await)
        .await
        .1;
    assert_eq!(worker["metadata"], json!({}));
}

#[tokio::test]
async fn registration_is_validated_confined_and_unique() {
    let app = spawn_app().await;
    let operator = supervisor_writer(None);
    let too_big = json!({"k": "x".repeat(16 * 1024)});
    let invalid = [
        (json!({"workspace_id": "ws_a", "name": "w"}), "name"),
        (json!({"id": "bad id", "workspace_id": "ws_a"}), "id"),
        (json!({"id": "x".repeat(65), "workspace_id": "ws_a"}), "id"),
        (json!({"workspace_id": "ws a"}), "workspace_id"),
        (json!({"workspace_id": "ws_a", "metadata": [1]}), "metadata"),
        (json!({"workspace_id": "ws_a", "metadata": "x"}), "metadata"),
        (
            json!({"workspace_id": "ws_a", "metadata": too_big}),
            "metadata",
        ),
        (json!([]), "body"),
    ];
    for (body, field) in invalid {
        assert_invalid_field(register_as(&app, &operator, body).await, field).await;
    }
    let not_json = app
        .post_raw(WORKERS, Some(&operator), "application/json", "{")
        .await;
    assert_error(not_json, 400, "BAD_REQUEST").await;

    // A confined token registers into its own workspace only.
    let confined = supervisor_writer(Some("ws_a"));
    let body = json!({"id": "w_x", "workspace_id": "ws_b"});
    assert_error(register_as(&app, &confined, body).await, 403, "FORBIDDEN").await;
    let body = json!({"id": "w_x", "workspace_id": "ws_a"});
    assert_eq!(register_as(&app, &confined, body).await.status(), 201);

    // Ids are global: taken is taken, whichever workspace asks.
    for (token, workspace) in [
        (&operator, "ws_a"),
        (&operator, "ws_b"),
        (&confined, "ws_a"),
    ] {
        let body = json!({"id": "w_x", "workspace_id": workspace});
        let error = assert_error(register_as(&app, token, body).await, 409, "ALREADY_EXISTS").await;
        assert_eq!(error["detail"], "Worker w_x already exists");
    }
    let workers = app.select_int("SELECT count(*) FROM workers").await;
    let events = app.select_int("SELECT count(*) FROM events").await;
    assert_eq!((workers, events), (1, 1));

    let reader = token(&[Scope::SupervisorRead], None);
    assert_error(
        register_as(&app, &reader, json!({"workspace_id": "ws_a"})).await,
        403,
        "FORBIDDEN",
    )
    .await;
    let anonymous = app.send_anonymous(Method::POST, WORKERS).await;
    assert_error(anonymous, 401, "UNAUTHENTICATED").await;
}

#[tokio::test]
async fn getting_a_worker() {
    let app = spawn_app().await;
    app.register_worker("w_get", "ws_a").await;
    app.move_worker("w_get", "start", None).await;
    let reader = token(&[Scope::SupervisorRead], None);
    let response = app.get("/api/supervisor/workers/w_get", &reader).await;
    assert_eq!(response.headers()["etag"], "\"2\"");
    let (status, worker) = parts(response).await;
    assert_eq!(status, 200);
    assert_eq!(
        (worker["status"].as_str(), worker["version"].as_i64()),
        (Some("RUNNING"), Some(2))
    );
    assert_eq!(
        keys(&worker),
        [
            "id",
            "workspace_id",
            "status",
            "metadata",
            "created_at",
            "updated_at",
            "version",
            "last_heartbeat_at"
        ]
    );

    assert_not_found(app.get("/api/supervisor/workers/w_none", &reader).await).await;
    assert_not_found(app.get("/api/supervisor/workers/bad%20id", &reader).await).await;
    let outsider = token(&[Scope::SupervisorRead], Some("ws_b"));
    let hidden = assert_not_found(app.get("/api/supervisor/workers/w_get", &outsider).await).await;
    assert_eq!(hidden["detail"], "Worker w_get not found");
    let insider = token(&[Scope::SupervisorRead], Some("ws_a"));
    assert_eq!(
        app.get("/api/supervisor/workers/w_get", &insider)
            .await
            .status(),
        200
    );
}

#[tokio::test]
async fn lists_show_registered_workers_in_order_and_confined() {
    let app = spawn_app().await;
    for (id, workspace) in [("w_1", "ws_a"), ("w_2", "ws_b"), ("w_3", "ws_a")] {
        app.register_worker(id, workspace).await;
    }
    app.move_worker("w_3", "start", None).await;
    let (_, all) = parts(app.get(WORKERS, &supervisor_writer(None)).await).await;
    assert_eq!(ids(&all), ["w_1", "w_2", "w_3"]);
    let (_, running) = parts(
        app.get(
            "/api/supervisor/workers?status=RUNNING",
            &supervisor_writer(None),
        )
        .await,
    )
    .await;
    assert_eq!(
        (ids(&running), running["total"].as_i64()),
        (vec!["w_3"], Some(1))
    );
    let (_, confined) = parts(app.get(WORKERS, &supervisor_writer(Some("ws_a"))).await).await;
    assert_eq!(
        (ids(&confined), confined["total"].as_i64()),
        (vec!["w_1", "w_3"], Some(2))
    );
}

#[tokio::test]
async fn metrics_count_every_state_per_workspace() {
    let app = spawn_app().await;
    let operator = token(&[Scope::SupervisorRead], None);
    let empty = metrics(&app, &operator, "").await;
    assert_eq!(empty, counted(0, [0, 0, 0, 0, 0, 0]));
    // Every state is listed, in the contract's order.
    assert_eq!(
        keys(&empty["by_status"]),
        [
            "IDLE",
            "RUNNING",
            "PAUSED",
            "COMPLETED",
            "FAILED",
            "TERMINATED"
        ]
    );

    for id in ["w_a1", "w_a2", "w_a3", "w_a4", "w_a5"] {
        app.register_worker(id, "ws_a").await;
    }
    app.register_worker("w_b1", "ws_b").await;
    for (id, action) in [
        ("w_a1", "start"),
        ("w_a2", "start"),
        ("w_a2", "pause"),
        ("w_a3", "start"),
        ("w_a3", "complete"),
        ("w_a4", "terminate"),
        ("w_b1", "start"),
    ] {
        app.move_worker(id, action, None).await;
    }

    let all = metrics(&app, &operator, "").await;
    assert_eq!(all, counted(6, [1, 2, 1, 1, 0, 1]));
    let ws_a = metrics(&app, &operator, "?workspace_id=ws_a").await;
    assert_eq!(ws_a, counted(5, [1, 1, 1, 1, 0, 1]));

    let confined = token(&[Scope::SupervisorRead], Some("ws_b"));
    let own = metrics(&app, &confined, "").await;
    assert_eq!(own, counted(1, [0, 1, 0, 0, 0, 0]));
    let elsewhere = metrics(&app, &confined, "?workspace_id=ws_a").await;
    assert_eq!(elsewhere, counted(0, [0, 0, 0, 0, 0, 0]));
    let bad = app
        .get("/api/supervisor/metrics?workspace_id=%20", &operator)
        .await;
    assert_error(bad, 422, "VALIDATION_FAILED").await;

    // The numbers come from the counters, not from scanning workers.
    app.run_sql("INSERT INTO worker_counts VALUES ('ws_b', 'FAILED', 100)")
        .await;
    let from_counters = metrics(&app, &confined, "").await;
    assert_eq!(from_counters, counted(101, [0, 1, 0, 0, 100, 0]));
}

#[tokio::test]
async fn the_audit_trail_pages_oldest_first() {
    let app = spawn_app().await;
    app.register_worker("w_t", "ws_a").await;
    for action in ["start", "pause", "resume", "pause", "resume", "terminate"] {
        app.move_worker("w_t", action, None).await;
    }
    let reader = token(&[Scope::SupervisorRead], Some("ws_a"));
    let (status, all) = parts(
        app.get("/api/supervisor/workers/w_t/transitions", &reader)
            .await,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(paging(&all), (Some(7), Some(50), Some(0)));
    let first = &all["transitions"][0];
    assert_eq!(
        keys(first),
        ["from_state", "to_state", "reason", "actor", "at"]
    );
    assert_eq!(
        (first["from_state"].clone(), first["to_state"].clone()),
        (Value::Null, json!("IDLE"))
    );
    assert_eq!(first["actor"], "tester");

    let (_, page) = parts(
        app.get(
            "/api/supervisor/workers/w_t/transitions?limit=2&offset=3",
            &reader,
        )
        .await,
    )
    .await;
    let moves: Vec<(&str, &str)> = page["transitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["from_state"].as_str().unwrap(),
                t["to_state"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(moves, [("PAUSED", "RUNNING"), ("RUNNING", "PAUSED")]);
    assert_eq!(paging(&page), (Some(7), Some(2), Some(3)));
    let (_, beyond) = parts(
        app.get("/api/supervisor/workers/w_t/transitions?offset=50", &reader)
            .await,
    )
    .await;
    assert_eq!(
        (beyond["transitions"].clone(), beyond["total"].as_i64()),
        (json!([]), Some(7))
    );

    for bad in ["limit=0", "limit=101", "offset=-1"] {
        let response = app
            .get(
                &format!("/api/supervisor/workers/w_t/transitions?{bad}"),
                &reader,
            )
            .await;
        assert_error(response, 422, "VALIDATION_FAILED").await;
    }
    let outsider = token(&[Scope::SupervisorRead], Some("ws_b"));
    for (id, token) in [("w_t", &outsider), ("w_none", &reader), ("a%20b", &reader)] {
        let path = format!("/api/supervisor/workers/{id}/transitions");
        assert_not_found(app.get(&path, token).await).await;
    }
}

#[tokio::test]
async fn reads_need_a_token_with_supervisor_read() {
    let app = spawn_app().await;
    app.register_worker("w_r", "ws_a").await;
    let lacking = lacking(Scope::SupervisorRead);
    for path in [
        "/api/supervisor/workers",
        "/api/supervisor/workers/w_r",
        "/api/supervisor/workers/w_none",
        "/api/supervisor/workers/w_r/transitions",
        "/api/supervisor/metrics",
        "/api/events",
    ] {
        let anonymous = app.send_anonymous(Method::GET, path).await;
        assert_error(anonymous, 401, "UNAUTHENTICATED").await;
        assert_error(app.get(path, "not-a-jwt").await, 401, "UNAUTHENTICATED").await;
        assert_error(app.get(path, &lacking).await, 403, "FORBIDDEN").await;
        let wrong_method = app
            .request(Method::DELETE, path, Some(&lacking))
            .send()
            .await
            .unwrap();
        assert_error(wrong_method, 405, "METHOD_NOT_ALLOWED").await;
    }
    for path in [
        "/api/supervisor/workers/",
        "/api/supervisor/metrics/",
        "/api/supervisor/workers/w_r/trail",
    ] {
        assert_not_found(app.get(path, &supervisor_writer(None)).await).await;
    }
}
