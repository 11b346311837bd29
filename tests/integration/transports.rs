//! The transport-generic suite: each body runs on RabbitMQ, the SQLite queue file and NATS
//! JetStream, reaching the broker only through cqrs's `Broker` trait (as the commands do):
//! routing, the relay and two consumer workers end to end, retries then a dead letter, hostile
//! bodies, and `dead-letters` retry and purge.

use std::time::{Duration, Instant};

use cqrs::transport::{Confirm, Delivery, HEADER_ERROR, HEADER_ERROR_KIND, Inbox, directed_key};
use cqrs::{Consumer, Message, Relay, Settings, Shutdown, atomic};
use cqrs_tests::*;

/// Every delivery that arrives until none has for `idle`, acked.
fn take_all(inbox: &mut dyn Inbox, idle: Duration) -> Vec<Delivery> {
    let mut out = Vec::new();
    loop {
        let got = inbox.receive(100, idle).unwrap();
        let Some(last) = got.last() else {
            return out;
        };
        inbox.ack_up_to(last.tag).unwrap();
        out.extend(got);
    }
}

/// A consumer of the settings' queue on `broker`, applying to `replica`.
fn consumer<'a>(
    broker: &dyn cqrs::transport::Broker,
    registry: &'a cqrs::Registry,
    settings: &'a Settings,
    replica: &TestDb,
) -> Consumer<'a, Box<dyn Inbox>> {
    let queue = settings.queue.as_deref().expect("a queue");
    let inbox = broker.inbox(queue, 100, &settings.retry_delays).unwrap();
    Consumer::new(registry, settings, replica.connect(), inbox)
}

/// A replica queue for the `item` model on `engine`, the replica's database and its registry.
fn item_replica(engine: Engine) -> (TestTransport, TestDb, cqrs::Registry) {
    let t = TestTransport::new(engine);
    t.declare(&["item"]);
    (t, TestDb::new(Kind::Postgres), item_registry())
}

/// The replica's settings on `t` with its own database.
fn replica_settings(t: &TestTransport, db: &TestDb) -> Settings {
    Settings {
        database_url: Some(db.url.clone()),
        ..t.settings.clone()
    }
}

transports!(
    /// A declared queue gets its models' broadcasts and what is directed to it, nothing else;
    /// declaring again changes nothing; acked deliveries do not come back.
    fn a_queue_gets_its_broadcasts_and_directed_messages_only(engine: Engine) {
        let t = TestTransport::new(engine);
        t.declare(&["item"]);
        t.declare(&["item"]);
        let q = t.queue().to_string();
        let body = |id| ItemState::new(id, 0, at(0)).save().encode();
        assert_eq!(t.publish("item", &body(1), "m1"), Confirm::Delivered);
        t.publish("other", &body(2), "m2");
        assert_eq!(
            t.publish(&directed_key(&q, "item"), &body(3), "m3"),
            Confirm::Delivered
        );
        t.publish(&directed_key("elsewhere", "item"), &body(4), "m4");
        let broker = t.broker();
        let mut inbox = broker.inbox(&q, 100, &t.settings.retry_delays).unwrap();
        let mut got: Vec<(String, Option<String>)> =
            take_all(&mut *inbox, Duration::from_millis(500))
                .into_iter()
                .map(|d| (d.routing_key, d.message_id))
                .collect();
        got.sort();
        assert_eq!(
            got,
            [
                (directed_key(&q, "item"), Some("m3".to_string())),
                ("item".to_string(), Some("m1".to_string())),
            ]
        );
        drop(inbox);
        let mut again = broker.inbox(&q, 100, &t.settings.retry_delays).unwrap();
        assert!(
            again
                .receive(100, Duration::from_millis(300))
                .unwrap()
                .is_empty(),
            "acked deliveries came back"
        );
    }
);

transports!(
    /// 2,000 captured changes (creates, updates, deletes) on a PostgreSQL master go through the
    /// relay and two `consume` workers: the replica ends equal to the master, tombstones included,
    /// and the outbox empty.
    fn a_masters_changes_reach_the_replica_through_the_relay_and_two_workers(engine: Engine) {
        let t = TestTransport::new(engine);
        let registry = item_registry();
        t.declare(&["item"]);
        let master = TestDb::new(Kind::Postgres);
        let replica = TestDb::new(Kind::Postgres);
        let mut db = master.connect();
        for _ in 0..8 {
            atomic(&mut db, |tx| insert_m_items(tx, 200)).unwrap();
        }
        let ids: Vec<i64> = master_items(&mut db).keys().copied().collect();
        for chunk in ids.chunks(50).step_by(2) {
            atomic(&mut db, |tx| {
                tx.touch_many::<PlainItem>(chunk)?;
                let sql = format!(
                    "UPDATE m_items SET value = value + 1 WHERE id BETWEEN {} AND {}",
                    chunk[0],
                    chunk[chunk.len() - 1]
                );
                cqrs::db::SqlConn::exec(tx.conn(), &sql, vec![]).map(drop)
            })
            .unwrap();
        }
        atomic(&mut db, |tx| {
            tx.delete_many::<PlainItem>(&ids[..200]).map(drop)
        })
        .unwrap();
        assert_eq!(cqrs::outbox::pending(&mut db).unwrap(), 2_600);
        let settings = replica_settings(&t, &replica);
        let shutdown = Shutdown::new();
        let stats = std::thread::scope(|s| {
            let stop = StopOnDrop(&shutdown);
            let consumer =
                s.spawn(|| cqrs::service::consume(&registry, &settings, 2, &[], &shutdown));
            let mut relay = Relay::new(
                master.connect(),
                t.broker().publisher().unwrap(),
                settings.clone(),
            )
            .reconnect_with(&master.url);
            while relay.run_once().unwrap() > 0 {}
            assert_eq!(
                cqrs::outbox::pending(&mut db).unwrap(),
                0,
                "published rows are deleted"
            );
            let want = master_items(&mut db);
            let mut r = replica.connect();
            wait_until(Duration::from_secs(120), "the replica to converge", || {
                let got = items(&mut r);
                got.len() == want.len()
                    && got
                        .iter()
                        .all(|(k, v)| want.get(k).is_some_and(|w| w.3 == v.rev))
            });
            drop(stop);
            consumer.join().unwrap().unwrap()
        });
        let want: Vec<(i64, String, i64, i32, chrono::DateTime<chrono::Utc>)> =
            master_items(&mut db)
                .into_iter()
                .map(|(k, v)| (k, v.0, v.1, v.3, v.4))
                .collect();
        let got: Vec<(i64, String, i64, i32, chrono::DateTime<chrono::Utc>)> =
            items(&mut replica.connect())
                .into_iter()
                .map(|(k, v)| (k, v.name, v.value, v.rev, v.updated))
                .collect();
        assert_eq!(got.len(), 1_400);
        assert_eq!(got, want);
        assert_eq!(tombstones(&mut replica.connect(), "item").len(), 200);
        assert_eq!(stats.dead_lettered, 0, "{stats:?}");
    }
);

transports!(
    /// A message that fails to apply comes back after each delay with `retries` + 1, then is
    /// dead-lettered with its reason and kind, keeping its message id; the rest applies.
    fn apply_errors_are_retried_after_their_delays_then_dead_lettered(engine: Engine) {
        let (t, replica, registry) = item_replica(engine);
        let settings = replica_settings(&t, &replica);
        let mut bad = ItemState::new(2, 0, at(0)).save();
        bad.instance_data.remove("name");
        t.publish(
            "item",
            &ItemState::new(1, 0, at(0)).save().encode(),
            "good-1",
        );
        t.publish("item", &bad.encode(), "outbox-row-7");
        let published = Instant::now();
        let broker = t.broker();
        let mut c = consumer(&*broker, &registry, &settings, &replica);
        wait_until(
            Duration::from_secs(20),
            "the failing message to be dead-lettered",
            || {
                c.poll(Duration::from_millis(200)).unwrap();
                c.stats().dead_lettered > 0
            },
        );
        assert_eq!(c.stats().retried, 2);
        let waited = published.elapsed();
        assert!(
            waited >= settings.retry_delays.iter().sum::<Duration>(),
            "dead-lettered after {waited:?}"
        );
        assert_eq!(items(c.db()).keys().copied().collect::<Vec<_>>(), [1]);
        drop(c);
        let mut letters = broker.letters(t.queue()).unwrap();
        assert_eq!(letters.total(), 1);
        let letter = letters.next_letter().unwrap().expect("one dead letter");
        assert!(letters.next_letter().unwrap().is_none());
        assert_eq!(Message::decode(&letter.body).unwrap().retries, 2);
        assert_eq!(
            letter.message_id.as_deref(),
            Some("outbox-row-7"),
            "every copy keeps the id"
        );
        assert_eq!(
            letter.headers.get(HEADER_ERROR_KIND).map(String::as_str),
            Some("apply")
        );
        assert!(
            letter.headers[HEADER_ERROR].contains("no `name`"),
            "{:?}",
            letter.headers
        );
        assert_eq!(
            letter.routing_key,
            cqrs::transport::dead_letter_key(t.queue(), "item")
        );
    }
);

transports!(
    /// Every hostile body dead-letters alone with its kind; none stops the consumer or writes a
    /// row; the good message behind them applies and the queue is left empty.
    fn hostile_bodies_dead_letter_alone_and_the_next_good_message_applies(engine: Engine) {
        let (t, replica, registry) = item_replica(engine);
        let settings = Settings {
            max_retries: 0,
            max_body_bytes: 100_000,
            ..replica_settings(&t, &replica)
        };
        let cases = hostile_bodies();
        for (i, (_, body, _)) in cases.iter().enumerate() {
            t.publish("item", body, &format!("hostile-{i}"));
        }
        t.publish("item", &ItemState::new(1, 0, at(0)).save().encode(), "good");
        let broker = t.broker();
        let mut c = consumer(&*broker, &registry, &settings, &replica);
        wait_until(
            Duration::from_secs(30),
            "every hostile body dead-lettered",
            || {
                c.poll(Duration::from_millis(200))
                    .expect("no hostile body stops the consumer");
                c.stats().dead_lettered >= cases.len() && !items(c.db()).is_empty()
            },
        );
        assert_eq!(items(c.db()).keys().copied().collect::<Vec<_>>(), [1]);
        assert_eq!(
            c.poll(Duration::from_millis(300)).unwrap(),
            0,
            "the queue is empty"
        );
        drop(c);
        let mut letters = broker.letters(t.queue()).unwrap();
        let mut kinds = Vec::new();
        while let Some(l) = letters.next_letter().unwrap() {
            kinds.push(
                l.headers
                    .get(HEADER_ERROR_KIND)
                    .cloned()
                    .unwrap_or_default(),
            );
        }
        let mut want: Vec<String> = cases.iter().map(|c| c.2.to_string()).collect();
        kinds.sort();
        want.sort();
        assert_eq!(kinds, want);
    }
);

transports!(
    /// `dead-letters retry` sends a letter back to its queue, where it applies once the cause is
    /// gone, and removes it; `purge` empties what is left.
    fn dead_letters_are_retried_into_the_queue_and_purged(engine: Engine) {
        use cqrs::ops::dead_letters::{Action, Filter, run};
        let (t, replica, registry) = item_replica(engine);
        let settings = Settings {
            max_retries: 0,
            ..replica_settings(&t, &replica)
        };
        let mut expired = ItemState::new(2, 0, at(0)).save();
        expired.expires = cqrs::message::Expires::At(at(0));
        let mut ghost = ItemState::new(3, 0, at(0)).save();
        ghost.cqrs_id = "ghost".into();
        t.publish("item", &expired.encode(), "expired");
        t.publish("item", &ghost.encode(), "ghost");
        let broker = t.broker();
        let consume = || {
            let mut c = consumer(&*broker, &registry, &settings, &replica);
            c.drain(Duration::from_millis(500)).unwrap();
            c.stats()
        };
        assert_eq!(consume().dead_lettered, 2);
        let r = run(
            &mut *broker.letters(t.queue()).unwrap(),
            t.queue(),
            Action::Retry,
            &Filter::default(),
            &mut Vec::new(),
        )
        .unwrap();
        assert_eq!(
            (r.total, r.done, r.left),
            (2, 1, 1),
            "the ghost's letter has nobody to go to"
        );
        consume();
        assert_eq!(
            items(&mut replica.connect())
                .keys()
                .copied()
                .collect::<Vec<_>>(),
            [2]
        );
        let r = run(
            &mut *broker.letters(t.queue()).unwrap(),
            t.queue(),
            Action::Purge,
            &Filter::default(),
            &mut Vec::new(),
        )
        .unwrap();
        assert_eq!(r.total, 1);
        assert_eq!(broker.letters(t.queue()).unwrap().total(), 0);
    }
);

transports!(
    /// A directed SYNC that fails once keeps `cqrs-directed` on its retry copy: it still downgrades
    /// the row when it applies.
    fn a_directed_sync_keeps_its_mark_through_a_retry(engine: Engine) {
        let (t, replica, registry) = item_replica(engine);
        let settings = Settings {
            max_retries: 1,
            ..replica_settings(&t, &replica)
        };
        cqrs::Replica::apply(
            &cqrs::TableReplica::new(item_spec()),
            &mut replica.connect(),
            &[&cqrs::Change::new(ItemState::new(1, 5, at(50)).save())],
        )
        .unwrap();
        // A Django master's directed SYNC (only the routing key says so) with a value the CHECK refuses.
        let mut sync = ItemState::new(1, 2, at(20));
        sync.value = i64::MIN;
        t.publish(
            &directed_key(t.queue(), "item"),
            &sync.sync().encode(),
            "sync-1",
        );
        let broker = t.broker();
        let mut c = consumer(&*broker, &registry, &settings, &replica);
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
);

transports!(
    /// While the replica's database refuses connections, the batch is held: nothing is retried or
    /// dead-lettered, and every message applies once the database is back.
    fn a_database_outage_spends_no_retries(engine: Engine) {
        let (t, replica, registry) = item_replica(engine);
        let settings = replica_settings(&t, &replica);
        let db_name = replica.url.rsplit('/').next().unwrap().to_string();
        let admin = || cqrs::Db::connect(&pg_server_url()).unwrap();
        let shutdown = Shutdown::new();
        let stats = std::thread::scope(|s| {
            let stop = StopOnDrop(&shutdown);
            let consumer =
                s.spawn(|| cqrs::service::consume(&registry, &settings, 1, &[], &shutdown));
            t.publish(
                "item",
                &ItemState::new(100, 0, at(0)).save().encode(),
                "first",
            );
            wait_until(Duration::from_secs(20), "the worker to consume", || {
                items(&mut replica.connect()).len() == 1
            });
            admin()
                .batch_execute(&format!("ALTER DATABASE {db_name} ALLOW_CONNECTIONS false"))
                .unwrap();
            admin()
                .batch_execute(&format!(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{db_name}'"
                ))
                .unwrap();
            for id in 0..50 {
                t.publish(
                    "item",
                    &ItemState::new(id, 0, at(id)).save().encode(),
                    &format!("m{id}"),
                );
            }
            // Long enough for several redo pauses (0.1, 0.2, 0.4 ... s) and failed reconnects.
            std::thread::sleep(Duration::from_secs(3));
            admin()
                .batch_execute(&format!("ALTER DATABASE {db_name} ALLOW_CONNECTIONS true"))
                .unwrap();
            wait_until(
                Duration::from_secs(30),
                "all rows to apply after the outage",
                || items(&mut replica.connect()).len() == 51,
            );
            drop(stop);
            consumer.join().unwrap().unwrap()
        });
        assert_eq!((stats.retried, stats.dead_lettered), (0, 0), "{stats:?}");
        assert!(stats.transient_redos > 0, "{stats:?}");
        assert_eq!(t.broker().letters(t.queue()).unwrap().total(), 0);
    }
);

transports!(
    /// Fuzzed bodies (arbitrary JSON shaped like messages, and arbitrary bytes) published through
    /// the broker: none stops the consumer or comes back for ever; each is applied, skipped or
    /// dead-lettered once, and a good message behind them applies.
    fn fuzzed_bodies_are_each_settled_once_and_the_next_good_message_applies(engine: Engine) {
        use proptest::prelude::*;
        use proptest::test_runner::{Config, TestRunner};
        let bodies = prop::collection::vec(
            prop_oneof![
                crate::fuzz::json().prop_map(|v| serde_json::to_vec(&v).unwrap()),
                prop::collection::vec(any::<u8>(), 0..200),
            ],
            20..40,
        );
        let mut runner = TestRunner::new(Config {
            cases: 3,
            ..Config::default()
        });
        runner
            .run(&bodies, |bodies| {
                let (t, replica, registry) = item_replica(engine);
                let settings = Settings {
                    max_retries: 0,
                    ..replica_settings(&t, &replica)
                };
                for (i, b) in bodies.iter().enumerate() {
                    t.publish("item", b, &format!("fuzz-{i}"));
                }
                t.publish(
                    "item",
                    &ItemState::new(1_000_001, 0, at(0)).save().encode(),
                    "good",
                );
                let broker = t.broker();
                let mut c = consumer(&*broker, &registry, &settings, &replica);
                c.drain(Duration::from_millis(700))
                    .expect("no body stops the consumer");
                let s = c.stats();
                prop_assert_eq!(s.received, bodies.len() + 1, "each once: {:?}", s);
                prop_assert!(items(c.db()).contains_key(&1_000_001));
                prop_assert_eq!(c.poll(Duration::from_millis(300)).unwrap(), 0);
                Ok(())
            })
            .unwrap();
    }
);
