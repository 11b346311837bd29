//! The consumer engine over the memory transport: batching, outcome classes, splitting, acks,
//! competing consumers.

use std::collections::BTreeMap;
use std::time::Duration;

use cqrs::transport::memory::MemoryBroker;
use cqrs::transport::{HEADER_ERROR, HEADER_ERROR_KIND, Headers, dead_letter_queue};
use cqrs::{Consumer, Message, Registry, Settings, TableReplica};
use cqrs_tests::*;
use serde_json::json;

fn registry() -> Registry {
    Registry::new().with_replica(TableReplica::new(item_spec()))
}

fn settings(batch: usize) -> Settings {
    Settings {
        batch_size: batch,
        max_retries: 2,
        retry_delays: vec![Duration::from_millis(20)],
        ..Settings::default()
    }
}

fn publish(broker: &MemoryBroker, m: &Message) {
    broker.publish(&m.cqrs_id, m.encode(), Headers::new());
}

both!(
    fn two_consumers_on_one_queue_converge(kind: Kind) {
        let t = TestDb::new(kind);
        let broker = MemoryBroker::new();
        broker.declare_replica_queue("rq", &["item"]);
        // 30 keys, revisions 0..=20 each, every state twice, interleaved so both workers see each key.
        let mut want = BTreeMap::new();
        for rev in 0..=20 {
            for id in 0..30i64 {
                let s = ItemState::new(id, rev, at(i64::from(rev) * 100 + id));
                publish(&broker, &s.save());
                want.insert(id, s);
            }
            for id in (0..30i64).rev() {
                publish(
                    &broker,
                    &ItemState::new(id, rev, at(i64::from(rev) * 100 + id)).save(),
                );
            }
        }
        for id in 0..5i64 {
            publish(&broker, &item_delete(id, 21, at(5000 + id)));
            want.remove(&id);
        }
        let (registry, settings) = (registry(), settings(17));
        let stats = std::thread::scope(|s| {
            let workers: Vec<_> = (0..2)
                .map(|_| {
                    let (registry, settings, broker, t) = (&registry, &settings, &broker, &t);
                    s.spawn(move || {
                        let mut c =
                            Consumer::new(registry, settings, t.connect(), broker.inbox("rq"));
                        c.drain(Duration::from_millis(300)).unwrap();
                        c.stats()
                    })
                })
                .collect();
            workers
                .into_iter()
                .map(|w| w.join().unwrap())
                .collect::<Vec<_>>()
        });
        assert!(
            stats.iter().all(|s| s.batches > 0),
            "both workers took batches: {stats:?}"
        );
        assert_eq!(stats.iter().map(|s| s.received).sum::<usize>(), 21 * 60 + 5);
        assert_eq!(broker.queue_len("rq"), 0, "everything acked");
        let mut db = t.connect();
        let got: BTreeMap<i64, (i32, String)> = items(&mut db)
            .into_iter()
            .map(|(k, r)| (k, (r.rev, r.name)))
            .collect();
        let want: BTreeMap<i64, (i32, String)> = want
            .into_iter()
            .map(|(k, s)| (k, (s.rev, s.name)))
            .collect();
        assert_eq!(got, want);
        assert_eq!(tombstones(&mut db, "item").len(), 5);
    }
);

both!(
    fn poison_message_is_isolated_and_takes_the_retry_path(kind: Kind) {
        let t = TestDb::new(kind);
        let broker = MemoryBroker::new();
        broker.declare_replica_queue("rq", &["item"]);
        for id in 0..100i64 {
            let mut s = ItemState::new(id, 0, at(id));
            if id == 42 {
                s.value = i64::MIN; // violates the CHECK constraint: the statement fails as a whole
            }
            publish(&broker, &s.save());
        }
        let (registry, settings) = (registry(), settings(100));
        let mut c = Consumer::new(&registry, &settings, t.connect(), broker.inbox("rq"));
        assert_eq!(c.poll(Duration::ZERO).unwrap(), 100, "one batch of 100");
        let stats = c.stats();
        assert_eq!(stats.apply.applied, 99);
        assert_eq!(stats.retried, 1);
        assert!(stats.splits >= 1);
        assert_eq!(broker.queue_len("rq"), 0, "all 100 acked");
        assert_eq!(
            broker.delayed_len(),
            1,
            "the bad one waits out its retry delay"
        );
        let rows = items(c.db());
        assert_eq!(rows.len(), 99);
        assert!(!rows.contains_key(&42));

        // Its retries fail the same way; after max_retries (2) it is dead-lettered with the reason.
        c.drain(Duration::from_millis(300)).unwrap();
        let dead = broker.peek(&dead_letter_queue("rq"));
        assert_eq!(dead.len(), 1);
        assert_eq!(dead[0].routing_key, "cqrs.dead_letter_rq.item");
        assert_eq!(dead[0].headers[HEADER_ERROR_KIND], "apply");
        assert!(
            dead[0].headers[HEADER_ERROR].contains("check")
                || dead[0].headers[HEADER_ERROR].contains("CHECK"),
            "{:?}",
            dead[0].headers
        );
        let body = Message::decode(&dead[0].body).unwrap();
        assert_eq!((body.instance_pk.clone(), body.retries), (json!(42), 2));
        assert_eq!(c.stats().retried, 2);
    }
);

both!(
    fn envelope_failures_are_dead_lettered_at_once_and_the_rest_applies(kind: Kind) {
        let t = TestDb::new(kind);
        let broker = MemoryBroker::new();
        broker.declare_replica_queue("rq", &["item", "ghost"]);
        let good = ItemState::new(1, 0, at(0)).save();
        publish(&broker, &good);
        broker.publish("item", b"{not json".to_vec(), Headers::new());
        broker.publish(
            "item",
            json!({"signal_type":"SAVE","instance_data":{},"instance_pk":1})
                .to_string()
                .into_bytes(),
            Headers::new(),
        );
        let mut ghost = ItemState::new(2, 0, at(0)).save();
        ghost.cqrs_id = "ghost".into();
        broker.publish("ghost", ghost.encode(), Headers::new());
        let mut expired = ItemState::new(3, 0, at(0)).save();
        expired.expires = cqrs::message::Expires::At(at(0));
        publish(&broker, &expired);
        let mut big = ItemState::new(4, 0, at(0));
        big.name = "x".repeat(2048);
        publish(&broker, &big.save());
        publish(&broker, &ItemState::new(5, 0, at(0)).save());

        let registry = registry();
        let settings = Settings {
            max_body_bytes: 1024,
            ..settings(50)
        };
        let mut c = Consumer::new(&registry, &settings, t.connect(), broker.inbox("rq"));
        c.drain(Duration::from_millis(100)).unwrap();
        assert_eq!(items(c.db()).keys().copied().collect::<Vec<_>>(), [1, 5]);
        let kinds: Vec<(String, String)> = broker
            .peek(&dead_letter_queue("rq"))
            .into_iter()
            .map(|m| (m.headers[HEADER_ERROR_KIND].clone(), m.routing_key))
            .collect();
        assert_eq!(
            kinds,
            [
                ("malformed".to_string(), "dead_letter_rq".to_string()),
                ("malformed".to_string(), "dead_letter_rq".to_string()),
                (
                    "unknown-model".to_string(),
                    "cqrs.dead_letter_rq.ghost".to_string()
                ),
                (
                    "expired".to_string(),
                    "cqrs.dead_letter_rq.item".to_string()
                ),
                (
                    "too-large".to_string(),
                    "cqrs.dead_letter_rq.item".to_string()
                ),
            ]
        );
        assert_eq!(broker.queue_len("rq"), 0);
        assert_eq!(c.stats().retried, 0);
    }
);

both!(
    fn django_directed_sync_by_routing_key_downgrades(kind: Kind) {
        let t = TestDb::new(kind);
        let broker = MemoryBroker::new();
        broker.declare_replica_queue("rq", &["item"]);
        publish(&broker, &ItemState::new(1, 5, at(50)).save());
        // A Django master marks nothing but the routing key: cqrs.<queue>.<cqrs_id>, retries 0.
        broker.publish(
            "cqrs.rq.item",
            ItemState::new(1, 2, at(20)).sync().encode(),
            Headers::new(),
        );
        // The same SYNC broadcast does not downgrade.
        broker.publish(
            "item",
            ItemState::new(2, 9, at(90)).save().encode(),
            Headers::new(),
        );
        broker.publish(
            "item",
            ItemState::new(2, 3, at(30)).sync().encode(),
            Headers::new(),
        );
        let (registry, settings) = (registry(), settings(1));
        let mut c = Consumer::new(&registry, &settings, t.connect(), broker.inbox("rq"));
        c.drain(Duration::from_millis(100)).unwrap();
        let rows = items(c.db());
        assert_eq!((rows[&1].rev, rows[&2].rev), (2, 9));
    }
);

both!(
    /// django-cqrs's `CQRS_ONLY_DIRECT_SYNCS`: a broadcast SYNC is acknowledged and ignored, a
    /// SYNC to this queue (our header, or Django's routing key) and a SAVE are applied.
    fn a_replica_of_only_direct_syncs_ignores_broadcast_syncs(kind: Kind) {
        let t = TestDb::new(kind);
        let broker = MemoryBroker::new();
        broker.declare_replica_queue("rq", &["item"]);
        publish(&broker, &ItemState::new(1, 0, at(0)).save());
        broker.publish(
            "item",
            ItemState::new(2, 4, at(40)).sync().encode(),
            Headers::new(),
        );
        broker.publish(
            "cqrs.rq.item",
            ItemState::new(3, 5, at(50)).sync().encode(),
            Headers::new(),
        );
        let mut directed = Headers::new();
        directed.insert(cqrs::transport::HEADER_DIRECTED.into(), "true".into());
        broker.publish(
            "item",
            ItemState::new(4, 6, at(60)).sync().encode(),
            directed,
        );
        let registry = Registry::new().with_replica(TableReplica::new(item_spec()).with_hooks(
            cqrs::ReplicaHooks {
                only_direct_syncs: true,
                ..Default::default()
            },
        ));
        let settings = settings(50);
        let mut c = Consumer::new(&registry, &settings, t.connect(), broker.inbox("rq"));
        c.drain(Duration::from_millis(100)).unwrap();
        assert_eq!(items(c.db()).keys().copied().collect::<Vec<_>>(), [1, 3, 4]);
        assert_eq!(
            broker.queue_len("rq"),
            0,
            "the ignored SYNC is acknowledged"
        );
        assert_eq!(broker.queue_len(&dead_letter_queue("rq")), 0);
        assert_eq!((c.stats().apply.applied, c.stats().apply.skipped), (3, 1));
    }
);

/// A replica that is not a table: an in-memory map keyed by pk, revision-guarded.
#[derive(Default)]
struct MapReplica(std::sync::Mutex<BTreeMap<String, (i32, String)>>);

impl cqrs::Replica for MapReplica {
    fn cqrs_id(&self) -> &str {
        "item"
    }
    fn apply(
        &self,
        _db: &mut cqrs::Db,
        changes: &[&cqrs::Change],
    ) -> cqrs::Result<cqrs::BatchReport> {
        let mut map = self.0.lock().unwrap();
        let mut report = cqrs::BatchReport::default();
        for c in changes {
            let m = &c.message;
            let rev = match m.revision() {
                Ok(r) => r,
                Err(e) => {
                    report.outcomes.push(cqrs::Outcome::Failed(e));
                    continue;
                }
            };
            let key = m.instance_pk.to_string();
            let name = m
                .instance_data
                .get("name")
                .and_then(|v| v.as_str())
                .unwrap_or_default()
                .to_string();
            match map.get(&key) {
                Some((have, _)) if *have >= rev => {
                    report.outcomes.push(cqrs::Outcome::Skipped("stale"))
                }
                _ => {
                    map.insert(key, (rev, name));
                    report.outcomes.push(cqrs::Outcome::Applied);
                }
            }
        }
        Ok(report)
    }
}

#[test]
fn a_replica_that_is_not_a_table_consumes_too() {
    let t = TestDb::empty(Kind::Sqlite);
    let broker = MemoryBroker::new();
    broker.declare_replica_queue("mq", &["item"]);
    for rev in [2, 0, 1, 2] {
        publish(&broker, &ItemState::new(9, rev, at(i64::from(rev))).save());
    }
    let map = std::sync::Arc::new(MapReplica::default());
    struct Shared(std::sync::Arc<MapReplica>);
    impl cqrs::Replica for Shared {
        fn cqrs_id(&self) -> &str {
            "item"
        }
        fn apply(&self, db: &mut cqrs::Db, c: &[&cqrs::Change]) -> cqrs::Result<cqrs::BatchReport> {
            self.0.apply(db, c)
        }
    }
    let registry = Registry::new().with_replica(Shared(map.clone()));
    let settings = settings(2);
    let mut c = Consumer::new(&registry, &settings, t.connect(), broker.inbox("mq"));
    c.drain(Duration::from_millis(50)).unwrap();
    assert_eq!(
        map.0.lock().unwrap().get("9"),
        Some(&(2, "n9-2".to_string()))
    );
    assert_eq!(broker.queue_len("mq"), 0);
}

/// Fails its first `n` calls with a transient error, then applies through the table engine.
struct Flaky {
    inner: TableReplica,
    failures_left: std::sync::atomic::AtomicUsize,
}

impl cqrs::Replica for Flaky {
    fn cqrs_id(&self) -> &str {
        "item"
    }
    fn apply(&self, db: &mut cqrs::Db, c: &[&cqrs::Change]) -> cqrs::Result<cqrs::BatchReport> {
        use std::sync::atomic::Ordering;
        if self
            .failures_left
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err(cqrs::Error::new(
                cqrs::ErrorKind::Transient,
                "deadlock detected (injected)",
            ));
        }
        self.inner.apply(db, c)
    }
}

both!(
    fn transient_failures_are_redone_without_spending_a_retry(kind: Kind) {
        let t = TestDb::new(kind);
        let broker = MemoryBroker::new();
        broker.declare_replica_queue("rq", &["item"]);
        for id in 0..10i64 {
            publish(&broker, &ItemState::new(id, 0, at(id)).save());
        }
        let registry = Registry::new().with_replica(Flaky {
            inner: TableReplica::new(item_spec()),
            failures_left: 3.into(),
        });
        let settings = settings(10);
        let mut c = Consumer::new(&registry, &settings, t.connect(), broker.inbox("rq"));
        assert_eq!(c.poll(Duration::ZERO).unwrap(), 10);
        let stats = c.stats();
        assert_eq!(stats.transient_redos, 3);
        assert_eq!(
            (stats.retried, stats.dead_lettered, stats.splits),
            (0, 0, 0)
        );
        assert_eq!(
            broker.delayed_len()
                + broker.queue_len("rq")
                + broker.queue_len(&dead_letter_queue("rq")),
            0
        );
        assert_eq!(items(c.db()).len(), 10);
    }
);
