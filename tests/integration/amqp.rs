//! The RabbitMQ transport against the machine's broker (unique exchange and queue per test).

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use cqrs::db::SqlConn;
use cqrs::message::Expires;
use cqrs::transport::amqp::{retry_exchange, retry_queue};
use cqrs::transport::dead_letter_queue;
use cqrs::{Message, Relay, TableReplica, atomic};
use cqrs_tests::*;
use serde_json::{Value, json};

fn rabbitmqctl(args: &[&str]) -> Value {
    let out = std::process::Command::new("rabbitmqctl")
        .args(args)
        .args(["--formatter", "json", "-q"])
        .output()
        .expect("rabbitmqctl runs");
    assert!(
        out.status.success(),
        "rabbitmqctl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "rabbitmqctl {args:?} JSON: {e}: {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// The name of the policy `queue` applies ("" for none). The queue process itself answers, and it
/// applies a policy's arguments (max-length, overflow) in the same step that records its name.
fn queue_policy(queue: &str) -> String {
    rabbitmqctl(&["list_queues", "name", "policy"])
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["name"] == queue)
        .and_then(|q| q["policy"].as_str())
        .unwrap_or_default()
        .to_string()
}

#[test]
fn topology_after_startup_is_django_cqrs_plus_our_extensions() {
    let b = TestBroker::new();
    let ids = ["item".to_string(), "typed".to_string()];
    b.transport
        .declare_replica(&b.queue, &ids, &b.delays)
        .unwrap();
    let dlq = dead_letter_queue(&b.queue);
    let rex = retry_exchange(&b.queue);
    let ours = |name: &str| name == b.exchange || name == b.queue || name.contains(&b.queue);

    let exchanges: BTreeSet<(String, String, bool)> =
        rabbitmqctl(&["list_exchanges", "name", "type", "durable"])
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| ours(e["name"].as_str().unwrap()))
            .map(|e| {
                (
                    e["name"].as_str().unwrap().to_string(),
                    e["type"].as_str().unwrap().to_string(),
                    e["durable"].as_bool().unwrap(),
                )
            })
            .collect();
    assert_eq!(
        exchanges,
        BTreeSet::from([
            (b.exchange.clone(), "topic".into(), true),
            (rex.clone(), "headers".into(), true)
        ])
    );

    // rabbitmqctl prints arguments as [name, type, value] triples: compare them as {name: value}.
    let canon = |a: &Value| match a {
        Value::Array(triples) => {
            let map: serde_json::Map<String, Value> = triples
                .iter()
                .map(|t| (t[0].as_str().unwrap().to_string(), t[2].clone()))
                .collect();
            Value::Object(map).to_string()
        }
        other => other.to_string(),
    };
    let queues: BTreeSet<(String, bool, String)> =
        rabbitmqctl(&["list_queues", "name", "durable", "arguments"])
            .as_array()
            .unwrap()
            .iter()
            .filter(|q| ours(q["name"].as_str().unwrap()))
            .map(|q| {
                (
                    q["name"].as_str().unwrap().to_string(),
                    q["durable"].as_bool().unwrap(),
                    canon(&q["arguments"]),
                )
            })
            .collect();
    let delay_args =
        |ms: u64| canon(&json!({"x-dead-letter-exchange": b.exchange, "x-message-ttl": ms}));
    let mut want = BTreeSet::from([
        (b.queue.clone(), true, "{}".to_string()),
        (dlq.clone(), true, "{}".to_string()),
    ]);
    for (d, ms) in [(b.delays[0], 100), (b.delays[1], 300)] {
        want.insert((retry_queue(&b.queue, d), true, delay_args(ms)));
    }
    assert_eq!(queues, want);

    let bindings: BTreeSet<(String, String, String)> = rabbitmqctl(&[
        "list_bindings",
        "source_name",
        "destination_name",
        "routing_key",
    ])
    .as_array()
    .unwrap()
    .iter()
    .filter(|x| ours(x["destination_name"].as_str().unwrap()))
    .map(|x| {
        (
            x["source_name"].as_str().unwrap().to_string(),
            x["destination_name"].as_str().unwrap().to_string(),
            x["routing_key"].as_str().unwrap().to_string(),
        )
    })
    .collect();
    let mut want: BTreeSet<(String, String, String)> = BTreeSet::new();
    for q in [&b.queue, &dlq] {
        want.insert((String::new(), q.clone(), q.clone())); // the default exchange's binding
    }
    for id in &ids {
        want.insert((b.exchange.clone(), b.queue.clone(), id.clone()));
        want.insert((
            b.exchange.clone(),
            b.queue.clone(),
            format!("cqrs.{}.{id}", b.queue),
        ));
        want.insert((
            b.exchange.clone(),
            dlq.clone(),
            format!("cqrs.dead_letter_{}.{id}", b.queue),
        ));
    }
    for d in &b.delays {
        let q = retry_queue(&b.queue, *d);
        want.insert((String::new(), q.clone(), q.clone()));
        want.insert((rex.clone(), q, String::new()));
    }
    assert_eq!(bindings, want);
}

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

/// Our relay's messages carry django-cqrs's properties and routing keys, plus our message_id.
#[test]
fn relay_publishes_with_confirms_and_django_properties() {
    let b = TestBroker::new();
    b.declare(&["item"]);
    let t = TestDb::new(Kind::Postgres);
    let mut db = t.connect();
    atomic(&mut db, |tx| insert_m_items(tx, 3)).unwrap();
    let ids: Vec<String> = db
        .load_text(
            "SELECT CAST(message_id AS TEXT) AS j FROM cqrs_outbox ORDER BY id",
            vec![],
        )
        .unwrap();
    let mut relay = Relay::new(t.connect(), b.transport.publisher().unwrap(), b.settings());
    assert_eq!(relay.run_once().unwrap(), 3);
    assert_eq!(relay.stats().published, 3);
    assert_eq!(cqrs::outbox::pending(&mut db).unwrap(), 0);
    let got = b.drain(&b.queue);
    assert_eq!(got.len(), 3);
    for ((key, props, body), id) in got.iter().zip(&ids) {
        assert_eq!(key, "item");
        assert_eq!(
            props.content_type().as_ref().map(|c| c.to_string()),
            Some("text/plain".into())
        );
        assert_eq!(*props.delivery_mode(), Some(2));
        assert_eq!(
            props.message_id().as_ref().map(|m| m.to_string()).as_ref(),
            Some(id)
        );
        let m = Message::decode(body).unwrap();
        assert!(matches!(m.expires, Expires::At(_)));
    }
}

fn insert_m_items(tx: &mut cqrs::Tx<'_, cqrs::Db>, n: i64) -> cqrs::Result<()> {
    for i in 0..n {
        let sql = sql_for(
            tx.conn(),
            "INSERT INTO m_items (name, value, updated) VALUES ($1, $2, $3) RETURNING CAST(id AS TEXT) AS j",
        );
        let id: i64 = tx.conn().load_text(
            &sql,
            vec![
                cqrs::value::SqlValue::Text(format!("n{i}")),
                cqrs::value::SqlValue::BigInt(i),
                cqrs::value::SqlValue::Timestamptz(at(i)),
            ],
        )?[0]
            .parse()
            .unwrap();
        tx.created::<PlainItem>(&id)?;
    }
    Ok(())
}

fn item_master_table() -> cqrs::TableSpec {
    cqrs::TableSpec::new("item", "m_items")
        .key("id", cqrs::value::ColumnType::BigInt)
        .column(cqrs::ColumnSpec::new("name", cqrs::value::ColumnType::Text))
        .column(cqrs::ColumnSpec::new(
            "value",
            cqrs::value::ColumnType::BigInt,
        ))
        .column(cqrs::ColumnSpec::new(
            "updated",
            cqrs::value::ColumnType::Timestamptz,
        ))
        .build()
        .unwrap()
}

/// A master over `m_items` described by hand (no derive), as `item`.
struct PlainItem;

impl cqrs::MasterModel for PlainItem {
    const CQRS_ID: &'static str = "item";
    fn master_spec() -> cqrs::MasterSpec {
        cqrs::MasterSpec::new(item_master_table())
    }
}

/// Confirms are real: with the queue full (max-length + reject-publish) the broker nacks, and
/// nacked rows stay in the outbox until they can be delivered.
#[test]
fn nacked_messages_stay_in_the_outbox() {
    let b = TestBroker::new();
    b.declare(&["item"]);
    let policy = json!({"max-length": 4, "overflow": "reject-publish"}).to_string();
    let out = std::process::Command::new("rabbitmqctl")
        .args([
            "set_policy",
            "--apply-to",
            "queues",
            &b.queue,
            &format!("^{}$", b.queue),
            &policy,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Policies apply asynchronously: wait until the queue runs with this one.
    wait_until(
        Duration::from_secs(10),
        "the queue to apply the policy",
        || queue_policy(&b.queue) == b.queue,
    );
    let t = TestDb::new(Kind::Postgres);
    let mut db = t.connect();
    atomic(&mut db, |tx| insert_m_items(tx, 10)).unwrap();
    let mut relay = Relay::new(t.connect(), b.transport.publisher().unwrap(), b.settings());
    relay.run_once().unwrap();
    assert_eq!((relay.stats().published, relay.stats().failed), (4, 6));
    assert_eq!(
        cqrs::outbox::pending(&mut db).unwrap(),
        6,
        "nacked rows are kept"
    );
    assert_eq!(b.count(&b.queue), 4);
    // Room again: the kept rows go out on a later pass.
    b.drain(&b.queue);
    let out = std::process::Command::new("rabbitmqctl")
        .args(["clear_policy", &b.queue])
        .output()
        .unwrap();
    assert!(out.status.success());
    wait_until(
        Duration::from_secs(10),
        "the queue to drop the policy",
        || queue_policy(&b.queue).is_empty(),
    );
    db.execute(
        "UPDATE cqrs_outbox SET available_at = now() - interval '1 second'",
        vec![],
    )
    .unwrap();
    relay.run_once().unwrap();
    assert_eq!(cqrs::outbox::pending(&mut db).unwrap(), 0);
    assert_eq!(b.count(&b.queue), 6);
}

/// `mandatory`: a message no queue is bound for is logged, counted and deleted (nobody listens).
#[test]
fn unroutable_messages_are_counted_and_dropped() {
    let b = TestBroker::new();
    b.transport.declare_exchange().unwrap();
    let t = TestDb::new(Kind::Postgres);
    let mut db = t.connect();
    atomic(&mut db, |tx| insert_m_items(tx, 2)).unwrap();
    let mut relay = Relay::new(t.connect(), b.transport.publisher().unwrap(), b.settings());
    relay.run_once().unwrap();
    assert_eq!((relay.stats().published, relay.stats().unroutable), (0, 2));
    assert_eq!(cqrs::outbox::pending(&mut db).unwrap(), 0);
}

/// A failing message takes the delay queues and comes back with `retries` + 1, then is
/// dead-lettered with the reason; the rest of its batch applies.
#[test]
fn apply_errors_retry_through_delay_queues_then_dead_letter() {
    let b = TestBroker::new();
    let r = TestReplica::new(&b, item_and_typed_registry(Kind::Postgres));
    let mut bad = ItemState::new(2, 0, at(0)).save();
    bad.instance_data.remove("name");
    b.publish_raw("item", &ItemState::new(1, 0, at(0)).save().encode());
    b.publish_raw("item", &bad.encode());
    let mut c = r.consumer();
    wait_until(
        Duration::from_secs(20),
        "the failing message to be dead-lettered",
        || {
            c.poll(Duration::from_millis(200)).unwrap();
            c.stats().dead_lettered > 0
        },
    );
    assert_eq!(c.stats().retried, 2);
    assert_eq!(items(c.db()).keys().copied().collect::<Vec<_>>(), [1]);
    drop(c);
    let dead = b.drain(&dead_letter_queue(&b.queue));
    assert_eq!(dead.len(), 1);
    let (key, props, body) = &dead[0];
    assert_eq!(key, &format!("cqrs.dead_letter_{}.item", b.queue));
    let m = Message::decode(body).unwrap();
    assert_eq!(m.retries, 2);
    let headers = props.headers().as_ref().unwrap();
    let header = |k: &str| {
        headers
            .inner()
            .get(k)
            .and_then(|v| v.as_long_string())
            .map(|s| s.to_string())
    };
    assert_eq!(header("cqrs-error-kind").as_deref(), Some("apply"));
    assert!(header("cqrs-error").unwrap().contains("no `name`"));
    assert_eq!(
        props
            .expiration()
            .as_ref()
            .map(|e| e.to_string())
            .as_deref(),
        Some("864000000")
    );
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

/// A directed SYNC reaches only the named replica's queue; broadcast messages reach every bound queue.
#[test]
fn directed_sync_reaches_only_the_named_queue() {
    let b = TestBroker::new();
    let other = b.another_queue();
    b.declare(&["item"]);
    other.declare(&["item"]);
    let t = TestDb::new(Kind::Postgres);
    let mut db = t.connect();
    atomic(&mut db, |tx| insert_m_items(tx, 1)).unwrap();
    let id: i64 = db
        .load_text("SELECT CAST(id AS TEXT) AS j FROM m_items", vec![])
        .unwrap()[0]
        .parse()
        .unwrap();
    atomic(&mut db, |tx| tx.sync::<PlainItem>(&id, Some(&b.queue))).unwrap();
    let mut relay = Relay::new(t.connect(), b.transport.publisher().unwrap(), b.settings());
    relay.run_once().unwrap();
    let mine = b.drain(&b.queue);
    let theirs = other.drain(&other.queue);
    assert_eq!(
        mine.iter().map(|m| m.0.clone()).collect::<Vec<_>>(),
        ["item".to_string(), format!("cqrs.{}.item", b.queue)]
    );
    assert_eq!(
        theirs.iter().map(|m| m.0.clone()).collect::<Vec<_>>(),
        ["item"]
    );
}

fn dead_letter_copies(file: &str) -> Vec<Vec<u8>> {
    capture(file)
        .into_iter()
        .filter(|(k, _)| k.starts_with("cqrs.dead_letter_"))
        .map(|(_, b)| b)
        .collect()
}

/// django-cqrs's own dead letters (captures 20 and 21) in our dead-letter queue: dump lists and
/// keeps them, retry re-publishes them as `cqrs_dead_letters retry` does (capture 22) and a fixed
/// one applies, purge empties.
#[test]
fn dead_letters_dump_retry_purge_like_django_cqrs() {
    use cqrs::ops::dead_letters::{Action, Filter, run};
    let b = TestBroker::new();
    let replica = TestReplica::new(&b, item_and_typed_registry(Kind::Postgres));
    let dl_key = format!("cqrs.dead_letter_{}.item", b.queue);
    let letters: Vec<Vec<u8>> = dead_letter_copies("20_replica_retry_then_dead_letter.json")
        .into_iter()
        .chain(dead_letter_copies("21_replica_expired_to_dead_letter.json"))
        .collect();
    assert_eq!(letters.len(), 2);
    for l in &letters {
        b.publish_raw(&dl_key, l);
    }
    let dlq = dead_letter_queue(&b.queue);

    let mut out = Vec::new();
    let r = run(
        &mut b.transport.letters(&b.queue).unwrap(),
        &b.queue,
        Action::Dump,
        &Filter::default(),
        &mut out,
    )
    .unwrap();
    assert_eq!((r.total, r.done), (2, 2));
    let lines: Vec<Value> = String::from_utf8(out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let originals: Vec<Value> = letters
        .iter()
        .map(|l| serde_json::from_slice(l).unwrap())
        .collect();
    assert_eq!(lines, originals);
    // The letters the dump read come back to the queue once its channel is closed.
    wait_until(
        Duration::from_secs(10),
        "the dumped letters to be back in the dead-letter queue",
        || b.count(&dlq) >= 2,
    );
    assert_eq!(b.count(&dlq), 2, "dump keeps every letter");

    let filter = Filter {
        cqrs_ids: vec!["item".into()],
        limit: Some(1),
    };
    let r = run(
        &mut b.transport.letters(&b.queue).unwrap(),
        &b.queue,
        Action::Retry,
        &filter,
        &mut Vec::new(),
    )
    .unwrap();
    assert_eq!((r.matched, r.done), (1, 1));
    let r = run(
        &mut b.transport.letters(&b.queue).unwrap(),
        &b.queue,
        Action::Retry,
        &Filter::default(),
        &mut Vec::new(),
    )
    .unwrap();
    assert_eq!(r.done, 1);
    wait_until(
        Duration::from_secs(10),
        "the retried letters to leave the dead-letter queue",
        || b.count(&dlq) == 0,
    );
    assert_eq!(
        b.count(&dlq),
        0,
        "a letter is removed once its copy is confirmed"
    );
    let retried = b.drain(&b.queue);
    let django: Vec<(String, Value)> = capture("22_dead_letters_retry.json")
        .into_iter()
        .map(|(k, body)| {
            (
                k.replace("bench_replica", &b.queue),
                serde_json::from_slice(&body).unwrap(),
            )
        })
        .collect();
    assert_eq!(retried.len(), django.len());
    for ((key, _, body), (django_key, django_body)) in retried.iter().zip(&django) {
        let mut ours: Value = serde_json::from_slice(body).unwrap();
        assert_eq!(key, django_key);
        assert_eq!(ours["retries"], json!(0));
        let expires = cqrs::message::parse_datetime(ours["expires"].as_str().unwrap()).unwrap();
        let in_a_day = chrono::Utc::now() + chrono::Duration::days(1);
        assert!(
            (in_a_day - expires).num_seconds().abs() < 60,
            "expires now + 1 day"
        );
        let mut theirs = django_body.clone();
        ours["expires"] = Value::Null;
        theirs["expires"] = Value::Null;
        assert_eq!(
            ours, theirs,
            "the rest of the body as django-cqrs re-publishes it"
        );
    }

    // The expired letter (21) is otherwise valid: once retried it applies.
    b.publish_raw(&dl_key, &letters[1]);
    run(
        &mut b.transport.letters(&b.queue).unwrap(),
        &b.queue,
        Action::Retry,
        &Filter::default(),
        &mut Vec::new(),
    )
    .unwrap();
    let mut c = replica.consumer();
    c.drain(Duration::from_millis(500)).unwrap();
    assert_eq!(items(c.db()).keys().copied().collect::<Vec<_>>(), [990002]);
    drop(c);

    for l in &letters {
        b.publish_raw(&dl_key, l);
    }
    wait_until(
        Duration::from_secs(10),
        "both letters to be in the dead-letter queue",
        || b.count(&dlq) >= 2,
    );
    let r = run(
        &mut b.transport.letters(&b.queue).unwrap(),
        &b.queue,
        Action::Purge,
        &Filter::default(),
        &mut Vec::new(),
    )
    .unwrap();
    assert_eq!(r.done, 2);
    assert_eq!(b.count(&dlq), 0);
}

fn error_kinds(b: &TestBroker) -> Vec<String> {
    b.drain(&dead_letter_queue(&b.queue))
        .iter()
        .map(|(_, p, _)| {
            p.headers()
                .as_ref()
                .and_then(|h| {
                    h.inner()
                        .get("cqrs-error-kind")
                        .and_then(|v| v.as_long_string())
                        .map(|s| s.to_string())
                })
                .unwrap_or_default()
        })
        .collect()
}

/// Non-JSON, no cqrs_id, unknown model, expired, oversized: each dead-lettered at once with its
/// kind; nothing crashes, nothing blocks, the good messages around them apply.
#[test]
fn undeliverable_messages_are_dead_lettered_at_once_with_their_kind() {
    let b = TestBroker::new();
    let mut r = TestReplica::new(&b, item_registry());
    r.settings.max_body_bytes = 2048;
    b.declare(&["ghost"]); // bound, but no replica of it is registered
    b.publish_raw("item", &ItemState::new(1, 0, at(0)).save().encode());
    b.publish_raw("item", b"{not json");
    b.publish_raw(
        "item",
        json!({"signal_type": "SAVE", "instance_data": {}, "instance_pk": 1})
            .to_string()
            .as_bytes(),
    );
    let mut ghost = ItemState::new(2, 0, at(0)).save();
    ghost.cqrs_id = "ghost".into();
    b.publish_raw("ghost", &ghost.encode());
    let mut expired = ItemState::new(3, 0, at(0)).save();
    expired.expires = Expires::At(at(0));
    b.publish_raw("item", &expired.encode());
    let mut big = ItemState::new(4, 0, at(0));
    big.name = "x".repeat(4096);
    b.publish_raw("item", &big.save().encode());
    b.publish_raw("item", &ItemState::new(5, 0, at(0)).save().encode());
    let mut c = r.consumer();
    c.drain(Duration::from_millis(500)).unwrap();
    assert_eq!(items(c.db()).keys().copied().collect::<Vec<_>>(), [1, 5]);
    assert_eq!(c.stats().retried, 0);
    drop(c);
    wait_until(
        Duration::from_secs(10),
        "the five dead letters to be in the dead-letter queue",
        || b.count(&dead_letter_queue(&b.queue)) >= 5,
    );
    assert_eq!(
        error_kinds(&b),
        [
            "malformed",
            "malformed",
            "unknown-model",
            "expired",
            "too-large"
        ]
    );
    assert_eq!(b.count(&b.queue), 0);
}

/// A foreign-key violation that resolves itself (the parent arrives later) applies on a retry.
#[test]
fn a_foreign_key_violation_applies_on_a_retry_once_the_parent_arrives() {
    let b = TestBroker::new();
    let pets = cqrs::TableSpec::new("pet", "pets")
        .key("id", cqrs::value::ColumnType::BigInt)
        .column(cqrs::ColumnSpec::new(
            "owner",
            cqrs::value::ColumnType::BigInt,
        ))
        .depends_on("item")
        .build()
        .unwrap();
    let r = TestReplica::new(&b, item_registry().with_replica(TableReplica::new(pets)));
    r.db.connect()
        .batch_execute("CREATE TABLE pets (id BIGINT PRIMARY KEY, owner BIGINT NOT NULL REFERENCES items (id), cqrs_revision INTEGER NOT NULL, cqrs_updated TIMESTAMPTZ NOT NULL)")
        .unwrap();
    let pet = json!({"id": 9, "owner": 1, "cqrs_revision": 0, "cqrs_updated": "2026-11-23 12:00:00+00:00"});
    let pet = Message::new(
        cqrs::SignalType::Save,
        "pet",
        json!(9),
        pet.as_object().unwrap().clone(),
    );
    b.publish_raw("pet", &pet.encode());
    let mut c = r.consumer();
    c.poll(Duration::from_secs(2)).unwrap();
    assert_eq!(
        c.stats().retried,
        1,
        "the FK violation takes the retry path"
    );
    b.publish_raw("item", &ItemState::new(1, 0, at(0)).save().encode());
    wait_until(
        Duration::from_secs(10),
        "the pet to apply once its owner arrived",
        || {
            c.poll(Duration::from_millis(200)).unwrap();
            count(c.db(), "SELECT count(*) AS n FROM pets") > 0
        },
    );
    assert_eq!(c.stats().dead_lettered, 0);
}

/// A directed SYNC that fails once keeps `cqrs-directed` on its retry copy (and so still downgrades).
#[test]
fn a_directed_sync_keeps_its_mark_through_a_retry() {
    let b = TestBroker::new();
    let mut r = TestReplica::new(&b, item_registry());
    r.settings.max_retries = 1;
    cqrs::Replica::apply(
        &TableReplica::new(item_spec()),
        &mut r.db.connect(),
        &[&cqrs::Change::new(ItemState::new(1, 5, at(50)).save())],
    )
    .unwrap();
    // A Django master's directed SYNC (only the routing key says so) with a value the CHECK refuses.
    let mut sync = ItemState::new(1, 2, at(20));
    sync.value = i64::MIN;
    b.publish_raw(&format!("cqrs.{}.item", b.queue), &sync.sync().encode());
    let mut c = r.consumer();
    c.poll(Duration::from_secs(2)).unwrap();
    assert_eq!(c.stats().retried, 1);
    c.db()
        .batch_execute("ALTER TABLE items DROP CONSTRAINT items_value_check")
        .unwrap();
    wait_until(
        Duration::from_secs(10),
        "the retried directed SYNC to downgrade the row",
        || {
            c.poll(Duration::from_millis(200)).unwrap();
            items(c.db())[&1].rev == 2
        },
    );
    assert_eq!(items(c.db())[&1].value, i64::MIN);
}

/// While the replica's database refuses connections, messages are neither dead-lettered nor
/// counted as retries; all apply once it accepts them again.
#[test]
fn a_database_that_refuses_connections_spends_no_retries() {
    let b = TestBroker::new();
    let r = TestReplica::new(&b, item_registry());
    let db_name = r.db.url.rsplit('/').next().unwrap().to_string();
    let _ = tracing_subscriber::fmt()
        .with_env_filter("warn")
        .with_test_writer()
        .try_init();
    let admin = || cqrs::Db::connect(&pg_server_url()).unwrap();
    let ((), stats) = r.consuming(1, |_| {
        // Its worker connects to the database before it subscribes to the queue.
        wait_until(
            Duration::from_secs(10),
            "the consumer to subscribe to its queue",
            || b.consumers(&b.queue) >= 1,
        );
        admin()
            .batch_execute(&format!("ALTER DATABASE {db_name} ALLOW_CONNECTIONS false"))
            .unwrap();
        admin()
            .batch_execute(&format!(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{db_name}'"
            ))
            .unwrap();
        for id in 0..50 {
            b.publish_raw("item", &ItemState::new(id, 0, at(id)).save().encode());
        }
        // The outage itself: the database keeps refusing for a while, so the consumer redoes the
        // batch and fails to reconnect several times (redo pauses 0.1, 0.2, 0.4 ... s).
        std::thread::sleep(Duration::from_secs(3));
        admin()
            .batch_execute(&format!("ALTER DATABASE {db_name} ALLOW_CONNECTIONS true"))
            .unwrap();
        wait_until(
            Duration::from_secs(30),
            "all 50 rows to apply after the database came back",
            || items(&mut r.db.connect()).len() >= 50,
        );
    });
    assert_eq!((stats.retried, stats.dead_lettered), (0, 0), "{stats:?}");
    assert!(stats.transient_redos > 0, "{stats:?}");
    assert_eq!(b.count(&dead_letter_queue(&b.queue)), 0);
}

/// A TLS-terminating proxy in front of the machine's RabbitMQ with a fresh self-signed
/// certificate for `localhost`: returns its port and the certificate (PEM) to trust.
fn tls_proxy() -> (u16, String) {
    use tokio_rustls::rustls;
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let pem = certified.cert.pem();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(certified.signing_key.serialize_der().into());
    let config = rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![certified.cert.der().clone()], key)
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config));
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            loop {
                let Ok((socket, _)) = listener.accept().await else {
                    return;
                };
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(socket).await else {
                        return;
                    };
                    let Ok(mut upstream) = tokio::net::TcpStream::connect("127.0.0.1:5672").await
                    else {
                        return;
                    };
                    let _ = tokio::io::copy_bidirectional(&mut tls, &mut upstream).await;
                });
            }
        });
    });
    (port, pem)
}

/// `amqps://`: publish with confirms and consume through TLS, trusting a private CA; the wrong
/// CA is refused.
#[test]
fn amqps_publishes_and_consumes_through_tls() {
    use cqrs::transport::amqp::{AmqpConfig, AmqpTransport};
    use cqrs::transport::{Headers, Inbox, Outgoing, Publisher};
    let b = TestBroker::new();
    let (port, ca) = tls_proxy();
    let config = AmqpConfig {
        url: format!("amqps://guest:guest@localhost:{port}/%2f"),
        connection_name: format!("{}-tls", b.queue),
        exchange: b.exchange.clone(),
        tls_ca_pem: Some(ca),
    };
    let tls = AmqpTransport::connect(config.clone()).unwrap();
    tls.declare_replica(&b.queue, &["item".into()], &b.delays)
        .unwrap();
    let body = ItemState::new(1, 0, at(0)).save().encode();
    let sent = Outgoing {
        routing_key: "item".into(),
        body: body.clone(),
        headers: Headers::new(),
        message_id: "m-1".into(),
    };
    assert_eq!(
        tls.publisher().unwrap().publish(&[sent]).unwrap(),
        [cqrs::transport::Confirm::Delivered]
    );
    let mut inbox = tls.inbox(&b.queue, 10, &b.delays).unwrap();
    let got = inbox.receive(10, Duration::from_secs(5)).unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].body, body);
    inbox.ack_up_to(got[0].tag).unwrap();
    drop(inbox);

    let (_, other_ca) = tls_proxy();
    let err = AmqpTransport::connect(AmqpConfig {
        tls_ca_pem: Some(other_ca),
        ..config
    })
    .err()
    .expect("an untrusted certificate is refused");
    assert!(err.to_string().contains("connecting to RabbitMQ"), "{err}");
}
