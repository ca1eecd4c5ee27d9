//! Bearer tokens through the host (contract §2): forged, confused, expired, premature, foreign, tampered
//! and malformed tokens are 401 with `WWW-Authenticate: Bearer error="invalid_token"` and write nothing;
//! the leeway, both scope forms and a public-key token work; and a token confined to one workspace can
//! neither see nor change another's objects (404, never a hint), nor create there (403), while its
//! lists, metrics and events show only its own.
//!
//! The PEM files under `components/core/tests/keys/` are throwaway test keys.

use api_tests::{SECRET, TestApp, all_scopes, parts, spawn_app, spawn_app_with, token};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey};
use reqwest::Method;
use serde_json::{Value, json};

#[path = "../../../components/core/tests/support/signing.rs"]
mod signing;
use signing::sign;

const RSA_PRIVATE: &str = include_str!("../../../components/core/tests/keys/rsa_private.pem");
const RSA_PUBLIC: &str = include_str!("../../../components/core/tests/keys/rsa_public.pem");
const ED_PRIVATE: &str = include_str!("../../../components/core/tests/keys/ed_private.pem");
const ED_PUBLIC: &str = include_str!("../../../components/core/tests/keys/ed_public.pem");
const EC_PRIVATE: &str = include_str!("../../../components/core/tests/keys/ec_private.pem");

const ISSUER: &str = "https://issuer.test";
const AUDIENCE: &str = "orchestrator";
const CHALLENGE: &str = r#"Bearer error="invalid_token""#;
/// Beyond the 30 s leeway, with room for a slow test.
const WELL_BEYOND_LEEWAY: i64 = 120;
/// Inside the 30 s leeway, with room for a slow test.
const WELL_INSIDE_LEEWAY: i64 = 10;

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Claims every endpoint accepts: all scopes, valid for ten minutes, no workspace.
fn valid_claims() -> Value {
    let scopes: Vec<&str> = all_scopes().iter().map(|s| s.as_str()).collect();
    json!({"sub": "tester", "exp": now() + 600, "iat": now(), "scopes": scopes})
}

/// [`valid_claims`] with `changes` applied; a `null` change removes the claim.
fn claims_with(changes: Value) -> Value {
    let mut claims = valid_claims();
    for (name, value) in changes.as_object().unwrap() {
        if value.is_null() {
            claims.as_object_mut().unwrap().remove(name);
        } else {
            claims[name] = value.clone();
        }
    }
    claims
}

/// Signed with the service's HS256 secret: any refusal is about the claims, not the signature.
fn hs256(claims: &Value) -> String {
    sign(
        claims,
        Algorithm::HS256,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
}

fn rs256(claims: &Value) -> String {
    let key = EncodingKey::from_rsa_pem(RSA_PRIVATE.as_bytes()).unwrap();
    sign(claims, Algorithm::RS256, &key)
}

fn eddsa(claims: &Value) -> String {
    let key = EncodingKey::from_ed_pem(ED_PRIVATE.as_bytes()).unwrap();
    sign(claims, Algorithm::EdDSA, &key)
}

fn b64(value: &Value) -> String {
    URL_SAFE_NO_PAD.encode(value.to_string())
}

/// A token put together by hand: any header, any claims, any signature.
fn crafted(header: Value, claims: &Value, signature: &str) -> String {
    format!("{}.{}.{signature}", b64(&header), b64(claims))
}

/// A request with `authorization` verbatim (or none).
async fn send(
    app: &TestApp,
    method: Method,
    path: &str,
    authorization: Option<&str>,
    body: Option<Value>,
) -> reqwest::Response {
    let mut request = app.http.request(method, format!("{}{path}", app.address));
    if let Some(authorization) = authorization {
        request = request.header("authorization", authorization);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    request.send().await.expect("request")
}

/// The contract's 401: status, challenge header, error body.
async fn assert_unauthenticated(response: reqwest::Response, label: &str) {
    let challenge = response
        .headers()
        .get("www-authenticate")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let (status, body) = parts(response).await;
    assert_eq!(status, 401, "{label}: {body}");
    assert_eq!(challenge.as_deref(), Some(CHALLENGE), "{label}");
    assert_eq!(body["error"]["code"], "UNAUTHENTICATED", "{label}: {body}");
    assert_eq!(body["detail"], body["error"]["message"], "{label}: {body}");
    assert!(body["error"]["details"].is_object(), "{label}: {body}");
}

/// A read and a write with `token`: both 401, and nothing written.
async fn refused(app: &TestApp, label: &str, authorization: &str) {
    let read = send(
        app,
        Method::GET,
        "/api/supervisor/workers",
        Some(authorization),
        None,
    )
    .await;
    assert_unauthenticated(read, &format!("{label} (read)")).await;
    let submit = json!({"task_description": "t", "worker_count": 1, "workspace_id": "ws_a"});
    let write = send(
        app,
        Method::POST,
        "/api/jobs/submit",
        Some(authorization),
        Some(submit),
    )
    .await;
    assert_unauthenticated(write, &format!("{label} (write)")).await;
}

async fn refused_token(app: &TestApp, label: &str, token: &str) {
    refused(app, label, &format!("Bearer {token}")).await;
}

/// A read with `token` succeeds.
async fn accepted(app: &TestApp, label: &str, token: &str) {
    let response = send(
        app,
        Method::GET,
        "/api/supervisor/workers",
        Some(&format!("Bearer {token}")),
        None,
    )
    .await;
    let (status, body) = parts(response).await;
    assert_eq!(status, 200, "{label}: {body}");
}

async fn count(app: &TestApp, table: &str) -> i64 {
    let client = app.db.client().await.unwrap();
    let row = client
        .query_one(&format!("SELECT count(*) FROM {table}"), &[])
        .await
        .unwrap();
    row.get(0)
}

async fn nothing_written(app: &TestApp) {
    for table in ["workers", "jobs", "events", "idempotency_records"] {
        assert_eq!(count(app, table).await, 0, "{table}");
    }
}

#[tokio::test]
async fn forged_expired_tampered_and_malformed_tokens_are_401() {
    let app = spawn_app().await;
    let claims = valid_claims();

    // `alg: none`, however it is spelled, with or without a signature.
    for alg in ["none", "None", "NONE", "nOnE"] {
        let header = json!({"alg": alg, "typ": "JWT"});
        refused_token(
            &app,
            &format!("alg {alg}"),
            &crafted(header.clone(), &claims, ""),
        )
        .await;
        let signature = URL_SAFE_NO_PAD.encode(b"not a signature");
        let signed = crafted(header, &claims, &signature);
        refused_token(&app, &format!("alg {alg} with a signature"), &signed).await;
    }
    // Algorithms the service was not configured with.
    refused_token(&app, "RS256 without a public key", &rs256(&claims)).await;
    refused_token(&app, "EdDSA without a public key", &eddsa(&claims)).await;
    let es256 = sign(
        &claims,
        Algorithm::ES256,
        &EncodingKey::from_ec_pem(EC_PRIVATE.as_bytes()).unwrap(),
    );
    refused_token(&app, "ES256 without a public key", &es256).await;
    let hs512 = sign(
        &claims,
        Algorithm::HS512,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    );
    refused_token(&app, "HS512 with the right secret", &hs512).await;
    let other_secret = sign(
        &claims,
        Algorithm::HS256,
        &EncodingKey::from_secret(b"another-secret-that-is-32-bytes-long!!"),
    );
    refused_token(&app, "another secret", &other_secret).await;

    // Tampering: a payload granting more, under the original signature; a changed signature.
    let narrow = hs256(&claims_with(json!({"scopes": ["jobs:read"]})));
    let [head, _, signature] = narrow.split('.').collect::<Vec<_>>()[..] else {
        panic!("three parts")
    };
    let widened = format!("{head}.{}.{signature}", b64(&claims));
    refused_token(&app, "payload tampered", &widened).await;
    let flipped = if signature.starts_with('A') { "B" } else { "A" };
    let resigned = format!(
        "{head}.{}.{flipped}{}",
        narrow.split('.').nth(1).unwrap(),
        &signature[1..]
    );
    refused_token(&app, "signature tampered", &resigned).await;
    let header_swapped = format!(
        "{}.{}",
        b64(&json!({"alg": "HS256", "typ": "JWT", "kid": "../../etc/passwd"})),
        narrow.split_once('.').unwrap().1
    );
    refused_token(&app, "header tampered", &header_swapped).await;

    // Time.
    let late = now() - WELL_BEYOND_LEEWAY;
    let early = now() + WELL_BEYOND_LEEWAY;
    for (label, changes) in [
        ("expired beyond the leeway", json!({ "exp": late })),
        ("not valid yet (nbf)", json!({ "nbf": early })),
        ("issued in the future (iat)", json!({ "iat": early })),
        ("no exp", json!({"exp": null})),
        ("exp a string", json!({"exp": "tomorrow"})),
        ("nbf a string", json!({"nbf": "soon"})),
        ("exp an object", json!({"exp": {"at": 1}})),
    ] {
        refused_token(&app, label, &hs256(&claims_with(changes))).await;
    }

    // Subject and scopes of the wrong shape.
    for (label, changes) in [
        ("no sub", json!({"sub": null})),
        ("empty sub", json!({"sub": ""})),
        ("sub a number", json!({"sub": 42})),
        ("sub an array", json!({"sub": ["tester"]})),
        ("sub with U+0000", json!({"sub": "test\u{0}er"})),
        ("scopes a number", json!({"scopes": 7})),
        ("scopes an object", json!({"scopes": {"jobs:write": true}})),
        ("scopes numbers", json!({"scopes": [1, 2]})),
        ("scopes a string", json!({"scopes": "jobs:write"})),
        (
            "scopes with a null",
            json!({"scopes": ["jobs:write", null]}),
        ),
        ("scope an array", json!({"scope": ["jobs:write"]})),
        ("scope a number", json!({"scope": 1})),
        (
            "workspace_id of another shape",
            json!({"workspace_id": "ws a"}),
        ),
        ("workspace_id a number", json!({"workspace_id": 7})),
    ] {
        refused_token(&app, label, &hs256(&claims_with(changes))).await;
    }
    let not_an_object = format!(
        "{}.{}.",
        b64(&json!({"alg": "HS256"})),
        URL_SAFE_NO_PAD.encode("[1,2,3]")
    );
    refused_token(&app, "claims not an object", &not_an_object).await;

    // Not a token at all.
    let valid = hs256(&claims);
    for (label, authorization) in [
        ("scheme only", "Bearer".to_owned()),
        ("empty token", "Bearer    ".to_owned()),
        ("another scheme", format!("Basic {valid}")),
        ("no scheme", valid.clone()),
        ("one part", "Bearer abc".to_owned()),
        (
            "two parts",
            format!("Bearer {}", valid.rsplit_once('.').unwrap().0),
        ),
        ("four parts", format!("Bearer {valid}.x")),
        ("not base64", "Bearer @@@.@@@.@@@".to_owned()),
        (
            "header not JSON",
            format!("Bearer {}.e30.", URL_SAFE_NO_PAD.encode("{")),
        ),
        ("two tokens", format!("Bearer {valid} {valid}")),
        ("a long token", format!("Bearer {}", "a".repeat(8_000))),
    ] {
        refused(&app, label, &authorization).await;
    }
    let missing = send(&app, Method::GET, "/api/supervisor/workers", None, None).await;
    assert_unauthenticated(missing, "no authorization").await;
    nothing_written(&app).await;

    // Within the leeway, and the other scope form, work.
    let within = now() - WELL_INSIDE_LEEWAY;
    accepted(
        &app,
        "expired within the leeway",
        &hs256(&claims_with(json!({ "exp": within }))),
    )
    .await;
    let soon = now() + WELL_INSIDE_LEEWAY;
    accepted(
        &app,
        "nbf within the leeway",
        &hs256(&claims_with(json!({ "nbf": soon }))),
    )
    .await;
    let spaced = claims_with(json!({"scopes": null, "scope": "supervisor:read jobs:write"}));
    accepted(&app, "scope string", &hs256(&spaced)).await;
    let submit = json!({"task_description": "t", "worker_count": 1, "workspace_id": "ws_a"});
    let bearer = format!("Bearer {}", hs256(&spaced));
    let (status, job) = parts(
        send(
            &app,
            Method::POST,
            "/api/jobs/submit",
            Some(&bearer),
            Some(submit),
        )
        .await,
    )
    .await;
    assert_eq!(status, 201, "jobs:write from the scope string: {job}");
    let (status, body) =
        parts(send(&app, Method::GET, "/api/jobs", Some(&bearer), None).await).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (403, Some("FORBIDDEN")),
        "jobs:read is not in the scope string: {body}"
    );
}

#[tokio::test]
async fn a_public_key_cannot_be_used_as_an_hs256_secret() {
    for (name, public, private_sign) in [
        ("RS256", RSA_PUBLIC, rs256 as fn(&Value) -> String),
        ("EdDSA", ED_PUBLIC, eddsa as fn(&Value) -> String),
    ] {
        let app = spawn_app_with(|options| options.variable("jwt_public_key", public)).await;
        let claims = valid_claims();
        for (label, secret) in [
            ("the PEM", public.to_owned()),
            ("the PEM trimmed", public.trim().to_owned()),
            ("the PEM on one line", public.replace('\n', "\\n")),
        ] {
            let confused = sign(
                &claims,
                Algorithm::HS256,
                &EncodingKey::from_secret(secret.as_bytes()),
            );
            refused_token(
                &app,
                &format!("{name}: HS256 signed with {label}"),
                &confused,
            )
            .await;
        }
        // The header claims the public-key algorithm, the signature is an HMAC with the public key.
        let hmac = sign(
            &claims,
            Algorithm::HS256,
            &EncodingKey::from_secret(public.as_bytes()),
        );
        let relabelled = format!(
            "{}.{}",
            b64(&json!({"alg": name, "typ": "JWT"})),
            hmac.split_once('.').unwrap().1
        );
        refused_token(&app, &format!("{name} header over an HMAC"), &relabelled).await;
        let alg_none = crafted(json!({"alg": "none"}), &claims, "");
        refused_token(&app, &format!("{name}: alg none"), &alg_none).await;
        nothing_written(&app).await;

        accepted(
            &app,
            &format!("{name} signed with the private key"),
            &private_sign(&claims),
        )
        .await;
        accepted(
            &app,
            &format!("{name}: HS256 with the secret still works"),
            &hs256(&claims),
        )
        .await;
        let expired = private_sign(&claims_with(json!({"exp": now() - WELL_BEYOND_LEEWAY})));
        refused_token(&app, &format!("{name} expired"), &expired).await;
    }
}

#[tokio::test]
async fn issuer_and_audience_are_checked_when_configured() {
    let app = spawn_app_with(|options| {
        options
            .variable("jwt_public_key", RSA_PUBLIC)
            .variable("jwt_issuer", ISSUER)
            .variable("jwt_audience", AUDIENCE)
    })
    .await;
    let right = json!({"iss": ISSUER, "aud": AUDIENCE});
    for (label, changes) in [
        ("no iss", json!({"aud": AUDIENCE})),
        (
            "wrong iss",
            json!({"iss": "https://evil.test", "aud": AUDIENCE}),
        ),
        (
            "iss with a trailing slash",
            json!({"iss": format!("{ISSUER}/"), "aud": AUDIENCE}),
        ),
        ("no aud", json!({ "iss": ISSUER })),
        ("wrong aud", json!({"iss": ISSUER, "aud": "someone-else"})),
        (
            "aud list without ours",
            json!({"iss": ISSUER, "aud": ["a", "b"]}),
        ),
        ("aud a number", json!({"iss": ISSUER, "aud": 1})),
        ("iss a number", json!({"iss": 1, "aud": AUDIENCE})),
    ] {
        let claims = claims_with(changes);
        refused_token(&app, &format!("HS256 {label}"), &hs256(&claims)).await;
        refused_token(&app, &format!("RS256 {label}"), &rs256(&claims)).await;
    }
    nothing_written(&app).await;
    accepted(
        &app,
        "HS256 right iss and aud",
        &hs256(&claims_with(right.clone())),
    )
    .await;
    accepted(&app, "RS256 right iss and aud", &rs256(&claims_with(right))).await;
    let listed = claims_with(json!({"iss": ISSUER, "aud": ["other", AUDIENCE]}));
    accepted(&app, "aud list with ours", &rs256(&listed)).await;
}

// ------------------------------------------------------------------------------------------------
// Workspaces
// ------------------------------------------------------------------------------------------------

const OWN: &str = "ws_a";
const FOREIGN: &str = "ws_b";

fn operator() -> String {
    token(&all_scopes(), None)
}

fn confined() -> String {
    token(&all_scopes(), Some(OWN))
}

async fn call(
    app: &TestApp,
    method: Method,
    path: &str,
    token: &str,
    body: Option<Value>,
) -> (u16, Value) {
    parts(send(app, method, path, Some(&format!("Bearer {token}")), body).await).await
}

/// A RUNNING worker, and a RUNNING job holding a worker with a PENDING child, in `workspace`.
async fn seed(app: &TestApp, workspace: &str) -> (String, String, String) {
    let worker = format!("w_{workspace}");
    let (status, body) = call(
        app,
        Method::POST,
        "/api/supervisor/workers",
        &operator(),
        Some(json!({"id": worker, "workspace_id": workspace})),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let start = format!("/api/supervisor/workers/{worker}/start");
    assert_eq!(
        call(app, Method::POST, &start, &operator(), None).await.0,
        200
    );
    let submit = |depth: i64, parent: Option<String>| {
        json!({"task_description": "t", "worker_count": 2, "depth": depth,
               "parent_job_id": parent, "workspace_id": workspace})
    };
    let (status, job) = call(
        app,
        Method::POST,
        "/api/jobs/submit",
        &operator(),
        Some(submit(0, None)),
    )
    .await;
    assert_eq!(status, 201, "{job}");
    let job = job["id"].as_str().unwrap().to_owned();
    let (status, child) = call(
        app,
        Method::POST,
        "/api/jobs/submit",
        &operator(),
        Some(submit(1, Some(job.clone()))),
    )
    .await;
    assert_eq!(status, 201, "{child}");
    let allocate = json!({"job_id": job, "depth": 0, "worker_count": 1});
    let (status, grant) = call(
        app,
        Method::POST,
        "/api/resources/allocate",
        &operator(),
        Some(allocate),
    )
    .await;
    assert_eq!(status, 201, "{grant}");
    (worker, job, child["id"].as_str().unwrap().to_owned())
}

/// Everything about `workspace`'s objects that a change would move.
async fn snapshot(app: &TestApp, workspace: &str) -> Vec<(String, i64)> {
    let client = app.db.client().await.unwrap();
    let mut rows = Vec::new();
    for sql in [
        "SELECT id || ':' || status || ':' || coalesce(last_heartbeat_at::text, '-'), version FROM workers WHERE workspace_id = $1",
        "SELECT id || ':' || status || ':' || allocated_workers, version FROM jobs WHERE workspace_id = $1",
        "SELECT 'events', count(*) FROM events WHERE workspace_id = $1",
        "SELECT 'open allocations', count(*) FROM allocations WHERE workspace_id = $1 AND released_at IS NULL",
    ] {
        for row in client.query(sql, &[&workspace]).await.unwrap() {
            rows.push((row.get(0), row.get(1)));
        }
    }
    rows.sort();
    rows
}

#[tokio::test]
async fn a_workspace_token_cannot_reach_another_workspace() {
    let app = spawn_app().await;
    let (own_worker, own_job, _) = seed(&app, OWN).await;
    let (worker, job, child) = seed(&app, FOREIGN).await;
    let before = snapshot(&app, FOREIGN).await;

    // Every endpoint that names an object: 404, reading exactly as for an id that does not exist.
    let reason = Some(json!({"reason": "r"}));
    let worker_calls: Vec<(Method, String, Option<Value>)> = vec![
        (Method::GET, String::new(), None),
        (Method::GET, "/transitions".into(), None),
        (Method::POST, "/start".into(), reason.clone()),
        (Method::POST, "/pause".into(), reason.clone()),
        (Method::POST, "/resume".into(), reason.clone()),
        (Method::POST, "/complete".into(), reason.clone()),
        (Method::POST, "/fail".into(), reason.clone()),
        (Method::POST, "/terminate".into(), reason.clone()),
        (Method::POST, "/heartbeat".into(), None),
    ];
    let job_calls: Vec<(Method, String, Option<Value>)> = vec![
        (Method::GET, String::new(), None),
        (Method::GET, "/transitions".into(), None),
        (Method::GET, "/children".into(), None),
        (Method::POST, "/cancel".into(), reason.clone()),
        (
            Method::POST,
            "/complete".into(),
            Some(json!({"result": {"stolen": true}})),
        ),
        (
            Method::POST,
            "/fail".into(),
            Some(json!({"error": "sabotage"})),
        ),
    ];
    let mut probes: Vec<(Method, String, Option<Value>, String)> = Vec::new();
    for (method, suffix, body) in worker_calls {
        let path = format!("/api/supervisor/workers/{worker}{suffix}");
        probes.push((method, path, body, format!("Worker {worker} not found")));
    }
    for target in [&job, &child] {
        for (method, suffix, body) in &job_calls {
            let path = format!("/api/jobs/{target}{suffix}");
            probes.push((
                method.clone(),
                path,
                body.clone(),
                format!("Job {target} not found"),
            ));
        }
    }
    for (path, body) in [
        (
            "/api/resources/allocate",
            json!({"job_id": job, "depth": 0, "worker_count": 1}),
        ),
        (
            "/api/resources/allocate",
            json!({"job_id": child, "depth": 1, "worker_count": 1}),
        ),
        ("/api/resources/release", json!({"job_id": job, "depth": 0})),
    ] {
        let target = body["job_id"].as_str().unwrap().to_owned();
        probes.push((
            Method::POST,
            path.into(),
            Some(body),
            format!("Job {target} not found"),
        ));
    }
    for (i, (method, path, body, message)) in probes.iter().enumerate() {
        // With and without an idempotency key: a recorded 404 must not leak either.
        for key in [None, Some(format!("probe-{i}"))] {
            let mut request = app
                .http
                .request(method.clone(), format!("{}{path}", app.address))
                .bearer_auth(confined());
            if let Some(body) = body {
                request = request.json(body);
            }
            if let Some(key) = &key {
                request = request.header("idempotency-key", key);
            }
            let (status, answer) = parts(request.send().await.unwrap()).await;
            assert_eq!(status, 404, "{method} {path}: {answer}");
            assert_eq!(answer["error"]["code"], "NOT_FOUND", "{method} {path}");
            assert_eq!(
                answer["detail"],
                message.as_str(),
                "{method} {path}: never reveal"
            );
        }
    }
    // A missing id reads the same.
    let (status, missing) = call(
        &app,
        Method::GET,
        "/api/jobs/j_000000000000",
        &confined(),
        None,
    )
    .await;
    assert_eq!(
        (status, missing["detail"].as_str()),
        (404, Some("Job j_000000000000 not found"))
    );

    // A child under the other workspace's job: its parent does not exist for this token.
    let under_foreign =
        json!({"task_description": "t", "worker_count": 1, "depth": 1, "parent_job_id": job});
    let (status, body) = call(
        &app,
        Method::POST,
        "/api/jobs/submit",
        &confined(),
        Some(under_foreign),
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (422, Some("VALIDATION_FAILED")),
        "{body}"
    );

    // Creating there: 403.
    for (path, body) in [
        ("/api/supervisor/workers", json!({"workspace_id": FOREIGN})),
        (
            "/api/supervisor/workers",
            json!({"id": "w_planted", "workspace_id": FOREIGN}),
        ),
        (
            "/api/jobs/submit",
            json!({"task_description": "t", "worker_count": 1, "workspace_id": FOREIGN}),
        ),
    ] {
        let (status, answer) = call(&app, Method::POST, path, &confined(), Some(body)).await;
        assert_eq!(
            (status, answer["error"]["code"].as_str()),
            (403, Some("FORBIDDEN")),
            "{path}: {answer}"
        );
    }
    assert_eq!(
        snapshot(&app, FOREIGN).await,
        before,
        "the other workspace is untouched"
    );

    // Lists, metrics and events show only the token's own workspace.
    let ids = |list: &Value, key: &str| -> Vec<String> {
        list[key]
            .as_array()
            .unwrap()
            .iter()
            .map(|item| item["id"].as_str().unwrap().to_owned())
            .collect()
    };
    let (_, workers) = call(
        &app,
        Method::GET,
        "/api/supervisor/workers",
        &confined(),
        None,
    )
    .await;
    assert_eq!(
        (ids(&workers, "workers"), workers["total"].as_i64()),
        (vec![own_worker.clone()], Some(1))
    );
    let (_, jobs) = call(&app, Method::GET, "/api/jobs?depth=0", &confined(), None).await;
    assert_eq!(
        (ids(&jobs, "jobs"), jobs["total"].as_i64()),
        (vec![own_job.clone()], Some(1))
    );
    for path in [
        format!("/api/supervisor/workers?workspace_id={FOREIGN}"),
        format!("/api/jobs?workspace_id={FOREIGN}"),
        format!("/api/jobs?parent_job_id={job}"),
    ] {
        let (status, list) = call(&app, Method::GET, &path, &confined(), None).await;
        assert_eq!(
            (status, list["total"].as_i64()),
            (200, Some(0)),
            "{path}: {list}"
        );
    }
    let (_, metrics) = call(
        &app,
        Method::GET,
        "/api/supervisor/metrics",
        &confined(),
        None,
    )
    .await;
    assert_eq!(metrics["total_workers"], 1, "{metrics}");
    assert_eq!(metrics["by_status"]["RUNNING"], 1, "{metrics}");
    let (_, foreign_metrics) = call(
        &app,
        Method::GET,
        &format!("/api/supervisor/metrics?workspace_id={FOREIGN}"),
        &confined(),
        None,
    )
    .await;
    assert_eq!(foreign_metrics["total_workers"], 0, "{foreign_metrics}");
    let (_, events) = call(
        &app,
        Method::GET,
        "/api/events?limit=100",
        &confined(),
        None,
    )
    .await;
    let seen = events["events"].as_array().unwrap();
    assert!(
        seen.iter().all(|event| event["workspace_id"] == OWN),
        "{events}"
    );
    let own_events = app
        .db
        .client()
        .await
        .unwrap()
        .query_one(
            "SELECT count(*) FROM events WHERE workspace_id = $1",
            &[&OWN],
        )
        .await
        .unwrap()
        .get::<_, i64>(0);
    assert_eq!(seen.len() as i64, own_events);

    // The operator sees both.
    let (_, all) = call(
        &app,
        Method::GET,
        "/api/supervisor/workers",
        &operator(),
        None,
    )
    .await;
    assert_eq!(all["total"], 2);
    let (_, foreign) = call(
        &app,
        Method::GET,
        &format!("/api/jobs/{job}"),
        &operator(),
        None,
    )
    .await;
    assert_eq!(foreign["workspace_id"], FOREIGN);
}
