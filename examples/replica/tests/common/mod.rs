//! Helpers shared by the example binaries' tests.
#![allow(dead_code)]

use std::io::Write;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use cqrs::db::SqlConn;
use cqrs_tests::{Kind, TestBroker, TestDb, amqp_url, wait_until};

pub const REPLICA: &str = env!("CARGO_BIN_EXE_example-replica");

/// The example master's binary, built (or brought up to date) once per test process, in the
/// target directory and profile this test binary was built in: cargo builds a package's own
/// binaries for its tests, not another package's. Built as `cargo test --workspace` builds it
/// (every package's tests, so the same features): under that command it is already there and
/// this is a no-op, where `-p example-master` alone would build it again with other features.
pub fn master_bin() -> PathBuf {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| {
            let out_dir = PathBuf::from(REPLICA).parent().unwrap().to_path_buf();
            let profile = match out_dir.file_name().and_then(|n| n.to_str()) {
                Some("debug") => "dev".to_string(),
                Some(other) => other.to_string(),
                None => panic!("{REPLICA} is not in a profile directory"),
            };
            let target_dir = out_dir.parent().unwrap();
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            let mut build = Command::new(cargo);
            // Not the variables cargo set for this test: build scripts that track one (ring's
            // tracks CARGO_MANIFEST_DIR) would run again here, and again in the next `cargo test`.
            for (name, _) in std::env::vars_os() {
                let name = name.to_string_lossy();
                if [
                    "CARGO_MANIFEST_",
                    "CARGO_PKG_",
                    "CARGO_CRATE_",
                    "CARGO_BIN_",
                ]
                .iter()
                .any(|p| name.starts_with(p))
                    || [
                        "CARGO_TARGET_TMPDIR",
                        "CARGO_PRIMARY_PACKAGE",
                        "CARGO_RUSTC_CURRENT_DIR",
                    ]
                    .contains(&&*name)
                {
                    build.env_remove(&*name);
                }
            }
            let status = build
                .args(["build", "--quiet", "--locked", "--profile", &profile])
                .arg("--target-dir")
                .arg(target_dir)
                .args(["--workspace", "--tests"])
                .current_dir(env!("CARGO_MANIFEST_DIR"))
                .status()
                .expect("cargo runs");
            assert!(status.success(), "building example-master failed");
            let p = out_dir.join("example-master");
            assert!(p.exists(), "{} is not where cargo builds it", p.display());
            p
        })
        .clone()
}

pub fn schemas(kind: Kind) -> (&'static str, &'static str) {
    match kind {
        Kind::Postgres => (
            "CREATE TABLE items (id BIGINT PRIMARY KEY, name TEXT NOT NULL, value BIGINT NOT NULL, updated TIMESTAMPTZ NOT NULL,
               cqrs_revision INTEGER NOT NULL DEFAULT 0, cqrs_updated TIMESTAMPTZ NOT NULL);
             INSERT INTO items SELECT i, 'name ' || i || ' ''quoted'' /é', i * 7 - 35000, TIMESTAMPTZ '2026-11-23 12:00:00+00' + i * INTERVAL '1 millisecond',
               i % 5, TIMESTAMPTZ '2026-11-23 12:00:00.000001+00' + i * INTERVAL '1 second' FROM generate_series(1, 10000) AS i;",
            "CREATE TABLE replica_items (id BIGINT PRIMARY KEY, title TEXT NOT NULL, value BIGINT NOT NULL, updated TIMESTAMPTZ NOT NULL,
               cqrs_revision INTEGER NOT NULL, cqrs_updated TIMESTAMPTZ NOT NULL);",
        ),
        Kind::Sqlite => (
            "CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT NOT NULL, value BIGINT NOT NULL, updated TEXT NOT NULL,
               cqrs_revision INTEGER NOT NULL DEFAULT 0, cqrs_updated TEXT NOT NULL);
             WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < 10000)
             INSERT INTO items SELECT i, 'name ' || i || ' ''quoted'' /é', i * 7 - 35000,
               strftime('%Y-%m-%d %H:%M:%f', '2026-11-23 12:00:00', '+' || i || ' seconds') || '+00:00',
               i % 5, strftime('%Y-%m-%d %H:%M:%f', '2026-11-23 12:00:00', '+' || i || ' seconds') || '+00:00' FROM s;",
            "CREATE TABLE replica_items (id INTEGER PRIMARY KEY, title TEXT NOT NULL, value BIGINT NOT NULL, updated TEXT NOT NULL,
               cqrs_revision INTEGER NOT NULL, cqrs_updated TEXT NOT NULL);",
        ),
    }
}

pub fn setup(kind: Kind) -> (TestDb, TestDb) {
    let (m, r) = schemas(kind);
    let master = TestDb::empty(kind);
    let replica = TestDb::empty(kind);
    master.connect().batch_execute(m).unwrap();
    let mut rc = replica.connect();
    rc.migrate().unwrap();
    rc.batch_execute(r).unwrap();
    (master, replica)
}

pub fn rows(db: &TestDb, table: &str, name: &str) -> Vec<String> {
    let sql = format!(
        "SELECT CAST(id AS TEXT) || '|' || {name} || '|' || CAST(value AS TEXT) || '|' || CAST(cqrs_revision AS TEXT) AS j FROM {table} ORDER BY id"
    );
    db.connect().load_text(&sql, vec![]).unwrap()
}

pub fn run(bin: &PathBuf, args: &[&str], db: &TestDb, stdin: Option<&[u8]>) -> Output {
    let mut child = Command::new(bin)
        .args(args)
        .args(["--database-url", &db.url])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    if let Some(data) = stdin {
        input.write_all(data).unwrap();
    }
    drop(input);
    child.wait_with_output().unwrap()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).trim().to_string()
}

/// SIGTERM, then the exit status (within 30 s).
pub fn terminate(mut child: Child) -> std::process::ExitStatus {
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let mut status = None;
    wait_until(
        Duration::from_secs(30),
        "the process to stop on SIGTERM",
        || {
            status = child.try_wait().unwrap();
            status.is_some()
        },
    );
    status.unwrap()
}

/// The pipelines' broker: RabbitMQ on PostgreSQL, the queue file beside the replica's file on
/// SQLite, with the test's replica queue declared for `item`.
pub struct Route {
    pub test: TestBroker,
    pub settings: cqrs::Settings,
    pub broker: Box<dyn cqrs::transport::Broker>,
}

impl Route {
    pub fn new(kind: Kind, replica: &TestDb) -> Route {
        let test = TestBroker::new();
        let settings = cqrs::Settings {
            broker_url: Some(match kind {
                Kind::Postgres => amqp_url(),
                Kind::Sqlite => replica.url.replace("replica.db", "queue.db"),
            }),
            ..test.settings()
        };
        let broker = cqrs::transport::connect(&settings, "test").unwrap();
        broker
            .declare_replica(&test.queue, &["item".into()], &test.delays)
            .unwrap();
        Route {
            test,
            settings,
            broker,
        }
    }

    /// One consume pass of everything on the replica's queue into `replica`.
    pub fn consume_all(&self, replica: &TestDb) {
        let registry = example_replica::registry();
        let t = &self.test;
        let mut c = cqrs::Consumer::new(
            &registry,
            &self.settings,
            replica.connect(),
            self.broker.inbox(&t.queue, 500, &t.delays).unwrap(),
        );
        c.drain(Duration::from_millis(500)).unwrap();
    }
}
