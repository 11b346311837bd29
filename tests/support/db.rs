//! A database of its own per test: on the machine's PostgreSQL (created and dropped) or in a
//! temporary SQLite file, migrated, with the test tables; unique names for anything a test creates.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

use cqrs::Db;
use diesel::prelude::*;

/// Which backend a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The machine's PostgreSQL, a fresh database per test.
    Postgres,
    /// A SQLite file in a fresh temporary directory.
    Sqlite,
}

/// The server URL tests create their databases on.
pub fn pg_server_url() -> String {
    std::env::var("CQRS_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_string())
}

/// A name no other test (in this process or another) uses: `<prefix>_<pid>_<n>_<nanos>`.
pub fn unique(prefix: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!(
        "{prefix}_{}_{}_{nanos}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// A database that exists for one test and is dropped after it.
pub struct TestDb {
    /// Backend.
    pub kind: Kind,
    /// URL to connect with.
    pub url: String,
    name: String,
    dir: Option<PathBuf>,
}

impl TestDb {
    /// A fresh database of `kind`, migrated, with the test tables. Panics (fails the test) loudly if
    /// PostgreSQL is not reachable: tests never skip.
    pub fn new(kind: Kind) -> TestDb {
        let db = TestDb::empty(kind);
        let mut conn = db.connect();
        conn.migrate().expect("migrations run");
        conn.batch_execute(&tables_sql(kind))
            .expect("test tables created");
        db
    }

    /// A fresh PostgreSQL database in `encoding` (e.g. `LATIN1`: text it cannot hold is refused),
    /// migrated, with the test tables.
    pub fn postgres_encoded(encoding: &str) -> TestDb {
        let db = TestDb::create_postgres(&format!(
            " ENCODING '{encoding}' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0"
        ));
        let mut conn = db.connect();
        conn.migrate().expect("migrations run");
        conn.batch_execute(&tables_sql(Kind::Postgres))
            .expect("test tables created");
        db
    }

    /// A fresh, empty database of `kind` (no migrations, no tables).
    pub fn empty(kind: Kind) -> TestDb {
        match kind {
            Kind::Postgres => TestDb::create_postgres(""),
            Kind::Sqlite => {
                let dir = std::env::temp_dir().join(unique("cqrs_t"));
                std::fs::create_dir_all(&dir).unwrap();
                let path = dir.join("replica.db");
                TestDb {
                    kind,
                    url: format!("sqlite://{}", path.display()),
                    name: String::new(),
                    dir: Some(dir),
                }
            }
        }
    }

    /// `CREATE DATABASE <a unique name><options>` on the test server. Panics (fails the test)
    /// loudly if PostgreSQL is not reachable: tests never skip.
    fn create_postgres(options: &str) -> TestDb {
        let name = unique("cqrs_t");
        let server = pg_server_url();
        let mut admin = PgConnection::establish(&server).unwrap_or_else(|e| {
            panic!("PostgreSQL is required at {server} (set CQRS_TEST_DATABASE_URL): {e}")
        });
        diesel::sql_query(format!("CREATE DATABASE {name}{options}"))
            .execute(&mut admin)
            .unwrap();
        let base = server.rsplit_once('/').map(|(b, _)| b).unwrap_or(&server);
        TestDb {
            kind: Kind::Postgres,
            url: format!("{base}/{name}"),
            name,
            dir: None,
        }
    }

    /// A new connection.
    pub fn connect(&self) -> Db {
        Db::connect(&self.url).unwrap_or_else(|e| panic!("connect {}: {e}", self.url))
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        match self.kind {
            Kind::Postgres => {
                if let Ok(mut admin) = PgConnection::establish(&pg_server_url()) {
                    let _ = diesel::sql_query(format!(
                        "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                        self.name
                    ))
                    .execute(&mut admin);
                }
            }
            Kind::Sqlite => {
                if let Some(dir) = &self.dir {
                    let _ = std::fs::remove_dir_all(dir);
                }
            }
        }
    }
}

/// DDL of the test tables: `m_items` (a master table), `items` (shaped like the captured django-cqrs `Item`, plus an optional
/// column with a default and a CHECK to provoke constraint errors), `wide` (9 columns, for the bind
/// limit) and `typed` (the captured `Typed` model).
pub fn tables_sql(kind: Kind) -> String {
    let (ts, json, num, dbl, boolean) = match kind {
        Kind::Postgres => (
            "TIMESTAMPTZ",
            "JSONB",
            "NUMERIC(12,2)",
            "DOUBLE PRECISION",
            "BOOLEAN",
        ),
        Kind::Sqlite => ("TEXT", "TEXT", "TEXT", "REAL", "INTEGER"),
    };
    let (serial, now) = match kind {
        Kind::Postgres => ("BIGSERIAL PRIMARY KEY", "clock_timestamp()"),
        Kind::Sqlite => (
            "INTEGER PRIMARY KEY AUTOINCREMENT",
            "(strftime('%Y-%m-%d %H:%M:%f+00:00', 'now'))",
        ),
    };
    let uuid = if kind == Kind::Postgres {
        "UUID"
    } else {
        "TEXT"
    };
    format!(
        "CREATE TABLE items (
            id BIGINT PRIMARY KEY,
            name TEXT NOT NULL,
            value BIGINT NOT NULL CHECK (value >= -4611686018427387904),
            updated {ts} NOT NULL,
            note TEXT NOT NULL DEFAULT 'none',
            cqrs_revision INTEGER NOT NULL,
            cqrs_updated {ts} NOT NULL
        );
        CREATE TABLE wide (
            id BIGINT PRIMARY KEY,
            a BIGINT NOT NULL, b BIGINT NOT NULL, c TEXT NOT NULL, d TEXT NOT NULL,
            e BIGINT NOT NULL, f TEXT NOT NULL,
            cqrs_revision INTEGER NOT NULL,
            cqrs_updated {ts} NOT NULL
        );
        CREATE TABLE m_items (
            id {serial},
            name TEXT NOT NULL,
            value BIGINT NOT NULL,
            updated {ts} NOT NULL,
            secret TEXT NOT NULL DEFAULT '',
            owner_id BIGINT,
            cqrs_revision INTEGER NOT NULL DEFAULT 0,
            cqrs_updated {ts} NOT NULL DEFAULT {now}
        );
        CREATE TABLE typed (
            id {uuid} PRIMARY KEY,
            price {num} NOT NULL,
            ratio {dbl} NOT NULL,
            flag {boolean} NOT NULL,
            day DATE NOT NULL,
            at {ts} NOT NULL,
            maybe_text TEXT,
            maybe_int INTEGER,
            owner_ref BIGINT,
            tags {json} NOT NULL,
            cqrs_revision INTEGER NOT NULL,
            cqrs_updated {ts} NOT NULL
        );"
    )
}

/// Rewrite `$n` placeholders to `?` for SQLite (test statements bind in order).
pub fn sql_for(db: &Db, sql: &str) -> String {
    match db {
        Db::Pg(_) => sql.to_string(),
        Db::Sqlite(_) => {
            let mut out = String::with_capacity(sql.len());
            let mut chars = sql.chars().peekable();
            while let Some(c) = chars.next() {
                if c == '$' && chars.peek().is_some_and(char::is_ascii_digit) {
                    while chars.peek().is_some_and(char::is_ascii_digit) {
                        chars.next();
                    }
                    out.push('?');
                } else {
                    out.push(c);
                }
            }
            out
        }
    }
}
