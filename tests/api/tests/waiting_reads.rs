//! Waiting reads: `GET /api/jobs/{id}` and `GET /api/supervisor/workers/{id}` answer as soon as
//! the object passes the version the client has, or `304 Not Modified` when the wait is over.

use api_tests::{
    OTHER_WORKSPACE, TestApp, assert_error, member, parts, spawn_app, spawn_app_with, token,
    without_redis,
};
use orchestrator_core::auth::Scope;
use reqwest::{Method, Response};
use serde_json::json;
use std::time::{Duration, Instant};

async fn read(app: &TestApp, path: &str, headers: &[(&str, &str)]) -> (Response, Duration) {
    let mut request = app.request(Method::GET, path, Some(&member()));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let started = Instant::now();
    let response = request.send().await.expect("request");
    (response, started.elapsed())
}

/// Runs `change` after `delay`, while the caller waits.
fn later(delay: Duration, change: impl Future<Output = ()> + Send + 'static) {
    tokio::spawn(async move {
        tokio::time::sleep(delay).await;
        change.await;
    });
}

#[tokio::test]
async fn a_waiting_job_read_answers_when_the_job_changes() {
    let app = std::sync::Arc::new(spawn_app().await);
    let id = app.submit_at(0, None).await;
    let version = app.job(&id).await["version"].as_i64().unwrap();
    let (app2, id2) = (app.clone(), id.clone());
    later(Duration::from_millis(500), async move {
        let path = format!("/api/jobs/{id2}/cancel");
        let (status, _) = parts(app2.post(&path, &member(), json!({})).await).await;
        assert_eq!(status, 200);
    });
    let path = format!("/api/jobs/{id}?wait=20&after_version={version}");
    let (response, took) = read(&app, &path, &[]).await;
    assert_eq!(response.status(), 200);
    let etag = response.headers()["etag"].to_str().unwrap().to_owned();
    let job: serde_json::Value = response.json().await.unwrap();
    assert_eq!(job["status"], "CANCELED");
    assert_eq!(etag, format!("\"{}\"", job["version"]));
    assert!(job["version"].as_i64().unwrap() > version);
    // It waited for the change, and answered soon after it: the doorbell rang (without it, the
    // next look would be the fallback's, 2 s after the wait began).
    assert!(
        (Duration::from_millis(450)..Duration::from_millis(1500)).contains(&took),
        "took {took:?}"
    );
}

#[tokio::test]
async fn a_wait_that_sees_no_change_ends_in_not_modified() {
    let app = spawn_app().await;
    let id = app.submit_at(0, None).await;
    let job = app.job(&id).await;
    let version = job["version"].as_i64().unwrap();
    let path = format!("/api/jobs/{id}?wait=1&after_version={version}");
    let (response, took) = read(&app, &path, &[]).await;
    assert_eq!(response.status(), 304);
    assert_eq!(
        response.headers()["etag"],
        format!("\"{version}\"").as_str()
    );
    assert!(
        (Duration::from_millis(950)..Duration::from_secs(3)).contains(&took),
        "took {took:?}"
    );
    // A client behind the job gets it at once, wait or not.
    let path = format!("/api/jobs/{id}?wait=30&after_version={}", version - 1);
    let (response, took) = read(&app, &path, &[]).await;
    assert_eq!(response.status(), 200);
    assert!(took < Duration::from_millis(500), "took {took:?}");
}

#[tokio::test]
async fn http_conditional_headers_say_the_same() {
    let app = spawn_app().await;
    let worker = app.register_worker("w_1", "ws_a").await;
    let etag = format!("\"{}\"", worker["version"]);
    let path = "/api/supervisor/workers/w_1";
    // If-None-Match alone is a conditional read: current means 304 at once.
    let (response, took) = read(&app, path, &[("if-none-match", &etag)]).await;
    assert_eq!(response.status(), 304);
    assert!(took < Duration::from_millis(500), "took {took:?}");
    let (response, _) = read(&app, path, &[("if-none-match", "\"0\", W/\"99\"")]).await;
    assert_eq!(response.status(), 200);
    // With `Prefer: wait`, it waits for the worker to move.
    let app = std::sync::Arc::new(app);
    let mover = app.clone();
    later(Duration::from_millis(300), async move {
        mover.move_worker("w_1", "start", None).await;
    });
    let (response, took) = read(
        &app,
        path,
        &[("if-none-match", &etag), ("prefer", "wait=20")],
    )
    .await;
    assert_eq!(response.status(), 200);
    let moved: serde_json::Value = response.json().await.unwrap();
    assert_eq!(moved["status"], "RUNNING");
    assert!(took < Duration::from_millis(1500), "took {took:?}");
    // A heartbeat is no change: the wait runs out.
    let etag = format!("\"{}\"", moved["version"]);
    let beater = app.clone();
    later(Duration::from_millis(200), async move {
        let path = "/api/supervisor/workers/w_1/heartbeat";
        let (status, _) = parts(beater.post(path, &member(), json!({})).await).await;
        assert_eq!(status, 200);
    });
    let (response, _) = read(
        &app,
        path,
        &[("if-none-match", &etag), ("prefer", "wait=1")],
    )
    .await;
    assert_eq!(response.status(), 304);
}

#[tokio::test]
async fn without_redis_a_wait_still_sees_the_change() {
    // No doorbell rings: the read looks again on its fallback interval.
    let app = std::sync::Arc::new(spawn_app_with(without_redis).await);
    app.register_worker("w_1", "ws_a").await;
    let mover = app.clone();
    later(Duration::from_millis(200), async move {
        mover.move_worker("w_1", "start", None).await;
    });
    let path = "/api/supervisor/workers/w_1?wait=20&after_version=1";
    let (response, took) = read(&app, path, &[]).await;
    assert_eq!(response.status(), 200);
    assert!(took < Duration::from_secs(4), "took {took:?}");
}

#[tokio::test]
async fn bad_waits_are_refused_pointless_ones_answer_and_other_workspaces_stay_unknown() {
    let app = spawn_app().await;
    let id = app.submit_at(0, None).await;
    app.register_worker("w_1", "ws_a").await;
    for query in [
        "wait=61&after_version=1",
        "wait=-1&after_version=1",
        "wait=soon&after_version=1",
        "after_version=x",
    ] {
        for path in [
            format!("/api/jobs/{id}"),
            "/api/supervisor/workers/w_1".into(),
        ] {
            let (response, _) = read(&app, &format!("{path}?{query}"), &[]).await;
            assert_error(response, 422, "VALIDATION_FAILED").await;
        }
    }
    // A wait with no version to pass answers at once: any version is news to this client.
    for path in [
        format!("/api/jobs/{id}?wait=10"),
        "/api/supervisor/workers/w_1?wait=10".into(),
    ] {
        let (response, took) = read(&app, &path, &[("prefer", "wait=10")]).await;
        assert_eq!(response.status(), 200, "{path}");
        assert!(took < Duration::from_secs(5), "{path} took {took:?}");
    }
    let outsider = token(&[Scope::JobsRead], Some(OTHER_WORKSPACE));
    let started = Instant::now();
    let hidden = app
        .get(
            &format!("/api/jobs/{id}?wait=30&after_version=99"),
            &outsider,
        )
        .await;
    assert_error(hidden, 404, "NOT_FOUND").await;
    assert!(started.elapsed() < Duration::from_secs(1));
}
