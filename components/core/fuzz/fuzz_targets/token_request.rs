//! `credentials::TokenRequest::parse` on arbitrary bodies, read both as a form and as JSON.
//!
//! Invariants: never a panic; a refusal is 400, 413, 415 or 422 with the contract's body; and a
//! request that parses in one encoding, re-sent in the other (and in its own), parses to the same
//! client id, secret, scopes and grant type.
#![no_main]

use libfuzzer_sys::fuzz_target;
use orchestrator_core::credentials::{GrantType, RequestedScopes, TokenRequest};
use orchestrator_core::query::Query;
use orchestrator_core_fuzz::{assert_refusal, form_encode};
use serde_json::{Map, Value};

const FORM: &str = "application/x-www-form-urlencoded";
const JSON: &str = "application/json";

/// What a token request says, comparable across encodings.
#[derive(Debug, PartialEq)]
struct Said {
    client_id: String,
    client_secret: String,
    scope: Option<RequestedScopes>,
    grant_type: Option<GrantType>,
}

impl From<TokenRequest> for Said {
    fn from(request: TokenRequest) -> Self {
        Self {
            client_id: request.client_id,
            client_secret: request.client_secret,
            scope: request.scope,
            grant_type: request.grant_type,
        }
    }
}

/// Re-sends a parsed request as a form and as JSON. `scope` is the raw text the client sent for it,
/// since the parsed scopes do not print themselves.
fn resend(said: &Said, scope: Option<&str>) {
    let mut pairs = vec![
        ("client_id", said.client_id.as_str()),
        ("client_secret", said.client_secret.as_str()),
    ];
    pairs.extend(scope.map(|scope| ("scope", scope)));
    pairs.extend(
        said.grant_type
            .map(|_| ("grant_type", "client_credentials")),
    );
    let form = form_encode(pairs.iter().copied());
    let json: Map<String, Value> = pairs
        .iter()
        .map(|(name, value)| ((*name).to_owned(), Value::String((*value).to_owned())))
        .collect();
    let json = serde_json::to_vec(&json).expect("a map serialises");
    for (content_type, body) in [(FORM, form.as_bytes()), (JSON, json.as_slice())] {
        let again = TokenRequest::parse(Some(content_type), body).map(Said::from);
        assert_eq!(
            again.as_ref(),
            Ok(said),
            "{content_type}: {}",
            String::from_utf8_lossy(body)
        );
    }
}

fuzz_target!(|body: &[u8]| {
    match TokenRequest::parse(Some(FORM), body).map(Said::from) {
        Ok(said) => {
            let query = Query::parse(&String::from_utf8_lossy(body));
            resend(&said, query.get("scope"));
        }
        Err(error) => assert_refusal(&error, &[413, 422]),
    }
    match TokenRequest::parse(Some(JSON), body).map(Said::from) {
        Ok(said) => {
            let sent: Value = serde_json::from_slice(body).unwrap_or_default();
            resend(&said, sent.get("scope").and_then(Value::as_str));
        }
        Err(error) => assert_refusal(&error, &[400, 413, 422]),
    }
    if let Err(error) = TokenRequest::parse(Some("text/plain"), body) {
        assert_refusal(&error, &[400, 413, 415, 422]);
    }
});
