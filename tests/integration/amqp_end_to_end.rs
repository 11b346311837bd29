//! End to end over RabbitMQ: a Django master's captured messages into our replica, and our master's
//! outbox through the relay and consumer workers to a replica that converges, also when the broker
//! drops their connections.

use std::time::{Duration, Instant};

use cqrs::db::SqlConn;
use cqrs::{Relay, atomic};
use cqrs_tests::*;
use serde_json::Value;

/// Every captured django-cqrs message 01–16 and 30–34, published raw, applies as a Django replica would.
#[test]
fn captured_django_messages_published_raw_apply() {
    let b = TestBroker::new();
    let r = TestReplica::new(&b, item_and_typed_registry(Kind::Postgres));
    for file in capture_files()
        .into_iter()
        .filter(|f| f.as_str() < "17" || f.as_str() >= "30")
    {
        for (key, body) in capture(&file) {
            // Captured with a one-day TTL: keep every byte but the expiry.
            let mut v: Value = serde_json::from_slice(&body).unwrap();
            v["expires"] = Value::Null;
            b.publish_raw(
                &key.replace("bench_replica", &b.queue),
                v.to_string().as_bytes(),
            );
        }
    }
    let mut c = r.consumer();
    c.drain(Duration::from_millis(500)).unwrap();
    let rows = items(c.db());
    assert_eq!(rows.keys().copied().collect::<Vec<_>>(), [3, 5, 6]);
    assert_eq!(tombstones(c.db(), "item").len(), 2);
    assert_eq!(count(c.db(), "SELECT count(*) AS n FROM typed"), 5);
    assert_eq!(c.stats().dead_lettered + c.stats().retried, 0);
    drop(c);
    assert_eq!(b.count(&b.queue), 0, "all acked");
}

/// 10,000 captured changes on a PostgreSQL master, relayed over RabbitMQ, consumed by two
/// workers: the replica converges to identical rows, revisions and cqrs_updated.
#[test]
fn ten_thousand_changes_converge_with_two_workers() {
    let b = TestBroker::new();
    let master = TestDb::new(Kind::Postgres);
    let mut replica = TestReplica::new(&b, item_registry());
    replica.settings.batch_size = 200;
    let mut db = master.connect();

    // 4,000 creates, 5,000 updates (some rows several times), 1,000 deletes: 10,000 changes.
    for _ in 0..20 {
        atomic(&mut db, |tx| insert_m_items(tx, 200)).unwrap();
    }
    let ids: Vec<i64> = db
        .load_text(
            "SELECT CAST(id AS TEXT) AS j FROM m_items ORDER BY id",
            vec![],
        )
        .unwrap()
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
    for round in 0..5 {
        for chunk in ids.chunks(100).skip(round).step_by(2).take(10) {
            atomic(&mut db, |tx| {
                tx.touch_many::<PlainItem>(chunk)?;
                let sql = format!(
                    "UPDATE m_items SET value = value + 1 WHERE id BETWEEN {} AND {}",
                    chunk[0],
                    chunk[chunk.len() - 1]
                );
                tx.conn().exec(&sql, vec![]).map(drop)
            })
            .unwrap();
        }
    }
    atomic(&mut db, |tx| {
        tx.delete_many::<PlainItem>(&ids[..1000]).map(drop)
    })
    .unwrap();
    assert_eq!(cqrs::outbox::pending(&mut db).unwrap(), 10_000);

    let started = Instant::now();
    let (elapsed, stats) = replica.consuming(2, |_| {
        let mut relay = Relay::new(
            master.connect(),
            b.transport.publisher().unwrap(),
            replica.settings.clone(),
        );
        while relay.run_once().unwrap() > 0 {}
        let mut r = replica.db.connect();
        let want = master_items(&mut db);
        wait_until(
            Duration::from_secs(120),
            "the replica to converge to the master's rows and revisions",
            || {
                let got = items(&mut r);
                got.len() == want.len()
                    && got
                        .iter()
                        .all(|(k, v)| want.get(k).is_some_and(|w| w.3 == v.rev))
            },
        );
        started.elapsed()
    });
    // A figure for the notes, not an assertion: outbox -> relay -> RabbitMQ -> 2 workers -> PostgreSQL.
    eprintln!(
        "10,000 changes relayed and applied in {:.2} s: {:.0} messages/s end to end",
        elapsed.as_secs_f64(),
        10_000.0 / elapsed.as_secs_f64()
    );
    assert!(stats.received >= 10_000, "{stats:?}");
    let want: Vec<(i64, String, i64, i32, chrono::DateTime<chrono::Utc>)> = master_items(&mut db)
        .into_iter()
        .map(|(k, v)| (k, v.0, v.1, v.3, v.4))
        .collect();
    let got: Vec<(i64, String, i64, i32, chrono::DateTime<chrono::Utc>)> =
        items(&mut replica.db.connect())
            .into_iter()
            .map(|(k, v)| (k, v.name, v.value, v.rev, v.updated))
            .collect();
    assert_eq!(got.len(), 3000);
    assert_eq!(got, want);
    assert_eq!(tombstones(&mut replica.db.connect(), "item").len(), 1000);
    assert_eq!(b.count(&b.queue), 0);
}

/// Close every connection whose client-provided name is `name`; returns how many were closed.
fn close_connections_named(name: &str) -> usize {
    // The plain listing prints pids in the form close_connection takes (the JSON one does not).
    let out = std::process::Command::new("rabbitmqctl")
        .args(["-q", "list_connections", "pid", "client_properties"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut closed = 0;
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Some((pid, props)) = line.split_once('\t') else {
            continue;
        };
        if props.contains(&format!("\"{name}\"")) {
            let out = std::process::Command::new("rabbitmqctl")
                .args(["close_connection", pid, "test: dropped link"])
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            closed += 1;
        }
    }
    closed
}

/// During a 5,000-change stream the broker drops the relay's and the consumers' connections:
/// both recover on their own and the replica converges.
#[test]
fn dropped_connections_recover_during_a_5000_change_stream() {
    let b = TestBroker::new();
    let master = TestDb::new(Kind::Postgres);
    let mut replica = TestReplica::new(&b, item_registry());
    replica.settings.batch_size = 100;
    replica.settings.service_name = b.queue.clone();
    let _ = tracing_subscriber::fmt()
        .with_env_filter("warn")
        .with_test_writer()
        .try_init();
    let mut db = master.connect();
    replica.consuming(2, |shutdown| {
        std::thread::scope(|s| {
            let _stop = StopOnDrop(shutdown);
            let relay = s.spawn(|| {
                let mut relay_settings = replica.settings.clone();
                relay_settings.database_url = Some(master.url.clone());
                cqrs::service::relay(&relay_settings, shutdown)
            });
            for round in 0..25 {
                atomic(&mut db, |tx| insert_m_items(tx, 200)).unwrap();
                if round == 8 || round == 16 {
                    let closed = close_connections_named(&format!("{}-relay", b.queue))
                        + close_connections_named(&format!("{}-consumer", b.queue));
                    assert!(closed >= 2, "closed {closed} connections");
                }
                // Pacing the producer: the stream must still be flowing when the links drop.
                std::thread::sleep(Duration::from_millis(100));
            }
            wait_until(
                Duration::from_secs(120),
                "the replica to have all 5000 rows",
                || items(&mut replica.db.connect()).len() >= 5000,
            );
            shutdown.trigger();
            relay.join().unwrap().unwrap();
        })
    });
    let want: Vec<(i64, i32)> = master_items(&mut db)
        .into_iter()
        .map(|(k, v)| (k, v.3))
        .collect();
    let got: Vec<(i64, i32)> = items(&mut replica.db.connect())
        .into_iter()
        .map(|(k, v)| (k, v.rev))
        .collect();
    assert_eq!(got, want);
    assert_eq!(cqrs::outbox::pending(&mut db).unwrap(), 0);
}

/// A server-side cancel under `consume -w 2` (the replica's queue deleted by an operator, as a
/// quorum leader moving or a node going would cancel it): the workers declare the queue again,
/// subscribe again with the reconnect backoff and apply what comes next; the service runs on.
#[test]
fn consume_subscribes_again_after_the_broker_cancels_it() {
    use lapin::options::QueueDeleteOptions;
    let b = TestBroker::new();
    let master = TestDb::new(Kind::Postgres);
    let replica = TestReplica::new(&b, item_registry());
    let ((), stats) = replica.consuming(2, |_| {
        wait_until(Duration::from_secs(30), "both workers subscribed", || {
            b.consumers_if_declared(&b.queue) == Some(2)
        });
        let ch = b.transport.channel(false).unwrap();
        let queue = b.queue.clone();
        b.transport
            .block_on(async move {
                ch.queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
                    .await
            })
            .unwrap();
        wait_until(
            Duration::from_secs(60),
            "both workers subscribed again",
            || b.consumers_if_declared(&b.queue) == Some(2),
        );
        atomic(&mut master.connect(), |tx| insert_m_items(tx, 5)).unwrap();
        let mut relay = Relay::new(
            master.connect(),
            b.transport.publisher().unwrap(),
            replica.settings.clone(),
        );
        while relay.run_once().unwrap() > 0 {}
        let mut r = replica.db.connect();
        wait_until(Duration::from_secs(30), "the replica to apply them", || {
            items(&mut r).len() == 5
        });
    });
    assert_eq!((stats.received, stats.dead_lettered), (5, 0));
}
