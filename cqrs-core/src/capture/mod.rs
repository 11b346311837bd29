//! Stage 1: Capture: a transaction wrapper that bumps revisions, remembers what was touched and writes
//! one outbox row per touched row with its final state, in the same transaction (ARCHITECTURE.md §4).
//!
//! The application writes its rows with Diesel on the [`Tx`]: [`Tx::insert_into`], [`Tx::update`]
//! and [`Tx::delete`] take what Diesel's own functions take and do the capture step each needs
//! (`statements.rs`). For statements those cannot express it writes on [`Tx::conn`] and tells
//! capture which rows it touches: [`Tx::created`] after an insert, [`Tx::touch`] before an update,
//! [`Tx::delete_key`] to delete, [`Tx::sync`] to re-send. Rows changed with raw SQL that capture
//! is not told about are outside capture: nothing is sent for them until the next captured change
//! or a [`Tx::sync`].
//!
//! Rules kept here: the first touch of an existing row runs `UPDATE .. SET cqrs_revision =
//! cqrs_revision + 1, cqrs_updated = <wall clock>` (the database increments, the row is locked);
//! later touches in the transaction do nothing more; a row created in the transaction stays at
//! revision 0; the touched set is snapshotted at each savepoint and restored if it rolls back; an
//! [`atomic`] nested on the same connection is a savepoint that shares the outer capture;
//! before commit the final states are read in one query per model; create-then-delete sends
//! nothing; update-then-delete sends one DELETE with the last published revision + 1.
//!
//! Here: [`atomic`] and the [`Tx`] operations by key; `statements.rs` the Diesel statements;
//! `commit.rs` builds the messages written at commit; `open.rs` finds the capture a nested
//! [`atomic`] joins.

mod commit;
mod fast;
mod foreign;
mod in_sql;
mod open;
mod statements;
pub mod triggers;

pub use statements::{
    DeleteFrom, InsertInto, InsertReturning, InsertValues, MasterTable, UpdateSet, UpdateSource,
};

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::Arc;

use chrono::{DateTime, SubsecRound, Utc};
use serde::Serialize;
use serde_json::{Map, Value};

use crate::db::{Backend, SqlConn};
use crate::error::{Error, ErrorKind, Result};
use crate::model::{MasterModel, MasterSpec};
use crate::outbox;
use crate::rows::{self, quote};
use crate::value::SqlValue;
use open::{Opened, open_capture};

#[derive(Debug, Clone)]
enum State {
    Created,
    /// First touched in this transaction: the tracked values before it, and the new revision.
    Updated {
        previous: Vec<Option<SqlValue>>,
        /// The revision the row took: checked at commit, since the application's own writes
        /// (`.set(&item)` of a struct with a stale `cqrs_revision`) may have put another back.
        revision: i32,
    },
    Deleted {
        revision: i32,
        updated: DateTime<Utc>,
        last: Map<String, Value>,
    },
}

/// How a row was touched so far, without its remembered values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Touched {
    Created,
    Updated,
    Deleted,
}

#[derive(Debug, Clone)]
struct Touch {
    key: SqlValue,
    state: State,
}

#[derive(Debug, Clone)]
struct SyncRequest {
    cqrs_id: String,
    key: SqlValue,
    queue: Option<String>,
    /// A row gone by commit is skipped (a command syncing a live table), not an error.
    skip_missing: bool,
}

/// What one capture remembers until commit: shared by the [`Tx`]s of nested [`atomic`] calls on
/// the same connection, snapshotted at each savepoint.
#[derive(Debug, Clone, Default)]
struct Capture {
    specs: BTreeMap<String, Arc<MasterSpec>>,
    touched: BTreeMap<(String, String), Touch>,
    order: Vec<(String, String)>,
    syncs: Vec<SyncRequest>,
    /// The transaction depths capture opened itself (its transaction, each savepoint), innermost
    /// last: a deeper depth is a savepoint of the application's.
    own: Vec<u32>,
    /// Nested captures that returned inside a savepoint of the application's (`foreign.rs`).
    watches: Vec<foreign::Watch>,
}

/// The capture side of one database transaction. See the module docs.
pub struct Tx<'c, C: SqlConn + ?Sized> {
    conn: &'c mut C,
    cap: Rc<RefCell<Capture>>,
}

/// Run `f` in a transaction with capture; commit it with its outbox rows if `f` returns `Ok`,
/// roll everything back (and send nothing) if it returns `Err`. Wakes an in-process relay after
/// a commit that wrote rows.
///
/// ```no_run
/// # use cqrs::{Db, capture::atomic};
/// # fn demo<M: cqrs::MasterModel>(db: &mut Db) -> cqrs::Result<()> {
/// atomic(db, |tx| {
///     tx.touch::<M>(&7)?;                       // revision +1 (once), tracked values remembered
///     tx.conn().execute("UPDATE items SET name = 'b' WHERE id = 7", vec![])?; // your Diesel code
///     Ok(())
/// })
/// # }
/// ```
pub fn atomic<C: SqlConn + ?Sized, T>(
    conn: &mut C,
    f: impl FnOnce(&mut Tx<'_, C>) -> Result<T>,
) -> Result<T> {
    run(conn, f, false).map(|(v, _)| v)
}

/// [`atomic`], also returning the ids of the outbox rows it wrote (none when nested: the outer
/// capture writes them), so a command can wait for exactly its own messages to be published.
pub fn atomic_written<C: SqlConn + ?Sized, T>(
    conn: &mut C,
    f: impl FnOnce(&mut Tx<'_, C>) -> Result<T>,
) -> Result<(T, Vec<i64>)> {
    run(conn, f, true)
}

/// Both of the above; the outbox insert reads its ids back only when `want_ids`.
fn run<C: SqlConn + ?Sized, T>(
    conn: &mut C,
    f: impl FnOnce(&mut Tx<'_, C>) -> Result<T>,
    want_ids: bool,
) -> Result<(T, Vec<i64>)> {
    let addr = conn as *const C as *const () as usize;
    if let Some(cap) = open_capture(addr) {
        if cap.try_borrow_mut().is_err() {
            // The outer capture is writing its messages (a serializer hook runs then): what this
            // one touched could no longer be sent.
            return Err(Error::config(
                "cqrs::atomic inside a serializer hook is not supported: the capture is committing",
            ));
        }
        // Nested: a savepoint of the outer transaction, sharing its capture. Inside a
        // savepoint of the application's, what it captures is watched until that one ends.
        foreign::settle(conn, &cap)?;
        let before = foreign::inside_foreign(conn, &cap)?.then(|| cap.borrow().clone());
        let v = Tx {
            conn: &mut *conn,
            cap: cap.clone(),
        }
        .savepoint(f)?;
        if let Some(before) = before {
            foreign::watch(conn, &cap, before)?;
        }
        return Ok((v, Vec::new()));
    }
    let _turn = conn.write_turn()?;
    conn.begin()?;
    let cap = Rc::new(RefCell::new(Capture {
        own: vec![conn.transaction_depth()?],
        ..Capture::default()
    }));
    let _opened = Opened::new(addr, &cap);
    let result = {
        let mut tx = Tx {
            conn: &mut *conn,
            cap,
        };
        f(&mut tx).and_then(|v| {
            if !want_ids && tx.saves_in_sql()? {
                return Ok((v, Vec::new(), true));
            }
            let rows = tx.final_rows()?;
            let ids = if want_ids {
                outbox::enqueue_returning(tx.conn, &rows)?
            } else {
                outbox::enqueue(tx.conn, &rows)?;
                Vec::new()
            };
            Ok((v, ids, !rows.is_empty()))
        })
    };
    match result {
        Ok((v, ids, wrote)) => {
            conn.commit()?;
            if wrote {
                outbox::wakeup().notify();
            }
            Ok((v, ids))
        }
        Err(e) => {
            let _ = conn.rollback();
            Err(e)
        }
    }
}

/// Microseconds: what both databases store, so a message and the row it came from agree.
pub(super) fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}

impl<'c, C: SqlConn + ?Sized> Tx<'c, C> {
    /// The connection, for the application's own statements in this transaction.
    pub fn conn(&mut self) -> &mut C {
        self.conn
    }

    /// The model's spec, remembered for the transaction. A trigger-captured model's triggers are
    /// checked the first time: without them its writes would be sent by nobody.
    fn spec<M: MasterModel>(&mut self) -> Result<Arc<MasterSpec>> {
        foreign::settle(self.conn, &self.cap)?;
        if let Some(spec) = self.cap.borrow().specs.get(M::CQRS_ID) {
            return Ok(spec.clone());
        }
        let spec = Arc::new(M::master_spec());
        if triggers::captures(&spec, self.conn.backend()) {
            triggers::require_installed(self.conn, &spec)?;
        }
        self.cap
            .borrow_mut()
            .specs
            .insert(M::CQRS_ID.to_string(), spec.clone());
        Ok(spec)
    }

    /// True when the database's triggers capture the model, so this transaction must not.
    fn by_trigger(&self, spec: &MasterSpec) -> bool {
        triggers::captures(spec, self.conn.backend())
    }

    fn key(spec: &MasterSpec, key: &impl Serialize) -> Result<SqlValue> {
        let col = spec.table().key_column();
        let json = serde_json::to_value(key)
            .map_err(|e| Error::config(format!("key of {}: {e}", spec.table().cqrs_id())))?;
        col.ty
            .from_json(&json)
            .ok()
            .filter(|k| !k.is_null())
            .ok_or_else(|| {
                Error::config(format!(
                    "{json} is not a valid {} key of {}",
                    col.ty.name(),
                    spec.table().cqrs_id()
                ))
            })
    }

    fn remember(&mut self, cqrs_id: &str, touch: Touch) {
        let k = (cqrs_id.to_string(), touch.key.canonical_key());
        let mut cap = self.cap.borrow_mut();
        if cap.touched.insert(k.clone(), touch).is_none() {
            cap.order.push(k);
        }
    }

    /// How the row was touched so far: created, updated or deleted (`None`: not yet).
    fn state(&self, cqrs_id: &str, key: &SqlValue) -> Option<Touched> {
        self.cap
            .borrow()
            .touched
            .get(&(cqrs_id.to_string(), key.canonical_key()))
            .map(|t| match t.state {
                State::Created => Touched::Created,
                State::Updated { .. } => Touched::Updated,
                State::Deleted { .. } => Touched::Deleted,
            })
    }

    /// Insert a row with `insert` (which returns its primary key) and capture it as created: for
    /// an insert [`Tx::insert_into`] cannot express (raw SQL). Only for rows the statement
    /// inserted: a row that existed would be stamped revision 0. For an upsert, [`Tx::touch_many`]
    /// the keys that may exist first, then call [`Tx::created_many`] with the new ones.
    pub fn create_with<M: MasterModel, K: Serialize, E: Into<Error>>(
        &mut self,
        insert: impl FnOnce(&mut C) -> std::result::Result<K, E>,
    ) -> Result<K> {
        let key = insert(self.conn).map_err(Into::into)?;
        self.created_many::<M>(std::slice::from_ref(&key))?;
        Ok(key)
    }

    /// Capture rows the application inserted: revision 0, `cqrs_updated` now; one SAVE each. The
    /// stamp is written at commit by the statement that also reads the rows' final state (one
    /// round trip for both); a key that names no row fails the commit.
    pub fn created_many<M: MasterModel>(&mut self, keys: &[impl Serialize]) -> Result<()> {
        let spec = self.spec::<M>()?;
        let keys = keys
            .iter()
            .map(|k| Self::key(&spec, k))
            .collect::<Result<Vec<_>>>()?;
        // All checked before any is remembered. A key touched before in this transaction (an
        // upsert that updated it) keeps its bumped revision and tracked values; a created row
        // stays created.
        let mut fresh = Vec::with_capacity(keys.len());
        for key in keys {
            match self.state(M::CQRS_ID, &key) {
                Some(Touched::Deleted) => {
                    return Err(Error::config(format!(
                        "{} pk {} was deleted earlier in this transaction: re-creating a pk in the transaction that deleted it is not supported",
                        M::CQRS_ID,
                        key.canonical_key()
                    )));
                }
                Some(_) => {}
                None => fresh.push(key),
            }
        }
        if self.by_trigger(&spec) {
            return Ok(());
        }
        for key in fresh {
            self.remember(
                M::CQRS_ID,
                Touch {
                    key,
                    state: State::Created,
                },
            );
        }
        Ok(())
    }

    /// [`Tx::created_many`] for one row.
    pub fn created<M: MasterModel>(&mut self, key: &impl Serialize) -> Result<()> {
        self.created_many::<M>(std::slice::from_ref(key))
    }

    /// Capture a row, then run the application's `update` on it: for a statement [`Tx::update`]
    /// cannot express (raw SQL, a join).
    pub fn update_with<M: MasterModel, R, E: Into<Error>>(
        &mut self,
        key: &impl Serialize,
        update: impl FnOnce(&mut C) -> std::result::Result<R, E>,
    ) -> Result<R> {
        self.touch::<M>(key)?;
        update(self.conn).map_err(Into::into)
    }

    /// Capture a row that is about to change (see [`Tx::touch_many`]).
    pub fn touch<M: MasterModel>(&mut self, key: &impl Serialize) -> Result<()> {
        self.touch_many::<M>(std::slice::from_ref(key)).map(drop)
    }

    /// Capture rows about to change (a bulk update: select the keys by your filter, touch them,
    /// then update): on first touch each row's revision is bumped by the database and its
    /// tracked values are remembered; later touches in the transaction change nothing. Returns
    /// how many rows were touched for the first time.
    /// A key that names no row fails.
    pub fn touch_many<M: MasterModel>(&mut self, keys: &[impl Serialize]) -> Result<usize> {
        let spec = self.spec::<M>()?;
        if self.by_trigger(&spec) {
            // The update that follows fires the trigger, which bumps and captures.
            return Ok(0);
        }
        let mut fresh = Vec::new();
        for k in keys {
            let key = Self::key(&spec, k)?;
            match self.state(M::CQRS_ID, &key) {
                None => fresh.push(key),
                Some(Touched::Deleted) => {
                    return Err(Error::config(format!(
                        "{} pk {} was deleted in this transaction",
                        M::CQRS_ID,
                        key.canonical_key()
                    )));
                }
                Some(_) => {}
            }
        }
        fresh.sort_by_key(SqlValue::canonical_key);
        fresh.dedup();
        let t = spec.table();
        let backend = self.conn.backend();
        let tracked: Vec<usize> = spec.tracked_indexes().collect();
        let key_col = t.key_index();
        let mut touched = 0;
        for chunk in fresh.chunks(backend.bind_limit() - 1) {
            let mut sql = format!(
                "UPDATE {} SET cqrs_revision = cqrs_revision + 1, cqrs_updated = ",
                quote(t.table())
            );
            backend.placeholder(1, &mut sql);
            sql.push_str(&format!(" WHERE {}", quote(&t.key_column().name)));
            let mut binds = vec![SqlValue::Timestamptz(now())];
            push_list(backend, &mut sql, &mut binds, 2, t, chunk)?;
            // RETURNING sees the tracked columns before the application's own update runs.
            let rev_col = t.revision_index();
            let cols = [key_col, rev_col].into_iter().chain(
                tracked
                    .iter()
                    .copied()
                    .filter(|c| *c != key_col && *c != rev_col),
            );
            sql.push_str(&format!(" RETURNING {}", rows::json_expr(backend, t, cols)));
            let returned = self.conn.load_text(&sql, binds)?;
            if returned.len() != chunk.len() {
                return Err(missing(M::CQRS_ID, "touched", chunk.len(), returned.len()));
            }
            touched += returned.len();
            for text in returned {
                let row = rows::typed_row(t, &text)?;
                let key = row[key_col].clone().expect("key selected");
                let previous = tracked.iter().map(|&c| row[c].clone()).collect();
                self.remember(
                    M::CQRS_ID,
                    Touch {
                        key,
                        state: State::Updated {
                            previous,
                            revision: revision_of(t, &row),
                        },
                    },
                );
            }
        }
        Ok(touched)
    }

    /// Delete a row by key and capture it; returns false if it did not exist.
    pub fn delete_key<M: MasterModel>(&mut self, key: &impl Serialize) -> Result<bool> {
        self.delete_many::<M>(std::slice::from_ref(key))
            .map(|n| n == 1)
    }

    /// Delete rows and capture them (a bulk delete); returns how many existed.
    pub fn delete_many<M: MasterModel>(&mut self, keys: &[impl Serialize]) -> Result<usize> {
        let spec = self.spec::<M>()?;
        let t = spec.table();
        let backend = self.conn.backend();
        let mut keys = keys
            .iter()
            .map(|k| Self::key(&spec, k))
            .collect::<Result<Vec<_>>>()?;
        keys.sort_by_key(SqlValue::canonical_key);
        keys.dedup();
        let mut deleted = 0;
        let by_trigger = self.by_trigger(&spec);
        for chunk in keys.chunks(backend.bind_limit()) {
            if by_trigger {
                deleted += self.delete_rows(t, chunk)?;
                continue;
            }
            let current = self.read_locked(t, rows::all_columns(t), chunk, true)?;
            deleted += self.delete_rows(t, chunk)?;
            self.record_deleted::<M>(t, current);
        }
        if by_trigger {
            self.forget_syncs(M::CQRS_ID, keys);
        }
        Ok(deleted)
    }

    /// Syncs asked for earlier in the transaction of rows now deleted have nothing left to send
    /// (the atomic path drops those of the rows it records, one by one).
    fn forget_syncs(&mut self, cqrs_id: &str, mut keys: Vec<SqlValue>) {
        keys.sort_by_key(SqlValue::canonical_key);
        self.cap.borrow_mut().syncs.retain(|s| {
            s.cqrs_id != cqrs_id
                || keys
                    .binary_search_by_key(&s.key.canonical_key(), SqlValue::canonical_key)
                    .is_err()
        });
    }

    /// The columns `cols` of the rows of `keys` (one chunk), locked until the transaction ends
    /// (PostgreSQL; SQLite's write transaction already excludes other writers): for a delete,
    /// or, `for_update` false, for an update that leaves the key as it is (which other sessions'
    /// foreign-key checks do not wait for).
    fn read_locked(
        &mut self,
        t: &crate::model::TableSpec,
        cols: impl IntoIterator<Item = usize>,
        keys: &[SqlValue],
        for_delete: bool,
    ) -> Result<Vec<Vec<Option<SqlValue>>>> {
        let backend = self.conn.backend();
        let mut sql = format!(
            "SELECT {} FROM {} WHERE {}",
            rows::json_expr(backend, t, cols),
            quote(t.table()),
            quote(&t.key_column().name)
        );
        let mut binds = Vec::new();
        push_list(backend, &mut sql, &mut binds, 1, t, keys)?;
        sql.push_str(if for_delete {
            backend.for_update()
        } else {
            backend.for_no_key_update()
        });
        self.conn
            .load_text(&sql, binds)?
            .iter()
            .map(|text| rows::typed_row(t, text))
            .collect()
    }

    /// Rows just deleted, as read (locked) before: each DELETE carries the last published
    /// revision + 1, or the one this transaction bumped; a row created here sends nothing.
    fn record_deleted<M: MasterModel>(
        &mut self,
        t: &crate::model::TableSpec,
        gone: Vec<Vec<Option<SqlValue>>>,
    ) {
        let at = now();
        for row in gone {
            let key = row[t.key_index()].clone().expect("key selected");
            let stored_rev = match row[t.revision_index()] {
                Some(SqlValue::Integer(r)) => r,
                _ => 0,
            };
            let id = (M::CQRS_ID.to_string(), key.canonical_key());
            let revision = {
                let mut cap = self.cap.borrow_mut();
                // A sync asked for earlier in the transaction has nothing left to send.
                cap.syncs.retain(|s| !(s.cqrs_id == id.0 && s.key == key));
                match cap.touched.get(&id).map(|t| &t.state) {
                    Some(State::Created) => {
                        // Created here: the replicas never heard of it, so nothing is sent.
                        cap.touched.remove(&id);
                        cap.order.retain(|o| *o != id);
                        continue;
                    }
                    // Bumped here but never published: the DELETE takes the bumped number.
                    Some(State::Updated { .. }) => stored_rev,
                    _ => stored_rev + 1,
                }
            };
            let last = rows::instance_data(t, &row);
            self.remember(
                M::CQRS_ID,
                Touch {
                    key,
                    state: State::Deleted {
                        revision,
                        updated: at,
                        last,
                    },
                },
            );
        }
    }

    /// The tracked values and the revision of rows about to change for the first time in this
    /// transaction, by canonical key, read under lock: what `previous_data` compares their final
    /// state with, and what their revision goes up from.
    fn tracked_before(
        &mut self,
        spec: &MasterSpec,
        keys: &[SqlValue],
    ) -> Result<BTreeMap<String, (Vec<Option<SqlValue>>, i32)>> {
        let t = spec.table();
        let tracked: Vec<usize> = spec.tracked_indexes().collect();
        let (key_col, rev_col) = (t.key_index(), t.revision_index());
        let cols = [key_col, rev_col].into_iter().chain(
            tracked
                .iter()
                .copied()
                .filter(|c| *c != key_col && *c != rev_col),
        );
        Ok(self
            .read_locked(t, cols, keys, false)?
            .into_iter()
            .map(|row| {
                let key = row[key_col].as_ref().expect("key selected").canonical_key();
                let previous = tracked.iter().map(|&c| row[c].clone()).collect();
                (key, (previous, revision_of(t, &row)))
            })
            .collect())
    }

    /// Rows a statement changed for the first time in this transaction: their revision goes up
    /// by one from what it was before the statement (whatever the statement wrote into it) and
    /// `cqrs_updated` is stamped now; remembered with their tracked values from before.
    fn bump_updated<M: MasterModel>(
        &mut self,
        spec: &MasterSpec,
        mut before: BTreeMap<String, (Vec<Option<SqlValue>>, i32)>,
        changed: Vec<SqlValue>,
    ) -> Result<()> {
        let t = spec.table();
        // A row not read under lock (one that appeared after it) has no revision to go up from:
        // it keeps what the bump gives it.
        let wanted: Vec<(SqlValue, Option<i32>)> = changed
            .iter()
            .map(|k| (k.clone(), before.get(&k.canonical_key()).map(|b| b.1 + 1)))
            .collect();
        let got = self.bump_revisions(t, &wanted, now())?;
        for key in changed {
            let canon = key.canonical_key();
            let previous = before.remove(&canon).map(|b| b.0).unwrap_or_default();
            let revision = got.get(&canon).copied().unwrap_or_default();
            self.remember(
                M::CQRS_ID,
                Touch {
                    key,
                    state: State::Updated { previous, revision },
                },
            );
        }
        Ok(())
    }

    /// Bump the revision of each row of `wanted` by one and stamp `cqrs_updated` (one statement
    /// per chunk), then set a row whose result is not the revision wanted for it (the statement
    /// before wrote one of its own) to that one. Returns each row's revision.
    fn bump_revisions(
        &mut self,
        t: &crate::model::TableSpec,
        wanted: &[(SqlValue, Option<i32>)],
        updated: DateTime<Utc>,
    ) -> Result<BTreeMap<String, i32>> {
        let backend = self.conn.backend();
        let key_col = t.key_index();
        let want: BTreeMap<String, Option<i32>> = wanted
            .iter()
            .map(|(k, r)| (k.canonical_key(), *r))
            .collect();
        let keys: Vec<SqlValue> = wanted.iter().map(|(k, _)| k.clone()).collect();
        let mut got = BTreeMap::new();
        let mut off = Vec::new();
        for chunk in keys.chunks(backend.bind_limit() - 1) {
            let mut sql = format!(
                "UPDATE {} SET cqrs_revision = cqrs_revision + 1, cqrs_updated = ",
                quote(t.table())
            );
            backend.placeholder(1, &mut sql);
            sql.push_str(&format!(" WHERE {}", quote(&t.key_column().name)));
            let mut binds = vec![SqlValue::Timestamptz(updated)];
            push_list(backend, &mut sql, &mut binds, 2, t, chunk)?;
            let cols = [key_col, t.revision_index()];
            sql.push_str(&format!(" RETURNING {}", rows::json_expr(backend, t, cols)));
            for text in self.conn.load_text(&sql, binds)? {
                let row = rows::typed_row(t, &text)?;
                let key = row[key_col].clone().expect("key selected");
                let canon = key.canonical_key();
                let has = revision_of(t, &row);
                match want.get(&canon).copied().flatten() {
                    Some(w) if w != has => {
                        off.push((key, w));
                        got.insert(canon, w);
                    }
                    _ => {
                        got.insert(canon, has);
                    }
                }
            }
        }
        // The statement wrote a revision of its own into these: put capture's back.
        for (key, w) in off {
            self.fix_revision(t, key, w)?;
        }
        Ok(got)
    }

    /// Set one row's revision back to what capture gave it.
    pub(super) fn fix_revision(
        &mut self,
        t: &crate::model::TableSpec,
        key: SqlValue,
        want: i32,
    ) -> Result<()> {
        let backend = self.conn.backend();
        let mut sql = format!("UPDATE {} SET cqrs_revision = ", quote(t.table()));
        backend.placeholder(1, &mut sql);
        sql.push_str(&format!(" WHERE {} = ", quote(&t.key_column().name)));
        backend.placeholder(2, &mut sql);
        self.conn
            .exec(&sql, vec![SqlValue::Integer(want), key])
            .map(drop)
    }

    /// `DELETE` the rows of `keys` (one chunk); how many there were.
    fn delete_rows(&mut self, t: &crate::model::TableSpec, keys: &[SqlValue]) -> Result<usize> {
        let backend = self.conn.backend();
        let mut sql = format!(
            "DELETE FROM {} WHERE {}",
            quote(t.table()),
            quote(&t.key_column().name)
        );
        let mut binds = Vec::new();
        push_list(backend, &mut sql, &mut binds, 1, t, keys)?;
        self.conn.exec(&sql, binds)
    }

    /// Send the row's current state as a SYNC at commit: broadcast (`queue` None) or directed to
    /// one replica's queue. The revision does not change.
    pub fn sync<M: MasterModel>(
        &mut self,
        key: &impl Serialize,
        queue: Option<&str>,
    ) -> Result<()> {
        let spec = self.spec::<M>()?;
        let key = Self::key(&spec, key)?;
        self.cap.borrow_mut().syncs.push(SyncRequest {
            cqrs_id: M::CQRS_ID.to_string(),
            key,
            queue: queue.map(str::to_string),
            skip_missing: false,
        });
        Ok(())
    }

    /// [`Tx::sync`] for rows of a model known only by its spec (the `sync` and `diff-sync`
    /// commands), keys already typed. A row deleted since it was selected is skipped with a
    /// warning, as django-cqrs skips it, instead of failing the run.
    pub fn sync_rows(&mut self, spec: &Arc<MasterSpec>, keys: &[SqlValue], queue: Option<&str>) {
        let cqrs_id = spec.table().cqrs_id().to_string();
        let mut cap = self.cap.borrow_mut();
        cap.specs
            .entry(cqrs_id.clone())
            .or_insert_with(|| spec.clone());
        for key in keys {
            cap.syncs.push(SyncRequest {
                cqrs_id: cqrs_id.clone(),
                key: key.clone(),
                queue: queue.map(str::to_string),
                skip_missing: true,
            });
        }
    }

    /// Run `f` in a savepoint: if it fails, its database changes and its touches are undone and
    /// the error is returned; the outer transaction goes on.
    pub fn savepoint<T>(&mut self, f: impl FnOnce(&mut Self) -> Result<T>) -> Result<T> {
        let snapshot = self.cap.borrow().clone();
        self.conn.begin()?;
        let depth = self.conn.transaction_depth()?;
        self.cap.borrow_mut().own.push(depth);
        match f(self) {
            Ok(v) => {
                self.conn.commit()?;
                self.cap.borrow_mut().own.pop();
                Ok(v)
            }
            Err(e) => {
                self.conn.rollback()?;
                *self.cap.borrow_mut() = snapshot;
                Err(e)
            }
        }
    }
}

/// Membership of `keys` in `t`'s key column ([`Backend::member_of`]), placeholders from `first`.
fn push_list(
    backend: Backend,
    sql: &mut String,
    binds: &mut Vec<SqlValue>,
    first: usize,
    t: &crate::model::TableSpec,
    keys: &[SqlValue],
) -> Result<()> {
    binds.extend(backend.member_of(sql, &mut (first - 1), t.key_column().ty, keys)?);
    Ok(())
}

/// The revision column of a row read with it.
pub(super) fn revision_of(t: &crate::model::TableSpec, row: &[Option<SqlValue>]) -> i32 {
    match row[t.revision_index()] {
        Some(SqlValue::Integer(r)) => r,
        _ => 0,
    }
}

fn missing(cqrs_id: &str, what: &str, wanted: usize, found: usize) -> Error {
    Error::new(
        ErrorKind::Database,
        format!("{cqrs_id}: {wanted} row(s) {what}, but only {found} exist"),
    )
}
