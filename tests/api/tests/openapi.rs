//! The OpenAPI document against the code: every route a component serves is
//! documented and every documented operation is served, and each operation
//! documents its scope, its errors and the contract's headers.

use std::collections::BTreeSet;

use api_tests::{TestApp, WORKSPACE, assert_error, lacking, parts, repo_root, spawn_app, token};
use orchestrator_core::auth::Scope;
use reqwest::Method;
use serde_json::{Value, json};

const METHODS: [&str; 5] = ["GET", "POST", "PUT", "PATCH", "DELETE"];

/// Contract §6, endpoint by endpoint, and §2's revocation endpoint, with the scope the tables give
/// (none: the platform's, which need no bearer token). Written out by hand from the contract, which is a document and not a file the
/// tests can read; a change to the contract's tables must be copied here.
const CONTRACT: [(&str, &str, Option<&str>); 31] = [
    ("GET", "/api/supervisor/workers", Some("supervisor:read")),
    (
        "GET",
        "/api/supervisor/workers/{id}",
        Some("supervisor:read"),
    ),
    (
        "POST",
        "/api/supervisor/workers/{id}/pause",
        Some("supervisor:write"),
    ),
    (
        "POST",
        "/api/supervisor/workers/{id}/resume",
        Some("supervisor:write"),
    ),
    (
        "POST",
        "/api/supervisor/workers/{id}/terminate",
        Some("supervisor:write"),
    ),
    ("GET", "/api/supervisor/metrics", Some("supervisor:read")),
    ("POST", "/api/supervisor/workers", Some("supervisor:write")),
    (
        "POST",
        "/api/supervisor/workers/{id}/start",
        Some("supervisor:write"),
    ),
    (
        "POST",
        "/api/supervisor/workers/{id}/complete",
        Some("supervisor:write"),
    ),
    (
        "POST",
        "/api/supervisor/workers/{id}/fail",
        Some("supervisor:write"),
    ),
    (
        "POST",
        "/api/supervisor/workers/{id}/heartbeat",
        Some("supervisor:write"),
    ),
    (
        "GET",
        "/api/supervisor/workers/{id}/transitions",
        Some("supervisor:read"),
    ),
    ("GET", "/api/events", Some("supervisor:read")),
    ("GET", "/api/events/stream", Some("supervisor:read")),
    ("GET", "/api/resources/quotas", Some("resources:read")),
    ("POST", "/api/resources/allocate", Some("resources:write")),
    ("POST", "/api/resources/release", Some("resources:write")),
    ("GET", "/api/resources/usage", Some("resources:read")),
    ("POST", "/api/jobs/submit", Some("jobs:write")),
    ("GET", "/api/jobs/{id}", Some("jobs:read")),
    ("GET", "/api/jobs", Some("jobs:read")),
    ("POST", "/api/jobs/{id}/cancel", Some("jobs:write")),
    ("POST", "/api/jobs/{id}/complete", Some("jobs:write")),
    ("POST", "/api/jobs/{id}/fail", Some("jobs:write")),
    ("GET", "/api/jobs/{id}/transitions", Some("jobs:read")),
    ("GET", "/api/jobs/{id}/children", Some("jobs:read")),
    ("GET", "/api/health", None),
    ("GET", "/api/openapi.json", None),
    ("POST", "/api/auth/token", None),
    ("POST", "/api/auth/revoke", None),
    // Issue 12's operator dashboard.
    ("GET", "/", None),
];

type Routes = BTreeSet<(String, String)>;

fn document_text() -> String {
    std::fs::read_to_string(repo_root().join("components/platform/openapi.json"))
        .expect("components/platform/openapi.json")
}

fn document() -> Value {
    serde_json::from_str(&document_text()).expect("the document is JSON")
}

/// `{id}`, `{job_id}`, … all read `{}`, so only the shape of a path counts.
fn shape(path: &str) -> String {
    path.split('/')
        .map(|segment| {
            if segment.starts_with('{') && segment.ends_with('}') {
                "{}"
            } else {
                segment
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// The components `spin.toml` serves: its `[component.NAME]` tables.
fn components() -> Vec<String> {
    let manifest = std::fs::read_to_string(repo_root().join("spin.toml")).expect("spin.toml");
    manifest
        .lines()
        .filter_map(|line| line.trim().strip_prefix("[component.")?.strip_suffix(']'))
        .filter(|name| !name.contains('.'))
        .map(str::to_owned)
        .collect()
}

/// The `(method, pattern)` entries of a component's route table, read from
/// its `src/lib.rs`: without whitespace each entry reads `("METHOD","/path",`
/// however rustfmt wrapped it.
fn served_routes(component: &str) -> Routes {
    let path = repo_root().join(format!("components/{component}/src/lib.rs"));
    let source = std::fs::read_to_string(&path).expect("the component's lib.rs");
    let compact: String = source.chars().filter(|c| !c.is_whitespace()).collect();
    let mut routes = Routes::new();
    for method in METHODS {
        let opening = format!("(\"{method}\",\"");
        for (at, _) in compact.match_indices(&opening) {
            let start = at + opening.len();
            let end = compact[start..]
                .find('"')
                .map_or(compact.len(), |n| start + n);
            routes.insert((method.to_owned(), shape(&compact[start..end])));
        }
    }
    routes
}

/// Every operation of the document: `(METHOD, path as written, operation)`.
fn operations(document: &Value) -> Vec<(String, String, &Value)> {
    let mut operations = Vec::new();
    for (path, item) in document["paths"].as_object().expect("paths") {
        for (key, operation) in item.as_object().expect("a path item") {
            let method = key.to_ascii_uppercase();
            if METHODS.contains(&method.as_str()) {
                operations.push((method, path.clone(), operation));
            }
        }
    }
    operations
}

fn documented_routes(document: &Value) -> Routes {
    operations(document)
        .into_iter()
        .map(|(method, path, _)| (method, shape(&path)))
        .collect()
}

#[test]
fn every_served_route_is_documented_and_every_documented_route_is_served() {
    let mut served = Routes::new();
    for component in components() {
        let routes = served_routes(&component);
        assert!(
            !routes.is_empty(),
            "no routes found in components/{component}/src/lib.rs"
        );
        served.extend(routes);
    }
    let documented = documented_routes(&document());
    let undocumented: Vec<_> = served.difference(&documented).collect();
    let unserved: Vec<_> = documented.difference(&served).collect();
    assert!(
        undocumented.is_empty() && unserved.is_empty(),
        "served but not in the OpenAPI document: {undocumented:?}\n\
         in the OpenAPI document but served by no component: {unserved:?}"
    );
}

/// Every operation of the document as `(METHOD, path shape, x-required-scope)`.
fn documented_scopes(document: &Value) -> BTreeSet<(String, String, Option<String>)> {
    operations(document)
        .into_iter()
        .map(|(method, path, operation)| {
            let scope = operation["x-required-scope"].as_str().map(str::to_owned);
            (method, shape(&path), scope)
        })
        .collect()
}

#[test]
fn the_document_lists_exactly_the_endpoints_and_scopes_written_out_from_the_contract() {
    let contract: BTreeSet<_> = CONTRACT
        .iter()
        .map(|(method, path, scope)| {
            let scope = scope.map(str::to_owned);
            ((*method).to_owned(), shape(path), scope)
        })
        .collect();
    let documented = documented_scopes(&document());
    let missing: Vec<_> = contract.difference(&documented).collect();
    let extra: Vec<_> = documented.difference(&contract).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "in the contract but not so in the document: {missing:?}\n\
         in the document but not so in the contract: {extra:?}"
    );
}

/// A request to `method shape` (a path [`shape`]) that succeeds, against objects made for it alone
/// (so that no state a previous operation left can refuse it): its path, body and success status.
async fn succeeding_request(
    app: &TestApp,
    method: &str,
    shape: &str,
    n: usize,
) -> (String, Option<Value>, u16) {
    let worker = format!("w_scope_{n}");
    let worker_in = async |actions: &[&str]| {
        app.register_worker(&worker, WORKSPACE).await;
        for action in actions {
            app.move_worker(&worker, action, Some("setup")).await;
        }
    };
    let running_job = async || {
        let job = app.submit_at(0, None).await;
        assert_eq!(app.granted(&job, 0, 1).await, 1);
        job
    };
    let with_id = |id: &str| shape.replace("{}", id);
    let action = shape.rsplit('/').next().unwrap_or_default();
    match (method, shape) {
        ("GET", "/api/supervisor/workers/{}" | "/api/supervisor/workers/{}/transitions") => {
            worker_in(&[]).await;
            (with_id(&worker), None, 200)
        }
        ("POST", "/api/supervisor/workers") => {
            let body = json!({"id": worker, "workspace_id": WORKSPACE});
            (shape.to_owned(), Some(body), 201)
        }
        ("POST", path) if path.starts_with("/api/supervisor/workers/{}/") => {
            let setup: &[&str] = match action {
                "pause" | "complete" | "fail" => &["start"],
                "resume" => &["start", "pause"],
                _ => &[],
            };
            worker_in(setup).await;
            let body = (action == "fail").then(|| json!({"reason": "scope check"}));
            (with_id(&worker), body, 200)
        }
        ("POST", "/api/resources/allocate") => {
            let job = app.submit_at(0, None).await;
            let body = json!({"job_id": job, "depth": 0, "worker_count": 1});
            (shape.to_owned(), Some(body), 201)
        }
        ("POST", "/api/resources/release") => {
            let job = running_job().await;
            (
                shape.to_owned(),
                Some(json!({"job_id": job, "depth": 0})),
                200,
            )
        }
        ("POST", "/api/jobs/submit") => {
            let body = json!({"task_description": "scope check", "worker_count": 1,
                              "workspace_id": WORKSPACE});
            (shape.to_owned(), Some(body), 201)
        }
        ("POST", "/api/jobs/{}/cancel") => {
            let job = app.submit_at(0, None).await;
            (with_id(&job), None, 200)
        }
        ("POST", "/api/jobs/{}/complete" | "/api/jobs/{}/fail") => {
            let job = running_job().await;
            let body = (action == "fail").then(|| json!({"error": "scope check"}));
            (with_id(&job), body, 200)
        }
        ("GET", path) if path.starts_with("/api/jobs/{}") => {
            let job = app.submit_at(0, None).await;
            (with_id(&job), None, 200)
        }
        ("GET", path) if !path.contains('{') => (path.to_owned(), None, 200),
        _ => panic!("no succeeding request known for {method} {shape}: add one here"),
    }
}

/// Contract §2: each operation needs its scope and nothing more. A token with exactly the documented
/// scope is served; one with every other scope is forbidden. Operator tokens, so that no workspace
/// confinement is in play.
#[tokio::test]
async fn every_operation_is_served_with_exactly_its_scope_and_forbidden_without_it() {
    let app = spawn_app().await;
    let document = document();
    let secured = operations(&document)
        .into_iter()
        .filter_map(|(method, path, operation)| {
            let scope = operation["x-required-scope"].as_str()?;
            let scope = *Scope::ALL.iter().find(|known| known.as_str() == scope)?;
            Some((method, path, scope))
        });
    let mut checked = 0;
    for (n, (method, template, scope)) in secured.enumerate() {
        let (path, body, success) = succeeding_request(&app, &method, &shape(&template), n).await;
        let method: Method = method.parse().unwrap();
        let send = async |bearer: &str| {
            let request = app.request(method.clone(), &path, Some(bearer));
            match &body {
                Some(body) => request.json(body),
                None => request,
            }
            .send()
            .await
            .expect("an answer")
        };
        // Refused first, so that the success below also shows the refusal changed nothing.
        assert_error(send(&lacking(scope)).await, 403, "FORBIDDEN").await;
        let response = send(&token(&[scope], None)).await;
        // The event stream's body is not JSON and would last its lifetime: its status is enough.
        let (status, answer) = if response.headers()["content-type"] == "text/event-stream" {
            (response.status().as_u16(), Value::Null)
        } else {
            parts(response).await
        };
        assert_eq!(
            status,
            success,
            "{method} {path} with only {}: {answer}",
            scope.as_str()
        );
        checked += 1;
    }
    assert_eq!(
        checked,
        CONTRACT.iter().filter(|(.., s)| s.is_some()).count()
    );
}

#[tokio::test]
async fn the_document_is_served_verbatim_as_openapi_3_1() {
    let app = spawn_app().await;
    let response = app
        .request(Method::GET, "/api/openapi.json", None)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"].to_str().unwrap();
    assert!(
        content_type.starts_with("application/json"),
        "{content_type}"
    );
    assert!(response.headers().contains_key("x-request-id"));
    let served = response.text().await.unwrap();
    assert_eq!(served, document_text());
    let document: Value = serde_json::from_str(&served).unwrap();
    assert!(
        document["openapi"]
            .as_str()
            .is_some_and(|v| v.starts_with("3.1.")),
        "{}",
        document["openapi"]
    );
    assert!(document["info"]["title"].is_string());
    assert!(document["info"]["version"].is_string());
}

/// Every `$ref` in `value`.
fn references(value: &Value, found: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (key, item) in map {
                match (key.as_str(), item) {
                    ("$ref", Value::String(target)) => found.push(target.clone()),
                    _ => references(item, found),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|item| references(item, found)),
        _ => {}
    }
}

/// `value`, or what its `$ref` points to.
fn resolve<'a>(document: &'a Value, value: &'a Value) -> &'a Value {
    match value["$ref"].as_str() {
        Some(target) => target
            .strip_prefix('#')
            .and_then(|pointer| document.pointer(pointer))
            .unwrap_or_else(|| panic!("unresolved {target}")),
        None => value,
    }
}

#[test]
fn every_reference_resolves_and_every_operation_id_is_unique() {
    let document = document();
    let mut found = Vec::new();
    references(&document, &mut found);
    assert!(!found.is_empty());
    for target in found {
        let resolves = target
            .strip_prefix('#')
            .and_then(|pointer| document.pointer(pointer))
            .is_some();
        assert!(resolves, "unresolved $ref {target}");
    }
    let mut ids = BTreeSet::new();
    for (method, path, operation) in operations(&document) {
        let id = operation["operationId"].as_str().expect("an operationId");
        assert!(ids.insert(id.to_owned()), "{method} {path}: duplicate {id}");
    }
}

#[test]
fn the_security_schemes_name_the_token_endpoint_and_every_scope() {
    let document = document();
    let schemes = &document["components"]["securitySchemes"];
    assert_eq!(schemes["bearer"]["scheme"], "bearer");
    let flow = &schemes["oauth2"]["flows"]["clientCredentials"];
    assert_eq!(flow["tokenUrl"], "/api/auth/token");
    let scopes: BTreeSet<&str> = flow["scopes"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    let known: BTreeSet<&str> = Scope::ALL.iter().map(|s| s.as_str()).collect();
    assert_eq!(scopes, known);
}

/// The statuses an operation documents.
fn statuses(operation: &Value) -> BTreeSet<&str> {
    operation["responses"]
        .as_object()
        .expect("responses")
        .keys()
        .map(String::as_str)
        .collect()
}

/// The names of an operation's parameters, `$ref`s resolved.
fn parameter_names<'a>(document: &'a Value, operation: &'a Value) -> BTreeSet<&'a str> {
    operation["parameters"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .filter_map(|parameter| resolve(document, parameter)["name"].as_str())
        .collect()
}

fn assert_documents(operation: &str, statuses: &BTreeSet<&str>, required: &[&str]) {
    let missing: Vec<_> = required.iter().filter(|s| !statuses.contains(*s)).collect();
    assert!(
        missing.is_empty(),
        "{operation} does not document {missing:?}"
    );
}

#[test]
fn every_operation_documents_its_scope_errors_and_headers() {
    let document = document();
    let known: BTreeSet<&str> = Scope::ALL.iter().map(|s| s.as_str()).collect();
    for (method, path, operation) in operations(&document) {
        let name = format!("{method} {path}");
        let statuses = statuses(operation);
        let parameters = parameter_names(&document, operation);
        assert!(parameters.contains("X-Request-Id"), "{name}");
        let security = operation["security"]
            .as_array()
            .unwrap_or_else(|| panic!("{name} states no security"));
        if path == "/"
            || path.starts_with("/api/health")
            || path.starts_with("/api/openapi.json")
            || path.starts_with("/api/auth/")
        {
            assert!(security.is_empty(), "{name} needs no bearer token");
        } else {
            let scope = operation["x-required-scope"]
                .as_str()
                .unwrap_or_else(|| panic!("{name} has no x-required-scope"));
            assert!(known.contains(scope), "{name}: {scope}");
            for requirement in security {
                for (_, scopes) in requirement.as_object().unwrap() {
                    assert_eq!(scopes, &serde_json::json!([scope]), "{name}");
                }
            }
            assert_documents(&name, &statuses, &["401", "403", "500", "503"]);
        }
        if path.contains('{') {
            assert_documents(&name, &statuses, &["404"]);
        }
        if !operation["requestBody"].is_null() {
            assert_documents(&name, &statuses, &["400", "413", "415", "422"]);
        }
        if method == "POST" && !security.is_empty() {
            assert!(parameters.contains("Idempotency-Key"), "{name}");
            assert_documents(&name, &statuses, &["409", "422"]);
        }
        if parameters.contains("If-Match") {
            assert_documents(&name, &statuses, &["412"]);
        }
        for (status, response) in operation["responses"].as_object().unwrap() {
            let response = resolve(&document, response);
            assert!(
                !response["headers"]["X-Request-Id"].is_null(),
                "{name} {status}: no X-Request-Id header"
            );
            if status.starts_with('4') || status.starts_with('5') {
                let schema = &response["content"]["application/json"]["schema"];
                let schema = resolve(&document, schema);
                let is_error = schema == &document["components"]["schemas"]["Error"]
                    || schema["allOf"][0]["$ref"] == "#/components/schemas/Error";
                assert!(is_error, "{name} {status}: body is not the Error schema");
            }
        }
    }
}
