//! Column types and typed values: wire JSON in the forms a Django master sends -> SQL binds.
//!
//! A Django master sends values as they sit in memory (protocol/README.md "Value encodings"), so
//! parsing is lenient where Django is: decimals as numbers or strings, booleans as 0/1, datetimes
//! with a space or `T`, `Z` or an offset or none.

use bigdecimal::BigDecimal;
use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use serde_json::{Number, Value};
use std::str::FromStr;

use crate::message::{format_datetime, format_naive_datetime, parse_datetime};

/// The SQL type of a replicated column, independent of the backend.
///
/// On SQLite, `Numeric`, `Uuid` and `Json` columns are stored as TEXT, `Date`/`Timestamp` as
/// Diesel stores them (TEXT), `Bool` as INTEGER 0/1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ColumnType {
    /// `BOOLEAN`.
    Bool,
    /// `SMALLINT` (i16).
    SmallInt,
    /// `INTEGER` (i32).
    Integer,
    /// `BIGINT` (i64).
    BigInt,
    /// `REAL` (f32).
    Float,
    /// `DOUBLE PRECISION` (f64).
    Double,
    /// `TEXT` / `VARCHAR`.
    Text,
    /// `NUMERIC` (exact decimal).
    Numeric,
    /// `DATE`.
    Date,
    /// `TIMESTAMP` without time zone.
    Timestamp,
    /// `TIMESTAMPTZ`.
    Timestamptz,
    /// `UUID`.
    Uuid,
    /// `JSON`.
    Json,
    /// `JSONB` (PostgreSQL; TEXT on SQLite).
    Jsonb,
}

/// A typed value ready to bind.
#[derive(Debug, Clone, PartialEq)]
pub enum SqlValue {
    /// SQL NULL of a column type.
    Null(ColumnType),
    /// A boolean.
    Bool(bool),
    /// A 16-bit integer.
    SmallInt(i16),
    /// A 32-bit integer.
    Integer(i32),
    /// A 64-bit integer.
    BigInt(i64),
    /// A 32-bit float.
    Float(f32),
    /// A 64-bit float.
    Double(f64),
    /// Text.
    Text(String),
    /// An exact decimal.
    Numeric(BigDecimal),
    /// A date.
    Date(NaiveDate),
    /// A datetime without zone.
    Timestamp(NaiveDateTime),
    /// An instant.
    Timestamptz(DateTime<Utc>),
    /// A UUID.
    Uuid(uuid::Uuid),
    /// A JSON document (for `Json` and `Jsonb` columns).
    Json(Value, ColumnType),
    /// A whole column of values of one type, bound as one PostgreSQL array (`unnest($1)`,
    /// `= ANY($1)`): one parameter instead of one per row. SQLite has no arrays: it gets the
    /// values as a JSON array text. Build it with [`SqlValue::array`].
    Array(ColumnType, Vec<SqlValue>),
}

fn describe(v: &Value) -> String {
    let s = v.to_string();
    if s.len() > 60 {
        format!("{}…", &s[..s.floor_char_boundary(57)])
    } else {
        s
    }
}

fn as_i64(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64().or_else(|| {
            n.as_f64()
                .filter(|f| f.fract() == 0.0 && f.abs() < 9.0e15)
                .map(|f| f as i64)
        }),
        Value::String(s) => s.trim().parse().ok(),
        Value::Bool(b) => Some(i64::from(*b)),
        _ => None,
    }
}

impl ColumnType {
    /// Convert a non-null wire value to this type, or say why it does not fit.
    ///
    /// ```
    /// use cqrs::value::{ColumnType, SqlValue};
    /// let v = ColumnType::Numeric.from_json(&serde_json::json!("1234.50")).unwrap();
    /// assert_eq!(v, SqlValue::Numeric("1234.50".parse().unwrap()));
    /// assert!(ColumnType::Integer.from_json(&serde_json::json!("x")).is_err());
    /// ```
    pub fn from_json(self, v: &Value) -> Result<SqlValue, String> {
        let bad = || format!("{} is not a valid {}", describe(v), self.name());
        if v.is_null() {
            return Ok(SqlValue::Null(self));
        }
        Ok(match self {
            ColumnType::Bool => match v {
                Value::Bool(b) => SqlValue::Bool(*b),
                Value::Number(_) => match as_i64(v) {
                    Some(0) => SqlValue::Bool(false),
                    Some(1) => SqlValue::Bool(true),
                    _ => return Err(bad()),
                },
                Value::String(s) => match s.as_str() {
                    "true" | "True" | "1" => SqlValue::Bool(true),
                    "false" | "False" | "0" => SqlValue::Bool(false),
                    _ => return Err(bad()),
                },
                _ => return Err(bad()),
            },
            ColumnType::SmallInt => SqlValue::SmallInt(
                as_i64(v)
                    .and_then(|i| i16::try_from(i).ok())
                    .ok_or_else(bad)?,
            ),
            ColumnType::Integer => SqlValue::Integer(
                as_i64(v)
                    .and_then(|i| i32::try_from(i).ok())
                    .ok_or_else(bad)?,
            ),
            ColumnType::BigInt => SqlValue::BigInt(as_i64(v).ok_or_else(bad)?),
            ColumnType::Float | ColumnType::Double => {
                let f = match v {
                    Value::Number(n) => n.as_f64(),
                    Value::String(s) => s.trim().parse::<f64>().ok(),
                    Value::Bool(b) => Some(f64::from(u8::from(*b))),
                    _ => None,
                }
                .ok_or_else(bad)?;
                if self == ColumnType::Float {
                    SqlValue::Float(f as f32)
                } else {
                    SqlValue::Double(f)
                }
            }
            ColumnType::Text => match v {
                Value::String(s) => SqlValue::Text(s.clone()),
                Value::Number(n) => SqlValue::Text(n.to_string()),
                _ => return Err(bad()),
            },
            ColumnType::Numeric => {
                let text = match v {
                    Value::Number(n) => n.to_string(),
                    Value::String(s) => s.trim().to_string(),
                    _ => return Err(bad()),
                };
                SqlValue::Numeric(BigDecimal::from_str(&text).map_err(|_| bad())?)
            }
            ColumnType::Date => match v {
                Value::String(s) => SqlValue::Date(
                    NaiveDate::parse_from_str(s.trim(), "%Y-%m-%d")
                        .or_else(|_| parse_datetime(s).map(|t| t.date_naive()))
                        .map_err(|_| bad())?,
                ),
                _ => return Err(bad()),
            },
            ColumnType::Timestamp => match v {
                Value::String(s) => {
                    SqlValue::Timestamp(parse_datetime(s).map_err(|_| bad())?.naive_utc())
                }
                _ => return Err(bad()),
            },
            ColumnType::Timestamptz => match v {
                Value::String(s) => SqlValue::Timestamptz(parse_datetime(s).map_err(|_| bad())?),
                _ => return Err(bad()),
            },
            ColumnType::Uuid => match v {
                Value::String(s) => {
                    SqlValue::Uuid(uuid::Uuid::parse_str(s.trim()).map_err(|_| bad())?)
                }
                _ => return Err(bad()),
            },
            ColumnType::Json | ColumnType::Jsonb => SqlValue::Json(v.clone(), self),
        })
    }

    /// The type's PostgreSQL name, used in error messages and in casts (`CAST(col AS name)`).
    pub fn name(self) -> &'static str {
        match self {
            ColumnType::Bool => "boolean",
            ColumnType::SmallInt => "smallint",
            ColumnType::Integer => "integer",
            ColumnType::BigInt => "bigint",
            ColumnType::Float => "real",
            ColumnType::Double => "double precision",
            ColumnType::Text => "text",
            ColumnType::Numeric => "numeric",
            ColumnType::Date => "date",
            ColumnType::Timestamp => "timestamp",
            ColumnType::Timestamptz => "timestamptz",
            ColumnType::Uuid => "uuid",
            ColumnType::Json => "json",
            ColumnType::Jsonb => "jsonb",
        }
    }

    /// True for the types a primary key may have (integers, text, UUID).
    pub fn can_be_key(self) -> bool {
        matches!(
            self,
            ColumnType::SmallInt
                | ColumnType::Integer
                | ColumnType::BigInt
                | ColumnType::Text
                | ColumnType::Uuid
        )
    }
}

impl SqlValue {
    /// The wire form django-cqrs uses for this value (decimals as numbers, datetimes `str()`-style).
    pub fn to_json(&self) -> Value {
        match self {
            SqlValue::Null(_) => Value::Null,
            SqlValue::Bool(b) => Value::Bool(*b),
            SqlValue::SmallInt(i) => Value::from(*i),
            SqlValue::Integer(i) => Value::from(*i),
            SqlValue::BigInt(i) => Value::from(*i),
            SqlValue::Float(f) => {
                Number::from_f64(f64::from(*f)).map_or(Value::Null, Value::Number)
            }
            SqlValue::Double(f) => Number::from_f64(*f).map_or(Value::Null, Value::Number),
            SqlValue::Text(s) => Value::String(s.clone()),
            // Django sends a decimal through a double (ujson); a number keeps that form.
            SqlValue::Numeric(d) => d
                .to_string()
                .parse::<f64>()
                .ok()
                .and_then(Number::from_f64)
                .map_or_else(|| Value::String(d.to_string()), Value::Number),
            SqlValue::Date(d) => Value::String(d.format("%Y-%m-%d").to_string()),
            SqlValue::Timestamp(t) => Value::String(format_naive_datetime(t)),
            SqlValue::Timestamptz(t) => Value::String(format_datetime(t)),
            SqlValue::Uuid(u) => Value::String(u.hyphenated().to_string()),
            SqlValue::Json(v, _) => v.clone(),
            SqlValue::Array(_, items) => {
                Value::Array(items.iter().map(SqlValue::to_json).collect())
            }
        }
    }

    /// Write [`to_json`](Self::to_json)'s document to `out` without building it (a dump writes
    /// one for every column of every row): the same bytes `serde_json` gives for it.
    pub fn write_json(&self, out: &mut Vec<u8>) {
        use std::io::Write;
        // Writing to a Vec cannot fail.
        let _ = match self {
            SqlValue::Null(_) => out.write_all(b"null"),
            SqlValue::Bool(b) => out.write_all(if *b { b"true" } else { b"false" }),
            SqlValue::SmallInt(i) => write!(out, "{i}"),
            SqlValue::Integer(i) => write!(out, "{i}"),
            SqlValue::BigInt(i) => write!(out, "{i}"),
            SqlValue::Text(s) => serde_json::to_writer(&mut *out, s).map_err(Into::into),
            SqlValue::Timestamptz(t) => {
                serde_json::to_writer(&mut *out, &format_datetime(t)).map_err(Into::into)
            }
            SqlValue::Timestamp(t) => {
                serde_json::to_writer(&mut *out, &format_naive_datetime(t)).map_err(Into::into)
            }
            other => serde_json::to_writer(&mut *out, &other.to_json()).map_err(Into::into),
        };
    }

    /// The column type of this value.
    pub fn column_type(&self) -> ColumnType {
        match self {
            SqlValue::Null(ty) | SqlValue::Json(_, ty) | SqlValue::Array(ty, _) => *ty,
            SqlValue::Bool(_) => ColumnType::Bool,
            SqlValue::SmallInt(_) => ColumnType::SmallInt,
            SqlValue::Integer(_) => ColumnType::Integer,
            SqlValue::BigInt(_) => ColumnType::BigInt,
            SqlValue::Float(_) => ColumnType::Float,
            SqlValue::Double(_) => ColumnType::Double,
            SqlValue::Text(_) => ColumnType::Text,
            SqlValue::Numeric(_) => ColumnType::Numeric,
            SqlValue::Date(_) => ColumnType::Date,
            SqlValue::Timestamp(_) => ColumnType::Timestamp,
            SqlValue::Timestamptz(_) => ColumnType::Timestamptz,
            SqlValue::Uuid(_) => ColumnType::Uuid,
        }
    }

    /// An array of `items`, all of type `ty` (or NULL); a value of another type is an error
    /// naming it, so nothing is bound as the wrong type.
    ///
    /// ```
    /// use cqrs::value::{ColumnType, SqlValue};
    /// let ids = SqlValue::array(ColumnType::BigInt, vec![SqlValue::BigInt(1), SqlValue::BigInt(2)]);
    /// assert!(ids.is_ok());
    /// assert!(SqlValue::array(ColumnType::BigInt, vec![SqlValue::Text("1".into())]).is_err());
    /// ```
    pub fn array(ty: ColumnType, items: Vec<SqlValue>) -> Result<SqlValue, String> {
        let json_kinds = |a: ColumnType| matches!(a, ColumnType::Json | ColumnType::Jsonb);
        match items.iter().find(|v| {
            let t = v.column_type();
            matches!(v, SqlValue::Array(..)) || (t != ty && !(json_kinds(t) && json_kinds(ty)))
        }) {
            Some(v) => Err(format!(
                "a {} value in a {} array: {}",
                v.column_type().name(),
                ty.name(),
                describe(&v.to_json())
            )),
            None => Ok(SqlValue::Array(ty, items)),
        }
    }

    /// The text PostgreSQL's and SQLite's `CAST(col AS TEXT)` give for a key value as we store it.
    pub fn key_text(&self) -> String {
        match self {
            SqlValue::SmallInt(i) => i.to_string(),
            SqlValue::Integer(i) => i.to_string(),
            SqlValue::BigInt(i) => i.to_string(),
            SqlValue::Text(s) => s.clone(),
            SqlValue::Uuid(u) => u.hyphenated().to_string(),
            other => other.to_json().to_string(),
        }
    }

    /// The canonical JSON of a key value: the `pk` column of `cqrs_tombstones` and `cqrs_outbox`.
    pub fn canonical_key(&self) -> String {
        self.to_json().to_string()
    }

    /// True for SQL NULL.
    pub fn is_null(&self) -> bool {
        matches!(self, SqlValue::Null(_))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn django_in_memory_forms_are_accepted() {
        assert_eq!(
            ColumnType::Bool.from_json(&json!(1)).unwrap(),
            SqlValue::Bool(true)
        );
        assert_eq!(
            ColumnType::Double.from_json(&json!(1)).unwrap(),
            SqlValue::Double(1.0)
        );
        assert_eq!(
            ColumnType::Numeric.from_json(&json!(1234.5)).unwrap(),
            SqlValue::Numeric(BigDecimal::from_str("1234.5").unwrap())
        );
        let t = ColumnType::Timestamptz
            .from_json(&json!("2024-02-29T23:59:58Z"))
            .unwrap();
        assert_eq!(t.to_json(), json!("2024-02-29 23:59:58+00:00"));
        let u = ColumnType::Uuid
            .from_json(&json!("644C341F-9F37-4ED0-8B71-FC5DC0F5D81E"))
            .unwrap();
        assert_eq!(
            u.canonical_key(),
            "\"644c341f-9f37-4ed0-8b71-fc5dc0f5d81e\""
        );
        assert_eq!(
            ColumnType::BigInt
                .from_json(&json!("42"))
                .unwrap()
                .canonical_key(),
            "42"
        );
    }

    #[test]
    fn misfits_say_what_and_which_type() {
        let e = ColumnType::SmallInt.from_json(&json!(70000)).unwrap_err();
        assert_eq!(e, "70000 is not a valid smallint");
        assert!(ColumnType::Bool.from_json(&json!(2)).is_err());
        assert!(ColumnType::Date.from_json(&json!("2024-13-01")).is_err());
    }

    #[test]
    fn decimal_goes_out_as_a_number_like_ujson() {
        let d = SqlValue::Numeric(BigDecimal::from_str("10.00").unwrap());
        assert_eq!(d.to_json().to_string(), "10.0");
    }
}
