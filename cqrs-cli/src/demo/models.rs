//! The demo's built-in models, described by hand as an application without the derives would:
//! a master `demo_items` and its replica `demo_replica_items`, with their tables on either backend.

use cqrs::db::{Backend, Db};
use cqrs::value::ColumnType;
use cqrs::{ColumnSpec, MasterModel, MasterSpec, TableSpec};

/// The demo's `cqrs_id`.
pub(crate) const CQRS_ID: &str = "demo_item";
/// The master table.
pub(crate) const MASTER_TABLE: &str = "demo_items";
/// The replica table.
pub(crate) const REPLICA_TABLE: &str = "demo_replica_items";

/// The same columns on both sides.
pub(crate) fn table(name: &str) -> TableSpec {
    TableSpec::new(CQRS_ID, name)
        .key("id", ColumnType::BigInt)
        .column(ColumnSpec::new("name", ColumnType::Text))
        .column(ColumnSpec::new("price", ColumnType::Numeric))
        .column(ColumnSpec::new("stock", ColumnType::Integer))
        .column(
            ColumnSpec::new("note", ColumnType::Text)
                .nullable()
                .optional(),
        )
        .build()
        .expect("a valid demo table")
}

/// The demo master, with `price` tracked (sent in `previous_data` when it changes).
pub(crate) struct DemoItem;

impl MasterModel for DemoItem {
    const CQRS_ID: &'static str = CQRS_ID;
    fn master_spec() -> MasterSpec {
        MasterSpec::new(table(MASTER_TABLE))
            .track("price")
            .expect("price is a column")
    }
}

/// Drop and create the demo table `name`: the master's key is generated, the replica's is not.
pub(crate) fn ddl(db: &Db, name: &str) -> String {
    let master = name == MASTER_TABLE;
    let (id, num, ts) = match db.backend() {
        Backend::Postgres => (
            if master {
                "BIGSERIAL PRIMARY KEY"
            } else {
                "BIGINT PRIMARY KEY"
            },
            "NUMERIC(12,2)",
            "TIMESTAMPTZ",
        ),
        Backend::Sqlite => (
            if master {
                "INTEGER PRIMARY KEY AUTOINCREMENT"
            } else {
                "BIGINT PRIMARY KEY"
            },
            "TEXT",
            "TEXT",
        ),
    };
    format!(
        "DROP TABLE IF EXISTS {name}; CREATE TABLE {name} (id {id}, name TEXT NOT NULL, price {num} NOT NULL, \
         stock INTEGER NOT NULL, note TEXT, cqrs_revision INTEGER NOT NULL DEFAULT 0, cqrs_updated {ts} NOT NULL DEFAULT '2000-01-01 00:00:00+00:00')"
    )
}

/// The application's own statements: insert a row returning its id, and change one row.
pub(crate) fn statements(db: &Db) -> (&'static str, &'static str) {
    match db.backend() {
        Backend::Postgres => (
            "INSERT INTO demo_items (name, price, stock) VALUES ($1, $2, $3) RETURNING CAST(id AS TEXT) AS j",
            "UPDATE demo_items SET stock = stock + 1, price = price + 1 WHERE id = $1",
        ),
        Backend::Sqlite => (
            "INSERT INTO demo_items (name, price, stock) VALUES (?, ?, ?) RETURNING CAST(id AS TEXT) AS j",
            "UPDATE demo_items SET stock = stock + 1, price = CAST(price AS REAL) + 1 WHERE id = ?",
        ),
    }
}
