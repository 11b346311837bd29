//! Captured writes in Diesel's own vocabulary: inside [`atomic`](super::atomic),
//! `tx.insert_into(items::table).values(&new).get_result()`, `tx.update(items::table.find(id))
//! .set(items::value.eq(5)).execute()`, `tx.delete(items::table.filter(..)).execute()`: the
//! Diesel statement, run on the capture's connection, with the capture step it needs done for it.
//!
//! The model is found from the table: `#[derive(Master)]` implements [`MasterTable`] for its
//! `#[diesel(table_name)]` table, so a write to any other table does not compile.
//!
//! What each adds to the Diesel statement it wraps (and why):
//! - insert: `RETURNING` the primary key beside what the caller asked for, to capture the rows as
//!   created.
//! - update: the keys the source selects are read first, touched (revision bumped once in the
//!   transaction, tracked values remembered before they change), then the update runs on the
//!   source narrowed to those keys, so a row that starts matching between the two statements is
//!   not changed uncaptured.
//! - delete: the keys the source selects are read and deleted through [`Tx::delete_many`], which
//!   keeps each row's last state for its DELETE message.

use std::marker::PhantomData;

use diesel::associations::HasTable;
use diesel::dsl::{Filter, Returning, Select, Update};
use diesel::query_builder::{AsChangeset, AsQuery, InsertStatement, IntoUpdateTarget, Query};
use diesel::query_dsl::methods::{ExecuteDsl, FilterDsl, SelectDsl};
use diesel::query_dsl::{LoadQuery, RunQueryDsl};
use diesel::{Connection, Insertable, Table};
use serde::Serialize;

use super::Tx;
use crate::db::SqlConn;
use crate::error::{Error, Result};
use crate::model::MasterModel;

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

/// `tx.update(source).set(..)`: run it with `execute`.
#[must_use = "an update does nothing until it is run"]
pub struct UpdateSet<'t, 'c, C: SqlConn, S, M, V> {
    tx: &'t mut Tx<'c, C>,
    source: S,
    changes: V,
    model: PhantomData<fn() -> M>,
}

impl<'t, 'c, C, S, M, V> UpdateSet<'t, 'c, C, S, M, V>
where
    C: SqlConn + Connection,
    S: HasTable + Clone + SelectDsl<Pk<S>> + FilterDsl<<S::Table as MasterTable<M>>::ByKeys>,
    S::Table: MasterTable<M>,
    M: MasterModel,
    V: AsChangeset<Target = S::Table> + Clone,
    ByKeys<S, M>: IntoUpdateTarget<Table = S::Table>,
{
    /// Update; returns the number of rows updated.
    pub fn execute<'q>(self) -> Result<usize>
    where
        Select<S, Pk<S>>: LoadQuery<'q, C, KeyOf<S, M>>,
        Update<ByKeys<S, M>, V>: AsQuery + ExecuteDsl<C>,
    {
        let UpdateSet {
            tx,
            source,
            changes,
            ..
        } = self;
        let keys = tx.keys_of::<_, M>(source.clone())?;
        let mut updated = 0;
        for chunk in keys.chunks(KEYS_PER_UPDATE) {
            tx.touch_present::<M>(chunk)?;
            let narrowed = source.clone().filter(S::Table::by_keys(chunk.to_vec()));
            updated += diesel::update(narrowed)
                .set(changes.clone())
                .execute(tx.conn)?;
        }
        Ok(updated)
    }
}

/// `tx.delete(source)`: run it with `execute`.
#[must_use = "a delete does nothing until it is run"]
pub struct DeleteFrom<'t, 'c, C: SqlConn, S, M> {
    tx: &'t mut Tx<'c, C>,
    source: S,
    model: PhantomData<fn() -> M>,
}

impl<'t, 'c, C, S, M> DeleteFrom<'t, 'c, C, S, M>
where
    C: SqlConn + Connection,
    S: HasTable + SelectDsl<Pk<S>>,
    S::Table: MasterTable<M>,
    M: MasterModel,
{
    /// Delete; returns the number of rows deleted.
    pub fn execute<'q>(self) -> Result<usize>
    where
        Select<S, Pk<S>>: LoadQuery<'q, C, KeyOf<S, M>>,
    {
        let keys = self.tx.keys_of::<_, M>(self.source)?;
        self.tx.delete_many::<M>(&keys)
    }
}

/// The Rust key type of the model whose table `S` reads.
type KeyOf<S, M> = <<S as HasTable>::Table as MasterTable<M>>::Key;
