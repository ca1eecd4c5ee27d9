//! The platform component through the host: health checks, and tokens for
//! service accounts (OAuth2 client credentials with Argon2id secrets).

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use api_tests::{
    SECRET, TestApp, assert_error, assert_invalid_field, assert_not_found, parts, spawn_app,
    spawn_app_with, texts, without_postgres, without_redis,
};
use orchestrator_core::auth::{AuthConfig, Scope, authenticate};
use orchestrator_core::credentials::{DUMMY_HASH, verify_secret};
use orchestrator_core::ids::WorkspaceId;
use reqwest::{Method, Response};
use serde_json::{Value, json};
use service_account::{Account, upsert};
use spin_host::AppOptions;

/// Creates `client_id` as `scripts/service-account` would and returns its secret.
async fn create_account(
    app: &TestApp,
    client_id: &str,
    scopes: &[Scope],
    workspace: Option<&str>,
) -> String {
    let account = Account::new(
        client_id,
        scopes.iter().copied().collect(),
        workspace.map(|w| WorkspaceId::parse(w).expect("workspace id")),
    )
    .expect("account");
    upsert(&app.db.client().await.expect("db"), &account)
        .await
        .expect("upsert")
}

const TOKEN: &str = "/api/auth/token";

async fn request_token(app: &TestApp, body: Value) -> Response {
    app.request(Method::POST, TOKEN, None)
        .json(&body)
        .send()
        .await
        .expect("request")
}

async fn request_token_form(app: &TestApp, body: &str) -> Response {
    app.post_raw(TOKEN, None, "application/x-www-form-urlencoded", body)
        .await
}

/// The body of a token request with nothing but credentials.
fn credentials(client_id: &str, secret: &str) -> Value {
    json!({"client_id": client_id, "client_secret": secret})
}

/// Signs in with credentials alone; asserts the token is issued for `scope` and `expires_in`.
async fn sign_in(
    app: &TestApp,
    client_id: &str,
    secret: &str,
    scope: &str,
    expires_in: i64,
) -> String {
    let response = request_token(app, credentials(client_id, secret)).await;
    issued(response, scope, expires_in).await
}

/// The access token of a 200, asserting the rest of the body.
async fn issued(response: Response, scope: &str, expires_in: i64) -> String {
    assert_eq!(
        response
            .headers()
            .get("cache-control")
            .and_then(|v| v.to_str().ok()),
        Some("no-store")
    );
    let (status, body) = parts(response).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["token_type"], "Bearer", "{body}");
    assert_eq!(body["expires_in"], expires_in, "{body}");
    assert_eq!(body["scope"], scope, "{body}");
    body["access_token"].as_str().expect("a token").to_owned()
}

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

#[tokio::test]
async fn health_reports_both_checks_ok() {
    let app = spawn_app().await;
    let response = app.send_anonymous(Method::GET, "/api/health").await;
    assert!(response.headers().contains_key("x-request-id"));
    let (status, body) = parts(response).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        json!({"status": "ok", "checks": {"postgres": "ok", "redis": "ok"}})
    );
}

/// Serves the app with one dependency unreachable and asserts health answers 503 with the
/// contract's error body, naming the overall `status` and each check.
async fn assert_health_fails(
    unreachable: fn(AppOptions) -> AppOptions,
    status: &str,
    checks: Value,
) {
    let app = spawn_app_with(unreachable).await;
    let response = app.send_anonymous(Method::GET, "/api/health").await;
    assert_eq!(
        response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok()),
        Some("1")
    );
    let body = assert_error(response, 503, "UNAVAILABLE").await;
    assert_eq!(body["error"]["details"]["checks"], body["checks"], "{body}");
    assert_eq!(body["status"], status, "{body}");
    assert_eq!(body["checks"], checks);
}

#[tokio::test]
async fn health_without_redis_is_503_degraded() {
    let checks = json!({"postgres": "ok", "redis": "unavailable"});
    assert_health_fails(without_redis, "degraded", checks).await;
}

#[tokio::test]
async fn health_without_postgres_is_503_unavailable() {
    let checks = json!({"postgres": "unavailable", "redis": "ok"});
    assert_health_fails(without_postgres, "unavailable", checks).await;
}

#[tokio::test]
async fn the_right_secret_gets_a_token_that_works_on_the_api() {
    let app = spawn_app().await;
    let secret = create_account(
        &app,
        "ci-bot",
        &[Scope::ResourcesRead, Scope::JobsRead],
        None,
    )
    .await;
    let token = sign_in(&app, "ci-bot", &secret, "resources:read jobs:read", 3600).await;

    let (status, body) = parts(app.get("/api/resources/quotas", &token).await).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["quotas"].as_array().map(Vec::len), Some(6));
    // Only the account's scopes.
    assert_error(
        app.get("/api/supervisor/workers", &token).await,
        403,
        "FORBIDDEN",
    )
    .await;
}

#[tokio::test]
async fn unknown_clients_wrong_secrets_and_disabled_accounts_get_the_same_401() {
    let app = spawn_app().await;
    let secret = create_account(&app, "ci-bot", &[Scope::JobsRead], None).await;
    let attempts = [
        json!({"client_id": "ci-bot", "client_secret": format!("{secret}x")}),
        json!({"client_id": "ci-bot", "client_secret": ""}),
        credentials("nobody", &secret),
    ];
    let mut bodies = Vec::new();
    for attempt in attempts {
        let response = request_token(&app, attempt).await;
        assert!(response.headers().contains_key("www-authenticate"));
        bodies.push(assert_error(response, 401, "UNAUTHENTICATED").await);
    }

    app.run_sql("UPDATE service_accounts SET disabled = true WHERE client_id = 'ci-bot'")
        .await;
    let right = credentials("ci-bot", &secret);
    let response = request_token(&app, right.clone()).await;
    bodies.push(assert_error(response, 401, "UNAUTHENTICATED").await);
    assert!(
        bodies.windows(2).all(|pair| pair[0] == pair[1]),
        "refusals differ: {bodies:?}"
    );

    // Running the tool again rotates the secret and enables the account.
    let rotated = create_account(&app, "ci-bot", &[Scope::JobsRead], None).await;
    assert_error(request_token(&app, right).await, 401, "UNAUTHENTICATED").await;
    sign_in(&app, "ci-bot", &rotated, "jobs:read", 3600).await;
}

#[tokio::test]
async fn form_encoded_requests_work_like_json() {
    let app = spawn_app().await;
    let secret = create_account(
        &app,
        "ci.bot:1",
        &[Scope::ResourcesRead, Scope::JobsRead],
        None,
    )
    .await;
    let body = format!(
        "grant_type=client_credentials&client_id=ci.bot%3A1&client_secret={secret}&scope=resources%3Aread"
    );
    let token = issued(
        request_token_form(&app, &body).await,
        "resources:read",
        3600,
    )
    .await;
    let (status, _) = parts(app.get("/api/resources/quotas", &token).await).await;
    assert_eq!(status, 200);

    let repeated = format!("client_id=ci.bot%3A1&client_id=other&client_secret={secret}");
    assert_invalid_field(request_token_form(&app, &repeated).await, "client_id").await;
}

#[tokio::test]
async fn scopes_beyond_the_account_are_403_after_the_credentials() {
    let app = spawn_app().await;
    let secret = create_account(&app, "reader", &[Scope::JobsRead, Scope::JobsWrite], None).await;
    let ask = |secret: &str, scope: &str| json!({"client_id": "reader", "client_secret": secret, "scope": scope});

    let token = issued(
        request_token(&app, ask(&secret, "jobs:read")).await,
        "jobs:read",
        3600,
    )
    .await;
    let auth = AuthConfig::from_variables(SECRET, None, None, None).unwrap();
    let principal = authenticate(Some(&format!("Bearer {token}")), &auth, now_secs()).unwrap();
    assert_eq!(principal.scopes, BTreeSet::from([Scope::JobsRead]));

    let body = assert_error(
        request_token(&app, ask(&secret, "jobs:read resources:write")).await,
        403,
        "FORBIDDEN",
    )
    .await;
    assert_eq!(
        body["detail"],
        "client reader may not request scope resources:write"
    );
    // Wrong credentials say nothing about scopes.
    assert_error(
        request_token(&app, ask("wrong", "resources:write")).await,
        401,
        "UNAUTHENTICATED",
    )
    .await;
    // Blank asks for everything.
    issued(
        request_token(&app, ask(&secret, " ")).await,
        "jobs:read jobs:write",
        3600,
    )
    .await;
}

#[tokio::test]
async fn malformed_token_requests_are_refused_before_any_lookup() {
    let app = spawn_app().await;
    let cases = [
        (json!({"client_id": "c"}), "client_secret"),
        (
            json!({"client_id": "c", "client_secret": "s", "scope": "jobs:admin"}),
            "scope",
        ),
        (
            json!({"client_id": "c", "client_secret": "s", "grant_type": "password"}),
            "grant_type",
        ),
        (
            json!({"client_id": "c", "client_secret": "s", "audience": "x"}),
            "audience",
        ),
    ];
    for (body, field) in cases {
        assert_invalid_field(request_token(&app, body).await, field).await;
    }
    let post =
        async |content_type: &str, body: &str| app.post_raw(TOKEN, None, content_type, body).await;
    assert_error(
        post("application/json", "{not json").await,
        400,
        "BAD_REQUEST",
    )
    .await;
    assert_error(
        post("text/plain", "client_id=c").await,
        415,
        "UNSUPPORTED_MEDIA_TYPE",
    )
    .await;
    let response = app.send_anonymous(Method::GET, TOKEN).await;
    assert_eq!(
        response
            .headers()
            .get("allow")
            .and_then(|v| v.to_str().ok()),
        Some("POST")
    );
    assert_error(response, 405, "METHOD_NOT_ALLOWED").await;
}

#[tokio::test]
async fn a_workspace_account_gets_a_confined_token() {
    let app = spawn_app().await;
    app.run_sql(
        "INSERT INTO workers (id, workspace_id, status) VALUES
           ('w_a1', 'ws_a', 'IDLE'), ('w_b1', 'ws_b', 'IDLE');",
    )
    .await;
    let secret = create_account(&app, "team-a", &[Scope::SupervisorRead], Some("ws_a")).await;
    let token = sign_in(&app, "team-a", &secret, "supervisor:read", 3600).await;

    let (status, body) = parts(app.get("/api/supervisor/workers", &token).await).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(texts(&body["workers"], "id"), ["w_a1"]);
    assert_not_found(app.get("/api/supervisor/workers/w_b1", &token).await).await;
}

#[tokio::test]
async fn tokens_carry_the_configured_ttl_issuer_and_audience() {
    let app = spawn_app_with(|options| {
        options
            .variable("token_ttl_seconds", "120")
            .variable("jwt_issuer", "https://issuer.test")
            .variable("jwt_audience", "orchestrator")
    })
    .await;
    let secret = create_account(&app, "ci-bot", &[Scope::ResourcesRead], None).await;
    let token = sign_in(&app, "ci-bot", &secret, "resources:read", 120).await;
    // The app itself requires `iss` and `aud` now.
    let (status, body) = parts(app.get("/api/resources/quotas", &token).await).await;
    assert_eq!(status, 200, "{body}");

    let auth = AuthConfig::from_variables(
        SECRET,
        None,
        Some("https://issuer.test"),
        Some("orchestrator"),
    )
    .unwrap();
    let header = format!("Bearer {token}");
    let principal = authenticate(Some(&header), &auth, now_secs()).unwrap();
    assert_eq!(principal.subject, "ci-bot");
    assert_eq!(principal.workspace_id, None);
    // `exp` is now + 120 s (plus the 30 s leeway every verifier allows).
    assert!(authenticate(Some(&header), &auth, now_secs() + 140).is_ok());
    assert!(authenticate(Some(&header), &auth, now_secs() + 160).is_err());
}

/// How long `request` takes, asserting its status.
async fn timed(expected: u16, request: impl AsyncFnOnce() -> u16) -> Duration {
    let start = Instant::now();
    assert_eq!(request().await, expected);
    start.elapsed()
}

fn median(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times[times.len() / 2]
}

/// The least one Argon2id verification with the service's parameters takes natively: a floor for
/// what it costs inside a WebAssembly instance, which runs the same code no faster.
fn native_verification() -> Duration {
    let least = (0..5)
        .map(|_| {
            let start = Instant::now();
            assert!(!verify_secret(Some(DUMMY_HASH), "not the dummy's secret"));
            start.elapsed()
        })
        .min()
        .unwrap();
    // 19 MiB and two passes take tens of milliseconds on any machine: less means nothing was verified.
    assert!(
        least > Duration::from_millis(5),
        "{least:?}: no Argon2id ran"
    );
    least
}

/// Unknown client ids cost an Argon2id verification too (against a dummy
/// hash), so timing does not tell which ids exist. Prints the times seen.
#[tokio::test]
async fn unknown_clients_cost_as_much_as_wrong_secrets() {
    let app = spawn_app().await;
    create_account(&app, "ci-bot", &[Scope::JobsRead], None).await;
    let status_of = async |body: Value| request_token(&app, body).await.status().as_u16();
    let wrong_secret = json!({"client_id": "ci-bot", "client_secret": "wrong"});
    let unknown_client = json!({"client_id": "nobody", "client_secret": "wrong"});
    // Refused before any lookup: a request without a verification.
    let malformed = json!({"client_id": "ci-bot"});

    // Warms up the instance pool and the connections.
    status_of(wrong_secret.clone()).await;
    let (mut wrong, mut unknown, mut baseline) = (Vec::new(), Vec::new(), Vec::new());
    // Interleaved, so a busy moment slows all three alike.
    for _ in 0..7 {
        wrong.push(timed(401, async || status_of(wrong_secret.clone()).await).await);
        unknown.push(timed(401, async || status_of(unknown_client.clone()).await).await);
        baseline.push(timed(422, async || status_of(malformed.clone()).await).await);
    }
    let (wrong, unknown, baseline) = (median(wrong), median(unknown), median(baseline));
    let verification = native_verification();
    eprintln!(
        "token endpoint medians: wrong secret {wrong:?}, unknown client {unknown:?}, \
         malformed body {baseline:?} (so one Argon2id verification takes about {:?}; \
         natively at least {verification:?})",
        wrong.saturating_sub(baseline)
    );
    // Each refusal costs a verification on top of what a request without one costs: alike but
    // both cheap would hide no client id and protect no secret.
    for (what, time) in [("wrong secret", wrong), ("unknown client", unknown)] {
        assert!(
            time.saturating_sub(baseline) >= verification,
            "{what} {time:?} is not a verification ({verification:?}) above {baseline:?}"
        );
    }
    // Without the dummy verification an unknown client would be answered
    // many times faster; generous bounds keep this steady on a busy machine.
    assert!(
        unknown * 3 > wrong,
        "unknown {unknown:?} vs wrong {wrong:?}"
    );
    assert!(
        wrong * 3 > unknown,
        "unknown {unknown:?} vs wrong {wrong:?}"
    );
}
