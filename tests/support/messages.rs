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
