//! What the fuzz targets share: the invariants every refusal must meet, and encoders for re-sending a
//! parsed value in another form.

use orchestrator_core::ApiError;

/// A refusal of client input: one of `statuses` (all 4xx), rendered with the contract's error body
/// (`detail` and `error.{code, message, details}`), and a 422 that names at least one field.
pub fn assert_refusal(error: &ApiError, statuses: &[u16]) {
    let status = error.status();
    assert!(
        statuses.contains(&status),
        "status {status} not in {statuses:?}: {error:?}"
    );
    assert!((400..500).contains(&status));
    let body = error.body();
    assert_eq!(body["error"]["code"], error.code());
    assert_eq!(body["detail"], body["error"]["message"]);
    assert!(!error.message().is_empty());
    if status == 422 && error.code() == "VALIDATION_FAILED" {
        let fields = body["error"]["details"]["fields"]
            .as_array()
            .expect("a 422 lists its fields");
        assert!(!fields.is_empty(), "a 422 names a field: {error:?}");
    }
}

/// `application/x-www-form-urlencoded` of `pairs`, every byte but the unreserved ones escaped, so that
/// decoding gives back exactly the same strings.
pub fn form_encode<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    pairs
        .into_iter()
        .map(|(name, value)| format!("{}={}", percent_encode(name), percent_encode(value)))
        .collect::<Vec<_>>()
        .join("&")
}

fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|byte| {
            if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
                char::from(byte).to_string()
            } else {
                format!("%{byte:02X}")
            }
        })
        .collect()
}
