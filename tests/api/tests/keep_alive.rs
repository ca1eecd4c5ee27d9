//! Keep-alive latency as under `spin up`, whose sockets have no `TCP_NODELAY`. On its own in this
//! file, so that no other test's load shares the measurement.

use api_tests::*;
use std::time::{Duration, Instant};

/// Linux's shortest delayed ACK, which a response split in two waits for.
const NAGLE_WAIT: Duration = Duration::from_millis(40);

/// A response that left in two writes would wait ~40 ms for the client's delayed ACK (Nagle), so
/// sequential reads on one connection show at once whether every response is written whole. The
/// bound sits halfway to that wait: a slow machine's read takes a few milliseconds, never twenty.
#[tokio::test]
async fn keep_alive_reads_are_not_held_back_by_nagle() {
    let app = spawn_app().await;
    app.register_worker("w_keepalive", WORKSPACE).await;
    let one_connection = reqwest::Client::builder()
        .pool_max_idle_per_host(1)
        .timeout(REQUEST_TIMEOUT)
        .build()
        .unwrap();
    let url = format!("{}/api/supervisor/workers/w_keepalive", app.address);
    let token = member();
    let mut elapsed = Vec::new();
    let mut all_say_length = true;
    for _ in 0..200 {
        let started = Instant::now();
        let response = one_connection
            .get(&url)
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let says_length = response.headers().contains_key("content-length");
        response.bytes().await.unwrap();
        elapsed.push(started.elapsed());
        all_say_length &= says_length;
    }
    elapsed.sort();
    let p50 = elapsed[elapsed.len() / 2];
    eprintln!(
        "keep-alive reads on one connection: p50 {p50:?}, max {:?}",
        elapsed.last().unwrap()
    );
    assert!(p50 < NAGLE_WAIT / 2, "p50 {p50:?}");
    assert!(all_say_length, "every response carries Content-Length");
}
