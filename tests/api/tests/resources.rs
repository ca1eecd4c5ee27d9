//! The resources endpoints through the host: allocate, release and usage against the per-depth quotas,
//! with the jobs they change, their events, and many allocations racing for one depth.

use api_tests::{
    OTHER_WORKSPACE, TestApp, all_scopes, assert_error, assert_generated_id, assert_invalid_field,
    assert_not_found, member, numbers, parts, spawn_app, spawn_app_on, spawn_app_with, token,
};
use orchestrator_core::auth::Scope;
use reqwest::Method;
use serde_json::{Value, json};
use std::time::Duration;
use tokio::task::JoinHandle;

async fn release(app: &TestApp, job: &str, depth: i64) -> Value {
    let body = json!({"job_id": job, "depth": depth});
    let (status, body) = parts(app.post("/api/resources/release", &member(), body).await).await;
    assert_eq!(status, 200, "{body}");
    body
}

#[tokio::test]
async fn allocations_grant_what_is_left_and_add_up_per_job() {
    let app = spawn_app().await;
    let (a, b, c) = (
        app.submit_at(0, None).await,
        app.submit_at(0, None).await,
        app.submit_at(0, None).await,
    );

    let response = app.allocate(&a, 0, 6).await;
    assert!(response.headers().get("etag").is_none());
    let (status, grant) = parts(response).await;
    assert_eq!(status, 201);
    let allocation_id = grant["allocation_id"].as_str().unwrap().to_owned();
    assert_generated_id(&allocation_id, "a_");
    assert_eq!(
        grant,
        json!({"job_id": a, "depth": 0, "requested": 6, "granted": 6, "allocation_id": allocation_id})
    );
    let started = app.job(&a).await;
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
    let (status, partial) = parts(app.allocate(&b, 0, 6).await).await;
    assert_eq!(
        (
            status,
            partial["requested"].as_i64(),
            partial["granted"].as_i64()
        ),
        (201, Some(6), Some(4))
    );
    assert_eq!(app.allocated().await, [10, 0, 0, 0, 0, 0]);

    let body = assert_error(app.allocate(&c, 0, 1).await, 409, "QUOTA_EXCEEDED").await;
    assert_eq!(
        body["error"]["details"],
        json!({"depth": 0, "requested": 1, "available": 0})
    );
    assert_eq!(
        app.job(&c).await["status"],
        "PENDING",
        "a refused allocation starts nothing"
    );

    let freed = release(&app, &a, 0).await;
    assert_eq!(
        freed,
        json!({"job_id": a, "depth": 0, "released": true, "released_workers": 6})
    );
    assert_eq!(app.allocated().await[0], 4);
    let after = app.job(&a).await;
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
    assert_eq!(app.granted(&b, 0, 2).await, 2);
    assert_eq!(app.granted(&b, 0, 3).await, 3);
    assert_eq!(app.job(&b).await["allocated_workers"], 9);
    assert_eq!(app.allocated().await[0], 9);
    assert_eq!(release(&app, &b, 0).await["released_workers"], 9);
    assert_eq!(app.allocated().await, [0; 6]);

    let allocated_events = app.events_of(&["resources.allocated"]).await;
    assert_eq!(allocated_events.len(), 4);
    assert_eq!(allocated_events[0].subject, allocation_id);
    assert_eq!(allocated_events[0].data, grant);
    let released = app.events_of(&["resources.released"]).await;
    let subjects: Vec<&str> = released
        .iter()
        .map(|event| event.subject.as_str())
        .collect();
    assert_eq!(
        subjects,
        [a.as_str(), &b],
        "releasing nothing emits nothing"
    );
    assert_eq!(released[0].data, freed);
    let started_events = app.events_of(&["job.state.changed"]).await;
    let runs: Vec<(&str, &Value)> = started_events
        .iter()
        .filter(|event| event.data["to"] == "RUNNING")
        .map(|event| (event.subject.as_str(), &event.data["from"]))
        .collect();
    assert_eq!(
        runs,
        [
            (a.as_str(), &json!("PENDING")),
            (b.as_str(), &json!("PENDING"))
        ]
    );
}

/// Contract §2: quotas are one global pool per depth, not one per workspace.
#[tokio::test]
async fn workspaces_draw_on_one_pool_per_depth() {
    let app = spawn_app().await;
    let other = token(&all_scopes(), Some(OTHER_WORKSPACE));
    let ours = app.submit_at(0, None).await;
    let body = json!({"task_description": "theirs", "worker_count": 5});
    let theirs = app.submit_job(&other, body).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let allocate_theirs = async |workers: i64| {
        let body = json!({"job_id": theirs, "depth": 0, "worker_count": workers});
        app.post("/api/resources/allocate", &other, body).await
    };

    assert_eq!(app.granted(&ours, 0, 7).await, 7);
    // Of depth 0's 10, what the first workspace took is gone for the second.
    let (status, grant) = parts(allocate_theirs(5).await).await;
    assert_eq!(
        (status, grant["granted"].as_i64()),
        (201, Some(3)),
        "{grant}"
    );
    assert_eq!(app.allocated().await, [10, 0, 0, 0, 0, 0]);
    for refused in [allocate_theirs(1).await, app.allocate(&ours, 0, 1).await] {
        let body = assert_error(refused, 409, "QUOTA_EXCEEDED").await;
        assert_eq!(
            body["error"]["details"],
            json!({"depth": 0, "requested": 1, "available": 0})
        );
    }

    // What the second workspace gives back, the first may take.
    let release = json!({"job_id": theirs, "depth": 0});
    let (status, released) = parts(app.post("/api/resources/release", &other, release).await).await;
    assert_eq!(
        (status, released["released_workers"].as_i64()),
        (200, Some(3))
    );
    assert_eq!(app.granted(&ours, 0, 3).await, 3);
    assert_eq!(app.allocated().await, [10, 0, 0, 0, 0, 0]);
}

#[tokio::test]
async fn allocation_needs_a_live_job_at_that_depth() {
    let app = spawn_app().await;
    let root = app.submit_at(0, None).await;
    let child = app.submit_at(1, Some(&root)).await;

    assert_not_found(app.allocate("j_000000000000", 0, 1).await).await;
    let theirs = {
        let body = json!({"task_description": "t", "worker_count": 1});
        let other = token(&[Scope::JobsWrite], Some("ws_b"));
        app.submit_job(&other, body).await["id"].clone()
    };
    let theirs = theirs.as_str().unwrap();
    assert_not_found(app.allocate(theirs, 0, 1).await).await;
    assert_not_found(
        app.post(
            "/api/resources/release",
            &member(),
            json!({"job_id": theirs, "depth": 0}),
        )
        .await,
    )
    .await;

    assert_invalid_field(app.allocate(&child, 0, 1).await, "depth").await;
    assert_eq!(app.granted(&child, 1, 2).await, 2);
    assert_eq!(app.allocated().await, [0, 2, 0, 0, 0, 0]);

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
        assert_invalid_field(
            app.post("/api/resources/allocate", &member(), body).await,
            field,
        )
        .await;
    }
    for body in [
        json!({"job_id": root}),
        json!({"job_id": root, "depth": 0, "worker_count": 1}),
    ] {
        assert_error(
            app.post("/api/resources/release", &member(), body).await,
            422,
            "VALIDATION_FAILED",
        )
        .await;
    }

    let canceled = app.submit_at(0, None).await;
    let response = app
        .post(
            &format!("/api/jobs/{canceled}/cancel"),
            &member(),
            json!({}),
        )
        .await;
    assert_eq!(response.status(), 200);
    let body = assert_error(
        app.allocate(&canceled, 0, 1).await,
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
    let job_id = app.submit_at(0, None).await;
    let send = async |path: &str, body: Value, version: &str| {
        app.post_with(path, &member(), ("If-Match", version), Some(body))
            .await
    };
    let allocation = json!({"job_id": job_id, "depth": 0, "worker_count": 2});
    let body = assert_error(
        send("/api/resources/allocate", allocation.clone(), "\"7\"").await,
        412,
        "VERSION_MISMATCH",
    )
    .await;
    assert_eq!(body["error"]["details"]["current_version"], 1);
    assert_eq!(
        send("/api/resources/allocate", allocation, "\"1\"")
            .await
            .status(),
        201
    );
    let freeing = json!({"job_id": job_id, "depth": 0});
    assert_error(
        send("/api/resources/release", freeing.clone(), "\"1\"").await,
        412,
        "VERSION_MISMATCH",
    )
    .await;
    assert_eq!(
        send("/api/resources/release", freeing, "\"2\"")
            .await
            .status(),
        200
    );
    assert_eq!(app.job(&job_id).await["version"], 3);
}

#[tokio::test]
async fn jobs_that_end_free_what_they_hold() {
    let app = spawn_app().await;
    let (done, failed, canceled) = (
        app.submit_at(0, None).await,
        app.submit_at(0, None).await,
        app.submit_at(0, None).await,
    );
    for id in [&done, &failed, &canceled] {
        assert_eq!(app.granted(id, 0, 3).await, 3);
    }
    assert_eq!(app.allocated().await[0], 9);

    let end = async |id: &str, action: &str, body: Value| {
        app.post(&format!("/api/jobs/{id}/{action}"), &member(), body)
            .await
    };
    let (status, job) = parts(end(&done, "complete", json!({"result": {"ok": true}})).await).await;
    assert_eq!((status, job["allocated_workers"].as_i64()), (200, Some(0)));
    assert_eq!(app.allocated().await[0], 6);
    assert_eq!(
        end(&failed, "fail", json!({"error": "crashed"}))
            .await
            .status(),
        200
    );
    assert_eq!(app.allocated().await[0], 3);
    assert_eq!(end(&canceled, "cancel", json!({})).await.status(), 200);
    assert_eq!(app.allocated().await[0], 0);

    let released = app.events_of(&["resources.released"]).await;
    let freed: Vec<(&str, &Value)> = released
        .iter()
        .map(|event| (event.subject.as_str(), &event.data["released_workers"]))
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
    let next = app.submit_at(0, None).await;
    assert_eq!(app.granted(&next, 0, 10).await, 10);
}

#[tokio::test]
async fn usage_follows_the_configured_quotas() {
    let app = spawn_app_with(|o| o.variable("depth_quotas", "4,4,3,2,1,0")).await;
    let reader = token(&[Scope::ResourcesRead], None);
    let body = app.get_ok("/api/resources/usage", &reader).await;
    assert_eq!(numbers(&body["usage"], "max_workers"), [4, 4, 3, 2, 1, 0]);
    assert_eq!(
        body["usage"][0],
        json!({"depth": 0, "max_workers": 4, "allocated": 0, "available": 4})
    );

    let root = app.submit_at(0, None).await;
    let child = app.submit_at(1, Some(&root)).await;
    let grandchild = app.submit_at(2, Some(&child)).await;
    assert_eq!(app.granted(&root, 0, 10).await, 4);
    assert_eq!(app.granted(&grandchild, 2, 1).await, 1);
    assert_eq!(app.allocated().await, [4, 0, 1, 0, 0, 0]);
    let body = app.get_ok("/api/resources/usage", &member()).await;
    assert_eq!(
        body["usage"][2],
        json!({"depth": 2, "max_workers": 3, "allocated": 1, "available": 2})
    );
    // A depth whose quota is zero grants nothing.
    let deepest = {
        let mut parent = grandchild.clone();
        for depth in 3..=5 {
            parent = app.submit_at(depth, Some(&parent)).await;
        }
        parent
    };
    let body = assert_error(app.allocate(&deepest, 5, 1).await, 409, "QUOTA_EXCEEDED").await;
    assert_eq!(
        body["error"]["details"],
        json!({"depth": 5, "requested": 1, "available": 0})
    );
}

#[tokio::test]
async fn resources_endpoints_need_a_valid_token_with_their_scope() {
    let app = spawn_app().await;
    let job_id = app.submit_at(0, None).await;
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
        app.assert_needs_scope(method, path, scope, &body).await;
    }
    assert_eq!(app.allocated().await, [0; 6]);
    let response = app.get("/api/resources/allocate", &member()).await;
    assert_eq!(response.headers()["allow"], "POST");
    assert_error(response, 405, "METHOD_NOT_ALLOWED").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_allocations_never_over_grant() {
    let app = spawn_app().await;
    let mut jobs = Vec::new();
    for _ in 0..10 {
        jobs.push(app.submit_at(0, None).await);
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
    assert_eq!(app.allocated().await[0], 10);
    let mut held = 0;
    for id in &jobs {
        held += app.job(id).await["allocated_workers"].as_i64().unwrap();
    }
    assert_eq!(held, 10);
    assert_eq!(app.events_of(&["resources.allocated"]).await.len(), grants);
}

/// Submits depth-0 jobs until one's quota stripe is `wanted`; returns it and its stripe.
async fn job_in_stripe(app: &TestApp, wanted: impl Fn(i64) -> bool) -> (String, i64) {
    loop {
        let job = app.submit_at(0, None).await;
        let stripe = app
            .select_int(&format!("SELECT quota_stripe('{job}')::int8"))
            .await;
        if wanted(stripe) {
            return (job, stripe);
        }
    }
}

/// Sends an allocation at depth 0 that the test lets wait for a lock; its status and body.
fn allocate_in_background(app: &TestApp, job: &str, workers: i64) -> JoinHandle<(u16, Value)> {
    let body = json!({"job_id": job, "depth": 0, "worker_count": workers});
    let request = app
        .request(Method::POST, "/api/resources/allocate", Some(&member()))
        .json(&body)
        .send();
    tokio::spawn(async move { parts(request.await.unwrap()).await })
}

/// Migration 0010: a depth's quota is spread over stripes laid out for the configured limit, and a
/// grant its job's stripe can cover takes from that stripe alone. An instance configured for a
/// lower limit must not grant from rows laid out for a higher one, though every stripe has room:
/// its first grant decides over the whole depth, under its own limit, and lays the rows out for
/// it; the other instance's next grant does the same for its own.
#[tokio::test]
async fn a_changed_limit_acts_on_the_next_grant_whatever_the_rows_were_laid_out_for() {
    let wide = spawn_app_with(|o| o.variable("depth_quotas", "1000,8,5,3,2,1")).await;
    let narrow = spawn_app_on(&wide.db, |o| o.variable("depth_quotas", "12,8,5,3,2,1")).await;
    let mut jobs = Vec::new();
    for _ in 0..4 {
        let job = wide.submit_at(0, None).await;
        assert_eq!(wide.granted(&job, 0, 5).await, 5);
        jobs.push(job);
    }
    let laid_out_for = "SELECT max_workers::int8 FROM quota_usage WHERE depth = 0";
    assert_eq!(wide.select_int(laid_out_for).await, 1000);

    // 20 of the narrow instance's 12 are held: nothing for it.
    let late = narrow.submit_at(0, None).await;
    let refused = assert_error(narrow.allocate(&late, 0, 1).await, 409, "QUOTA_EXCEEDED").await;
    assert_eq!(refused["error"]["details"]["available"], 0);
    release(&narrow, &jobs[0], 0).await;
    assert_error(narrow.allocate(&late, 0, 1).await, 409, "QUOTA_EXCEEDED").await;
    assert_eq!(
        wide.select_int(laid_out_for).await,
        1000,
        "a refusal changes nothing"
    );

    // With 10 held, the narrow instance grants 2 of 5 and lays the rows out for 12.
    release(&narrow, &jobs[1], 0).await;
    assert_eq!(narrow.granted(&late, 0, 5).await, 2);
    assert_eq!(narrow.select_int(laid_out_for).await, 12);
    assert_eq!(narrow.allocated().await[0], 12);
    // The wide instance grants on, from rows laid out for its limit again.
    let more = wide.submit_at(0, None).await;
    assert_eq!(wide.granted(&more, 0, 10).await, 10);
    assert_eq!(wide.select_int(laid_out_for).await, 1000);
    assert_eq!(wide.allocated().await[0], 22);
}

/// Allocations at one depth for jobs in different stripes do not wait for each other: with one
/// job's stripe locked (as a grant in flight holds it), a grant to a job in another stripe
/// commits, and the locked job's own grant waits for its row.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grants_at_one_depth_in_different_stripes_commit_in_parallel() {
    let app = spawn_app_with(|o| o.variable("depth_quotas", "1000,8,5,3,2,1")).await;
    let (held, held_stripe) = job_in_stripe(&app, |_| true).await;
    let (other, _) = job_in_stripe(&app, |stripe| stripe != held_stripe).await;
    // The first grant lays the rows out for this limit, which the fast path then follows.
    let first = app.submit_at(0, None).await;
    assert_eq!(app.granted(&first, 0, 1).await, 1);

    let mut locker = app.db.client().await.unwrap();
    let in_flight = locker.transaction().await.unwrap();
    in_flight
        .execute(
            "SELECT 1 FROM quota_stripes WHERE depth = 0 AND stripe = quota_stripe($1) FOR UPDATE",
            &[&held],
        )
        .await
        .unwrap();
    let waiting = allocate_in_background(&app, &held, 3);
    app.until_requests_wait_for_a_lock(1).await;
    let parallel = tokio::time::timeout(Duration::from_secs(10), app.granted(&other, 0, 3)).await;
    assert_eq!(parallel.ok(), Some(3), "a grant in another stripe waited");
    assert!(
        !waiting.is_finished(),
        "a grant in the locked stripe went past it"
    );
    in_flight.rollback().await.unwrap();
    let (status, grant) = waiting.await.unwrap();
    assert_eq!((status, &grant["granted"]), (201, &json!(3)), "{grant}");
    assert_eq!(app.allocated().await[0], 7);
}

/// A grant that waited for its stripe while another transaction changed it, and then found no room
/// there, must not keep that row locked: it goes on to lock every stripe of the depth in order, and
/// holding one out of order it would deadlock with a grant already doing so (migrations/0010,
/// `quota_take`). Here the test's transaction takes stripe `h`'s room away while A (in `h`) waits
/// for it and B (asking for more than its own stripe has) holds the stripes below `h` and waits for
/// it too; both must be granted once it commits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grant_that_found_no_room_after_waiting_holds_no_stripe() {
    let app = spawn_app_with(|o| o.variable("depth_quotas", "32,8,5,3,2,1")).await;
    // Lays the rows out for 32: two workers in every stripe.
    let first = app.submit_at(0, None).await;
    assert_eq!(app.granted(&first, 0, 1).await, 1);
    let (a, h) = job_in_stripe(&app, |stripe| (1..=13).contains(&stripe)).await;
    let (b, j) = job_in_stripe(&app, |stripe| stripe != h).await;
    let k = (h + 1..16).find(|&k| k != j).unwrap();

    let mut mover = app.db.client().await.unwrap();
    let moving = mover.transaction().await.unwrap();
    moving
        .execute(
            "UPDATE quota_stripes SET capacity = CASE stripe WHEN $1 THEN allocated \
                 ELSE capacity + (SELECT capacity - allocated FROM quota_stripes \
                                  WHERE depth = 0 AND stripe = $1) END \
             WHERE depth = 0 AND stripe IN ($1, $2)",
            &[&(h as i16), &(k as i16)],
        )
        .await
        .unwrap();
    let waiting_a = allocate_in_background(&app, &a, 1);
    app.until_requests_wait_for_a_lock(1).await;
    let waiting_b = allocate_in_background(&app, &b, 10);
    app.until_requests_wait_for_a_lock(2).await;
    moving.commit().await.unwrap();

    let (status, grant) = waiting_b.await.unwrap();
    assert_eq!((status, &grant["granted"]), (201, &json!(10)), "B: {grant}");
    let (status, grant) = waiting_a.await.unwrap();
    assert_eq!((status, &grant["granted"]), (201, &json!(1)), "A: {grant}");
    assert_eq!(app.allocated().await[0], 12);
}
