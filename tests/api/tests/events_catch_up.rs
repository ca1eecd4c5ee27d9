//! The events of worker changes: on the Redis channel as they happen, and
//! through `GET /api/events` for a subscriber that was offline.

use api_tests::{TestApp, assert_error, keys, numbers, spawn_app, token};
use orchestrator_core::auth::Scope;
use serde_json::{Value, json};

/// Two workers in `ws_a`, one in `ws_b`, and some moves: 7 events.
async fn history(app: &TestApp) {
    app.register_worker("w_a1", "ws_a").await;
    app.register_worker("w_b1", "ws_b").await;
    app.move_worker("w_a1", "start", Some("go")).await;
    app.register_worker("w_a2", "ws_a").await;
    app.move_worker("w_b1", "terminate", None).await;
    app.move_worker("w_a1", "pause", None).await;
    app.move_worker("w_a2", "terminate", Some("unused")).await;
}

async fn catch_up(app: &TestApp, token: &str, query: &str) -> Value {
    app.get_ok(&format!("/api/events{query}"), token).await
}

fn seqs(page: &Value) -> Vec<i64> {
    numbers(&page["events"], "seq")
}

/// `(type, subject id)` of each event of a page.
fn subjects(page: &Value) -> Vec<(&str, &str)> {
    page["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["type"].as_str().unwrap(),
                e["subject"]["id"].as_str().unwrap(),
            )
        })
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
        [
            ("worker.registered", "w_a1"),
            ("worker.registered", "w_b1"),
            ("worker.state.changed", "w_a1"),
            ("worker.registered", "w_a2"),
            ("worker.state.changed", "w_b1"),
            ("worker.state.changed", "w_a1"),
            ("worker.state.changed", "w_a2"),
        ]
    );
    let seq = seqs(&all);
    assert!(seq.windows(2).all(|pair| pair[0] < pair[1]), "{seq:?}");
    assert_eq!(all["next_after_seq"].as_i64(), seq.last().copied());

    let start = &all["events"][2];
    assert_eq!(
        keys(start),
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
        [
            ("worker.registered", "w_b1"),
            ("worker.state.changed", "w_b1")
        ]
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
        [
            ("worker.registered", "w_a1"),
            ("worker.state.changed", "w_a1")
        ]
    );
    let cursor = first["next_after_seq"].as_i64().unwrap();
    let rest = catch_up(&app, &ws_a, &format!("?after_seq={cursor}")).await;
    assert_eq!(
        subjects(&rest),
        [
            ("worker.registered", "w_a2"),
            ("worker.state.changed", "w_a1"),
            ("worker.state.changed", "w_a2"),
        ]
    );
    let nobody = token(&[Scope::SupervisorRead], Some("ws_c"));
    assert_eq!(
        catch_up(&app, &nobody, "").await,
        json!({"events": [], "next_after_seq": 0})
    );
}

#[tokio::test]
async fn a_subscriber_receives_each_event_once_in_seq_order() {
    let app = spawn_app().await;
    let mut subscriber = app.subscribe().await;

    history(&app).await;
    let reader = token(&[Scope::SupervisorRead], None);
    let committed = catch_up(&app, &reader, "").await["events"].clone();
    let expected = committed.as_array().unwrap().len();

    // Nothing more than the events: none was published twice.
    let received = subscriber.receive_exactly(expected).await;
    // The channel carries exactly the envelopes catch-up returns, in seq order.
    assert_eq!(Value::Array(received), committed);
    assert!(app.events().await.iter().all(|event| event.published));
}
