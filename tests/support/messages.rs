//! Messages as a master sends them: item states, deletes, and the captured django-cqrs fixtures.

use std::path::PathBuf;

use chrono::{DateTime, Utc};
use cqrs::{Message, SignalType};
use serde_json::{Map, Value, json};

/// An item state as a master would send it.
#[derive(Debug, Clone, PartialEq)]
pub struct ItemState {
    /// Primary key.
    pub id: i64,
    /// Name.
    pub name: String,
    /// Value.
    pub value: i64,
    /// Revision.
    pub rev: i32,
    /// cqrs_updated.
    pub updated: DateTime<Utc>,
}

impl ItemState {
    /// A state with name `n<id>-<rev>` and value `rev`.
    pub fn new(id: i64, rev: i32, updated: DateTime<Utc>) -> Self {
        ItemState {
            id,
            name: format!("n{id}-{rev}"),
            value: i64::from(rev),
            rev,
            updated,
        }
    }

    fn data(&self) -> Map<String, Value> {
        let v = json!({
            "cqrs_revision": self.rev,
            "cqrs_updated": cqrs::message::format_datetime(&self.updated),
            "id": self.id,
            "name": self.name,
            "value": self.value,
            "updated": cqrs::message::format_datetime(&self.updated),
        });
        v.as_object().unwrap().clone()
    }

    /// SAVE of this state.
    pub fn save(&self) -> Message {
        Message::new(SignalType::Save, "item", json!(self.id), self.data())
    }

    /// Broadcast SYNC of this state.
    pub fn sync(&self) -> Message {
        Message::new(SignalType::Sync, "item", json!(self.id), self.data())
    }
}

/// A DELETE of item `id` with revision `rev`.
pub fn item_delete(id: i64, rev: i32, updated: DateTime<Utc>) -> Message {
    let data = json!({"id": id, "cqrs_revision": rev, "cqrs_updated": cqrs::message::format_datetime(&updated)});
    Message::new(
        SignalType::Delete,
        "item",
        json!(id),
        data.as_object().unwrap().clone(),
    )
}

/// The captured django-cqrs messages of one fixture file: (routing key, raw body).
pub fn capture(name: &str) -> Vec<(String, Vec<u8>)> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/protocol")
        .join(name);
    let v: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    v["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["method"]["routing_key"].as_str().unwrap().to_string(),
                m["body_raw"].as_str().unwrap().as_bytes().to_vec(),
            )
        })
        .collect()
}

/// Every capture file `NN_*.json`, sorted.
pub fn capture_files() -> Vec<String> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/protocol");
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".json") && n.as_bytes()[0].is_ascii_digit())
        .collect();
    names.sort();
    names
}

/// Bodies a hostile or broken producer can send, each with the dead-letter kind it must end in.
pub fn hostile_bodies() -> Vec<(&'static str, Vec<u8>, &'static str)> {
    use crate::at;
    use serde_json::json;
    let good = || -> serde_json::Value {
        serde_json::from_slice(&ItemState::new(9, 0, at(0)).save().encode()).unwrap()
    };
    let with = |key: &str, value: serde_json::Value| {
        let mut v = good();
        v[key] = value;
        serde_json::to_vec(&v).unwrap()
    };
    let data_with = |field: &str, value: serde_json::Value| {
        let mut v = good();
        v["instance_data"][field] = value;
        serde_json::to_vec(&v).unwrap()
    };
    let mut cases = vec![
        ("invalid UTF-8", vec![0xff, 0xfe, b'{', 0x80], "malformed"),
        ("empty body", Vec::new(), "malformed"),
        ("a JSON array", b"[1, 2]".to_vec(), "malformed"),
        (
            "nested 100,000 deep",
            format!("{}{}", "[".repeat(100_000), "]".repeat(100_000)).into_bytes(),
            "too-large",
        ),
        (
            "nested 1,000 deep",
            format!("{}{}", "[".repeat(1_000), "]".repeat(1_000)).into_bytes(),
            "malformed",
        ),
        (
            "signal_type a number",
            with("signal_type", json!(5)),
            "malformed",
        ),
        (
            "unknown signal_type",
            with("signal_type", json!("DROP")),
            "malformed",
        ),
        (
            "cqrs_id a list",
            with("cqrs_id", json!(["item"])),
            "malformed",
        ),
        (
            "instance_data a string",
            with("instance_data", json!("x")),
            "malformed",
        ),
        (
            "retries a string",
            with("retries", json!("many")),
            "malformed",
        ),
        ("retries negative", with("retries", json!(-1)), "malformed"),
        (
            "instance_pk a list",
            with("instance_pk", json!([9])),
            "malformed",
        ),
        (
            "previous_data a string",
            with("previous_data", json!("x")),
            "malformed",
        ),
        (
            "correlation_id an object",
            with("correlation_id", json!({"id": 1})),
            "malformed",
        ),
        (
            "name an object",
            data_with("name", json!({"a": 1})),
            "apply",
        ),
        (
            "expires garbage",
            with("expires", json!("soon")),
            "malformed",
        ),
        ("value a string", data_with("value", json!("lots")), "apply"),
        (
            "value out of range",
            data_with("value", json!(1e300)),
            "apply",
        ),
        (
            "revision a string",
            data_with("cqrs_revision", json!("zero")),
            "apply",
        ),
        (
            "cqrs_updated garbage",
            data_with("cqrs_updated", json!("yesterday")),
            "apply",
        ),
        (
            "pk of the wrong type",
            data_with("id", json!({"id": 9})),
            "apply",
        ),
    ];
    for id in ["item.#", "*", "it'em; DROP TABLE items; --", "a.b.c"] {
        cases.push((
            "a hostile cqrs_id",
            with("cqrs_id", json!(id)),
            "unknown-model",
        ));
    }
    cases.push((
        "a 300-byte cqrs_id",
        with("cqrs_id", json!("q".repeat(300))),
        "unknown-model",
    ));
    cases
}
