//! The revision diff pipeline (`diff-master | diff-replica | diff-sync`) and the deleted-rows
//! pipeline (`deleted-diff-replica | deleted-diff-master | deleted-sync-replica`) with
//! django-cqrs's line formats (PROTOCOL.md), so any stage can be swapped with Django's command of
//! the same role. Every stage pages by primary key and compares a whole batch with one query.

use std::collections::HashMap;
use std::io::{BufRead, Write};

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

use crate::config::Settings;
use crate::db::{Db, SqlConn};
use crate::error::{Error, ErrorKind, Result};
use crate::message::format_datetime;
use crate::model::{MasterSpec, TableSpec};
use crate::ops::{filter, pages};
use crate::registry::Registry;
use crate::relay::Relay;
use crate::rows::{self, quote};
use crate::transport::Broker;
use crate::value::SqlValue;

fn io(e: std::io::Error) -> Error {
    Error::new(ErrorKind::Io, format!("pipe: {e}"))
}

/// The header line a pipeline starts with: `<cqrs_id>,<now as Python str()>`.
pub fn header(cqrs_id: &str) -> String {
    format!("{cqrs_id},{}", format_datetime(&Utc::now()))
}

/// Read line 1 of a pipe: `(cqrs_id, last field, the whole line)`.
pub fn read_header(input: &mut dyn BufRead) -> Result<(String, String, String)> {
    let mut line = String::new();
    if input.read_line(&mut line).map_err(io)? == 0 || line.trim().is_empty() {
        return Err(Error::config(
            "empty input: line 1 must be `<cqrs_id>,<timestamp>`",
        ));
    }
    let line = line.trim().to_string();
    let fields: Vec<&str> = line.split(',').collect();
    if fields.len() < 2 || fields[0].is_empty() {
        return Err(Error::config(format!(
            "line 1 {line:?} is not `<cqrs_id>,<timestamp>[,<queue>]`"
        )));
    }
    Ok((
        fields[0].to_string(),
        fields[fields.len() - 1].to_string(),
        line,
    ))
}

/// The JSON array lines after the header, each parsed; a bad line is an error naming its number.
fn for_each_array(
    input: &mut dyn BufRead,
    mut f: impl FnMut(Vec<Value>) -> Result<()>,
) -> Result<()> {
    let mut line = String::new();
    let mut n = 1;
    loop {
        line.clear();
        if input.read_line(&mut line).map_err(io)? == 0 {
            return Ok(());
        }
        n += 1;
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<Value>(line.trim()) {
            Ok(Value::Array(items)) => f(items)?,
            _ => return Err(Error::config(format!("line {n}: expected a JSON array"))),
        }
    }
}

fn key_values(t: &TableSpec, pks: &[Value]) -> Result<Vec<SqlValue>> {
    pks.iter()
        .map(|pk| {
            t.key_column()
                .ty
                .from_json(pk)
                .map_err(|e| Error::config(format!("pk {pk}: {e}")))
        })
        .collect()
}

/// What `diff-master` sends for each row, and so what `diff-replica` compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Compare {
    /// `[pk, revision]`, django-cqrs's format: finds rows whose revision differs or is missing.
    /// A row changed by hand on either side without a new revision is not found.
    #[default]
    Revision,
    /// `[pk, revision, instance_data]` (the document a SYNC would carry, serializer included):
    /// also finds rows whose stored values differ from what applying the master's would write,
    /// compared column by column in the replica's own types. Only cqrs's `diff-replica` reads it;
    /// the pipe carries about a bulk dump's bytes.
    Content,
}

/// Stage 1 of the diff (master): the header, then `[[pk, revision], ...]` per batch (with
/// [`Compare::Content`], `[pk, revision, instance_data]`). Rows the model's `filter` hook
/// (is_sync_instance) rejects are left out, as they are never sent.
pub fn diff_master(
    db: &mut Db,
    spec: &MasterSpec,
    filter_json: Option<&str>,
    compare: Compare,
    batch: usize,
    out: &mut dyn Write,
) -> Result<usize> {
    let t = spec.table();
    let compiled = filter_json
        .map(|f| filter::compile(t, db.backend(), f, 1))
        .transpose()?;
    writeln!(out, "{}", header(t.cqrs_id())).map_err(io)?;
    let hooks = spec.hooks_ref();
    let cols: Vec<usize> = if hooks.filter.is_some() || compare == Compare::Content {
        rows::all_columns(t).collect()
    } else {
        vec![t.key_index(), t.revision_index()]
    };
    let mut total = 0;
    pages::pages(db, t, &cols, compiled.as_ref(), batch, |db, rows| {
        let mut entries = Vec::with_capacity(rows.len());
        for row in rows {
            let data = (hooks.filter.is_some() || compare == Compare::Content)
                .then(|| rows::instance_data(t, &row));
            if let (Some(keep), Some(data)) = (hooks.filter, &data)
                && !keep(data)
            {
                continue;
            }
            let json = |i: usize| row[i].as_ref().map_or(Value::Null, SqlValue::to_json);
            let mut entry = vec![json(t.key_index()), json(t.revision_index())];
            if let (Compare::Content, Some(mut data)) = (compare, data) {
                if let Some(serialize) = hooks.serializer {
                    serialize(db.as_dyn(), &mut data)?;
                }
                entry.push(Value::Object(data));
            }
            entries.push(Value::Array(entry));
        }
        total += entries.len();
        writeln!(out, "{}", Value::Array(entries)).map_err(io)
    })?;
    out.flush().map_err(io)?;
    Ok(total)
}

fn replica_table<'a>(registry: &'a Registry, cqrs_id: &str) -> Result<&'a TableSpec> {
    registry
        .replica_named(cqrs_id)
        .map_err(|e| e.context("line 1"))?
        .table()
        .ok_or_else(|| {
            Error::config(format!(
                "replica {cqrs_id} is not a table: it cannot be diffed"
            ))
        })
}

/// Stored revisions of `keys` in one query: canonical key -> revision.
fn revisions(db: &mut Db, t: &TableSpec, keys: &[SqlValue]) -> Result<HashMap<String, i32>> {
    let mut out = HashMap::with_capacity(keys.len());
    read_rows(db, t, keys, &[t.revision_index()], |k, row| {
        if let Some(SqlValue::Integer(r)) = &row[t.revision_index()] {
            out.insert(k, *r);
        }
    })?;
    Ok(out)
}

/// Revision and `cqrs_updated` of each of `keys` present in `t`.
fn last_states(
    db: &mut Db,
    t: &TableSpec,
    keys: &[SqlValue],
) -> Result<HashMap<String, (i32, DateTime<Utc>)>> {
    let mut out = HashMap::with_capacity(keys.len());
    read_rows(
        db,
        t,
        keys,
        &[t.revision_index(), t.updated_index()],
        |k, row| {
            if let (Some(SqlValue::Integer(r)), Some(SqlValue::Timestamptz(u))) =
                (&row[t.revision_index()], &row[t.updated_index()])
            {
                out.insert(k, (*r, *u));
            }
        },
    )?;
    Ok(out)
}

/// The key and `cols` of each of `keys` present in `t`, as typed rows with their canonical key.
/// A dense batch is read as one key range, so rows between the keys asked for may come too:
/// callers look up the keys they asked for, never iterate what came back.
fn read_rows(
    db: &mut Db,
    t: &TableSpec,
    keys: &[SqlValue],
    cols: &[usize],
    mut each: impl FnMut(String, &[Option<SqlValue>]),
) -> Result<()> {
    let backend = db.backend();
    let read: Vec<usize> = std::iter::once(t.key_index())
        .chain(cols.iter().copied())
        .collect();
    let key = quote(&t.key_column().name);
    for chunk in keys.chunks(backend.bind_limit()) {
        let mut sql = format!(
            "SELECT {} FROM {} WHERE {key}",
            rows::select_list(backend, t, &read),
            quote(t.table()),
        );
        let binds = match dense_range(chunk) {
            // One index range instead of a lookup per key: 10,000 keys 1.9 ms against 17 ms.
            Some((lo, hi)) => {
                sql.push_str(" >= ");
                backend.placeholder(1, &mut sql);
                sql.push_str(&format!(" AND {key} <= "));
                backend.placeholder(2, &mut sql);
                vec![lo, hi]
            }
            None => backend.member_of(&mut sql, &mut 0, t.key_column().ty, chunk)?,
        };
        for row in rows::load(db, t, &read, &sql, binds)? {
            if let Some(k) = &row[t.key_index()] {
                each(k.canonical_key(), &row);
            }
        }
    }
    Ok(())
}

/// The smallest and largest of integer `keys` when the range between them holds at most twice as
/// many values as there are keys (pipeline batches come in key order, usually dense), so reading
/// the range costs less than looking each key up.
fn dense_range(keys: &[SqlValue]) -> Option<(SqlValue, SqlValue)> {
    let int = |k: &SqlValue| match k {
        SqlValue::SmallInt(i) => Some(i64::from(*i)),
        SqlValue::Integer(i) => Some(i64::from(*i)),
        SqlValue::BigInt(i) => Some(*i),
        _ => None,
    };
    let mut lo: Option<(i64, &SqlValue)> = None;
    let mut hi = lo;
    for k in keys {
        let i = int(k)?;
        if lo.is_none_or(|(l, _)| i < l) {
            lo = Some((i, k));
        }
        if hi.is_none_or(|(h, _)| i > h) {
            hi = Some((i, k));
        }
    }
    let ((l, lo), (h, hi)) = (lo?, hi?);
    let span = i128::from(h) - i128::from(l) + 1;
    (span <= 2 * keys.len() as i128).then(|| (lo.clone(), hi.clone()))
}

/// Stored rows of `keys` with every column, by canonical key.
fn stored_rows(
    db: &mut Db,
    t: &TableSpec,
    keys: &[SqlValue],
) -> Result<HashMap<String, Vec<Option<SqlValue>>>> {
    let cols: Vec<usize> = rows::all_columns(t)
        .filter(|&i| i != t.key_index())
        .collect();
    let mut out = HashMap::with_capacity(keys.len());
    read_rows(db, t, keys, &cols, |k, row| {
        out.insert(k, row.to_vec());
    })?;
    Ok(out)
}

/// Whether applying the master's `data` would change a column of the stored `row` (the
/// revision and `cqrs_updated` are compared by the revision check; a column the master does
/// not send is not compared).
fn content_differs(t: &TableSpec, row: &[Option<SqlValue>], data: &Map<String, Value>) -> bool {
    let null = |v: &Option<SqlValue>| v.as_ref().is_none_or(SqlValue::is_null);
    t.columns().iter().enumerate().any(|(i, col)| {
        if i == t.revision_index() || i == t.updated_index() {
            return false;
        }
        let Some(sent) = data.get(&col.wire) else {
            return false;
        };
        match col.ty.from_json(sent) {
            Ok(v) if v.is_null() => !null(&row[i]),
            Ok(v) => row[i].as_ref() != Some(&v),
            Err(_) => true,
        }
    })
}

/// Stage 2 of the diff (replica): echo the header with `,<queue>`, then per input batch the pks
/// whose replica revision differs or is missing (lines only when not empty). Entries that carry
/// the master's `instance_data` ([`Compare::Content`]) are also listed when a stored value
/// differs from it.
pub fn diff_replica(
    db: &mut Db,
    registry: &Registry,
    queue: &str,
    input: &mut dyn BufRead,
    out: &mut dyn Write,
) -> Result<usize> {
    let (cqrs_id, _, line) = read_header(input)?;
    let t = replica_table(registry, &cqrs_id)?.clone();
    writeln!(out, "{line},{queue}").map_err(io)?;
    let mut total = 0;
    for_each_array(input, |entries| {
        let mut pks = Vec::with_capacity(entries.len());
        let mut revs = Vec::with_capacity(entries.len());
        let mut datas = Vec::with_capacity(entries.len());
        for entry in entries {
            let mut e = match entry {
                Value::Array(e) if e.len() == 2 || e.len() == 3 => e.into_iter(),
                other => {
                    return Err(Error::config(format!(
                        "expected [pk, revision] or [pk, revision, instance_data], got {other}"
                    )));
                }
            };
            pks.push(e.next().unwrap_or_default());
            revs.push(e.next().and_then(|r| r.as_i64()));
            datas.push(match e.next() {
                None => None,
                Some(Value::Object(data)) => Some(data),
                Some(other) => {
                    return Err(Error::config(format!(
                        "instance_data of pk {} is not a JSON object: {other}",
                        pks[pks.len() - 1]
                    )));
                }
            });
        }
        let keys = key_values(&t, &pks)?;
        // Revisions alone unless entries carry content: the common pipe reads two columns.
        let with_content = datas.iter().any(Option::is_some);
        let (revs_stored, rows_stored) = if with_content {
            (HashMap::new(), stored_rows(db, &t, &keys)?)
        } else {
            (revisions(db, &t, &keys)?, HashMap::new())
        };
        let mut differ = Vec::new();
        for (((key, pk), rev), data) in keys.iter().zip(pks).zip(revs).zip(datas) {
            let canon = key.canonical_key();
            let row = rows_stored.get(&canon);
            let stored_rev = match row {
                Some(row) => match &row[t.revision_index()] {
                    Some(SqlValue::Integer(r)) => Some(*r),
                    _ => None,
                },
                None => revs_stored.get(&canon).copied(),
            };
            let content = match (row, &data) {
                (Some(row), Some(data)) => content_differs(&t, row, data),
                _ => false,
            };
            if stored_rev.map(i64::from) != rev || content {
                differ.push(pk);
            }
        }
        total += differ.len();
        if !differ.is_empty() {
            writeln!(out, "{}", Value::Array(differ)).map_err(io)?;
        }
        Ok(())
    })?;
    out.flush().map_err(io)?;
    Ok(total)
}

/// `cqrs diff-sync`: [`diff_sync`] on the settings' database and, given a `broker`, each input
/// line's SYNCs relayed with confirms as soon as they are written, so publishing overlaps the
/// upstream stages of a pipeline. Returns `(cqrs_id, queue, rows)`.
pub fn diff_sync_and_publish(
    registry: &Registry,
    settings: &Settings,
    broker: Option<&dyn Broker>,
    input: &mut dyn BufRead,
    progress: &mut dyn FnMut(usize),
) -> Result<(String, Option<String>, usize)> {
    let url = settings.require_database_url()?;
    let mut db = Db::connect(url)?;
    let mut relay = match broker {
        Some(broker) => Some(
            Relay::new(Db::connect(url)?, broker.publisher()?, settings.clone())
                .reconnect_with(url),
        ),
        None => None,
    };
    diff_sync(&mut db, registry, input, progress, &mut |ids| {
        relay.as_mut().map_or(Ok(()), |r| r.drain_rows(ids))
    })
}

/// Stage 3 of the diff (master): directed SYNCs (or broadcast for `None`) for the listed pks,
/// written to the outbox, one transaction per input line; `written` gets the ids of each line's
/// outbox rows once committed (a pk deleted meanwhile has none). Returns `(cqrs_id, queue, rows)`.
pub fn diff_sync(
    db: &mut Db,
    registry: &Registry,
    input: &mut dyn BufRead,
    progress: &mut dyn FnMut(usize),
    written: &mut dyn FnMut(&[i64]) -> Result<()>,
) -> Result<(String, Option<String>, usize)> {
    let (cqrs_id, queue, _) = read_header(input)?;
    let spec = registry
        .master_named(&cqrs_id)
        .map_err(|e| e.context("line 1"))?
        .clone();
    let queue = (queue != "None").then_some(queue);
    let mut total = 0;
    for_each_array(input, |pks| {
        let keys = key_values(spec.table(), &pks)?;
        let ((), ids) = crate::capture::atomic_written(db, |tx| {
            tx.sync_rows(&spec, &keys, queue.as_deref());
            Ok(())
        })?;
        written(&ids)?;
        total += keys.len();
        progress(total);
        Ok(())
    })?;
    Ok((cqrs_id, queue, total))
}

/// Stage 1 of the deleted-rows pipeline (replica): the header, then the replica's pks per batch.
pub fn deleted_diff_replica(
    db: &mut Db,
    registry: &Registry,
    cqrs_id: &str,
    batch: usize,
    out: &mut dyn Write,
) -> Result<usize> {
    let t = replica_table(registry, cqrs_id)
        .map_err(|_| {
            Error::config(format!(
                "unknown cqrs id {cqrs_id:?} (no replica table registered for it)"
            ))
        })?
        .clone();
    writeln!(out, "{}", header(cqrs_id)).map_err(io)?;
    let mut total = 0;
    pages::pages(db, &t, &[t.key_index()], None, batch, |_, rows| {
        let pks: Vec<Value> = rows
            .iter()
            .filter_map(|r| r[t.key_index()].as_ref().map(SqlValue::to_json))
            .collect();
        total += pks.len();
        writeln!(out, "{}", Value::Array(pks)).map_err(io)
    })?;
    out.flush().map_err(io)?;
    Ok(total)
}

/// Stage 2 (master): echo the header, then per batch the pks the master no longer has.
pub fn deleted_diff_master(
    db: &mut Db,
    registry: &Registry,
    input: &mut dyn BufRead,
    out: &mut dyn Write,
) -> Result<usize> {
    let (cqrs_id, _, line) = read_header(input)?;
    let spec = registry
        .master_named(&cqrs_id)
        .map_err(|e| e.context("line 1"))?
        .clone();
    let t = spec.table();
    writeln!(out, "{line}").map_err(io)?;
    let mut total = 0;
    for_each_array(input, |pks| {
        let keys = key_values(t, &pks)?;
        let present = revisions(db, t, &keys)?;
        let gone: Vec<Value> = keys
            .iter()
            .zip(pks)
            .filter(|(k, _)| !present.contains_key(&k.canonical_key()))
            .map(|(_, pk)| pk)
            .collect();
        total += gone.len();
        if !gone.is_empty() {
            writeln!(out, "{}", Value::Array(gone)).map_err(io)?;
        }
        Ok(())
    })?;
    out.flush().map_err(io)?;
    Ok(total)
}

/// Stage 3 (replica): delete the listed rows, leaving tombstones at their revision + 1 so a late
/// older SAVE cannot bring them back. The tombstone's `cqrs_updated` is the row's own (the
/// master's clock at its last change), not the replica's clock: a SAVE of the pk re-created on
/// the master is later than it by the master's clock and applies, whatever the replica's clock
/// says. (A SAVE of the deleted row's one next revision still in flight would apply too, and be
/// removed by the next run of the pipeline.)
pub fn deleted_sync_replica(
    db: &mut Db,
    registry: &Registry,
    input: &mut dyn BufRead,
) -> Result<usize> {
    let (cqrs_id, _, _) = read_header(input)?;
    let replica = registry
        .replica_named(&cqrs_id)
        .map_err(|e| e.context("line 1"))?
        .clone();
    let t = replica_table(registry, &cqrs_id)?.clone();
    let mut total = 0;
    for_each_array(input, |pks| {
        let keys = key_values(&t, &pks)?;
        let stored = last_states(db, &t, &keys)?;
        let changes: Vec<crate::model::Change> = keys
            .iter()
            .zip(&pks)
            .filter_map(|(k, pk)| stored.get(&k.canonical_key()).map(|state| (pk, state)))
            .map(|(pk, (rev, updated))| {
                let mut data = serde_json::Map::new();
                data.insert("id".into(), pk.clone());
                data.insert("cqrs_revision".into(), Value::from(rev.saturating_add(1)));
                data.insert(
                    "cqrs_updated".into(),
                    Value::String(format_datetime(updated)),
                );
                crate::model::Change::new(crate::message::Message::new(
                    crate::message::SignalType::Delete,
                    cqrs_id.clone(),
                    pk.clone(),
                    data,
                ))
            })
            .collect();
        let refs: Vec<&crate::model::Change> = changes.iter().collect();
        let report = db.write_transaction(|db| replica.apply(db, &refs))?;
        total += report.stats.rows_deleted;
        Ok(())
    })?;
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_is_compared_in_the_replicas_types_by_wire_name() {
        use crate::model::ColumnSpec;
        use crate::value::ColumnType;
        let t = TableSpec::new("item", "items")
            .key("id", ColumnType::BigInt)
            .column(ColumnSpec::new("title", ColumnType::Text).wire("name"))
            .column(ColumnSpec::new("price", ColumnType::Numeric).nullable())
            .build()
            .unwrap();
        let mut row = vec![None; t.columns().len()];
        let col = |n: &str| t.columns().iter().position(|c| c.name == n).unwrap();
        row[col("id")] = Some(SqlValue::BigInt(1));
        row[col("title")] = Some(SqlValue::Text("a".into()));
        row[col("price")] = Some(SqlValue::Null(ColumnType::Numeric));
        row[t.revision_index()] = Some(SqlValue::Integer(3));
        let data = |v: Value| v.as_object().unwrap().clone();
        let same =
            data(serde_json::json!({"id": 1, "name": "a", "price": null, "cqrs_revision": 9}));
        assert!(!content_differs(&t, &row, &same), "revision is not content");
        assert!(
            !content_differs(&t, &row, &data(serde_json::json!({"id": 1}))),
            "unsent"
        );
        assert!(content_differs(
            &t,
            &row,
            &data(serde_json::json!({"name": "b"}))
        ));
        assert!(content_differs(
            &t,
            &row,
            &data(serde_json::json!({"price": "1.50"}))
        ));
        assert!(
            content_differs(&t, &row, &data(serde_json::json!({"id": "x"}))),
            "unreadable"
        );
        row[col("price")] = Some(SqlValue::Numeric("1.5".parse().unwrap()));
        assert!(
            !content_differs(&t, &row, &data(serde_json::json!({"price": "1.50"}))),
            "scale"
        );
    }

    #[test]
    fn dense_integer_keys_are_read_as_a_range() {
        let ints = |v: &[i64]| v.iter().map(|i| SqlValue::BigInt(*i)).collect::<Vec<_>>();
        assert_eq!(
            dense_range(&ints(&[7, 3, 4, 6])),
            Some((SqlValue::BigInt(3), SqlValue::BigInt(7)))
        );
        assert_eq!(dense_range(&ints(&[1, 100])), None, "sparse");
        assert_eq!(
            dense_range(&ints(&[i64::MIN, i64::MAX])),
            None,
            "no overflow"
        );
        assert_eq!(
            dense_range(&[SqlValue::Text("a".into())]),
            None,
            "not integers"
        );
        assert_eq!(dense_range(&[]), None);
    }
}
