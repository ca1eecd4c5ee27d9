//! Request bodies: from bytes to a typed request, with the contract's statuses for each way it can fail.
//!
//! Request types are plain serde structs with `#[serde(deny_unknown_fields)]` whose fields are this
//! crate's validated types (`Depth`, `TaskDescription`, `JobId`, …). Then one call gives either a value
//! that is valid throughout, or the right error: 413 too large, 415 not JSON, 400 not parseable, 422 with
//! the offending field's path (`metadata`, `depth`, `tags[2]`).

use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::error::ApiError;
use crate::query::Query;

/// Largest request body accepted (contract §1).
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// Field name used for a problem with the body as a whole (e.g. an array where an object belongs).
pub const WHOLE_BODY: &str = "body";

/// Decodes a JSON request body.
///
/// An empty body reads as `{}`, so endpoints whose body is optional accept both, and endpoints with
/// required fields answer 422 naming the first missing one. A missing `Content-Type` is tolerated (many
/// clients omit it); a present one must be JSON.
pub fn parse_json<T: DeserializeOwned>(
    content_type: Option<&str>,
    body: &[u8],
) -> Result<T, ApiError> {
    if body.len() > MAX_BODY_BYTES {
        return Err(ApiError::PayloadTooLarge);
    }
    let value = if body.iter().all(u8::is_ascii_whitespace) {
        Value::Object(Map::new())
    } else {
        if content_type.is_some_and(|ct| !is_json(ct)) {
            return Err(ApiError::UnsupportedMediaType);
        }
        serde_json::from_slice(body)
            .map_err(|e| ApiError::BadRequest(format!("request body is not valid JSON: {e}")))?
    };
    decode(value)
}

/// Decodes an `application/x-www-form-urlencoded` body (OAuth2's token requests) into the same request
/// types as JSON: every value arrives as a string, and a name given twice is a 422 (RFC 6749 §3.2), since
/// picking one of the values would be a guess.
pub fn parse_form<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    if body.len() > MAX_BODY_BYTES {
        return Err(ApiError::PayloadTooLarge);
    }
    let query = Query::parse(&String::from_utf8_lossy(body));
    let mut fields = Map::new();
    for (name, value) in query.pairs() {
        if fields
            .insert(name.clone(), Value::String(value.clone()))
            .is_some()
        {
            return Err(ApiError::invalid(name.clone(), "must not be repeated"));
        }
    }
    decode(Value::Object(fields))
}

/// A parsed body into its request type; the 422 names the field at fault.
///
/// Two checks come before the request type sees the value. The body must be an object: serde would
/// otherwise read a struct from an array of its field values (`[{"ok": true}]` as `{"result": …}`).
/// And no string or key may hold U+0000, which Postgres can store neither in `text` nor in `jsonb`.
fn decode<T: DeserializeOwned>(value: Value) -> Result<T, ApiError> {
    if !value.is_object() {
        return Err(ApiError::invalid(WHOLE_BODY, "must be a JSON object"));
    }
    if let Some(field) = nul_at(&value, "") {
        let field = if field.is_empty() { WHOLE_BODY } else { &field };
        return Err(ApiError::invalid(
            field,
            "must not contain the character U+0000",
        ));
    }
    serde_path_to_error::deserialize(value).map_err(|e| {
        let field = field_name(&e.path().to_string(), &e.inner().to_string());
        ApiError::invalid(field, e.inner().to_string())
    })
}

/// Where in `value` (found at `path`) a string or an object key holds U+0000: the path of the string,
/// or of the object whose key it is (the key itself is not repeated back). Depth is bounded by the JSON
/// parser's recursion limit.
fn nul_at(value: &Value, path: &str) -> Option<String> {
    match value {
        Value::String(text) => text.contains('\0').then(|| path.to_owned()),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .find_map(|(i, item)| nul_at(item, &format!("{path}[{i}]"))),
        Value::Object(fields) => fields.iter().find_map(|(key, item)| {
            if key.contains('\0') {
                return Some(path.to_owned());
            }
            let at = if path.is_empty() {
                key.clone()
            } else {
                format!("{path}.{key}")
            };
            nul_at(item, &at)
        }),
        Value::Null | Value::Bool(_) | Value::Number(_) => None,
    }
}

/// A form-encoded body when the content type says so (OAuth2's endpoints), JSON otherwise (with
/// [`parse_json`]'s statuses).
pub fn parse_form_or_json<T: DeserializeOwned>(
    content_type: Option<&str>,
    body: &[u8],
) -> Result<T, ApiError> {
    if content_type.is_some_and(is_form) {
        parse_form(body)
    } else {
        parse_json(content_type, body)
    }
}

/// `application/json` or any `+json` type, ignoring parameters such as `charset`.
pub fn is_json(content_type: &str) -> bool {
    let media_type = media_type(content_type);
    media_type == "application/json"
        || (media_type.starts_with("application/") && media_type.ends_with("+json"))
}

/// `application/x-www-form-urlencoded`, ignoring parameters such as `charset`.
pub fn is_form(content_type: &str) -> bool {
    media_type(content_type) == "application/x-www-form-urlencoded"
}

/// The type/subtype of a `Content-Type`, lower-cased.
fn media_type(content_type: &str) -> String {
    content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase()
}

/// The path serde was at, or for errors raised by the enclosing object ("missing field `x`", "unknown
/// field `x`") the field named in the message, so the client learns which key to fix.
fn field_name(path: &str, message: &str) -> String {
    let named = ["missing field `", "unknown field `"]
        .iter()
        .find_map(|prefix| message.strip_prefix(prefix)?.split('`').next());
    let parent = (path != ".").then_some(path);
    match (parent, named) {
        (Some(parent), Some(name)) if !parent.ends_with(name) => format!("{parent}.{name}"),
        (Some(parent), _) => parent.to_owned(),
        (None, Some(name)) => name.to_owned(),
        (None, None) => WHOLE_BODY.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;
    use serde_json::json;

    use super::*;
    use crate::ids::JobId;
    use crate::validation::{Depth, JsonObject, Reason, TaskDescription, WorkerCount};

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Submit {
        task_description: TaskDescription,
        worker_count: WorkerCount,
        #[serde(default)]
        depth: Depth,
        parent_job_id: Option<JobId>,
        result: Option<JsonObject>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct OptionalReason {
        reason: Option<Reason>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Outer {
        #[serde(rename = "inner")]
        _inner: Vec<Inner>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Inner {
        #[serde(rename = "depth")]
        _depth: Depth,
    }

    fn field_of(error: ApiError) -> (u16, String) {
        let field = error.details()["fields"][0]["field"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        (error.status(), field)
    }

    fn submit(body: &str) -> Result<Submit, ApiError> {
        parse_json(Some("application/json; charset=utf-8"), body.as_bytes())
    }

    #[test]
    fn valid_body_parses_into_validated_types() {
        let ok = submit(r#"{"task_description": "t", "worker_count": 3, "parent_job_id": "j_1"}"#)
            .unwrap();
        assert_eq!(ok.worker_count.get(), 3);
        assert_eq!(ok.depth.get(), 0);
        assert_eq!(ok.parent_job_id.unwrap().as_str(), "j_1");
        assert!(ok.result.is_none());
        assert_eq!(ok.task_description.as_str(), "t");
    }

    #[test]
    fn invalid_fields_are_422_naming_the_field() {
        let cases = [
            (
                r#"{"task_description": "t", "worker_count": 11}"#,
                "worker_count",
            ),
            (
                r#"{"task_description": "", "worker_count": 1}"#,
                "task_description",
            ),
            (
                r#"{"task_description": "t", "worker_count": "2"}"#,
                "worker_count",
            ),
            (
                r#"{"task_description": "t", "worker_count": 1, "depth": 6}"#,
                "depth",
            ),
            (
                r#"{"task_description": "t", "worker_count": 1, "parent_job_id": "x y"}"#,
                "parent_job_id",
            ),
            (
                r#"{"task_description": "t", "worker_count": 1, "result": [1]}"#,
                "result",
            ),
            (r#"{"worker_count": 1}"#, "task_description"),
            (
                r#"{"task_description": "t", "worker_count": 1, "wokrer": 1}"#,
                "wokrer",
            ),
            ("[]", WHOLE_BODY),
            ("null", WHOLE_BODY),
        ];
        for (body, field) in cases {
            let error = submit(body).unwrap_err();
            assert_eq!(field_of(error), (422, field.to_owned()), "{body}");
        }
        let message = submit(r#"{"task_description": "t", "worker_count": 0}"#)
            .unwrap_err()
            .details();
        assert_eq!(
            message,
            json!({"fields": [{"field": "worker_count", "message": "must be between 1 and 10"}]})
        );
    }

    #[test]
    fn only_objects_are_bodies() {
        // A struct would otherwise be read from an array of its field values.
        for body in [
            r#"[{"reason": "x"}]"#,
            r#"["x"]"#,
            "[]",
            "null",
            "1",
            r#""x""#,
        ] {
            let error = parse_json::<OptionalReason>(None, body.as_bytes()).unwrap_err();
            assert_eq!(field_of(error), (422, WHOLE_BODY.to_owned()), "{body}");
        }
    }

    #[test]
    fn nul_characters_are_refused_where_they_are() {
        let cases = [
            (r#"{"reason": "a\u0000b"}"#, "reason"),
            (r#"{"reason\u0000": "x"}"#, WHOLE_BODY),
            (
                r#"{"inner": [{"depth": 1}, {"x": ["ok", "\u0000"]}]}"#,
                "inner[1].x[1]",
            ),
            (r#"{"inner": [{"a\u0000": 1}]}"#, "inner[0]"),
        ];
        for (body, field) in cases {
            let error = parse_json::<Outer>(None, body.as_bytes()).unwrap_err();
            assert_eq!(field_of(error), (422, field.to_owned()), "{body}");
        }
        let error = parse_form::<OptionalReason>(b"reason=a%00").unwrap_err();
        assert_eq!(field_of(error), (422, "reason".to_owned()));
    }

    #[test]
    fn nested_fields_are_named_by_path() {
        let cases = [
            (
                r#"{"inner": [{"depth": 1}, {"depth": 9}]}"#,
                "inner[1].depth",
            ),
            (r#"{"inner": [{"depth": 1, "x": 1}]}"#, "inner[0].x"),
            (r#"{"inner": [{}]}"#, "inner[0].depth"),
            (r#"{"inner": {}}"#, "inner"),
        ];
        for (body, field) in cases {
            let error = parse_json::<Outer>(None, body.as_bytes()).unwrap_err();
            assert_eq!(field_of(error), (422, field.to_owned()), "{body}");
        }
    }

    #[test]
    fn empty_body_reads_as_empty_object() {
        for body in ["", "  \n", "{}"] {
            let parsed: OptionalReason = parse_json(None, body.as_bytes()).unwrap();
            assert!(parsed.reason.is_none());
        }
        // Even with a non-JSON content type: there is nothing to misread.
        assert!(parse_json::<OptionalReason>(Some("text/plain"), b"").is_ok());
    }

    #[test]
    fn form_bodies_decode_like_json_with_string_values() {
        let parsed: OptionalReason = parse_form(b"reason=disk+full%21").unwrap();
        assert_eq!(parsed.reason.unwrap().as_str(), "disk full!");
        assert!(parse_form::<OptionalReason>(b"").unwrap().reason.is_none());
        for (body, field) in [
            (&b"reason=a&reason=b"[..], "reason"),
            (b"reasno=a", "reasno"),
        ] {
            let error = parse_form::<OptionalReason>(body).unwrap_err();
            assert_eq!(field_of(error), (422, field.to_owned()));
        }
        assert!(is_form("Application/X-WWW-Form-Urlencoded; charset=UTF-8"));
        assert!(!is_form("application/json"));
    }

    #[test]
    fn transport_problems_have_their_own_statuses() {
        let huge = format!(r#"{{"reason": "{}"}}"#, "x".repeat(MAX_BODY_BYTES));
        assert_eq!(
            parse_json::<OptionalReason>(None, huge.as_bytes())
                .unwrap_err()
                .status(),
            413
        );
        assert_eq!(
            parse_json::<OptionalReason>(Some("text/plain"), b"{}")
                .unwrap_err()
                .status(),
            415
        );
        assert_eq!(
            parse_json::<OptionalReason>(None, b"{not json")
                .unwrap_err()
                .status(),
            400
        );
        assert!(parse_json::<OptionalReason>(Some("application/merge-patch+json"), b"{}").is_ok());
        assert!(parse_json::<OptionalReason>(Some("Application/JSON"), b"{}").is_ok());
        // `+json` counts only under application/, and application/ only with `+json`.
        for not_json in ["text/x+json", "application/xml", "application/jsonx"] {
            assert!(!is_json(not_json), "{not_json}");
        }
    }

    #[test]
    fn bodies_up_to_the_limit_are_read_and_one_byte_more_is_413() {
        let padded = |start: &[u8], filler: u8, len: usize| {
            let mut body = start.to_vec();
            body.resize(len, filler);
            body
        };
        for len in [MAX_BODY_BYTES, MAX_BODY_BYTES + 1] {
            let json = padded(br#"{"reason": "x"}"#, b' ', len);
            let form = padded(b"reason=x", b'&', len);
            let outcomes = [
                parse_json::<OptionalReason>(None, &json),
                parse_form::<OptionalReason>(&form),
            ];
            for outcome in outcomes {
                if len == MAX_BODY_BYTES {
                    assert_eq!(outcome.unwrap().reason.unwrap().as_str(), "x");
                } else {
                    assert_eq!(outcome.unwrap_err(), ApiError::PayloadTooLarge);
                }
            }
        }
    }
}
