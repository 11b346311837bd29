//! Stage 6: The apply engine: versioned batch upsert, revision-checked delete and tombstones, on
//! PostgreSQL and SQLite (ARCHITECTURE.md §5).
//!
//! A batch is applied in four steps inside the caller's transaction:
//! 1. prepare: each message becomes a typed row (a message with bad data fails alone, here);
//! 2. lock: PostgreSQL advisory transaction locks on every key, in one global order, so two
//!    workers cannot interleave a delete and a save of one row (SQLite's `BEGIN IMMEDIATE` already
//!    serializes writers);
//! 3. decide: the stored revisions and tombstones of all keys are read in one query each, and each
//!    key's messages are replayed in delivery order against them by the rules table, leaving one
//!    final action per key (this is the deduplication: PostgreSQL rejects an upsert touching a row twice);
//! 4. write: one multi-row upsert per set of present columns (on PostgreSQL one statement with a
//!    `type[]` parameter per column, `unnest`ed; on SQLite `VALUES` chunked under the bind limit),
//!    one delete, one tombstone upsert, one tombstone clear.
//!
//! The upsert keeps the revision guard (`WHERE stored.cqrs_revision <= excluded.cqrs_revision`)
//! even though step 3 decided under lock; only a directed SYNC that downgrades runs without it.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};

use crate::db::{self, Backend, Db};
use crate::error::{Error, Result};
use crate::message::SignalType;
use crate::model::{
    ApplyStats, BatchReport, Change, Outcome, Replica, ReplicaHooks, Retry, TableSpec,
};
use crate::rows::quote;
use crate::value::{ColumnType, SqlValue};

/// A table replica: a [`TableSpec`] driven by the apply engine. What `#[derive(Replica)]` produces.
#[derive(Debug, Clone)]
pub struct TableReplica {
    spec: TableSpec,
    hooks: ReplicaHooks,
}

impl TableReplica {
    /// A replica writing the table `spec` describes.
    pub fn new(spec: TableSpec) -> Self {
        TableReplica {
            spec,
            hooks: ReplicaHooks::default(),
        }
    }

    /// Run `hooks` (after-apply, retry policy) with this replica.
    pub fn with_hooks(mut self, hooks: ReplicaHooks) -> Self {
        self.hooks = hooks;
        self
    }

    /// The table description.
    pub fn spec(&self) -> &TableSpec {
        &self.spec
    }
}

impl Replica for TableReplica {
    fn cqrs_id(&self) -> &str {
        self.spec.cqrs_id()
    }

    fn depends_on(&self) -> Vec<String> {
        self.spec.depends_on().to_vec()
    }

    fn apply(&self, db: &mut Db, changes: &[&Change]) -> Result<BatchReport> {
        let report = apply_table(&self.spec, db, changes)?;
        if let Some(after) = self.hooks.after_apply {
            let applied: Vec<&Change> = changes
                .iter()
                .zip(&report.outcomes)
                .filter(|(_, o)| matches!(o, Outcome::Applied))
                .map(|(c, _)| *c)
                .collect();
            if !applied.is_empty() {
                after(db, &applied).map_err(|e| {
                    e.context(format!("after_apply hook of {}", self.spec.cqrs_id()))
                })?;
            }
        }
        Ok(report)
    }

    fn table(&self) -> Option<&TableSpec> {
        Some(&self.spec)
    }

    fn instance_pk(&self, data: &crate::model::InstanceData) -> Option<serde_json::Value> {
        data.get(&self.spec.key_column().wire).cloned()
    }

    fn clear(&self, db: &mut Db) -> Result<()> {
        db.batch_execute(&format!("DELETE FROM {}", quote(self.spec.table())))?;
        let mut sql = String::from("DELETE FROM cqrs_tombstones WHERE cqrs_id = ");
        db.backend().placeholder(1, &mut sql);
        db.execute(&sql, vec![SqlValue::Text(self.spec.cqrs_id().to_string())])?;
        Ok(())
    }

    fn retry(&self, message: &crate::message::Message, error: &Error) -> Retry {
        self.hooks
            .retry
            .map_or(Retry::Default, |f| f(message, error))
    }

    fn only_direct_syncs(&self) -> bool {
        self.hooks.only_direct_syncs
    }
}

enum Op {
    Save {
        sync: bool,
        directed: bool,
        values: Vec<Option<SqlValue>>,
    },
    Delete,
}

struct Prepared {
    /// Index into the caller's `changes`.
    idx: usize,
    key: SqlValue,
    canon: String,
    rev: i32,
    upd: DateTime<Utc>,
    op: Op,
}

fn prepare(spec: &TableSpec, change: &Change) -> Result<Prepared> {
    let msg = &change.message;
    let key_col = spec.key_column();
    let key = key_col
        .ty
        .from_json(&msg.instance_pk)
        .ok()
        .filter(|k| !k.is_null())
        .ok_or_else(|| {
            Error::apply(format!(
                "instance_pk {} is not a valid {} key",
                msg.instance_pk,
                key_col.ty.name()
            ))
        })?;
    let canon = key.canonical_key();
    let rev = msg.revision()?;
    let upd = msg.updated()?;
    let op = match msg.signal_type {
        SignalType::Delete => Op::Delete,
        SignalType::Save | SignalType::Sync => {
            let mut values = Vec::with_capacity(spec.columns().len());
            for (i, col) in spec.columns().iter().enumerate() {
                let value = if i == spec.revision_index() {
                    Some(SqlValue::Integer(rev))
                } else if i == spec.updated_index() {
                    Some(SqlValue::Timestamptz(upd))
                } else {
                    match msg.instance_data.get(&col.wire) {
                        None if i == spec.key_index() => Some(key.clone()),
                        None if col.optional => None,
                        None => {
                            return Err(Error::apply(format!(
                                "instance_data has no `{}` (required by column {}.{})",
                                col.wire,
                                spec.table(),
                                col.name
                            )));
                        }
                        Some(v) => {
                            let value = col.ty.from_json(v).map_err(|e| {
                                Error::apply(format!("instance_data.{}: {e}", col.wire))
                            })?;
                            if value.is_null() && !col.nullable {
                                return Err(Error::apply(format!(
                                    "instance_data.{} is null but column {}.{} is NOT NULL",
                                    col.wire,
                                    spec.table(),
                                    col.name
                                )));
                            }
                            if i == spec.key_index() && value.canonical_key() != canon {
                                return Err(Error::apply(format!(
                                    "instance_data.{} = {} differs from instance_pk {}",
                                    col.wire, v, msg.instance_pk
                                )));
                            }
                            Some(value)
                        }
                    }
                };
                values.push(value);
            }
            Op::Save {
                sync: msg.signal_type == SignalType::Sync,
                directed: change.directed,
                values,
            }
        }
    };
    Ok(Prepared {
        idx: 0,
        key,
        canon,
        rev,
        upd,
        op,
    })
}

/// The stored state of one key, as the rules table sees it.
#[derive(Debug, Clone, Copy, PartialEq)]
enum State {
    Absent,
    Row(i32, DateTime<Utc>),
    Tomb(i32, DateTime<Utc>),
}

/// Apply one message to `state` by the rules of ARCHITECTURE.md §5: the next state, or why it is skipped.
fn step(state: State, p: &Prepared, change: &Change) -> Result<State, &'static str> {
    let (cqrs_id, message_id) = (&change.message.cqrs_id, change.message_id.as_deref());
    let next_row = State::Row(p.rev, p.upd);
    match (&p.op, state) {
        (Op::Save { directed: true, .. }, s) => {
            if let State::Row(have, _) = s
                && p.rev < have
            {
                tracing::warn!(cqrs_id, pk = %p.canon, revision = p.rev, message_id, from = have, "directed SYNC downgrades the replica row");
            }
            Ok(next_row)
        }
        (Op::Save { .. }, State::Absent) => Ok(next_row),
        (Op::Save { sync, .. }, State::Row(have, _)) => {
            if p.rev > have {
                if p.rev > have + 1 {
                    tracing::info!(cqrs_id, pk = %p.canon, revision = p.rev, message_id, have, "revision gap: messages lost or filtered on the master");
                }
                Ok(next_row)
            } else if *sync && p.rev == have {
                Ok(next_row)
            } else if p.rev == have {
                Err("duplicate")
            } else {
                Err("stale revision")
            }
        }
        (Op::Save { .. }, State::Tomb(rev, upd)) => {
            // A later cqrs_updated than the deletion means the pk was re-created on the master.
            if p.rev > rev || p.upd > upd {
                Ok(next_row)
            } else {
                Err("deleted (tombstone)")
            }
        }
        (Op::Delete, State::Row(have, _)) => {
            if p.rev > have {
                Ok(State::Tomb(p.rev, p.upd))
            } else {
                Err("delete older than the row")
            }
        }
        (Op::Delete, State::Absent) => Ok(State::Tomb(p.rev, p.upd)),
        (Op::Delete, State::Tomb(rev, upd)) => {
            if p.rev > rev || p.upd > upd {
                Ok(State::Tomb(p.rev, p.upd))
            } else {
                Err("duplicate delete")
            }
        }
    }
}

/// Keys of one model are locked by stripe, not one by one: PostgreSQL's lock table is shared and
/// small (max_locks_per_transaction x max_connections, 6,400 by default), and a 20,000-row batch
/// must not exhaust it. 128 stripes keep two workers with different keys mostly apart while one
/// batch takes at most 128 locks per model.
const LOCK_STRIPES: u64 = 128;

/// 64-bit FNV-1a: stable across processes and versions, unlike std's hasher.
fn fnv1a(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for (i, part) in parts.iter().enumerate() {
        let sep: &[u8] = if i > 0 { &[0] } else { &[] };
        for b in sep.iter().chain(part.iter()) {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

/// The advisory lock id of a key: its model and its stripe. A shared stripe only serializes
/// two unrelated keys.
fn lock_id(cqrs_id: &str, canon: &str) -> i64 {
    let stripe = fnv1a(&[canon.as_bytes()]) % LOCK_STRIPES;
    fnv1a(&[cqrs_id.as_bytes(), &stripe.to_le_bytes()]) as i64
}

/// `SELECT key, revision, updated` for `keys` from the table (`tombstones` false) or from the
/// model's tombstones, by canonical key.
fn read_states(
    spec: &TableSpec,
    db: &mut Db,
    keys: &[(&SqlValue, &str)],
    tombstones: bool,
) -> Result<HashMap<String, (i32, DateTime<Utc>)>> {
    let backend = db.backend();
    let mut out = HashMap::with_capacity(keys.len());
    let by_text: HashMap<String, &str> = if tombstones {
        keys.iter().map(|(_, c)| ((*c).to_string(), *c)).collect()
    } else {
        keys.iter().map(|(k, c)| (k.key_text(), *c)).collect()
    };
    for chunk in keys.chunks(backend.bind_limit() - 1) {
        let mut sql = String::with_capacity(160);
        let mut n = 0;
        let mut binds = Vec::with_capacity(2);
        let (ty, members): (ColumnType, Vec<SqlValue>) = if tombstones {
            sql.push_str("SELECT pk AS k, revision AS r, cqrs_updated AS u FROM cqrs_tombstones WHERE cqrs_id = ");
            n += 1;
            backend.placeholder(n, &mut sql);
            binds.push(SqlValue::Text(spec.cqrs_id().to_string()));
            sql.push_str(" AND pk");
            let pks = chunk.iter().map(|(_, c)| SqlValue::Text((*c).to_string()));
            (ColumnType::Text, pks.collect())
        } else {
            let key = quote(&spec.key_column().name);
            sql.push_str(&format!(
                "SELECT CAST({key} AS TEXT) AS k, cqrs_revision AS r, cqrs_updated AS u FROM {} WHERE {key}",
                quote(spec.table())
            ));
            let keys = chunk.iter().map(|(k, _)| (*k).clone());
            (spec.key_column().ty, keys.collect())
        };
        binds.extend(backend.member_of(&mut sql, &mut n, ty, &members)?);
        for (text, rev, upd) in db::load_states(db, &sql, binds)? {
            if let Some(canon) = by_text.get(&text) {
                out.insert((*canon).to_string(), (rev, upd));
            }
        }
    }
    Ok(out)
}

/// Apply `changes` of the model `spec` describes. See the module docs for the steps.
pub fn apply_table(spec: &TableSpec, db: &mut Db, changes: &[&Change]) -> Result<BatchReport> {
    let cqrs_id = spec.cqrs_id();
    let mut outcomes: Vec<Option<Outcome>> = (0..changes.len()).map(|_| None).collect();
    let mut stats = ApplyStats::default();
    let mut prepared = Vec::with_capacity(changes.len());
    for (idx, change) in changes.iter().enumerate() {
        if change.message.cqrs_id != cqrs_id {
            return Err(Error::config(format!(
                "replica `{cqrs_id}` was given a `{}` message",
                change.message.cqrs_id
            )));
        }
        match prepare(spec, change) {
            Ok(p) => prepared.push(Prepared { idx, ..p }),
            Err(e) => {
                stats.failed += 1;
                outcomes[idx] = Some(Outcome::Failed(
                    e.context(format!("{cqrs_id} pk {}", change.message.instance_pk)),
                ));
            }
        }
    }

    // Delivery order per key, keys sorted.
    let mut by_key: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, p) in prepared.iter().enumerate() {
        by_key.entry(p.canon.as_str()).or_default().push(i);
    }
    let keys: Vec<(&SqlValue, &str)> = by_key
        .values()
        .map(|v| (&prepared[v[0]].key, prepared[v[0]].canon.as_str()))
        .collect();
    if keys.is_empty() {
        return Ok(finish(outcomes, stats));
    }

    let mut stripes: Vec<i64> = keys.iter().map(|(_, c)| lock_id(cqrs_id, c)).collect();
    stripes.sort_unstable();
    stripes.dedup();
    db.lock_stripes(&stripes)?;
    let rows = read_states(spec, db, &keys, false)?;
    let tombs = read_states(spec, db, &keys, true)?;

    // Decide one final action per key.
    let mut upserts: BTreeMap<(u64, bool), Vec<usize>> = BTreeMap::new();
    let mut row_deletes: Vec<&SqlValue> = Vec::new();
    let mut tomb_writes: Vec<(&str, i32, DateTime<Utc>)> = Vec::new();
    let mut tomb_clears: Vec<&str> = Vec::new();
    for (canon, idxs) in &by_key {
        let row = rows.get(*canon).copied();
        let tomb = tombs.get(*canon).copied();
        let initial = match (row, tomb) {
            (Some((r, u)), _) => State::Row(r, u),
            (None, Some((r, u))) => State::Tomb(r, u),
            (None, None) => State::Absent,
        };
        let mut state = initial;
        let mut writer = None;
        for &i in idxs {
            let p = &prepared[i];
            match step(state, p, changes[p.idx]) {
                Ok(next) => {
                    writer = matches!(next, State::Row(..)).then_some(i);
                    state = next;
                    stats.applied += 1;
                    outcomes[p.idx] = Some(Outcome::Applied);
                }
                Err(reason) => {
                    stats.skipped += 1;
                    outcomes[p.idx] = Some(Outcome::Skipped(reason));
                }
            }
        }
        match state {
            State::Row(rev, _) => {
                if let Some(i) = writer {
                    let Op::Save { values, .. } = &prepared[i].op else {
                        unreachable!("a row comes from a save")
                    };
                    let mask = values
                        .iter()
                        .enumerate()
                        .filter(|(_, v)| v.is_some())
                        .fold(0u64, |m, (c, _)| m | 1 << c);
                    let forced = row.is_some_and(|(have, _)| rev < have);
                    upserts.entry((mask, forced)).or_default().push(i);
                    if tomb.is_some() {
                        tomb_clears.push(canon);
                    }
                }
            }
            State::Tomb(rev, upd) => {
                if row.is_some() {
                    row_deletes.push(&prepared[idxs[0]].key);
                }
                if tomb != Some((rev, upd)) {
                    tomb_writes.push((canon, rev, upd));
                }
            }
            State::Absent => {}
        }
    }

    for ((mask, forced), rows) in &upserts {
        let cols: Vec<usize> = (0..spec.columns().len())
            .filter(|c| mask & (1 << c) != 0)
            .collect();
        let (statements, written) = write_rows(spec, db, &prepared, rows, &cols, *forced)?;
        stats.upsert_statements += statements;
        stats.rows_written += written;
    }
    stats.rows_deleted += delete_rows(spec, db, &row_deletes)?;
    stats.tombstones_written += write_tombstones(spec, db, &tomb_writes)?;
    clear_tombstones(spec, db, &tomb_clears)?;
    Ok(finish(outcomes, stats))
}

fn finish(outcomes: Vec<Option<Outcome>>, stats: ApplyStats) -> BatchReport {
    BatchReport {
        outcomes: outcomes
            .into_iter()
            .map(|o| o.expect("every change gets an outcome"))
            .collect(),
        stats,
    }
}

/// Multi-row `INSERT .. ON CONFLICT (key) DO UPDATE` of `rows` (indexes into `prepared`) over the
/// columns `cols`; returns (statements, rows written).
fn write_rows(
    spec: &TableSpec,
    db: &mut Db,
    prepared: &[Prepared],
    rows: &[usize],
    cols: &[usize],
    forced: bool,
) -> Result<(usize, usize)> {
    let table = quote(spec.table());
    let names: Vec<String> = cols
        .iter()
        .map(|&c| quote(&spec.columns()[c].name))
        .collect();
    let head = format!("INSERT INTO {table} ({})", names.join(","));
    let updates: Vec<String> = cols
        .iter()
        .zip(&names)
        .filter(|(c, _)| **c != spec.key_index())
        .map(|(_, n)| format!("{n} = excluded.{n}"))
        .collect();
    let mut tail = format!(
        " ON CONFLICT ({}) DO UPDATE SET {}",
        quote(&spec.key_column().name),
        updates.join(", ")
    );
    if !forced {
        tail.push_str(&format!(
            " WHERE {table}.cqrs_revision <= excluded.cqrs_revision"
        ));
    }
    let types: Vec<ColumnType> = cols.iter().map(|&c| spec.columns()[c].ty).collect();
    let cell = |r: usize, k: usize| match &prepared[rows[r]].op {
        Op::Save { values, .. } => values[cols[k]].clone().expect("column in the present mask"),
        _ => unreachable!("upserts come from saves"),
    };
    let (mut statements, mut written) = (0, 0);
    for (sql, binds, count) in db
        .backend()
        .insert_rows(&head, &tail, &types, rows.len(), cell)?
    {
        let affected = db
            .execute(&sql, binds)
            .map_err(|e| e.context(format!("writing {count} rows of {}", spec.cqrs_id())))?;
        warn_if_held_back(spec, count, affected);
        statements += 1;
        written += affected;
    }
    Ok((statements, written))
}

/// Rows are decided under the stripe locks, so the guard should never hold one back; if it does,
/// say so (the message is acked as applied, and a later SYNC repairs the row).
fn warn_if_held_back(spec: &TableSpec, expected: usize, affected: usize) {
    if affected != expected {
        tracing::warn!(
            cqrs_id = spec.cqrs_id(),
            expected,
            affected,
            "revision guard held back rows decided under lock"
        );
    }
}

fn delete_rows(spec: &TableSpec, db: &mut Db, keys: &[&SqlValue]) -> Result<usize> {
    let backend = db.backend();
    let mut deleted = 0;
    for chunk in keys.chunks(backend.bind_limit()) {
        let mut sql = format!(
            "DELETE FROM {} WHERE {}",
            quote(spec.table()),
            quote(&spec.key_column().name)
        );
        let members: Vec<SqlValue> = chunk.iter().map(|k| (*k).clone()).collect();
        let binds = backend.member_of(&mut sql, &mut 0, spec.key_column().ty, &members)?;
        deleted += db.execute(&sql, binds)?;
    }
    Ok(deleted)
}

fn write_tombstones(
    spec: &TableSpec,
    db: &mut Db,
    tombs: &[(&str, i32, DateTime<Utc>)],
) -> Result<usize> {
    let now = Utc::now();
    const HEAD: &str =
        "INSERT INTO cqrs_tombstones (cqrs_id, pk, revision, cqrs_updated, deleted_at)";
    const UPSERT: &str = " ON CONFLICT (cqrs_id, pk) DO UPDATE SET revision = excluded.revision, \
         cqrs_updated = excluded.cqrs_updated, deleted_at = excluded.deleted_at";
    const TYPES: [ColumnType; 5] = [
        ColumnType::Text,
        ColumnType::Text,
        ColumnType::Integer,
        ColumnType::Timestamptz,
        ColumnType::Timestamptz,
    ];
    let cell = |r: usize, c: usize| {
        let (canon, rev, upd) = tombs[r];
        match c {
            0 => SqlValue::Text(spec.cqrs_id().to_string()),
            1 => SqlValue::Text(canon.to_string()),
            2 => SqlValue::Integer(rev),
            3 => SqlValue::Timestamptz(upd),
            _ => SqlValue::Timestamptz(now),
        }
    };
    let mut written = 0;
    for (sql, binds, _) in db
        .backend()
        .insert_rows(HEAD, UPSERT, &TYPES, tombs.len(), cell)?
    {
        written += db.execute(&sql, binds)?;
    }
    Ok(written)
}

fn clear_tombstones(spec: &TableSpec, db: &mut Db, keys: &[&str]) -> Result<()> {
    let backend = db.backend();
    for chunk in keys.chunks(backend.bind_limit() - 1) {
        let mut sql = String::from("DELETE FROM cqrs_tombstones WHERE cqrs_id = ");
        backend.placeholder(1, &mut sql);
        sql.push_str(" AND pk");
        let pks: Vec<SqlValue> = chunk
            .iter()
            .map(|c| SqlValue::Text((*c).to_string()))
            .collect();
        let mut binds = vec![SqlValue::Text(spec.cqrs_id().to_string())];
        binds.extend(backend.member_of(&mut sql, &mut 1, ColumnType::Text, &pks)?);
        db.execute(&sql, binds)?;
    }
    Ok(())
}

/// Tombstones deleted per statement when pruning: a short transaction each, so replicas applying
/// at the same time wait for none of them long.
const PRUNE_BATCH: usize = 10_000;

/// Delete the tombstones recorded more than `retention` ago; returns how many. Keep `retention`
/// longer than anything that can still deliver an old message (see
/// [`Settings::tombstone_retention`](crate::config::Settings::tombstone_retention)): a tombstone
/// pruned earlier would let a late SAVE of a deleted row bring it back.
pub fn prune_tombstones(db: &mut Db, retention: std::time::Duration) -> Result<usize> {
    let cutoff = chrono::Duration::from_std(retention)
        .ok()
        .and_then(|r| Utc::now().checked_sub_signed(r))
        .unwrap_or(DateTime::<Utc>::MIN_UTC);
    let backend = db.backend();
    let (mut outer, mut inner) = (String::new(), String::new());
    backend.placeholder(1, &mut outer);
    backend.placeholder(2, &mut inner);
    // What names a tombstone row: PostgreSQL's `ctid`; SQLite's table has no rowid (its key is
    // the primary key), and its `IN (SELECT ..)` is a look-up per row already.
    let (row, columns) = match backend {
        Backend::Postgres => ("ctid", "ctid"),
        Backend::Sqlite => ("(cqrs_id, pk)", "cqrs_id, pk"),
    };
    let batch = format!(
        "SELECT {columns} FROM cqrs_tombstones WHERE deleted_at < {inner} LIMIT {PRUNE_BATCH}"
    );
    // The outer condition again: a tombstone rewritten by an apply meanwhile is kept. The
    // batch is picked by row id (`in_subquery`: one look-up each, not a join over the table).
    let sql = format!(
        "DELETE FROM cqrs_tombstones WHERE deleted_at < {outer} AND {}",
        backend.in_subquery(row, &batch)
    );
    let cutoff = SqlValue::Timestamptz(cutoff);
    let mut pruned = 0;
    loop {
        let binds = vec![cutoff.clone(), cutoff.clone()];
        let n = db.write_transaction(|db| db.execute(&sql, binds))?;
        pruned += n;
        if n < PRUNE_BATCH {
            return Ok(pruned);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_ids_are_stable() {
        assert_eq!(lock_id("item", "1"), lock_id("item", "1"));
        assert_ne!(lock_id("item", "1"), lock_id("other", "1"));
        let stripes: std::collections::HashSet<i64> = (0..10_000)
            .map(|k| lock_id("item", &k.to_string()))
            .collect();
        assert_eq!(
            stripes.len() as u64,
            LOCK_STRIPES,
            "a batch takes at most LOCK_STRIPES locks per model"
        );
    }
}
