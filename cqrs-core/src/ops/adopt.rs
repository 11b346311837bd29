//! Adopting a table that already exists and holds rows: the Diesel migration (`up.sql`,
//! `down.sql`) that adds its `cqrs_revision` and `cqrs_updated` columns and, for a master captured
//! by triggers, installs its triggers, for the application's own `migrations/` directory (what
//! `cqrs generate-migration` writes).
//!
//! On PostgreSQL (11 and later) both columns are added without rewriting the table: a default
//! that is not volatile is stored once in the catalog, not written into every row, so the
//! migration holds its lock for milliseconds whatever the table's size (`lock_timeout` makes it
//! fail rather than queue the application's writes behind a long transaction). Existing rows read
//! as revision 0, stamped with the migration's time; new rows get `clock_timestamp()`. SQLite
//! cannot add a column whose default is not a constant, so its `cqrs_updated` is backfilled by
//! one `UPDATE` (SQLite has one writer anyway).
//!
//! ```
//! use cqrs::db::dialect::Backend;
//! let m = cqrs::ops::adopt::for_table(Backend::Postgres, "shop.items")?;
//! assert!(m.up.contains(r#"ALTER TABLE "shop"."items""#));
//! assert!(m.down.contains("DROP COLUMN cqrs_revision"));
//! # Ok::<(), cqrs::Error>(())
//! ```

use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};

use crate::capture::triggers;
use crate::db::Backend;
use crate::error::{Error, ErrorKind, Result};
use crate::model::{CaptureMode, MasterSpec, TableSpec};
use crate::rows::quote;
use crate::value::ColumnType;

/// A migration's name (the part after the version) and its two scripts.
#[derive(Debug, Clone, PartialEq)]
pub struct Migration {
    /// `cqrs_adopt_<table>`.
    pub name: String,
    /// Applies it.
    pub up: String,
    /// Reverts it.
    pub down: String,
}

/// The columns' migration for `table` (`name` or `schema.name`), `cqrs_updated` a timestamp with
/// time zone: for a binary without the model (the stock `cqrs`).
pub fn for_table(backend: Backend, table: &str) -> Result<Migration> {
    let quoted = quote_table(table)?;
    Ok(columns(
        backend,
        table,
        &quoted,
        ColumnType::Timestamptz,
        None,
    ))
}

/// The migration for a master model's table: its columns typed as the model declares them, and
/// on PostgreSQL, for `capture = "trigger"`, the install of its triggers (after the columns,
/// which they stamp). Reverting drops the triggers, then the columns.
pub fn for_master(backend: Backend, spec: &MasterSpec) -> Result<Migration> {
    let triggers = match (spec.capture_mode(), backend) {
        (CaptureMode::Trigger, Backend::Postgres) => {
            Some((triggers::install_sql(spec)?, triggers::uninstall_sql(spec)?))
        }
        (CaptureMode::Trigger, Backend::Sqlite) => {
            return Err(Error::config(format!(
                "{} is captured by triggers, which need PostgreSQL",
                spec.table().cqrs_id()
            )));
        }
        _ => None,
    };
    Ok(for_spec(backend, spec.table(), triggers))
}

/// The columns' migration for a replica model's table.
pub fn for_replica(backend: Backend, spec: &TableSpec) -> Migration {
    for_spec(backend, spec, None)
}

fn for_spec(backend: Backend, spec: &TableSpec, triggers: Option<(String, String)>) -> Migration {
    let updated = spec.columns()[spec.updated_index()].ty;
    let quoted = quote(spec.table());
    columns(backend, spec.table(), &quoted, updated, triggers)
}

fn columns(
    backend: Backend,
    table: &str,
    quoted: &str,
    updated: ColumnType,
    triggers: Option<(String, String)>,
) -> Migration {
    let mut up = format!(
        "-- cqrs: the replication columns of {table} (written by `cqrs generate-migration`).\n\
         -- Afterwards the rows already there have never been sent: `cqrs sync` them to the replicas\n\
         -- (README, \"Adopting an existing table\").\n"
    );
    match backend {
        Backend::Postgres => {
            let (ty, at_start, later) = match updated {
                ColumnType::Timestamp => (
                    "TIMESTAMP",
                    "(now() AT TIME ZONE 'UTC')",
                    "(clock_timestamp() AT TIME ZONE 'UTC')",
                ),
                _ => ("TIMESTAMPTZ", "now()", "clock_timestamp()"),
            };
            up.push_str(&format!(
                "-- Neither column rewrites the table: their defaults are not volatile, so PostgreSQL stores\n\
                 -- them once; existing rows read as revision 0 stamped with this migration's time. The lock\n\
                 -- is held for milliseconds; lock_timeout fails the migration rather than queue every\n\
                 -- writer of the table behind a long transaction (run it again later).\n\
                 SET LOCAL lock_timeout = '5s';\n\
                 ALTER TABLE {quoted}\n    \
                 ADD COLUMN cqrs_revision INTEGER NOT NULL DEFAULT 0,\n    \
                 ADD COLUMN cqrs_updated {ty} NOT NULL DEFAULT {at_start};\n\
                 -- New rows written without capture are stamped when written.\n\
                 ALTER TABLE {quoted} ALTER COLUMN cqrs_updated SET DEFAULT {later};\n"
            ));
        }
        Backend::Sqlite => {
            const NOW: &str = "strftime('%Y-%m-%d %H:%M:%f+00:00', 'now')";
            up.push_str(&format!(
                "-- SQLite cannot add a column whose default is not a constant: cqrs_updated is backfilled\n\
                 -- with this migration's time (capture stamps every row it writes).\n\
                 ALTER TABLE {quoted} ADD COLUMN cqrs_revision INTEGER NOT NULL DEFAULT 0;\n\
                 ALTER TABLE {quoted} ADD COLUMN cqrs_updated TEXT NOT NULL DEFAULT '1970-01-01 00:00:00.000+00:00';\n\
                 UPDATE {quoted} SET cqrs_updated = {NOW};\n"
            ));
        }
    }
    let mut down = String::new();
    if let Some((install, uninstall)) = triggers {
        up.push_str("-- Trigger capture: every write to the table is captured from here on.\n");
        up.push_str(&install);
        down.push_str(&uninstall);
    }
    down.push_str(&format!(
        "ALTER TABLE {quoted} DROP COLUMN cqrs_updated;\nALTER TABLE {quoted} DROP COLUMN cqrs_revision;\n"
    ));
    Migration {
        name: format!("cqrs_adopt_{}", table.replace('.', "_")),
        up,
        down,
    }
}

impl Migration {
    /// Write it as a Diesel migration directory `<dir>/<version>_<name>/` (version from `at`, as
    /// `diesel migration generate` names them); returns that directory. An existing directory of
    /// the same name is not overwritten.
    pub fn write(&self, dir: &Path, at: DateTime<Utc>) -> Result<PathBuf> {
        let path = dir.join(format!("{}_{}", at.format("%Y-%m-%d-%H%M%S"), self.name));
        let io = |what: &str, p: &Path, e: std::io::Error| {
            Error::new(ErrorKind::Io, format!("{what} {}: {e}", p.display()))
        };
        std::fs::create_dir_all(dir).map_err(|e| io("cannot create", dir, e))?;
        std::fs::create_dir(&path).map_err(|e| io("cannot create", &path, e))?;
        for (file, text) in [("up.sql", &self.up), ("down.sql", &self.down)] {
            let p = path.join(file);
            std::fs::write(&p, text).map_err(|e| io("cannot write", &p, e))?;
        }
        Ok(path)
    }
}

/// `name` or `schema.name`, each part an unquoted SQL identifier, as a quoted name.
fn quote_table(table: &str) -> Result<String> {
    let parts: Vec<&str> = table.split('.').collect();
    let plain = |p: &&str| {
        p.chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && p.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            && p.len() <= 63
    };
    if parts.len() > 2 || !parts.iter().all(plain) {
        return Err(Error::config(format!(
            "--table {table:?}: expected a table name or schema.table, each of letters, digits and _"
        )));
    }
    Ok(parts.iter().map(|p| quote(p)).collect::<Vec<_>>().join("."))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_table_name_that_is_not_an_identifier_is_refused() {
        for bad in [
            "",
            "items; DROP TABLE x",
            "a.b.c",
            "1items",
            "it\"ems",
            "shop.",
        ] {
            let err = for_table(Backend::Postgres, bad).unwrap_err();
            assert!(err.to_string().contains("--table"), "{bad}: {err}");
        }
        let m = for_table(Backend::Sqlite, "Items_2").unwrap();
        assert!(m.up.contains("ALTER TABLE \"Items_2\" ADD COLUMN cqrs_revision"));
        assert_eq!(m.name, "cqrs_adopt_Items_2");
    }
}
