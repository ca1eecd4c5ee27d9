//! Job trees through the host: a cancel cascades to every live descendant in one transaction, freeing
//! their workers, and stays correct while submissions, allocations and other cancels race with it.

use api_tests::{TestApp, assert_error_body, assert_one_of, member, parts, spawn_app};
use reqwest::Method;
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// POSTs as a [`member`] and returns the status and JSON body.
async fn post(app: &TestApp, path: &str, body: Value) -> (u16, Value) {
    parts(app.post(path, &member(), body).await).await
}

/// Allocates, asserting all of `workers` is granted.
async fn allocate(app: &TestApp, job: &str, depth: i64, workers: i64) {
    assert_eq!(app.granted(job, depth, workers).await, workers);
}

async fn status(app: &TestApp, job: &str) -> Value {
    app.job(job).await["status"].clone()
}

/// Jobs that are still live below a job that ended: what a cascading cancel must never leave.
async fn live_jobs_under_ended_parents(app: &TestApp) -> i64 {
    app.select_int(
        "SELECT count(*) FROM jobs c JOIN jobs p ON p.id = c.parent_job_id \
         WHERE p.status = 'CANCELED' AND c.status IN ('SUBMITTED', 'PENDING', 'RUNNING')",
    )
    .await
}

#[tokio::test]
async fn canceling_a_root_cascades_through_the_tree_and_frees_its_workers() {
    let app = spawn_app().await;
    let root = app.submit_at(0, None).await;
    let finished = app.submit_at(1, Some(&root)).await;
    let live = app.submit_at(1, Some(&root)).await;
    let grandchild = app.submit_at(2, Some(&live)).await;
    let idle = app.submit_at(2, Some(&live)).await;
    allocate(&app, &root, 0, 2).await;
    allocate(&app, &finished, 1, 2).await;
    allocate(&app, &live, 1, 3).await;
    allocate(&app, &grandchild, 2, 2).await;

    let (code, done) = post(&app, &format!("/api/jobs/{finished}/complete"), json!({})).await;
    assert_eq!((code, done["status"].as_str()), (200, Some("COMPLETED")));
    assert_eq!(app.allocated().await, [2, 3, 2, 0, 0, 0]);
    let (_, children) = parts(
        app.get(&format!("/api/jobs/{root}/children"), &member())
            .await,
    )
    .await;
    assert_eq!(children["total"], 2);

    let before = app
        .select_int("SELECT coalesce(max(seq), 0) FROM events")
        .await;
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
    assert_eq!(app.allocated().await, [0; 6]);

    let trail = app.job_transitions(&grandchild, "").await;
    let last = &trail["transitions"][3];
    assert_eq!(
        (last["from_state"].as_str(), last["to_state"].as_str()),
        (Some("RUNNING"), Some("CANCELED"))
    );
    assert_eq!(last["reason"], format!("ancestor job {root} was canceled"));
    let trail = app.job_transitions(&root, "").await;
    assert_eq!(trail["transitions"][3]["reason"], "stop");

    // One transaction: per canceled job, the release of what it held (if anything), then its move.
    let events = app.events_after(before).await;
    let summary: Vec<(&str, &str, Value)> = events
        .iter()
        .map(|event| {
            let detail = if event.kind == "resources.released" {
                &event.data["released_workers"]
            } else {
                &event.data["from"]
            };
            (event.kind.as_str(), event.subject.as_str(), detail.clone())
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
        events[0].data,
        json!({"job_id": root, "depth": 0, "released": true, "released_workers": 2})
    );
    assert_eq!(
        events[1].data,
        json!({"from": "RUNNING", "to": "CANCELED", "reason": "stop"})
    );

    // A canceled tree takes no new children, and canceling it again is refused.
    let body =
        json!({"task_description": "late", "worker_count": 1, "depth": 2, "parent_job_id": live});
    let (status, refused) = post(&app, "/api/jobs/submit", body).await;
    assert_error_body(status, &refused, 409, "INVALID_STATE_TRANSITION");
    assert_eq!(
        refused["error"]["details"],
        json!({"parent_job_id": live, "parent_state": "CANCELED"})
    );
    let (status, refused) = post(&app, &format!("/api/jobs/{live}/cancel"), json!({})).await;
    assert_error_body(status, &refused, 409, "INVALID_STATE_TRANSITION");
    assert_eq!(
        refused["error"]["details"],
        json!({"id": live, "current_state": "CANCELED", "requested_state": "CANCELED",
               "allowed": []})
    );
}

#[tokio::test]
async fn canceling_a_subtree_leaves_its_ancestors_alone() {
    let app = spawn_app().await;
    let root = app.submit_at(0, None).await;
    let child = app.submit_at(1, Some(&root)).await;
    let grandchild = app.submit_at(2, Some(&child)).await;
    allocate(&app, &root, 0, 1).await;
    allocate(&app, &grandchild, 2, 1).await;
    let (code, _) = post(&app, &format!("/api/jobs/{child}/cancel"), json!({})).await;
    assert_eq!(code, 200);
    assert_eq!(status(&app, &root).await, "RUNNING");
    assert_eq!(status(&app, &grandchild).await, "CANCELED");
    assert_eq!(app.allocated().await, [1, 0, 0, 0, 0, 0]);
    // The root may still take new children.
    app.submit_at(1, Some(&root)).await;
}

/// When a request was sent and when its answer arrived.
type Span = (Instant, Instant);

fn overlap(a: &Span, b: &Span) -> bool {
    a.0 < b.1 && b.0 < a.1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cancel_racing_with_submissions_misses_no_child() {
    let app = spawn_app().await;
    let root = app.submit_at(0, None).await;
    let child = app.submit_at(1, Some(&root)).await;
    let grandchild = app.submit_at(2, Some(&child)).await;
    let parents = [
        (1, root.clone()),
        (2, child.clone()),
        (3, grandchild.clone()),
    ];

    let send = |path: String, body: Value| {
        let request = app
            .request(Method::POST, &path, Some(&member()))
            .json(&body);
        async move {
            let sent = Instant::now();
            let (status, body) = parts(request.send().await.expect("an answer")).await;
            (status, body, (sent, Instant::now()))
        }
    };
    let canceled = Arc::new(AtomicBool::new(false));
    // Submitters keep adding children at every level of the tree until they see the cancel answered,
    // then send one more each: submissions before, during and after the cancel.
    let submitters = parents.iter().map(|(depth, parent)| {
        let canceled = Arc::clone(&canceled);
        let send = &send;
        async move {
            let mut answers = Vec::new();
            loop {
                let done = canceled.load(Ordering::SeqCst);
                let body = json!({"task_description": "racer", "worker_count": 1,
                                  "depth": depth, "parent_job_id": parent});
                answers.push(send("/api/jobs/submit".to_owned(), body).await);
                if done {
                    return answers;
                }
            }
        }
    });
    let cancel = async {
        // Let the submitters get going first.
        tokio::time::sleep(Duration::from_millis(50)).await;
        let answer = send(format!("/api/jobs/{root}/cancel"), json!({})).await;
        canceled.store(true, Ordering::SeqCst);
        answer
    };
    let (submissions, cancel) = tokio::join!(futures_util::future::join_all(submitters), cancel);
    let submissions: Vec<_> = submissions.into_iter().flatten().collect();

    let (code, body, cancel_span) = cancel;
    assert_eq!(
        (code, body["status"].as_str()),
        (200, Some("CANCELED")),
        "{body}"
    );
    for (code, body, _) in &submissions {
        assert_one_of(*code, body, &[(201, ""), (409, "INVALID_STATE_TRANSITION")]);
    }
    let during = submissions
        .iter()
        .filter(|(.., span)| overlap(span, &cancel_span))
        .count();
    let accepted = submissions.iter().filter(|(s, ..)| *s == 201).count();
    let refused = submissions.len() - accepted;
    eprintln!(
        "{} submissions: {accepted} accepted, {refused} refused, {during} in flight during the cancel",
        submissions.len()
    );
    assert!(during > 0, "no submission overlapped the cancel");
    assert!(
        accepted > 0 && refused > 0,
        "the cancel did not land among the submissions"
    );
    // Whatever was sent after the cancel was answered finds the tree canceled.
    for (code, body, span) in &submissions {
        if span.0 > cancel_span.1 {
            assert_eq!(*code, 409, "{body}");
        }
    }
    assert_eq!(status(&app, &root).await, "CANCELED");
    assert_eq!(live_jobs_under_ended_parents(&app).await, 0);
    let live = app
        .select_int("SELECT count(*) FROM jobs WHERE status IN ('SUBMITTED', 'PENDING', 'RUNNING')")
        .await;
    assert_eq!(
        live, 0,
        "every job of the tree, racers included, is canceled"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn overlapping_cancels_and_allocations_do_not_deadlock() {
    let app = spawn_app().await;
    let root = app.submit_at(0, None).await;
    let mut tree = vec![(root.clone(), 0)];
    for _ in 0..3 {
        let child = app.submit_at(1, Some(&root)).await;
        for _ in 0..2 {
            tree.push((app.submit_at(2, Some(&child)).await, 2));
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
        let body: Value = serde_json::from_str(&body).unwrap_or_else(|_| panic!("{code}: {body}"));
        let allowed = [
            (200, ""),
            (201, ""),
            (409, "QUOTA_EXCEEDED"),
            (409, "INVALID_STATE_TRANSITION"),
        ];
        assert_one_of(code, &body, &allowed);
    }
    for (job, _) in &tree {
        assert_eq!(status(&app, job).await, "CANCELED", "{job}");
    }
    assert_eq!(app.allocated().await, [0; 6]);
}
