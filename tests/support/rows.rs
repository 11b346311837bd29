//! Row readers: a replica's `items` and tombstones, a master's `m_items` and outbox, counts and texts.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use cqrs::{Db, Message};
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Integer, Nullable, Text, Timestamptz, TimestamptzSqlite};

/// A replica row of `items`.
#[derive(Debug, Clone, PartialEq)]
pub struct ItemRow {
    /// name.
    pub name: String,
    /// value.
    pub value: i64,
    /// note.
    pub note: String,
    /// cqrs_revision.
    pub rev: i32,
    /// cqrs_updated.
    pub updated: DateTime<Utc>,
}

macro_rules! item_row_struct {
    ($name:ident, $ts:ty) => {
        #[derive(QueryableByName)]
        struct $name {
            #[diesel(sql_type = BigInt)]
            id: i64,
            #[diesel(sql_type = Text)]
            name: String,
            #[diesel(sql_type = BigInt)]
            value: i64,
            #[diesel(sql_type = Text)]
            note: String,
            #[diesel(sql_type = Integer)]
            cqrs_revision: i32,
            #[diesel(sql_type = $ts)]
            cqrs_updated: DateTime<Utc>,
        }
        impl $name {
            fn into_pair(self) -> (i64, ItemRow) {
                (
                    self.id,
                    ItemRow {
                        name: self.name,
                        value: self.value,
                        note: self.note,
                        rev: self.cqrs_revision,
                        updated: self.cqrs_updated,
                    },
                )
            }
        }
    };
}
item_row_struct!(PgItem, Timestamptz);
item_row_struct!(SqliteItem, TimestamptzSqlite);

/// All rows of `items` by id.
pub fn items(db: &mut Db) -> BTreeMap<i64, ItemRow> {
    const Q: &str = "SELECT id, name, value, note, cqrs_revision, cqrs_updated FROM items";
    match db {
        Db::Pg(c) => diesel::sql_query(Q)
            .load::<PgItem>(c)
            .unwrap()
            .into_iter()
            .map(PgItem::into_pair)
            .collect(),
        Db::Sqlite(c) => diesel::sql_query(Q)
            .load::<SqliteItem>(c)
            .unwrap()
            .into_iter()
            .map(SqliteItem::into_pair)
            .collect(),
    }
}

/// Tombstones of a model: canonical pk -> (revision, cqrs_updated).
pub fn tombstones(db: &mut Db, cqrs_id: &str) -> BTreeMap<String, (i32, DateTime<Utc>)> {
    #[derive(QueryableByName)]
    struct PgT {
        #[diesel(sql_type = Text)]
        pk: String,
        #[diesel(sql_type = Integer)]
        revision: i32,
        #[diesel(sql_type = Timestamptz)]
        cqrs_updated: DateTime<Utc>,
    }
    #[derive(QueryableByName)]
    struct SqT {
        #[diesel(sql_type = Text)]
        pk: String,
        #[diesel(sql_type = Integer)]
        revision: i32,
        #[diesel(sql_type = TimestamptzSqlite)]
        cqrs_updated: DateTime<Utc>,
    }
    let q = |p: &str| {
        format!("SELECT pk, revision, cqrs_updated FROM cqrs_tombstones WHERE cqrs_id = {p}")
    };
    match db {
        Db::Pg(c) => diesel::sql_query(q("$1"))
            .bind::<Text, _>(cqrs_id)
            .load::<PgT>(c)
            .unwrap()
            .into_iter()
            .map(|t| (t.pk, (t.revision, t.cqrs_updated)))
            .collect(),
        Db::Sqlite(c) => diesel::sql_query(q("?"))
            .bind::<Text, _>(cqrs_id)
            .load::<SqT>(c)
            .unwrap()
            .into_iter()
            .map(|t| (t.pk, (t.revision, t.cqrs_updated)))
            .collect(),
    }
}

/// Count rows of a query `SELECT count(*) AS n ...`.
pub fn count(db: &mut Db, sql: &str) -> i64 {
    #[derive(QueryableByName)]
    struct N {
        #[diesel(sql_type = BigInt)]
        n: i64,
    }
    match db {
        Db::Pg(c) => diesel::sql_query(sql).get_result::<N>(c).unwrap().n,
        Db::Sqlite(c) => diesel::sql_query(sql).get_result::<N>(c).unwrap().n,
    }
}

/// Column `t` (nullable text) of every row of `sql`.
pub fn texts(db: &mut Db, sql: &str) -> Vec<Option<String>> {
    #[derive(QueryableByName)]
    struct T {
        #[diesel(sql_type = Nullable<Text>)]
        t: Option<String>,
    }
    match db {
        Db::Pg(c) => diesel::sql_query(sql).load::<T>(c).unwrap(),
        Db::Sqlite(c) => diesel::sql_query(sql).load::<T>(c).unwrap(),
    }
    .into_iter()
    .map(|r| r.t)
    .collect()
}

/// The bodies in the outbox, oldest first.
pub fn outbox_messages(db: &mut Db) -> Vec<Message> {
    use cqrs::db::SqlConn;
    db.load_text("SELECT body AS j FROM cqrs_outbox ORDER BY id", vec![])
        .unwrap()
        .iter()
        .map(|b| Message::decode(b.as_bytes()).unwrap())
        .collect()
}

/// A master row of `m_items`: (name, value, updated, revision, cqrs_updated).
pub type MasterRow = (String, i64, DateTime<Utc>, i32, DateTime<Utc>);

/// All rows of `m_items` by id.
pub fn master_items(db: &mut Db) -> BTreeMap<i64, MasterRow> {
    macro_rules! read {
        ($c:expr, $ts:ty) => {{
            #[derive(QueryableByName)]
            struct R {
                #[diesel(sql_type = BigInt)]
                id: i64,
                #[diesel(sql_type = Text)]
                name: String,
                #[diesel(sql_type = BigInt)]
                value: i64,
                #[diesel(sql_type = $ts)]
                updated: DateTime<Utc>,
                #[diesel(sql_type = Integer)]
                cqrs_revision: i32,
                #[diesel(sql_type = $ts)]
                cqrs_updated: DateTime<Utc>,
            }
            diesel::sql_query(
                "SELECT id, name, value, updated, cqrs_revision, cqrs_updated FROM m_items",
            )
            .load::<R>($c)
            .unwrap()
            .into_iter()
            .map(|r| {
                (
                    r.id,
                    (r.name, r.value, r.updated, r.cqrs_revision, r.cqrs_updated),
                )
            })
            .collect()
        }};
    }
    match db {
        Db::Pg(c) => read!(c, Timestamptz),
        Db::Sqlite(c) => read!(c, TimestamptzSqlite),
    }
}
