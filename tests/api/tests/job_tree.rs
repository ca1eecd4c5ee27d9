//! Job trees through the host: a cancel cascades to every live descendant in one transaction, freeing
//! their workers, and stays correct while submissions, allocations and other cancels race with it.

use api_tests::{TestApp, all_scopes, parts, spawn_app, token};
use reqwest::Method;
use serde_json::{Value, json};

const WS: &str = "ws_a";

fn member() -> String {
    token(&all_scopes(), Some(WS))
}

/// Sends a POST and returns its status and JSON body.
async fn post(app: &TestApp, path: &str, body: Value) -> (u16, Value) {
    let response = app
        .request(Method::POST, path, Some(&member()))
        .json(&body)
        .send()
        .await
        .unwrap();
    parts(response).await
}

async fn submit(app: &TestApp, depth: i64, parent: Option<&str>) -> String {
    let body = json!({"task_description": "t", "worker_count": 3, "depth": depth, "parent_job_id": parent});
    let (status, job) = post(app, "/api/jobs/submit", body).await;
    assert_eq!(status, 201, "{job}");
    job["id"].as_str().unwrap().to_owned()
}

async fn allocate(app: &TestApp, job: &str, depth: i64, workers: i64) {
    let body = json!({"job_id": job, "depth": depth, "worker_count": workers});
    let (status, grant) = post(app, "/api/resources/allocate", body).await;
    assert_eq!(
        (status, grant["granted"].as_i64()),
        (201, Some(workers)),
        "{grant}"
    );
}

async fn status(app: &TestApp, job: &str) -> String {
    let (_, job) = parts(app.get(&format!("/api/jobs/{job}"), &member()).await).await;
    job["status"].as_str().unwrap().to_owned()
}

async fn allocated(app: &TestApp) -> Vec<i64> {
    let (_, usage) = parts(app.get("/api/resources/usage", &member()).await).await;
    usage["usage"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| row["allocated"].as_i64().unwrap())
        .collect()
}

async fn last_seq(app: &TestApp) -> i64 {
    let client = app.db.client().await.unwrap();
    let row = client
        .query_one("SELECT coalesce(max(seq), 0) FROM events", &[])
        .await
        .unwrap();
    row.get(0)
}

/// Jobs that are still live below a job that ended: what a cascading cancel must never leave.
async fn live_jobs_under_ended_parents(app: &TestApp) -> i64 {
    let client = app.db.client().await.unwrap();
    let row = client
        .query_one(
            "SELECT count(*) FROM jobs c JOIN jobs p ON p.id = c.parent_job_id \
             WHERE p.status = 'CANCELED' AND c.status IN ('SUBMITTED', 'PENDING', 'RUNNING')",
            &[],
        )
        .await
        .unwrap();
    row.get(0)
}

#[tokio::test]
async fn canceling_a_root_cascades_through_the_tree_and_frees_its_workers() {
    let app = spawn_app().await;
    let root = submit(&app, 0, None).await;
    let finished = submit(&app, 1, Some(&root)).await;
    let live = submit(&app, 1, Some(&root)).await;
    let grandchild = submit(&app, 2, Some(&live)).await;
    let idle = submit(&app, 2, Some(&live)).await;
    allocate(&app, &root, 0, 2).await;
    allocate(&app, &finished, 1, 2).await;
    allocate(&app, &live, 1, 3).await;
    allocate(&app, &grandchild, 2, 2).await;

    let (code, done) = post(&app, &format!("/api/jobs/{finished}/complete"), json!({})).await;
    assert_eq!((code, done["status"].as_str()), (200, Some("COMPLETED")));
    assert_eq!(allocated(&app).await, [2, 3, 2, 0, 0, 0]);
    let (_, children) = parts(
        app.get(&format!("/api/jobs/{root}/children"), &member())
            .await,
    )
    .await;
    assert_eq!(children["total"], 2);

    let before = last_seq(&app).await;
    let (code, canceled) = post(
        &app,
        &format!("/api/jobs/{root}/cancel"),
        json!({"reason": "stop"}),
    )
    .await;
    assert_eq!(code, 200, "{canceled}");
    assert_eq!(
        (
            canceled["status"].as_str(),
            canceled["allocated_workers"].as_i64()
        ),
        (Some("CANCELED"), Some(0))
    );

    assert_eq!(
        status(&app, &finished).await,
        "COMPLETED",
        "terminal jobs stay as they are"
    );
    for id in [&root, &live, &grandchild, &idle] {
        assert_eq!(status(&app, id).await, "CANCELED", "{id}");
    }
    assert_eq!(allocated(&app).await, [0; 6]);

    let (_, trail) = parts(
        app.get(&format!("/api/jobs/{grandchild}/transitions"), &member())
            .await,
    )
    .await;
    let last = &trail["transitions"][3];
    assert_eq!(
        (last["from_state"].as_str(), last["to_state"].as_str()),
        (Some("RUNNING"), Some("CANCELED"))
    );
    assert_eq!(last["reason"], format!("ancestor job {root} was canceled"));
    let (_, trail) = parts(
        app.get(&format!("/api/jobs/{root}/transitions"), &member())
            .await,
    )
    .await;
    assert_eq!(trail["transitions"][3]["reason"], "stop");

    // One transaction: per canceled job, the release of what it held (if anything), then its move.
    let client = app.db.client().await.unwrap();
    let rows = client
        .query(
            "SELECT type, subject_id, data::text FROM events WHERE seq > $1 ORDER BY seq",
            &[&before],
        )
        .await
        .unwrap();
    let events: Vec<(String, String, Value)> = rows
        .iter()
        .map(|row| {
            let data: String = row.get(2);
            (row.get(0), row.get(1), serde_json::from_str(&data).unwrap())
        })
        .collect();
    let summary: Vec<(&str, &str, Value)> = events
        .iter()
        .map(|(kind, subject, data)| {
            let detail = if kind == "resources.released" {
                &data["released_workers"]
            } else {
                &data["from"]
            };
            (kind.as_str(), subject.as_str(), detail.clone())
        })
        .collect();
    let (released, changed) = ("resources.released", "job.state.changed");
    let mut expected = vec![
        (released, root.as_str(), json!(2)),
        (changed, root.as_str(), json!("RUNNING")),
        (released, live.as_str(), json!(3)),
        (changed, live.as_str(), json!("RUNNING")),
    ];
    // Siblings follow each other in id order.
    let running = [
        (released, grandchild.as_str(), json!(2)),
        (changed, grandchild.as_str(), json!("RUNNING")),
    ];
    let pending = [(changed, idle.as_str(), json!("PENDING"))];
    if grandchild < idle {
        expected.extend(running.into_iter().chain(pending));
    } else {
        expected.extend(pending.into_iter().chain(running));
    }
    assert_eq!(summary, expected);
    assert_eq!(
        events[0].2,
        json!({"job_id": root, "depth": 0, "released": true, "released_workers": 2})
    );
    assert_eq!(
        events[1].2,
        json!({"from": "RUNNING", "to": "CANCELED", "reason": "stop"})
    );

    // A canceled tree takes no new children, and canceling it again is refused.
    let body =
        json!({"task_description": "late", "worker_count": 1, "depth": 2, "parent_job_id": live});
    assert_eq!(post(&app, "/api/jobs/submit", body).await.0, 409);
    assert_eq!(
        post(&app, &format!("/api/jobs/{live}/cancel"), json!({}))
            .await
            .0,
        409
    );
}

#[tokio::test]
async fn canceling_a_subtree_leaves_its_ancestors_alone() {
    let app = spawn_app().await;
    let root = submit(&app, 0, None).await;
    let child = submit(&app, 1, Some(&root)).await;
    let grandchild = submit(&app, 2, Some(&child)).await;
    allocate(&app, &root, 0, 1).await;
    allocate(&app, &grandchild, 2, 1).await;
    let (code, _) = post(&app, &format!("/api/jobs/{child}/cancel"), json!({})).await;
    assert_eq!(code, 200);
    assert_eq!(status(&app, &root).await, "RUNNING");
    assert_eq!(status(&app, &grandchild).await, "CANCELED");
    assert_eq!(allocated(&app).await, [1, 0, 0, 0, 0, 0]);
    // The root may still take new children.
    submit(&app, 1, Some(&root)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cancel_racing_with_submissions_misses_no_child() {
    let app = spawn_app().await;
    let root = submit(&app, 0, None).await;
    let child = submit(&app, 1, Some(&root)).await;
    let grandchild = submit(&app, 2, Some(&child)).await;

    let url = |path: &str| format!("{}{path}", app.address);
    let send = |path: String, body: Value| {
        let request = app.http.post(url(&path)).bearer_auth(member()).json(&body);
        tokio::spawn(async move { request.send().await.unwrap().status().as_u16() })
    };
    let mut racers = Vec::new();
    for n in 0..30 {
        // Children at every level of the tree, submitted while the root is being canceled.
        let (depth, parent) = match n % 3 {
            0 => (1, &root),
            1 => (2, &child),
            _ => (3, &grandchild),
        };
        let body = json!({"task_description": format!("racer {n}"), "worker_count": 1, "depth": depth, "parent_job_id": parent});
        racers.push(send("/api/jobs/submit".to_owned(), body));
        if n == 10 {
            racers.push(send(format!("/api/jobs/{root}/cancel"), json!({})));
        }
    }
    for racer in racers {
        let code = racer.await.unwrap();
        assert!([200, 201, 409].contains(&code), "unexpected {code}");
    }
    assert_eq!(status(&app, &root).await, "CANCELED");
    assert_eq!(live_jobs_under_ended_parents(&app).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn overlapping_cancels_and_allocations_do_not_deadlock() {
    let app = spawn_app().await;
    let root = submit(&app, 0, None).await;
    let mut tree = vec![(root.clone(), 0)];
    for _ in 0..3 {
        let child = submit(&app, 1, Some(&root)).await;
        for _ in 0..2 {
            tree.push((submit(&app, 2, Some(&child)).await, 2));
        }
        tree.push((child, 1));
    }

    let url = |path: &str| format!("{}{path}", app.address);
    let mut racers = Vec::new();
    // Every job of the tree is canceled and allocated to at the same time, the root's cancel in the
    // middle: each request must end as a success or a clean refusal, never a deadlock's 500.
    for (n, (job, depth)) in tree.iter().enumerate().rev() {
        for (path, body) in [
            (
                "/api/resources/allocate".to_owned(),
                json!({"job_id": job, "depth": depth, "worker_count": 1}),
            ),
            (format!("/api/jobs/{job}/cancel"), json!({})),
        ] {
            let request = app.http.post(url(&path)).bearer_auth(member()).json(&body);
            racers.push(tokio::spawn(async move {
                let response = request.send().await.unwrap();
                (response.status().as_u16(), response.text().await.unwrap())
            }));
        }
        if n == tree.len() / 2 {
            let request = app
                .http
                .post(url(&format!("/api/jobs/{root}/cancel")))
                .bearer_auth(member())
                .json(&json!({}));
            racers.push(tokio::spawn(async move {
                let response = request.send().await.unwrap();
                (response.status().as_u16(), response.text().await.unwrap())
            }));
        }
    }
    for racer in racers {
        let (code, body) = racer.await.unwrap();
        assert!([200, 201, 409].contains(&code), "unexpected {code}: {body}");
    }
    for (job, _) in &tree {
        assert_eq!(status(&app, job).await, "CANCELED", "{job}");
    }
    assert_eq!(allocated(&app).await, [0; 6]);
}
