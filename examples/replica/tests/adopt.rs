//! Adopting a table that already holds rows: `generate-migration` writes the Diesel migration,
//! Diesel's migration runner applies it, `sync` sends the rows already there, and the replica
//! equals the master.

mod common;

use std::path::Path;

use common::*;
use cqrs::Db;
use cqrs_tests::{Kind, TestDb};
use diesel_migrations::{FileBasedMigrations, MigrationHarness};

#[test]
fn an_existing_postgres_table_adopted_by_migration_then_synced() {
    adopt(Kind::Postgres);
}

#[test]
fn an_existing_sqlite_table_adopted_by_migration_then_synced() {
    adopt(Kind::Sqlite);
}

/// The application's `items` as it was before cqrs: no revision, no stamp, 2,000 rows.
fn table_before(kind: Kind) -> &'static str {
    match kind {
        Kind::Postgres => {
            "CREATE TABLE items (id BIGSERIAL PRIMARY KEY, name TEXT NOT NULL, value BIGINT NOT NULL,
               updated TIMESTAMPTZ NOT NULL DEFAULT now());
             INSERT INTO items (name, value) SELECT 'row ' || i, i * 3 FROM generate_series(1, 2000) AS i;"
        }
        Kind::Sqlite => {
            "CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT NOT NULL, value BIGINT NOT NULL,
               updated TEXT NOT NULL DEFAULT (strftime('%Y-%m-%d %H:%M:%f+00:00', 'now')));
             WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < 2000)
             INSERT INTO items (name, value) SELECT 'row ' || i, i * 3 FROM s;"
        }
    }
}

/// Run the pending migrations of `dir` as `diesel migration run` does (the same runner).
fn diesel_migration_run(db: &TestDb, dir: &Path) -> usize {
    let migrations = FileBasedMigrations::from_path(dir).unwrap();
    let ran = match db.connect() {
        Db::Pg(mut c) => c.run_pending_migrations(migrations).map(|v| v.len()),
        Db::Sqlite(mut c) => c.run_pending_migrations(migrations).map(|v| v.len()),
    };
    ran.unwrap()
}

fn adopt(kind: Kind) {
    let master = TestDb::empty(kind);
    let replica = TestDb::empty(kind);
    let mut m = master.connect();
    m.batch_execute(table_before(kind)).unwrap();
    m.migrate().unwrap();
    let mut r = replica.connect();
    r.migrate().unwrap();
    r.batch_execute(schemas(kind).1).unwrap();

    let dir = tempdir_for(&master);
    let out = run(
        &master_bin(),
        &[
            "generate-migration",
            "-c",
            "item",
            "--migration-dir",
            dir.to_str().unwrap(),
        ],
        &master,
        None,
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let written = String::from_utf8(out.stdout).unwrap();
    assert!(
        written.trim().ends_with("_cqrs_adopt_items"),
        "prints the migration's directory: {written}"
    );
    assert_eq!(diesel_migration_run(&master, &dir), 1);
    assert_eq!(
        rows(&master, "items", "name").len(),
        2000,
        "the rows are kept, now with revision and stamp"
    );

    let route = Route::new(kind, &replica);
    let b = &route.test;
    let url = route.settings.broker_url.clone().unwrap();
    let sync = run(
        &master_bin(),
        &[
            "sync",
            "-c",
            "item",
            "-f",
            "{}",
            "--broker-url",
            &url,
            "--exchange",
            &b.exchange,
        ],
        &master,
        None,
    );
    assert_eq!(sync.status.code(), Some(0), "{}", stderr(&sync));
    route.consume_all(&replica);
    assert_eq!(
        rows(&replica, "replica_items", "title"),
        rows(&master, "items", "name")
    );
    // A model's own binary refuses a cqrs id it does not serve, naming the ones it does.
    let out = run(
        &master_bin(),
        &[
            "generate-migration",
            "-c",
            "nope",
            "--migration-dir",
            dir.to_str().unwrap(),
        ],
        &master,
        None,
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("item"), "{}", stderr(&out));
    let _ = std::fs::remove_dir_all(&dir);
}

/// A migrations directory of the test's own.
fn tempdir_for(db: &TestDb) -> std::path::PathBuf {
    let name: String = db
        .url
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .collect();
    let dir = std::env::temp_dir().join(format!("cqrs-adopt-{name}"));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}
