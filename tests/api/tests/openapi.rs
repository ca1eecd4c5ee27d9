//! The OpenAPI document against the code: every route a component serves is
//! documented and every documented operation is served, and each operation
//! documents its scope, its errors and the contract's headers.

use std::collections::BTreeSet;

use api_tests::{repo_root, spawn_app};
use orchestrator_core::auth::Scope;
use reqwest::Method;
use serde_json::Value;

const METHODS: [&str; 5] = ["GET", "POST", "PUT", "PATCH", "DELETE"];

/// Contract §6, endpoint by endpoint.
const CONTRACT: [(&str, &str); 28] = [
    ("GET", "/api/supervisor/workers"),
    ("GET", "/api/supervisor/workers/{id}"),
    ("POST", "/api/supervisor/workers/{id}/pause"),
    ("POST", "/api/supervisor/workers/{id}/resume"),
    ("POST", "/api/supervisor/workers/{id}/terminate"),
    ("GET", "/api/supervisor/metrics"),
    ("POST", "/api/supervisor/workers"),
    ("POST", "/api/supervisor/workers/{id}/start"),
    ("POST", "/api/supervisor/workers/{id}/complete"),
    ("POST", "/api/supervisor/workers/{id}/fail"),
    ("POST", "/api/supervisor/workers/{id}/heartbeat"),
    ("GET", "/api/supervisor/workers/{id}/transitions"),
    ("GET", "/api/events"),
    ("GET", "/api/resources/quotas"),
    ("POST", "/api/resources/allocate"),
    ("POST", "/api/resources/release"),
    ("GET", "/api/resources/usage"),
    ("POST", "/api/jobs/submit"),
    ("GET", "/api/jobs/{id}"),
    ("GET", "/api/jobs"),
    ("POST", "/api/jobs/{id}/cancel"),
    ("POST", "/api/jobs/{id}/complete"),
    ("POST", "/api/jobs/{id}/fail"),
    ("GET", "/api/jobs/{id}/transitions"),
    ("GET", "/api/jobs/{id}/children"),
    ("GET", "/api/health"),
    ("GET", "/api/openapi.json"),
    ("POST", "/api/auth/token"),
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

#[test]
fn the_document_lists_every_endpoint_of_the_contract() {
    let contract: Routes = CONTRACT
        .iter()
        .map(|(method, path)| ((*method).to_owned(), shape(path)))
        .collect();
    assert_eq!(documented_routes(&document()), contract);
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
        if path.starts_with("/api/health")
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
