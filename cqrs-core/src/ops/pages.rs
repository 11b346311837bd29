//! Keyset pages of a model's table, the read side of dump, diff and sync: ordered by primary key,
//! never OFFSET, so memory stays flat and each page is an index range whatever the table's size.

use crate::db::Db;
use crate::error::Result;
use crate::model::TableSpec;
use crate::ops::filter;
use crate::rows::{self, quote};
use crate::value::SqlValue;

/// Keyset pages of a table's rows (the columns `cols`, typed), after an optional filter: `page`
/// gets each page in key order.
pub(crate) fn pages(
    db: &mut Db,
    t: &TableSpec,
    cols: &[usize],
    filter: Option<&filter::Compiled>,
    batch: usize,
    mut page: impl FnMut(&mut Db, Vec<Vec<Option<SqlValue>>>) -> Result<()>,
) -> Result<()> {
    let backend = db.backend();
    let key = quote(&t.key_column().name);
    let mut last: Option<SqlValue> = None;
    loop {
        let mut binds = filter.map(|f| f.binds.clone()).unwrap_or_default();
        let mut sql = format!(
            "SELECT {} FROM {} WHERE ({})",
            rows::select_list(backend, t, cols),
            quote(t.table()),
            filter.map_or(backend.boolean(true), |f| f.sql.as_str())
        );
        if let Some(k) = last.take() {
            binds.push(k);
            sql.push_str(&format!(" AND {key} > "));
            backend.placeholder(binds.len(), &mut sql);
        }
        sql.push_str(&format!(" ORDER BY {key} LIMIT {}", batch.max(1)));
        let rows = rows::load(db, t, cols, &sql, binds)?;
        let n = rows.len();
        last = rows.last().and_then(|r| r[t.key_index()].clone());
        if n > 0 {
            page(db, rows)?;
        }
        if n < batch.max(1) {
            return Ok(());
        }
    }
}
