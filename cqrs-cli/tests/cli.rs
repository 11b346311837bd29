//! The stock `cqrs` binary: help, usage errors, model commands without models, migrate.

use std::process::{Command, Output};

use cqrs_tests::{Kind, TestDb};

fn cqrs(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cqrs"))
        .args(args)
        .env_remove("DATABASE_URL")
        .env_remove("CQRS_CONFIG")
        .current_dir(std::env::temp_dir())
        .output()
        .expect("the cqrs binary runs")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn help_works_and_lists_commands() {
    let o = cqrs(&["--help"]);
    assert_eq!(o.status.code(), Some(0));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("migrate") && out.contains("--database-url"),
        "{out}"
    );
}

#[test]
fn unknown_subcommand_exits_2() {
    let o = cqrs(&["frobnicate"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("unrecognized subcommand 'frobnicate'"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn model_command_without_models_exits_2_with_the_reason() {
    let o = cqrs(&["models"]);
    assert_eq!(o.status.code(), Some(2));
    assert_eq!(stderr(&o).trim(), format!("cqrs: {}", cqrs_cli::NO_MODELS));
}

#[test]
fn migrate_without_database_exits_2_naming_the_flag() {
    let o = cqrs(&["migrate"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("--database-url"), "{}", stderr(&o));
    let o = cqrs(&["migrate", "--database-url", "mysql://x"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("unknown scheme"), "{}", stderr(&o));
}

fn migrate_creates_the_tables(kind: Kind) {
    let t = TestDb::empty(kind);
    let o = cqrs(&["migrate", "--database-url", &t.url]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    // Every migration of the backend's directory, newest included.
    let dir = match kind {
        Kind::Postgres => "postgres",
        Kind::Sqlite => "sqlite",
    };
    let migrations = std::fs::read_dir(format!(
        "{}/../migrations/{dir}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
    .filter(|e| e.as_ref().unwrap().path().join("up.sql").exists())
    .count();
    let expected = format!("applied {migrations} migration");
    assert!(stderr(&o).contains(&expected), "{}", stderr(&o));
    let mut db = t.connect();
    for table in ["cqrs_outbox", "cqrs_tombstones"] {
        db.execute(&format!("SELECT count(*) FROM {table}"), vec![])
            .unwrap_or_else(|e| panic!("{table}: {e}"));
    }
    let again = cqrs(&["migrate", "--database-url", &t.url]);
    assert_eq!(again.status.code(), Some(0));
    assert!(stderr(&again).contains("up to date"), "{}", stderr(&again));
}

#[test]
fn migrate_creates_the_tables_postgres() {
    migrate_creates_the_tables(Kind::Postgres);
}

#[test]
fn migrate_creates_the_tables_sqlite() {
    migrate_creates_the_tables(Kind::Sqlite);
}

#[test]
fn database_url_comes_from_the_environment_and_the_config_file() {
    let t = TestDb::empty(Kind::Sqlite);
    let o = Command::new(env!("CARGO_BIN_EXE_cqrs"))
        .arg("migrate")
        .env("DATABASE_URL", &t.url)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let t2 = TestDb::empty(Kind::Sqlite);
    let dir = std::env::temp_dir().join(format!("cqrs_cfg_{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("cqrs.toml"),
        format!("database_url = {:?}\n", t2.url),
    )
    .unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_cqrs"))
        .arg("migrate")
        .env_remove("DATABASE_URL")
        .current_dir(&dir)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    t2.connect()
        .execute("SELECT count(*) FROM cqrs_outbox", vec![])
        .unwrap();
    std::fs::write(dir.join("cqrs.toml"), "databse_url = \"x\"\n").unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_cqrs"))
        .arg("migrate")
        .env_remove("DATABASE_URL")
        .current_dir(&dir)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("databse_url"), "{}", stderr(&o));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Rows of the demo's master and replica tables, read directly (not from the demo's output).
fn demo_rows(db: &mut cqrs::Db, table: &str) -> Vec<String> {
    use cqrs::db::SqlConn;
    db.load_text(
        &format!("SELECT CAST(id AS TEXT) || '|' || name || '|' || CAST(CAST(price AS NUMERIC) AS TEXT) || '|' || CAST(stock AS TEXT) || '|' || CAST(cqrs_revision AS TEXT) AS j FROM {table} ORDER BY id"),
        vec![],
    )
    .unwrap()
}

#[test]
fn demo_on_the_embedded_default_converges_with_zero_drift() {
    let dir = std::env::temp_dir().join(format!("cqrs-demo-test-{}", std::process::id()));
    let o = cqrs(&["demo", "--rows", "300", "--dir", dir.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let mut master =
        cqrs::Db::connect(&format!("sqlite://{}", dir.join("master.db").display())).unwrap();
    let mut replica =
        cqrs::Db::connect(&format!("sqlite://{}", dir.join("replica.db").display())).unwrap();
    let (m, r) = (
        demo_rows(&mut master, "demo_items"),
        demo_rows(&mut replica, "demo_replica_items"),
    );
    assert_eq!(m.len(), 270, "300 created, 30 deleted");
    assert_eq!(r, m);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn demo_on_postgres_and_rabbitmq_converges_with_zero_drift() {
    let db = TestDb::empty(Kind::Postgres);
    let mut b = cqrs_tests::TestBroker::new();
    b.delays = cqrs::Settings::default().retry_delays;
    let o = cqrs(&[
        "demo",
        "--rows",
        "300",
        "--database-url",
        &db.url,
        "--broker-url",
        &cqrs_tests::amqp_url(),
        "--exchange",
        &b.exchange,
        "--queue",
        &b.queue,
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let mut conn = db.connect();
    let (m, r) = (
        demo_rows(&mut conn, "demo_items"),
        demo_rows(&mut conn, "demo_replica_items"),
    );
    assert_eq!(m.len(), 270);
    assert_eq!(r, m);
}

/// Without `--dir`, the demo's temporary files are removed after a clean run.
#[test]
fn demo_removes_the_temporary_directory_it_made() {
    let child = Command::new(env!("CARGO_BIN_EXE_cqrs"))
        .args(["demo", "--rows", "100"])
        .env_remove("DATABASE_URL")
        .env_remove("CQRS_CONFIG")
        .env_remove("CQRS_BROKER_URL")
        .env_remove("AMQP_URL")
        .env_remove("CQRS_QUEUE")
        .current_dir(std::env::temp_dir())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("the cqrs binary runs");
    let dir = std::env::temp_dir().join(format!("cqrs-demo-{}", child.id()));
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains(&format!("sqlite://{}", dir.display())),
        "{out}"
    );
    assert!(out.contains("files:                removed"), "{out}");
    assert!(!dir.exists(), "{} is still there", dir.display());
}

/// `cqrs config` prints every setting with where it came from: a flag, the environment, the
/// config file, or the default; passwords in URLs are redacted; an unknown key in the file is a
/// usage error naming it (exit 2).
#[test]
fn config_shows_each_value_and_its_source() {
    let dir = std::env::temp_dir().join(format!("cqrs-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("cqrs.toml"),
        "exchange = \"from_file\"\nbatch_size = 7\n",
    )
    .unwrap();
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_cqrs"))
            .args(args)
            .env_clear()
            .env("DATABASE_URL", "postgres://app:s3cret@db/shop")
            .env("AMQP_URL", "amqp://guest:guest@rabbit/%2f")
            .current_dir(&dir)
            .output()
            .expect("the cqrs binary runs")
    };
    let o = run(&["config", "--queue", "from_flag"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    let line = |key: &str| -> String {
        out.lines()
            .find(|l| l.split_whitespace().next() == Some(key))
            .unwrap_or_else(|| panic!("no {key} line in:\n{out}"))
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
    };
    assert_eq!(line("queue"), "queue = \"from_flag\" # flag");
    assert_eq!(
        line("database_url"),
        "database_url = \"postgres://app:***@db/shop\" # env DATABASE_URL"
    );
    assert_eq!(
        line("broker_url"),
        "broker_url = \"amqp://guest:***@rabbit/%2f\" # env AMQP_URL"
    );
    assert_eq!(
        line("exchange"),
        "exchange = \"from_file\" # file cqrs.toml"
    );
    assert_eq!(line("batch_size"), "batch_size = 7 # file cqrs.toml");
    assert_eq!(line("relay_lease_ms"), "relay_lease_ms = 60000 # default");
    assert!(!out.contains("s3cret"), "{out}");

    std::fs::write(dir.join("cqrs.toml"), "exchnage = \"typo\"\n").unwrap();
    let o = run(&["config"]);
    assert_eq!(o.status.code(), Some(2));
    assert_eq!(stderr(&o).trim().lines().count(), 1, "{}", stderr(&o));
    assert!(stderr(&o).contains("exchnage"), "{}", stderr(&o));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A queue name its own bindings would misread (`*`, `#`: directed SYNCs for other queues would
/// match `cqrs.<queue>.<cqrs_id>`) or too long for the names derived from it is a usage error
/// naming it, before anything connects.
#[test]
fn a_queue_name_that_cannot_be_bound_safely_exits_2() {
    let long = "q".repeat(cqrs::transport::routing::MAX_QUEUE_NAME + 1);
    for (queue, says) in [
        ("billing.#", "'#'"),
        ("*", "'*'"),
        (long.as_str(), "201 bytes"),
    ] {
        let o = cqrs(&["config", "--queue", queue]);
        assert_eq!(o.status.code(), Some(2), "{queue}: {}", stderr(&o));
        assert_eq!(stderr(&o).trim().lines().count(), 1, "{}", stderr(&o));
        assert!(stderr(&o).contains(says), "{queue}: {}", stderr(&o));
    }
    let o = cqrs(&["config", "--queue", "billing.items_v2"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
}
