//! Token revocation through the host (contract §2): `POST /api/auth/revoke` (RFC 7009) refuses a
//! token on every endpoint from the next request on, whether the client's credentials or the token
//! itself authenticate the revocation; retiring a service account (`scripts/service-account --disable`
//! or `--delete`) refuses every token it was issued until then; and without Redis tokens are checked
//! for their signature and claims only while revoking is 503.

use api_tests::{
    REDIS, TestApp, assert_error, member, parts, sign, spawn_app, spawn_app_on, token, token_for,
    without_redis,
};
use orchestrator_core::auth::{Claims, Scope};
use orchestrator_core::ids::WorkspaceId;
use reqwest::{Method, Response};
use serde_json::{Value, json};
use service_account::{Account, Retirement, Revocations, retire, upsert};

const REVOKE: &str = "/api/auth/revoke";

/// One read per component that needs a bearer token, and a write.
const READS: [&str; 5] = [
    "/api/supervisor/workers",
    "/api/events?after_seq=0",
    "/api/resources/usage",
    "/api/jobs",
    "/api/supervisor/metrics",
];

/// Creates `client_id` with every scope, as `scripts/service-account` would, and returns its secret.
async fn create_account(app: &TestApp, client_id: &str) -> String {
    let account = Account::new(
        client_id,
        Scope::ALL.into_iter().collect(),
        None::<WorkspaceId>,
    )
    .expect("account");
    upsert(&app.db.client().await.expect("db"), &account)
        .await
        .expect("upsert")
}

/// A token from the token endpoint for `client_id`.
async fn sign_in(app: &TestApp, client_id: &str, secret: &str) -> String {
    let body = json!({"client_id": client_id, "client_secret": secret});
    let response = app
        .request(Method::POST, "/api/auth/token", None)
        .json(&body);
    let (status, body) = parts(response.send().await.expect("request")).await;
    assert_eq!(status, 200, "{body}");
    body["access_token"].as_str().expect("a token").to_owned()
}

/// POSTs a revocation as a form, as RFC 7009 clients send it.
async fn revoke(app: &TestApp, form: &str) -> Response {
    app.post_raw(REVOKE, None, "application/x-www-form-urlencoded", form)
        .await
}

/// Revokes `token` by itself; asserts the answer.
async fn assert_revokes(app: &TestApp, token: &str) {
    assert_revoked_answer(revoke(app, &format!("token={token}")).await).await;
}

/// Asserts the revocation answer: 200 `{}`, not to be cached.
async fn assert_revoked_answer(response: Response) {
    assert_eq!(response.headers()["cache-control"], "no-store");
    let (status, body) = parts(response).await;
    assert_eq!((status, body), (200, json!({})));
}

/// Asserts `token` works on every read, or is 401 `token revoked` on every read and on a write.
async fn assert_accepted(app: &TestApp, token: &str, accepted: bool) {
    for path in READS {
        let response = app.get(path, token).await;
        if accepted {
            assert_eq!(response.status(), 200, "{path}");
        } else {
            assert_refused(response).await;
        }
    }
    if !accepted {
        let body = json!({"task_description": "t", "worker_count": 1});
        assert_refused(app.post("/api/jobs/submit", token, body).await).await;
        assert_eq!(app.select_int("SELECT count(*) FROM jobs").await, 0);
    }
}

async fn assert_refused(response: Response) {
    assert_eq!(
        response.headers()["www-authenticate"],
        r#"Bearer error="invalid_token""#
    );
    let body = assert_error(response, 401, "UNAUTHENTICATED").await;
    assert_eq!(body["detail"], "token revoked", "{body}");
}

fn payload(token: &str) -> Value {
    use base64::Engine;
    let encoded = token.split('.').nth(1).expect("a payload");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(encoded)
        .expect("base64url");
    serde_json::from_slice(&bytes).expect("JSON claims")
}

#[tokio::test]
async fn a_token_revoked_by_itself_is_refused_everywhere_and_its_siblings_are_not() {
    let app = spawn_app().await;
    let secret = create_account(&app, "ci-bot").await;
    let leaked = sign_in(&app, "ci-bot", &secret).await;
    let sibling = sign_in(&app, "ci-bot", &secret).await;
    let (leaked_jti, sibling_jti) = (
        payload(&leaked)["jti"].clone(),
        payload(&sibling)["jti"].clone(),
    );
    assert!(
        leaked_jti.as_str().is_some_and(|jti| jti.len() == 32),
        "{leaked_jti}"
    );
    assert_ne!(leaked_jti, sibling_jti);
    assert_accepted(&app, &leaked, true).await;

    assert_revoked_answer(
        revoke(
            &app,
            &format!("token={leaked}&token_type_hint=access_token"),
        )
        .await,
    )
    .await;
    assert_accepted(&app, &leaked, false).await;
    assert_accepted(&app, &sibling, true).await;
    // Revoking again changes nothing and answers the same.
    assert_revokes(&app, &leaked).await;
}

#[tokio::test]
async fn a_client_revokes_its_own_tokens_only_and_with_the_right_secret() {
    let app = spawn_app().await;
    let secret = create_account(&app, "ci-bot").await;
    let other_secret = create_account(&app, "other-bot").await;
    let own = sign_in(&app, "ci-bot", &secret).await;

    let wrong = revoke(
        &app,
        &format!("token={own}&client_id=ci-bot&client_secret=nope"),
    )
    .await;
    assert_error(wrong, 401, "UNAUTHENTICATED").await;
    let foreign = format!("token={own}&client_id=other-bot&client_secret={other_secret}");
    assert_error(revoke(&app, &foreign).await, 403, "FORBIDDEN").await;
    assert_accepted(&app, &own, true).await;

    // JSON works like the form.
    let body = json!({"token": own, "client_id": "ci-bot", "client_secret": secret});
    let response = app.request(Method::POST, REVOKE, None).json(&body);
    assert_revoked_answer(response.send().await.expect("request")).await;
    assert_accepted(&app, &own, false).await;
}

#[tokio::test]
async fn tokens_without_a_jti_are_revoked_by_their_digest() {
    let app = spawn_app().await;
    let minted_elsewhere = member();
    assert!(payload(&minted_elsewhere).get("jti").is_none());
    assert_revokes(&app, &minted_elsewhere).await;
    assert_accepted(&app, &minted_elsewhere, false).await;
    // Other claims make another token.
    assert_accepted(&app, &token(&Scope::ALL, None), true).await;
}

#[tokio::test]
async fn tokens_that_do_not_verify_revoke_nothing_and_still_get_200() {
    let app = spawn_app().await;
    let secret = create_account(&app, "ci-bot").await;
    let victim = sign_in(&app, "ci-bot", &secret).await;
    // A forgery naming the victim's `jti`: accepting it would let anyone revoke anyone's token.
    let claims = payload(&victim);
    let named = sign(Claims {
        sub: "mallory".into(),
        exp: claims["exp"].as_i64().unwrap(),
        jti: claims["jti"].as_str().map(str::to_owned),
        ..Claims::default()
    });
    let (head, _) = named.rsplit_once('.').unwrap();
    let badly_signed = format!("{head}.{}", "A".repeat(43));
    for unknown in [badly_signed.as_str(), "not-a-token"] {
        assert_revokes(&app, unknown).await;
    }
    assert_accepted(&app, &victim, true).await;
}

#[tokio::test]
async fn malformed_revocations_are_refused_with_the_contracts_errors() {
    let app = spawn_app().await;
    for (form, field) in [
        ("", "token"),
        ("token=", "token"),
        ("token=t&client_id=ci-bot", "client_secret"),
        ("token=t&reason=leaked", "reason"),
        ("token=a&token=b", "token"),
    ] {
        let body = assert_error(revoke(&app, form).await, 422, "VALIDATION_FAILED").await;
        assert_eq!(
            body["error"]["details"]["fields"][0]["field"], field,
            "{form}: {body}"
        );
    }
    let response = app.post_raw(REVOKE, None, "text/plain", "token=t").await;
    assert_error(response, 415, "UNSUPPORTED_MEDIA_TYPE").await;
    let response = app.post_raw(REVOKE, None, "application/json", "{").await;
    assert_error(response, 400, "BAD_REQUEST").await;
    let response = app.send_anonymous(Method::GET, REVOKE).await;
    assert_error(response, 405, "METHOD_NOT_ALLOWED").await;
}

#[tokio::test]
async fn retiring_an_account_revokes_every_token_issued_to_it_until_then() {
    for retirement in [Retirement::Disable, Retirement::Delete] {
        let app = spawn_app().await;
        let secret = create_account(&app, "ci-bot").await;
        let held = [
            sign_in(&app, "ci-bot", &secret).await,
            sign_in(&app, "ci-bot", &secret).await,
        ];
        let bystander = token_for("someone-else", &Scope::ALL, None);
        let mut db = app.db.client().await.expect("db");
        let mut revocations = Revocations::connect(REDIS, &app.db.url)
            .await
            .expect("redis");
        assert!(
            retire(&mut db, &mut revocations, "ci-bot", retirement)
                .await
                .unwrap()
        );
        for token in &held {
            assert_accepted(&app, token, false).await;
        }
        assert_accepted(&app, &bystander, true).await;
        let body = json!({"client_id": "ci-bot", "client_secret": secret});
        let response = app
            .request(Method::POST, "/api/auth/token", None)
            .json(&body);
        assert_error(response.send().await.unwrap(), 401, "UNAUTHENTICATED").await;
        // A second retirement finds no account to retire only once it is deleted.
        let again = retire(&mut db, &mut revocations, "ci-bot", retirement)
            .await
            .unwrap();
        assert_eq!(again, retirement == Retirement::Disable, "{retirement:?}");
    }
}

#[tokio::test]
async fn an_account_enabled_again_gets_tokens_that_work() {
    let app = spawn_app().await;
    create_account(&app, "ci-bot").await;
    let mut db = app.db.client().await.expect("db");
    let mut revocations = Revocations::connect(REDIS, &app.db.url)
        .await
        .expect("redis");
    assert!(
        retire(&mut db, &mut revocations, "ci-bot", Retirement::Disable)
            .await
            .unwrap()
    );
    // Tokens issued in the second of the retirement count as issued before it.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let secret = create_account(&app, "ci-bot").await;
    assert_accepted(&app, &sign_in(&app, "ci-bot", &secret).await, true).await;
}

#[tokio::test]
async fn without_redis_tokens_are_checked_without_revocations_and_revoking_is_503() {
    let app = spawn_app().await;
    let revoked = member();
    assert_revokes(&app, &revoked).await;
    assert_accepted(&app, &revoked, false).await;

    let cut_off = spawn_app_on(&app.db, without_redis).await;
    // Documented: reads go on through a Redis outage, and so does a revoked token, until it expires.
    assert_accepted(&cut_off, &revoked, true).await;
    let expired = sign(Claims {
        sub: "tester".into(),
        exp: 1,
        scopes: vec!["jobs:read".into()],
        ..Claims::default()
    });
    assert_error(
        cut_off.get("/api/jobs", &expired).await,
        401,
        "UNAUTHENTICATED",
    )
    .await;
    let response = revoke(&cut_off, &format!("token={}", member())).await;
    assert_eq!(response.headers()["retry-after"], "1");
    assert_error(response, 503, "UNAVAILABLE").await;
}
