//! Reading rows of a described table as wire JSON, with the same SQL on both backends' terms.
//!
//! The database renders each row as one JSON document (`json_build_object` on PostgreSQL,
//! `json_object` on SQLite), which is then read back through the column types so values take
//! django-cqrs's wire forms (decimals as numbers, datetimes `str()`-style). Exact decimals are
//! cast to text in SQL first so no digit is lost on the way.

use serde_json::{Map, Value};

use crate::db::Backend;
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
