//! Replays real django-cqrs 3.1.0 traffic (tests/fixtures/protocol 01–16) into a SQLite replica
//! through the memory transport and the consumer engine: each message three times, shuffled, in
//! small batches. The replica ends as a Django replica fed in order would, whatever the order.
//!
//! ```sh
//! cargo run -p diesel-cqrs --example replay_captures
//! ```

use std::path::PathBuf;
use std::time::Duration;

use cqrs::message::Expires;
use cqrs::transport::{Headers, memory::MemoryBroker};
use cqrs::value::ColumnType;
use cqrs::{ColumnSpec, Consumer, Db, Message, Registry, Settings, TableReplica, TableSpec};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let fixtures = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/protocol");
    let dir = std::env::temp_dir().join(format!("cqrs-replay-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let url = format!("sqlite://{}", dir.join("replica.db").display());
    let mut db = Db::connect(&url)?;
    db.migrate()?;
    db.batch_execute(
        "CREATE TABLE items (id BIGINT PRIMARY KEY, name TEXT NOT NULL, value BIGINT NOT NULL,
         updated TEXT NOT NULL, cqrs_revision INTEGER NOT NULL, cqrs_updated TEXT NOT NULL)",
    )?;
    let spec = TableSpec::new("item", "items")
        .key("id", ColumnType::BigInt)
        .column(ColumnSpec::new("name", ColumnType::Text))
        .column(ColumnSpec::new("value", ColumnType::BigInt))
        .column(ColumnSpec::new("updated", ColumnType::Timestamptz))
        .build()?;
    let registry = Registry::new().with_replica(TableReplica::new(spec));

    // The captured messages, each three times, in a fixed pseudo-random order.
    let mut stream = Vec::new();
    let mut names: Vec<_> = std::fs::read_dir(&fixtures)?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.ends_with(".json") && n.as_str() < "17")
        .collect();
    names.sort();
    for name in &names {
        let capture: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(fixtures.join(name))?)?;
        for m in capture["messages"].as_array().into_iter().flatten() {
            let mut msg = Message::decode(m["body_raw"].as_str().unwrap_or_default().as_bytes())?;
            // Captured on 2026-11-23 with a one-day TTL: give them a fresh expiry, as a relay would.
            msg.expires = Expires::At(chrono::Utc::now() + chrono::Duration::days(1));
            // Broadcast, all of them: a directed SYNC is the repair path and is written even over a
            // tombstone, so a stale copy of one delivered after the DELETE would bring the row back.
            let key = msg.cqrs_id.clone();
            for _ in 0..3 {
                stream.push((key.clone(), msg.encode()));
            }
        }
    }
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    for i in (1..stream.len()).rev() {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        stream.swap(i, (seed % (i as u64 + 1)) as usize);
    }

    let broker = MemoryBroker::new();
    broker.declare_replica_queue("replica", &["item"]);
    for (key, body) in &stream {
        broker.publish(key, body.clone(), Headers::new());
    }
    let settings = Settings {
        batch_size: 5,
        ..Settings::default()
    };
    let mut consumer = Consumer::new(&registry, &settings, db, broker.inbox("replica"));
    consumer.drain(Duration::from_millis(50))?;
    let stats = consumer.stats();
    println!(
        "replayed {} captured django-cqrs messages x3 = {} deliveries, shuffled, in {} batches of <= 5",
        stream.len() / 3,
        stats.received,
        stats.batches
    );
    println!(
        "applied {} · skipped as duplicate/stale {} · dead letters {}",
        stats.apply.applied, stats.apply.skipped, stats.dead_lettered
    );
    println!("\nreplica table `items` ({url}):");
    for line in diesel_rows(consumer.db())? {
        println!("  {line}");
    }
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

/// The replica rows and the tombstones, as text.
fn diesel_rows(db: &mut Db) -> Result<Vec<String>, Box<dyn std::error::Error>> {
    use diesel::RunQueryDsl;
    use diesel::sql_types::{BigInt, Integer, Text};
    #[derive(diesel::QueryableByName)]
    struct Row {
        #[diesel(sql_type = BigInt)]
        id: i64,
        #[diesel(sql_type = Text)]
        name: String,
        #[diesel(sql_type = Integer)]
        rev: i32,
        #[diesel(sql_type = Text)]
        updated: String,
    }
    let Db::Sqlite(conn) = db else {
        return Err("the replay uses SQLite".into());
    };
    let rows: Vec<Row> = diesel::sql_query(
        "SELECT id, name, cqrs_revision AS rev, cqrs_updated AS updated FROM items \
         UNION ALL SELECT CAST(pk AS INTEGER), '(deleted: tombstone)', revision, cqrs_updated \
         FROM cqrs_tombstones WHERE cqrs_id = 'item' ORDER BY 1",
    )
    .load(conn)?;
    Ok(rows
        .into_iter()
        .map(|r| {
            format!(
                "id {:>2}  rev {}  {:<28} cqrs_updated {}",
                r.id, r.rev, r.name, r.updated
            )
        })
        .collect())
}
