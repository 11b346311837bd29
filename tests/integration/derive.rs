//! `#[derive(Replica)]` on Diesel models: the spec it builds and the consumer driving it.

use std::time::Duration;

use chrono::{DateTime, Utc};
use cqrs::transport::{Headers, memory::MemoryBroker};
use cqrs::{Consumer, Registry, ReplicaModel, Settings};
use cqrs_tests::*;

/// The `items` test table seen through a Diesel model with a renamed field and a local-only one.
#[allow(dead_code)]
#[derive(cqrs::Replica)]
#[diesel(table_name = items, check_for_backend(diesel::pg::Pg))]
#[diesel(primary_key(id))]
#[cqrs(id = "item")]
struct DerivedItem {
    id: i64,
    name: String,
    value: i64,
    updated: DateTime<Utc>,
    #[cqrs(optional)]
    note: String,
    cqrs_revision: i32,
    cqrs_updated: DateTime<Utc>,
    #[cqrs(skip)]
    local_cache: Vec<u8>,
}

/// The captured `Typed` model with a renamed FK column (Django sends it as `owner`).
#[allow(dead_code)]
#[derive(cqrs::Replica)]
#[diesel(table_name = schema::typed)]
#[cqrs(id = "typed")]
struct DerivedTyped {
    id: uuid::Uuid,
    price: bigdecimal::BigDecimal,
    ratio: f64,
    flag: bool,
    day: chrono::NaiveDate,
    at: DateTime<Utc>,
    maybe_text: Option<String>,
    maybe_int: Option<i32>,
    #[cqrs(rename = "owner")]
    owner_ref: Option<i64>,
    tags: serde_json::Value,
    cqrs_revision: i32,
    cqrs_updated: DateTime<Utc>,
}

#[test]
fn derived_spec_equals_the_hand_written_one() {
    assert_eq!(DerivedItem::CQRS_ID, "item");
    assert_eq!(DerivedItem::table_spec(), item_spec());
    assert_eq!(DerivedTyped::table_spec(), typed_spec(Kind::Postgres));
}

both!(
    fn derived_replica_consumes_django_captures(kind: Kind) {
        let t = TestDb::new(kind);
        let broker = MemoryBroker::new();
        broker.declare_replica_queue("bench_replica", &["item"]);
        for file in capture_files().into_iter().filter(|f| f.as_str() < "17") {
            for (key, body) in capture(&file) {
                let mut m = cqrs::Message::decode(&body).unwrap();
                m.expires = cqrs::message::Expires::Never; // captured with a one-day TTL
                broker.publish(&key, m.encode(), Headers::new());
            }
        }
        let registry = Registry::new().replica::<DerivedItem>();
        let settings = Settings::default();
        let mut c = Consumer::new(
            &registry,
            &settings,
            t.connect(),
            broker.inbox("bench_replica"),
        );
        c.drain(Duration::from_millis(50)).unwrap();
        let rows = items(c.db());
        assert_eq!(rows.keys().copied().collect::<Vec<_>>(), [3, 5, 6]);
        assert_eq!(rows[&3].name, "txn");
        assert_eq!(tombstones(c.db(), "item").len(), 2);
    }
);

mod schema {
    diesel::table! {
        typed (id) {
            id -> Uuid,
            price -> Numeric,
            ratio -> Double,
            flag -> Bool,
            day -> Date,
            at -> Timestamptz,
            maybe_text -> Nullable<Text>,
            maybe_int -> Nullable<Integer>,
            owner_ref -> Nullable<BigInt>,
            tags -> Jsonb,
            cqrs_revision -> Integer,
            cqrs_updated -> Timestamptz,
        }
    }
}

/// A replica with an after-apply hook (writes an audit row in the same transaction, from the
/// message's `meta` and `previous_data`) and a retry policy (dead-letter at once).
#[allow(dead_code)]
#[derive(cqrs::Replica)]
#[diesel(table_name = items)]
#[cqrs(
    id = "item",
    after_apply = "crate::derive::audit",
    retry = "crate::derive::no_retries"
)]
struct AuditedItem {
    id: i64,
    name: String,
    value: i64,
    updated: DateTime<Utc>,
    cqrs_revision: i32,
    cqrs_updated: DateTime<Utc>,
}

pub fn audit(db: &mut cqrs::Db, changes: &[&cqrs::Change]) -> cqrs::Result<()> {
    for c in changes {
        let sql = sql_for(
            db,
            "INSERT INTO audit (pk, meta, previous) VALUES ($1, $2, $3)",
        );
        let m = &c.message;
        db.execute(
            &sql,
            vec![
                cqrs::value::SqlValue::Text(m.instance_pk.to_string()),
                cqrs::value::SqlValue::Text(m.meta.to_string()),
                cqrs::value::SqlValue::Text(serde_json::to_string(&m.previous_data).unwrap()),
            ],
        )?;
    }
    Ok(())
}

pub fn no_retries(_: &cqrs::Message, _: &cqrs::Error) -> cqrs::Retry {
    cqrs::Retry::DeadLetter
}

both!(
    fn replica_hooks_see_meta_and_previous_data_and_decide_retries(kind: Kind) {
        let t = TestDb::new(kind);
        t.connect()
            .batch_execute(
                "CREATE TABLE audit (pk TEXT NOT NULL, meta TEXT NOT NULL, previous TEXT NOT NULL)",
            )
            .unwrap();
        let broker = MemoryBroker::new();
        broker.declare_replica_queue("rq", &["item"]);
        let mut good = ItemState::new(1, 0, at(0)).save();
        good.meta = serde_json::json!({"by": "alice"});
        good.previous_data = Some(serde_json::from_value(serde_json::json!({"value": 7})).unwrap());
        broker.publish("item", good.encode(), Headers::new());
        let mut bad = ItemState::new(2, 0, at(0)).save();
        bad.instance_data.remove("name");
        broker.publish("item", bad.encode(), Headers::new());
        let registry = Registry::new().replica::<AuditedItem>();
        let settings = Settings::default();
        let mut c = Consumer::new(&registry, &settings, t.connect(), broker.inbox("rq"));
        c.drain(Duration::from_millis(50)).unwrap();
        assert_eq!(
            texts(c.db(), "SELECT meta || ' ' || previous AS t FROM audit"),
            [Some(r#"{"by":"alice"} {"value":7}"#.to_string())]
        );
        let dead = broker.peek(&cqrs::transport::dead_letter_queue("rq"));
        assert_eq!(
            dead.len(),
            1,
            "the retry policy sent it straight to the dead letters"
        );
        assert_eq!(cqrs::Message::decode(&dead[0].body).unwrap().retries, 0);
        assert_eq!(broker.delayed_len(), 0);
    }
);
