//! The first read endpoint of each component, through the host against a
//! fresh database: success, 401, 403 and 404.

use api_tests::{
    TestApp, all_scopes, assert_error, assert_not_found, lacking, numbers, paging, parts, sign,
    spawn_app, spawn_app_with, texts, token,
};
use orchestrator_core::auth::{Claims, Scope};
use reqwest::Method;

async fn seed_workers(app: &TestApp) {
    app.run_sql(
        "INSERT INTO workers (id, workspace_id, status, created_at, updated_at) VALUES
               ('w_a1', 'ws_a', 'IDLE',    '2026-01-01T00:00:01Z', '2026-01-01T00:00:01Z'),
               ('w_a2', 'ws_a', 'IDLE',    '2026-01-01T00:00:02Z', '2026-01-01T00:00:02Z'),
               ('w_b1', 'ws_b', 'IDLE',    '2026-01-01T00:00:03Z', '2026-01-01T00:00:03Z');
             UPDATE workers SET status = 'RUNNING' WHERE id = 'w_a2';",
    )
    .await;
}

#[tokio::test]
async fn listing_workers_of_an_empty_database() {
    let app = spawn_app().await;
    let response = app
        .get(
            "/api/supervisor/workers",
            &token(&[Scope::SupervisorRead], None),
        )
        .await;
    assert!(response.headers().contains_key("x-request-id"));
    let (status, body) = parts(response).await;
    assert_eq!(status, 200);
    assert_eq!(
        body,
        serde_json::json!({"workers": [], "total": 0, "limit": 50, "offset": 0})
    );
}

#[tokio::test]
async fn listing_workers_filters_pages_and_confines_to_a_workspace() {
    let app = spawn_app().await;
    seed_workers(&app).await;
    let operator = token(&[Scope::SupervisorRead], None);

    let (_, body) = parts(app.get("/api/supervisor/workers", &operator).await).await;
    assert_eq!(texts(&body["workers"], "id"), ["w_a1", "w_a2", "w_b1"]);
    assert_eq!(body["total"], 3);
    let first = &body["workers"][0];
    assert_eq!(first["status"], "IDLE");
    assert_eq!(first["created_at"], "2026-01-01T00:00:01.000Z");
    assert_eq!(first["metadata"], serde_json::json!({}));
    assert_eq!(first["version"], 1);
    assert!(first["last_heartbeat_at"].is_null());

    let (_, body) = parts(
        app.get("/api/supervisor/workers?limit=1&offset=1", &operator)
            .await,
    )
    .await;
    assert_eq!(body["workers"][0]["id"], "w_a2");
    assert_eq!(paging(&body), (Some(3), Some(1), Some(1)));

    let (_, body) = parts(
        app.get("/api/supervisor/workers?status=RUNNING", &operator)
            .await,
    )
    .await;
    assert_eq!(
        (body["workers"][0]["id"].as_str(), body["total"].as_i64()),
        (Some("w_a2"), Some(1))
    );

    let confined = token(&[Scope::SupervisorRead], Some("ws_b"));
    let (_, body) = parts(app.get("/api/supervisor/workers", &confined).await).await;
    assert_eq!(
        (body["workers"][0]["id"].as_str(), body["total"].as_i64()),
        (Some("w_b1"), Some(1))
    );
    let (_, body) = parts(
        app.get("/api/supervisor/workers?workspace_id=ws_a", &confined)
            .await,
    )
    .await;
    assert_eq!(body["total"], 0);

    for bad in [
        "limit=0",
        "limit=101",
        "offset=-1",
        "limit=x",
        "status=SLEEPING",
        "workspace_id=%20bad",
    ] {
        let response = app
            .get(&format!("/api/supervisor/workers?{bad}"), &operator)
            .await;
        assert_error(response, 422, "VALIDATION_FAILED").await;
    }
}

#[tokio::test]
async fn reads_need_a_valid_token_with_the_scope() {
    let app = spawn_app().await;
    let paths = [
        "/api/supervisor/workers",
        "/api/resources/quotas",
        "/api/jobs/j_000000000001",
    ];
    let expired = sign(Claims {
        sub: "tester".into(),
        exp: 1,
        scopes: vec!["jobs:read".into()],
        ..Default::default()
    });
    let forged = token(&all_scopes(), None).replace('.', ".x");
    for path in paths {
        let response = app.send_anonymous(Method::GET, path).await;
        assert_eq!(
            response.headers()["www-authenticate"],
            r#"Bearer error="invalid_token""#
        );
        assert_error(response, 401, "UNAUTHENTICATED").await;
        assert_error(app.get(path, &expired).await, 401, "UNAUTHENTICATED").await;
        assert_error(app.get(path, &forged).await, 401, "UNAUTHENTICATED").await;
        assert_error(app.get(path, "not-a-jwt").await, 401, "UNAUTHENTICATED").await;
        // A token with every scope but the one this read needs.
        let needed = match path.split('/').nth(2).unwrap() {
            "supervisor" => Scope::SupervisorRead,
            "resources" => Scope::ResourcesRead,
            _ => Scope::JobsRead,
        };
        assert_error(app.get(path, &lacking(needed)).await, 403, "FORBIDDEN").await;
    }
}

#[tokio::test]
async fn unknown_paths_and_methods() {
    let app = spawn_app().await;
    let all = token(&all_scopes(), None);
    for path in [
        "/api/supervisor/nothing",
        "/api/resources/",
        "/api/jobs/",
        "/api/jobs/j_1/unknown",
    ] {
        assert_not_found(app.get(path, &all).await).await;
    }
    // No component serves this path at all: the host answers 404.
    assert_eq!(app.get("/elsewhere", &all).await.status(), 404);
    let response = app
        .request(Method::DELETE, "/api/resources/quotas", Some(&all))
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["allow"], "GET");
    assert_error(response, 405, "METHOD_NOT_ALLOWED").await;
}

#[tokio::test]
async fn quotas_follow_the_depth_quotas_variable() {
    let reader = token(&[Scope::ResourcesRead], None);
    let app = spawn_app().await;
    let body = app.get_ok("/api/resources/quotas", &reader).await;
    assert_eq!(numbers(&body["quotas"], "max_workers"), [10, 8, 5, 3, 2, 1]);
    assert_eq!(body["quotas"][5]["depth"], 5);

    let app = spawn_app_with(|o| o.variable("depth_quotas", "4,4,3,2,1,0")).await;
    let body = app.get_ok("/api/resources/quotas", &reader).await;
    assert_eq!(numbers(&body["quotas"], "max_workers"), [4, 4, 3, 2, 1, 0]);
    // Allocations are checked against the configuration, and the first grant at a depth lays its
    // stored rows out for it.
    let root = app.submit_at(0, None).await;
    assert_eq!(app.granted(&root, 0, 10).await, 4);
    let stored: Vec<(i16, i32, i64)> = app
        .db
        .client()
        .await
        .unwrap()
        .query(
            "SELECT depth, max_workers, allocated FROM quota_usage ORDER BY depth",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| (row.get(0), row.get(1), row.get(2)))
        .collect();
    assert_eq!(stored[0], (0, 4, 4));
}

#[tokio::test]
async fn getting_a_job() {
    let app = spawn_app().await;
    app.run_sql(
        "INSERT INTO jobs (id, workspace_id, status, task_description, worker_count, depth)
         VALUES ('j_0123456789ab', 'ws_a', 'PENDING', 'summarise the logs', 3, 0)",
    )
    .await;
    let reader = token(&[Scope::JobsRead], None);
    let response = app.get("/api/jobs/j_0123456789ab", &reader).await;
    assert_eq!(response.headers()["etag"], "\"1\"");
    let (status, job) = parts(response).await;
    assert_eq!(status, 200);
    assert_eq!(job["status"], "PENDING");
    assert_eq!(job["task_description"], "summarise the logs");
    assert_eq!(
        (job["worker_count"].as_i64(), job["depth"].as_i64()),
        (Some(3), Some(0))
    );
    assert!(
        job["parent_job_id"].is_null() && job["started_at"].is_null() && job["result"].is_null()
    );
    assert_eq!(job["allocated_workers"], 0);
    assert!(job["created_at"].as_str().unwrap().ends_with('Z'));

    assert_not_found(app.get("/api/jobs/j_000000000000", &reader).await).await;
    assert_not_found(app.get("/api/jobs/bad%20id", &reader).await).await;
    // Another workspace's job is indistinguishable from a missing one.
    let outsider = token(&[Scope::JobsRead], Some("ws_b"));
    let body = assert_not_found(app.get("/api/jobs/j_0123456789ab", &outsider).await).await;
    let missing = assert_not_found(app.get("/api/jobs/j_000000000000", &outsider).await).await;
    assert_eq!(
        body["detail"]
            .as_str()
            .unwrap()
            .replace("j_0123456789ab", "ID"),
        missing["detail"]
            .as_str()
            .unwrap()
            .replace("j_000000000000", "ID")
    );
    let insider = token(&[Scope::JobsRead], Some("ws_a"));
    assert_eq!(
        app.get("/api/jobs/j_0123456789ab", &insider).await.status(),
        200
    );
}
