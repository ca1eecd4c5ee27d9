//! Query strings (and `application/x-www-form-urlencoded` bodies, which share the syntax) and list paging.
//!
//! Unknown parameters are ignored, as browsers and proxies add their own; a known parameter with a bad
//! value is a 422 naming that parameter.

use std::str::FromStr;

use serde::Serialize;
use serde_json::{Map, Value, json};

use crate::error::ApiError;
use crate::validation::{InvalidValue, Limit, NonNegative};

/// Decoded `name=value` pairs in their original order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Query {
    pairs: Vec<(String, String)>,
}

impl Query {
    /// Splits on `&`, then on the first `=`; percent-decodes both sides with `+` as space. Never fails:
    /// a stray `%` stays literal and invalid UTF-8 becomes U+FFFD, which later validation rejects if it
    /// matters.
    pub fn parse(raw: &str) -> Self {
        let pairs = raw
            .strip_prefix('?')
            .unwrap_or(raw)
            .split('&')
            .filter(|pair| !pair.is_empty())
            .map(|pair| {
                let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
                (percent_decode(name), percent_decode(value))
            })
            .collect();
        Self { pairs }
    }

    /// The first value of `name`, if present.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }

    pub fn pairs(&self) -> &[(String, String)] {
        &self.pairs
    }

    /// Parses `name` if present, e.g. `query.field::<WorkerState>("status")`; a bad value is a 422 for
    /// `name`, and so is a parameter given more than once: picking one of the values would be a guess
    /// (as for form bodies, [`crate::body::parse_form`]).
    pub fn field<T: FromStr<Err = InvalidValue>>(&self, name: &str) -> Result<Option<T>, ApiError> {
        if self.pairs.iter().filter(|(key, _)| key == name).count() > 1 {
            return Err(ApiError::invalid(name, "must not be repeated"));
        }
        self.get(name)
            .map(|raw| raw.parse().map_err(|e: InvalidValue| e.at(name)))
            .transpose()
    }
}

/// Which slice of a list to return: `limit` 1–100 (default 50), `offset` ≥ 0 (default 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Page {
    pub limit: i64,
    pub offset: i64,
}

impl Page {
    pub const DEFAULT_LIMIT: i64 = 50;

    pub fn from_query(query: &Query) -> Result<Self, ApiError> {
        Ok(Self {
            limit: query
                .field::<Limit>("limit")?
                .map_or(Self::DEFAULT_LIMIT, Limit::get),
            offset: query
                .field::<NonNegative>("offset")?
                .map_or(0, NonNegative::get),
        })
    }

    /// The list response shape of contract §1: `{"<items_key>": [...], "total", "limit", "offset"}`.
    /// Fails only if an item cannot be represented as JSON (a map with non-string keys): a bug, so 500.
    pub fn body<T: Serialize>(
        &self,
        items_key: &str,
        items: &[T],
        total: i64,
    ) -> Result<Value, ApiError> {
        let items = serde_json::to_value(items)
            .map_err(|e| ApiError::Internal(format!("list item is not JSON: {e}")))?;
        let mut body = Map::new();
        body.insert(items_key.to_owned(), items);
        body.insert("total".to_owned(), json!(total));
        body.insert("limit".to_owned(), json!(self.limit));
        body.insert("offset".to_owned(), json!(self.offset));
        Ok(Value::Object(body))
    }
}

impl Default for Page {
    fn default() -> Self {
        Self {
            limit: Self::DEFAULT_LIMIT,
            offset: 0,
        }
    }
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => decoded.push(b' '),
            b'%' => match bytes.get(i + 1..i + 3).and_then(hex_byte) {
                Some(byte) => {
                    decoded.push(byte);
                    i += 2;
                }
                None => decoded.push(b'%'),
            },
            other => decoded.push(other),
        }
        i += 1;
    }
    String::from_utf8_lossy(&decoded).into_owned()
}

/// The byte of exactly two hex digits. Not `u8::from_str_radix`, which also takes a sign (`%+5`).
fn hex_byte(digits: &[u8]) -> Option<u8> {
    let digit = |byte: u8| char::from(byte).to_digit(16);
    match digits {
        &[high, low] => u8::try_from(digit(high)? << 4 | digit(low)?).ok(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validation::Depth;

    #[test]
    fn parses_and_decodes_pairs() {
        let query = Query::parse("?a=1&b=hello+world&c=%7Bx%7D&d&&e=%zz&f=caf%C3%A9&a=2");
        assert_eq!(query.get("a"), Some("1"));
        assert_eq!(query.get("b"), Some("hello world"));
        assert_eq!(query.get("c"), Some("{x}"));
        assert_eq!(query.get("d"), Some(""));
        assert_eq!(query.get("e"), Some("%zz"));
        assert_eq!(query.get("f"), Some("café"));
        assert_eq!(query.get("missing"), None);
        assert_eq!(query.pairs().len(), 7);
        assert_eq!(Query::parse("").pairs().len(), 0);
        assert_eq!(Query::parse("x=%").get("x"), Some("%"));
    }

    /// Found by the `query` fuzz target: `%+a` decoded to byte 0x0A, since `from_str_radix` takes a sign.
    #[test]
    fn an_escape_needs_two_hex_digits() {
        let crash = Query::parse("o=o2Tw%+aTT=TTTTTTTTTTTTTTTTTTTTTTTTT");
        assert_eq!(crash.get("o"), Some("o2Tw% aTT=TTTTTTTTTTTTTTTTTTTTTTTTT"));
        for (raw, decoded) in [
            ("x=%+a", "% a"),
            ("x=%-1", "%-1"),
            ("x=%a", "%a"),
            ("x=%c3%A9%0a", "é\n"),
        ] {
            assert_eq!(Query::parse(raw).get("x"), Some(decoded), "{raw}");
        }
    }

    #[test]
    fn page_defaults_and_bounds() {
        assert_eq!(
            Page::from_query(&Query::parse("")).unwrap(),
            Page::default()
        );
        assert_eq!(
            Page::from_query(&Query::parse("limit=100&offset=7&other=x")).unwrap(),
            Page {
                limit: 100,
                offset: 7
            }
        );
        for (raw, field) in [
            ("limit=0", "limit"),
            ("limit=101", "limit"),
            ("limit=abc", "limit"),
            ("limit=", "limit"),
            ("offset=-1", "offset"),
            ("offset=1e3", "offset"),
        ] {
            let error = Page::from_query(&Query::parse(raw)).unwrap_err();
            assert_eq!(error.status(), 422, "{raw}");
            assert_eq!(
                error.details()["fields"][0]["field"],
                field,
                "{raw}: {error}"
            );
        }
    }

    #[test]
    fn typed_fields_name_the_parameter() {
        let query = Query::parse("depth=2&bad=9");
        assert_eq!(query.field::<Depth>("depth").unwrap().unwrap().get(), 2);
        assert_eq!(query.field::<Depth>("absent").unwrap(), None);
        let error = query.field::<Depth>("bad").unwrap_err();
        assert_eq!(
            error.details(),
            json!({"fields": [{"field": "bad", "message": "must be between 0 and 5"}]})
        );
    }

    #[test]
    fn a_typed_field_given_twice_is_refused() {
        for raw in ["depth=1&depth=2", "depth=1&depth=1", "depth=1&depth="] {
            let error = Query::parse(raw).field::<Depth>("depth").unwrap_err();
            assert_eq!(
                error.details(),
                json!({"fields": [{"field": "depth", "message": "must not be repeated"}]}),
                "{raw}"
            );
        }
    }

    #[test]
    fn list_body_shape() {
        let page = Page {
            limit: 2,
            offset: 4,
        };
        assert_eq!(
            page.body("jobs", &[json!({"id": "j_1"})], 9).unwrap(),
            json!({"jobs": [{"id": "j_1"}], "total": 9, "limit": 2, "offset": 4})
        );
    }
}
