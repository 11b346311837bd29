//! The harnesses' model (`cqrs-soak`, `cqrs-bench`), described by hand so one binary runs it on
//! PostgreSQL and on SQLite: a master `soak_items` with a generated key and its replica
//! `soak_replica_items`, and row snapshots of both for comparing them.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use cqrs::db::{Backend, Db, SqlConn};
use cqrs::value::ColumnType;
use cqrs::{ColumnSpec, MasterModel, MasterSpec, Registry, TableReplica, TableSpec};

/// The model's `cqrs_id`.
pub const CQRS_ID: &str = "soak_item";
/// The master table.
pub const MASTER_TABLE: &str = "soak_items";
/// The replica table.
pub const REPLICA_TABLE: &str = "soak_replica_items";

fn table(name: &str) -> TableSpec {
    TableSpec::new(CQRS_ID, name)
        .key("id", ColumnType::BigInt)
        .column(ColumnSpec::new("name", ColumnType::Text))
        .column(ColumnSpec::new("value", ColumnType::BigInt))
        .column(
            ColumnSpec::new("note", ColumnType::Text)
                .nullable()
                .optional(),
        )
        .build()
        .expect("a valid soak table")
}

/// The master model, `value` tracked (sent in `previous_data`).
pub struct SoakItem;

impl MasterModel for SoakItem {
    const CQRS_ID: &'static str = CQRS_ID;
    fn master_spec() -> MasterSpec {
        MasterSpec::new(table(MASTER_TABLE))
            .track("value")
            .expect("value is a column")
    }
}

/// The master table as the application's Diesel code writes it (the bookkeeping columns are
/// capture's: left out, so one declaration serves both backends).
#[allow(missing_docs)]
mod schema {
    diesel::table! {
        soak_items (id) {
            id -> BigInt,
            name -> Text,
            value -> BigInt,
            note -> Nullable<Text>,
        }
    }
}
pub use schema::soak_items;

/// What `#[derive(Master)]` would implement: `tx.insert_into(soak_items::table)` captures
/// `SoakItem`.
impl cqrs::capture::MasterTable<SoakItem> for soak_items::table {
    type Key = i64;
    type ByKeys = diesel::dsl::EqAny<soak_items::id, Vec<i64>>;
    fn by_keys(keys: Vec<i64>) -> Self::ByKeys {
        use diesel::ExpressionMethods;
        soak_items::id.eq_any(keys)
    }
}

/// Both sides' models: a harness's relay and consumer processes are the harness binary itself.
pub fn registry() -> Registry {
    Registry::new()
        .with_master(SoakItem::master_spec())
        .with_replica(TableReplica::new(table(REPLICA_TABLE)))
}

/// Migrate `db` and create the master's or the replica's table.
pub fn create(db: &mut Db, master: bool) -> cqrs::Result<()> {
    db.migrate()?;
    let (key, ts) = match (db.backend(), master) {
        (Backend::Postgres, true) => ("BIGSERIAL PRIMARY KEY", "TIMESTAMPTZ"),
        (Backend::Postgres, false) => ("BIGINT PRIMARY KEY", "TIMESTAMPTZ"),
        (Backend::Sqlite, true) => ("INTEGER PRIMARY KEY AUTOINCREMENT", "TEXT"),
        (Backend::Sqlite, false) => ("BIGINT PRIMARY KEY", "TEXT"),
    };
    let name = if master { MASTER_TABLE } else { REPLICA_TABLE };
    db.batch_execute(&format!(
        "CREATE TABLE {name} (id {key}, name TEXT NOT NULL, value BIGINT NOT NULL, note TEXT, \
         cqrs_revision INTEGER NOT NULL DEFAULT 0, cqrs_updated {ts} NOT NULL DEFAULT '2000-01-01 00:00:00+00:00')"
    ))
}

/// The application's statements: insert returning the new key, change one row's values.
pub fn statements(backend: Backend) -> (&'static str, &'static str) {
    match backend {
        Backend::Postgres => (
            "INSERT INTO soak_items (name, value, note) VALUES ($1, $2, $3) RETURNING CAST(id AS TEXT) AS j",
            "UPDATE soak_items SET name = $1, value = value + $2, note = $3 WHERE id = $4",
        ),
        Backend::Sqlite => (
            "INSERT INTO soak_items (name, value, note) VALUES (?, ?, ?) RETURNING CAST(id AS TEXT) AS j",
            "UPDATE soak_items SET name = ?, value = value + ?, note = ? WHERE id = ?",
        ),
    }
}

/// One row as both sides must hold it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct Row {
    pub name: String,
    pub value: i64,
    pub note: Option<String>,
    pub revision: i64,
    pub updated: DateTime<Utc>,
}

/// Every row of `table` by key.
pub fn snapshot(db: &mut Db, table: &str) -> cqrs::Result<BTreeMap<i64, Row>> {
    let sql = match db.backend() {
        Backend::Postgres => format!(
            "SELECT json_build_array(id, name, value, note, cqrs_revision, cqrs_updated)::text AS j FROM {table}"
        ),
        Backend::Sqlite => format!(
            "SELECT json_array(id, name, value, note, cqrs_revision, cqrs_updated) AS j FROM {table}"
        ),
    };
    let mut rows = BTreeMap::new();
    for text in db.load_text(&sql, vec![])? {
        let (id, name, value, note, revision, updated): (
            i64,
            String,
            i64,
            Option<String>,
            i64,
            String,
        ) = serde_json::from_str(&text).map_err(|e| {
            cqrs::Error::new(
                cqrs::ErrorKind::Database,
                format!("{table} row {text}: {e}"),
            )
        })?;
        let updated = DateTime::parse_from_rfc3339(&updated.replacen(' ', "T", 1))
            .map_err(|e| {
                cqrs::Error::new(
                    cqrs::ErrorKind::Database,
                    format!("{table} cqrs_updated {updated:?}: {e}"),
                )
            })?
            .with_timezone(&Utc);
        rows.insert(
            id,
            Row {
                name,
                value,
                note,
                revision,
                updated,
            },
        );
    }
    Ok(rows)
}

/// Keys whose rows differ between the two snapshots (missing on one side counts).
pub fn differing(master: &BTreeMap<i64, Row>, replica: &BTreeMap<i64, Row>) -> Vec<i64> {
    let mut keys: Vec<i64> = master
        .iter()
        .filter(|(k, row)| replica.get(k) != Some(row))
        .map(|(k, _)| *k)
        .collect();
    keys.extend(replica.keys().filter(|k| !master.contains_key(k)));
    keys.sort_unstable();
    keys
}
