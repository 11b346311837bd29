//! The stock `cqrs` binary: help, usage errors, model commands without models, migrate.

use std::process::{Command, Output};

use cqrs_tests::{Kind, TestDb, both};

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
    // The stock binary says which commands need an application's own binary, and how to make one.
    for needs in [
        "sync ",
        "diff-master ",
        "diff-replica ",
        "consume ",
        "bulk-dump ",
        "triggers ",
    ] {
        let line = out
            .lines()
            .find(|l| l.trim_start().starts_with(needs))
            .unwrap_or_else(|| panic!("no {needs}line: {out}"));
        assert!(line.contains("models)"), "{line}");
    }
    assert!(
        out.contains("This binary has no models") && out.contains("cqrs_cli::run"),
        "{out}"
    );
    assert!(
        !out.contains(
            "relay                 Publish the outbox to the broker, with confirms (needs"
        )
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

/// The stock binary writes the columns' migration of a table named on the command line; what it
/// cannot do exits 2 with the reason, writing nothing.
#[test]
fn generate_migration_by_table_name_writes_a_diesel_migration() {
    let dir = std::env::temp_dir().join(format!("cqrs-genmig-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let d = dir.to_str().unwrap();
    let o = cqrs(&[
        "generate-migration",
        "--table",
        "shop.items",
        "--backend",
        "postgres",
        "--migration-dir",
        d,
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let made = std::path::PathBuf::from(String::from_utf8(o.stdout).unwrap().trim());
    assert_eq!(made.parent(), Some(dir.as_path()));
    let name = made.file_name().unwrap().to_str().unwrap();
    // Diesel's migration directory name: <YYYY-MM-DD-HHMMSS>_<name>.
    assert_eq!(
        name.len(),
        "2026-12-07-160000_cqrs_adopt_shop_items".len(),
        "{name}"
    );
    assert!(name.ends_with("_cqrs_adopt_shop_items"), "{name}");
    let up = std::fs::read_to_string(made.join("up.sql")).unwrap();
    assert!(up.contains(r#"ALTER TABLE "shop"."items""#), "{up}");
    assert!(
        std::fs::read_to_string(made.join("down.sql"))
            .unwrap()
            .contains("DROP COLUMN cqrs_updated")
    );

    for (args, why) in [
        (
            &["--table", "items; DROP TABLE x", "--backend", "sqlite"][..],
            "--table",
        ),
        (&["--table", "items"][..], "--backend"),
        (&["-c", "item", "--backend", "sqlite"][..], "no models"),
        (&["--backend", "sqlite"][..], "--table"),
    ] {
        let o = cqrs(&[&["generate-migration", "--migration-dir", d][..], args].concat());
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
        assert!(stderr(&o).contains(why), "{args:?}: {}", stderr(&o));
    }
    assert_eq!(
        std::fs::read_dir(&dir).unwrap().count(),
        1,
        "nothing else written"
    );
    std::fs::remove_dir_all(&dir).unwrap();
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

both!(
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
);

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

#[test]
fn demo_on_postgres_and_nats_converges_with_zero_drift() {
    let db = TestDb::empty(Kind::Postgres);
    let nats = cqrs_tests::PrivateNats::start();
    let o = cqrs(&[
        "demo",
        "--rows",
        "300",
        "--database-url",
        &db.url,
        "--broker-url",
        &nats.url(),
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

/// A queue name NATS cannot use is a usage error (exit 2) naming it, before anything connects.
#[test]
fn a_queue_name_nats_cannot_use_exits_2_naming_it() {
    let db = TestDb::empty(Kind::Postgres);
    let nats = cqrs_tests::PrivateNats::start();
    let o = cqrs(&[
        "demo",
        "--rows",
        "10",
        "--database-url",
        &db.url,
        "--broker-url",
        &nats.url(),
        "--queue",
        "demo.replica",
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("demo.replica"), "{}", stderr(&o));
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

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

both!(
    fn outbox_status_shows_the_backlog_per_model(kind: Kind) {
        use chrono::{Duration, Utc};
        use cqrs::value::SqlValue;
        let t = TestDb::new(kind);
        let mut db = t.connect();
        let empty = cqrs(&["outbox", "status", "--database-url", &t.url]);
        assert!(empty.status.success(), "{}", stderr(&empty));
        assert_eq!(stdout(&empty), "outbox: 0 pending, 0 leased, oldest -\n");
        let row = |id: &str| cqrs::outbox::NewRow {
            message_id: uuid::Uuid::new_v4(),
            cqrs_id: id.into(),
            signal_type: cqrs::SignalType::Save,
            pk: "1".into(),
            routing_key: id.into(),
            body: "{}".into(),
        };
        cqrs::outbox::enqueue(
            &mut db,
            &[row("item"), row("item"), row("item"), row("typed")],
        )
        .unwrap();
        // The first item row waited 100 s and a relay holds a lease on it.
        db.execute(
        &cqrs_tests::sql_for(
            &db,
            "UPDATE cqrs_outbox SET created_at = $1, leased_until = $2 WHERE id = (SELECT min(id) FROM cqrs_outbox)",
        ),
        vec![
            SqlValue::Timestamptz(Utc::now() - Duration::seconds(100)),
            SqlValue::Timestamptz(Utc::now() + Duration::seconds(60)),
        ],
    )
    .unwrap();
        let o = cqrs(&["outbox", "status", "--database-url", &t.url]);
        assert!(o.status.success(), "{}", stderr(&o));
        let out = stdout(&o);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 3, "{out}");
        let age = |line: &str| -> f64 {
            line.rsplit_once("oldest ")
                .and_then(|(_, a)| a.strip_suffix(" s"))
                .and_then(|a| a.parse().ok())
                .unwrap_or_else(|| panic!("no age in {line:?}"))
        };
        assert!(
            lines[0].starts_with("outbox: 4 pending, 1 leased, oldest "),
            "{out}"
        );
        assert!(
            lines[1].starts_with("  item: 3 pending, 1 leased, oldest "),
            "{out}"
        );
        assert!(
            lines[2].starts_with("  typed: 1 pending, 0 leased, oldest "),
            "{out}"
        );
        assert!((99.0..160.0).contains(&age(lines[0])), "{out}");
        assert!((99.0..160.0).contains(&age(lines[1])), "{out}");
        assert!(age(lines[2]) < 60.0, "{out}");
    }
);

both!(
    fn tombstones_prune_removes_only_those_past_retention(kind: Kind) {
        use chrono::{Duration, Utc};
        use cqrs::value::SqlValue;
        let t = TestDb::new(kind);
        let mut db = t.connect();
        for (pk, days) in [("1", 20), ("2", 13), ("3", 0)] {
            db.execute(
            &cqrs_tests::sql_for(
                &db,
                "INSERT INTO cqrs_tombstones (cqrs_id, pk, revision, cqrs_updated, deleted_at) VALUES ('item', $1, 1, $2, $3)",
            ),
            vec![
                SqlValue::Text(pk.into()),
                SqlValue::Timestamptz(Utc::now()),
                SqlValue::Timestamptz(Utc::now() - Duration::days(days)),
            ],
        )
        .unwrap();
        }
        let left = |db: &mut cqrs::Db| {
            let mut pks =
                cqrs::db::SqlConn::load_text(db, "SELECT pk AS j FROM cqrs_tombstones", vec![])
                    .unwrap();
            pks.sort();
            pks
        };
        let o = cqrs(&["tombstones", "prune", "--database-url", &t.url]);
        assert!(o.status.success(), "{}", stderr(&o));
        assert_eq!(stdout(&o), "pruned 1 tombstone(s) older than 14 days\n");
        assert_eq!(left(&mut db), ["2", "3"]);
        // Shorter than a message can still arrive in (1 + 10 days of TTLs, then the retries): refused.
        let o = cqrs(&[
            "tombstones",
            "prune",
            "--older-than-days",
            "5",
            "--database-url",
            &t.url,
        ]);
        assert_eq!(o.status.code(), Some(2));
        assert!(
            stderr(&o).contains("tombstone_retention_days = 5 is too short"),
            "{}",
            stderr(&o)
        );
        assert_eq!(left(&mut db), ["2", "3"], "nothing pruned");
        let o = cqrs(&[
            "tombstones",
            "prune",
            "--older-than-days",
            "12",
            "--database-url",
            &t.url,
        ]);
        assert!(o.status.success(), "{}", stderr(&o));
        assert_eq!(left(&mut db), ["3"]);
    }
);

/// What `cqrs <args>` logs in `secs` seconds (a relay waiting for an unreachable database logs each
/// attempt), then killed.
fn logs_of(args: &[&str], secs: u64) -> String {
    let mut child = Command::new(env!("CARGO_BIN_EXE_cqrs"))
        .args(args)
        .env_remove("DATABASE_URL")
        .env_remove("CQRS_CONFIG")
        .env_remove("CQRS_LOG")
        .current_dir(std::env::temp_dir())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("the cqrs binary runs");
    std::thread::sleep(std::time::Duration::from_secs(secs));
    child.kill().unwrap();
    stderr(&child.wait_with_output().unwrap())
}

/// `--log-format json`: every line on stderr is one JSON object; a URL's password is not printed.
#[test]
fn json_logs_are_one_object_per_line_without_credentials() {
    let err = logs_of(
        &[
            "--log-format",
            "json",
            "relay",
            "--database-url",
            "postgres://app:s3cret@127.0.0.1:1/nowhere",
            "--broker-url",
            "amqp://guest:guest@127.0.0.1:1/%2f",
        ],
        2,
    );
    let lines: Vec<&str> = err.lines().collect();
    assert!(!lines.is_empty(), "the relay logged nothing");
    for line in &lines {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(
            v["level"].is_string() && v["fields"]["message"].is_string(),
            "{line}"
        );
    }
    assert!(lines.iter().any(|l| l.contains("\"WARN\"")), "{err}");
    assert!(!err.contains("s3cret"), "{err}");
}

/// Text logs written to a pipe carry no terminal colour codes.
#[test]
fn text_logs_to_a_pipe_have_no_colour_codes() {
    let err = logs_of(
        &["relay", "--database-url", "postgres://127.0.0.1:1/nowhere"],
        1,
    );
    assert!(err.contains(" WARN cqrs::service: database"), "{err}");
    assert!(!err.contains('\u{1b}'), "{err:?}");
}

/// A metrics address that is not `host:port` is a usage error, before anything starts.
#[test]
fn a_bad_metrics_address_exits_2() {
    let o = cqrs(&[
        "relay",
        "--metrics-addr",
        "not an address",
        "--database-url",
        "sqlite://unused.db",
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("metrics_addr \"not an address\" is not a host:port"),
        "{}",
        stderr(&o)
    );
}

/// A relay says at start what it relays and where to (credentials left out); so does `consume`
/// (tested with the example binaries). Its per-minute progress lines come from the same reporter.
#[test]
fn the_relay_says_what_it_relays_when_it_starts() {
    let t = TestDb::new(Kind::Postgres);
    let err = logs_of(
        &[
            "relay",
            "--database-url",
            t.url.as_str(),
            "--broker-url",
            "amqp://guest:s3cret@127.0.0.1:1/%2f",
        ],
        2,
    );
    let start = err
        .lines()
        .find(|l| l.contains("relay starting"))
        .unwrap_or_else(|| panic!("no start line: {err}"));
    assert!(
        start.contains("exchange=cqrs")
            && start.contains("batch_size=")
            && start.contains("127.0.0.1:1"),
        "{start}"
    );
    assert!(!err.contains("s3cret"), "{err}");
}

/// `queues delete` (no models needed) refuses while the replica's queues hold messages, naming
/// them, then with `--force` removes the queue, its dead-letter and delay queues and its retry
/// exchange.
#[test]
fn queues_delete_removes_a_retired_replicas_queues_and_retry_exchange() {
    let mut b = cqrs_tests::TestBroker::new();
    b.delays = cqrs::Settings::default().retry_delays;
    b.declare(&["item"]);
    b.publish_raw("item", b"{}");
    cqrs_tests::wait_until(
        std::time::Duration::from_secs(10),
        "the message queued",
        || b.count(&b.queue) == 1,
    );
    let url = cqrs_tests::amqp_url();
    let args = [
        "queues",
        "delete",
        "--broker-url",
        &url,
        "--exchange",
        &b.exchange,
        "--queue",
        &b.queue,
    ];
    let o = cqrs(&args);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stderr(&o).contains(&format!("not deleting: {} holds 1", b.queue)),
        "{}",
        stderr(&o)
    );
    assert_eq!(b.count(&b.queue), 1, "nothing deleted");
    let o = cqrs(&[&args[..], &["--force"]].concat());
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(
        stderr(&o).contains(&format!("{}: deleted with 1 message(s)", b.queue)),
        "{}",
        stderr(&o)
    );
    let queues = cqrs_tests::rabbitmqctl(&["list_queues", "name"]);
    let left: Vec<&serde_json::Value> = queues
        .as_array()
        .unwrap()
        .iter()
        .filter(|q| q["name"].as_str().unwrap_or_default().contains(&b.queue))
        .collect();
    assert!(left.is_empty(), "{left:?}");
    let exchanges = cqrs_tests::rabbitmqctl(&["list_exchanges", "name"]);
    let retry = cqrs::transport::amqp::retry_exchange(&b.queue);
    assert!(
        !exchanges
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["name"] == retry.as_str()),
        "{exchanges}"
    );
}

/// A relay killed after the broker confirmed its batch and before it committed the batch's
/// deletes leaves every row in the outbox, free to claim at once: the open transaction that held
/// them ended with its session, there is no lease (60 s by default) to wait out.
#[test]
fn a_relay_killed_before_committing_a_batch_gives_its_rows_back_at_once() {
    use std::os::unix::process::ExitStatusExt;
    let b = cqrs_tests::TestBroker::new();
    b.declare(&["item"]);
    let t = TestDb::new(Kind::Postgres);
    let mut db = t.connect();
    cqrs::atomic(&mut db, |tx| cqrs_tests::insert_m_items(tx, 5)).unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_cqrs"))
        .args(["relay", "--database-url", &t.url])
        .args([
            "--broker-url",
            &cqrs_tests::amqp_url(),
            "--exchange",
            &b.exchange,
        ])
        .env_remove("DATABASE_URL")
        .env_remove("CQRS_CONFIG")
        .env("CQRS_CRASH_POINT", "relay.after_confirm")
        .current_dir(std::env::temp_dir())
        .output()
        .unwrap();
    assert_eq!(o.status.signal(), Some(6), "{}", stderr(&o));
    assert_eq!(b.count(&b.queue), 5, "published and confirmed");
    let free = |db: &mut cqrs::Db| {
        cqrs::db::SqlConn::load_text(
            db,
            "SELECT CAST(count(*) AS TEXT) AS j FROM (SELECT id FROM cqrs_outbox \
             WHERE leased_until IS NULL FOR UPDATE SKIP LOCKED) AS free",
            vec![],
        )
        .unwrap()[0]
            .clone()
    };
    // The server ends the dead relay's session as soon as it reads the closed socket.
    cqrs_tests::wait_until(
        std::time::Duration::from_secs(10),
        "the killed relay's rows to be free",
        || free(&mut db) == "5",
    );
}
