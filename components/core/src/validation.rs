//! Values that carry their own proof of validity.
//!
//! Request bodies and query strings are parsed into these types at the edge (serde, [`std::str::FromStr`]),
//! so handlers never re-check a range or a length. Each failure is an [`InvalidValue`] with a sentence
//! ("must be between 0 and 5"); whoever knows the field name turns it into a 422 with [`InvalidValue::at`].

use std::fmt;
use std::str::FromStr;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

use crate::error::{ApiError, FieldError};

/// Why a value was rejected, without the field name (the caller knows it; serde finds it from the path).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidValue(String);

impl InvalidValue {
    pub fn new(message: impl Into<String>) -> Self {
        Self(message.into())
    }

    pub fn message(&self) -> &str {
        &self.0
    }

    /// The 422 for this value in `field`.
    pub fn at(self, field: impl Into<String>) -> ApiError {
        FieldError::new(field, self.0).into()
    }
}

impl fmt::Display for InvalidValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for InvalidValue {}

/// An integer in `MIN..=MAX`. Deserialises from a JSON integer, parses from a query-string value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BoundedInt<const MIN: i64, const MAX: i64>(i64);

/// Nesting depth of a job: 0 for a top-level job, parent's depth + 1 for a child.
pub type Depth = BoundedInt<0, 5>;
/// Workers a job asks for.
pub type WorkerCount = BoundedInt<1, 10>;
/// Page size of a list.
pub type Limit = BoundedInt<1, 100>;
/// Non-negative integer: list offsets and event sequence cursors.
pub type NonNegative = BoundedInt<0, { i64::MAX }>;

impl<const MIN: i64, const MAX: i64> BoundedInt<MIN, MAX> {
    pub fn new(value: i64) -> Result<Self, InvalidValue> {
        if (MIN..=MAX).contains(&value) {
            Ok(Self(value))
        } else {
            Err(Self::out_of_range())
        }
    }

    fn out_of_range() -> InvalidValue {
        InvalidValue::new(format!("must be {}", Self::range()))
    }

    pub fn get(self) -> i64 {
        self.0
    }

    /// "between 0 and 5", or "at least 0" when there is no upper bound worth mentioning.
    fn range() -> String {
        if MAX == i64::MAX {
            format!("at least {MIN}")
        } else {
            format!("between {MIN} and {MAX}")
        }
    }
}

impl Depth {
    /// Every depth the quotas cover, in order.
    pub fn all() -> impl Iterator<Item = Depth> {
        (0..=5).map(Self)
    }

    /// Position in per-depth tables.
    pub fn index(self) -> usize {
        // In 0..=5 by construction.
        self.0 as usize
    }
}

/// Top-level jobs are at depth 0, the contract's default.
impl Default for Depth {
    fn default() -> Self {
        Self(0)
    }
}

impl<const MIN: i64, const MAX: i64> TryFrom<i64> for BoundedInt<MIN, MAX> {
    type Error = InvalidValue;

    fn try_from(value: i64) -> Result<Self, Self::Error> {
        Self::new(value)
    }
}

impl<const MIN: i64, const MAX: i64> FromStr for BoundedInt<MIN, MAX> {
    type Err = InvalidValue;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.parse::<i64>()
            .map_err(|_| InvalidValue::new(format!("must be an integer {}", Self::range())))
            .and_then(Self::new)
    }
}

impl<const MIN: i64, const MAX: i64> fmt::Display for BoundedInt<MIN, MAX> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// By hand rather than `try_from = "i64"`, so a wrong type reads "expected an integer between 1 and 10"
/// instead of naming a Rust type.
impl<'de, const MIN: i64, const MAX: i64> Deserialize<'de> for BoundedInt<MIN, MAX> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct IntegerVisitor<const MIN: i64, const MAX: i64>;

        impl<const MIN: i64, const MAX: i64> Visitor<'_> for IntegerVisitor<MIN, MAX> {
            type Value = BoundedInt<MIN, MAX>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "an integer {}", BoundedInt::<MIN, MAX>::range())
            }

            fn visit_i64<E: de::Error>(self, value: i64) -> Result<Self::Value, E> {
                BoundedInt::new(value).map_err(E::custom)
            }

            fn visit_u64<E: de::Error>(self, value: u64) -> Result<Self::Value, E> {
                i64::try_from(value)
                    .map_err(|_| E::custom(BoundedInt::<MIN, MAX>::out_of_range()))
                    .and_then(|value| self.visit_i64(value))
            }

            /// JSON Schema's `integer` is any number with no fractional part, so `2.0` is 2, as the
            /// document promises; `2.5` is still refused.
            fn visit_f64<E: de::Error>(self, value: f64) -> Result<Self::Value, E> {
                let whole = value.fract() == 0.0 && value.abs() < 2f64.powi(63);
                if whole {
                    self.visit_i64(value as i64)
                } else {
                    Err(E::invalid_type(de::Unexpected::Float(value), &self))
                }
            }
        }

        deserializer.deserialize_i64(IntegerVisitor)
    }
}

impl<const MIN: i64, const MAX: i64> Serialize for BoundedInt<MIN, MAX> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_i64(self.0)
    }
}

/// Text of `MIN..=MAX` characters (Unicode scalar values, not bytes: "é" is one character).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Deserialize)]
#[serde(try_from = "String")]
pub struct BoundedText<const MIN: usize, const MAX: usize>(String);

/// What a job is for.
pub type TaskDescription = BoundedText<1, 4096>;
/// Why a lifecycle action was taken; recorded in the audit trail.
pub type Reason = BoundedText<0, 1000>;
/// Why a job failed.
pub type JobError = BoundedText<0, 4096>;

impl<const MIN: usize, const MAX: usize> BoundedText<MIN, MAX> {
    pub fn new(text: impl Into<String>) -> Result<Self, InvalidValue> {
        let text = text.into();
        if (MIN..=MAX).contains(&text.chars().count()) {
            Ok(Self(text))
        } else if MIN == 0 {
            Err(InvalidValue::new(format!(
                "must be at most {MAX} characters"
            )))
        } else {
            Err(InvalidValue::new(format!(
                "must be between {MIN} and {MAX} characters"
            )))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

impl<const MIN: usize, const MAX: usize> TryFrom<String> for BoundedText<MIN, MAX> {
    type Error = InvalidValue;

    fn try_from(text: String) -> Result<Self, Self::Error> {
        Self::new(text)
    }
}

impl<const MIN: usize, const MAX: usize> AsRef<str> for BoundedText<MIN, MAX> {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl<const MIN: usize, const MAX: usize> Serialize for BoundedText<MIN, MAX> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

/// Largest serialised size of a `metadata` or `result` object.
pub const MAX_JSON_OBJECT_BYTES: usize = 16 * 1024;

/// A JSON object of at most [`MAX_JSON_OBJECT_BYTES`] once serialised (compactly): worker `metadata`,
/// job `result`. Size is measured on our serialisation, not the client's whitespace, so the stored value
/// is what is bounded.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(try_from = "Value")]
pub struct JsonObject(Map<String, Value>);

impl JsonObject {
    pub fn new(value: Value) -> Result<Self, InvalidValue> {
        let Value::Object(map) = value else {
            return Err(InvalidValue::new("must be a JSON object"));
        };
        let size = serde_json::to_vec(&map).map_or(usize::MAX, |bytes| bytes.len());
        if size > MAX_JSON_OBJECT_BYTES {
            return Err(InvalidValue::new(format!(
                "must be at most {MAX_JSON_OBJECT_BYTES} bytes when serialized"
            )));
        }
        Ok(Self(map))
    }

    pub fn as_map(&self) -> &Map<String, Value> {
        &self.0
    }

    pub fn into_value(self) -> Value {
        Value::Object(self.0)
    }
}

impl TryFrom<Value> for JsonObject {
    type Error = InvalidValue;

    fn try_from(value: Value) -> Result<Self, Self::Error> {
        Self::new(value)
    }
}

impl Serialize for JsonObject {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(serializer)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn integers_are_range_checked() {
        assert_eq!(Depth::new(0).unwrap().get(), 0);
        assert_eq!(Depth::new(5).unwrap().get(), 5);
        assert_eq!(
            Depth::new(6).unwrap_err().message(),
            "must be between 0 and 5"
        );
        assert!(Depth::new(-1).is_err());
        assert!(WorkerCount::new(0).is_err());
        assert!(WorkerCount::new(10).is_ok());
        assert!(WorkerCount::new(11).is_err());
        assert_eq!(
            NonNegative::new(-1).unwrap_err().message(),
            "must be at least 0"
        );
        assert_eq!(Depth::default().get(), 0);
        assert_eq!(
            Depth::all().map(Depth::index).collect::<Vec<_>>(),
            [0, 1, 2, 3, 4, 5]
        );
    }

    #[test]
    fn integers_parse_from_query_text_and_json() {
        assert_eq!("3".parse::<Limit>().unwrap().get(), 3);
        assert_eq!(
            "abc".parse::<Limit>().unwrap_err().message(),
            "must be an integer between 1 and 100"
        );
        assert!("".parse::<Limit>().is_err());
        assert!("1.5".parse::<Limit>().is_err());
        assert_eq!(serde_json::from_value::<Depth>(json!(2)).unwrap().get(), 2);
        assert!(serde_json::from_value::<Depth>(json!(9)).is_err());
        assert_eq!(
            serde_json::from_value::<Depth>(json!("2"))
                .unwrap_err()
                .to_string(),
            "invalid type: string \"2\", expected an integer between 0 and 5"
        );
        assert_eq!(
            serde_json::from_value::<Depth>(json!(1.0)).unwrap().get(),
            1
        );
        assert!(serde_json::from_value::<Depth>(json!(1.5)).is_err());
        assert!(serde_json::from_value::<Depth>(json!(9.0)).is_err());
        assert!(serde_json::from_value::<NonNegative>(json!(1e300)).is_err());
        assert_eq!(
            serde_json::from_value::<NonNegative>(json!(u64::MAX))
                .unwrap_err()
                .to_string(),
            "must be at least 0"
        );
        assert_eq!(
            serde_json::to_value(WorkerCount::new(3).unwrap()).unwrap(),
            json!(3)
        );
    }

    #[test]
    fn text_length_counts_characters_not_bytes() {
        assert!(TaskDescription::new("é".repeat(4096)).is_ok());
        assert!(TaskDescription::new("a".repeat(4097)).is_err());
        assert_eq!(
            TaskDescription::new("").unwrap_err().message(),
            "must be between 1 and 4096 characters"
        );
        assert!(Reason::new("").is_ok());
        assert_eq!(
            Reason::new("x".repeat(1001)).unwrap_err().message(),
            "must be at most 1000 characters"
        );
        assert!(JobError::new("x".repeat(4096)).is_ok());
        let reason = Reason::new("disk full").unwrap();
        assert_eq!(reason.as_ref(), "disk full");
        assert_eq!(reason.into_string(), "disk full");
        assert!(serde_json::from_value::<Reason>(json!("x".repeat(1001))).is_err());
    }

    /// Found by the `body_json` fuzz target: without serde_json's `float_roundtrip` this number parsed
    /// to a neighbour of the nearest double, so the stored object printed and read back as another number.
    #[test]
    fn json_object_numbers_survive_a_round_trip() {
        let crash = br#"{"summary":"`r cause","n":3e1,"aneg":-999099999999909999999999999999999999999990.0}"#;
        let parsed: JsonObject = serde_json::from_slice(crash).unwrap();
        assert_eq!(parsed.as_map()["aneg"].as_f64(), Some(-9.9909999999991e41));
        let printed = serde_json::to_vec(&parsed).unwrap();
        assert_eq!(
            serde_json::from_slice::<JsonObject>(&printed).unwrap(),
            parsed
        );
    }

    #[test]
    fn json_objects_are_objects_of_bounded_size() {
        let small = JsonObject::new(json!({"a": 1})).unwrap();
        assert_eq!(small.into_value(), json!({"a": 1}));
        assert_eq!(
            JsonObject::new(json!([1])).unwrap_err().message(),
            "must be a JSON object"
        );
        assert!(JsonObject::new(json!("x")).is_err());
        // {"k":"…"} is 8 bytes of framing.
        let fits = json!({"k": "x".repeat(MAX_JSON_OBJECT_BYTES - 8)});
        let too_big = json!({"k": "x".repeat(MAX_JSON_OBJECT_BYTES - 7)});
        assert!(JsonObject::new(fits).is_ok());
        assert_eq!(
            JsonObject::new(too_big).unwrap_err().message(),
            "must be at most 16384 bytes when serialized"
        );
    }

    #[test]
    fn invalid_value_becomes_a_422_for_the_field() {
        let error = Depth::new(7).unwrap_err().at("depth");
        assert_eq!(error.status(), 422);
        assert_eq!(
            error.details(),
            json!({"fields": [{"field": "depth", "message": "must be between 0 and 5"}]})
        );
    }
}
