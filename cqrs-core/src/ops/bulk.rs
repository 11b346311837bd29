//! `bulk-dump` (master) and `bulk-load` (replica) in django-cqrs's dump format (PROTOCOL.md): line 1
//! is the `cqrs_id`, each following line one row's `instance_data` JSON.
//!
//! Dump pages by primary key (keyset, never OFFSET) so memory stays flat whatever the table size;
//! load streams lines and writes one multi-row versioned upsert per batch through the apply engine,
//! so loading the same file twice changes nothing and a newer replica row is never overwritten.

use std::io::{BufRead, Write};

use serde_json::Value;

use crate::db::{Db, SqlConn};
use crate::error::{Error, ErrorKind, Result};
use crate::message::{Message, SignalType};
use crate::model::{Change, MasterSpec, Outcome};
use crate::ops::pages::pages;
use crate::registry::Registry;
use crate::rows::{self, quote};
use crate::value::SqlValue;

/// Counts of a dump.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct DumpReport {
    /// Rows written.
    pub rows: usize,
}

/// Write every row of `spec`'s table to `out`, `batch` rows per query; `progress` gets the running total.
///
/// Without a `serializer` hook (which needs the connection for each row), a second thread reads
/// the next page while this one writes the current one: reading and formatting each take about
/// half of a dump's time on PostgreSQL.
pub fn dump(
    db: &mut Db,
    spec: &MasterSpec,
    batch: usize,
    out: &mut dyn Write,
    progress: &mut dyn FnMut(usize),
) -> Result<DumpReport> {
    let t = spec.table();
    writeln!(out, "{}", t.cqrs_id()).map_err(write_error)?;
    let cols: Vec<usize> = rows::all_columns(t).collect();
    let mut report = DumpReport::default();
    let writer = rows::InstanceWriter::new(t);
    let mut written = |page: &[Vec<Option<SqlValue>>], db: Option<&mut Db>| -> Result<()> {
        write_page(spec, &writer, page, db, out)?;
        report.rows += page.len();
        progress(report.rows);
        Ok(())
    };
    if spec.hooks_ref().serializer.is_some() {
        pages(db, t, &cols, None, batch, |db, page| {
            written(&page, Some(db))
        })?;
    } else {
        std::thread::scope(|s| -> Result<()> {
            let (pages_tx, pages_rx) = std::sync::mpsc::sync_channel(1);
            let reader = s.spawn(|| {
                pages(db, t, &cols, None, batch, move |_, page| {
                    pages_tx
                        .send(page)
                        .map_err(|_| Error::new(ErrorKind::Io, "the dump's writer stopped"))
                })
            });
            let wrote = pages_rx.iter().try_for_each(|page| written(&page, None));
            // After a write error this stops the reader at its next page.
            drop(pages_rx);
            let read = reader.join().expect("the dump's reader does not panic");
            wrote.and(read)
        })?;
    }
    out.flush().map_err(write_error)?;
    Ok(report)
}

fn write_error(e: std::io::Error) -> Error {
    Error::new(ErrorKind::Io, format!("writing the dump: {e}"))
}

/// One dump line per row; `db` is given when the model has a `serializer` hook (`dump` reads
/// such a model on this thread).
fn write_page(
    spec: &MasterSpec,
    writer: &rows::InstanceWriter,
    page: &[Vec<Option<SqlValue>>],
    db: Option<&mut Db>,
    out: &mut dyn Write,
) -> Result<()> {
    let mut buf = Vec::with_capacity(page.len() * 128);
    match spec.hooks_ref().serializer {
        Some(serialize) => {
            let db = db.expect("a model with a serializer hook is dumped with its connection");
            for row in page {
                let mut data = rows::instance_data(spec.table(), row);
                serialize(db.as_dyn(), &mut data)?;
                serde_json::to_writer(&mut buf, &data).map_err(|e| write_error(e.into()))?;
                buf.push(b'\n');
            }
        }
        None => {
            for row in page {
                writer.write(row, &mut buf);
                buf.push(b'\n');
            }
        }
    }
    out.write_all(&buf).map_err(write_error)
}

/// Rows in the master table of `spec`, or those matching a lookup `filter` (for a progress bar's
/// total).
pub fn count(db: &mut Db, spec: &MasterSpec, filter: Option<&str>) -> Result<usize> {
    let t = spec.table();
    let mut sql = format!(
        "SELECT CAST(count(*) AS TEXT) AS j FROM {}",
        quote(t.table())
    );
    let mut binds = Vec::new();
    if let Some(filter) = filter {
        let compiled = crate::ops::filter::compile(t, db.backend(), filter, 1)?;
        sql.push_str(&format!(" WHERE {}", compiled.sql));
        binds = compiled.binds;
    }
    Ok(db
        .load_text(&sql, binds)?
        .first()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0))
}

/// Counts of a load.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct LoadReport {
    /// The model loaded.
    pub cqrs_id: String,
    /// Row lines read.
    pub lines: usize,
    /// Rows written.
    pub applied: usize,
    /// Rows skipped (the replica already had that revision or a newer one).
    pub skipped: usize,
    /// `(line number, reason)` of lines that could not be loaded.
    pub failed: Vec<(usize, String)>,
}

/// Load a dump from `input` into the replica it names, `batch` rows per transaction.
pub fn load(
    db: &mut Db,
    registry: &Registry,
    input: &mut dyn BufRead,
    batch: usize,
    clear: bool,
    progress: &mut dyn FnMut(usize),
) -> Result<LoadReport> {
    let io = |e: std::io::Error| Error::new(ErrorKind::Io, format!("reading the dump: {e}"));
    let mut first = String::new();
    if input.read_line(&mut first).map_err(io)? == 0 || first.trim().is_empty() {
        return Err(Error::config(
            "empty input: a dump starts with its cqrs_id on line 1",
        ));
    }
    let cqrs_id = first.trim().to_string();
    let replica = registry
        .replica_named(&cqrs_id)
        .map_err(|e| e.context("line 1"))?
        .clone();
    if clear {
        db.write_transaction(|db| replica.clear(db))?;
    }
    let mut report = LoadReport {
        cqrs_id: cqrs_id.clone(),
        ..LoadReport::default()
    };
    let replica = replica.as_ref();
    // This thread parses lines while a second one applies the batch before: parsing and the
    // database's upsert each take a large share of a load.
    let applied = std::thread::scope(|s| -> Result<LoadReport> {
        let (batches_tx, batches_rx) = std::sync::mpsc::sync_channel::<Vec<(usize, Change)>>(1);
        let applier = s.spawn(move || -> Result<LoadReport> {
            let mut applied = LoadReport::default();
            for mut pending in batches_rx {
                apply_lines(db, replica, &mut pending, &mut applied)?;
            }
            Ok(applied)
        });
        let read = read_lines(input, replica, batch, &mut report, &mut |pending, lines| {
            progress(lines);
            // A closed channel means the applier stopped on an error, which join returns.
            batches_tx.send(pending).is_ok()
        });
        drop(batches_tx);
        let applied = applier.join().expect("the load's applier does not panic")?;
        read.map(|()| applied)
    })?;
    report.applied = applied.applied;
    report.skipped = applied.skipped;
    report.failed.extend(applied.failed);
    report.failed.sort_by_key(|(line, _)| *line);
    Ok(report)
}

/// Read the row lines after line 1 into batches of `batch` changes for `send` (which gets the
/// lines read so far and returns false to stop); lines that are not rows go to `report.failed`.
fn read_lines(
    input: &mut dyn BufRead,
    replica: &dyn crate::model::Replica,
    batch: usize,
    report: &mut LoadReport,
    send: &mut dyn FnMut(Vec<(usize, Change)>, usize) -> bool,
) -> Result<()> {
    let io = |e: std::io::Error| Error::new(ErrorKind::Io, format!("reading the dump: {e}"));
    let mut pending: Vec<(usize, Change)> = Vec::with_capacity(batch);
    let mut line_no = 1;
    let mut line = String::new();
    loop {
        line.clear();
        let n = input.read_line(&mut line).map_err(io)?;
        if n > 0 {
            line_no += 1;
            let text = line.trim();
            if text.is_empty() {
                continue;
            }
            report.lines += 1;
            match serde_json::from_str::<Value>(text) {
                Ok(Value::Object(data)) => match replica.instance_pk(&data) {
                    Some(pk) => pending.push((
                        line_no,
                        Change::new(Message::new(
                            SignalType::Save,
                            report.cqrs_id.clone(),
                            pk,
                            data,
                        )),
                    )),
                    None => report
                        .failed
                        .push((line_no, "the row has no primary key field".into())),
                },
                Ok(_) => report.failed.push((line_no, "not a JSON object".into())),
                Err(e) => report.failed.push((line_no, format!("not JSON: {e}"))),
            }
        }
        if (pending.len() >= batch.max(1) || (n == 0 && !pending.is_empty()))
            && !send(
                std::mem::replace(&mut pending, Vec::with_capacity(batch)),
                report.lines,
            )
        {
            return Ok(());
        }
        if n == 0 {
            return Ok(());
        }
    }
}

/// One transaction for the batch; if it fails as a whole, each line alone so only bad lines fail.
fn apply_lines(
    db: &mut Db,
    replica: &dyn crate::model::Replica,
    pending: &mut Vec<(usize, Change)>,
    report: &mut LoadReport,
) -> Result<()> {
    let batch = std::mem::take(pending);
    let changes: Vec<&Change> = batch.iter().map(|(_, c)| c).collect();
    let outcomes = match db.write_transaction(|db| replica.apply(db, &changes)) {
        Ok(r) => r.outcomes,
        Err(e) if e.kind() == ErrorKind::Apply && batch.len() > 1 => {
            let mut out = Vec::with_capacity(batch.len());
            for c in &changes {
                out.push(
                    match db.write_transaction(|db| replica.apply(db, std::slice::from_ref(c))) {
                        Ok(mut r) => r.outcomes.remove(0),
                        Err(e) if e.kind() == ErrorKind::Apply => Outcome::Failed(e),
                        Err(e) => return Err(e),
                    },
                );
            }
            out
        }
        Err(e) if e.kind() == ErrorKind::Apply => vec![Outcome::Failed(e)],
        Err(e) => return Err(e),
    };
    for ((line, _), outcome) in batch.iter().zip(outcomes) {
        match outcome {
            Outcome::Applied => report.applied += 1,
            Outcome::Skipped(_) => report.skipped += 1,
            Outcome::Failed(e) => report.failed.push((*line, e.message().to_string())),
        }
    }
    Ok(())
}
