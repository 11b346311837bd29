//! The example services' databases and rows as comparable tuples (master and replica name some
//! columns differently: `name`/`title`, `owner_id`/`owner_ref`).

use chrono::{DateTime, NaiveDate, Utc};
use cqrs::Db;

use super::{Kind, TestDb};

/// `(id, name, value, updated, cqrs_revision, cqrs_updated)`.
pub type ExampleItem = (i64, String, i64, DateTime<Utc>, i32, DateTime<Utc>);
/// `(id, price, day, note, owner, cqrs_revision, cqrs_updated)`.
pub type ExampleTyped = (
    uuid::Uuid,
    bigdecimal::BigDecimal,
    NaiveDate,
    Option<String>,
    Option<i64>,
    i32,
    DateTime<Utc>,
);

/// A master and a replica PostgreSQL database of their own, migrated, with the example schemas.
pub fn example_dbs() -> (TestDb, TestDb) {
    let (master, replica) = (TestDb::empty(Kind::Postgres), TestDb::empty(Kind::Postgres));
    for (db, schema) in [
        (&master, example_master::SCHEMA_SQL),
        (&replica, example_replica::SCHEMA_SQL),
    ] {
        let mut c = db.connect();
        c.migrate().unwrap();
        c.batch_execute(schema).unwrap();
    }
    (master, replica)
}

fn pg(db: &TestDb) -> diesel::PgConnection {
    match db.connect() {
        Db::Pg(pg) => pg,
        Db::Sqlite(_) => panic!("the example services run on PostgreSQL"),
    }
}

/// The example master's items, by id.
pub fn example_master_items(db: &TestDb) -> Vec<ExampleItem> {
    example_master::all_items(&mut pg(db))
        .unwrap()
        .into_iter()
        .map(|i| {
            (
                i.id,
                i.name,
                i.value,
                i.updated,
                i.cqrs_revision,
                i.cqrs_updated,
            )
        })
        .collect()
}

/// The example replica's items, by id.
pub fn example_replica_items(db: &TestDb) -> Vec<ExampleItem> {
    example_replica::all_items(&mut pg(db))
        .unwrap()
        .into_iter()
        .map(|i| {
            (
                i.id,
                i.title,
                i.value,
                i.updated,
                i.cqrs_revision,
                i.cqrs_updated,
            )
        })
        .collect()
}

/// The example master's typed rows, by id.
pub fn example_master_typed(db: &TestDb) -> Vec<ExampleTyped> {
    example_master::all_typed(&mut pg(db))
        .unwrap()
        .into_iter()
        .map(|t| {
            (
                t.id,
                t.price,
                t.day,
                t.note,
                t.owner_id,
                t.cqrs_revision,
                t.cqrs_updated,
            )
        })
        .collect()
}

/// The example replica's typed rows, by id.
pub fn example_replica_typed(db: &TestDb) -> Vec<ExampleTyped> {
    example_replica::all_typed(&mut pg(db))
        .unwrap()
        .into_iter()
        .map(|t| {
            (
                t.id,
                t.price,
                t.day,
                t.note,
                t.owner_ref,
                t.cqrs_revision,
                t.cqrs_updated,
            )
        })
        .collect()
}
