//! `GET /api/events/stream`: the catch-up read's events, live, as server-sent events — resumable
//! by `Last-Event-ID`, filtered, kept alive, confined to the token's workspace, and ending itself.

use api_tests::sse::{EventStream, Frame};
use api_tests::{
    TestApp, assert_error, lacking, member, spawn_app, spawn_app_with, token, without_redis,
};
use orchestrator_core::auth::Scope;
use reqwest::Method;
use serde_json::Value;
use std::time::{Duration, Instant};

const SOON: Duration = Duration::from_secs(5);

fn reader(workspace: Option<&str>) -> String {
    token(&[Scope::SupervisorRead], workspace)
}

async fn open(app: &TestApp, token: &str, query: &str, last_event_id: Option<i64>) -> EventStream {
    let mut request = app.request(
        Method::GET,
        &format!("/api/events/stream{query}"),
        Some(token),
    );
    if let Some(id) = last_event_id {
        request = request.header("last-event-id", id.to_string());
    }
    let response = request.send().await.expect("request");
    assert_eq!(
        response.headers()["content-type"],
        "text/event-stream",
        "{response:?}"
    );
    assert_eq!(response.headers()["cache-control"], "no-cache");
    EventStream::new(response)
}

/// `(type, subject id)` of each event, checked against its frame.
fn described(events: &[(i64, String, Value)]) -> Vec<(String, String)> {
    events
        .iter()
        .map(|(id, event, data)| {
            assert_eq!(data["seq"], *id, "the frame's id is the event's seq");
            assert_eq!(
                data["type"],
                event.as_str(),
                "the frame's event is its type"
            );
            (
                event.clone(),
                data["subject"]["id"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn ids(events: &[(i64, String, Value)]) -> Vec<i64> {
    events.iter().map(|(id, _, _)| *id).collect()
}

fn pair(event: &str, subject: &str) -> (String, String) {
    (event.to_owned(), subject.to_owned())
}

#[tokio::test]
async fn events_arrive_live_in_order_and_a_reconnect_misses_nothing_and_repeats_nothing() {
    let app = spawn_app().await;
    app.register_worker("w_old", "ws_a").await;
    let mut confined = open(&app, &reader(Some("ws_a")), "", None).await;
    let mut operator = open(&app, &reader(None), "", None).await;
    // What was committed before the stream opened comes first, then what happens while it is open.
    let first = confined.events(1, SOON).await;
    assert_eq!(described(&first), [pair("worker.registered", "w_old")]);

    app.register_worker("w_other", "ws_b").await;
    app.register_worker("w_new", "ws_a").await;
    app.move_worker("w_new", "start", None).await;
    let live = confined.events(2, SOON).await;
    assert_eq!(
        described(&live),
        [
            pair("worker.registered", "w_new"),
            pair("worker.state.changed", "w_new")
        ]
    );
    assert_eq!(live[1].2["data"]["to"], "RUNNING");
    let everything = operator.events(4, SOON).await;
    let seqs = ids(&everything);
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    assert_eq!(everything[1].2["workspace_id"], "ws_b");

    // Each event comes as soon as it is published: the doorbell rang. (A stream that only looked on
    // its fallback interval would take 2 s for each, as each write follows the look that found the
    // previous event.)
    let started = Instant::now();
    let mut last = live[1].0;
    for n in 0..4 {
        app.register_worker(&format!("w_quick_{n}"), "ws_a").await;
        last = confined.events(1, SOON).await[0].0;
    }
    let took = started.elapsed();
    assert!(took < Duration::from_secs(2), "4 events took {took:?}");

    // The client goes away; events happen; it comes back with the last id it saw.
    drop(confined);
    app.move_worker("w_new", "pause", None).await;
    app.move_worker("w_old", "start", None).await;
    let mut resumed = open(&app, &reader(Some("ws_a")), "?after_seq=0", Some(last)).await;
    let missed = resumed.events(2, SOON).await;
    assert_eq!(
        described(&missed),
        [
            pair("worker.state.changed", "w_new"),
            pair("worker.state.changed", "w_old")
        ]
    );
    assert!(ids(&missed)[0] > last);
    // Nothing else: the next frame is the next new event.
    app.register_worker("w_last", "ws_a").await;
    let next = resumed.events(1, SOON).await;
    assert_eq!(described(&next), [pair("worker.registered", "w_last")]);
}

#[tokio::test]
async fn a_stream_carries_only_the_types_and_subject_it_asks_for() {
    let app = spawn_app().await;
    let op = reader(None);
    let mut moves = open(&app, &op, "?types=worker.state.changed", None).await;
    let mut one = open(&app, &op, "?subject=w_2", None).await;
    let mut both = open(
        &app,
        &op,
        "?subject=w_1&types=worker.registered,job.submitted",
        None,
    )
    .await;
    app.register_worker("w_1", "ws_a").await;
    app.register_worker("w_2", "ws_a").await;
    app.move_worker("w_1", "start", None).await;
    app.move_worker("w_2", "start", None).await;
    assert_eq!(
        described(&moves.events(2, SOON).await),
        [
            pair("worker.state.changed", "w_1"),
            pair("worker.state.changed", "w_2")
        ]
    );
    assert_eq!(
        described(&one.events(2, SOON).await),
        [
            pair("worker.registered", "w_2"),
            pair("worker.state.changed", "w_2")
        ]
    );
    assert_eq!(
        described(&both.events(1, SOON).await),
        [pair("worker.registered", "w_1")]
    );
    // The filtered-out events moved the cursor: the next one that passes comes, and only it.
    app.move_worker("w_2", "pause", None).await;
    app.move_worker("w_1", "pause", None).await;
    let next = moves.events(2, SOON).await;
    assert_eq!(
        described(&next),
        [
            pair("worker.state.changed", "w_2"),
            pair("worker.state.changed", "w_1")
        ]
    );
}

#[tokio::test]
async fn a_tail_starts_with_the_last_events_of_the_workspace() {
    let app = spawn_app().await;
    for (worker, workspace) in [
        ("w_1", "ws_a"),
        ("w_2", "ws_a"),
        ("w_3", "ws_a"),
        ("w_4", "ws_b"),
    ] {
        app.register_worker(worker, workspace).await;
    }
    let mut confined = open(&app, &reader(Some("ws_a")), "?tail=2", None).await;
    let mut operator = open(&app, &reader(None), "?tail=2", None).await;
    let mut longer_than_history = open(&app, &reader(None), "?tail=500", None).await;
    app.register_worker("w_5", "ws_a").await;
    assert_eq!(
        described(&confined.events(3, SOON).await),
        [
            pair("worker.registered", "w_2"),
            pair("worker.registered", "w_3"),
            pair("worker.registered", "w_5")
        ]
    );
    assert_eq!(
        described(&operator.events(3, SOON).await),
        [
            pair("worker.registered", "w_3"),
            pair("worker.registered", "w_4"),
            pair("worker.registered", "w_5")
        ]
    );
    let all = longer_than_history.events(5, SOON).await;
    assert_eq!(described(&all)[0], pair("worker.registered", "w_1"));
}

#[tokio::test]
async fn an_idle_stream_is_kept_alive_and_ends_itself_with_a_retry_hint() {
    let app = spawn_app_with(|options| {
        options
            .variable("events_stream_seconds", "3")
            .variable("events_stream_keepalive_seconds", "1")
    })
    .await;
    app.register_worker("w_1", "ws_a").await;
    let opened = Instant::now();
    let mut stream = open(&app, &reader(None), "", None).await;
    let frames = stream.to_end(Duration::from_secs(10)).await;
    let lasted = opened.elapsed();
    assert!(
        (Duration::from_millis(2900)..Duration::from_secs(5)).contains(&lasted),
        "lasted {lasted:?}"
    );
    assert!(
        matches!(&frames[0], Frame::Event { event, .. } if event == "worker.registered"),
        "{frames:?}"
    );
    let keep_alives = frames
        .iter()
        .filter(|f| matches!(f, Frame::Comment(c) if c == "keep-alive"))
        .count();
    // One a second of silence, in three seconds.
    assert!((2..=3).contains(&keep_alives), "{frames:?}");
    assert_eq!(frames.last(), Some(&Frame::Retry(1000)), "{frames:?}");
    assert_eq!(frames.len(), keep_alives + 2, "{frames:?}");
}

#[tokio::test]
async fn events_committed_while_redis_is_out_still_reach_the_stream() {
    // No doorbell rings without Redis: the stream finds them on its fallback look.
    let app = spawn_app_with(without_redis).await;
    let mut stream = open(&app, &reader(None), "", None).await;
    app.register_worker("w_1", "ws_a").await;
    let started = Instant::now();
    let events = stream.events(1, SOON).await;
    assert_eq!(described(&events), [pair("worker.registered", "w_1")]);
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_stream_needs_a_reader_and_a_readable_cursor_and_filter() {
    let app = spawn_app().await;
    let path = "/api/events/stream";
    let anonymous = app.send_anonymous(Method::GET, path).await;
    assert_error(anonymous, 401, "UNAUTHENTICATED").await;
    let forbidden = app.get(path, &lacking(Scope::SupervisorRead)).await;
    assert_error(forbidden, 403, "FORBIDDEN").await;
    for query in [
        "?after_seq=-1",
        "?types=worker.exploded",
        "?subject=",
        "?tail=0",
        "?tail=1&after_seq=1",
    ] {
        let refused = app.get(&format!("{path}{query}"), &member()).await;
        assert_error(refused, 422, "VALIDATION_FAILED").await;
    }
    let bad_id = app
        .request(Method::GET, path, Some(&member()))
        .header("last-event-id", "seven")
        .send()
        .await
        .unwrap();
    let body = assert_error(bad_id, 422, "VALIDATION_FAILED").await;
    assert!(body.to_string().contains("Last-Event-ID"), "{body}");
}
