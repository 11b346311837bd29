//! Capture on the master (`#[derive(Master)]`, `atomic`, `Tx`), the relay, and master -> replica
//! end to end through the memory transport.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use cqrs::db::SqlConn;
use cqrs::transport::memory::MemoryBroker;
use cqrs::{
    Consumer, Db, Error, MasterModel, Message, Registry, Relay, Settings, SignalType, Tx, atomic,
};
use cqrs_tests::*;
use serde_json::{Value, json};

diesel::table! {
    m_items (id) {
        id -> BigInt,
        name -> Text,
        value -> BigInt,
        updated -> Timestamptz,
        secret -> Text,
        owner_id -> Nullable<BigInt>,
        cqrs_revision -> Integer,
        cqrs_updated -> Timestamptz,
    }
}

/// The master model: `owner_id` goes on the wire as `owner` (a Django FK), `secret` never leaves.
#[allow(dead_code)]
#[derive(cqrs::Master)]
#[diesel(table_name = m_items)]
#[cqrs(id = "item", filter = "crate::capture::not_hidden")]
struct MItem {
    id: i64,
    name: String,
    #[cqrs(track)]
    value: i64,
    updated: DateTime<Utc>,
    #[cqrs(skip)]
    secret: String,
    #[cqrs(rename = "owner", track)]
    owner_id: Option<i64>,
    cqrs_revision: i32,
    cqrs_updated: DateTime<Utc>,
}

/// The same table captured by PostgreSQL triggers (`capture = "trigger"`: no hooks).
#[allow(dead_code)]
#[derive(cqrs::Master)]
#[diesel(table_name = m_items)]
#[cqrs(id = "item", capture = "trigger")]
struct MItemByTrigger {
    id: i64,
    name: String,
    #[cqrs(track)]
    value: i64,
    updated: DateTime<Utc>,
    #[cqrs(skip)]
    secret: String,
    #[cqrs(rename = "owner", track)]
    owner_id: Option<i64>,
    cqrs_revision: i32,
    cqrs_updated: DateTime<Utc>,
}

/// A master of `m_items` the capture rule tests run with, in each capture mode.
trait RuleModel: MasterModel {
    /// True when the table's triggers capture.
    const BY_TRIGGER: bool = false;
    /// Make the test database ready for this mode.
    fn prepare(_db: &mut Db) {}
}

impl RuleModel for MItem {}

impl RuleModel for MItemByTrigger {
    const BY_TRIGGER: bool = true;
    fn prepare(db: &mut Db) {
        cqrs::capture::triggers::install(db, &Self::master_spec()).unwrap();
    }
}

/// A capture rule test, run captured by atomic on both backends and by triggers on PostgreSQL:
/// `name::postgres`, `name::sqlite`, `name::postgres_by_trigger`.
macro_rules! modes {
    ($(#[$meta:meta])* fn $name:ident<M>($kind:ident: Kind) $body:block) => {
        $(#[$meta])*
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            fn run<M: RuleModel>($kind: Kind) $body
            #[test]
            fn postgres() { run::<MItem>(Kind::Postgres) }
            #[test]
            fn sqlite() { run::<MItem>(Kind::Sqlite) }
            #[test]
            fn postgres_by_trigger() { run::<MItemByTrigger>(Kind::Postgres) }
        }
    };
}

/// is_sync_instance: rows named "hidden" are not sent.
pub fn not_hidden(data: &serde_json::Map<String, Value>) -> bool {
    data.get("name") != Some(&json!("hidden"))
}

fn insert<M: MasterModel>(
    tx: &mut Tx<'_, Db>,
    name: &str,
    value: i64,
    owner: Option<i64>,
) -> cqrs::Result<i64> {
    tx.create_with::<M, i64, Error>(|c| {
        let sql = sql_for(c, "INSERT INTO m_items (name, value, updated, secret, owner_id) VALUES ($1, $2, $3, 'sssh', $4) RETURNING CAST(id AS TEXT) AS j");
        let owner = owner.map_or(cqrs::value::SqlValue::Null(cqrs::value::ColumnType::BigInt), cqrs::value::SqlValue::BigInt);
        let rows = c.load_text(&sql, vec![name.into_sql(), cqrs::value::SqlValue::BigInt(value), cqrs::value::SqlValue::Timestamptz(at(value)), owner])?;
        Ok(rows[0].parse().unwrap())
    })
}

fn set_value<M: MasterModel>(tx: &mut Tx<'_, Db>, id: i64, value: i64) -> cqrs::Result<usize> {
    tx.update_with::<M, usize, Error>(&id, |c| {
        let sql = sql_for(c, "UPDATE m_items SET value = $1 WHERE id = $2");
        c.exec(
            &sql,
            vec![
                cqrs::value::SqlValue::BigInt(value),
                cqrs::value::SqlValue::BigInt(id),
            ],
        )
    })
}

trait IntoSql {
    fn into_sql(self) -> cqrs::value::SqlValue;
}
impl IntoSql for &str {
    fn into_sql(self) -> cqrs::value::SqlValue {
        cqrs::value::SqlValue::Text(self.to_string())
    }
}

fn revision(db: &mut Db, id: i64) -> i32 {
    master_items(db)[&id].3
}

modes!(
    fn create_sends_one_save_at_revision_0<M>(kind: Kind) {
        let t = TestDb::new(kind);
        let mut db = t.connect();
        M::prepare(&mut db);
        let id = atomic(&mut db, |tx| insert::<M>(tx, "widget", 42, Some(7))).unwrap();
        let msgs = outbox_messages(&mut db);
        assert_eq!(msgs.len(), 1);
        let m = &msgs[0];
        assert_eq!(
            (m.signal_type, m.revision().unwrap(), m.instance_pk.clone()),
            (SignalType::Save, 0, json!(id))
        );
        assert_eq!(m.instance_data["owner"], json!(7), "renamed FK");
        assert!(
            !m.instance_data.contains_key("secret"),
            "skipped field never leaves"
        );
        assert_eq!(
            m.previous_data,
            Some(serde_json::from_value(json!({"value": null, "owner": null})).unwrap())
        );
        assert_eq!(m.updated().unwrap(), master_items(&mut db)[&id].4);
    }
);

both!(
    fn a_created_key_that_names_no_row_fails_the_commit(kind: Kind) {
        let t = TestDb::new(kind);
        let mut db = t.connect();
        let err = atomic(&mut db, |tx| {
            insert::<MItem>(tx, "kept?", 1, None)?;
            tx.created::<MItem>(&987_654_i64)
        })
        .unwrap_err();
        assert!(
            err.to_string()
                .contains("2 row(s) created, but only 1 exist"),
            "{err}"
        );
        assert!(
            master_items(&mut db).is_empty(),
            "the whole transaction rolled back"
        );
        assert!(outbox_messages(&mut db).is_empty());
        // A created row updated and synced in its own transaction: one SAVE at revision 0 with
        // the final values, and the SYNC of the same state.
        let id = atomic(&mut db, |tx| {
            let id = insert::<MItem>(tx, "a", 1, None)?;
            set_value::<MItem>(tx, id, 5)?;
            tx.sync::<MItem>(&id, None)?;
            Ok(id)
        })
        .unwrap();
        let msgs = outbox_messages(&mut db);
        assert_eq!(msgs.len(), 2);
        for m in &msgs {
            assert_eq!(
                (m.revision().unwrap(), m.instance_data["value"].clone()),
                (0, json!(5))
            );
            assert_eq!(m.updated().unwrap(), master_items(&mut db)[&id].4);
        }
    }
);

modes!(
    fn updates_in_separate_transactions_bump_once_each<M>(kind: Kind) {
        let t = TestDb::new(kind);
        let mut db = t.connect();
        M::prepare(&mut db);
        let id = atomic(&mut db, |tx| insert::<M>(tx, "a", 1, None)).unwrap();
        atomic(&mut db, |tx| set_value::<M>(tx, id, 2)).unwrap();
        atomic(&mut db, |tx| {
            set_value::<M>(tx, id, 3)?;
            set_value::<M>(tx, id, 4) // same row twice in one transaction: one bump, one message
        })
        .unwrap();
        let msgs = outbox_messages(&mut db);
        assert_eq!(
            msgs.iter()
                .map(|m| m.revision().unwrap())
                .collect::<Vec<_>>(),
            [0, 1, 2]
        );
        assert!(
            msgs[0].updated().unwrap() < msgs[1].updated().unwrap()
                && msgs[1].updated().unwrap() < msgs[2].updated().unwrap()
        );
        assert_eq!(msgs[2].instance_data["value"], json!(4), "final state");
        assert_eq!(
            msgs[1].previous_data,
            Some(serde_json::from_value(json!({"value": 1})).unwrap()),
            "old values of changed tracked fields"
        );
        assert_eq!(
            msgs[2].previous_data,
            Some(serde_json::from_value(json!({"value": 2})).unwrap())
        );
        assert_eq!(revision(&mut db, id), 2);
    }
);

modes!(
    fn rollback_writes_no_outbox_row<M>(kind: Kind) {
        let t = TestDb::new(kind);
        let mut db = t.connect();
        M::prepare(&mut db);
        let r: cqrs::Result<()> = atomic(&mut db, |tx| {
            insert::<M>(tx, "a", 1, None)?;
            Err(Error::apply("the application changed its mind"))
        });
        assert!(r.is_err());
        assert!(outbox_messages(&mut db).is_empty());
        assert!(master_items(&mut db).is_empty());
    }
);

modes!(
    fn savepoint_rolled_back_inside_a_committed_transaction<M>(kind: Kind) {
        let t = TestDb::new(kind);
        let mut db = t.connect();
        M::prepare(&mut db);
        let (a, b) = atomic(&mut db, |tx| {
            Ok((
                insert::<M>(tx, "a", 1, None)?,
                insert::<M>(tx, "b", 1, None)?,
            ))
        })
        .unwrap();
        atomic(&mut db, |tx| {
            set_value::<M>(tx, a, 10)?;
            let inner: cqrs::Result<()> = tx.savepoint(|tx| {
                set_value::<M>(tx, b, 20)?;
                set_value::<M>(tx, a, 11)?;
                Err(Error::apply("rolled back"))
            });
            assert!(inner.is_err());
            Ok(())
        })
        .unwrap();
        let msgs = outbox_messages(&mut db);
        assert_eq!(msgs.len(), 3, "two creates, then only the outer change");
        assert_eq!(
            (msgs[2].instance_pk.clone(), msgs[2].revision().unwrap()),
            (json!(a), 1)
        );
        assert_eq!(msgs[2].instance_data["value"], json!(10));
        assert_eq!(
            revision(&mut db, b),
            0,
            "the rolled-back change is not counted"
        );
    }
);

modes!(
    fn create_then_update_stays_at_revision_0_and_create_then_delete_sends_nothing<M>(kind: Kind) {
        let t = TestDb::new(kind);
        let mut db = t.connect();
        M::prepare(&mut db);
        let id = atomic(&mut db, |tx| {
            let id = insert::<M>(tx, "a", 1, None)?;
            set_value::<M>(tx, id, 5)?;
            let gone = insert::<M>(tx, "gone", 1, None)?;
            assert!(tx.delete_key::<M>(&gone)?);
            Ok(id)
        })
        .unwrap();
        let msgs = outbox_messages(&mut db);
        assert_eq!(msgs.len(), 1);
        assert_eq!(
            (
                msgs[0].revision().unwrap(),
                msgs[0].instance_data["value"].clone()
            ),
            (0, json!(5))
        );
        assert_eq!(revision(&mut db, id), 0);
    }
);

modes!(
    fn update_then_delete_sends_one_delete_with_last_published_plus_one<M>(kind: Kind) {
        let t = TestDb::new(kind);
        let mut db = t.connect();
        M::prepare(&mut db);
        let id = atomic(&mut db, |tx| insert::<M>(tx, "a", 1, None)).unwrap();
        atomic(&mut db, |tx| set_value::<M>(tx, id, 2)).unwrap(); // published rev 1
        atomic(&mut db, |tx| {
            set_value::<M>(tx, id, 3)?;
            tx.delete_key::<M>(&id)
        })
        .unwrap();
        let msgs = outbox_messages(&mut db);
        assert_eq!(msgs.len(), 3);
        let del = &msgs[2];
        assert_eq!(del.signal_type, SignalType::Delete);
        assert_eq!(
            del.instance_data.keys().collect::<Vec<_>>(),
            ["cqrs_revision", "cqrs_updated", "id"]
        );
        assert_eq!(
            (del.instance_data["id"].clone(), del.revision().unwrap()),
            (json!(id), 2)
        );
        // A plain delete of a row at revision 0 sends revision 1.
        let other = atomic(&mut db, |tx| insert::<M>(tx, "b", 1, None)).unwrap();
        atomic(&mut db, |tx| tx.delete_key::<M>(&other)).unwrap();
        assert_eq!(
            outbox_messages(&mut db).last().unwrap().revision().unwrap(),
            1
        );
    }
);

modes!(
    fn bulk_create_update_delete<M>(kind: Kind) {
        let t = TestDb::new(kind);
        let mut db = t.connect();
        M::prepare(&mut db);
        let ids = atomic(&mut db, |tx| {
            (0..3)
                .map(|i| insert::<M>(tx, "bulk", i, None))
                .collect::<cqrs::Result<Vec<_>>>()
        })
        .unwrap();
        assert_eq!(
            outbox_messages(&mut db)
                .iter()
                .filter(|m| m.revision().unwrap() == 0)
                .count(),
            3
        );
        let touched = atomic(&mut db, |tx| {
            let n = tx.touch_many::<M>(&ids)?;
            let sql = sql_for(
                tx.conn(),
                "UPDATE m_items SET value = value + 100 WHERE name = $1",
            );
            tx.conn().exec(&sql, vec!["bulk".into_sql()])?;
            Ok(n)
        })
        .unwrap();
        // A trigger-captured model is touched by the update's trigger, not by touch_many.
        assert_eq!(touched, if M::BY_TRIGGER { 0 } else { 3 });
        let msgs = outbox_messages(&mut db);
        assert_eq!(
            msgs[3..]
                .iter()
                .map(|m| (
                    m.revision().unwrap(),
                    m.instance_data["value"].as_i64().unwrap() >= 100
                ))
                .collect::<Vec<_>>(),
            [(1, true); 3]
        );
        let empty = atomic(&mut db, |tx| tx.touch_many::<M>(&[] as &[i64])).unwrap();
        assert_eq!(empty, 0);
        assert_eq!(
            outbox_messages(&mut db).len(),
            6,
            "an empty bulk update sends nothing"
        );
        let deleted = atomic(&mut db, |tx| tx.delete_many::<M>(&ids)).unwrap();
        assert_eq!(deleted, 3);
        let msgs = outbox_messages(&mut db);
        assert_eq!(
            msgs[6..]
                .iter()
                .map(|m| (m.signal_type, m.revision().unwrap()))
                .collect::<Vec<_>>(),
            [(SignalType::Delete, 2); 3]
        );
    }
);

both!(
    fn filtered_rows_count_revisions_but_send_nothing(kind: Kind) {
        let t = TestDb::new(kind);
        let mut db = t.connect();
        let id = atomic(&mut db, |tx| insert::<MItem>(tx, "hidden", 1, None)).unwrap();
        atomic(&mut db, |tx| set_value::<MItem>(tx, id, 2)).unwrap();
        assert!(outbox_messages(&mut db).is_empty());
        assert_eq!(revision(&mut db, id), 1);
        // As django-cqrs: neither a SYNC nor the DELETE of a row the filter hides is sent.
        atomic(&mut db, |tx| {
            tx.sync::<MItem>(&id, None)?;
            tx.sync::<MItem>(&id, Some("replica_a"))
        })
        .unwrap();
        assert!(outbox_messages(&mut db).is_empty(), "no SYNC");
        atomic(&mut db, |tx| tx.delete_key::<MItem>(&id)).unwrap();
        assert!(outbox_messages(&mut db).is_empty(), "no DELETE");
    }
);

/// The same table as a master that does not produce (`produce = false`, django-cqrs's
/// `CQRS_PRODUCE = False`).
#[allow(dead_code)]
#[derive(cqrs::Master)]
#[diesel(table_name = m_items)]
#[cqrs(id = "item", produce = false)]
struct MQuiet {
    id: i64,
    name: String,
    value: i64,
    updated: DateTime<Utc>,
    #[cqrs(skip)]
    secret: String,
    #[cqrs(rename = "owner")]
    owner_id: Option<i64>,
    cqrs_revision: i32,
    cqrs_updated: DateTime<Utc>,
}

both!(
    fn a_master_that_does_not_produce_sends_no_sync(kind: Kind) {
        let t = TestDb::new(kind);
        let mut db = t.connect();
        let id = atomic(&mut db, |tx| insert::<MItem>(tx, "a", 1, None)).unwrap();
        db.batch_execute("DELETE FROM cqrs_outbox").unwrap();
        atomic(&mut db, |tx| {
            tx.sync::<MQuiet>(&id, None)?;
            tx.sync::<MQuiet>(&id, Some("replica_a"))
        })
        .unwrap();
        assert!(outbox_messages(&mut db).is_empty());
    }
);

modes!(
    fn sync_broadcast_and_directed<M>(kind: Kind) {
        let t = TestDb::new(kind);
        let mut db = t.connect();
        M::prepare(&mut db);
        let id = atomic(&mut db, |tx| insert::<M>(tx, "a", 1, None)).unwrap();
        atomic(&mut db, |tx| {
            tx.sync::<M>(&id, None)?;
            tx.sync::<M>(&id, Some("replica_a"))
        })
        .unwrap();
        let broker = MemoryBroker::new();
        broker.declare_replica_queue("replica_a", &["item"]);
        broker.declare_replica_queue("replica_b", &["item"]);
        let mut relay = Relay::new(t.connect(), broker.clone(), Settings::default());
        assert_eq!(relay.run_once().unwrap(), 3);
        let a = broker.peek("replica_a");
        let b = broker.peek("replica_b");
        assert_eq!(a.len(), 3, "SAVE, broadcast SYNC, directed SYNC");
        assert_eq!(b.len(), 2, "the directed SYNC goes to replica_a only");
        assert_eq!(a[2].routing_key, "cqrs.replica_a.item");
        assert_eq!(
            a[2].headers.get("cqrs-directed").map(String::as_str),
            Some("true")
        );
        let sync = Message::decode(&a[1].body).unwrap();
        assert_eq!(
            (
                sync.signal_type,
                sync.revision().unwrap(),
                sync.previous_data.clone()
            ),
            (SignalType::Sync, 0, None)
        );
        assert_eq!(revision(&mut db, id), 0, "a sync does not bump");
    }
);

#[test]
fn concurrent_updates_of_one_row_lose_no_increment_postgres() {
    let t = TestDb::new(Kind::Postgres);
    let mut db = t.connect();
    let id = atomic(&mut db, |tx| insert::<MItem>(tx, "a", 1, None)).unwrap();
    let barrier = std::sync::Barrier::new(2);
    std::thread::scope(|s| {
        for v in [10, 20] {
            let (t, barrier) = (&t, &barrier);
            s.spawn(move || {
                let mut db = t.connect();
                barrier.wait();
                atomic(&mut db, |tx| set_value::<MItem>(tx, id, v)).unwrap();
            });
        }
    });
    let revs: Vec<i32> = outbox_messages(&mut db)
        .iter()
        .skip(1)
        .map(|m| m.revision().unwrap())
        .collect();
    let mut sorted = revs.clone();
    sorted.sort();
    assert_eq!(sorted, [1, 2]);
    assert_eq!(revision(&mut db, id), 2);
}

/// Our master's messages have the keys and value forms of django-cqrs's captured ones.
#[test]
fn messages_match_the_captured_django_forms() {
    let t = TestDb::new(Kind::Postgres);
    let mut db = t.connect();
    let broker = MemoryBroker::new();
    broker.declare_replica_queue("q", &["item"]);
    let id = atomic(&mut db, |tx| insert::<MItem>(tx, "widget", 42, None)).unwrap();
    atomic(&mut db, |tx| set_value::<MItem>(tx, id, 43)).unwrap();
    atomic(&mut db, |tx| tx.delete_key::<MItem>(&id)).unwrap();
    let mut relay = Relay::new(t.connect(), broker.clone(), Settings::default());
    relay.run_once().unwrap();
    let ours: Vec<Value> = broker
        .peek("q")
        .iter()
        .map(|m| serde_json::from_slice(&m.body).unwrap())
        .collect();
    for (mine, file) in ours
        .iter()
        .zip(["01_create.json", "02_update.json", "15_delete.json"])
    {
        let theirs: Value = serde_json::from_slice(&capture(file)[0].1).unwrap();
        let keys = |v: &Value| v.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
        assert_eq!(keys(mine), keys(&theirs), "{file}: top-level keys");
        for k in [
            "signal_type",
            "cqrs_id",
            "correlation_id",
            "retries",
            "meta",
        ] {
            assert_eq!(mine[k], theirs[k], "{file}: {k}");
        }
        let expires = mine["expires"].as_str().unwrap();
        assert!(
            expires.len() == 25 && expires.ends_with("+00:00") && expires.as_bytes()[10] == b'T',
            "{expires}"
        );
        for (k, v) in theirs["instance_data"].as_object().unwrap() {
            let m = &mine["instance_data"][k];
            assert_eq!(
                std::mem::discriminant(m),
                std::mem::discriminant(v),
                "{file}: instance_data.{k} form"
            );
            if k.ends_with("updated") {
                let s = m.as_str().unwrap();
                assert!(
                    s.as_bytes()[10] == b' ' && s.ends_with("+00:00"),
                    "{file}: {k} = {s}"
                );
            }
        }
    }
}

both!(
    fn master_to_replica_end_to_end(kind: Kind) {
        let master = TestDb::new(kind);
        let replica = TestDb::new(kind);
        let mut db = master.connect();
        let broker = MemoryBroker::new();
        broker.declare_replica_queue("replica", &["item"]);
        // A mixed workload: creates, updates, a bulk update, deletes, a sync.
        let ids: Vec<i64> = atomic(&mut db, |tx| {
            (0..40)
                .map(|i| insert::<MItem>(tx, &format!("n{i}"), i, Some(i)))
                .collect()
        })
        .unwrap();
        for round in 0..3 {
            for id in ids.iter().filter(|id| *id % 3 == round) {
                atomic(&mut db, |tx| set_value::<MItem>(tx, *id, id * 10 + round)).unwrap();
            }
        }
        atomic(&mut db, |tx| tx.touch_many::<MItem>(&ids[..10]).map(drop)).unwrap();
        atomic(&mut db, |tx| tx.delete_many::<MItem>(&ids[30..])).unwrap();
        atomic(&mut db, |tx| tx.sync::<MItem>(&ids[0], Some("replica"))).unwrap();
        let mut relay = Relay::new(
            master.connect(),
            broker.clone(),
            Settings {
                batch_size: 16,
                ..Settings::default()
            },
        );
        while relay.run_once().unwrap() > 0 {}
        assert_eq!(
            cqrs::outbox::pending(&mut db).unwrap(),
            0,
            "every row confirmed and deleted"
        );

        let registry = Registry::new().with_replica(cqrs::TableReplica::new(item_spec()));
        let settings = Settings::default();
        let mut consumer = Consumer::new(
            &registry,
            &settings,
            replica.connect(),
            broker.inbox("replica"),
        );
        consumer.drain(Duration::from_millis(50)).unwrap();
        let want: BTreeMap<i64, MasterRow> = master_items(&mut db);
        let got: BTreeMap<i64, MasterRow> = items(&mut replica.connect())
            .into_iter()
            .map(|(id, r)| {
                (
                    id,
                    (
                        r.name,
                        r.value,
                        want.get(&id).map_or(r.updated, |w| w.2),
                        r.rev,
                        r.updated,
                    ),
                )
            })
            .collect();
        assert_eq!(got.len(), 30);
        assert_eq!(
            got, want,
            "rows, revisions and cqrs_updated to the microsecond"
        );
    }
);

/// Triple shuffle end to end: messages produced by real capture of a random workload (creates,
/// updates, several rows per transaction, bulk updates, deletes, broadcast syncs), relayed, then
/// delivered shuffled and duplicated in random batches, three times over: the replica must equal
/// the master every time.
fn triple_shuffle_from_capture(kind: Kind, cases: u32) {
    use proptest::prelude::*;
    let master = TestDb::new(kind);
    let replica = TestDb::new(kind);
    let dbs = std::cell::RefCell::new((master.connect(), replica.connect()));
    let config = ProptestConfig {
        cases,
        max_shrink_iters: 50,
        ..ProptestConfig::default()
    };
    proptest!(config, |(txs in prop::collection::vec(prop::collection::vec((0u8..5, 0usize..64, 0i64..1000), 1..4), 1..25), seed in any::<u64>())| {
        let (m, r) = &mut *dbs.borrow_mut();
        m.batch_execute("DELETE FROM m_items; DELETE FROM cqrs_outbox").unwrap();
        let mut live: Vec<i64> = Vec::new();
        for ops in &txs {
            atomic(m, |tx| {
                for &(op, slot, v) in ops {
                    let pick = (!live.is_empty()).then(|| live[slot % live.len()]);
                    match (op, pick) {
                        (0, _) | (_, None) => live.push(insert::<MItem>(tx, "p", v, Some(v))?),
                        (1, Some(id)) => { set_value::<MItem>(tx, id, v)?; }
                        (2, Some(_)) => { let some: Vec<i64> = live.iter().copied().filter(|id| id % 2 == v % 2).collect(); tx.touch_many::<MItem>(&some)?; }
                        (3, Some(id)) => { tx.delete_key::<MItem>(&id)?; live.retain(|l| *l != id); }
                        (_, Some(id)) => tx.sync::<MItem>(&id, None)?,
                    }
                }
                Ok(())
            }).unwrap();
        }
        let broker = MemoryBroker::new();
        broker.declare_replica_queue("replica", &["item"]);
        let mut relay = Relay::new(std::mem::replace(m, master.connect()), broker.clone(), Settings::default());
        while relay.run_once().unwrap() > 0 {}
        let messages: Vec<Message> = broker.peek("replica").iter().map(|s| Message::decode(&s.body).unwrap()).collect();
        let want: BTreeMap<i64, (String, i64, i32, DateTime<Utc>)> =
            master_items(m).into_iter().map(|(k, v)| (k, (v.0, v.1, v.3, v.4))).collect();
        let replica_engine = cqrs::TableReplica::new(item_spec());
        let mut rng = seed | 1;
        let mut next = move |n: usize| { rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17; (rng % n as u64) as usize };
        for round in 0..3 {
            r.batch_execute("DELETE FROM items; DELETE FROM cqrs_tombstones").unwrap();
            let mut stream: Vec<cqrs::Change> = Vec::new();
            for msg in &messages {
                for _ in 0..1 + next(3) {
                    stream.push(cqrs::Change::new(msg.clone()));
                }
            }
            for i in (1..stream.len()).rev() {
                let j = next(i + 1);
                stream.swap(i, j);
            }
            for batch in stream.chunks(1 + next(10)) {
                let refs: Vec<&cqrs::Change> = batch.iter().collect();
                r.write_transaction(|db| cqrs::Replica::apply(&replica_engine, db, &refs)).unwrap();
            }
            let got: BTreeMap<i64, (String, i64, i32, DateTime<Utc>)> =
                items(r).into_iter().map(|(k, v)| (k, (v.name, v.value, v.rev, v.updated))).collect();
            prop_assert_eq!(&got, &want, "round {}", round);
        }
    });
}

#[test]
fn triple_shuffle_from_real_capture_postgres() {
    triple_shuffle_from_capture(Kind::Postgres, 10);
}

#[test]
fn triple_shuffle_from_real_capture_sqlite() {
    triple_shuffle_from_capture(Kind::Sqlite, 32);
}

/// The same table seen by a master with every hook.
#[allow(dead_code)]
#[derive(cqrs::Master)]
#[diesel(table_name = m_items)]
#[cqrs(
    id = "item_hooked",
    meta = "crate::capture::meta_of",
    correlation_id = "crate::capture::trace_id",
    delete_custom = "crate::capture::custom_of",
    serializer = "crate::capture::with_siblings"
)]
struct HookedItem {
    id: i64,
    name: String,
    value: i64,
    cqrs_revision: i32,
    cqrs_updated: DateTime<Utc>,
}

pub fn meta_of(data: &cqrs::InstanceData) -> Value {
    json!({"source": "tests", "name": data.get("name")})
}

/// Told what each message is, as django-cqrs's `correlation_function` is.
pub fn trace_id(m: &cqrs::model::Correlation<'_>) -> Option<String> {
    Some(format!(
        "{}:{}:{}:{}",
        m.signal_type.as_str(),
        m.cqrs_id,
        m.instance_pk,
        m.queue.unwrap_or("-")
    ))
}

pub fn custom_of(data: &cqrs::InstanceData) -> Option<Value> {
    Some(json!({"last_value": data.get("value")}))
}

/// A custom serializer that reads related rows inside the capture transaction.
pub fn with_siblings(conn: &mut dyn SqlConn, data: &mut cqrs::InstanceData) -> cqrs::Result<()> {
    let n = conn.load_text("SELECT CAST(count(*) AS TEXT) AS j FROM m_items", vec![])?;
    data.insert("rows_in_table".into(), json!(n[0].parse::<i64>().unwrap()));
    Ok(())
}

both!(
    fn master_hooks_shape_the_messages(kind: Kind) {
        let t = TestDb::new(kind);
        let mut db = t.connect();
        let id = atomic(&mut db, |tx| {
        tx.create_with::<HookedItem, _, Error>(|c| {
            let sql = sql_for(c, "INSERT INTO m_items (name, value, updated) VALUES ($1, 5, $2) RETURNING CAST(id AS TEXT) AS j");
            Ok::<i64, Error>(c.load_text(&sql, vec!["h".into_sql(), cqrs::value::SqlValue::Timestamptz(at(0))])?[0].parse().unwrap())
        })
    })
    .unwrap();
        atomic(&mut db, |tx| tx.sync::<HookedItem>(&id, Some("replica_a"))).unwrap();
        atomic(&mut db, |tx| tx.delete_key::<HookedItem>(&id)).unwrap();
        let msgs = outbox_messages(&mut db);
        assert_eq!(
            msgs[1].correlation_id.as_deref(),
            Some(format!("SYNC:item_hooked:{id}:replica_a").as_str()),
            "the hook is told the directed SYNC's queue"
        );
        assert_eq!(msgs[0].meta, json!({"source": "tests", "name": "h"}));
        assert_eq!(
            msgs[0].correlation_id.as_deref(),
            Some(format!("SAVE:item_hooked:{id}:-").as_str())
        );
        assert_eq!(
            msgs[0].instance_data["rows_in_table"],
            json!(1),
            "custom serializer output"
        );
        assert!(
            !msgs[0].instance_data.contains_key("updated"),
            "fields the model does not declare are not sent"
        );
        assert_eq!(msgs[2].instance_data["custom"], json!({"last_value": 5}));
        assert_eq!(msgs[2].meta["name"], json!("h"));
        assert_eq!(
            msgs[2].correlation_id.as_deref(),
            Some(format!("DELETE:item_hooked:{id}:-").as_str())
        );
    }
);

/// SQLite's busy handler is not fair: without turns at the write lock (`cqrs::turns`), an
/// application committing back to back kept an in-process relay from claiming the outbox until
/// the burst ended. With them, the relay publishes during the burst.
#[test]
fn an_in_process_relay_is_not_starved_by_back_to_back_commits_sqlite() {
    let t = TestDb::new(Kind::Sqlite);
    let broker = MemoryBroker::new();
    broker.declare_replica_queue("q", &["item"]);
    let shutdown = cqrs::Shutdown::new();
    let burst = 400;
    let (during, pending) = std::thread::scope(|s| {
        let _stop = StopOnDrop(&shutdown);
        let relay = s.spawn(|| {
            let mut relay = Relay::new(t.connect(), broker.clone(), Settings::default());
            relay.run(&shutdown).unwrap();
        });
        let mut db = t.connect();
        // The scenario: the relay is up and idle before the burst starts (nothing it exposes says
        // so, hence a pause rather than a wait).
        std::thread::sleep(Duration::from_millis(200));
        for i in 0..burst {
            atomic(&mut db, |tx| insert::<MItem>(tx, &format!("n{i}"), i, None)).unwrap();
        }
        let during = broker.peek("q").len();
        let pending = cqrs::outbox::pending(&mut db).unwrap();
        shutdown.trigger();
        relay.join().unwrap();
        (during, pending)
    });
    // Starved, the relay published nothing (or one lucky batch) before the burst ended; with turns
    // it claims after nearly every commit. A quarter leaves room for a loaded machine.
    assert!(
        during >= burst as usize / 4,
        "only {during} of {burst} messages were published while the application committed ({pending} still in the outbox)"
    );
}

modes!(
    /// An `atomic` nested on the transaction's connection (application code that opens its own
    /// capture, called inside another) joins the outer capture: a row touched in both is bumped
    /// once and sent once with its final state; if the inner one fails, only its work is undone.
    fn nested_atomic_joins_the_outer_capture<M>(kind: Kind) {
        let t = TestDb::new(kind);
        let mut db = t.connect();
        M::prepare(&mut db);
        let id = atomic(&mut db, |tx| insert::<M>(tx, "widget", 1, None)).unwrap();
        outbox_messages(&mut db);
        db.batch_execute("DELETE FROM cqrs_outbox").unwrap();
        atomic(&mut db, |tx| {
            set_value::<M>(tx, id, 2)?;
            atomic(tx.conn(), |inner| set_value::<M>(inner, id, 3))?;
            let failed: cqrs::Result<()> = atomic(tx.conn(), |inner| {
                set_value::<M>(inner, id, 99)?;
                insert::<M>(inner, "rolled back", 5, None)?;
                Err(Error::config("the inner work fails"))
            });
            assert!(failed.is_err());
            Ok(())
        })
        .unwrap();
        assert_eq!(revision(&mut db, id), 1, "bumped once");
        let msgs = outbox_messages(&mut db);
        assert_eq!(msgs.len(), 1, "one message for the row: {msgs:?}");
        assert_eq!(msgs[0].revision().unwrap(), 1);
        assert_eq!(msgs[0].instance_data["value"], json!(3));
        assert_eq!(
            master_items(&mut db).len(),
            1,
            "the failed inner insert is undone"
        );
    }
);

both!(
    /// `sync` on a live master: a row deleted between the command's selection and its capture is
    /// skipped (as django-cqrs skips it), not the end of the run; and the command waits for its
    /// own messages only, not for other rows stuck in the outbox.
    fn sync_on_a_live_master(kind: Kind) {
        let t = TestDb::new(kind);
        let mut db = t.connect();
        let id = atomic(&mut db, |tx| insert::<MItem>(tx, "a", 1, None)).unwrap();
        db.batch_execute("DELETE FROM cqrs_outbox").unwrap();
        let spec = std::sync::Arc::new(<MItem as cqrs::MasterModel>::master_spec());
        let gone = cqrs::value::SqlValue::BigInt(id + 1000);
        atomic(&mut db, |tx| {
            tx.sync_rows(
                &spec,
                &[cqrs::value::SqlValue::BigInt(id), gone.clone()],
                None,
            );
            Ok(())
        })
        .unwrap();
        assert_eq!(
            outbox_messages(&mut db).len(),
            1,
            "the missing row is skipped"
        );
        db.batch_execute("DELETE FROM cqrs_outbox").unwrap();

        // A row of another transaction that cannot go out (nobody is bound for its key, and
        // keep_unroutable holds it): the command must not wait for it or fail on it.
        let mut nobody = ItemState::new(1, 0, at(0)).save();
        nobody.cqrs_id = "nobody".into();
        let stuck = cqrs::outbox::NewRow {
            message_id: uuid::Uuid::new_v4(),
            cqrs_id: "nobody".into(),
            signal_type: SignalType::Save,
            pk: "1".into(),
            routing_key: "nobody".into(),
            body: String::from_utf8(nobody.encode()).unwrap(),
        };
        cqrs::outbox::enqueue(&mut db, &[stuck]).unwrap();
        let queue_db = TestDb::empty(Kind::Sqlite);
        let settings = Settings {
            database_url: Some(t.url.clone()),
            broker_url: Some(queue_db.url.replace("replica.db", "queue.db")),
            queue: Some("rq".into()),
            keep_unroutable: true,
            ..Settings::default()
        };
        let broker = cqrs::transport::connect(&settings, "test").unwrap();
        broker.declare_replica("rq", &["item".into()], &[]).unwrap();
        let synced =
            cqrs::ops::sync::run(&settings, Some(broker.as_ref()), &spec, "{}", &mut |_| {})
                .expect("the command's own rows were confirmed");
        assert_eq!(synced, (1, 1), "one row selected, one message");
        let mut inbox = broker.inbox("rq", 10, &[]).unwrap();
        let got = inbox.receive(10, Duration::from_secs(1)).unwrap();
        assert_eq!(got.len(), 1, "our SYNC reached the queue");
        assert_eq!(
            cqrs::outbox::pending(&mut db).unwrap(),
            1,
            "the stuck row is still there"
        );
    }
);

fn serializer_that_captures(
    conn: &mut dyn cqrs::db::SqlConn,
    _: &mut cqrs::InstanceData,
) -> cqrs::Result<()> {
    atomic(conn, |_| Ok(()))
}

both!(
    /// A serializer hook runs while the capture writes its messages: an `atomic` there could
    /// not have its changes sent, so it is refused with a clear error (not a panic), and the
    /// capture rolls back.
    fn atomic_inside_a_serializer_is_refused(kind: Kind) {
        let t = TestDb::new(kind);
        let mut db = t.connect();
        let id = atomic(&mut db, |tx| insert::<MItem>(tx, "a", 1, None)).unwrap();
        db.batch_execute("DELETE FROM cqrs_outbox").unwrap();
        let spec = std::sync::Arc::new(<MItem as cqrs::MasterModel>::master_spec().hooks(
            cqrs::MasterHooks {
                serializer: Some(serializer_that_captures),
                ..Default::default()
            },
        ));
        let err = atomic(&mut db, |tx| {
            tx.sync_rows(&spec, &[cqrs::value::SqlValue::BigInt(id)], None);
            Ok(())
        })
        .unwrap_err();
        assert!(err.to_string().contains("serializer hook"), "{err}");
        assert!(outbox_messages(&mut db).is_empty());
    }
);
