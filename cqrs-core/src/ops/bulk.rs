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
pub fn dump(
    db: &mut Db,
    spec: &MasterSpec,
    batch: usize,
    out: &mut dyn Write,
    progress: &mut dyn FnMut(usize),
) -> Result<DumpReport> {
    let t = spec.table();
    let backend = db.backend();
    let io = |e: std::io::Error| Error::new(ErrorKind::Io, format!("writing the dump: {e}"));
    writeln!(out, "{}", t.cqrs_id()).map_err(io)?;
    let key = quote(&t.key_column().name);
    let select = format!(
        "SELECT {} FROM {}",
        rows::json_expr(backend, t, rows::all_columns(t)),
        quote(t.table())
    );
    let mut last: Option<SqlValue> = None;
    let mut report = DumpReport::default();
    loop {
        let mut sql = select.clone();
        let mut binds = Vec::new();
        if let Some(k) = last.take() {
            sql.push_str(&format!(" WHERE {key} > "));
            backend.placeholder(1, &mut sql);
            binds.push(k);
        }
        sql.push_str(&format!(" ORDER BY {key} LIMIT {}", batch.max(1)));
        let page = db.load_text(&sql, binds)?;
        for text in &page {
            let row = rows::typed_row(t, text)?;
            let mut data = rows::instance_data(t, &row);
            if let Some(serialize) = spec.hooks_ref().serializer {
                serialize(db.as_dyn(), &mut data)?;
            }
            serde_json::to_writer(&mut *out, &data).map_err(|e| io(e.into()))?;
            out.write_all(b"\n").map_err(io)?;
            last = row[t.key_index()].clone();
        }
        report.rows += page.len();
        progress(report.rows);
        if page.len() < batch.max(1) {
            break;
        }
    }
    out.flush().map_err(io)?;
    Ok(report)
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
                        Change::new(Message::new(SignalType::Save, cqrs_id.clone(), pk, data)),
                    )),
                    None => report
                        .failed
                        .push((line_no, "the row has no primary key field".into())),
                },
                Ok(_) => report.failed.push((line_no, "not a JSON object".into())),
                Err(e) => report.failed.push((line_no, format!("not JSON: {e}"))),
            }
        }
        if pending.len() >= batch.max(1) || (n == 0 && !pending.is_empty()) {
            apply_lines(db, replica.as_ref(), &mut pending, &mut report)?;
            progress(report.lines);
        }
        if n == 0 {
            break;
        }
    }
    Ok(report)
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
