//! The wire message against real django-cqrs 3.1.0 captures.

use cqrs::ErrorKind;
use cqrs::message::{Expires, Message, SignalType};
use cqrs::value::ColumnType;
use cqrs_tests::{capture, capture_files};
use serde_json::{Value, json};

#[test]
fn every_capture_decodes_and_reencodes_to_the_same_keys_and_values() {
    let files = capture_files();
    assert!(files.len() >= 20, "captures found: {files:?}");
    let mut seen = 0;
    for file in files {
        for (routing_key, body) in capture(&file) {
            let msg = Message::decode(&body).unwrap_or_else(|e| panic!("{file}: {e}"));
            let original: Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(msg.cqrs_id, original["cqrs_id"], "{file}");
            assert!(matches!(msg.expires, Expires::At(_)), "{file}: expires");
            let ours: Value = serde_json::from_slice(&msg.encode()).unwrap();
            // Same key set, same parsed values (Django escapes `/` and non-ASCII; bytes differ, values not).
            assert_eq!(keys(&ours), keys(&original), "{file} ({routing_key})");
            assert_eq!(ours, original, "{file} ({routing_key})");
            assert_eq!(
                Message::decode(&msg.encode()).unwrap(),
                msg,
                "{file}: round trip"
            );
            seen += 1;
        }
    }
    assert!(seen >= 30, "{seen} messages");
}

fn keys(v: &Value) -> Vec<String> {
    let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
    k.sort();
    k
}

#[test]
fn capture_01_fields_and_forms() {
    let (_, body) = capture("01_create.json").remove(0);
    let msg = Message::decode(&body).unwrap();
    assert_eq!(msg.signal_type, SignalType::Save);
    assert_eq!(msg.instance_pk, json!(1));
    assert_eq!(msg.revision().unwrap(), 0);
    assert_eq!(
        cqrs::message::format_datetime(&msg.updated().unwrap()),
        "2026-11-23 14:17:38.255580+00:00"
    );
    let enc: Value = serde_json::from_slice(&msg.encode()).unwrap();
    assert_eq!(enc["expires"], "2026-11-24T14:17:38+00:00");
    assert_eq!(enc["meta"], json!({}));
    assert_eq!(enc["previous_data"], Value::Null);
}

/// Values of the typed captures, read as their column types and written back, keep Django's forms.
#[test]
fn typed_values_keep_django_forms_through_column_types() {
    let types = [
        ("id", ColumnType::Uuid),
        ("price", ColumnType::Numeric),
        ("ratio", ColumnType::Double),
        ("flag", ColumnType::Bool),
        ("day", ColumnType::Date),
        ("at", ColumnType::Timestamptz),
        ("maybe_text", ColumnType::Text),
        ("maybe_int", ColumnType::Integer),
        ("owner", ColumnType::BigInt),
        ("tags", ColumnType::Jsonb),
        ("cqrs_updated", ColumnType::Timestamptz),
    ];
    // 30 and the SYNC of 33 carry the forms a SYNC re-reads from the database.
    let mut msgs: Vec<Message> = capture("30_typed_create.json")
        .iter()
        .map(|(_, b)| Message::decode(b).unwrap())
        .collect();
    msgs.push(Message::decode(&capture("33_typed_create_berlin.json")[2].1).unwrap());
    for msg in msgs {
        for (field, ty) in types {
            let v = &msg.instance_data[field];
            let typed = ty.from_json(v).unwrap_or_else(|e| panic!("{field}: {e}"));
            assert_eq!(&typed.to_json(), v, "{field} of {}", msg.instance_pk);
        }
    }
    // 34 sends Python values as assigned: strings and 0/1 are accepted.
    let m34 = Message::decode(&capture("34_typed_create_string_values.json")[0].1).unwrap();
    assert_eq!(
        ColumnType::Numeric
            .from_json(&m34.instance_data["price"])
            .unwrap()
            .to_json(),
        json!(1234.5)
    );
    assert_eq!(
        ColumnType::Bool
            .from_json(&m34.instance_data["flag"])
            .unwrap()
            .to_json(),
        json!(true)
    );
    assert_eq!(
        ColumnType::Double
            .from_json(&m34.instance_data["ratio"])
            .unwrap()
            .to_json(),
        json!(1.0)
    );
    assert_eq!(
        ColumnType::Timestamptz
            .from_json(&m34.instance_data["at"])
            .unwrap()
            .to_json(),
        json!("2024-02-29 23:59:58+00:00")
    );
}

#[test]
fn malformed_bodies_name_the_key_and_the_problem() {
    let good = json!({"signal_type":"SAVE","cqrs_id":"item","instance_data":{},"instance_pk":1});
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (b"not json".to_vec(), "not valid JSON"),
        (
            b"[1,2]".to_vec(),
            "body is an array, expected a JSON object",
        ),
        (
            json!({"cqrs_id":"item","instance_data":{},"instance_pk":1})
                .to_string()
                .into_bytes(),
            "`signal_type` is missing",
        ),
        (
            json!({"signal_type":"SAVE","instance_data":{},"instance_pk":1})
                .to_string()
                .into_bytes(),
            "`cqrs_id` is missing",
        ),
        (
            json!({"signal_type":"SAVE","cqrs_id":"item","instance_pk":1})
                .to_string()
                .into_bytes(),
            "`instance_data` is missing",
        ),
        (
            json!({"signal_type":"SAVE","cqrs_id":"item","instance_data":{}})
                .to_string()
                .into_bytes(),
            "`instance_pk` is missing",
        ),
        (
            with(&good, "signal_type", json!("UPSERT")),
            "`signal_type`: unknown value \"UPSERT\"",
        ),
        (
            with(&good, "signal_type", json!(1)),
            "`signal_type` is a number, expected a string",
        ),
        (
            with(&good, "cqrs_id", json!(["item"])),
            "`cqrs_id` is an array, expected a string",
        ),
        (
            with(&good, "instance_data", json!("x")),
            "`instance_data` is a string, expected an object",
        ),
        (
            with(&good, "instance_pk", json!({"id":1})),
            "`instance_pk` is an object",
        ),
        (
            with(&good, "retries", json!(-1)),
            "`retries`: -1 is not a non-negative integer",
        ),
        (
            with(&good, "expires", json!("soon")),
            "`expires`: \"soon\" is not a datetime",
        ),
        (
            with(&good, "previous_data", json!([1])),
            "`previous_data` is an array",
        ),
        (
            with(&good, "correlation_id", json!(5)),
            "`correlation_id` is a number",
        ),
    ];
    for (body, needle) in cases {
        let err = Message::decode(&body).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Malformed, "{needle}");
        assert!(
            err.to_string().contains(needle),
            "{:?} should mention {needle:?}",
            err.to_string()
        );
    }
    assert!(Message::decode(good.to_string().as_bytes()).is_ok());
}

fn with(base: &Value, key: &str, v: Value) -> Vec<u8> {
    let mut b = base.clone();
    b[key] = v;
    b.to_string().into_bytes()
}

#[test]
fn absent_and_null_expires_differ() {
    let body = json!({"signal_type":"SAVE","cqrs_id":"item","instance_data":{},"instance_pk":1});
    assert_eq!(
        Message::decode(body.to_string().as_bytes())
            .unwrap()
            .expires,
        Expires::Absent
    );
    assert_eq!(
        Message::decode(&with(&body, "expires", Value::Null))
            .unwrap()
            .expires,
        Expires::Never
    );
}

/// What the relay publishes for a stored body ([`cqrs::message::restamp`]) is what decoding it,
/// stamping `expires` and `retries` and encoding it again gives: the same signal type, the same
/// JSON (byte for byte when the body is in our own encoding), or the same error.
pub(crate) fn restamp_agrees_with_the_full_decode(body: &[u8]) {
    let at = cqrs_tests::at(86_400_000);
    let decoded = Message::decode(body);
    // Our own encoding: the copy must be the same bytes, not only the same JSON.
    let canonical = decoded.as_ref().is_ok_and(|m| m.encode() == body);
    let full = decoded.map(|mut m| {
        m.expires = Expires::At(at);
        m.retries = 0;
        (m.signal_type, m.encode())
    });
    let copied = cqrs::message::restamp(body, at);
    let shown = String::from_utf8_lossy(body);
    match (full, copied) {
        (Ok((signal, encoded)), Ok((signal_copied, copied))) => {
            assert_eq!(signal_copied, signal, "{shown}");
            let parsed = |b: &[u8]| serde_json::from_slice::<Value>(b).unwrap();
            assert_eq!(parsed(&copied), parsed(&encoded), "{shown}");
            if canonical {
                assert_eq!(
                    String::from_utf8(copied).unwrap(),
                    String::from_utf8(encoded).unwrap()
                );
            }
        }
        (Err(full), Err(copied)) => {
            assert_eq!(copied.kind(), full.kind(), "{shown}");
            assert_eq!(copied.to_string(), full.to_string(), "{shown}");
        }
        (full, copied) => panic!(
            "{shown}: the full decode gave {:?}, restamp {:?}",
            full.map(|f| f.0),
            copied.map(|c| c.0)
        ),
    }
}

#[test]
fn the_relays_restamp_agrees_with_the_full_decode_on_captures_and_hostile_bodies() {
    let mut bodies: Vec<Vec<u8>> = capture_files()
        .iter()
        .flat_map(|f| capture(f).into_iter().map(|(_, body)| body))
        .collect();
    bodies.extend(cqrs_tests::hostile_bodies().into_iter().map(|(_, b, _)| b));
    let ours = cqrs_tests::ItemState::new(7, 3, cqrs_tests::at(5)).save();
    let canonical = ours.encode();
    let text = String::from_utf8(canonical.clone()).unwrap();
    bodies.extend([
        canonical.clone(),
        // Whitespace, another key order, keys absent or null, extra keys, a key twice.
        serde_json::to_vec_pretty(&serde_json::from_slice::<Value>(&canonical).unwrap()).unwrap(),
        text.replacen(r#""signal_type":"SAVE","#, "", 1)
            .replacen('{', r#"{"signal_type":"SYNC","#, 1)
            .into_bytes(),
        text.replacen(r#","meta":{}"#, "", 1).into_bytes(),
        text.replacen(
            r#""expires":null"#,
            r#""expires":"2026-01-01 10:00:00.5+02:00""#,
            1,
        )
        .into_bytes(),
        text.replacen(r#""expires":null"#, r#""expires":"never""#, 1)
            .into_bytes(),
        text.replacen(r#""retries":0"#, r#""retries":4294967296"#, 1)
            .into_bytes(),
        text.replacen(r#""retries":0"#, r#""retries":1.0"#, 1)
            .into_bytes(),
        text.replacen(r#""cqrs_id":"item""#, r#""cqrs_id":"""#, 1)
            .into_bytes(),
        text.replacen(r#""cqrs_id":"item""#, r#""cqrs_id":"it\"em""#, 1)
            .into_bytes(),
        text.replacen(r#""signal_type":"SAVE""#, r#""signal_type":"S\u0041VE""#, 1)
            .into_bytes(),
        text.replacen(r#""instance_pk":7"#, r#""instance_pk":-7.5e3"#, 1)
            .into_bytes(),
        text.replacen(r#""instance_pk":7"#, r#""instance_pk":true"#, 1)
            .into_bytes(),
        text.replacen(
            r#""previous_data":null"#,
            r#""previous_data":{"name":"x"}"#,
            1,
        )
        .into_bytes(),
        text.replacen(r#""previous_data":null"#, r#""previous_data":[]"#, 1)
            .into_bytes(),
        text.replacen(r#""correlation_id":null"#, r#""correlation_id":"c-1""#, 1)
            .into_bytes(),
        text.replacen(r#""name":"n7-3""#, r#""name":"\ud800""#, 1)
            .into_bytes(),
        text.replacen(r#""name":"n7-3""#, r#""name":"\ud83d\ude00 \n""#, 1)
            .into_bytes(),
        text.replacen(r#""meta":{}"#, r#""meta":{},"cqrs_id":"other""#, 1)
            .into_bytes(),
        text.replacen(r#""id":7,"#, r#""id":7,"id":8,"#, 1)
            .into_bytes(),
        br#"["SAVE","item",{},null,1,null,0,null,{}]"#.to_vec(),
        format!(" \n{text}\t").into_bytes(),
        format!("{text}x").into_bytes(),
    ]);
    for body in &bodies {
        restamp_agrees_with_the_full_decode(body);
    }
    assert!(bodies.len() > 70, "{} bodies", bodies.len());
}
