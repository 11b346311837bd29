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
