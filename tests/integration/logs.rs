//! Every log line about one message names it: `cqrs_id`, `pk`, `revision` and `message_id` (the
//! master's outbox row, carried by retry and dead-letter copies), read from the JSON lines a
//! relay and a consumer write while they meet each kind of per-message event.

use std::time::Duration;

use cqrs::model::ReplicaHooks;
use cqrs::outbox::{NewRow, enqueue};
use cqrs::transport::memory::MemoryBroker;
use cqrs::transport::{HEADER_ERROR_KIND, dead_letter_queue};
use cqrs::{Consumer, Message, Registry, Relay, Settings, SignalType, TableReplica};
use cqrs_tests::*;
use serde_json::json;

fn row(m: &Message, routing_key: &str) -> NewRow {
    NewRow {
        message_id: uuid::Uuid::new_v4(),
        cqrs_id: m.cqrs_id.clone(),
        signal_type: m.signal_type,
        pk: m.instance_pk.to_string(),
        routing_key: routing_key.into(),
        body: String::from_utf8(m.encode()).unwrap(),
    }
}

/// The per-message lines this scenario must produce (a part of each line's message).
const EXPECTED: &[&str] = &[
    "no queue is bound for this routing key",
    "apply failed, retrying",
    "apply failed after the last retry, dead-lettering",
    "dead-lettering at once",
    "revision gap",
    "directed SYNC downgrades the replica row",
    "broadcast SYNC ignored",
];

both!(
    fn every_line_about_a_message_names_it(kind: Kind) {
        let (master, replica) = (TestDb::new(kind), TestDb::new(kind));
        let mut poison = ItemState::new(2, 0, at(2));
        poison.value = i64::MIN; // the replica's CHECK refuses it
        let mut sync = ItemState::new(3, 1, at(31)).save();
        sync.signal_type = SignalType::Sync;
        let mut unknown = ItemState::new(9, 4, at(9)).save();
        unknown.cqrs_id = "gone".into();
        let mut broadcast = ItemState::new(5, 2, at(5)).save();
        (broadcast.cqrs_id, broadcast.signal_type) = ("wide".into(), SignalType::Sync);
        let rows = [
            row(&ItemState::new(1, 0, at(1)).save(), "item"),
            row(&poison.save(), "item"),
            row(&ItemState::new(3, 0, at(30)).save(), "item"),
            row(&ItemState::new(3, 5, at(35)).save(), "item"),
            row(&sync, "cqrs.rq.item"),
            row(&unknown, "cqrs.rq.gone"),
            row(&ItemState::new(8, 0, at(8)).save(), "nobody_listens"),
            row(&broadcast, "wide"),
        ];
        let ids: Vec<String> = rows.iter().map(|r| r.message_id.to_string()).collect();
        enqueue(&mut master.connect(), &rows).unwrap();
        let broker = MemoryBroker::new();
        broker.declare_replica_queue("rq", &["item", "gone", "wide"]);
        let settings = Settings {
            max_retries: 1,
            retry_delays: vec![Duration::from_millis(10)],
            ..Settings::default()
        };
        let only_direct = ReplicaHooks {
            only_direct_syncs: true,
            ..ReplicaHooks::default()
        };
        let registry = Registry::new()
            .with_replica(TableReplica::new(item_spec()))
            .with_replica(TableReplica::new(wide_spec()).with_hooks(only_direct));

        let ((), lines) = capture_json_logs(|| {
            let mut relay = Relay::new(master.connect(), broker.clone(), settings.clone());
            assert_eq!(relay.run_once().unwrap(), rows.len());
            let mut c = Consumer::new(&registry, &settings, replica.connect(), broker.inbox("rq"));
            c.drain(Duration::from_millis(300)).unwrap();
        });

        // What happened, from the replica and the broker.
        let dead = broker.peek(&dead_letter_queue("rq"));
        let kinds: Vec<&str> = dead
            .iter()
            .map(|d| d.headers[HEADER_ERROR_KIND].as_str())
            .collect();
        assert_eq!(kinds, ["unknown-model", "apply"]);
        assert_eq!(
            dead.iter()
                .map(|d| d.message_id.clone().unwrap())
                .collect::<Vec<_>>(),
            [ids[5].clone(), ids[1].clone()],
            "dead letters keep their message ids, the retried one too"
        );
        let got = items(&mut replica.connect());
        assert_eq!(got.keys().copied().collect::<Vec<_>>(), [1, 3]);
        assert_eq!(got[&3].rev, 1, "the directed SYNC downgraded row 3");

        for want in EXPECTED {
            let line = log_line(&lines, want)
                .unwrap_or_else(|| panic!("no line {want:?} in:\n{lines:#?}"));
            for field in ["cqrs_id", "pk", "revision", "message_id"] {
                assert!(
                    !line["fields"][field].is_null(),
                    "{want:?} has no {field}: {line}"
                );
            }
            let id = line["fields"]["message_id"].as_str().unwrap();
            assert!(
                ids.iter().any(|i| i == id),
                "{want:?}: {id} is no outbox row's"
            );
        }
        // And no line names a key without naming the rest.
        for line in lines.iter().filter(|l| !l["fields"]["pk"].is_null()) {
            for field in ["cqrs_id", "revision", "message_id"] {
                assert!(!line["fields"][field].is_null(), "no {field}: {line}");
            }
        }
        let unknown = lines
            .iter()
            .find(|l| {
                l["fields"]["message"]
                    .as_str()
                    .unwrap_or("")
                    .contains("at once")
            })
            .unwrap();
        assert_eq!(
            (
                &unknown["fields"]["cqrs_id"],
                &unknown["fields"]["pk"],
                &unknown["fields"]["revision"]
            ),
            (&json!("gone"), &json!("9"), &json!(4))
        );
    }
);
