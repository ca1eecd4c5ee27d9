//! The resources endpoints through the host: allocate, release and usage against the per-depth quotas,
//! with the jobs they change, their events, and many allocations racing for one depth.

use api_tests::{TestApp, all_scopes, assert_error, parts, spawn_app, spawn_app_with, token};
use orchestrator_core::auth::Scope;
use reqwest::{Method, Response};
use serde_json::{Value, json};

const WS: &str = "ws_a";

/// A token for everything in [`WS`].
fn member() -> String {
    token(&all_scopes(), Some(WS))
}

async fn post(app: &TestApp, path: &str, token: &str, body: Value) -> Response {
    app.request(Method::POST, path, Some(token))
        .json(&body)
        .send()
        .await
        .unwrap()
}

async fn submit(app: &TestApp, depth: i64, parent: Option<&str>) -> String {
    let body = json!({"task_description": "t", "worker_count": 3, "depth": depth, "parent_job_id": parent});
    let (status, job) = parts(post(app, "/api/jobs/submit", &member(), body).await).await;
    assert_eq!(status, 201, "{job}");
    job["id"].as_str().unwrap().to_owned()
}

async fn allocate(app: &TestApp, job: &str, depth: i64, workers: i64) -> Response {
    post(
        app,
        "/api/resources/allocate",
        &member(),
        json!({"job_id": job, "depth": depth, "worker_count": workers}),
    )
    .await
}

/// Allocates and returns the number granted (asserting 201).
async fn granted(app: &TestApp, job: &str, depth: i64, workers: i64) -> i64 {
    let (status, grant) = parts(allocate(app, job, depth, workers).await).await;
    assert_eq!(status, 201, "{grant}");
    grant["granted"].as_i64().unwrap()
}

async fn release(app: &TestApp, job: &str, depth: i64) -> Value {
    let (status, body) = parts(
        post(
            app,
            "/api/resources/release",
            &member(),
            json!({"job_id": job, "depth": depth}),
        )
        .await,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    body
}

/// `allocated` per depth, from `GET /api/resources/usage`, checking each row's arithmetic.
async fn allocated(app: &TestApp) -> Vec<i64> {
    let (status, body) = parts(app.get("/api/resources/usage", &member()).await).await;
    assert_eq!(status, 200);
    body["usage"]
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
        .map(|(depth, row)| {
            assert_eq!(row["depth"], depth as i64);
            let (max, used) = (
                row["max_workers"].as_i64().unwrap(),
                row["allocated"].as_i64().unwrap(),
            );
            assert_eq!(
                row["available"].as_i64().unwrap(),
                (max - used).max(0),
                "{row}"
            );
            used
        })
        .collect()
}

async fn job(app: &TestApp, id: &str) -> Value {
    parts(app.get(&format!("/api/jobs/{id}"), &member()).await)
        .await
        .1
}

/// `(type, subject_id, data)` of the events of `types`, in `seq` order.
async fn events(app: &TestApp, types: &[&str]) -> Vec<(String, String, Value)> {
    let types: Vec<String> = types.iter().map(|t| t.to_string()).collect();
    app.db
        .client()
        .await
        .unwrap()
        .query(
            "SELECT type, subject_id, data::text FROM events WHERE type = ANY($1) ORDER BY seq",
            &[&types],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| {
            let data: String = row.get(2);
            (row.get(0), row.get(1), serde_json::from_str(&data).unwrap())
        })
        .collect()
}

#[tokio::test]
async fn allocations_grant_what_is_left_and_add_up_per_job() {
    let app = spawn_app().await;
    let (a, b, c) = (
        submit(&app, 0, None).await,
        submit(&app, 0, None).await,
        submit(&app, 0, None).await,
    );

    let response = allocate(&app, &a, 0, 6).await;
    assert!(response.headers().get("etag").is_none());
    let (status, grant) = parts(response).await;
    assert_eq!(status, 201);
    let allocation_id = grant["allocation_id"].as_str().unwrap().to_owned();
    assert!(
        allocation_id.starts_with("a_") && allocation_id.len() == 14,
        "{grant}"
    );
    assert_eq!(
        grant,
        json!({"job_id": a, "depth": 0, "requested": 6, "granted": 6, "allocation_id": allocation_id})
    );
    let started = job(&app, &a).await;
    assert_eq!(
        (
            started["status"].as_str(),
            started["allocated_workers"].as_i64()
        ),
        (Some("RUNNING"), Some(6))
    );
    assert_eq!(started["version"], 2);
    assert!(started["started_at"].is_string());

    // Partial grant: 4 of 6 left.
    let (status, partial) = parts(allocate(&app, &b, 0, 6).await).await;
    assert_eq!(
        (
            status,
            partial["requested"].as_i64(),
            partial["granted"].as_i64()
        ),
        (201, Some(6), Some(4))
    );
    assert_eq!(allocated(&app).await, [10, 0, 0, 0, 0, 0]);

    let body = assert_error(allocate(&app, &c, 0, 1).await, 409, "QUOTA_EXCEEDED").await;
    assert_eq!(
        body["error"]["details"],
        json!({"depth": 0, "requested": 1, "available": 0})
    );
    assert_eq!(
        job(&app, &c).await["status"],
        "PENDING",
        "a refused allocation starts nothing"
    );

    let freed = release(&app, &a, 0).await;
    assert_eq!(
        freed,
        json!({"job_id": a, "depth": 0, "released": true, "released_workers": 6})
    );
    assert_eq!(allocated(&app).await[0], 4);
    let after = job(&app, &a).await;
    assert_eq!(
        (
            after["status"].as_str(),
            after["allocated_workers"].as_i64()
        ),
        (Some("RUNNING"), Some(0))
    );
    assert_eq!(
        release(&app, &a, 0).await,
        json!({"job_id": a, "depth": 0, "released": false, "released_workers": 0})
    );
    // A depth the job is not at holds nothing either.
    assert_eq!(release(&app, &b, 3).await["released"], false);

    // Grants to one job add up, and a release frees them all.
    assert_eq!(granted(&app, &b, 0, 2).await, 2);
    assert_eq!(granted(&app, &b, 0, 3).await, 3);
    assert_eq!(job(&app, &b).await["allocated_workers"], 9);
    assert_eq!(allocated(&app).await[0], 9);
    assert_eq!(release(&app, &b, 0).await["released_workers"], 9);
    assert_eq!(allocated(&app).await, [0; 6]);

    let allocated_events = events(&app, &["resources.allocated"]).await;
    assert_eq!(allocated_events.len(), 4);
    assert_eq!(allocated_events[0].1, allocation_id);
    assert_eq!(allocated_events[0].2, grant);
    let released = events(&app, &["resources.released"]).await;
    let subjects: Vec<&str> = released
        .iter()
        .map(|(_, subject, _)| subject.as_str())
        .collect();
    assert_eq!(
        subjects,
        [a.as_str(), &b],
        "releasing nothing emits nothing"
    );
    assert_eq!(released[0].2, freed);
    let started_events = events(&app, &["job.state.changed"]).await;
    let runs: Vec<(&str, &Value)> = started_events
        .iter()
        .filter(|(_, _, data)| data["to"] == "RUNNING")
        .map(|(_, subject, data)| (subject.as_str(), &data["from"]))
        .collect();
    assert_eq!(
        runs,
        [
            (a.as_str(), &json!("PENDING")),
            (b.as_str(), &json!("PENDING"))
        ]
    );
}

#[tokio::test]
async fn allocation_needs_a_live_job_at_that_depth() {
    let app = spawn_app().await;
    let root = submit(&app, 0, None).await;
    let child = submit(&app, 1, Some(&root)).await;

    assert_error(
        allocate(&app, "j_000000000000", 0, 1).await,
        404,
        "NOT_FOUND",
    )
    .await;
    let theirs = {
        let body = json!({"task_description": "t", "worker_count": 1});
        let other = token(&[Scope::JobsWrite], Some("ws_b"));
        parts(post(&app, "/api/jobs/submit", &other, body).await)
            .await
            .1["id"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    assert_error(allocate(&app, &theirs, 0, 1).await, 404, "NOT_FOUND").await;
    assert_error(
        post(
            &app,
            "/api/resources/release",
            &member(),
            json!({"job_id": theirs, "depth": 0}),
        )
        .await,
        404,
        "NOT_FOUND",
    )
    .await;

    let body = assert_error(allocate(&app, &child, 0, 1).await, 422, "VALIDATION_FAILED").await;
    assert_eq!(body["error"]["details"]["fields"][0]["field"], "depth");
    assert_eq!(granted(&app, &child, 1, 2).await, 2);
    assert_eq!(allocated(&app).await, [0, 2, 0, 0, 0, 0]);

    for (body, field) in [
        (
            json!({"job_id": root, "depth": 0, "worker_count": 0}),
            "worker_count",
        ),
        (
            json!({"job_id": root, "depth": 0, "worker_count": 11}),
            "worker_count",
        ),
        (
            json!({"job_id": root, "depth": 6, "worker_count": 1}),
            "depth",
        ),
        (
            json!({"job_id": "a b", "depth": 0, "worker_count": 1}),
            "job_id",
        ),
        (json!({"depth": 0, "worker_count": 1}), "job_id"),
        (json!({"job_id": root, "worker_count": 1}), "depth"),
        (json!({"job_id": root, "depth": 0}), "worker_count"),
        (
            json!({"job_id": root, "depth": 0, "worker_count": 1, "priority": 1}),
            "priority",
        ),
    ] {
        let body = assert_error(
            post(&app, "/api/resources/allocate", &member(), body).await,
            422,
            "VALIDATION_FAILED",
        )
        .await;
        assert_eq!(
            body["error"]["details"]["fields"][0]["field"], field,
            "{body}"
        );
    }
    for body in [
        json!({"job_id": root}),
        json!({"job_id": root, "depth": 0, "worker_count": 1}),
    ] {
        assert_error(
            post(&app, "/api/resources/release", &member(), body).await,
            422,
            "VALIDATION_FAILED",
        )
        .await;
    }

    let canceled = submit(&app, 0, None).await;
    let response = post(
        &app,
        &format!("/api/jobs/{canceled}/cancel"),
        &member(),
        json!({}),
    )
    .await;
    assert_eq!(response.status(), 200);
    let body = assert_error(
        allocate(&app, &canceled, 0, 1).await,
        409,
        "INVALID_STATE_TRANSITION",
    )
    .await;
    assert_eq!(
        body["error"]["details"],
        json!({"id": canceled, "current_state": "CANCELED", "requested_state": "RUNNING", "allowed": []})
    );
    assert_eq!(release(&app, &canceled, 0).await["released"], false);
}

#[tokio::test]
async fn allocate_and_release_honour_if_match() {
    let app = spawn_app().await;
    let job_id = submit(&app, 0, None).await;
    let send = |path: &str, body: Value, version: &str| {
        app.request(Method::POST, path, Some(&member()))
            .header("If-Match", version)
            .json(&body)
            .send()
    };
    let allocation = json!({"job_id": job_id, "depth": 0, "worker_count": 2});
    let body = assert_error(
        send("/api/resources/allocate", allocation.clone(), "\"7\"")
            .await
            .unwrap(),
        412,
        "VERSION_MISMATCH",
    )
    .await;
    assert_eq!(body["error"]["details"]["current_version"], 1);
    assert_eq!(
        send("/api/resources/allocate", allocation, "\"1\"")
            .await
            .unwrap()
            .status(),
        201
    );
    let freeing = json!({"job_id": job_id, "depth": 0});
    assert_error(
        send("/api/resources/release", freeing.clone(), "\"1\"")
            .await
            .unwrap(),
        412,
        "VERSION_MISMATCH",
    )
    .await;
    assert_eq!(
        send("/api/resources/release", freeing, "\"2\"")
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(job(&app, &job_id).await["version"], 3);
}

#[tokio::test]
async fn jobs_that_end_free_what_they_hold() {
    let app = spawn_app().await;
    let (done, failed, canceled) = (
        submit(&app, 0, None).await,
        submit(&app, 0, None).await,
        submit(&app, 0, None).await,
    );
    for id in [&done, &failed, &canceled] {
        assert_eq!(granted(&app, id, 0, 3).await, 3);
    }
    assert_eq!(allocated(&app).await[0], 9);

    let end = async |id: &str, action: &str, body: Value| {
        post(&app, &format!("/api/jobs/{id}/{action}"), &member(), body).await
    };
    let (status, job) = parts(end(&done, "complete", json!({"result": {"ok": true}})).await).await;
    assert_eq!((status, job["allocated_workers"].as_i64()), (200, Some(0)));
    assert_eq!(allocated(&app).await[0], 6);
    assert_eq!(
        end(&failed, "fail", json!({"error": "crashed"}))
            .await
            .status(),
        200
    );
    assert_eq!(allocated(&app).await[0], 3);
    assert_eq!(end(&canceled, "cancel", json!({})).await.status(), 200);
    assert_eq!(allocated(&app).await[0], 0);

    let released = events(&app, &["resources.released"]).await;
    let freed: Vec<(&str, &Value)> = released
        .iter()
        .map(|(_, subject, data)| (subject.as_str(), &data["released_workers"]))
        .collect();
    assert_eq!(
        freed,
        [
            (done.as_str(), &json!(3)),
            (failed.as_str(), &json!(3)),
            (canceled.as_str(), &json!(3))
        ]
    );
    // The freed workers can be granted again.
    let next = submit(&app, 0, None).await;
    assert_eq!(granted(&app, &next, 0, 10).await, 10);
}

#[tokio::test]
async fn usage_follows_the_configured_quotas() {
    let app = spawn_app_with(|o| o.variable("depth_quotas", "4,4,3,2,1,0")).await;
    let (status, body) = parts(
        app.get(
            "/api/resources/usage",
            &token(&[Scope::ResourcesRead], None),
        )
        .await,
    )
    .await;
    assert_eq!(status, 200);
    let maxima: Vec<i64> = body["usage"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| row["max_workers"].as_i64().unwrap())
        .collect();
    assert_eq!(maxima, [4, 4, 3, 2, 1, 0]);
    assert_eq!(
        body["usage"][0],
        json!({"depth": 0, "max_workers": 4, "allocated": 0, "available": 4})
    );

    let root = submit(&app, 0, None).await;
    let child = submit(&app, 1, Some(&root)).await;
    let grandchild = submit(&app, 2, Some(&child)).await;
    assert_eq!(granted(&app, &root, 0, 10).await, 4);
    assert_eq!(granted(&app, &grandchild, 2, 1).await, 1);
    assert_eq!(allocated(&app).await, [4, 0, 1, 0, 0, 0]);
    let (_, body) = parts(app.get("/api/resources/usage", &member()).await).await;
    assert_eq!(
        body["usage"][2],
        json!({"depth": 2, "max_workers": 3, "allocated": 1, "available": 2})
    );
    // A depth whose quota is zero grants nothing.
    let deepest = {
        let mut parent = grandchild.clone();
        for depth in 3..=5 {
            parent = submit(&app, depth, Some(&parent)).await;
        }
        parent
    };
    let body = assert_error(allocate(&app, &deepest, 5, 1).await, 409, "QUOTA_EXCEEDED").await;
    assert_eq!(
        body["error"]["details"],
        json!({"depth": 5, "requested": 1, "available": 0})
    );
}

#[tokio::test]
async fn resources_endpoints_need_a_valid_token_with_their_scope() {
    let app = spawn_app().await;
    let job_id = submit(&app, 0, None).await;
    let endpoints = [
        (
            Method::GET,
            "/api/resources/usage",
            Scope::ResourcesRead,
            json!(null),
        ),
        (
            Method::GET,
            "/api/resources/quotas",
            Scope::ResourcesRead,
            json!(null),
        ),
        (
            Method::POST,
            "/api/resources/allocate",
            Scope::ResourcesWrite,
            json!({"job_id": job_id, "depth": 0, "worker_count": 1}),
        ),
        (
            Method::POST,
            "/api/resources/release",
            Scope::ResourcesWrite,
            json!({"job_id": job_id, "depth": 0}),
        ),
    ];
    for (method, path, scope, body) in endpoints {
        let response = app
            .request(method.clone(), path, None)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_error(response, 401, "UNAUTHENTICATED").await;
        let others: Vec<Scope> = all_scopes().into_iter().filter(|s| *s != scope).collect();
        let response = app
            .request(method, path, Some(&token(&others, None)))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_error(response, 403, "FORBIDDEN").await;
    }
    assert_eq!(allocated(&app).await, [0; 6]);
    let response = app.get("/api/resources/allocate", &member()).await;
    assert_eq!(response.headers()["allow"], "POST");
    assert_error(response, 405, "METHOD_NOT_ALLOWED").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_allocations_never_over_grant() {
    let app = spawn_app().await;
    let mut jobs = Vec::new();
    for _ in 0..10 {
        jobs.push(submit(&app, 0, None).await);
    }
    // 50 requests of 3 workers each against the 10 of depth 0, five per job, all at once.
    let url = format!("{}/api/resources/allocate", app.address);
    let racers: Vec<_> = (0..50)
        .map(|n| {
            let request = app
                .http
                .post(&url)
                .bearer_auth(member())
                .json(&json!({"job_id": jobs[n % jobs.len()], "depth": 0, "worker_count": 3}));
            tokio::spawn(async move {
                let response = request.send().await.unwrap();
                let status = response.status().as_u16();
                (status, response.json::<Value>().await.unwrap())
            })
        })
        .collect();
    let mut total = 0;
    let mut grants = 0;
    for racer in racers {
        let (status, body) = racer.await.unwrap();
        match status {
            201 => {
                total += body["granted"].as_i64().unwrap();
                grants += 1;
            }
            409 => assert_eq!(body["error"]["code"], "QUOTA_EXCEEDED", "{body}"),
            other => panic!("unexpected {other}: {body}"),
        }
    }
    assert_eq!(total, 10, "exactly the quota is granted, never more");
    assert_eq!(allocated(&app).await[0], 10);
    let mut held = 0;
    for id in &jobs {
        held += job(&app, id).await["allocated_workers"].as_i64().unwrap();
    }
    assert_eq!(held, 10);
    assert_eq!(events(&app, &["resources.allocated"]).await.len(), grants);
}
