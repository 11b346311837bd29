//! The relay publishing to RabbitMQ: django-cqrs's properties, real confirms (a nacked row stays
//! in the outbox), unroutable messages.

use std::time::Duration;

use cqrs::db::SqlConn;
use cqrs::message::Expires;
use cqrs::{Message, Relay, atomic};
use cqrs_tests::*;
use serde_json::json;

/// Both ways a relay claims on PostgreSQL: leased rows (no URL; SQLite's way) and batches held
/// deleted in open transactions until confirmed (with the URL).
const HELD: [bool; 2] = [false, true];

/// A relay on `t`'s outbox, holding its batches in transactions if `held`.
fn relay_on<P: cqrs::transport::Publisher>(
    t: &TestDb,
    held: bool,
    publisher: P,
    settings: cqrs::Settings,
) -> Relay<P> {
    let relay = Relay::new(t.connect(), publisher, settings);
    if held {
        relay.reconnect_with(&t.url)
    } else {
        relay
    }
}

/// The outbox's message ids in claim order.
fn outbox_message_ids(db: &mut cqrs::Db) -> Vec<String> {
    db.load_text(
        "SELECT CAST(message_id AS TEXT) AS j FROM cqrs_outbox ORDER BY id",
        vec![],
    )
    .unwrap()
}

/// Our relay's messages carry django-cqrs's properties and routing keys, plus our message_id.
#[test]
fn relay_publishes_with_confirms_and_django_properties() {
    let b = TestBroker::new();
    b.declare(&["item"]);
    let t = TestDb::new(Kind::Postgres);
    let mut db = t.connect();
    atomic(&mut db, |tx| insert_m_items(tx, 3)).unwrap();
    let ids = outbox_message_ids(&mut db);
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

/// Make `b`'s queue refuse publishes (nack) beyond `max` messages.
fn limit_queue(b: &TestBroker, max: usize) {
    let policy = json!({"max-length": max, "overflow": "reject-publish"}).to_string();
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
}

/// A queue that refuses publishes beyond 4 messages, and a master with 10 captured rows waiting.
fn ten_rows_for_a_queue_of_four() -> (TestBroker, TestDb, cqrs::Db) {
    let b = TestBroker::new();
    b.declare(&["item"]);
    limit_queue(&b, 4);
    let t = TestDb::new(Kind::Postgres);
    let mut db = t.connect();
    atomic(&mut db, |tx| insert_m_items(tx, 10)).unwrap();
    (b, t, db)
}

/// Take [`limit_queue`]'s policy off `b`'s queue and wait until the queue runs without it.
fn unlimit_queue(b: &TestBroker) {
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
}

/// Confirms are real: with the queue full (max-length + reject-publish) the broker nacks, and
/// nacked rows stay in the outbox until they can be delivered.
#[test]
fn nacked_messages_stay_in_the_outbox() {
    for held in HELD {
        let (b, t, mut db) = ten_rows_for_a_queue_of_four();
        let ids = outbox_message_ids(&mut db);
        let mut relay = relay_on(&t, held, b.transport.publisher().unwrap(), b.settings());
        let ((), lines) = capture_json_logs(|| {
            relay.run_once().unwrap();
        });
        assert_eq!((relay.stats().published, relay.stats().failed), (4, 6));
        // Each nacked message's line names it.
        let nacked: Vec<&serde_json::Value> = lines
            .iter()
            .filter(|l| {
                l["fields"]["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("not confirmed"))
            })
            .collect();
        assert_eq!(nacked.len(), 6, "{lines:#?}");
        let mut named = Vec::new();
        for line in nacked {
            let f = &line["fields"];
            assert_eq!(f["cqrs_id"], "item", "{line}");
            assert!(f["pk"].is_string() && f["revision"] == 0, "{line}");
            named.push(f["message_id"].as_str().unwrap().to_string());
        }
        named.sort();
        let mut nacked_ids = ids[4..].to_vec();
        nacked_ids.sort();
        assert_eq!(
            named, nacked_ids,
            "each nacked row's line names its own message"
        );
        assert_eq!(
            cqrs::outbox::pending(&mut db).unwrap(),
            6,
            "nacked rows are kept"
        );
        assert_eq!(b.count(&b.queue), 4);
        // Room again: the kept rows go out on a later pass.
        b.drain(&b.queue);
        unlimit_queue(&b);
        db.execute(
            "UPDATE cqrs_outbox SET available_at = now() - interval '1 second'",
            vec![],
        )
        .unwrap();
        relay.run_once().unwrap();
        assert_eq!(cqrs::outbox::pending(&mut db).unwrap(), 0);
        assert_eq!(b.count(&b.queue), 6);
    }
}

/// `mandatory`: a message no queue is bound for is logged, counted and deleted (nobody listens).
#[test]
fn unroutable_messages_are_counted_and_dropped() {
    for held in HELD {
        let b = TestBroker::new();
        b.transport.declare_exchange().unwrap();
        let t = TestDb::new(Kind::Postgres);
        let mut db = t.connect();
        atomic(&mut db, |tx| insert_m_items(tx, 2)).unwrap();
        let mut relay = relay_on(&t, held, b.transport.publisher().unwrap(), b.settings());
        relay.run_once().unwrap();
        assert_eq!((relay.stats().published, relay.stats().unroutable), (0, 2));
        assert_eq!(cqrs::outbox::pending(&mut db).unwrap(), 0);
    }
}

/// With several batches in flight (the next one sent before the last one's confirms are in),
/// messages still leave in outbox order and every row is deleted once confirmed.
#[test]
fn batches_in_flight_leave_in_outbox_order() {
    for held in HELD {
        let b = TestBroker::new();
        b.declare(&["item"]);
        let t = TestDb::new(Kind::Postgres);
        let mut db = t.connect();
        atomic(&mut db, |tx| insert_m_items(tx, 300)).unwrap();
        let ids = outbox_message_ids(&mut db);
        let settings = cqrs::Settings {
            batch_size: 7,
            ..b.settings()
        };
        let mut relay = relay_on(&t, held, b.transport.publisher().unwrap(), settings);
        assert_eq!(relay.drain().unwrap(), 300);
        assert_eq!(relay.stats().published, 300);
        assert_eq!(cqrs::outbox::pending(&mut db).unwrap(), 0);
        let got: Vec<String> = b
            .drain(&b.queue)
            .iter()
            .map(|(_, props, _)| props.message_id().as_ref().unwrap().to_string())
            .collect();
        assert_eq!(got, ids);
    }
}

/// A nacked batch among batches in flight goes back to the outbox while the others are deleted.
#[test]
fn nacked_batches_in_flight_stay_in_the_outbox() {
    for held in HELD {
        let (b, t, mut db) = ten_rows_for_a_queue_of_four();
        let settings = cqrs::Settings {
            batch_size: 3,
            ..b.settings()
        };
        let mut relay = relay_on(&t, held, b.transport.publisher().unwrap(), settings);
        assert_eq!(relay.drain().unwrap(), 10);
        assert_eq!((relay.stats().published, relay.stats().failed), (4, 6));
        assert_eq!(cqrs::outbox::pending(&mut db).unwrap(), 6);
        assert_eq!(b.count(&b.queue), 4);
        unlimit_queue(&b);
        // The publisher left the channel that nacked for a new one: the refused rows go out on it.
        wait_until(
            Duration::from_secs(30),
            "the refused rows to be published",
            || {
                relay.drain().unwrap();
                cqrs::outbox::pending(&mut db).unwrap() == 0
            },
        );
        assert_eq!(b.count(&b.queue), 10);
    }
}

/// README's in-process relay, started from inside the application's tokio runtime (what
/// `#[tokio::main]` gives, multi-thread and current-thread): connecting, relaying a change and
/// dropping the broker there neither panic nor block the runtime for good.
#[test]
fn the_readme_relay_runs_inside_a_tokio_runtime() {
    for multi_thread in [true, false] {
        let b = TestBroker::new();
        b.declare(&["item"]);
        let t = TestDb::new(Kind::Postgres);
        let mut builder = if multi_thread {
            tokio::runtime::Builder::new_multi_thread()
        } else {
            tokio::runtime::Builder::new_current_thread()
        };
        let rt = builder.enable_all().build().unwrap();
        rt.block_on(async {
            let settings = cqrs::Settings {
                broker_url: Some(amqp_url()),
                ..b.settings()
            };
            // As README's start_relay.
            let broker = cqrs::transport::connect(&settings, "relay").unwrap();
            let mut relay = Relay::new(t.connect(), broker.publisher().unwrap(), settings);
            let shutdown = cqrs::Shutdown::new();
            let stop = shutdown.clone();
            let handle = std::thread::spawn(move || relay.run(&stop));
            atomic(&mut t.connect(), |tx| insert_m_items(tx, 2)).unwrap();
            let deadline = std::time::Instant::now() + Duration::from_secs(20);
            while cqrs::outbox::pending(&mut t.connect()).unwrap() > 0 {
                assert!(
                    std::time::Instant::now() < deadline,
                    "the relay published nothing"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            shutdown.trigger();
            handle.join().unwrap().unwrap();
            drop(broker);
        });
        assert_eq!(b.drain(&b.queue).len(), 2, "multi-thread: {multi_thread}");
    }
}

/// Rows another relay holds in its open batch transaction are skipped by `delete` and `release`,
/// not waited for: two relays giving batches back at once must not wait on each other's batches
/// (each would hold the rows the other waits for until a session timed out).
#[test]
fn rows_another_relay_holds_are_skipped_by_delete_and_release() {
    let t = TestDb::new(Kind::Postgres);
    let mut db = t.connect();
    atomic(&mut db, |tx| insert_m_items(tx, 4)).unwrap();
    let ids: Vec<i64> = db
        .load_text(
            "SELECT CAST(id AS TEXT) AS j FROM cqrs_outbox ORDER BY id",
            vec![],
        )
        .unwrap()
        .iter()
        .map(|id| id.parse().unwrap())
        .collect();
    // Another relay's batch in flight: the two oldest rows taken in a transaction left open.
    let mut other = t.connect();
    other.begin().unwrap();
    let taken = cqrs::outbox::take(&mut other, 2, chrono::Utc::now()).unwrap();
    assert_eq!(taken.iter().map(|r| r.id).collect::<Vec<_>>(), ids[..2]);
    // Waiting for `other` would be the bug: fail after 2 s instead of hanging.
    db.batch_execute("SET lock_timeout = '2s'").unwrap();
    let later = chrono::Utc::now() + chrono::Duration::seconds(60);
    cqrs::outbox::release(&mut db, &ids, later).unwrap();
    assert_eq!(
        cqrs::outbox::delete(&mut db, &ids).unwrap(),
        2,
        "only the rows nobody holds"
    );
    other.rollback().unwrap();
    // The held rows are back as they were (available now: the release skipped them).
    let left = db
        .load_text(
            "SELECT CAST(id AS TEXT) || ':' || CAST(available_at <= now() AS TEXT) AS j \
             FROM cqrs_outbox ORDER BY id",
            vec![],
        )
        .unwrap();
    assert_eq!(
        left,
        [format!("{}:true", ids[0]), format!("{}:true", ids[1])]
    );
}
