//! cqrs's own migrations (`cqrs_outbox`, `cqrs_tombstones`, ...), recorded in a table of their own,
//! `cqrs_schema_migrations`, not in Diesel's `__diesel_schema_migrations`: an application that runs
//! its own Diesel migrations on the same database (`run_pending_migrations`,
//! `revert_last_migration`, `diesel migration redo`) never meets versions it does not know.
//!
//! Versions an earlier release recorded in Diesel's table are moved to ours the first time.

use diesel::backend::Backend as DieselBackend;
use diesel::migration::{Migration, MigrationSource, MigrationVersion};
use diesel_migrations::MigrationHarness;

use super::{Backend, SqlConn};
use crate::error::{Error, ErrorKind, Result};
use crate::value::SqlValue;

/// The table cqrs records its applied migrations in.
pub const TABLE: &str = "cqrs_schema_migrations";

type MigrationResult<T> = diesel::migration::Result<T>;

/// A connection seen as the migration harness of cqrs's own table.
struct Harness<'a, C>(&'a mut C);

impl<C: SqlConn> Harness<'_, C> {
    fn record(&mut self, version: &str, applied: bool) -> Result<()> {
        let mut sql = if applied {
            format!("INSERT INTO {TABLE} (version) VALUES (")
        } else {
            format!("DELETE FROM {TABLE} WHERE version = (")
        };
        self.0.backend().placeholder(1, &mut sql);
        sql.push(')');
        self.0
            .exec(&sql, vec![SqlValue::Text(version.to_string())])
            .map(drop)
    }
}

impl<C, DB> MigrationHarness<DB> for Harness<'_, C>
where
    C: diesel::Connection<Backend = DB> + SqlConn + 'static,
    DB: DieselBackend,
{
    fn run_migration(
        &mut self,
        migration: &dyn Migration<DB>,
    ) -> MigrationResult<MigrationVersion<'static>> {
        let version = migration.name().version().as_owned();
        let apply = |c: &mut C| -> MigrationResult<()> {
            migration.run(c)?;
            Harness(c).record(&version.to_string(), true)?;
            Ok(())
        };
        if migration.metadata().run_in_transaction() {
            self.0
                .transaction::<_, Box<dyn std::error::Error + Send + Sync>, _>(apply)?;
        } else {
            apply(self.0)?;
        }
        Ok(version)
    }

    fn revert_migration(
        &mut self,
        migration: &dyn Migration<DB>,
    ) -> MigrationResult<MigrationVersion<'static>> {
        let version = migration.name().version().as_owned();
        self.0
            .transaction::<_, Box<dyn std::error::Error + Send + Sync>, _>(|c| {
                migration.revert(c)?;
                Harness(c).record(&version.to_string(), false)?;
                Ok(())
            })?;
        Ok(version)
    }

    fn applied_migrations(&mut self) -> MigrationResult<Vec<MigrationVersion<'static>>> {
        Ok(self
            .0
            .load_text(
                &format!("SELECT version AS j FROM {TABLE} ORDER BY version DESC"),
                vec![],
            )?
            .into_iter()
            .map(MigrationVersion::from)
            .collect())
    }
}

/// Run the migrations of `source` not yet recorded in [`TABLE`]; returns the versions applied.
pub(super) fn run<C, DB, S>(conn: &mut C, source: S) -> Result<Vec<String>>
where
    C: diesel::Connection<Backend = DB> + SqlConn + 'static,
    DB: DieselBackend,
    S: MigrationSource<DB>,
{
    let ours: Vec<String> = source
        .migrations()
        .map_err(|e| failed(&*e))?
        .iter()
        .map(|m| m.name().version().to_string())
        .collect();
    conn.exec(
        &format!(
            "CREATE TABLE IF NOT EXISTS {TABLE} (version VARCHAR(50) PRIMARY KEY NOT NULL, \
             run_on TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP)"
        ),
        vec![],
    )?;
    adopt_from_diesel(conn, &ours)?;
    Harness(conn)
        .run_pending_migrations(source)
        .map(|v| v.into_iter().map(|v| v.to_string()).collect())
        .map_err(|e| failed(&*e))
}

/// Versions of ours that an earlier release recorded in Diesel's table move to ours (they were
/// applied: running them again would fail on the tables they made).
fn adopt_from_diesel<C: SqlConn>(conn: &mut C, ours: &[String]) -> Result<()> {
    let exists = match conn.backend() {
        Backend::Postgres => {
            "SELECT CAST(to_regclass('__diesel_schema_migrations') IS NOT NULL AS TEXT) AS j"
        }
        Backend::Sqlite => {
            "SELECT CASE WHEN EXISTS (SELECT 1 FROM sqlite_master WHERE name = '__diesel_schema_migrations') \
             THEN 'true' ELSE 'false' END AS j"
        }
    };
    if conn.load_text(exists, vec![])?.first().map(String::as_str) != Some("true") {
        return Ok(());
    }
    let backend = conn.backend();
    let mut list = String::new();
    let binds: Vec<SqlValue> = ours.iter().cloned().map(SqlValue::Text).collect();
    for i in 0..binds.len() {
        if i > 0 {
            list.push_str(", ");
        }
        backend.placeholder(i + 1, &mut list);
    }
    if binds.is_empty() {
        return Ok(());
    }
    crate::db::in_transaction(conn, |c| {
        c.exec(
            &format!(
                "INSERT INTO {TABLE} (version) SELECT version FROM __diesel_schema_migrations \
                 WHERE version IN ({list}) AND version NOT IN (SELECT version FROM {TABLE})"
            ),
            binds.clone(),
        )?;
        c.exec(
            &format!("DELETE FROM __diesel_schema_migrations WHERE version IN ({list})"),
            binds.clone(),
        )
        .map(drop)
    })
}

fn failed(e: &(dyn std::error::Error + Send + Sync)) -> Error {
    Error::new(ErrorKind::Database, format!("running migrations: {e}"))
}
