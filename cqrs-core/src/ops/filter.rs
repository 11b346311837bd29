//! Django-style lookup filters (`{"price__gte": 10, "name__icontains": "a"}`) checked against a
//! model's known columns and compiled to parameterized SQL for either backend. Values are never
//! formatted into SQL; `%` and `_` in LIKE patterns are escaped; case-sensitive lookups stay
//! case-sensitive on SQLite (whose LIKE ignores ASCII case) by using `instr`/`substr` there.

use serde_json::Value;

use crate::db::Backend;
use crate::db::dialect::TextMatch;
use crate::error::{Error, Result};
use crate::model::{ColumnSpec, TableSpec};
use crate::rows::quote;
use crate::value::{ColumnType, SqlValue};

/// The lookups understood, as Django names them.
pub const LOOKUPS: &[&str] = &[
    "exact",
    "iexact",
    "in",
    "gt",
    "gte",
    "lt",
    "lte",
    "isnull",
    "range",
    "contains",
    "icontains",
    "startswith",
    "istartswith",
    "endswith",
    "iendswith",
];

/// A compiled filter: a `WHERE` condition (without the keyword) and its binds in order.
#[derive(Debug, Clone, PartialEq)]
pub struct Compiled {
    /// SQL condition; `TRUE` (PostgreSQL) / `1` (SQLite) for `{}`.
    pub sql: String,
    /// Binds, numbered from the `first` placeholder given to [`compile`].
    pub binds: Vec<SqlValue>,
}

/// Parse and compile `filter` (a JSON object) for `spec` on `backend`; placeholders start at `first`.
/// Errors are [`crate::ErrorKind::Config`] with a one-line reason.
///
/// ```
/// use cqrs::{db::parse_database_url, ops::filter::compile, TableSpec, ColumnSpec, value::ColumnType};
/// let spec = TableSpec::new("item", "items").key("id", ColumnType::BigInt)
///     .column(ColumnSpec::new("name", ColumnType::Text)).build().unwrap();
/// let (pg, _) = parse_database_url("postgres://localhost/shop").unwrap();
/// let c = compile(&spec, pg, r#"{"name__startswith": "a_"}"#, 1).unwrap();
/// assert_eq!(c.sql, r#""name" LIKE $1 ESCAPE '\'"#);
/// assert!(compile(&spec, pg, r#"{"nope": 1}"#, 1).is_err());
/// ```
pub fn compile(spec: &TableSpec, backend: Backend, filter: &str, first: usize) -> Result<Compiled> {
    let value: Value = serde_json::from_str(filter)
        .map_err(|e| Error::config(format!("filter is not valid JSON: {e}")))?;
    let Value::Object(map) = value else {
        return Err(Error::config(
            "filter must be a JSON object, e.g. {\"id__in\": [1, 2]}",
        ));
    };
    let mut parts = Vec::new();
    let mut binds = Vec::new();
    for (key, v) in &map {
        let (field, lookup) = key
            .rsplit_once("__")
            .filter(|(_, l)| LOOKUPS.contains(l))
            .unwrap_or((key.as_str(), "exact"));
        let col = find_column(spec, field).ok_or_else(|| {
            let known: Vec<&str> = spec.columns().iter().map(|c| c.name.as_str()).collect();
            if key.contains("__")
                && find_column(spec, key.rsplit_once("__").map_or(key.as_str(), |(f, _)| f))
                    .is_some()
            {
                Error::config(format!(
                    "unknown lookup in `{key}` (lookups: {})",
                    LOOKUPS.join(", ")
                ))
            } else {
                Error::config(format!(
                    "unknown column `{field}` in filter (columns: {})",
                    known.join(", ")
                ))
            }
        })?;
        parts.push(condition(backend, col, lookup, key, v, first, &mut binds)?);
    }
    let sql = if parts.is_empty() {
        backend.boolean(true).to_string()
    } else {
        parts.join(" AND ")
    };
    Ok(Compiled { sql, binds })
}

fn find_column<'a>(spec: &'a TableSpec, field: &str) -> Option<&'a ColumnSpec> {
    spec.columns()
        .iter()
        .find(|c| c.name == field)
        .or_else(|| spec.columns().iter().find(|c| c.wire == field))
}

fn typed(col: &ColumnSpec, key: &str, v: &Value) -> Result<SqlValue> {
    col.ty
        .from_json(v)
        .map_err(|e| Error::config(format!("filter `{key}`: {e}")))
}

fn text(col: &ColumnSpec, key: &str, v: &Value) -> Result<String> {
    if col.ty != ColumnType::Text {
        return Err(Error::config(format!(
            "filter `{key}`: this lookup needs a text column, `{}` is {}",
            col.name,
            col.ty.name()
        )));
    }
    v.as_str()
        .map(str::to_string)
        .ok_or_else(|| Error::config(format!("filter `{key}`: expected a string")))
}

fn condition(
    backend: Backend,
    col: &ColumnSpec,
    lookup: &str,
    key: &str,
    v: &Value,
    first: usize,
    binds: &mut Vec<SqlValue>,
) -> Result<String> {
    let c = quote(&col.name);
    let mut ph = |value: SqlValue, binds: &mut Vec<SqlValue>| {
        binds.push(value);
        let mut s = String::new();
        backend.placeholder(first + binds.len() - 1, &mut s);
        s
    };
    let cmp = |op: &str,
               binds: &mut Vec<SqlValue>,
               ph: &mut dyn FnMut(SqlValue, &mut Vec<SqlValue>) -> String|
     -> Result<String> { Ok(format!("{c} {op} {}", ph(typed(col, key, v)?, binds))) };
    Ok(match lookup {
        "exact" if v.is_null() => format!("{c} IS NULL"),
        "exact" => cmp("=", binds, &mut ph)?,
        "gt" => cmp(">", binds, &mut ph)?,
        "gte" => cmp(">=", binds, &mut ph)?,
        "lt" => cmp("<", binds, &mut ph)?,
        "lte" => cmp("<=", binds, &mut ph)?,
        "iexact" => {
            let s = text(col, key, v)?;
            format!("LOWER({c}) = LOWER({})", ph(SqlValue::Text(s), binds))
        }
        "isnull" => match v {
            Value::Bool(true) => format!("{c} IS NULL"),
            Value::Bool(false) => format!("{c} IS NOT NULL"),
            _ => {
                return Err(Error::config(format!(
                    "filter `{key}`: isnull takes true or false"
                )));
            }
        },
        "in" => {
            let Value::Array(items) = v else {
                return Err(Error::config(format!("filter `{key}`: `in` takes a list")));
            };
            if items.is_empty() {
                return Ok(backend.boolean(false).to_string());
            }
            let mut list = Vec::with_capacity(items.len());
            for item in items {
                list.push(ph(typed(col, key, item)?, binds));
            }
            format!("{c} IN ({})", list.join(", "))
        }
        "range" => match v {
            Value::Array(pair) if pair.len() == 2 => {
                let (a, b) = (typed(col, key, &pair[0])?, typed(col, key, &pair[1])?);
                format!("{c} BETWEEN {} AND {}", ph(a, binds), ph(b, binds))
            }
            _ => {
                return Err(Error::config(format!(
                    "filter `{key}`: `range` takes [low, high]"
                )));
            }
        },
        "contains" | "icontains" | "startswith" | "istartswith" | "endswith" | "iendswith" => {
            let s = text(col, key, v)?;
            let how = match lookup.trim_start_matches('i') {
                "contains" => TextMatch::Contains,
                "startswith" => TextMatch::StartsWith,
                _ => TextMatch::EndsWith,
            };
            backend.text_match(&c, how, lookup.starts_with('i'), &s, &mut |value| {
                ph(value, binds)
            })
        }
        other => {
            return Err(Error::config(format!(
                "unknown lookup `{other}` in `{key}` (lookups: {})",
                LOOKUPS.join(", ")
            )));
        }
    })
}
