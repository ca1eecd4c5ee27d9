//! Registering, reading, listing and counting workers, and reading their
//! audit trail, through the host against a fresh database.

use api_tests::{TestApp, all_scopes, assert_error, parts, spawn_app, token};
use orchestrator_core::auth::Scope;
use reqwest::{Method, Response};
use serde_json::{Value, json};

fn writer(workspace: Option<&str>) -> String {
    token(&[Scope::SupervisorRead, Scope::SupervisorWrite], workspace)
}

async fn register_as(app: &TestApp, token: &str, body: Value) -> Response {
    app.request(Method::POST, "/api/supervisor/workers", Some(token))
        .json(&body)
        .send()
        .await
        .unwrap()
}

/// Registers `id` in `workspace` with an operator token, asserting 201.
async fn register(app: &TestApp, id: &str, workspace: &str) -> Value {
    let body = json!({"id": id, "workspace_id": workspace});
    let (status, worker) = parts(register_as(app, &writer(None), body).await).await;
    assert_eq!(status, 201, "{worker}");
    worker
}

async fn act(app: &TestApp, id: &str, action: &str) {
    let path = format!("/api/supervisor/workers/{id}/{action}");
    let response = app
        .request(Method::POST, &path, Some(&writer(None)))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "{action} {id}");
}

async fn metrics(app: &TestApp, token: &str, query: &str) -> Value {
    let (status, body) = parts(
        app.get(&format!("/api/supervisor/metrics{query}"), token)
            .await,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    body
}

fn by_status(
    idle: i64,
    running: i64,
    paused: i64,
    completed: i64,
    failed: i64,
    terminated: i64,
) -> Value {
    json!({"IDLE": idle, "RUNNING": running, "PAUSED": paused,
           "COMPLETED": completed, "FAILED": failed, "TERMINATED": terminated})
}

fn ids(list: &Value, key: &str) -> Vec<String> {
    list[key]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn registering_defaults_generates_and_echoes() {
    let app = spawn_app().await;
    let confined = writer(Some("ws_a"));
    let response = register_as(&app, &confined, json!({})).await;
    assert_eq!(response.headers()["etag"], "\"1\"");
    let (status, worker) = parts(response).await;
    assert_eq!(status, 201);
    let id = worker["id"].as_str().unwrap();
    assert!(
        id.len() == 14
            && id.starts_with("w_")
            && id[2..]
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
        "{id}"
    );
    assert_eq!(worker["workspace_id"], "ws_a");
    assert_eq!(worker["status"], "IDLE");
    assert_eq!(worker["metadata"], json!({}));
    assert_eq!(worker["version"], 1);
    assert!(worker["last_heartbeat_at"].is_null());
    assert_eq!(worker["created_at"], worker["updated_at"]);
    assert!(worker["created_at"].as_str().unwrap().ends_with('Z'));

    // An empty body is the same as {}.
    let response = app
        .request(Method::POST, "/api/supervisor/workers", Some(&confined))
        .send()
        .await
        .unwrap();
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
    let worker = parts(register_as(&app, &writer(None), body).await).await.1;
    assert_eq!(worker["metadata"], metadata);
    // `null` for an optional field means "not given".
    let body = json!({"id": null, "workspace_id": "ws_a", "metadata": null});
    let worker = parts(register_as(&app, &writer(None), body).await).await.1;
    assert_eq!(worker["metadata"], json!({}));
}

#[tokio::test]
async fn registration_is_validated_confined_and_unique() {
    let app = spawn_app().await;
    let operator = writer(None);
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
        // An operator token must say where the worker goes.
        (json!({"id": "w_1"}), "workspace_id"),
        (json!([]), "body"),
    ];
    for (body, field) in invalid {
        let error = assert_error(
            register_as(&app, &operator, body.clone()).await,
            422,
            "VALIDATION_FAILED",
        )
        .await;
        assert_eq!(
            error["error"]["details"]["fields"][0]["field"], field,
            "{body}"
        );
    }
    let not_json = app
        .request(Method::POST, "/api/supervisor/workers", Some(&operator))
        .header("content-type", "application/json")
        .body("{")
        .send()
        .await
        .unwrap();
    assert_error(not_json, 400, "BAD_REQUEST").await;

    // A confined token registers into its own workspace only.
    let confined = writer(Some("ws_a"));
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
    let client = app.db.client().await.unwrap();
    let workers: i64 = client
        .query_one("SELECT count(*) FROM workers", &[])
        .await
        .unwrap()
        .get(0);
    let events: i64 = client
        .query_one("SELECT count(*) FROM events", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!((workers, events), (1, 1));

    let reader = token(&[Scope::SupervisorRead], None);
    assert_error(
        register_as(&app, &reader, json!({"workspace_id": "ws_a"})).await,
        403,
        "FORBIDDEN",
    )
    .await;
    let anonymous = app
        .request(Method::POST, "/api/supervisor/workers", None)
        .send()
        .await
        .unwrap();
    assert_error(anonymous, 401, "UNAUTHENTICATED").await;
}

#[tokio::test]
async fn getting_a_worker() {
    let app = spawn_app().await;
    register(&app, "w_get", "ws_a").await;
    act(&app, "w_get", "start").await;
    let reader = token(&[Scope::SupervisorRead], None);
    let response = app.get("/api/supervisor/workers/w_get", &reader).await;
    assert_eq!(response.headers()["etag"], "\"2\"");
    let (status, worker) = parts(response).await;
    assert_eq!(status, 200);
    assert_eq!(
        (worker["status"].as_str(), worker["version"].as_i64()),
        (Some("RUNNING"), Some(2))
    );
    let fields: Vec<&str> = worker
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        fields,
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

    assert_error(
        app.get("/api/supervisor/workers/w_none", &reader).await,
        404,
        "NOT_FOUND",
    )
    .await;
    assert_error(
        app.get("/api/supervisor/workers/bad%20id", &reader).await,
        404,
        "NOT_FOUND",
    )
    .await;
    let outsider = token(&[Scope::SupervisorRead], Some("ws_b"));
    let hidden = assert_error(
        app.get("/api/supervisor/workers/w_get", &outsider).await,
        404,
        "NOT_FOUND",
    )
    .await;
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
        register(&app, id, workspace).await;
    }
    act(&app, "w_3", "start").await;
    let (_, all) = parts(app.get("/api/supervisor/workers", &writer(None)).await).await;
    assert_eq!(ids(&all, "workers"), ["w_1", "w_2", "w_3"]);
    let (_, running) = parts(
        app.get("/api/supervisor/workers?status=RUNNING", &writer(None))
            .await,
    )
    .await;
    assert_eq!(
        (ids(&running, "workers"), running["total"].as_i64()),
        (vec!["w_3".to_owned()], Some(1))
    );
    let (_, confined) = parts(
        app.get("/api/supervisor/workers", &writer(Some("ws_a")))
            .await,
    )
    .await;
    assert_eq!(
        (ids(&confined, "workers"), confined["total"].as_i64()),
        (vec!["w_1".to_owned(), "w_3".to_owned()], Some(2))
    );
}

#[tokio::test]
async fn metrics_count_every_state_per_workspace() {
    let app = spawn_app().await;
    let operator = token(&[Scope::SupervisorRead], None);
    let empty = metrics(&app, &operator, "").await;
    assert_eq!(
        empty,
        json!({"total_workers": 0, "by_status": by_status(0, 0, 0, 0, 0, 0)})
    );
    // Every state is listed, in the contract's order.
    let order: Vec<&str> = empty["by_status"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        order,
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
        register(&app, id, "ws_a").await;
    }
    register(&app, "w_b1", "ws_b").await;
    act(&app, "w_a1", "start").await;
    act(&app, "w_a2", "start").await;
    act(&app, "w_a2", "pause").await;
    act(&app, "w_a3", "start").await;
    act(&app, "w_a3", "complete").await;
    act(&app, "w_a4", "terminate").await;
    act(&app, "w_b1", "start").await;

    let all = metrics(&app, &operator, "").await;
    assert_eq!(
        all,
        json!({"total_workers": 6, "by_status": by_status(1, 2, 1, 1, 0, 1)})
    );
    let ws_a = metrics(&app, &operator, "?workspace_id=ws_a").await;
    assert_eq!(
        ws_a,
        json!({"total_workers": 5, "by_status": by_status(1, 1, 1, 1, 0, 1)})
    );

    let confined = token(&[Scope::SupervisorRead], Some("ws_b"));
    let own = metrics(&app, &confined, "").await;
    assert_eq!(
        own,
        json!({"total_workers": 1, "by_status": by_status(0, 1, 0, 0, 0, 0)})
    );
    let elsewhere = metrics(&app, &confined, "?workspace_id=ws_a").await;
    assert_eq!(
        elsewhere,
        json!({"total_workers": 0, "by_status": by_status(0, 0, 0, 0, 0, 0)})
    );
    let bad = app
        .get("/api/supervisor/metrics?workspace_id=%20", &operator)
        .await;
    assert_error(bad, 422, "VALIDATION_FAILED").await;

    // The numbers come from the counters, not from scanning workers.
    app.db
        .client()
        .await
        .unwrap()
        .batch_execute("INSERT INTO worker_counts VALUES ('ws_b', 'FAILED', 100)")
        .await
        .unwrap();
    let counted = metrics(&app, &confined, "").await;
    assert_eq!(
        counted,
        json!({"total_workers": 101, "by_status": by_status(0, 1, 0, 0, 100, 0)})
    );
}

#[tokio::test]
async fn the_audit_trail_pages_oldest_first() {
    let app = spawn_app().await;
    register(&app, "w_t", "ws_a").await;
    for action in ["start", "pause", "resume", "pause", "resume", "terminate"] {
        act(&app, "w_t", action).await;
    }
    let reader = token(&[Scope::SupervisorRead], Some("ws_a"));
    let (status, all) = parts(
        app.get("/api/supervisor/workers/w_t/transitions", &reader)
            .await,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        (
            all["total"].as_i64(),
            all["limit"].as_i64(),
            all["offset"].as_i64()
        ),
        (Some(7), Some(50), Some(0))
    );
    let first = &all["transitions"][0];
    assert_eq!(
        first
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect::<Vec<_>>(),
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
    assert_eq!(
        (
            page["total"].as_i64(),
            page["limit"].as_i64(),
            page["offset"].as_i64()
        ),
        (Some(7), Some(2), Some(3))
    );
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
    assert_error(
        app.get("/api/supervisor/workers/w_t/transitions", &outsider)
            .await,
        404,
        "NOT_FOUND",
    )
    .await;
    assert_error(
        app.get("/api/supervisor/workers/w_none/transitions", &reader)
            .await,
        404,
        "NOT_FOUND",
    )
    .await;
    assert_error(
        app.get("/api/supervisor/workers/a%20b/transitions", &reader)
            .await,
        404,
        "NOT_FOUND",
    )
    .await;
}

#[tokio::test]
async fn reads_need_a_token_with_supervisor_read() {
    let app = spawn_app().await;
    register(&app, "w_r", "ws_a").await;
    let others: Vec<Scope> = all_scopes()
        .into_iter()
        .filter(|s| *s != Scope::SupervisorRead)
        .collect();
    let lacking = token(&others, None);
    for path in [
        "/api/supervisor/workers",
        "/api/supervisor/workers/w_r",
        "/api/supervisor/workers/w_none",
        "/api/supervisor/workers/w_r/transitions",
        "/api/supervisor/metrics",
        "/api/events",
    ] {
        let anonymous = app.request(Method::GET, path, None).send().await.unwrap();
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
        assert_error(app.get(path, &writer(None)).await, 404, "NOT_FOUND").await;
    }
}
