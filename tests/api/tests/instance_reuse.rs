//! The app served from reused instances, as Spin 4.1 serves a WASIp3 component: up to 128
//! requests an instance, 16 at once. What belongs to one request must stay with it, even when
//! others run in the same instance at the same moment.

use api_tests::*;
use orchestrator_core::auth::Scope;
use serde_json::json;
use spin_host::InstanceReuse;
use std::sync::atomic::Ordering;

const CONCURRENT: usize = 16;

/// Serves the app with Spin's reuse whatever `TEST_INSTANCE_REUSE` says: these tests are about it.
async fn spawn_reusing_app(reuse: InstanceReuse) -> TestApp {
    spawn_app_with(|mut options| {
        options.reuse = reuse;
        options
    })
    .await
}

/// Instances the supervisor component has needed so far.
fn supervisor_instances(app: &TestApp) -> u64 {
    app.host()
        .instance_stats("supervisor")
        .unwrap()
        .started
        .load(Ordering::Relaxed)
}

/// Sixteen registrations at once, each under its own subject, workspace, idempotency key and
/// transaction, answered by fewer instances than requests: each answer, audit row and event is its
/// own request's, and a replay of each key gives back that request's worker.
#[tokio::test]
async fn requests_sharing_an_instance_keep_their_own_principal_body_key_and_transaction() {
    let app = spawn_reusing_app(InstanceReuse::default()).await;
    let writes = [Scope::SupervisorRead, Scope::SupervisorWrite];
    let register = |i: usize| {
        let app = &app;
        async move {
            let workspace = format!("ws_r{i}");
            let token = token_for(&format!("client-{i}"), &writes, Some(&workspace));
            let body = json!({"id": format!("w_r{i}"), "metadata": {"n": i}});
            let key = format!("reuse-{i}");
            let first = Answer::read(
                app.post_with(
                    "/api/supervisor/workers",
                    &token,
                    ("Idempotency-Key", &key),
                    Some(body.clone()),
                )
                .await,
            )
            .await;
            let again = Answer::read(
                app.post_with(
                    "/api/supervisor/workers",
                    &token,
                    ("Idempotency-Key", &key),
                    Some(body),
                )
                .await,
            )
            .await;
            (i, first, again)
        }
    };
    let answers = futures_util::future::join_all((0..CONCURRENT).map(register)).await;
    for (i, first, again) in &answers {
        assert_eq!(first.status, 201, "{}", first.json());
        let worker = first.json();
        assert_eq!(worker["id"], format!("w_r{i}"));
        assert_eq!(worker["workspace_id"], format!("ws_r{i}"));
        assert_eq!(worker["metadata"], json!({"n": i}));
        assert_replay_of(again, first);
    }
    let instances = supervisor_instances(&app);
    assert!(
        instances < (2 * CONCURRENT) as u64,
        "{instances} instances for {} requests: nothing was reused",
        2 * CONCURRENT
    );
    // The audit row and the event of each registration name its own caller.
    for i in 0..CONCURRENT {
        let actor = app
            .db
            .client()
            .await
            .unwrap()
            .query_one(
                "SELECT actor FROM worker_transitions WHERE worker_id = $1",
                &[&format!("w_r{i}")],
            )
            .await
            .unwrap()
            .get::<_, String>(0);
        assert_eq!(actor, format!("client-{i}"));
    }
    let events = app.events_of(&["worker.registered"]).await;
    assert_eq!(events.len(), CONCURRENT);
    for event in events {
        let i = event.subject.trim_start_matches("w_r");
        assert_eq!(event.actor, format!("client-{i}"));
    }
}

/// While requests that fail inside their transaction (a duplicate id), and requests whose client
/// goes away mid-body, share instances with good ones, the good ones are untouched and no
/// connection is left inside a transaction.
#[tokio::test]
async fn failing_and_abandoned_requests_do_not_disturb_the_others_in_their_instance() {
    let app = spawn_reusing_app(InstanceReuse::default()).await;
    app.register_worker("w_taken", WORKSPACE).await;
    let register = |id: String| {
        let app = &app;
        async move {
            let body = json!({"id": id, "workspace_id": WORKSPACE});
            let response = app
                .post("/api/supervisor/workers", &supervisor_writer(None), body)
                .await;
            parts(response).await
        }
    };
    let gone = || {
        let app = &app;
        async move {
            use tokio::io::AsyncWriteExt;
            let address = app.address.trim_start_matches("http://");
            let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
            let head = format!(
                "POST /api/supervisor/workers HTTP/1.1\r\nhost: {address}\r\n\
                 authorization: Bearer {}\r\ncontent-type: application/json\r\n\
                 content-length: 1000\r\n\r\n{{\"id\": \"w_gone\"",
                supervisor_writer(None)
            );
            stream.write_all(head.as_bytes()).await.unwrap();
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            drop(stream);
        }
    };
    let (goods, duplicates, _) = tokio::join!(
        futures_util::future::join_all((0..8).map(|i| register(format!("w_ok{i}")))),
        futures_util::future::join_all((0..4).map(|_| register("w_taken".into()))),
        futures_util::future::join_all((0..4).map(|_| gone())),
    );
    for (status, body) in goods {
        assert_eq!(status, 201, "{body}");
    }
    for (status, body) in duplicates {
        assert_error_body(status, &body, 409, "ALREADY_EXISTS");
    }
    assert_eq!(
        app.select_int("SELECT count(*) FROM workers WHERE id LIKE 'w_ok%'")
            .await,
        8
    );
    assert_eq!(
        app.select_int("SELECT count(*) FROM workers WHERE id = 'w_gone'")
            .await,
        0
    );
    // Give the abandoned requests' instances time to finish, then look for open transactions.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(
        app.select_int(
            "SELECT count(*) FROM pg_stat_activity \
             WHERE datname = current_database() AND state LIKE 'idle in transaction%'"
        )
        .await,
        0
    );
}

/// An instance taking 128 requests one after another ends them holding no more memory than it
/// held after its first few: nothing a request leaves behind accumulates in a reused instance.
#[tokio::test]
async fn an_instance_does_not_grow_across_its_128_requests() {
    let app = spawn_reusing_app(InstanceReuse {
        idle_timeout: std::time::Duration::from_secs(30)..=std::time::Duration::from_secs(30),
        ..InstanceReuse::default()
    })
    .await;
    app.register_worker("w_mem", WORKSPACE).await;
    let stats = app.host().instance_stats("supervisor").unwrap();
    let token = member();
    for _ in 0..8 {
        app.get_ok("/api/supervisor/workers/w_mem", &token).await;
    }
    let warm = stats.largest_memory.load(Ordering::Relaxed);
    for _ in 8..127 {
        app.get_ok("/api/supervisor/workers/w_mem", &token).await;
    }
    let after = stats.largest_memory.load(Ordering::Relaxed);
    // The registration and the 127 reads were the instance's 128 requests.
    assert_eq!(stats.started.load(Ordering::Relaxed), 1);
    eprintln!("supervisor instance memory: {warm} bytes warm, {after} after 128 requests");
    assert!(warm > 0);
    assert!(after <= warm + 64 * 1024, "{warm} -> {after}");
}
