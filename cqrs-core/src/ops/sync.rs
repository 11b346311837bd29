//! `sync -c ID --filter JSON`: SYNC messages for the master rows matching a lookup filter, written
//! to the outbox (batch by batch, keyset-paged) so the relay publishes them with confirms.

use std::sync::Arc;

use crate::capture::atomic;
use crate::db::{Db, SqlConn};
use crate::error::Result;
use crate::model::MasterSpec;
use crate::ops::filter;
use crate::rows::{self, quote};
use crate::value::SqlValue;

/// Write a SYNC (directed to `queue`, or broadcast) for every row matching `filter`; returns how many.
pub fn sync(
    db: &mut Db,
    spec: &Arc<MasterSpec>,
    filter_json: &str,
    queue: Option<&str>,
    batch: usize,
    progress: &mut dyn FnMut(usize),
) -> Result<usize> {
    let t = spec.table();
    let backend = db.backend();
    let compiled = filter::compile(t, backend, filter_json, 1)?;
    let key = quote(&t.key_column().name);
    let mut last: Option<SqlValue> = None;
    let mut total = 0;
    loop {
        let mut binds = compiled.binds.clone();
        let mut sql = format!(
            "SELECT {} FROM {} WHERE ({})",
            rows::json_expr(backend, t, [t.key_index()]),
            quote(t.table()),
            compiled.sql
        );
        if let Some(k) = last.take() {
            sql.push_str(&format!(" AND {key} > "));
            binds.push(k);
            backend.placeholder(binds.len(), &mut sql);
        }
        sql.push_str(&format!(" ORDER BY {key} LIMIT {}", batch.max(1)));
        let keys: Vec<SqlValue> = db
            .load_text(&sql, binds)?
            .iter()
            .map(|text| {
                rows::typed_row(t, text)
                    .map(|row| row[t.key_index()].clone().expect("key selected"))
            })
            .collect::<Result<_>>()?;
        if keys.is_empty() {
            break;
        }
        atomic(db, |tx| {
            tx.sync_rows(spec, &keys, queue);
            Ok(())
        })?;
        total += keys.len();
        progress(total);
        last = keys.last().cloned();
        if keys.len() < batch.max(1) {
            break;
        }
    }
    Ok(total)
}
