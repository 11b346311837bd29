//! cqrs's migrations and the application's own Diesel migrations in one database: each side
//! records its versions in its own table, so the application applies and reverts its own
//! migrations as if cqrs's were not there; versions an earlier release recorded in Diesel's table
//! are adopted, not applied again.

use cqrs::Db;
use cqrs::db::SqlConn;
use cqrs_tests::*;
use diesel_migrations::{FileBasedMigrations, MigrationHarness};

/// The application's migrations: one table, in a directory of their own.
fn app_migrations(kind: Kind) -> (std::path::PathBuf, FileBasedMigrations) {
    let dir = std::env::temp_dir().join(format!("cqrs-app-migrations-{}", uuid::Uuid::new_v4()));
    let m = dir.join("2030-01-01-000001_app_items");
    std::fs::create_dir_all(&m).unwrap();
    let key = match kind {
        Kind::Postgres => "BIGSERIAL",
        Kind::Sqlite => "INTEGER",
    };
    std::fs::write(
        m.join("up.sql"),
        format!("CREATE TABLE app_items (id {key} PRIMARY KEY);"),
    )
    .unwrap();
    std::fs::write(m.join("down.sql"), "DROP TABLE app_items;").unwrap();
    let migrations = FileBasedMigrations::from_path(&dir).unwrap();
    (dir, migrations)
}

fn tables(db: &mut Db) -> Vec<String> {
    let sql = match db {
        Db::Pg(_) => {
            "SELECT tablename AS j FROM pg_tables WHERE schemaname = current_schema() ORDER BY 1"
        }
        Db::Sqlite(_) => {
            "SELECT name AS j FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY 1"
        }
    };
    db.load_text(sql, vec![]).unwrap()
}

both!(
    fn the_applications_migrations_and_cqrs_migrations_live_side_by_side(kind: Kind) {
        let t = TestDb::empty(kind);
        let mut db = t.connect();
        let (dir, app) = app_migrations(kind);
        let ours = db.migrate().unwrap();
        assert!(!ours.is_empty());
        let run_app = |db: &mut Db, revert: bool| match db {
            Db::Pg(c) if revert => c.revert_last_migration(app.clone()).map(|v| v.to_string()),
            Db::Pg(c) => c
                .run_pending_migrations(app.clone())
                .map(|v| format!("{v:?}")),
            Db::Sqlite(c) if revert => c.revert_last_migration(app.clone()).map(|v| v.to_string()),
            Db::Sqlite(c) => c
                .run_pending_migrations(app.clone())
                .map(|v| format!("{v:?}")),
        };
        run_app(&mut db, false).unwrap();
        assert!(tables(&mut db).contains(&"app_items".to_string()));
        // The application reverts its last migration: its own, whatever cqrs applied after.
        assert_eq!(
            db.migrate().unwrap(),
            Vec::<String>::new(),
            "nothing left to apply"
        );
        assert_eq!(run_app(&mut db, true).unwrap(), "20300101000001");
        let now = tables(&mut db);
        assert!(!now.contains(&"app_items".to_string()), "{now:?}");
        assert!(now.contains(&"cqrs_outbox".to_string()), "{now:?}");
        assert!(
            run_app(&mut db, true).is_err(),
            "nothing of the application's left to revert"
        );
        let _ = std::fs::remove_dir_all(dir);

        // A database migrated by an earlier release (versions in Diesel's table): adopted.
        let versions = db
            .load_text("SELECT version AS j FROM cqrs_schema_migrations", vec![])
            .unwrap();
        db.batch_execute(
            "CREATE TABLE IF NOT EXISTS __diesel_schema_migrations (version VARCHAR(50) PRIMARY KEY NOT NULL, \
             run_on TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP)",
        )
        .unwrap();
        db.batch_execute(
            "INSERT INTO __diesel_schema_migrations (version) SELECT version FROM cqrs_schema_migrations; \
             DROP TABLE cqrs_schema_migrations",
        )
        .unwrap();
        assert_eq!(
            db.migrate().unwrap(),
            Vec::<String>::new(),
            "adopted, not applied again"
        );
        let mut adopted = db
            .load_text("SELECT version AS j FROM cqrs_schema_migrations", vec![])
            .unwrap();
        adopted.sort();
        let mut versions = versions;
        versions.sort();
        assert_eq!(adopted, versions);
        assert!(
            db.load_text(
                "SELECT version AS j FROM __diesel_schema_migrations",
                vec![]
            )
            .unwrap()
            .is_empty()
        );
    }
);
