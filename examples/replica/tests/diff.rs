//! The diff and deleted-rows pipelines through the example binaries, with injected drift.

mod common;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use common::*;
use cqrs::db::SqlConn;
use cqrs_tests::{Kind, TestBroker, TestDb, amqp_url, rabbitmqctl};

/// Spawn `bin args --database-url db` reading `stdin`, writing to a pipe.
fn stage(bin: &PathBuf, args: &[&str], db: &TestDb, stdin: Stdio) -> Child {
    Command::new(bin)
        .args(args)
        .args(["--database-url", &db.url])
        .stdin(stdin)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn finish(child: Child, what: &str) -> String {
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(0), "{what}: {err}");
    err
}

#[test]
fn diff_pipeline_then_deleted_pipeline_repair_drift_on_10000_rows_postgres() {
    pipelines(Kind::Postgres);
}

#[test]
fn diff_pipeline_then_deleted_pipeline_repair_drift_on_10000_rows_sqlite() {
    pipelines(Kind::Sqlite);
}

/// On PostgreSQL through RabbitMQ, on SQLite through the embedded queue file.
fn pipelines(kind: Kind) {
    let (master, replica) = setup(kind);
    master.connect().migrate().unwrap();
    let route = Route::new(kind, &replica);
    let (b, broker_url) = (&route.test, route.settings.broker_url.clone().unwrap());
    let replica_bin = PathBuf::from(REPLICA);

    // Start equal, through the dump.
    let dump = run(&master_bin(), &["bulk-dump", "-c", "item"], &master, None);
    let out = run(&replica_bin, &["bulk-load"], &replica, Some(&dump.stdout));
    assert_eq!(out.status.code(), Some(0));
    // Drift: 100 rows missing, 100 at a lower revision with old values, one newer on the replica,
    // and 50 rows the master deleted without telling anyone.
    let mut r = replica.connect();
    r.batch_execute(
        "DELETE FROM replica_items WHERE id BETWEEN 1 AND 100;
         UPDATE replica_items SET cqrs_revision = cqrs_revision - 1, title = 'stale' WHERE id BETWEEN 5001 AND 5100;
         UPDATE replica_items SET cqrs_revision = cqrs_revision + 5, title = 'ahead' WHERE id = 9000;",
    )
    .unwrap();
    master
        .connect()
        .batch_execute("DELETE FROM items WHERE id BETWEEN 9901 AND 9950")
        .unwrap();

    let broker_args = ["--broker-url", &broker_url, "--exchange", &b.exchange];
    let mut s1 = stage(
        &master_bin(),
        &["diff-master", "-c", "item", "-b", "3000"],
        &master,
        Stdio::null(),
    );
    let mut s2 = stage(
        &replica_bin,
        &["diff-replica", "--queue", &b.queue],
        &replica,
        Stdio::from(s1.stdout.take().unwrap()),
    );
    let s3 = stage(
        &master_bin(),
        &[&["diff-sync"][..], &broker_args[..]].concat(),
        &master,
        Stdio::from(s2.stdout.take().unwrap()),
    );
    finish(s1, "diff-master");
    let err2 = finish(s2, "diff-replica");
    assert!(err2.contains("201 rows differ"), "{err2}");
    let err3 = finish(s3, "diff-sync");
    assert!(
        err3.contains(&format!("201 rows synced to queue {}", b.queue)),
        "{err3}"
    );

    // One consume pass.
    route.consume_all(&replica);
    let want = rows(&master, "items", "name");
    let got: Vec<String> = rows(&replica, "replica_items", "title")
        .into_iter()
        .filter(|r| !r.starts_with("99") || want.contains(r))
        .collect();
    assert_eq!(got.len(), 10_000 - 50);
    assert_eq!(
        got, want,
        "replica equals master after the pipeline and one consume pass"
    );

    // The deleted-rows pipeline removes exactly the 50 rows the master no longer has.
    let mut d1 = stage(
        &replica_bin,
        &["deleted-diff-replica", "-c", "item", "-b", "4000"],
        &replica,
        Stdio::null(),
    );
    let mut d2 = stage(
        &master_bin(),
        &["deleted-diff-master"],
        &master,
        Stdio::from(d1.stdout.take().unwrap()),
    );
    let d3 = stage(
        &replica_bin,
        &["deleted-sync-replica"],
        &replica,
        Stdio::from(d2.stdout.take().unwrap()),
    );
    finish(d1, "deleted-diff-replica");
    assert!(finish(d2, "deleted-diff-master").contains("50 rows no longer on the master"));
    assert!(finish(d3, "deleted-sync-replica").contains("50 rows deleted"));
    assert_eq!(
        rows(&replica, "replica_items", "title"),
        rows(&master, "items", "name")
    );
    let tombs = r
        .load_text(
            "SELECT CAST(count(*) AS TEXT) AS j FROM cqrs_tombstones",
            vec![],
        )
        .unwrap();
    assert_eq!(tombs, ["50"]);
}

#[test]
fn diff_content_finds_rows_changed_without_a_new_revision_postgres() {
    content_diff(Kind::Postgres);
}

#[test]
fn diff_content_finds_rows_changed_without_a_new_revision_sqlite() {
    content_diff(Kind::Sqlite);
}

/// The keys `diff-replica` lists for what `diff-master` (with `extra` flags) sends.
fn differing_keys(master: &TestDb, replica: &TestDb, extra: &[&str]) -> Vec<i64> {
    let args = [&["diff-master", "-c", "item", "-b", "700"][..], extra].concat();
    let sent = run(&master_bin(), &args, master, None);
    assert_eq!(sent.status.code(), Some(0), "{}", stderr(&sent));
    let listed = run(
        &PathBuf::from(REPLICA),
        &["diff-replica", "--queue", "q"],
        replica,
        Some(&sent.stdout),
    );
    assert_eq!(listed.status.code(), Some(0), "{}", stderr(&listed));
    let mut keys: Vec<i64> = String::from_utf8_lossy(&listed.stdout)
        .lines()
        .skip(1)
        .flat_map(|l| serde_json::from_str::<Vec<i64>>(l).unwrap())
        .collect();
    keys.sort_unstable();
    keys
}

/// Rows changed by hand on either side, the revision left alone: the revision diff cannot see
/// them, `diff-master --content` finds exactly them (through the renamed column, with no false
/// positive among 10,000 rows of quoted text, negative numbers and timestamps), and the pipeline's
/// SYNCs repair them.
fn content_diff(kind: Kind) {
    let (master, replica) = setup(kind);
    master.connect().migrate().unwrap();
    let dump = run(&master_bin(), &["bulk-dump", "-c", "item"], &master, None);
    let out = run(
        &PathBuf::from(REPLICA),
        &["bulk-load"],
        &replica,
        Some(&dump.stdout),
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        differing_keys(&master, &replica, &["--content"]),
        Vec::<i64>::new()
    );

    replica
        .connect()
        .batch_execute(
            "UPDATE replica_items SET title = 'by hand' WHERE id = 7;
             UPDATE replica_items SET value = value + 1 WHERE id = 4242;",
        )
        .unwrap();
    master
        .connect()
        .batch_execute("UPDATE items SET name = 'renamed behind capture' WHERE id = 9999")
        .unwrap();
    assert_eq!(differing_keys(&master, &replica, &[]), Vec::<i64>::new());
    assert_eq!(
        differing_keys(&master, &replica, &["--content"]),
        [7, 4242, 9999]
    );

    // Repair: the listed keys as directed SYNCs, relayed and applied (a SYNC of the same
    // revision overwrites).
    let route = Route::new(kind, &replica);
    let (b, broker_url) = (&route.test, route.settings.broker_url.clone().unwrap());
    let sent = run(
        &master_bin(),
        &["diff-master", "-c", "item", "--content"],
        &master,
        None,
    );
    let listed = run(
        &PathBuf::from(REPLICA),
        &["diff-replica", "--queue", &b.queue],
        &replica,
        Some(&sent.stdout),
    );
    let synced = run(
        &master_bin(),
        &[
            "diff-sync",
            "--broker-url",
            &broker_url,
            "--exchange",
            &b.exchange,
        ],
        &master,
        Some(&listed.stdout),
    );
    assert_eq!(synced.status.code(), Some(0), "{}", stderr(&synced));
    route.consume_all(&replica);
    assert_eq!(
        differing_keys(&master, &replica, &["--content"]),
        Vec::<i64>::new()
    );
    assert_eq!(
        rows(&replica, "replica_items", "title"),
        rows(&master, "items", "name")
    );
}

/// `sync` and `diff-sync` with a relay process running beside them (as in production: it may
/// claim and publish their rows first) exit 0 every time; a row that truly cannot be published
/// (unroutable, kept by `keep_unroutable`) still makes them exit 1.
#[test]
fn sync_and_diff_sync_succeed_while_a_relay_runs() {
    let (master, _replica) = setup(Kind::Postgres);
    master.connect().migrate().unwrap();
    let b = TestBroker::new();
    let url = amqp_url();
    let settings = cqrs::Settings {
        broker_url: Some(url.clone()),
        ..b.settings()
    };
    let broker = cqrs::transport::connect(&settings, "test").unwrap();
    broker
        .declare_replica(&b.queue, &["item".into()], &b.delays)
        .unwrap();
    let broker_args = ["--broker-url", url.as_str(), "--exchange", &b.exchange];
    let relay = Command::new(master_bin())
        .arg("relay")
        .args(broker_args)
        .args(["--database-url", &master.url])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pipe = format!(
        "{},{}\n[1,2,3,4,5,6,7,8,9,10]\n",
        cqrs::ops::diff::header("item"),
        b.queue
    );
    for i in 0..20 {
        let sync = run(
            &master_bin(),
            &[
                &["sync", "-c", "item", "-f", r#"{"id__lte": 20}"#][..],
                &broker_args[..],
            ]
            .concat(),
            &master,
            None,
        );
        assert_eq!(
            sync.status.code(),
            Some(0),
            "sync, run {i}: {}",
            stderr(&sync)
        );
        let diff_sync = run(
            &master_bin(),
            &[&["diff-sync"][..], &broker_args[..]].concat(),
            &master,
            Some(pipe.as_bytes()),
        );
        assert_eq!(
            diff_sync.status.code(),
            Some(0),
            "diff-sync, run {i}: {}",
            stderr(&diff_sync)
        );
    }
    let status = terminate(relay);
    assert!(status.success(), "the relay exits 0 on SIGTERM: {status}");

    // Nobody is bound for this queue's directed key, and the row is kept: it cannot be published.
    let dir = std::env::temp_dir().join(format!("cqrs-diff-{}", b.queue));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("cqrs.toml");
    std::fs::write(&config, "keep_unroutable = true\nrelay_lease_ms = 500\n").unwrap();
    let stuck = run(
        &master_bin(),
        &[
            &[
                "sync",
                "-c",
                "item",
                "-f",
                r#"{"id": 1}"#,
                "--queue",
                "nobody_binds_this",
            ][..],
            &broker_args[..],
            &["--config", config.to_str().unwrap()][..],
        ]
        .concat(),
        &master,
        None,
    );
    assert_eq!(stuck.status.code(), Some(1), "{}", stderr(&stuck));
    assert!(
        stderr(&stuck).contains("1 outbox row(s) were not confirmed"),
        "{}",
        stderr(&stuck)
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// `consume` pointed at a database without the replica's table (or cqrs's own) exits 2 at once,
/// naming what is missing, instead of idling until the first message fails.
#[test]
fn consume_against_a_database_missing_a_table_exits_2_naming_it() {
    for kind in [Kind::Postgres, Kind::Sqlite] {
        let empty = TestDb::empty(kind);
        let b = TestBroker::new();
        let url = amqp_url();
        let out = run(
            &PathBuf::from(REPLICA),
            &[
                "consume",
                "--queue",
                &b.queue,
                "--broker-url",
                &url,
                "--exchange",
                &b.exchange,
            ],
            &empty,
            None,
        );
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{kind:?}: {err}");
        assert!(
            err.contains("table cqrs_tombstones (run `cqrs migrate`)")
                && err.contains("table replica_items (replica `item`)"),
            "{kind:?}: {err}"
        );
        assert_eq!(err.lines().count(), 1, "one line: {err}");
    }
}

/// An application's own binary says so in its help, under its own name, without the stock
/// tool's built-in demo.
#[test]
fn an_applications_binary_has_its_own_help() {
    let out = Command::new(REPLICA).arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0));
    assert!(
        help.starts_with("cqrs commands for this service's models"),
        "{help}"
    );
    assert!(help.contains("Usage: example-replica"), "{help}");
    assert!(!help.contains("demo"), "{help}");
}

/// `consume --queue-type quorum` on a replica queue that exists as a classic one exits 2 with
/// one line naming the queue and both types; `queues migrate --to quorum` moves it (and says so
/// per queue).
#[test]
fn consume_with_the_other_queue_type_exits_2_until_the_queue_is_migrated() {
    let (_master, replica) = setup(Kind::Postgres);
    let b = TestBroker::new();
    b.declare(&["item"]);
    let url = amqp_url();
    let out = run(
        &PathBuf::from(REPLICA),
        &[
            "consume",
            "-c",
            "item",
            "--queue",
            &b.queue,
            "--broker-url",
            &url,
            "--exchange",
            &b.exchange,
            "--queue-type",
            "quorum",
        ],
        &replica,
        None,
    );
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.ends_with(&format!(
            "queue {} exists as a classic queue but queue_type is quorum: set queue_type = \"classic\" (--queue-type, CQRS_QUEUE_TYPE), or move it first: cqrs queues migrate --to quorum",
            b.queue
        )),
        "{err}"
    );
    let out = run(
        &PathBuf::from(REPLICA),
        &[
            "queues",
            "migrate",
            "--to",
            "quorum",
            "--queue",
            &b.queue,
            "--broker-url",
            &url,
            "--exchange",
            &b.exchange,
        ],
        &replica,
        None,
    );
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(
        err.contains(&format!("{}: now quorum; 0 message(s) moved", b.queue)),
        "{err}"
    );
    let listed = rabbitmqctl(&["list_queues", "name", "type"]);
    let kind = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["name"] == b.queue.as_str())
        .map(|q| q["type"].clone());
    assert_eq!(kind, Some(serde_json::json!("quorum")), "{listed}");
}
