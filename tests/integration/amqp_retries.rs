//! Failures while applying over RabbitMQ: retries through the delay queues, then a dead letter;
//! failures that resolve on a retry; a database outage that spends no retries.

use std::time::Duration;

use cqrs::transport::dead_letter_queue;
use cqrs::{Message, TableReplica};
use cqrs_tests::*;
use serde_json::json;

/// A failing message takes the delay queues and comes back with `retries` + 1, then is
/// dead-lettered with the reason, its message id kept by every copy; the rest of its batch
/// applies.
#[test]
fn apply_errors_retry_through_delay_queues_then_dead_letter() {
    retry_then_dead_letter(TestBroker::new());
}

/// The same through quorum delay queues (they dead-letter at least once) into a quorum
/// dead-letter queue.
#[test]
fn apply_errors_retry_through_quorum_delay_queues_then_dead_letter() {
    retry_then_dead_letter(TestBroker::quorum());
}

fn retry_then_dead_letter(b: TestBroker) {
    let r = TestReplica::new(&b, item_and_typed_registry(Kind::Postgres));
    let mut bad = ItemState::new(2, 0, at(0)).save();
    bad.instance_data.remove("name");
    b.publish_raw("item", &ItemState::new(1, 0, at(0)).save().encode());
    b.publish_raw_with_id("item", &bad.encode(), Some("outbox-row-7"));
    let published = std::time::Instant::now();
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
    // Each retry waited out its delay level (100 ms, then 300 ms) before it came back.
    let waited = published.elapsed();
    assert!(
        waited >= b.delays.iter().sum::<Duration>(),
        "dead-lettered after {waited:?}"
    );
    assert_eq!(items(c.db()).keys().copied().collect::<Vec<_>>(), [1]);
    drop(c);
    let dead = b.drain(&dead_letter_queue(&b.queue));
    assert_eq!(dead.len(), 1);
    let (key, props, body) = &dead[0];
    assert_eq!(key, &format!("cqrs.dead_letter_{}.item", b.queue));
    let m = Message::decode(body).unwrap();
    assert_eq!(m.retries, 2);
    assert_eq!(
        props
            .message_id()
            .as_ref()
            .map(|m| m.to_string())
            .as_deref(),
        Some("outbox-row-7"),
        "two retry copies and the dead letter keep the id"
    );
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
