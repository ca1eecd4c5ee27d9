//! The events of worker changes: on the Redis channel as they happen, and
//! through `GET /api/events` for a subscriber that was offline.

use std::time::Duration;

use api_tests::{TestApp, assert_error, parts, spawn_app, spawn_app_with, token, unique};
use futures_util::StreamExt;
use orchestrator_core::auth::Scope;
use reqwest::Method;
use serde_json::{Value, json};

fn writer() -> String {
    token(&[Scope::SupervisorRead, Scope::SupervisorWrite], None)
}

async fn register(app: &TestApp, id: &str, workspace: &str) {
    let response = app
        .request(Method::POST, "/api/supervisor/workers", Some(&writer()))
        .json(&json!({"id": id, "workspace_id": workspace}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
}

async fn act(app: &TestApp, id: &str, action: &str, reason: Option<&str>) {
    let path = format!("/api/supervisor/workers/{id}/{action}");
    let request = app.request(Method::POST, &path, Some(&writer()));
    let request = match reason {
        Some(reason) => request.json(&json!({"reason": reason})),
        None => request,
    };
    assert_eq!(request.send().await.unwrap().status(), 200, "{action} {id}");
}

/// Two workers in `ws_a`, one in `ws_b`, and some moves: 7 events.
async fn history(app: &TestApp) {
    register(app, "w_a1", "ws_a").await;
    register(app, "w_b1", "ws_b").await;
    act(app, "w_a1", "start", Some("go")).await;
    register(app, "w_a2", "ws_a").await;
    act(app, "w_b1", "terminate", None).await;
    act(app, "w_a1", "pause", None).await;
    act(app, "w_a2", "terminate", Some("unused")).await;
}

async fn catch_up(app: &TestApp, token: &str, query: &str) -> Value {
    let (status, body) = parts(app.get(&format!("/api/events{query}"), token).await).await;
    assert_eq!(status, 200, "{body}");
    body
}

fn seqs(page: &Value) -> Vec<i64> {
    page["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["seq"].as_i64().unwrap())
        .collect()
}

fn subjects(page: &Value) -> Vec<(String, String)> {
    page["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let text = |v: &Value| v.as_str().unwrap().to_owned();
            (text(&e["type"]), text(&e["subject"]["id"]))
        })
        .collect()
}

fn pairs(expected: &[(&str, &str)]) -> Vec<(String, String)> {
    expected
        .iter()
        .map(|(t, id)| (t.to_string(), id.to_string()))
        .collect()
}

#[tokio::test]
async fn catching_up_returns_envelopes_in_order() {
    let app = spawn_app().await;
    let reader = token(&[Scope::SupervisorRead], None);
    assert_eq!(
        catch_up(&app, &reader, "").await,
        json!({"events": [], "next_after_seq": 0})
    );
    assert_eq!(
        catch_up(&app, &reader, "?after_seq=42").await,
        json!({"events": [], "next_after_seq": 42})
    );
    history(&app).await;

    let all = catch_up(&app, &reader, "").await;
    assert_eq!(
        subjects(&all),
        pairs(&[
            ("worker.registered", "w_a1"),
            ("worker.registered", "w_b1"),
            ("worker.state.changed", "w_a1"),
            ("worker.registered", "w_a2"),
            ("worker.state.changed", "w_b1"),
            ("worker.state.changed", "w_a1"),
            ("worker.state.changed", "w_a2"),
        ])
    );
    let seq = seqs(&all);
    assert!(seq.windows(2).all(|pair| pair[0] < pair[1]), "{seq:?}");
    assert_eq!(all["next_after_seq"].as_i64(), seq.last().copied());

    let start = &all["events"][2];
    let keys: Vec<&str> = start
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        [
            "id",
            "seq",
            "type",
            "occurred_at",
            "workspace_id",
            "subject",
            "actor",
            "data"
        ]
    );
    let id = start["id"].as_str().unwrap();
    assert!(id.len() == 36 && id.matches('-').count() == 4, "{id}");
    let occurred_at = start["occurred_at"].as_str().unwrap();
    assert!(
        occurred_at.len() == 24 && occurred_at.ends_with('Z'),
        "{occurred_at}"
    );
    assert_eq!(start["workspace_id"], "ws_a");
    assert_eq!(start["subject"], json!({"kind": "worker", "id": "w_a1"}));
    assert_eq!(start["actor"], "tester");
    assert_eq!(
        start["data"],
        json!({"from": "IDLE", "to": "RUNNING", "reason": "go"})
    );
    let registered = &all["events"][0]["data"];
    assert_eq!(
        (registered["id"].as_str(), registered["status"].as_str()),
        (Some("w_a1"), Some("IDLE"))
    );

    // Paging: from a cursor, at most `limit`, continuing where the last page ended.
    let first = catch_up(&app, &reader, "?limit=3").await;
    assert_eq!(seqs(&first), seq[..3]);
    assert_eq!(first["next_after_seq"].as_i64(), Some(seq[2]));
    let rest = catch_up(&app, &reader, &format!("?after_seq={}&limit=100", seq[2])).await;
    assert_eq!(seqs(&rest), seq[3..]);
    let done = catch_up(&app, &reader, &format!("?after_seq={}", seq[6])).await;
    assert_eq!(done, json!({"events": [], "next_after_seq": seq[6]}));

    for bad in [
        "after_seq=-1",
        "after_seq=x",
        "limit=0",
        "limit=101",
        "limit=",
    ] {
        let response = app.get(&format!("/api/events?{bad}"), &reader).await;
        let body = assert_error(response, 422, "VALIDATION_FAILED").await;
        let field = body["error"]["details"]["fields"][0]["field"]
            .as_str()
            .unwrap()
            .to_owned();
        assert!(bad.starts_with(&field), "{bad}: {body}");
    }
}

#[tokio::test]
async fn a_confined_token_catches_up_on_its_workspace_only() {
    let app = spawn_app().await;
    history(&app).await;
    let ws_b = token(&[Scope::SupervisorRead], Some("ws_b"));
    let own = catch_up(&app, &ws_b, "").await;
    assert_eq!(
        subjects(&own),
        pairs(&[
            ("worker.registered", "w_b1"),
            ("worker.state.changed", "w_b1")
        ])
    );
    assert!(
        own["events"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["workspace_id"] == "ws_b")
    );
    assert_eq!(own["next_after_seq"].as_i64(), seqs(&own).last().copied());

    let ws_a = token(&[Scope::SupervisorRead], Some("ws_a"));
    let first = catch_up(&app, &ws_a, "?limit=2").await;
    assert_eq!(
        subjects(&first),
        pairs(&[
            ("worker.registered", "w_a1"),
            ("worker.state.changed", "w_a1")
        ])
    );
    let cursor = first["next_after_seq"].as_i64().unwrap();
    let rest = catch_up(&app, &ws_a, &format!("?after_seq={cursor}")).await;
    assert_eq!(
        subjects(&rest),
        pairs(&[
            ("worker.registered", "w_a2"),
            ("worker.state.changed", "w_a1"),
            ("worker.state.changed", "w_a2"),
        ])
    );
    let nobody = token(&[Scope::SupervisorRead], Some("ws_c"));
    assert_eq!(
        catch_up(&app, &nobody, "").await,
        json!({"events": [], "next_after_seq": 0})
    );
}

#[tokio::test]
async fn a_subscriber_receives_each_event_once_in_seq_order() {
    let channel = format!("test.events.supervisor.{}", unique());
    let app = spawn_app_with(|options| options.variable("events_channel", channel.clone())).await;
    let client = redis::Client::open("redis://127.0.0.1:6379").unwrap();
    let mut subscriber = client.get_async_pubsub().await.unwrap();
    subscriber.subscribe(&channel).await.unwrap();

    history(&app).await;
    let reader = token(&[Scope::SupervisorRead], None);
    let committed = catch_up(&app, &reader, "").await["events"].clone();
    let expected = committed.as_array().unwrap().len();

    let mut messages = subscriber.on_message();
    let mut received = Vec::new();
    while received.len() < expected {
        let message = tokio::time::timeout(Duration::from_secs(10), messages.next())
            .await
            .expect("an event within 10 s")
            .expect("the subscription is open");
        let payload: String = message.get_payload().unwrap();
        received.push(serde_json::from_str::<Value>(&payload).unwrap());
    }
    // Nothing more: no event was published twice.
    let extra = tokio::time::timeout(Duration::from_millis(500), messages.next()).await;
    assert!(extra.is_err(), "unexpected extra event: {extra:?}");
    // The channel carries exactly the envelopes catch-up returns, in seq order.
    assert_eq!(Value::Array(received), committed);

    let client = app.db.client().await.unwrap();
    let unpublished: i64 = client
        .query_one(
            "SELECT count(*) FROM events WHERE published_at IS NULL",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(unpublished, 0);
}
