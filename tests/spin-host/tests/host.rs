//! The host as a Spin app sees it, through the probe component
//! (`tests/fixtures/probe`): routes and headers, variables, the outbound
//! allow-list, Postgres transactions and streaming, Redis, and traps.

use api_tests::TestDatabase;
use spin_host::{App, AppOptions, InstanceReuse, Running};

fn probe_manifest() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fixtures/probe/spin.toml")
}

fn options() -> AppOptions {
    let mut options = AppOptions::new(probe_manifest()).variable("probe_token", "t");
    options.use_environment = false;
    options.max_instances = 16;
    // Tests run at once against one server that allows 100 connections.
    options.postgres_pool_size = 8;
    options
}

async fn serve(options: AppOptions) -> (Running, String) {
    let app = App::load(&options).expect("the probe app loads (is it built?)");
    let running = app
        .serve("127.0.0.1:0".parse().unwrap(), false)
        .await
        .unwrap();
    let base = format!("http://{}", running.addr);
    (running, base)
}

async fn get(url: &str) -> (u16, String) {
    let response = reqwest::get(url).await.expect("request");
    (response.status().as_u16(), response.text().await.unwrap())
}

#[tokio::test]
async fn routes_and_spin_headers() {
    let (_running, base) = serve(options()).await;
    assert_eq!(
        get(&format!("{base}/probe/hello")).await,
        (200, "hello".into())
    );
    // As Spin: an exact route wins over a wildcard and takes one trailing slash, an unrouted
    // path gets an empty 404, and Spin's own health check answers before routing.
    for exact in ["/probe/exact", "/probe/exact/"] {
        assert_eq!(
            get(&format!("{base}{exact}")).await,
            (200, "/probe/exact".into())
        );
    }
    for unrouted in ["/nowhere", "/probex", "/.well-known/spin/other"] {
        let response = reqwest::get(format!("{base}{unrouted}")).await.unwrap();
        assert_eq!(response.status(), 404, "{unrouted}");
        assert_eq!(response.headers()["content-length"], "0", "{unrouted}");
        assert!(
            response.headers().get("content-type").is_none(),
            "{unrouted}"
        );
    }
    assert_eq!(
        get(&format!("{base}/.well-known/spin/health")).await,
        (200, "OK".into())
    );

    let (status, body) = get(&format!("{base}/probe/headers?x=1")).await;
    assert_eq!(status, 200);
    let headers: serde_json::Value = serde_json::from_str(&body).unwrap();
    let address = base.trim_start_matches("http://");
    assert_eq!(
        headers["spin-full-url"],
        format!("http://{address}/probe/headers?x=1")
    );
    assert_eq!(headers["spin-path-info"], "/headers");
    assert_eq!(headers["spin-matched-route"], "/probe/...");
    assert_eq!(headers["spin-raw-component-route"], "/probe/...");
    assert_eq!(headers["spin-component-route"], "/probe");
    assert_eq!(headers["spin-base-path"], "/");
    assert!(
        headers["spin-client-addr"]
            .as_str()
            .unwrap()
            .starts_with("127.0.0.1:")
    );
}

#[tokio::test]
async fn variables_resolve_like_spin_up() {
    let (_running, base) = serve(options()).await;
    assert_eq!(
        get(&format!("{base}/probe/variable/greeting")).await,
        (200, "hello".into())
    );
    // Only variables the component maps are visible; bad names are refused.
    assert_eq!(get(&format!("{base}/probe/variable/db_host")).await.0, 502);
    assert!(
        get(&format!("{base}/probe/variable/Bad-Name"))
            .await
            .1
            .contains("InvalidName")
    );

    let (_running, base) = serve(options().variable("greeting", "bonjour")).await;
    assert_eq!(
        get(&format!("{base}/probe/variable/greeting")).await,
        (200, "bonjour".into())
    );

    // SPIN_VARIABLE_<NAME> in the environment overrides the default. This is
    // the only test that reads the environment.
    // SAFETY: no other test sets or reads this variable.
    unsafe { std::env::set_var("SPIN_VARIABLE_GREETING", "from the environment") };
    let mut from_env = options();
    from_env.use_environment = true;
    let (_running, base) = serve(from_env).await;
    assert_eq!(
        get(&format!("{base}/probe/variable/greeting")).await.1,
        "from the environment"
    );
}

#[tokio::test]
async fn a_required_variable_without_a_value_stops_the_app() {
    let mut options = AppOptions::new(probe_manifest());
    options.use_environment = false;
    let error = App::load(&options).err().expect("load fails").to_string();
    assert!(
        error.contains("probe_token (SPIN_VARIABLE_PROBE_TOKEN)"),
        "{error}"
    );
}

#[tokio::test]
async fn outbound_connections_follow_allowed_outbound_hosts() {
    let (_running, base) = serve(options()).await;
    assert_eq!(
        get(&format!("{base}/probe/postgres")).await,
        (200, "1".into())
    );
    let (status, body) = get(&format!(
        "{base}/probe/postgres?address=postgres://postgres@127.0.0.1:5433/postgres"
    ))
    .await;
    assert_eq!(status, 502);
    assert!(
        body.contains(r#"ConnectionFailed("address postgres://127.0.0.1:5433 is not permitted")"#),
        "{body}"
    );
    let (status, body) = get(&format!(
        "{base}/probe/redis?address=redis://127.0.0.1:6380"
    ))
    .await;
    assert_eq!(
        (status, body.contains("InvalidAddress")),
        (502, true),
        "{body}"
    );

    // The allow-list is a template over variables: moving `db_host` moves it.
    let (_running, base) = serve(options().variable("db_host", "127.0.0.1:6543")).await;
    let (status, body) = get(&format!("{base}/probe/postgres")).await;
    assert_eq!(status, 502);
    assert!(body.contains("is not permitted"), "{body}");
}

/// Spin serves a WASIp3 component from reused instances, so a trap ends the instance and every
/// request still inside it: a request sharing the trapping one's instance gets an empty 500 too.
/// With reuse off it has an instance of its own and is untouched.
#[tokio::test]
async fn a_trap_ends_every_request_in_its_instance_as_under_spin() {
    for (reuse, sleeper_status) in [(InstanceReuse::default(), 500), (InstanceReuse::off(), 200)] {
        let mut options = options();
        options.reuse = reuse.clone();
        let (_running, base) = serve(options).await;
        let sleeper = tokio::spawn(get_owned(format!("{base}/probe/sleep?ms=1000")));
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        assert_eq!(get(&format!("{base}/probe/trap")).await.0, 500);
        let (status, body) = sleeper.await.unwrap();
        assert_eq!(status, sleeper_status, "{reuse:?}: {body}");
        assert_eq!(
            get(&format!("{base}/probe/hello")).await,
            (200, "hello".into())
        );
    }
}

async fn get_owned(url: String) -> (u16, String) {
    get(&url).await
}

#[tokio::test]
async fn the_host_survives_a_trapping_component() {
    let (_running, base) = serve(options()).await;
    for _ in 0..3 {
        assert_eq!(get(&format!("{base}/probe/trap")).await.0, 500);
        assert_eq!(
            get(&format!("{base}/probe/hello")).await,
            (200, "hello".into())
        );
    }
}

/// Spin's pool recycles with `RecyclingMethod::Clean`, which ends no transaction: a connection
/// left inside one — returned from, or trapped in — is drawn by the next request still inside it.
/// Components must protect themselves (the app does, in `edge::db`); the host must not hide it.
#[tokio::test]
async fn abandoned_transactions_are_inherited_by_the_next_request_as_under_spin() {
    let db = TestDatabase::create().await.unwrap();
    let outside = db.client().await.unwrap();
    outside
        .batch_execute("CREATE TABLE probe_rows (n int)")
        .await
        .unwrap();
    // One pooled connection, so every request reuses the one the last left.
    let mut options = options().variable("database_url", &db.url);
    options.postgres_pool_size = 1;
    let (_running, base) = serve(options).await;

    assert_eq!(
        get(&format!("{base}/probe/abandon-transaction")).await.0,
        200
    );
    for _ in 0..3 {
        assert_eq!(get(&format!("{base}/probe/count")).await, (200, "1".into()));
    }
    assert_eq!(
        get(&format!("{base}/probe/abandon-transaction?trap=1"))
            .await
            .0,
        500
    );
    for _ in 0..3 {
        assert_eq!(get(&format!("{base}/probe/count")).await, (200, "2".into()));
    }
    let committed: i64 = outside
        .query_one("SELECT count(*) FROM probe_rows", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(committed, 0, "nothing was committed");
    let idle_in_transaction: i64 = outside
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND state LIKE 'idle in transaction%'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(idle_in_transaction, 1);
}

/// The URL's `sslmode` decides, as in Spin: without one (`prefer`) or with `require`, TLS is
/// negotiated whenever the server offers it and the server's certificate must verify; `disable`
/// is plain TCP; libpq's `verify-full` is not a mode Spin's driver knows.
#[tokio::test]
async fn postgres_tls_follows_sslmode_and_verifies_the_certificate() {
    let db = TestDatabase::create().await.unwrap();
    let server_has_tls: String = db
        .client()
        .await
        .unwrap()
        .query_one("SHOW ssl", &[])
        .await
        .unwrap()
        .get(0);
    let (_running, base) = serve(options()).await;
    let plain = db.url.clone();
    let without_mode = plain.replace("?sslmode=disable", "");

    assert_eq!(connect(&base, &plain).await, (200, "1".into()));
    for address in [
        without_mode.clone(),
        format!("{without_mode}?sslmode=require"),
    ] {
        let (status, body) = connect(&base, &address).await;
        if server_has_tls == "on" {
            // The local server's certificate is self-signed (and not issued for 127.0.0.1).
            assert_eq!(status, 502, "{address}: {body}");
            assert!(body.contains("ConnectionFailed"), "{body}");
            assert!(body.contains("certificate verify failed"), "{body}");
        } else if address.ends_with("require") {
            assert_eq!(status, 502, "{address}: {body}");
        } else {
            assert_eq!((status, body.as_str()), (200, "1"), "{address}");
        }
    }
    let (status, body) = connect(&base, &format!("{without_mode}?sslmode=verify-full")).await;
    assert_eq!(status, 502);
    assert!(body.contains("invalid address"), "{body}");

    // A root certificate that does not parse is refused when it is set, as in Spin.
    let response = reqwest::Client::new()
        .post(format!(
            "{base}/probe/postgres-with-root?address={}",
            api_tests::percent_encoded(&plain)
        ))
        .body("not a certificate")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 502);
    let body = response.text().await.unwrap();
    assert!(body.contains("invalid root certificate"), "{body}");
}

/// Has the probe connect to `address` and select 1.
async fn connect(base: &str, address: &str) -> (u16, String) {
    get(&format!(
        "{base}/probe/postgres?address={}",
        api_tests::percent_encoded(address)
    ))
    .await
}

#[tokio::test]
async fn query_rows_are_streamed_to_the_guest() {
    let (_running, base) = serve(options()).await;
    assert_eq!(
        get(&format!("{base}/probe/rows?n=20000")).await,
        (200, "20000 200010000".into())
    );
    assert_eq!(
        get(&format!("{base}/probe/rows?n=0")).await,
        (200, "0 0".into())
    );
}

#[tokio::test]
async fn redis_commands_reach_the_server() {
    let (_running, base) = serve(options()).await;
    // A key prefix of its own: the shared Redis may hold another run's probe keys.
    let prefix = format!("probe-{}", api_tests::unique());
    assert_eq!(
        get(&format!("{base}/probe/redis?prefix={prefix}")).await,
        (200, "value 1".into())
    );
}

#[tokio::test]
async fn each_redis_connection_is_its_own_and_closes_with_its_resource_as_under_spin() {
    let (_running, base) = serve(options()).await;
    let (status, ids) = get(&format!("{base}/probe/redis-connections")).await;
    assert_eq!(status, 200, "{ids}");
    let ids: Vec<&str> = ids.split(' ').collect();
    assert_eq!(ids.len(), 2);
    assert_ne!(ids[0], ids[1], "two opens shared one connection");
    // Dropped by the guest, each connection closes: Redis lists neither for long.
    let redis = redis::Client::open(api_tests::REDIS).unwrap();
    let mut own = redis.get_multiplexed_async_connection().await.unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let listed: String = redis::cmd("CLIENT")
            .arg("LIST")
            .arg("ID")
            .arg(&ids)
            .query_async(&mut own)
            .await
            .unwrap();
        if listed.trim().is_empty() {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "still open: {listed}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// 64 requests at once, each waiting in Postgres: with Spin's reuse an instance takes at most 16
/// of them, so at least four instances serve them, and far fewer than one each.
#[tokio::test]
async fn concurrent_requests_share_instances_sixteen_at_most() {
    let (running, base) = serve(options()).await;
    let url = format!("{base}/probe/sleep?ms=200");
    let requests = (0..64).map(|_| get(&url));
    for outcome in futures::future::join_all(requests).await {
        assert_eq!(outcome, (200, "slept".into()));
    }
    let stats = running.app.instance_stats("probe").unwrap();
    let instances = stats.started.load(std::sync::atomic::Ordering::Relaxed);
    assert!((4..64).contains(&instances), "{instances} instances");
}

/// A component that answers without reading the request body: Spin's hyper then stops keeping the
/// connection alive and says so; the host says the same, and the client still gets the answer.
#[tokio::test]
async fn a_body_left_unread_closes_the_connection_as_under_spin() {
    let (_running, base) = serve(options()).await;
    let client = reqwest::Client::new();
    let response = client
        .post(format!("{base}/probe/hello"))
        .body(vec![b'x'; 4 << 20])
        .send()
        .await
        .expect("the answer arrives");
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["connection"], "close");
    assert_eq!(response.text().await.unwrap(), "hello");

    // A request without a body keeps its connection.
    let response = client
        .get(format!("{base}/probe/hello"))
        .send()
        .await
        .unwrap();
    assert!(response.headers().get("connection").is_none());
}
