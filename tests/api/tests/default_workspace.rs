//! The `default` workspace (contract §2, §6): clients of the original service, which has no
//! workspaces, send its request bodies with an operator token and their workers and jobs go to the
//! workspace `default`; naming a workspace, confined tokens and unfiltered lists are unchanged.

use api_tests::{TestApp, WORKSPACE, member, parts, spawn_app, token};
use orchestrator_core::auth::Scope;
use reqwest::Method;
use serde_json::{Value, json};

fn operator() -> String {
    token(&Scope::ALL, None)
}

/// POSTs `body` (JSON, or nothing for `None`) as an operator; asserts 201 and returns the object.
async fn create(app: &TestApp, path: &str, body: Option<Value>) -> Value {
    let (status, created) = parts(app.post_optional(path, &operator(), body).await).await;
    assert_eq!(status, 201, "{path}: {created}");
    created
}

#[tokio::test]
async fn the_original_services_bodies_create_in_the_default_workspace() {
    let app = spawn_app().await;
    let register = "/api/supervisor/workers";
    let workers = [
        create(&app, register, Some(json!({"metadata": {"model": "m-1"}}))).await,
        create(&app, register, Some(json!({}))).await,
        create(&app, register, None).await,
    ];
    let job = create(
        &app,
        "/api/jobs/submit",
        Some(json!({"task_description": "Summarise the incident reports", "worker_count": 1})),
    )
    .await;
    for created in workers.iter().chain([&job]) {
        assert_eq!(created["workspace_id"], "default", "{created}");
    }
    assert_eq!(job["status"], "PENDING");
    let envelopes = app.events_of(&["worker.registered", "job.submitted"]).await;
    assert_eq!(envelopes.len(), 4);
    let published = app.get_ok("/api/events?after_seq=0", &operator()).await;
    for event in published["events"].as_array().unwrap() {
        assert_eq!(event["workspace_id"], "default", "{event}");
    }
}

#[tokio::test]
async fn naming_a_workspace_confined_tokens_and_lists_are_unchanged() {
    let app = spawn_app().await;
    let named = json!({"task_description": "t", "worker_count": 1, "workspace_id": "ws_b"});
    assert_eq!(
        create(&app, "/api/jobs/submit", Some(named)).await["workspace_id"],
        "ws_b"
    );
    let unnamed = json!({"task_description": "t", "worker_count": 1});
    create(&app, "/api/jobs/submit", Some(unnamed.clone())).await;
    let (status, confined) = parts(app.post("/api/jobs/submit", &member(), unnamed).await).await;
    assert_eq!(
        (status, confined["workspace_id"].as_str()),
        (201, Some(WORKSPACE))
    );

    // An operator's unfiltered list shows every workspace; `default` filters like any other.
    let all = app.get_ok("/api/jobs", &operator()).await;
    assert_eq!(all["total"], 3);
    let default = app
        .get_ok("/api/jobs?workspace_id=default", &operator())
        .await;
    assert_eq!(default["total"], 1);
    // A confined token sees nothing of `default`.
    let theirs = app
        .get_ok("/api/jobs?workspace_id=default", &member())
        .await;
    assert_eq!(theirs["total"], 0);
    let response = app
        .request(Method::POST, "/api/supervisor/workers", Some(&member()))
        .json(&json!({"workspace_id": "default"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
}
