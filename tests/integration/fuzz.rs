//! Fuzzing with proptest (cargo fuzz needs nightly, which this machine does not have): the
//! parsers that read what other processes wrote — message bodies, filters, dump files, diff
//! streams — and the value conversions, on arbitrary input. Each must answer with a typed error
//! or a result: no panic, no hang. Case counts are fixed; a failure is saved under
//! tests/proptest-regressions/ and replayed first from then on.

use cqrs::value::ColumnType;
use cqrs::{Message, Registry, TableReplica};
use cqrs_tests::*;
use proptest::prelude::*;
use serde_json::Value;

const TYPES: [ColumnType; 14] = [
    ColumnType::Bool,
    ColumnType::SmallInt,
    ColumnType::Integer,
    ColumnType::BigInt,
    ColumnType::Float,
    ColumnType::Double,
    ColumnType::Text,
    ColumnType::Numeric,
    ColumnType::Date,
    ColumnType::Timestamp,
    ColumnType::Timestamptz,
    ColumnType::Uuid,
    ColumnType::Json,
    ColumnType::Jsonb,
];

/// Arbitrary JSON, weighted toward the shapes our parsers look into.
pub(crate) fn json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        "[ -~]{0,12}".prop_map(Value::from),
        Just(Value::from("2024-02-30T25:61:00+00:00")),
        Just(Value::from("SAVE")),
        Just(Value::from("item")),
        Just(Value::from("1e400")),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(
                prop_oneof![
                    Just("signal_type".to_string()),
                    Just("cqrs_id".to_string()),
                    Just("instance_data".to_string()),
                    Just("instance_pk".to_string()),
                    Just("previous_data".to_string()),
                    Just("cqrs_revision".to_string()),
                    Just("cqrs_updated".to_string()),
                    Just("expires".to_string()),
                    Just("retries".to_string()),
                    Just("id".to_string()),
                    "[a-z_]{1,8}",
                ],
                inner,
                0..8
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// The message's top-level keys.
const ENVELOPE: [&str; 9] = [
    "signal_type",
    "cqrs_id",
    "instance_data",
    "previous_data",
    "instance_pk",
    "correlation_id",
    "retries",
    "expires",
    "meta",
];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    #[test]
    fn message_decoder_takes_any_bytes(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
        let _ = Message::decode(&bytes);
    }

    #[test]
    fn message_decoder_takes_any_json(v in json()) {
        if let Ok(m) = Message::decode(&serde_json::to_vec(&v).unwrap()) {
            // What decodes encodes again and reads back the same.
            let again = Message::decode(&m.encode()).expect("our own encoding decodes");
            let _ = m.revision();
            let _ = m.updated();
            prop_assert_eq!(again.cqrs_id, m.cqrs_id);
        }
    }

    #[test]
    fn the_relays_restamp_agrees_with_the_full_decode(
        replaced in prop::collection::vec((prop::sample::select(ENVELOPE.to_vec()), json()), 0..3),
        removed in prop::collection::vec(prop::sample::select(ENVELOPE.to_vec()), 0..2),
        data in json(),
    ) {
        // A good body with some keys given arbitrary values or taken away: mostly the shapes the
        // copying path must tell apart from what the full decode accepts.
        let mut v: Value = serde_json::from_slice(&ItemState::new(3, 1, at(0)).save().encode()).unwrap();
        for (key, value) in replaced {
            v[key] = value;
        }
        for key in removed {
            v.as_object_mut().unwrap().remove(key);
        }
        if data.is_object() {
            v["instance_data"] = data;
        }
        crate::protocol::restamp_agrees_with_the_full_decode(&serde_json::to_vec(&v).unwrap());
    }

    #[test]
    fn the_relays_restamp_agrees_with_the_full_decode_on_any_bytes(
        cut in 0usize..400, byte in any::<u8>(), at_byte in 0usize..400,
    ) {
        let mut body = ItemState::new(3, 1, at(0)).save().encode();
        if at_byte < body.len() {
            body[at_byte] = byte;
        }
        body.truncate(cut.max(body.len() / 2));
        crate::protocol::restamp_agrees_with_the_full_decode(&body);
    }

    #[test]
    fn value_conversions_take_any_json(v in json(), i in 0usize..14) {
        if let Ok(value) = TYPES[i].from_json(&v) {
            let _ = value.to_json();
        }
    }

    #[test]
    fn filters_take_any_text(text in "[ -~]{0,60}") {
        let (pg, _) = cqrs::db::parse_database_url("postgres://localhost/x").unwrap();
        let (lite, _) = cqrs::db::parse_database_url("sqlite:///x.db").unwrap();
        for backend in [pg, lite] {
            if let Err(e) = cqrs::ops::filter::compile(&item_spec(), backend, &text, 1) {
                prop_assert_eq!(e.kind(), cqrs::ErrorKind::Config);
            }
        }
    }

    #[test]
    fn filters_take_any_object(v in json(), field in prop_oneof![
        Just("id"), Just("name"), Just("value"), Just("note"), Just("cqrs_updated"), Just("nope")
    ], lookup in prop::sample::select(cqrs::ops::filter::LOOKUPS.to_vec())) {
        let filter = serde_json::json!({ format!("{field}__{lookup}"): v }).to_string();
        let (pg, _) = cqrs::db::parse_database_url("postgres://localhost/x").unwrap();
        if let Err(e) = cqrs::ops::filter::compile(&item_spec(), pg, &filter, 1) {
            prop_assert_eq!(e.kind(), cqrs::ErrorKind::Config);
        }
    }
}

proptest! {
    // Each case opens a SQLite database: fewer cases.
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn dump_and_diff_readers_take_any_lines(lines in prop::collection::vec(
        prop_oneof![
            json().prop_map(|v| v.to_string()),
            "[ -~]{0,40}",
            Just("item".to_string()),
            Just("item,2024-01-01 00:00:00+00:00,rq".to_string()),
        ],
        0..6,
    )) {
        let t = TestDb::new(Kind::Sqlite);
        let mut db = t.connect();
        let registry = Registry::new().with_replica(TableReplica::new(item_spec()));
        let text = lines.join("\n");
        let _ = cqrs::ops::bulk::load(&mut db, &registry, &mut text.as_bytes(), 10, false, &mut |_| {});
        let _ = cqrs::ops::diff::diff_replica(&mut db, &registry, "rq", &mut text.as_bytes(), &mut Vec::new());
        let _ = cqrs::ops::diff::deleted_sync_replica(&mut db, &registry, &mut text.as_bytes());
        let _ = cqrs::ops::diff::read_header(&mut text.as_bytes());
    }
}
