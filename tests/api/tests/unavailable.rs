//! Without Postgres, every operation that documents a 503 answers it: the contract's error body,
//! `UNAVAILABLE`, with `Retry-After` — for reads and writes, keyed or not, and for the stream.

use api_tests::{member, repo_root, spawn_app_with, without_postgres};
use reqwest::Method;
use serde_json::{Value, json};

/// A request to `method template` that would succeed with Postgres up: a valid body, so that only
/// the missing database can refuse it.
fn request(method: &str, template: &str) -> (String, Option<Value>) {
    let path = template
        .replace("/workers/{id}", "/workers/w_1")
        .replace("/jobs/{id}", "/jobs/j_1");
    let body = match (method, template) {
        ("GET", _) => None,
        ("POST", "/api/supervisor/workers/{id}/fail") => Some(json!({"reason": "r"})),
        ("POST", "/api/jobs/{id}/fail") => Some(json!({"error": "e"})),
        ("POST", "/api/jobs/submit") => Some(json!({"task_description": "t", "worker_count": 1})),
        ("POST", "/api/resources/allocate") => {
            Some(json!({"job_id": "j_1", "depth": 0, "worker_count": 1}))
        }
        ("POST", "/api/resources/release") => Some(json!({"job_id": "j_1", "depth": 0})),
        ("POST", "/api/auth/token") => Some(
            json!({"grant_type": "client_credentials", "client_id": "c", "client_secret": "s"}),
        ),
        ("POST", "/api/auth/revoke") => Some(json!({"token": member()})),
        ("POST", _) => Some(json!({})),
        _ => panic!("no request known for {method} {template}: add one here"),
    };
    (path, body)
}

/// `(method, path template)` of every operation whose responses list 503.
fn documenting_503() -> Vec<(String, String)> {
    let document: Value = serde_json::from_str(
        &std::fs::read_to_string(repo_root().join("components/platform/openapi.json")).unwrap(),
    )
    .unwrap();
    let mut found = Vec::new();
    for (template, operations) in document["paths"].as_object().unwrap() {
        for (method, operation) in operations.as_object().unwrap() {
            if operation["responses"].get("503").is_some() {
                found.push((method.to_ascii_uppercase(), template.clone()));
            }
        }
    }
    found
}

#[tokio::test]
async fn without_postgres_every_operation_that_documents_a_503_answers_it() {
    let app = spawn_app_with(without_postgres).await;
    let operations = documenting_503();
    assert!(operations.len() > 25, "{operations:?}");
    for (method, template) in operations {
        let (path, body) = request(&method, &template);
        // Keyed and not: a keyed write takes its Redis lock first, then meets the missing database.
        let keys: &[Option<&str>] = if method == "POST" {
            &[Some("k-1"), None]
        } else {
            &[None]
        };
        for key in keys {
            let mut request =
                app.request(method.parse::<Method>().unwrap(), &path, Some(&member()));
            if let Some(body) = &body {
                request = request.json(body);
            }
            if let Some(key) = key {
                request = request.header("idempotency-key", format!("{key}-{template}"));
            }
            let response = request.send().await.expect("an answer");
            let status = response.status().as_u16();
            let retry_after = response.headers().contains_key("retry-after");
            let answer: Value = response.json().await.unwrap_or(Value::Null);
            if template == "/api/auth/revoke" {
                // Revocations live in Redis alone: without Postgres the endpoint still works.
                assert_eq!(status, 200, "{method} {path}: {answer}");
                continue;
            }
            assert_eq!(status, 503, "{method} {path} (key {key:?}): {answer}");
            assert!(retry_after, "{method} {path}: no Retry-After");
            assert_eq!(
                answer["error"]["code"], "UNAVAILABLE",
                "{method} {path}: {answer}"
            );
        }
    }
}
