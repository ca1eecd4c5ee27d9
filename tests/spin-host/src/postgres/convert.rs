//! Conversions between `spin:postgres` values and Postgres wire values, with
//! the same type mapping as Spin so a component sees the same results here
//! and under `spin up` (e.g. a `datetime` parameter is a `TIMESTAMP`, and a
//! `JSONB` column arrives as its JSON text).

use crate::bindings::spin::postgres::postgres::{
    self as wit, Column, DbDataType, DbError, DbValue, Interval, ParameterValue, QueryError,
};
use bytes::BytesMut;
use chrono::{Datelike, NaiveDate, NaiveDateTime, NaiveTime, Timelike};
use std::error::Error as StdError;
use tokio_postgres::types::{FromSql, IsNull, ToSql, Type, to_sql_checked};

pub type Parameter = Box<dyn ToSql + Send + Sync>;

pub fn parameters(values: &[ParameterValue]) -> Result<Vec<Parameter>, wit::Error> {
    values
        .iter()
        .map(parameter)
        .collect::<Result<_, String>>()
        .map_err(wit::Error::BadParameter)
}

fn parameter(value: &ParameterValue) -> Result<Parameter, String> {
    Ok(match value {
        ParameterValue::Boolean(v) => Box::new(*v),
        ParameterValue::Int8(v) => Box::new(*v),
        ParameterValue::Int16(v) => Box::new(*v),
        ParameterValue::Int32(v) => Box::new(*v),
        ParameterValue::Int64(v) => Box::new(*v),
        ParameterValue::Floating32(v) => Box::new(*v),
        ParameterValue::Floating64(v) => Box::new(*v),
        ParameterValue::Str(v) => Box::new(v.clone()),
        ParameterValue::Binary(v) => Box::new(v.clone()),
        ParameterValue::Date(v) => Box::new(date(*v)?),
        ParameterValue::Time(v) => Box::new(time(*v)?),
        ParameterValue::Datetime((y, mo, d, h, mi, s, ns)) => Box::new(NaiveDateTime::new(
            date((*y, *mo, *d))?,
            time((*h, *mi, *s, *ns))?,
        )),
        ParameterValue::Timestamp(secs) => Box::new(
            chrono::DateTime::<chrono::Utc>::from_timestamp(*secs, 0)
                .ok_or_else(|| format!("invalid epoch timestamp {secs}"))?,
        ),
        ParameterValue::Uuid(v) => {
            Box::new(uuid::Uuid::parse_str(v).map_err(|_| format!("invalid UUID {v}"))?)
        }
        ParameterValue::Jsonb(v) => Box::new(
            serde_json::from_slice::<serde_json::Value>(v)
                .map_err(|e| format!("invalid JSON {}: {e}", String::from_utf8_lossy(v)))?,
        ),
        ParameterValue::Decimal(v) => Box::new(
            rust_decimal::Decimal::from_str_exact(v).map_err(|_| format!("invalid decimal {v}"))?,
        ),
        ParameterValue::ArrayInt32(v) => Box::new(v.clone()),
        ParameterValue::ArrayInt64(v) => Box::new(v.clone()),
        ParameterValue::ArrayStr(v) => Box::new(v.clone()),
        ParameterValue::ArrayDecimal(v) => Box::new(
            v.iter()
                .map(|d| {
                    d.as_deref()
                        .map(rust_decimal::Decimal::from_str_exact)
                        .transpose()
                })
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("invalid decimal in array: {e}"))?,
        ),
        ParameterValue::Interval(v) => Box::new(PgInterval(*v)),
        ParameterValue::DbNull => Box::new(Null),
        ParameterValue::RangeInt32(_)
        | ParameterValue::RangeInt64(_)
        | ParameterValue::RangeDecimal(_) => {
            return Err("range parameters are not supported by this host".into());
        }
    })
}

fn date((y, m, d): (i32, u8, u8)) -> Result<NaiveDate, String> {
    NaiveDate::from_ymd_opt(y, m.into(), d.into())
        .ok_or_else(|| format!("invalid date {y}-{m}-{d}"))
}

fn time((h, m, s, ns): (u8, u8, u8, u32)) -> Result<NaiveTime, String> {
    NaiveTime::from_hms_nano_opt(h.into(), m.into(), s.into(), ns)
        .ok_or_else(|| format!("invalid time {h}:{m}:{s}.{ns}"))
}

pub fn column(column: &tokio_postgres::Column) -> Column {
    Column {
        name: column.name().to_owned(),
        data_type: data_type(column.type_()),
    }
}

fn data_type(ty: &Type) -> DbDataType {
    match *ty {
        Type::BOOL => DbDataType::Boolean,
        Type::BYTEA => DbDataType::Binary,
        Type::FLOAT4 => DbDataType::Floating32,
        Type::FLOAT8 => DbDataType::Floating64,
        Type::INT2 => DbDataType::Int16,
        Type::INT4 => DbDataType::Int32,
        Type::INT8 => DbDataType::Int64,
        Type::TEXT | Type::VARCHAR | Type::BPCHAR => DbDataType::Str,
        Type::TIMESTAMP | Type::TIMESTAMPTZ => DbDataType::Datetime,
        Type::DATE => DbDataType::Date,
        Type::TIME => DbDataType::Time,
        Type::UUID => DbDataType::Uuid,
        Type::JSONB => DbDataType::Jsonb,
        Type::NUMERIC => DbDataType::Decimal,
        Type::INT4_RANGE => DbDataType::RangeInt32,
        Type::INT8_RANGE => DbDataType::RangeInt64,
        Type::NUM_RANGE => DbDataType::RangeDecimal,
        Type::INT4_ARRAY => DbDataType::ArrayInt32,
        Type::INT8_ARRAY => DbDataType::ArrayInt64,
        Type::NUMERIC_ARRAY => DbDataType::ArrayDecimal,
        Type::TEXT_ARRAY | Type::VARCHAR_ARRAY | Type::BPCHAR_ARRAY => DbDataType::ArrayStr,
        Type::INTERVAL => DbDataType::Interval,
        _ => DbDataType::Other(ty.name().to_owned()),
    }
}

pub fn row(row: &tokio_postgres::Row) -> Result<Vec<DbValue>, wit::Error> {
    (0..row.len())
        .map(|i| value(row, i).map_err(|e| wit::Error::ValueConversionFailed(e.to_string())))
        .collect()
}

type Conversion = Result<DbValue, Box<dyn StdError + Sync + Send>>;

/// Reads a column as `T`, mapping SQL NULL to `db-null`.
fn get<'a, T: FromSql<'a>>(
    row: &'a tokio_postgres::Row,
    i: usize,
    to: impl FnOnce(T) -> DbValue,
) -> Conversion {
    Ok(row.try_get::<_, Option<T>>(i)?.map_or(DbValue::DbNull, to))
}

fn value(row: &tokio_postgres::Row, i: usize) -> Conversion {
    match *row.columns()[i].type_() {
        Type::BOOL => get(row, i, DbValue::Boolean),
        Type::BYTEA => get(row, i, DbValue::Binary),
        Type::FLOAT4 => get(row, i, DbValue::Floating32),
        Type::FLOAT8 => get(row, i, DbValue::Floating64),
        Type::INT2 => get(row, i, DbValue::Int16),
        Type::INT4 => get(row, i, DbValue::Int32),
        Type::INT8 => get(row, i, DbValue::Int64),
        Type::TEXT | Type::VARCHAR | Type::BPCHAR => get(row, i, DbValue::Str),
        // As in Spin: read through `NaiveDateTime`, so TIMESTAMPTZ columns
        // must be converted in SQL (e.g. `AT TIME ZONE 'UTC'`).
        Type::TIMESTAMP | Type::TIMESTAMPTZ => get(row, i, |v: NaiveDateTime| {
            DbValue::Datetime((
                v.year(),
                v.month() as u8,
                v.day() as u8,
                v.hour() as u8,
                v.minute() as u8,
                v.second() as u8,
                v.nanosecond(),
            ))
        }),
        Type::DATE => get(row, i, |v: NaiveDate| {
            DbValue::Date((v.year(), v.month() as u8, v.day() as u8))
        }),
        Type::TIME => get(row, i, |v: NaiveTime| {
            DbValue::Time((
                v.hour() as u8,
                v.minute() as u8,
                v.second() as u8,
                v.nanosecond(),
            ))
        }),
        Type::UUID => get(row, i, |v: uuid::Uuid| DbValue::Uuid(v.to_string())),
        Type::JSONB => get(row, i, |v: serde_json::Value| {
            DbValue::Jsonb(sorted_keys(v).to_string().into_bytes())
        }),
        Type::NUMERIC => get(row, i, |v: rust_decimal::Decimal| {
            DbValue::Decimal(v.to_string())
        }),
        Type::INT4_ARRAY => get(row, i, DbValue::ArrayInt32),
        Type::INT8_ARRAY => get(row, i, DbValue::ArrayInt64),
        Type::TEXT_ARRAY | Type::VARCHAR_ARRAY | Type::BPCHAR_ARRAY => {
            get(row, i, DbValue::ArrayStr)
        }
        Type::NUMERIC_ARRAY => get(row, i, |v: Vec<Option<rust_decimal::Decimal>>| {
            DbValue::ArrayDecimal(v.into_iter().map(|d| d.map(|d| d.to_string())).collect())
        }),
        Type::INTERVAL => get(row, i, |v: PgInterval| DbValue::Interval(v.0)),
        _ => get(row, i, |v: Raw| DbValue::Unsupported(v.0)),
    }
}

/// Maps a driver error the way Spin reports it: database errors keep their
/// SQLSTATE and fields; anything else (e.g. a closed connection) is text.
pub fn error(e: tokio_postgres::Error) -> wit::Error {
    let query_error = match e.as_db_error() {
        Some(db) => QueryError::DbError(DbError {
            as_text: e.to_string(),
            severity: db.severity().to_owned(),
            code: db.code().code().to_owned(),
            message: db.message().to_owned(),
            detail: db.detail().map(str::to_owned),
            extras: [
                ("constraint", db.constraint()),
                ("table", db.table()),
                ("column", db.column()),
                ("hint", db.hint()),
            ]
            .into_iter()
            .filter_map(|(k, v)| v.map(|v| (k.to_owned(), v.to_owned())))
            .collect(),
        }),
        None => QueryError::Text(e.to_string()),
    };
    wit::Error::QueryFailed(query_error)
}

/// SQL NULL of whatever type the statement expects.
#[derive(Debug)]
struct Null;

impl ToSql for Null {
    fn to_sql(
        &self,
        _: &Type,
        _: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn StdError + Sync + Send>> {
        Ok(IsNull::Yes)
    }
    fn accepts(_: &Type) -> bool {
        true
    }
    to_sql_checked!();
}

/// `INTERVAL` in the binary format: microseconds, days, months.
#[derive(Debug)]
struct PgInterval(Interval);

impl ToSql for PgInterval {
    fn to_sql(
        &self,
        _: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn StdError + Sync + Send>> {
        out.extend_from_slice(&self.0.micros.to_be_bytes());
        out.extend_from_slice(&self.0.days.to_be_bytes());
        out.extend_from_slice(&self.0.months.to_be_bytes());
        Ok(IsNull::No)
    }
    fn accepts(ty: &Type) -> bool {
        *ty == Type::INTERVAL
    }
    to_sql_checked!();
}

impl<'a> FromSql<'a> for PgInterval {
    fn from_sql(_: &Type, raw: &'a [u8]) -> Result<Self, Box<dyn StdError + Sync + Send>> {
        let bytes: &[u8; 16] = raw.try_into().map_err(|_| "an interval is 16 bytes")?;
        let (micros, rest) = bytes.split_at(8);
        let (days, months) = rest.split_at(4);
        Ok(PgInterval(Interval {
            micros: i64::from_be_bytes(micros.try_into()?),
            days: i32::from_be_bytes(days.try_into()?),
            months: i32::from_be_bytes(months.try_into()?),
        }))
    }
    fn accepts(ty: &Type) -> bool {
        *ty == Type::INTERVAL
    }
}

/// The wire bytes of a type the interface has no variant for.
struct Raw(Vec<u8>);

impl<'a> FromSql<'a> for Raw {
    fn from_sql(_: &Type, raw: &'a [u8]) -> Result<Self, Box<dyn StdError + Sync + Send>> {
        Ok(Raw(raw.to_vec()))
    }
    fn accepts(_: &Type) -> bool {
        true
    }
}

/// Spin reads a `jsonb` value into a `serde_json::Value` built without `preserve_order`, whose
/// objects are sorted maps: a component sees every object's keys in sorted order, not in
/// Postgres's storage order (shorter keys first). This workspace enables `preserve_order`, so
/// the keys are sorted here, at every depth.
fn sorted_keys(value: serde_json::Value) -> serde_json::Value {
    match value {
        serde_json::Value::Object(map) => {
            let mut entries: Vec<_> = map.into_iter().collect();
            entries.sort_by(|(a, _), (b, _)| a.cmp(b));
            serde_json::Value::Object(
                entries
                    .into_iter()
                    .map(|(key, value)| (key, sorted_keys(value)))
                    .collect(),
            )
        }
        serde_json::Value::Array(items) => items.into_iter().map(sorted_keys).collect(),
        scalar => scalar,
    }
}

#[cfg(test)]
mod tests {
    use super::sorted_keys;

    #[test]
    fn jsonb_objects_reach_the_guest_with_sorted_keys_as_under_spin() {
        // Postgres stores these as {"b": .., "aa": ..} (shorter keys first).
        let stored = serde_json::json!({"b": 1, "aa": {"z": [{"y": 0, "x": 1}], "c": null}});
        assert_eq!(
            sorted_keys(stored).to_string(),
            r#"{"aa":{"c":null,"z":[{"x":1,"y":0}]},"b":1}"#
        );
    }
}
