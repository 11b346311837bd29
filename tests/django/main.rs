//! Interoperability with a real django-cqrs 3.1.0 (issue 15): the Django project in
//! tests/django/project as master or replica, the Rust side as the `cqrs-interop` binary
//! (tests/django/cqrs.rs) and `cqrs::atomic`, both on the machine's PostgreSQL and RabbitMQ. Every
//! scenario ends with the two tables compared row by row: values, revisions and `cqrs_updated` to
//! the microsecond.
//!
//! The Python environment is made on first use (tests/support/django.rs); these tests fail, never
//! skip, when it cannot be.

use std::process::{Command, Stdio};
use std::str::FromStr;
use std::time::{Duration, Instant};

use bigdecimal::BigDecimal;
use chrono::{NaiveDate, TimeZone, Utc};
use cqrs::db::SqlConn;
use cqrs_tests::django::{Django, Role, Running, succeed};
use cqrs_tests::interop::{self, Item, Label, NewItem, schema};
use cqrs_tests::{PrivateRabbit, TestBroker, TestDb};
use diesel::prelude::*;

const CQRS: &str = env!("CARGO_BIN_EXE_cqrs-interop");

/// Rows of one table that differ between two databases, as `key: left | right` lines.
fn differences(left: &str, right: &str) -> Vec<String> {
    let parse = |text: &str| -> Vec<serde_json::Value> {
        let mut rows: Vec<serde_json::Value> =
            serde_json::from_str(text).expect("json_agg of rows");
        // A float as a number, and -0.0 as 0: psycopg2 writes -0.0 as the SQL literal `-0.0`,
        // a numeric, which has no negative zero, so a Django side stores 0 for it (README,
        // interoperability).
        for row in &mut rows {
            if let Some(f) = row.get("ratio").and_then(|v| v.as_f64()) {
                row["ratio"] = serde_json::json!(f + 0.0);
            }
        }
        rows
    };
    let key = |row: &serde_json::Value| row["id"].to_string();
    let (left, right) = (parse(left), parse(right));
    let mut out = Vec::new();
    for l in &left {
        match right.iter().find(|r| key(r) == key(l)) {
            Some(r) if r == l => {}
            Some(r) => out.push(format!("{}: {l} | {r}", key(l))),
            None => out.push(format!("{}: {l} | (missing)", key(l))),
        }
    }
    for r in &right {
        if !left.iter().any(|l| key(l) == key(r)) {
            out.push(format!("{}: (missing) | {r}", key(r)));
        }
    }
    out
}

/// Wait until `replica` holds exactly `master`'s rows in both tables; panics with the rows that
/// still differ after `timeout`.
#[track_caller]
fn wait_for_same_rows(master: &TestDb, replica: &TestDb, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        let (mi, ml) = interop::rows(&master.url).expect("master rows");
        let (ri, rl) = interop::rows(&replica.url).expect("replica rows");
        let mut diff = differences(&mi, &ri);
        diff.extend(differences(&ml, &rl));
        if diff.is_empty() {
            assert!(mi.len() > 2, "the master has items");
            return;
        }
        assert!(
            Instant::now() < deadline,
            "after {timeout:?} the replica still differs from the master (master | replica):\n{}",
            diff.join("\n")
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `cqrs-interop <args>` on `db` and the test broker's exchange and queue.
fn cqrs(broker: &TestBroker, db: &TestDb, args: &[&str]) -> Command {
    let mut c = Command::new(CQRS);
    c.args(args)
        .args(["--database-url", &db.url, "--broker-url", &broker.url])
        .args(["--exchange", &broker.exchange, "--queue", &broker.queue])
        .args(["--service-name", "interop"])
        .env("CQRS_LOG", "warn")
        .stdin(Stdio::null());
    c
}

/// Wait for a consumer on the test queue: it is declared and bound, so nothing published from
/// now on is unroutable.
#[track_caller]
fn wait_for_consumer(broker: &TestBroker, process: &mut Running) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = process.exited() {
            panic!("the consumer exited before consuming: {status}");
        }
        if broker
            .consumers_if_declared(&broker.queue)
            .is_some_and(|n| n > 0)
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no consumer on {} after 60 s",
            broker.queue
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A Django master in `zone` and a Rust replica database with the Django replica's tables and
/// the cqrs tables, both on `broker`.
fn django_master_and_rust_replica(broker: &TestBroker, zone: &str) -> (Django, TestDb) {
    let master = Django::in_zone(Role::Master, broker, zone);
    let replica = Django::new(Role::Replica, broker).db;
    replica
        .connect()
        .migrate()
        .expect("cqrs tables on the replica");
    (master, replica)
}

/// A Rust master database with the Django master's tables and the cqrs tables, and a Django
/// replica, both on `broker`.
fn rust_master_and_django_replica(broker: &TestBroker) -> (TestDb, Django) {
    let master = Django::new(Role::Master, broker).db;
    master
        .connect()
        .migrate()
        .expect("cqrs tables on the master");
    (master, Django::new(Role::Replica, broker))
}

/// A Django master (creates with every value form, saves, a tracked change, update_fields with the
/// cqrs flag, a transaction saving twice, bulk_create, bulk_update, deletes; then SYNCs, broadcast
/// and directed, that repair drift on the replica) and `cqrs consume -w 2` on a Rust replica.
fn django_master_to_rust_replica(zone: &str) {
    let broker = TestBroker::new();
    let (master, replica) = django_master_and_rust_replica(&broker, zone);

    let mut consumer = Running::start(&mut cqrs(&broker, &replica, &["consume", "-w", "2"]));
    wait_for_consumer(&broker, &mut consumer);

    let keys: Vec<i64> =
        serde_json::from_str(master.manage(&["workload", "changes"]).trim()).expect("item keys");
    assert!(keys.len() >= 25, "{keys:?}");
    wait_for_same_rows(&master.db, &replica, Duration::from_secs(60));

    // Drift on the replica: changed values and a lost row; a broadcast SYNC repairs both.
    let mut r = replica.connect();
    r.batch_execute(&format!(
        "UPDATE items SET name = 'drift', price = 0 WHERE id IN ({}, {}); DELETE FROM items WHERE id = {}",
        keys[0], keys[1], keys[2]
    ))
    .unwrap();
    master.manage(&["cqrs_sync", "-cid", "interop_item", "-f", "{}"]);
    wait_for_same_rows(&master.db, &replica, Duration::from_secs(60));

    // A directed SYNC of one row to this replica's queue.
    r.batch_execute(&format!(
        "UPDATE items SET note = 'drift' WHERE id = {}",
        keys[3]
    ))
    .unwrap();
    master.manage(&[
        "cqrs_sync",
        "-cid",
        "interop_item",
        "-f",
        &format!("{{\"id__in\": [{}]}}", keys[3]),
        "-q",
        &broker.queue,
    ]);
    wait_for_same_rows(&master.db, &replica, Duration::from_secs(60));

    // Labels take only directed SYNCs: a broadcast one is acknowledged and leaves the drift.
    r.batch_execute("UPDATE labels SET name = 'drift'").unwrap();
    master.manage(&["cqrs_sync", "-cid", "interop_label", "-f", "{}"]);
    let deadline = Instant::now() + Duration::from_secs(30);
    while broker.count(&broker.queue) > 0 {
        assert!(
            Instant::now() < deadline,
            "the broadcast SYNCs were not delivered"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // A stopped consumer gives back what it has not acknowledged: an empty queue after it
    // stops means every SYNC was handled.
    drop(consumer);
    assert_eq!(broker.count(&broker.queue), 0);
    let drifted = r
        .load_text(
            "SELECT CAST(count(*) AS TEXT) AS j FROM labels WHERE name = 'drift'",
            vec![],
        )
        .unwrap();
    assert_eq!(drifted, ["3"], "a broadcast SYNC changed a label");
    let mut consumer = Running::start(&mut cqrs(&broker, &replica, &["consume", "-w", "2"]));
    wait_for_consumer(&broker, &mut consumer);
    master.manage(&[
        "cqrs_sync",
        "-cid",
        "interop_label",
        "-f",
        "{}",
        "-q",
        &broker.queue,
    ]);
    wait_for_same_rows(&master.db, &replica, Duration::from_secs(60));

    assert_eq!(dead_letters(&broker), 0);
    drop(consumer);
}

#[test]
fn django_master_to_rust_consume() {
    django_master_to_rust_replica("UTC");
}

#[test]
fn django_master_in_berlin_time_to_rust_consume() {
    django_master_to_rust_replica("Europe/Berlin");
}

/// An item with plain values named `name`.
fn plain_item(name: &str) -> NewItem {
    NewItem {
        name: name.to_string(),
        value: 1,
        price: BigDecimal::from(1),
        ratio: 1.0,
        flag: true,
        day: NaiveDate::from_ymd_opt(2024, 1, 1).unwrap(),
        at: Utc::now(),
        note: None,
        tags: serde_json::json!({}),
        parent_id: None,
        cqrs_revision: 0,
        cqrs_updated: Utc::now(),
    }
}

/// Insert `new` on the Rust master, captured; its key.
fn create_item(conn: &mut PgConnection, new: &NewItem) -> i64 {
    cqrs::atomic(conn, |tx| {
        tx.create_with::<Item, _, diesel::result::Error>(|c| {
            diesel::insert_into(schema::items::table)
                .values(new)
                .returning(schema::items::id)
                .get_result::<i64>(c)
        })
    })
    .expect("item captured")
}

/// The Rust master's workload: labels (UUID keys), items with every value form, saves, a tracked
/// change, deletes of both models (the UUID key too, which django-cqrs 3.1.0 cannot publish).
fn rust_workload(url: &str) -> Vec<i64> {
    let mut conn = PgConnection::establish(url).expect("master connection");
    let texts = [
        "plain",
        "quote \" backslash \\ slash /",
        "ünïcødé ✓",
        "emoji 🦀",
        "",
        "semi; 'single'",
    ];
    let prices = ["0.00", "0.05", "10.00", "1234.50", "99999999.99", "-7.10"];
    let ratios = [0.1, 1.0 / 3.0, 2.5, 1e-7, -0.0, 12345.678];
    let now = Utc::now();
    let labels: Vec<uuid::Uuid> = (0..4).map(|_| uuid::Uuid::new_v4()).collect();
    cqrs::atomic(&mut conn, |tx| {
        for (i, id) in labels.iter().enumerate() {
            tx.create_with::<Label, _, diesel::result::Error>(|c| {
                diesel::insert_into(schema::labels::table)
                    .values(Label {
                        id: *id,
                        name: format!("label {i}"),
                        cqrs_revision: 0,
                        cqrs_updated: now,
                    })
                    .returning(schema::labels::id)
                    .get_result::<uuid::Uuid>(c)
            })?;
        }
        Ok(())
    })
    .expect("labels captured");
    let mut keys: Vec<i64> = Vec::new();
    for i in 0..30i64 {
        let new = NewItem {
            name: format!("{} {i}", texts[i as usize % texts.len()]),
            value: if i % 7 == 0 {
                -(1 << 62)
            } else {
                (i - 10) * 1_000_000_007
            },
            price: BigDecimal::from_str(prices[i as usize % prices.len()]).unwrap(),
            ratio: ratios[i as usize % ratios.len()],
            flag: i % 2 == 0,
            day: NaiveDate::from_ymd_opt(2024, 2, 29).unwrap() + chrono::Days::new(i as u64),
            at: Utc.with_ymd_and_hms(2024, 3, 31, 1, 30, i as u32).unwrap()
                + chrono::Duration::microseconds((i % 3) * 250_000 + i),
            note: (i % 3 != 0).then(|| format!("note {i}")),
            tags: serde_json::json!({"i": i, "nested": {"k": null, "f": 1.5, "s": "e/é"}, "l": [1, "two"]}),
            parent_id: (i % 4 != 0).then(|| keys[0]),
            ..plain_item("")
        };
        keys.push(create_item(&mut conn, &new));
    }
    use schema::items::dsl as it;
    for (n, id) in keys[..10].iter().enumerate() {
        cqrs::atomic(&mut conn, |tx| {
            tx.update_with::<Item, _, diesel::result::Error>(id, |c| {
                diesel::update(it::items.find(*id))
                    .set((
                        it::value.eq(it::value + 1),
                        it::name.eq(format!("saved {n}")),
                    ))
                    .execute(c)
            })
        })
        .expect("update captured");
    }
    // Two changes of one row in one transaction: one SAVE with the final state.
    cqrs::atomic(&mut conn, |tx| {
        for flag in [true, false] {
            tx.update_with::<Item, _, diesel::result::Error>(&keys[12], |c| {
                diesel::update(it::items.find(keys[12]))
                    .set((it::flag.eq(flag), it::value.eq(12)))
                    .execute(c)
            })?;
        }
        Ok(())
    })
    .expect("two updates captured");
    cqrs::atomic(&mut conn, |tx| {
        for id in &keys[20..25] {
            assert!(tx.delete_key::<Item>(id)?);
        }
        assert!(tx.delete_key::<Label>(&labels[3])?);
        Ok(())
    })
    .expect("deletes captured");
    let deleted = keys[20..25].to_vec();
    keys.retain(|k| !deleted.contains(k));
    keys
}

/// A Rust master (capture + relay) and Django's `cqrs_consume` on a Django replica, including
/// deletes of the UUID-keyed model; then a `cqrs sync` that repairs drift on the Django side.
#[test]
fn rust_master_to_django_consume() {
    let broker = TestBroker::new();
    let (master, replica) = rust_master_and_django_replica(&broker);

    let mut consumer = replica.spawn(&["cqrs_consume", "-w", "1"]);
    wait_for_consumer(&broker, &mut consumer);

    let keys = relayed_workload(&broker, &master, &replica.db);

    replica
        .db
        .connect()
        .batch_execute(&format!(
            "UPDATE items SET name = 'drift', ratio = 0 WHERE id = {}; DELETE FROM items WHERE id = {}",
            keys[0], keys[1]
        ))
        .unwrap();
    sync_all_until_same(&broker, &master, &replica.db);
    drop(consumer);
}

/// A Rust master and a django-cqrs 3.1.0 replica on quorum queues, on a private RabbitMQ node:
/// django-cqrs declares its queues without arguments and always on vhost `/`, so `/` is made
/// again with quorum as its default queue type (README, "Running on a cluster"); our own
/// declares ask for quorum explicitly and agree with it. The replica's queues are quorum
/// queues and the tables end equal, a SYNC included.
#[test]
fn rust_master_to_django_consume_on_quorum_queues() {
    let rabbit = PrivateRabbit::start();
    for args in [
        &["delete_vhost", "/"][..],
        &["add_vhost", "/", "--default-queue-type", "quorum"],
        &["set_permissions", "-p", "/", "guest", ".*", ".*", ".*"],
    ] {
        let out = rabbit.ctl(args).expect("rabbitmqctl runs");
        assert!(
            out.status.success(),
            "rabbitmqctl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let broker = TestBroker::at(&rabbit.url(), cqrs::config::QueueType::Quorum);
    let (master, replica) = rust_master_and_django_replica(&broker);
    let mut consumer = replica.spawn(&["cqrs_consume", "-w", "1"]);
    wait_for_consumer(&broker, &mut consumer);
    let out = rabbit
        .ctl(&["list_queues", "name", "type"])
        .expect("rabbitmqctl runs");
    let listed = String::from_utf8_lossy(&out.stdout).to_string();
    let types: Vec<&str> = listed
        .lines()
        .filter(|l| l.contains(&broker.queue))
        .map(|l| l.split_whitespace().last().unwrap_or_default())
        .collect();
    assert!(
        !types.is_empty() && types.iter().all(|t| *t == "quorum"),
        "{listed}"
    );

    let keys = relayed_workload(&broker, &master, &replica.db);
    replica
        .db
        .connect()
        .batch_execute(&format!("DELETE FROM items WHERE id = {}", keys[1]))
        .unwrap();
    sync_all_until_same(&broker, &master, &replica.db);
    drop(consumer);
}

/// The Rust workload on `master`, relayed to `broker`, until `replica` has the same rows; the
/// workload's keys.
fn relayed_workload(broker: &TestBroker, master: &TestDb, replica: &TestDb) -> Vec<i64> {
    let keys = rust_workload(&master.url);
    let mut relay = cqrs::Relay::new(
        master.connect(),
        broker.transport.publisher().expect("publisher"),
        broker.settings(),
    );
    relay.drain().expect("the relay publishes the outbox");
    wait_for_same_rows(master, replica, Duration::from_secs(60));
    keys
}

/// `cqrs sync` of every item from `master`, until `replica` has the same rows again, with no
/// dead letter on `broker`.
fn sync_all_until_same(broker: &TestBroker, master: &TestDb, replica: &TestDb) {
    succeed(&mut cqrs(
        broker,
        master,
        &["sync", "-c", "interop_item", "-f", "{}"],
    ));
    wait_for_same_rows(master, replica, Duration::from_secs(60));
    assert_eq!(dead_letters(broker), 0);
}

/// Run `stages` as a shell pipeline (each one's stdout into the next one's stdin); panics with
/// every failed stage's stderr.
#[track_caller]
fn pipeline(stages: Vec<Command>) {
    let mut children = Vec::new();
    let mut input = Stdio::null();
    let last = stages.len() - 1;
    for (i, mut stage) in stages.into_iter().enumerate() {
        let mut child = stage
            .stdin(input)
            .stdout(if i == last {
                Stdio::null()
            } else {
                Stdio::piped()
            })
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{stage:?}: {e}"));
        input = child.stdout.take().map_or(Stdio::null(), Stdio::from);
        children.push((format!("{:?}", stage.get_args().collect::<Vec<_>>()), child));
    }
    let failed: Vec<String> = children
        .into_iter()
        .filter_map(|(name, child)| {
            let out = child.wait_with_output().expect("a stage ends");
            (!out.status.success()).then(|| {
                format!(
                    "{name}: {}: {}",
                    out.status,
                    String::from_utf8_lossy(&out.stderr)
                )
            })
        })
        .collect();
    assert!(failed.is_empty(), "pipeline failed:\n{}", failed.join("\n"));
}

/// A file in the temporary directory, removed when dropped.
struct TempFile(std::path::PathBuf);

impl TempFile {
    fn new(name: &str) -> TempFile {
        TempFile(std::env::temp_dir().join(format!("cqrs-interop-{}-{name}", std::process::id())))
    }

    fn path(&self) -> &str {
        self.0.to_str().expect("a UTF-8 path")
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Replica drift the diff pipelines must find: two rows with an older revision and other
/// values, two rows lost; and two rows the master never had (the deleted-rows pipeline's).
fn drift(replica: &TestDb, keys: &[i64]) {
    replica
        .connect()
        .batch_execute(&format!(
            "UPDATE items SET name = 'drift', cqrs_revision = cqrs_revision - 1 WHERE id IN ({}, {});
             DELETE FROM items WHERE id IN ({}, {});
             INSERT INTO items (id, name, value, price, ratio, flag, day, at, note, tags, parent_id,
                                cqrs_revision, cqrs_updated)
             SELECT id + 1000000, 'ghost', value, price, ratio, flag, day, at, note, tags, NULL,
                    cqrs_revision, cqrs_updated FROM items WHERE id IN ({}, {})",
            keys[0], keys[1], keys[2], keys[3], keys[4], keys[5]
        ))
        .unwrap();
}

/// A Django master's `cqrs_bulk_dump` loaded by `cqrs bulk-load`; then drift on the Rust replica
/// repaired by `cqrs_diff_master | cqrs diff-replica | cqrs_diff_sync` (SYNCs applied by
/// `cqrs consume`) and `cqrs deleted-diff-replica | cqrs_deleted_diff_master |
/// cqrs deleted-sync-replica`.
#[test]
fn django_dump_and_django_master_pipelines_with_a_rust_replica() {
    let broker = TestBroker::new();
    let (master, replica) = django_master_and_rust_replica(&broker, "UTC");
    let keys: Vec<i64> =
        serde_json::from_str(master.manage(&["workload", "changes"]).trim()).expect("item keys");

    for cqrs_id in ["interop_item", "interop_label"] {
        let dump = TempFile::new(&format!("{cqrs_id}.dump"));
        master.manage(&["cqrs_bulk_dump", "-c", cqrs_id, "-o", dump.path()]);
        succeed(&mut cqrs(
            &broker,
            &replica,
            &["bulk-load", "-i", dump.path()],
        ));
    }
    wait_for_same_rows(&master.db, &replica, Duration::ZERO);

    let mut consumer = Running::start(&mut cqrs(&broker, &replica, &["consume", "-w", "2"]));
    wait_for_consumer(&broker, &mut consumer);
    drift(&replica, &keys);
    pipeline(vec![
        master.command(&["cqrs_diff_master", "-cid", "interop_item"]),
        cqrs(&broker, &replica, &["diff-replica"]),
        master.command(&["cqrs_diff_sync"]),
    ]);
    pipeline(vec![
        cqrs(
            &broker,
            &replica,
            &["deleted-diff-replica", "-c", "interop_item"],
        ),
        master.command(&["cqrs_deleted_diff_master"]),
        cqrs(&broker, &replica, &["deleted-sync-replica"]),
    ]);
    wait_for_same_rows(&master.db, &replica, Duration::from_secs(60));
    drop(consumer);
}

/// `cqrs bulk-dump` loaded by Django's `cqrs_bulk_load`; then drift on the Django replica repaired
/// by `cqrs diff-master | cqrs_diff_replica | cqrs diff-sync` (SYNCs applied by `cqrs_consume`)
/// and `cqrs_deleted_diff_replica | cqrs deleted-diff-master | cqrs_deleted_sync_replica`.
#[test]
fn rust_dump_and_rust_master_pipelines_with_a_django_replica() {
    let broker = TestBroker::new();
    let (master, replica) = rust_master_and_django_replica(&broker);
    let keys = rust_workload(&master.url);

    for cqrs_id in ["interop_item", "interop_label"] {
        let dump = TempFile::new(&format!("rust-{cqrs_id}.dump"));
        succeed(&mut cqrs(
            &broker,
            &master,
            &["bulk-dump", "-c", cqrs_id, "-o", dump.path()],
        ));
        replica.manage(&["cqrs_bulk_load", "-i", dump.path()]);
    }
    wait_for_same_rows(&master, &replica.db, Duration::ZERO);

    let mut consumer = replica.spawn(&["cqrs_consume", "-w", "1"]);
    wait_for_consumer(&broker, &mut consumer);
    drift(&replica.db, &keys);
    pipeline(vec![
        cqrs(&broker, &master, &["diff-master", "-c", "interop_item"]),
        replica.command(&["cqrs_diff_replica"]),
        cqrs(&broker, &master, &["diff-sync"]),
    ]);
    pipeline(vec![
        replica.command(&["cqrs_deleted_diff_replica", "-cid", "interop_item"]),
        cqrs(&broker, &master, &["deleted-diff-master"]),
        replica.command(&["cqrs_deleted_sync_replica"]),
    ]);
    wait_for_same_rows(&master, &replica.db, Duration::from_secs(60));
    drop(consumer);
}

/// A replica that refuses items named `poison`.
fn refuse_poison(db: &TestDb) {
    db.connect()
        .batch_execute("ALTER TABLE items ADD CONSTRAINT no_poison CHECK (name <> 'poison')")
        .unwrap();
}

fn accept_poison(db: &TestDb) {
    db.connect()
        .batch_execute("ALTER TABLE items DROP CONSTRAINT no_poison")
        .unwrap();
}

/// Letters waiting in the test queue's dead-letter queue.
fn dead_letters(broker: &TestBroker) -> u32 {
    broker.count(&cqrs::transport::dead_letter_queue(&broker.queue))
}

#[track_caller]
fn wait_for_dead_letters(broker: &TestBroker, n: u32) {
    let dlq = cqrs::transport::dead_letter_queue(&broker.queue);
    let deadline = Instant::now() + Duration::from_secs(60);
    while broker.consumers_if_declared(&dlq).is_none() || broker.count(&dlq) != n {
        assert!(Instant::now() < deadline, "{dlq} does not hold {n} letters");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A message the Rust replica cannot apply is retried, then dead-lettered in a form Django's
/// `cqrs_dead_letters dump` shows and `retry` sends back, after which the Rust replica applies it.
#[test]
fn a_rust_dead_letter_is_dumped_and_retried_by_django() {
    let broker = TestBroker::new();
    let (master, replica) = django_master_and_rust_replica(&broker, "UTC");
    refuse_poison(&replica);
    let config = TempFile::new("cqrs.toml");
    // One retry after 100 ms (a delay TestBroker removes when the test ends).
    std::fs::write(&config.0, "max_retries = 1\nretry_delays_ms = [100]\n").unwrap();
    let mut consumer = Running::start(
        cqrs(&broker, &replica, &["consume", "-w", "2"]).args(["--config", config.path()]),
    );
    wait_for_consumer(&broker, &mut consumer);

    master.manage(&["workload", "poison"]);
    wait_for_dead_letters(&broker, 1);
    // Django's tools, as a Django replica of the same queue would run them.
    let tools = Django::new(Role::Replica, &broker);
    let dumped = tools.manage(&["cqrs_dead_letters", "dump"]);
    let letter: serde_json::Value = serde_json::from_str(
        dumped
            .lines()
            .find(|l| l.contains("poison"))
            .unwrap_or_else(|| panic!("no poison letter in the dump: {dumped}")),
    )
    .expect("a dumped letter is a JSON body");
    assert_eq!(letter["cqrs_id"], "interop_item");
    assert_eq!(letter["instance_data"]["name"], "poison");
    assert_eq!(dead_letters(&broker), 1, "dump keeps it");

    accept_poison(&replica);
    tools.manage(&["cqrs_dead_letters", "retry"]);
    wait_for_same_rows(&master.db, &replica, Duration::from_secs(60));
    assert_eq!(dead_letters(&broker), 0);
    drop(consumer);
}

/// The reverse: a message Django's replica cannot apply is dead-lettered by django-cqrs, shown by
/// `cqrs dead-letters dump` and sent back by `cqrs dead-letters retry`, then applied by Django.
#[test]
fn a_django_dead_letter_is_dumped_and_retried_by_cqrs() {
    let broker = TestBroker::new();
    let (master, replica) = rust_master_and_django_replica(&broker);
    refuse_poison(&replica.db);
    let mut consumer = replica.spawn(&["cqrs_consume", "-w", "1"]);
    wait_for_consumer(&broker, &mut consumer);

    let mut conn = PgConnection::establish(&master.url).unwrap();
    create_item(&mut conn, &plain_item("fine"));
    create_item(&mut conn, &plain_item("fine too"));
    create_item(&mut conn, &plain_item("poison"));
    cqrs::Relay::new(
        master.connect(),
        broker.transport.publisher().unwrap(),
        broker.settings(),
    )
    .drain()
    .unwrap();
    // django-cqrs retries once after 1 s (INTEROP_MAX_RETRIES), then dead-letters.
    wait_for_dead_letters(&broker, 1);

    let dumped = succeed(&mut cqrs(&broker, &master, &["dead-letters", "dump"]));
    let letters: Vec<serde_json::Value> = dumped
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert_eq!(letters.len(), 1, "{dumped}");
    assert_eq!(letters[0]["instance_data"]["name"], "poison");

    accept_poison(&replica.db);
    succeed(&mut cqrs(&broker, &master, &["dead-letters", "retry"]));
    wait_for_same_rows(&master, &replica.db, Duration::from_secs(60));
    assert_eq!(dead_letters(&broker), 0);
    drop(consumer);
}
