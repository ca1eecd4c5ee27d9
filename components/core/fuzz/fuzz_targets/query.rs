//! Query strings through `Query::parse`, `Page::from_query` and `Query::field` for every parameter the
//! list endpoints read.
//!
//! Invariants: never a panic; a percent escape is decoded only when two hex digits follow the `%`
//! (checked against a byte-level reference decoder); the pairs, re-encoded, parse back to the same
//! pairs; a page is within its bounds or a 422 naming `limit` or `offset`; a parsed field prints to
//! text that parses back to the same value, and a bad one is a 422 naming the parameter.
#![no_main]

use std::fmt::{Debug, Display};
use std::str::FromStr;

use libfuzzer_sys::fuzz_target;
use orchestrator_core::ids::{JobId, WorkspaceId};
use orchestrator_core::job::JobState;
use orchestrator_core::query::{Page, Query};
use orchestrator_core::validation::{Depth, InvalidValue, Limit, NonNegative};
use orchestrator_core::worker::WorkerState;
use orchestrator_core_fuzz::{assert_refusal, form_encode};

/// The reference decoder: `+` is a space, `%XY` with two hex digits is that byte, anything else is
/// itself; then UTF-8 with replacement characters.
fn reference_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut decoded = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let escape = bytes
            .get(i + 1..i + 3)
            .filter(|d| d.iter().all(u8::is_ascii_hexdigit));
        match (bytes[i], escape) {
            (b'%', Some(digits)) => {
                let hex = std::str::from_utf8(digits).expect("ASCII digits");
                decoded.push(u8::from_str_radix(hex, 16).expect("two hex digits"));
                i += 3;
            }
            (b'+', _) => {
                decoded.push(b' ');
                i += 1;
            }
            (byte, _) => {
                decoded.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&decoded).into_owned()
}

fn check_field<T>(query: &Query, name: &str)
where
    T: FromStr<Err = InvalidValue> + Display + PartialEq + Debug,
{
    match query.field::<T>(name) {
        Ok(None) => assert_eq!(query.get(name), None),
        Ok(Some(value)) => {
            assert!(query.get(name).is_some());
            assert_eq!(value.to_string().parse::<T>().as_ref(), Ok(&value));
        }
        Err(error) => {
            assert_refusal(&error, &[422]);
            assert_eq!(error.details()["fields"][0]["field"], name);
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let raw = String::from_utf8_lossy(data);
    let query = Query::parse(&raw);

    let expected: Vec<(String, String)> = raw
        .strip_prefix('?')
        .unwrap_or(&raw)
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            (reference_decode(name), reference_decode(value))
        })
        .collect();
    assert_eq!(query.pairs(), expected.as_slice(), "{raw:?}");

    let encoded = form_encode(query.pairs().iter().map(|(n, v)| (n.as_str(), v.as_str())));
    assert_eq!(Query::parse(&encoded), query, "{encoded:?}");

    match Page::from_query(&query) {
        Ok(page) => {
            assert!((1..=100).contains(&page.limit));
            assert!(page.offset >= 0);
        }
        Err(error) => {
            assert_refusal(&error, &[422]);
            let field = &error.details()["fields"][0]["field"];
            assert!(field == "limit" || field == "offset", "{field}");
        }
    }

    check_field::<WorkerState>(&query, "status");
    check_field::<JobState>(&query, "status");
    check_field::<Depth>(&query, "depth");
    check_field::<JobId>(&query, "parent_job_id");
    check_field::<WorkspaceId>(&query, "workspace_id");
    check_field::<NonNegative>(&query, "after_seq");
    check_field::<Limit>(&query, "limit");
});
