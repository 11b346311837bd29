//! Captured writes in Diesel's own vocabulary: inside [`atomic`](super::atomic),
//! `tx.insert_into(items::table).values(&new).get_result()`, `tx.update(items::table.find(id))
//! .set(items::value.eq(5)).execute()`, `tx.delete(items::table.filter(..)).execute()`: the
//! Diesel statement, run on the capture's connection, with the capture step it needs done for it.
//!
//! The model is found from the table: `#[derive(Master)]` implements [`MasterTable`] for its
//! `#[diesel(table_name)]` table, so a write to any other table does not compile.
//!
//! What each adds to the Diesel statement it wraps (and why). The statement keeps Diesel's
//! meaning: the rows it changes are the ones Diesel's own statement would change, judged on the
//! rows as they are when it runs, and it returns what Diesel's returns.
//! - insert: `RETURNING` the primary key beside what the caller asked for, to capture the rows as
//!   created.
//! - update: the keys the source selects are read first and those of rows not yet changed in the
//!   transaction locked, with their tracked values (for `previous_data`); then the update runs
//!   on the source narrowed to those keys, the caller's filter judged again on the locked rows,
//!   and for rows changed the first time the same statement bumps `cqrs_revision` and stamps
//!   `cqrs_updated`. `RETURNING` says which rows it changed: only those are captured. A filter on
//!   the revision (optimistic locking) or on a column the application's own triggers maintain
//!   therefore means what it says, and the application's triggers fire once per row.
//! - delete: the keys are read, the rows locked and read (each DELETE carries the row's last
//!   state to the model's hooks), then the source narrowed to those keys is deleted, the filter
//!   judged again: a row that stopped matching is not deleted.
//!
//! With trigger capture (`capture = "trigger"`) the statements run as Diesel's own: the
//! database's triggers capture them.

use std::marker::PhantomData;

use diesel::associations::HasTable;
use diesel::dsl::{Filter, Returning, Select, Update};
use diesel::query_builder::{
    AsChangeset, AsQuery, DeleteStatement, InsertStatement, IntoUpdateTarget, Query,
};
use diesel::query_dsl::methods::{FilterDsl, SelectDsl};
use diesel::query_dsl::{LoadQuery, RunQueryDsl};
use diesel::{Connection, Insertable, Table};
use serde::Serialize;

use super::{Touched, Tx};
use crate::db::SqlConn;
use crate::error::{Error, Result};
use crate::model::MasterModel;
use crate::value::SqlValue;

/// The Diesel table of a master model `M`: what `#[derive(Master)]` implements for the table its
/// `#[diesel(table_name = ..)]` names, so that `tx.insert_into(items::table)` knows which model
/// it captures. Implement it by hand only for a hand-written [`MasterModel`].
///
/// ```ignore
/// impl cqrs::capture::MasterTable<Item> for items::table {
///     type Key = i64;
///     type ByKeys = diesel::dsl::EqAny<items::id, Vec<i64>>;
///     fn by_keys(keys: Vec<i64>) -> Self::ByKeys {
///         items::id.eq_any(keys)
///     }
/// }
/// ```
#[diagnostic::on_unimplemented(
    message = "this Diesel table has no `#[derive(cqrs::Master)]` model to capture its writes",
    label = "captured writes go to a master model's table",
    note = "derive `cqrs::Master` on the table's Diesel model (its `#[diesel(table_name = ..)]` names this table), or write with `tx.conn()` and tell capture with `tx.created`, `tx.touch` or `tx.delete_key`"
)]
pub trait MasterTable<M: MasterModel>: Table {
    /// The Rust type of the model's primary key.
    type Key: Serialize + Clone;
    /// The predicate `primary key IN keys` (Diesel's `eq_any`).
    type ByKeys;

    /// `Self::table().primary_key().eq_any(keys)`: narrows an update to the rows it captured.
    fn by_keys(keys: Vec<Self::Key>) -> Self::ByKeys;
}

/// Keys per narrowed update: far below SQLite's bind limit, which the caller's filter and
/// changes share (PostgreSQL binds the list as one array).
const KEYS_PER_UPDATE: usize = 10_000;

/// The primary key column of a source's table.
type Pk<S> = <<S as HasTable>::Table as Table>::PrimaryKey;

/// A source narrowed to a key list: `pk = ANY($1)` on PostgreSQL, `pk IN (?, ..)` on SQLite.
type ByKeys<S, M> = Filter<S, <<S as HasTable>::Table as MasterTable<M>>::ByKeys>;

impl<'c, C: SqlConn + Connection> Tx<'c, C> {
    /// `INSERT INTO table`, captured: each inserted row is sent as a SAVE at commit.
    ///
    /// ```ignore
    /// let item: Item = tx.insert_into(items::table).values(&new).get_result()?;
    /// let n = tx.insert_into(items::table).values(&batch).execute()?;
    /// let id: i64 = tx.insert_into(items::table).values(&new).returning(items::id).get_result()?;
    /// ```
    pub fn insert_into<T, M>(&mut self, table: T) -> InsertInto<'_, 'c, C, T, M>
    where
        T: MasterTable<M>,
        M: MasterModel,
    {
        InsertInto {
            tx: self,
            table,
            model: PhantomData,
        }
    }

    /// `UPDATE source`, captured: `source` is the table or the table with `find`/`filter`
    /// applied, as for [`diesel::update`]. Each updated row's revision is bumped (once per
    /// transaction) and its new state sent at commit.
    ///
    /// ```ignore
    /// tx.update(items::table.find(id)).set(items::value.eq(12)).execute()?;
    /// tx.update(items::table.filter(items::value.lt(0))).set(items::value.eq(0)).execute()?;
    /// ```
    pub fn update<S, M>(&mut self, source: S) -> UpdateSource<'_, 'c, C, S, M>
    where
        S: HasTable,
        S::Table: MasterTable<M>,
        M: MasterModel,
    {
        UpdateSource {
            tx: self,
            source,
            model: PhantomData,
        }
    }

    /// `DELETE FROM source`, captured: each deleted row is sent as a DELETE at commit (nothing
    /// for a row created in this transaction).
    ///
    /// ```ignore
    /// let gone = tx.delete(items::table.find(id)).execute()?; // 0 or 1
    /// ```
    pub fn delete<S, M>(&mut self, source: S) -> DeleteFrom<'_, 'c, C, S, M>
    where
        S: HasTable,
        S::Table: MasterTable<M>,
        M: MasterModel,
    {
        DeleteFrom {
            tx: self,
            source,
            model: PhantomData,
        }
    }

    /// The keys `source` selects now (no lock: the capture step that follows locks them).
    fn keys_of<'q, S, M>(&mut self, source: S) -> Result<Vec<<S::Table as MasterTable<M>>::Key>>
    where
        S: HasTable + SelectDsl<Pk<S>>,
        S::Table: MasterTable<M>,
        M: MasterModel,
        Select<S, Pk<S>>: LoadQuery<'q, C, <S::Table as MasterTable<M>>::Key>,
    {
        let pk = S::table().primary_key();
        source.select(pk).load(self.conn).map_err(Error::from)
    }
}

impl<'c, C: SqlConn + ?Sized> Tx<'c, C> {
    /// The keys of rows not changed yet in this transaction (their first change bumps the
    /// revision), typed and sorted by their canonical form, and those of rows changed before. A
    /// key deleted in this transaction is an error.
    fn split_touched<M: MasterModel, K: Serialize>(
        &self,
        spec: &crate::model::MasterSpec,
        keys: Vec<K>,
    ) -> Result<(Vec<(SqlValue, K)>, Vec<K>)> {
        let mut fresh = Vec::new();
        let mut again = Vec::new();
        for k in keys {
            let key = Self::key(spec, &k)?;
            match self.state(M::CQRS_ID, &key) {
                None => fresh.push((key, k)),
                Some(Touched::Deleted) => {
                    return Err(Error::config(format!(
                        "{} pk {} was deleted in this transaction",
                        M::CQRS_ID,
                        key.canonical_key()
                    )));
                }
                Some(_) => again.push(k),
            }
        }
        fresh.sort_by_key(|(key, _)| key.canonical_key());
        Ok((fresh, again))
    }
}

/// `tx.insert_into(table)`: give it `.values(..)`.
#[must_use = "an insert does nothing until it is given values and run"]
pub struct InsertInto<'t, 'c, C: SqlConn, T, M> {
    tx: &'t mut Tx<'c, C>,
    table: T,
    model: PhantomData<fn() -> M>,
}

impl<'t, 'c, C, T, M> InsertInto<'t, 'c, C, T, M>
where
    C: SqlConn + Connection,
    T: MasterTable<M>,
    M: MasterModel,
{
    /// The rows to insert: anything Diesel's `values` takes (`&NewItem`, `&[NewItem]`, a tuple
    /// of `column.eq(value)`).
    pub fn values<V: Insertable<T>>(self, records: V) -> InsertValues<'t, 'c, C, T, M, V::Values> {
        InsertValues {
            tx: self.tx,
            pk: self.table.primary_key(),
            statement: diesel::insert_into(self.table).values(records),
            model: PhantomData,
        }
    }
}

/// `tx.insert_into(table).values(..)`: run it with `execute`, `get_result` or `get_results`.
#[must_use = "an insert does nothing until it is run"]
pub struct InsertValues<'t, 'c, C: SqlConn, T: Table, M, U> {
    tx: &'t mut Tx<'c, C>,
    pk: T::PrimaryKey,
    statement: InsertStatement<T, U>,
    model: PhantomData<fn() -> M>,
}

impl<'t, 'c, C, T, M, U> InsertValues<'t, 'c, C, T, M, U>
where
    C: SqlConn + Connection,
    T: MasterTable<M>,
    M: MasterModel,
{
    /// Insert; returns the number of rows inserted.
    pub fn execute<'q>(self) -> Result<usize>
    where
        Returning<InsertStatement<T, U>, T::PrimaryKey>: Query + LoadQuery<'q, C, T::Key>,
    {
        let keys: Vec<T::Key> = self
            .statement
            .returning(self.pk)
            .get_results(self.tx.conn)?;
        self.tx.created_many::<M>(&keys)?;
        Ok(keys.len())
    }

    /// Insert one row; returns it, as Diesel's `get_result` does (all the table's columns).
    pub fn get_result<'q, R>(self) -> Result<R>
    where
        Returning<InsertStatement<T, U>, (T::PrimaryKey, T::AllColumns)>:
            Query + LoadQuery<'q, C, (T::Key, R)>,
    {
        let returned = T::all_columns();
        self.returning(returned).get_result()
    }

    /// Insert rows; returns them (all the table's columns).
    pub fn get_results<'q, R>(self) -> Result<Vec<R>>
    where
        Returning<InsertStatement<T, U>, (T::PrimaryKey, T::AllColumns)>:
            Query + LoadQuery<'q, C, (T::Key, R)>,
    {
        let returned = T::all_columns();
        self.returning(returned).get_results()
    }

    /// What to return instead of the whole row (a column, a tuple, `Item::as_returning()`).
    pub fn returning<E>(self, returned: E) -> InsertReturning<'t, 'c, C, T, M, U, E> {
        InsertReturning {
            tx: self.tx,
            pk: self.pk,
            statement: self.statement,
            returned,
            model: PhantomData,
        }
    }
}

/// `tx.insert_into(table).values(..).returning(..)`: run it with `get_result` or `get_results`.
#[must_use = "an insert does nothing until it is run"]
pub struct InsertReturning<'t, 'c, C: SqlConn, T: Table, M, U, E> {
    tx: &'t mut Tx<'c, C>,
    pk: T::PrimaryKey,
    statement: InsertStatement<T, U>,
    returned: E,
    model: PhantomData<fn() -> M>,
}

impl<'t, 'c, C, T, M, U, E> InsertReturning<'t, 'c, C, T, M, U, E>
where
    C: SqlConn + Connection,
    T: MasterTable<M>,
    M: MasterModel,
{
    /// Insert one row; returns what `returning` named.
    pub fn get_result<'q, R>(self) -> Result<R>
    where
        Returning<InsertStatement<T, U>, (T::PrimaryKey, E)>: Query + LoadQuery<'q, C, (T::Key, R)>,
    {
        self.get_results()?
            .pop()
            .ok_or_else(|| Error::from(diesel::result::Error::NotFound))
    }

    /// Insert rows; returns what `returning` named, per row.
    pub fn get_results<'q, R>(self) -> Result<Vec<R>>
    where
        Returning<InsertStatement<T, U>, (T::PrimaryKey, E)>: Query + LoadQuery<'q, C, (T::Key, R)>,
    {
        let rows: Vec<(T::Key, R)> = self
            .statement
            .returning((self.pk, self.returned))
            .get_results(self.tx.conn)?;
        let (keys, rows): (Vec<_>, Vec<_>) = rows.into_iter().unzip();
        self.tx.created_many::<M>(&keys)?;
        Ok(rows)
    }
}

/// `tx.update(source)`: give it `.set(..)`.
#[must_use = "an update does nothing until it is given changes and run"]
pub struct UpdateSource<'t, 'c, C: SqlConn, S, M> {
    tx: &'t mut Tx<'c, C>,
    source: S,
    model: PhantomData<fn() -> M>,
}

impl<'t, 'c, C, S, M> UpdateSource<'t, 'c, C, S, M>
where
    C: SqlConn + Connection,
    S: HasTable,
    S::Table: MasterTable<M>,
    M: MasterModel,
{
    /// The changes: anything Diesel's `set` takes (`column.eq(value)`, a tuple of them, an
    /// `AsChangeset` struct).
    pub fn set<V>(self, changes: V) -> UpdateSet<'t, 'c, C, S, M, V>
    where
        V: AsChangeset<Target = S::Table>,
    {
        UpdateSet {
            tx: self.tx,
            source: self.source,
            changes,
            model: PhantomData,
        }
    }
}

/// `tx.update(source).set(..)`: run it with `execute`, `get_result` or `get_results`.
#[must_use = "an update does nothing until it is run"]
pub struct UpdateSet<'t, 'c, C: SqlConn, S, M, V> {
    tx: &'t mut Tx<'c, C>,
    source: S,
    changes: V,
    model: PhantomData<fn() -> M>,
}

/// The caller's statement narrowed to the keys it selected, `RETURNING` the key and `E`.
type Narrowed<S, M, V, E> = Returning<Update<ByKeys<S, M>, V>, (Pk<S>, E)>;
/// The caller's own statement, for a model its triggers capture.
type Plain<S, V, E> = Returning<Update<S, V>, (Pk<S>, E)>;
/// All the columns of a source's table.
type AllOf<S> = <<S as HasTable>::Table as Table>::AllColumns;
/// `E` of the rows of keys read again after capture stamped them (the statement's own
/// `RETURNING` saw them before).
type Fresh<S, M, E> = Select<
    Filter<<S as HasTable>::Table, <<S as HasTable>::Table as MasterTable<M>>::ByKeys>,
    (Pk<S>, E),
>;

impl<'t, 'c, C, S, M, V> UpdateSet<'t, 'c, C, S, M, V>
where
    C: SqlConn + Connection,
    S: HasTable
        + Clone
        + IntoUpdateTarget
        + SelectDsl<Pk<S>>
        + FilterDsl<<S::Table as MasterTable<M>>::ByKeys>,
    S::Table: MasterTable<M>,
    M: MasterModel,
    V: AsChangeset<Target = S::Table> + Clone,
    ByKeys<S, M>: IntoUpdateTarget<Table = S::Table>,
    Update<ByKeys<S, M>, V>: AsQuery,
    Update<S, V>: AsQuery,
{
    /// Update; returns the number of rows updated.
    pub fn execute<'q>(self) -> Result<usize>
    where
        Select<S, Pk<S>>: LoadQuery<'q, C, KeyOf<S, M>>,
        Narrowed<S, M, V, Pk<S>>: Query + LoadQuery<'q, C, (KeyOf<S, M>, KeyOf<S, M>)>,
        Plain<S, V, Pk<S>>: Query + LoadQuery<'q, C, (KeyOf<S, M>, KeyOf<S, M>)>,
        S::Table: FilterDsl<<S::Table as MasterTable<M>>::ByKeys>,
        Filter<S::Table, <S::Table as MasterTable<M>>::ByKeys>: SelectDsl<(Pk<S>, Pk<S>)>,
        Fresh<S, M, Pk<S>>: LoadQuery<'q, C, (KeyOf<S, M>, KeyOf<S, M>)>,
    {
        self.run(|| S::table().primary_key(), false)
            .map(|rows| rows.len())
    }

    /// Update; returns the first updated row (all the table's columns), as Diesel's
    /// `get_result` does: `NotFound` when the update matched nothing.
    pub fn get_result<'q, R>(self) -> Result<R>
    where
        Select<S, Pk<S>>: LoadQuery<'q, C, KeyOf<S, M>>,
        Narrowed<S, M, V, AllOf<S>>: Query + LoadQuery<'q, C, (KeyOf<S, M>, R)>,
        Plain<S, V, AllOf<S>>: Query + LoadQuery<'q, C, (KeyOf<S, M>, R)>,
        S::Table: FilterDsl<<S::Table as MasterTable<M>>::ByKeys>,
        Filter<S::Table, <S::Table as MasterTable<M>>::ByKeys>: SelectDsl<(Pk<S>, AllOf<S>)>,
        Fresh<S, M, AllOf<S>>: LoadQuery<'q, C, (KeyOf<S, M>, R)>,
    {
        first(self.get_results()?)
    }

    /// Update; returns the updated rows (all the table's columns).
    pub fn get_results<'q, R>(self) -> Result<Vec<R>>
    where
        Select<S, Pk<S>>: LoadQuery<'q, C, KeyOf<S, M>>,
        Narrowed<S, M, V, AllOf<S>>: Query + LoadQuery<'q, C, (KeyOf<S, M>, R)>,
        Plain<S, V, AllOf<S>>: Query + LoadQuery<'q, C, (KeyOf<S, M>, R)>,
        S::Table: FilterDsl<<S::Table as MasterTable<M>>::ByKeys>,
        Filter<S::Table, <S::Table as MasterTable<M>>::ByKeys>: SelectDsl<(Pk<S>, AllOf<S>)>,
        Fresh<S, M, AllOf<S>>: LoadQuery<'q, C, (KeyOf<S, M>, R)>,
    {
        self.run(S::Table::all_columns, true)
    }

    /// What to return instead of the whole row (a column, a tuple, `Item::as_returning()`).
    pub fn returning<E>(self, returned: E) -> UpdateReturning<'t, 'c, C, S, M, V, E> {
        UpdateReturning {
            update: self,
            returned,
        }
    }

    /// The update, returning `returned` per changed row; see the module docs. `reread`: read
    /// what to return again after the bump, so the revision and time returned are the ones
    /// stored and sent.
    fn run<'q, E, R>(self, returned: impl Fn() -> E, reread: bool) -> Result<Vec<R>>
    where
        Select<S, Pk<S>>: LoadQuery<'q, C, KeyOf<S, M>>,
        Narrowed<S, M, V, E>: Query + LoadQuery<'q, C, (KeyOf<S, M>, R)>,
        Plain<S, V, E>: Query + LoadQuery<'q, C, (KeyOf<S, M>, R)>,
        S::Table: FilterDsl<<S::Table as MasterTable<M>>::ByKeys>,
        (Pk<S>, E): diesel::Expression,
        Filter<S::Table, <S::Table as MasterTable<M>>::ByKeys>: SelectDsl<(Pk<S>, E)>,
        Fresh<S, M, E>: LoadQuery<'q, C, (KeyOf<S, M>, R)>,
    {
        let UpdateSet {
            tx,
            source,
            changes,
            ..
        } = self;
        let pk = || S::table().primary_key();
        let spec = tx.spec::<M>()?;
        if tx.by_trigger(&spec) {
            let rows: Vec<(KeyOf<S, M>, R)> = diesel::update(source)
                .set(changes)
                .returning((pk(), returned()))
                .get_results(tx.conn)?;
            return Ok(rows.into_iter().map(|(_, r)| r).collect());
        }
        let keys = tx.keys_of::<_, M>(source.clone())?;
        let (fresh, again) = tx.split_touched::<M, _>(&spec, keys)?;
        let mut out = Vec::new();
        for chunk in fresh.chunks(KEYS_PER_UPDATE) {
            let (typed, keys): (Vec<_>, Vec<_>) = chunk.iter().cloned().unzip();
            let before = tx.tracked_before(&spec, &typed)?;
            let narrowed = source.clone().filter(S::Table::by_keys(keys));
            let rows: Vec<(KeyOf<S, M>, R)> = diesel::update(narrowed)
                .set(changes.clone())
                .returning((pk(), returned()))
                .get_results(tx.conn)?;
            let changed = rows
                .iter()
                .map(|(k, _)| Tx::<C>::key(&spec, k))
                .collect::<Result<Vec<_>>>()?;
            // Bumped after the statement, which judged its filter on the rows as they were.
            tx.bump_updated::<M>(&spec, before, changed)?;
            if reread && !rows.is_empty() {
                let keys = rows.into_iter().map(|(k, _)| k).collect();
                let rows: Vec<(KeyOf<S, M>, R)> = S::table()
                    .filter(S::Table::by_keys(keys))
                    .select((pk(), returned()))
                    .load(tx.conn)?;
                out.extend(rows.into_iter().map(|(_, r)| r));
            } else {
                out.extend(rows.into_iter().map(|(_, r)| r));
            }
        }
        for chunk in again.chunks(KEYS_PER_UPDATE) {
            let narrowed = source.clone().filter(S::Table::by_keys(chunk.to_vec()));
            let rows: Vec<(KeyOf<S, M>, R)> = diesel::update(narrowed)
                .set(changes.clone())
                .returning((pk(), returned()))
                .get_results(tx.conn)?;
            out.extend(rows.into_iter().map(|(_, r)| r));
        }
        Ok(out)
    }
}

/// `tx.update(source).set(..).returning(..)`: run it with `get_result` or `get_results`.
#[must_use = "an update does nothing until it is run"]
pub struct UpdateReturning<'t, 'c, C: SqlConn, S, M, V, E> {
    update: UpdateSet<'t, 'c, C, S, M, V>,
    returned: E,
}

impl<'t, 'c, C, S, M, V, E> UpdateReturning<'t, 'c, C, S, M, V, E>
where
    C: SqlConn + Connection,
    S: HasTable
        + Clone
        + IntoUpdateTarget
        + SelectDsl<Pk<S>>
        + FilterDsl<<S::Table as MasterTable<M>>::ByKeys>,
    S::Table: MasterTable<M>,
    M: MasterModel,
    V: AsChangeset<Target = S::Table> + Clone,
    ByKeys<S, M>: IntoUpdateTarget<Table = S::Table>,
    Update<ByKeys<S, M>, V>: AsQuery,
    Update<S, V>: AsQuery,
    E: Clone,
{
    /// Update; returns what `returning` named of the first updated row (`NotFound`: none).
    pub fn get_result<'q, R>(self) -> Result<R>
    where
        Select<S, Pk<S>>: LoadQuery<'q, C, KeyOf<S, M>>,
        Narrowed<S, M, V, E>: Query + LoadQuery<'q, C, (KeyOf<S, M>, R)>,
        Plain<S, V, E>: Query + LoadQuery<'q, C, (KeyOf<S, M>, R)>,
        S::Table: FilterDsl<<S::Table as MasterTable<M>>::ByKeys>,
        (Pk<S>, E): diesel::Expression,
        Filter<S::Table, <S::Table as MasterTable<M>>::ByKeys>: SelectDsl<(Pk<S>, E)>,
        Fresh<S, M, E>: LoadQuery<'q, C, (KeyOf<S, M>, R)>,
    {
        first(self.get_results()?)
    }

    /// Update; returns what `returning` named, per updated row.
    pub fn get_results<'q, R>(self) -> Result<Vec<R>>
    where
        Select<S, Pk<S>>: LoadQuery<'q, C, KeyOf<S, M>>,
        Narrowed<S, M, V, E>: Query + LoadQuery<'q, C, (KeyOf<S, M>, R)>,
        Plain<S, V, E>: Query + LoadQuery<'q, C, (KeyOf<S, M>, R)>,
        S::Table: FilterDsl<<S::Table as MasterTable<M>>::ByKeys>,
        (Pk<S>, E): diesel::Expression,
        Filter<S::Table, <S::Table as MasterTable<M>>::ByKeys>: SelectDsl<(Pk<S>, E)>,
        Fresh<S, M, E>: LoadQuery<'q, C, (KeyOf<S, M>, R)>,
    {
        let returned = self.returned;
        self.update.run(move || returned.clone(), true)
    }
}

/// Diesel's `get_result` of a statement's rows: the first, `NotFound` without one.
fn first<R>(rows: Vec<R>) -> Result<R> {
    rows.into_iter()
        .next()
        .ok_or_else(|| Error::from(diesel::result::Error::NotFound))
}

/// `tx.delete(source)`: run it with `execute`.
#[must_use = "a delete does nothing until it is run"]
pub struct DeleteFrom<'t, 'c, C: SqlConn, S, M> {
    tx: &'t mut Tx<'c, C>,
    source: S,
    model: PhantomData<fn() -> M>,
}

/// A delete `RETURNING` the key.
type Deleting<S, T> =
    Returning<DeleteStatement<<S as HasTable>::Table, <T as IntoUpdateTarget>::WhereClause>, Pk<S>>;

impl<'t, 'c, C, S, M> DeleteFrom<'t, 'c, C, S, M>
where
    C: SqlConn + Connection,
    S: HasTable
        + Clone
        + IntoUpdateTarget
        + SelectDsl<Pk<S>>
        + FilterDsl<<S::Table as MasterTable<M>>::ByKeys>,
    S::Table: MasterTable<M>,
    M: MasterModel,
    ByKeys<S, M>: IntoUpdateTarget<Table = S::Table>,
{
    /// Delete; returns the number of rows deleted.
    pub fn execute<'q>(self) -> Result<usize>
    where
        Select<S, Pk<S>>: LoadQuery<'q, C, KeyOf<S, M>>,
        Deleting<S, S>: Query + LoadQuery<'q, C, KeyOf<S, M>>,
        Deleting<S, ByKeys<S, M>>: Query + LoadQuery<'q, C, KeyOf<S, M>>,
    {
        let DeleteFrom { tx, source, .. } = self;
        let pk = || S::table().primary_key();
        let spec = tx.spec::<M>()?;
        if tx.by_trigger(&spec) {
            let gone: Vec<KeyOf<S, M>> = diesel::delete(source)
                .returning(pk())
                .get_results(tx.conn)?;
            let typed = gone
                .iter()
                .map(|k| Tx::<C>::key(&spec, k))
                .collect::<Result<Vec<_>>>()?;
            tx.forget_syncs(M::CQRS_ID, typed);
            return Ok(gone.len());
        }
        let t = spec.table();
        let mut keys = tx
            .keys_of::<_, M>(source.clone())?
            .into_iter()
            .map(|k| Ok((Tx::<C>::key(&spec, &k)?, k)))
            .collect::<Result<Vec<_>>>()?;
        keys.sort_by_key(|(typed, _)| typed.canonical_key());
        let mut deleted = 0;
        for chunk in keys.chunks(KEYS_PER_UPDATE) {
            let (typed, keys): (Vec<_>, Vec<_>) = chunk.iter().cloned().unzip();
            let rows = tx.read_locked(t, crate::rows::all_columns(t), &typed, true)?;
            let narrowed = source.clone().filter(S::Table::by_keys(keys));
            let gone: Vec<KeyOf<S, M>> = diesel::delete(narrowed)
                .returning(pk())
                .get_results(tx.conn)?;
            let mut gone = gone
                .iter()
                .map(|k| Ok(Tx::<C>::key(&spec, k)?.canonical_key()))
                .collect::<Result<Vec<_>>>()?;
            gone.sort();
            deleted += gone.len();
            // Only the rows the delete took: one that stopped matching stays, and is not sent.
            let rows = rows
                .into_iter()
                .filter(|row| {
                    let key = row[t.key_index()].as_ref().expect("key selected");
                    gone.binary_search(&key.canonical_key()).is_ok()
                })
                .collect();
            tx.record_deleted::<M>(t, rows);
        }
        Ok(deleted)
    }
}

/// The Rust key type of the model whose table `S` reads.
type KeyOf<S, M> = <<S as HasTable>::Table as MasterTable<M>>::Key;
