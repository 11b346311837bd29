//! Quorum queues (`queue_type = "quorum"`): the replica's queue, dead-letter queue and retry
//! delay queues are declared as quorum queues (delay queues dead-letter at least once), and
//! changes flow through them; a queue that exists with the other type is a one-line
//! configuration error, both ways.

use std::time::Duration;

use cqrs::config::QueueType;
use cqrs::{Consumer, Relay, Settings, atomic};
use cqrs_tests::*;

fn settings(b: &TestBroker, queue_type: QueueType) -> Settings {
    Settings {
        broker_url: Some(amqp_url()),
        queue_type,
        ..b.settings()
    }
}

/// Each of the test's queues with its type and arguments, as rabbitmqctl lists them.
fn listed(b: &TestBroker) -> Vec<(String, String, String)> {
    rabbitmqctl(&["list_queues", "name", "type", "arguments"])
        .as_array()
        .unwrap()
        .iter()
        .filter(|q| q["name"].as_str().is_some_and(|n| n.contains(&b.queue)))
        .map(|q| {
            (
                q["name"].as_str().unwrap().to_string(),
                q["type"].as_str().unwrap_or_default().to_string(),
                q["arguments"].to_string(),
            )
        })
        .collect()
}

#[test]
fn a_quorum_replica_queue_carries_changes() {
    let b = TestBroker::new();
    let quorum = cqrs::transport::connect(&settings(&b, QueueType::Quorum), "test").unwrap();
    quorum
        .declare_replica(&b.queue, &["item".into()], &b.delays)
        .unwrap();
    let queues = listed(&b);
    assert_eq!(queues.len(), 2 + b.delays.len(), "{queues:?}");
    for (name, kind, args) in &queues {
        assert_eq!(kind, "quorum", "{name}");
        if name.starts_with("cqrs_retry_") {
            assert!(
                args.contains("at-least-once") && args.contains("reject-publish"),
                "{name}: {args}"
            );
        }
    }

    let master = TestDb::new(Kind::Postgres);
    atomic(&mut master.connect(), |tx| insert_m_items(tx, 3)).unwrap();
    let mut relay = Relay::new(
        master.connect(),
        b.transport.publisher().unwrap(),
        b.settings(),
    );
    assert_eq!(relay.run_once().unwrap(), 3);
    let replica = TestDb::new(Kind::Postgres);
    let registry = item_registry();
    let s = Settings {
        database_url: Some(replica.url.clone()),
        ..settings(&b, QueueType::Quorum)
    };
    let inbox = quorum.inbox(&b.queue, 100, &b.delays).unwrap();
    let mut consumer = Consumer::new(&registry, &s, replica.connect(), inbox);
    consumer.drain(Duration::from_millis(500)).unwrap();
    assert_eq!(items(&mut replica.connect()).len(), 3);
}

#[test]
fn a_queue_of_the_other_type_is_a_configuration_error_both_ways() {
    for (first, then) in [
        (QueueType::Classic, QueueType::Quorum),
        (QueueType::Quorum, QueueType::Classic),
    ] {
        let b = TestBroker::new();
        cqrs::transport::connect(&settings(&b, first), "test")
            .unwrap()
            .declare_replica(&b.queue, &["item".into()], &b.delays)
            .unwrap();
        let err = cqrs::transport::connect(&settings(&b, then), "test")
            .unwrap()
            .declare_replica(&b.queue, &["item".into()], &b.delays)
            .unwrap_err();
        assert_eq!(err.kind(), cqrs::ErrorKind::Config, "{err}");
        assert!(
            err.to_string().contains(&format!(
                "queue {} exists as a {first} queue but queue_type is {then}",
                b.queue
            )),
            "{err}"
        );
    }
}

/// `cqrs queues migrate --to quorum` on a classic replica queue holding 10,000 waiting messages,
/// while `consume -w 2` (configured for classic queues) drains it and the master goes on
/// publishing: every queue ends quorum under its own name, every change is applied exactly once
/// (the copies a migration can duplicate carry the same revision and are skipped), and nothing
/// is dead-lettered or left parked.
#[test]
fn a_live_queue_moves_to_quorum_with_nothing_lost() {
    migrate_with_10_000_waiting(true);
}

/// The same with the consumer stopped: all 10,000 waiting messages are moved, and a consumer
/// started afterwards with `queue_type = "quorum"` applies them.
#[test]
fn a_stopped_replica_queue_moves_to_quorum_with_its_messages() {
    migrate_with_10_000_waiting(false);
}

fn migrate_with_10_000_waiting(consumer_running: bool) {
    let b = TestBroker::new();
    let mut replica = TestReplica::new(&b, item_registry());
    let master = TestDb::new(Kind::Postgres);
    let mut db = master.connect();
    atomic(&mut db, |tx| insert_m_items(tx, 10_000)).unwrap();
    let mut relay = Relay::new(
        master.connect(),
        b.transport.publisher().unwrap(),
        b.settings(),
    );
    assert_eq!(relay.drain().unwrap(), 10_000);
    assert_eq!(b.count(&b.queue), 10_000);

    let migrate = |db: &mut cqrs::Db, relay: &mut Relay<_>| {
        let quorum = cqrs::transport::connect(&settings(&b, QueueType::Quorum), "migrate").unwrap();
        let ids = vec!["item".to_string()];
        // The master goes on: 50 more changes in flight through the migration.
        std::thread::scope(|s| {
            let writer = s.spawn(|| {
                for _ in 0..10 {
                    atomic(db, |tx| insert_m_items(tx, 5)).unwrap();
                    relay.drain().unwrap();
                    std::thread::sleep(Duration::from_millis(100));
                }
            });
            let moves = quorum
                .migrate_replica(&b.queue, &ids, &b.delays, QueueType::Quorum)
                .unwrap();
            writer.join().unwrap();
            eprintln!("{moves:?}");
            assert!(moves.iter().all(|m| m.changed), "{moves:?}");
            assert_eq!(moves.len(), 2 + b.delays.len(), "{moves:?}");
            moves[0].moved
        })
    };
    let converged = || {
        wait_until(
            Duration::from_secs(120),
            "the replica to hold 10,050 items",
            || items(&mut replica.db.connect()).len() == 10_050,
        )
    };
    let stats = if consumer_running {
        replica
            .consuming(2, |_| {
                migrate(&mut db, &mut relay);
                converged();
            })
            .1
    } else {
        assert!(migrate(&mut db, &mut relay) >= 10_000);
        replica.settings.queue_type = QueueType::Quorum;
        replica.consuming(2, |_| converged()).1
    };
    let queues = listed(&b);
    assert_eq!(
        queues.len(),
        2 + b.delays.len(),
        "parked queues left: {queues:?}"
    );
    for (name, kind, _) in &queues {
        assert_eq!(kind, "quorum", "{name}");
    }
    assert_eq!(stats.apply.applied, 10_050, "{stats:?}");
    assert_eq!(stats.dead_lettered, 0, "{stats:?}");
    assert_eq!(b.count(&cqrs::transport::dead_letter_queue(&b.queue)), 0);
    assert_eq!(cqrs::outbox::pending(&mut master.connect()).unwrap(), 0);
}
