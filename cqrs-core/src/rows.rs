//! Reading rows of a described table as wire JSON, with the same SQL on both backends' terms.
//!
//! Two ways in, both ending in typed values that then take django-cqrs's wire forms (decimals as
//! numbers, datetimes `str()`-style): [`json_expr`] has the database render a row as one JSON
//! document (`json_build_object` / `json_object`; exact decimals cast to text first so no digit is
//! lost), read back through the column types; [`select_list`] with [`load`] reads PostgreSQL's
//! binary values directly, for the paths that read many rows (dump, diff), where building JSON in
//! SQL costs the database far more than finding the rows.

use serde_json::{Map, Value};

use crate::db::{Backend, Db, SqlConn, typed};
use crate::error::{Error, Result};
use crate::model::TableSpec;
use crate::value::SqlValue;

/// Quote a checked identifier.
pub(crate) fn quote(name: &str) -> String {
    format!("\"{name}\"")
}

/// The SQL expression (aliased `j`) that renders the columns `cols` of a row as a JSON text
/// keyed by column name.
pub fn json_expr(
    backend: Backend,
    spec: &TableSpec,
    cols: impl IntoIterator<Item = usize>,
) -> String {
    let parts: Vec<String> = cols
        .into_iter()
        .map(|i| {
            let c = &spec.columns()[i];
            format!(
                "'{}', {}",
                c.name,
                backend.json_value(&quote(&c.name), c.ty)
            )
        })
        .collect();
    backend.json_object(&parts)
}

/// The select list [`load`] reads the columns `cols` of `spec` with: each column cast to its
/// type on PostgreSQL, one JSON document ([`json_expr`]) on SQLite.
pub fn select_list(backend: Backend, spec: &TableSpec, cols: &[usize]) -> String {
    match backend {
        Backend::Postgres => cols
            .iter()
            .map(|&i| {
                let c = &spec.columns()[i];
                format!("CAST({} AS {})", quote(&c.name), c.ty.name())
            })
            .collect::<Vec<_>>()
            .join(", "),
        Backend::Sqlite => json_expr(backend, spec, cols.iter().copied()),
    }
}

/// The rows of `sql`, a query selecting [`select_list`]`(cols)`: typed values by column index of
/// `spec`, `None` for the columns not read.
pub fn load(
    db: &mut Db,
    spec: &TableSpec,
    cols: &[usize],
    sql: &str,
    binds: Vec<SqlValue>,
) -> Result<Vec<Vec<Option<SqlValue>>>> {
    match db {
        Db::Pg(conn) => {
            let types: Vec<_> = cols.iter().map(|&i| spec.columns()[i].ty).collect();
            let rows = typed::load_rows(conn, sql, binds, &types)
                .map_err(|e| e.context(format!("reading {}", spec.table())))?;
            Ok(rows
                .into_iter()
                .map(|values| {
                    let mut row = vec![None; spec.columns().len()];
                    for (&i, v) in cols.iter().zip(values) {
                        row[i] = Some(v);
                    }
                    row
                })
                .collect())
        }
        Db::Sqlite(_) => db
            .load_text(sql, binds)?
            .iter()
            .map(|text| typed_row(spec, text))
            .collect(),
    }
}

/// All columns of `spec`.
pub fn all_columns(spec: &TableSpec) -> std::ops::Range<usize> {
    0..spec.columns().len()
}

/// Typed values of a row rendered by [`json_expr`], by column index (columns absent from the
/// document are `None`).
pub fn typed_row(spec: &TableSpec, text: &str) -> Result<Vec<Option<SqlValue>>> {
    let doc: Map<String, Value> = serde_json::from_str(text).map_err(|e| {
        Error::new(
            crate::error::ErrorKind::Database,
            format!("row of {} is not JSON: {e}", spec.table()),
        )
    })?;
    spec.columns()
        .iter()
        .map(|c| match doc.get(&c.name) {
            None => Ok(None),
            Some(v) => c.ty.from_json(v).map(Some).map_err(|e| {
                Error::new(
                    crate::error::ErrorKind::Database,
                    format!("{}.{}: {e}", spec.table(), c.name),
                )
            }),
        })
        .collect()
}

/// `instance_data` of a typed row: wire names, wire forms (columns not read are left out).
pub fn instance_data(spec: &TableSpec, row: &[Option<SqlValue>]) -> Map<String, Value> {
    spec.columns()
        .iter()
        .zip(row)
        .filter_map(|(c, v)| v.as_ref().map(|v| (c.wire.clone(), v.to_json())))
        .collect()
}

/// Writes rows of a table as their `instance_data` JSON without building a map per row: the
/// bytes serializing [`instance_data`]'s map gives (keys in its sorted order, escaped once),
/// each value written straight from its type.
///
/// ```
/// use cqrs::{TableSpec, rows::{InstanceWriter, instance_data}, value::{ColumnType, SqlValue}};
/// let spec = TableSpec::new("item", "items").key("id", ColumnType::BigInt).build().unwrap();
/// let row = vec![Some(SqlValue::BigInt(1)), Some(SqlValue::Integer(3)), None];
/// let mut out = Vec::new();
/// InstanceWriter::new(&spec).write(&row, &mut out);
/// assert_eq!(out, serde_json::to_vec(&instance_data(&spec, &row)).unwrap());
/// ```
#[derive(Debug, Clone)]
pub struct InstanceWriter {
    /// Column index and its wire name as a JSON string, in the map's key order.
    keys: Vec<(usize, Vec<u8>)>,
}

impl InstanceWriter {
    /// A writer for rows of `spec`.
    pub fn new(spec: &TableSpec) -> InstanceWriter {
        let mut keys: Vec<(usize, Vec<u8>)> = spec
            .columns()
            .iter()
            .enumerate()
            .map(|(i, c)| (i, serde_json::to_vec(&c.wire).expect("a string serializes")))
            .collect();
        keys.sort_by(|a, b| spec.columns()[a.0].wire.cmp(&spec.columns()[b.0].wire));
        InstanceWriter { keys }
    }

    /// Append `row`'s `instance_data` document to `out` (columns not read are left out).
    pub fn write(&self, row: &[Option<SqlValue>], out: &mut Vec<u8>) {
        out.push(b'{');
        let mut first = true;
        for (i, key) in &self.keys {
            if let Some(v) = &row[*i] {
                if !first {
                    out.push(b',');
                }
                first = false;
                out.extend_from_slice(key);
                out.push(b':');
                v.write_json(out);
            }
        }
        out.push(b'}');
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ColumnSpec;
    use crate::value::ColumnType;

    /// Every type, renamed and null columns, text that needs escaping: the writer's bytes are
    /// serde_json's for the map.
    #[test]
    fn instance_writer_writes_what_the_map_serializes_to() {
        let spec = TableSpec::new("item", "items")
            .key("id", ColumnType::BigInt)
            .column(ColumnSpec::new("title", ColumnType::Text).wire("name"))
            .column(ColumnSpec::new("a_flag", ColumnType::Bool))
            .column(ColumnSpec::new("small", ColumnType::SmallInt))
            .column(ColumnSpec::new("count", ColumnType::Integer).nullable())
            .column(ColumnSpec::new("ratio", ColumnType::Float))
            .column(ColumnSpec::new("precise", ColumnType::Double))
            .column(ColumnSpec::new("price", ColumnType::Numeric))
            .column(ColumnSpec::new("born", ColumnType::Date))
            .column(ColumnSpec::new("local", ColumnType::Timestamp))
            .column(ColumnSpec::new("uid", ColumnType::Uuid))
            .column(ColumnSpec::new("doc", ColumnType::Jsonb))
            .column(ColumnSpec::new("Zed", ColumnType::Json))
            .build()
            .unwrap();
        let at = chrono::DateTime::parse_from_rfc3339("2026-12-04T10:11:12.000013+00:00")
            .unwrap()
            .with_timezone(&chrono::Utc);
        let value = |c: &crate::model::ColumnSpec| match c.ty {
            ColumnType::BigInt => SqlValue::BigInt(-9_007_199_254_740_993),
            ColumnType::Text => SqlValue::Text("a \"q\" \\ \u{1} é 🦀\n".into()),
            ColumnType::Bool => SqlValue::Bool(true),
            ColumnType::SmallInt => SqlValue::SmallInt(-7),
            ColumnType::Integer => SqlValue::Null(ColumnType::Integer),
            ColumnType::Float => SqlValue::Float(1.1),
            ColumnType::Double => SqlValue::Double(-0.000_123),
            ColumnType::Numeric => SqlValue::Numeric("1234.50".parse().unwrap()),
            ColumnType::Date => SqlValue::Date(at.date_naive()),
            ColumnType::Timestamp => SqlValue::Timestamp(at.naive_utc()),
            ColumnType::Timestamptz => SqlValue::Timestamptz(at),
            ColumnType::Uuid => SqlValue::Uuid(uuid::Uuid::from_u128(0x1234)),
            ColumnType::Json | ColumnType::Jsonb => {
                SqlValue::Json(serde_json::json!({"b": [1, "x"], "a": null}), c.ty)
            }
        };
        let row: Vec<Option<SqlValue>> = spec.columns().iter().map(|c| Some(value(c))).collect();
        let writer = InstanceWriter::new(&spec);
        let mut out = Vec::new();
        writer.write(&row, &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            serde_json::to_string(&instance_data(&spec, &row)).unwrap()
        );
        let mut partial = row.clone();
        partial[0] = None;
        partial[5] = None;
        let mut out = Vec::new();
        writer.write(&partial, &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            serde_json::to_string(&instance_data(&spec, &partial)).unwrap()
        );
    }
}
