//! `sync -c ID --filter JSON`: SYNC messages for the master rows matching a lookup filter, written
//! to the outbox (batch by batch, keyset-paged) so the relay publishes them with confirms.

use std::sync::Arc;

use crate::capture::atomic_written;
use crate::config::Settings;
use crate::db::{self, Db, SqlConn};
use crate::error::Result;
use crate::model::MasterSpec;
use crate::ops::filter;
use crate::registry::Registry;
use crate::relay::Relay;
use crate::rows::{self, quote};
use crate::transport::Broker;
use crate::value::SqlValue;

/// The model `cqrs_id` names, once `filter` is known to compile against its columns for the
/// settings' database: every usage error, before anything is connected or written.
pub fn check<'r>(
    registry: &'r Registry,
    settings: &Settings,
    cqrs_id: &str,
    filter: &str,
) -> Result<&'r Arc<MasterSpec>> {
    let spec = registry.master_named(cqrs_id)?;
    let (backend, _) = db::parse_database_url(settings.require_database_url()?)?;
    filter::compile(spec.table(), backend, filter, 1)?;
    Ok(spec)
}

/// `cqrs sync`: SYNC the rows of `spec` matching `filter` (to the settings' queue if set, else
/// broadcast), then, given a `broker`, relay until its own outbox rows are published (the broker confirmed
/// them); without one they wait in the outbox for a relay. Returns how many rows were selected
/// and how many messages were written (fewer when the model does not produce, its filter hides
/// rows, or rows were deleted meanwhile).
pub fn run(
    settings: &Settings,
    broker: Option<&dyn Broker>,
    spec: &Arc<MasterSpec>,
    filter: &str,
    progress: &mut dyn FnMut(usize),
) -> Result<(usize, usize)> {
    let url = settings.require_database_url()?;
    let mut db = Db::connect(url)?;
    let (n, ids) = sync(
        &mut db,
        spec,
        filter,
        settings.queue.as_deref(),
        settings.model(spec.table().cqrs_id()).batch_size(),
        progress,
    )?;
    if let Some(broker) = broker {
        Relay::new(db, broker.publisher()?, settings.clone())
            .reconnect_with(url)
            .drain_rows(&ids)?;
    }
    Ok((n, ids.len()))
}

/// Write a SYNC (directed to `queue`, or broadcast) for every row matching `filter`; returns how
/// many rows were selected and the ids of the outbox rows written (a row deleted meanwhile, or
/// hidden by the model's filter hook, has none).
pub fn sync(
    db: &mut Db,
    spec: &Arc<MasterSpec>,
    filter_json: &str,
    queue: Option<&str>,
    batch: usize,
    progress: &mut dyn FnMut(usize),
) -> Result<(usize, Vec<i64>)> {
    let t = spec.table();
    let backend = db.backend();
    let compiled = filter::compile(t, backend, filter_json, 1)?;
    let key = quote(&t.key_column().name);
    let mut last: Option<SqlValue> = None;
    let mut total = 0;
    let mut written = Vec::new();
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
        let ((), ids) = atomic_written(db, |tx| {
            tx.sync_rows(spec, &keys, queue);
            Ok(())
        })?;
        written.extend(ids);
        total += keys.len();
        progress(total);
        last = keys.last().cloned();
        if keys.len() < batch.max(1) {
            break;
        }
    }
    Ok((total, written))
}
