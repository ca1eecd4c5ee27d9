//! The jobs endpoints through the host: submit, read, list, complete, fail and cancel of single jobs,
//! with their audit rows, events, `ETag`/`If-Match`, idempotency and workspace confinement.

use api_tests::{
    Answer, TestApp, WORKSPACE as WS, assert_error, assert_generated_id, assert_invalid_field,
    assert_not_found, assert_replay_of, paging, parts, spawn_app, texts, token,
};
use orchestrator_core::auth::Scope;
use reqwest::{Method, Response};
use serde_json::{Value, json};

fn writer() -> String {
    token(&[Scope::JobsRead, Scope::JobsWrite], Some(WS))
}

/// Submits a job for 2 workers and returns its id.
async fn submit_task(app: &TestApp, token: &str, task: &str) -> String {
    let job = app
        .submit_job(token, json!({"task_description": task, "worker_count": 2}))
        .await;
    job["id"].as_str().unwrap().to_owned()
}

/// POSTs `action` (`cancel`, `complete`, `fail`) on `job` as the [`writer`].
async fn act(app: &TestApp, job: &str, action: &str, body: Value) -> Response {
    app.post(&format!("/api/jobs/{job}/{action}"), &writer(), body)
        .await
}

/// Runs a PENDING job by allocating one worker to it (the only way a job starts).
async fn run(app: &TestApp, job: &str) {
    assert_eq!(app.allocate(job, 0, 1).await.status(), 201);
}

async fn count_jobs(app: &TestApp) -> i64 {
    app.select_int("SELECT count(*) FROM jobs").await
}

fn ids(list: &Value) -> Vec<&str> {
    texts(&list["jobs"], "id")
}

#[tokio::test]
async fn submitting_a_job_records_submitted_then_pending() {
    let app = spawn_app().await;
    let response = app
        .post(
            "/api/jobs/submit",
            &writer(),
            json!({"task_description": "summarise the logs", "worker_count": 3}),
        )
        .await;
    assert_eq!(response.headers()["etag"], "\"1\"");
    let (status, job) = parts(response).await;
    assert_eq!(status, 201);
    let id = job["id"].as_str().unwrap();
    assert_generated_id(id, "j_");
    assert_eq!(job["status"], "PENDING");
    assert_eq!(job["workspace_id"], WS);
    assert_eq!(
        (job["worker_count"].as_i64(), job["depth"].as_i64()),
        (Some(3), Some(0))
    );
    assert_eq!(
        (job["version"].as_i64(), job["allocated_workers"].as_i64()),
        (Some(1), Some(0))
    );
    for empty in [
        "parent_job_id",
        "started_at",
        "completed_at",
        "result",
        "error",
    ] {
        assert!(job[empty].is_null(), "{empty}: {job}");
    }
    assert!(job["created_at"].as_str().unwrap().ends_with('Z'));

    let read = app.get(&format!("/api/jobs/{id}"), &writer()).await;
    assert_eq!(read.headers()["etag"], "\"1\"");
    assert_eq!(parts(read).await.1, job);

    let trail = app.job_transitions(id, "").await;
    assert_eq!(
        (trail["total"].as_i64(), trail["limit"].as_i64()),
        (Some(2), Some(50))
    );
    let moves: Vec<(Value, Value)> = trail["transitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| (t["from_state"].clone(), t["to_state"].clone()))
        .collect();
    assert_eq!(
        moves,
        [
            (Value::Null, json!("SUBMITTED")),
            (json!("SUBMITTED"), json!("PENDING"))
        ]
    );
    assert_eq!(trail["transitions"][0]["actor"], "tester");
    assert!(
        trail["transitions"][1]["at"]
            .as_str()
            .unwrap()
            .ends_with('Z')
    );

    let events = app.events().await;
    assert_eq!(events.len(), 2);
    assert_eq!(
        (events[0].kind.as_str(), events[0].subject.as_str()),
        ("job.submitted", id)
    );
    assert_eq!(events[0].data, job);
    assert_eq!(events[1].kind, "job.state.changed");
    assert_eq!(
        events[1].data,
        json!({"from": "SUBMITTED", "to": "PENDING", "reason": null})
    );
}

#[tokio::test]
async fn submit_validates_the_body_and_the_workspace() {
    let app = spawn_app().await;
    let long = "x".repeat(4097);
    for (body, field) in [
        (
            json!({"task_description": "", "worker_count": 1}),
            "task_description",
        ),
        (
            json!({"task_description": long, "worker_count": 1}),
            "task_description",
        ),
        (json!({"worker_count": 1}), "task_description"),
        (
            json!({"task_description": "t", "worker_count": 0}),
            "worker_count",
        ),
        (
            json!({"task_description": "t", "worker_count": 11}),
            "worker_count",
        ),
        (json!({"task_description": "t"}), "worker_count"),
        (
            json!({"task_description": "t", "worker_count": 1, "depth": 6}),
            "depth",
        ),
        (
            json!({"task_description": "t", "worker_count": 1, "depth": -1}),
            "depth",
        ),
        (
            json!({"task_description": "t", "worker_count": 1, "priority": 1}),
            "priority",
        ),
        (
            json!({"task_description": "t", "worker_count": 1, "parent_job_id": "a b"}),
            "parent_job_id",
        ),
        (
            json!({"task_description": "t", "worker_count": 1, "workspace_id": ""}),
            "workspace_id",
        ),
    ] {
        assert_invalid_field(app.post("/api/jobs/submit", &writer(), body).await, field).await;
    }
    // 4096 characters (not bytes) is the limit.
    app.submit_job(
        &writer(),
        json!({"task_description": "é".repeat(4096), "worker_count": 10}),
    )
    .await;

    // An operator token names the workspace (or gets `default`: tests/default_workspace.rs); a
    // confined one may not go elsewhere.
    let operator = token(&[Scope::JobsWrite], None);
    let job = app
        .submit_job(
            &operator,
            json!({"task_description": "t", "worker_count": 1, "workspace_id": "ws_b"}),
        )
        .await;
    assert_eq!(job["workspace_id"], "ws_b");
    assert_error(
        app.post(
            "/api/jobs/submit",
            &writer(),
            json!({"task_description": "t", "worker_count": 1, "workspace_id": "ws_b"}),
        )
        .await,
        403,
        "FORBIDDEN",
    )
    .await;

    let response = app
        .request(Method::POST, "/api/jobs/submit", Some(&writer()))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_error(response, 400, "BAD_REQUEST").await;
    assert_eq!(count_jobs(&app).await, 2);
}

#[tokio::test]
async fn submit_under_a_parent_checks_workspace_depth_and_state() {
    let app = spawn_app().await;
    let parent = submit_task(&app, &writer(), "parent").await;
    let child = |parent: &str, depth: i64| json!({"task_description": "child", "worker_count": 1, "depth": depth, "parent_job_id": parent});

    let job = app.submit_job(&writer(), child(&parent, 1)).await;
    assert_eq!(
        (job["parent_job_id"].as_str(), job["depth"].as_i64()),
        (Some(parent.as_str()), Some(1))
    );

    let missing = assert_invalid_field(
        app.post("/api/jobs/submit", &writer(), child("j_000000000000", 1))
            .await,
        "parent_job_id",
    )
    .await;
    // A parent in another workspace is as unknown as a missing one.
    let elsewhere = submit_task(&app, &token(&[Scope::JobsWrite], Some("ws_b")), "other").await;
    let foreign = assert_error(
        app.post("/api/jobs/submit", &writer(), child(&elsewhere, 1))
            .await,
        422,
        "VALIDATION_FAILED",
    )
    .await;
    assert_eq!(
        foreign["detail"]
            .as_str()
            .unwrap()
            .replace(&elsewhere, "ID"),
        missing["detail"]
            .as_str()
            .unwrap()
            .replace("j_000000000000", "ID")
    );
    for depth in [0, 2] {
        assert_invalid_field(
            app.post("/api/jobs/submit", &writer(), child(&parent, depth))
                .await,
            "depth",
        )
        .await;
    }

    let (status, _) = parts(act(&app, &parent, "cancel", json!({})).await).await;
    assert_eq!(status, 200);
    let body = assert_error(
        app.post("/api/jobs/submit", &writer(), child(&parent, 1))
            .await,
        409,
        "INVALID_STATE_TRANSITION",
    )
    .await;
    assert_eq!(
        body["error"]["details"],
        json!({"parent_job_id": parent, "parent_state": "CANCELED"})
    );
}

#[tokio::test]
async fn a_repeated_submit_with_the_same_key_is_replayed() {
    let app = spawn_app().await;
    let body = json!({"task_description": "once", "worker_count": 1});
    let send = async |key: &str, body: &Value| {
        let key = ("Idempotency-Key", key);
        app.post_with("/api/jobs/submit", &writer(), key, Some(body.clone()))
            .await
    };
    let first = Answer::read(send("key-1", &body).await).await;
    let again = Answer::read(send("key-1", &body).await).await;
    assert_eq!(again.status, 201);
    assert_replay_of(&again, &first);
    assert_eq!(count_jobs(&app).await, 1);
    assert_eq!(app.events().await.len(), 2, "a replay emits nothing");

    let other = json!({"task_description": "twice", "worker_count": 1});
    assert_error(send("key-1", &other).await, 422, "IDEMPOTENCY_KEY_REUSED").await;
    assert_eq!(send("key-2", &body).await.status(), 201);
    assert_eq!(count_jobs(&app).await, 2);
}

#[tokio::test]
async fn listing_jobs_filters_pages_and_confines_to_a_workspace() {
    let app = spawn_app().await;
    let root = submit_task(&app, &writer(), "root").await;
    let child = app.submit_job(&writer(),
        json!({"task_description": "child", "worker_count": 1, "depth": 1, "parent_job_id": root}),
    )
    .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let running = submit_task(&app, &writer(), "running").await;
    run(&app, &running).await;
    let other = submit_task(&app, &token(&[Scope::JobsWrite], Some("ws_b")), "other").await;

    let operator = token(&[Scope::JobsRead], None);
    let (status, all) = parts(app.get("/api/jobs", &operator).await).await;
    assert_eq!(status, 200);
    assert_eq!(ids(&all), [root.as_str(), &child, &running, &other]);
    assert_eq!(paging(&all), (Some(4), Some(50), Some(0)));

    let by_parent = format!("parent_job_id={root}");
    let cases = [
        ("limit=2&offset=1", vec![child.as_str(), &running]),
        ("depth=1", vec![child.as_str()]),
        ("status=RUNNING", vec![running.as_str()]),
        ("status=PENDING&depth=0", vec![root.as_str(), &other]),
        (by_parent.as_str(), vec![child.as_str()]),
        ("workspace_id=ws_b", vec![other.as_str()]),
    ];
    for (query, expected) in cases {
        let (_, page) = parts(app.get(&format!("/api/jobs?{query}"), &operator).await).await;
        assert_eq!(ids(&page), expected, "{query}");
    }
    let (_, page) = parts(app.get("/api/jobs?limit=2&offset=1", &operator).await).await;
    assert_eq!(page["total"], 4, "total ignores paging");

    let confined = token(&[Scope::JobsRead], Some("ws_b"));
    let (_, mine) = parts(app.get("/api/jobs", &confined).await).await;
    assert_eq!(
        (ids(&mine), mine["total"].as_i64()),
        (vec![other.as_str()], Some(1))
    );
    let (_, theirs) = parts(app.get("/api/jobs?workspace_id=ws_a", &confined).await).await;
    assert_eq!((ids(&theirs).len(), theirs["total"].as_i64()), (0, Some(0)));

    for bad in [
        "limit=0",
        "limit=101",
        "offset=-1",
        "depth=6",
        "status=DONE",
        "parent_job_id=a%20b",
        "workspace_id=%20",
    ] {
        let response = app.get(&format!("/api/jobs?{bad}"), &operator).await;
        assert_error(response, 422, "VALIDATION_FAILED").await;
    }
}

#[tokio::test]
async fn children_are_listed_under_their_parent() {
    let app = spawn_app().await;
    let root = submit_task(&app, &writer(), "root").await;
    let mut children = Vec::new();
    for n in 0..3 {
        let child = app.submit_job(&writer(),
            json!({"task_description": format!("child {n}"), "worker_count": 1, "depth": 1, "parent_job_id": root}),
        )
        .await;
        children.push(child["id"].as_str().unwrap().to_owned());
    }
    let (status, page) = parts(
        app.get(&format!("/api/jobs/{root}/children?limit=2"), &writer())
            .await,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(ids(&page), [children[0].as_str(), &children[1]]);
    assert_eq!(
        (page["total"].as_i64(), page["limit"].as_i64()),
        (Some(3), Some(2))
    );
    let (_, leaf) = parts(
        app.get(&format!("/api/jobs/{}/children", children[0]), &writer())
            .await,
    )
    .await;
    assert_eq!(
        leaf,
        json!({"jobs": [], "total": 0, "limit": 50, "offset": 0})
    );
    assert_not_found(
        app.get("/api/jobs/j_000000000000/children", &writer())
            .await,
    )
    .await;
    assert_error(
        app.get(&format!("/api/jobs/{root}/children?offset=x"), &writer())
            .await,
        422,
        "VALIDATION_FAILED",
    )
    .await;
}

#[tokio::test]
async fn only_a_running_job_completes_or_fails() {
    let app = spawn_app().await;
    let job = submit_task(&app, &writer(), "work").await;

    let body = assert_error(
        act(&app, &job, "complete", json!({})).await,
        409,
        "INVALID_STATE_TRANSITION",
    )
    .await;
    assert_eq!(
        body["error"]["details"],
        json!({"id": job, "current_state": "PENDING", "requested_state": "COMPLETED", "allowed": ["RUNNING", "CANCELED"]})
    );
    assert_error(
        act(&app, &job, "fail", json!({"error": "boom"})).await,
        409,
        "INVALID_STATE_TRANSITION",
    )
    .await;

    run(&app, &job).await;
    let too_big = json!({"result": {"k": "x".repeat(16 * 1024)}});
    for (action, body, field) in [
        ("complete", json!({"result": [1]}), "result"),
        ("complete", too_big, "result"),
        ("complete", json!({"outcome": 1}), "outcome"),
        ("fail", json!({}), "error"),
        ("fail", json!({"error": "x".repeat(4097)}), "error"),
    ] {
        assert_invalid_field(act(&app, &job, action, body).await, field).await;
    }

    // The job is at version 2 (the allocation changed it): a stale If-Match is refused.
    let complete = format!("/api/jobs/{job}/complete");
    let stale = app
        .post_with(&complete, &writer(), ("If-Match", "\"1\""), Some(json!({})))
        .await;
    let body = assert_error(stale, 412, "VERSION_MISMATCH").await;
    assert_eq!(body["error"]["details"]["current_version"], 2);
    let result = json!({"result": {"summary": "done", "lines": 3}});
    let response = app
        .post_with(&complete, &writer(), ("If-Match", "\"2\""), Some(result))
        .await;
    assert_eq!(response.headers()["etag"], "\"3\"");
    let (status, done) = parts(response).await;
    assert_eq!(status, 200);
    assert_eq!(done["status"], "COMPLETED");
    assert_eq!(done["result"], json!({"summary": "done", "lines": 3}));
    assert_eq!(done["allocated_workers"], 0);
    assert!(done["completed_at"].as_str().unwrap() >= done["started_at"].as_str().unwrap());
    let body = assert_error(
        act(&app, &job, "fail", json!({"error": "late"})).await,
        409,
        "INVALID_STATE_TRANSITION",
    )
    .await;
    assert_eq!(body["error"]["details"]["allowed"], json!([]));

    let failing = submit_task(&app, &writer(), "doomed").await;
    run(&app, &failing).await;
    let (status, failed) =
        parts(act(&app, &failing, "fail", json!({"error": "out of memory"})).await).await;
    assert_eq!(status, 200);
    assert_eq!(
        (failed["status"].as_str(), failed["error"].as_str()),
        (Some("FAILED"), Some("out of memory"))
    );
    assert!(failed["result"].is_null());

    let trail = app.job_transitions(&failing, "?offset=2").await;
    assert_eq!(
        (
            texts(&trail["transitions"], "to_state"),
            trail["total"].as_i64()
        ),
        (vec!["RUNNING", "FAILED"], Some(4))
    );
    assert_not_found(
        app.post("/api/jobs/j_000000000000/complete", &writer(), json!({}))
            .await,
    )
    .await;
}

#[tokio::test]
async fn canceling_a_single_job() {
    let app = spawn_app().await;
    let job = submit_task(&app, &writer(), "cancel me").await;
    let path = format!("/api/jobs/{job}/cancel");
    assert_invalid_field(
        app.post(&path, &writer(), json!({"reason": "x".repeat(1001)}))
            .await,
        "reason",
    )
    .await;

    // An empty body is an absent reason.
    let response = app
        .request(Method::POST, &path, Some(&writer()))
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["etag"], "\"2\"");
    let (status, canceled) = parts(response).await;
    assert_eq!(status, 200);
    assert_eq!(canceled["status"], "CANCELED");
    assert!(canceled["completed_at"].is_string() && canceled["started_at"].is_null());

    let body = assert_error(
        app.post(&path, &writer(), json!({})).await,
        409,
        "INVALID_STATE_TRANSITION",
    )
    .await;
    assert_eq!(body["error"]["details"]["current_state"], "CANCELED");

    let running = submit_task(&app, &writer(), "running").await;
    run(&app, &running).await;
    let (status, canceled) = parts(
        act(
            &app,
            &running,
            "cancel",
            json!({"reason": "no longer needed"}),
        )
        .await,
    )
    .await;
    assert_eq!(
        (status, canceled["status"].as_str()),
        (200, Some("CANCELED"))
    );
    assert!(canceled["started_at"].is_string());
    let trail = app.job_transitions(&running, "").await;
    let last = &trail["transitions"][3];
    assert_eq!(
        (last["from_state"].as_str(), last["to_state"].as_str()),
        (Some("RUNNING"), Some("CANCELED"))
    );
    assert_eq!(last["reason"], "no longer needed");
}

#[tokio::test]
async fn another_workspace_s_jobs_are_invisible() {
    let app = spawn_app().await;
    let theirs = submit_task(&app, &token(&[Scope::JobsWrite], Some("ws_b")), "theirs").await;
    let outsider = writer();
    for path in [
        format!("/api/jobs/{theirs}"),
        format!("/api/jobs/{theirs}/children"),
        format!("/api/jobs/{theirs}/transitions"),
    ] {
        assert_not_found(app.get(&path, &outsider).await).await;
    }
    for (action, body) in [
        ("cancel", json!({})),
        ("complete", json!({})),
        ("fail", json!({"error": "x"})),
    ] {
        let response = app
            .post(&format!("/api/jobs/{theirs}/{action}"), &outsider, body)
            .await;
        assert_not_found(response).await;
    }
    let (_, list) = parts(app.get("/api/jobs", &outsider).await).await;
    assert_eq!(list["total"], 0);
    let (_, job) = parts(
        app.get(
            &format!("/api/jobs/{theirs}"),
            &token(&[Scope::JobsRead], Some("ws_b")),
        )
        .await,
    )
    .await;
    assert_eq!(
        (job["status"].as_str(), job["version"].as_i64()),
        (Some("PENDING"), Some(1))
    );
}

#[tokio::test]
async fn every_endpoint_needs_a_valid_token_with_its_scope() {
    let app = spawn_app().await;
    let job = submit_task(&app, &writer(), "guarded").await;
    let endpoints = [
        (Method::GET, "/api/jobs".to_owned(), Scope::JobsRead),
        (Method::GET, format!("/api/jobs/{job}"), Scope::JobsRead),
        (
            Method::GET,
            format!("/api/jobs/{job}/children"),
            Scope::JobsRead,
        ),
        (
            Method::GET,
            format!("/api/jobs/{job}/transitions"),
            Scope::JobsRead,
        ),
        (
            Method::POST,
            "/api/jobs/submit".to_owned(),
            Scope::JobsWrite,
        ),
        (
            Method::POST,
            format!("/api/jobs/{job}/cancel"),
            Scope::JobsWrite,
        ),
        (
            Method::POST,
            format!("/api/jobs/{job}/complete"),
            Scope::JobsWrite,
        ),
        (
            Method::POST,
            format!("/api/jobs/{job}/fail"),
            Scope::JobsWrite,
        ),
    ];
    for (method, path, scope) in endpoints {
        app.assert_needs_scope(method, &path, scope, &json!({}))
            .await;
    }
    let (_, unchanged) = parts(app.get(&format!("/api/jobs/{job}"), &writer()).await).await;
    assert_eq!(unchanged["version"], 1);

    // Routing: unknown ids are 404 whatever their shape, wrong methods 405; a concrete path wins
    // over `/api/jobs/{id}`, so GET on the submit endpoint is a wrong method, not a job's id.
    let response = app.get("/api/jobs/submit", &writer()).await;
    assert_eq!(response.headers()["allow"], "POST");
    assert_error(response, 405, "METHOD_NOT_ALLOWED").await;
    assert_not_found(
        app.post("/api/jobs/bad%20id/cancel", &writer(), json!({}))
            .await,
    )
    .await;
    let response = app
        .post(&format!("/api/jobs/{job}"), &writer(), json!({}))
        .await;
    assert_eq!(response.headers()["allow"], "GET");
    assert_error(response, 405, "METHOD_NOT_ALLOWED").await;
    let response = app.get("/api/jobs/submit/x", &writer()).await;
    assert_not_found(response).await;
}

#[tokio::test]
async fn cancel_and_fail_refuse_a_stale_if_match_and_change_nothing() {
    let app = spawn_app().await;
    for (action, body) in [
        ("cancel", json!({"reason": "r"})),
        ("fail", json!({"error": "e"})),
    ] {
        let job = submit_task(&app, &writer(), "guarded").await;
        run(&app, &job).await;
        // Running at version 2 (the allocation started it): version 1 is stale.
        let path = format!("/api/jobs/{job}/{action}");
        let stale = app
            .post_with(&path, &writer(), ("If-Match", "\"1\""), Some(body.clone()))
            .await;
        let refused = assert_error(stale, 412, "VERSION_MISMATCH").await;
        assert_eq!(refused["error"]["details"]["current_version"], 2);
        assert_eq!(app.job(&job).await["status"], "RUNNING", "{action}");
        let current = app
            .post_with(&path, &writer(), ("If-Match", "\"2\""), Some(body))
            .await;
        assert_eq!(current.status(), 200, "{action}");
    }
}
