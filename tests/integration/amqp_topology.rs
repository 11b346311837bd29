//! RabbitMQ topology against the machine's broker (unique exchange and queue per test): what a
//! replica declares, and where broadcast and directed messages are routed.

use std::collections::BTreeSet;

use cqrs::db::SqlConn;
use cqrs::transport::amqp::{retry_exchange, retry_queue};
use cqrs::transport::dead_letter_queue;
use cqrs::{Relay, atomic};
use cqrs_tests::*;
use serde_json::{Value, json};

#[test]
fn topology_after_startup_is_django_cqrs_plus_our_extensions() {
    let b = TestBroker::new();
    let ids = ["item".to_string(), "typed".to_string()];
    b.transport
        .declare_replica(&b.queue, &ids, &b.delays)
        .unwrap();
    let dlq = dead_letter_queue(&b.queue);
    let rex = retry_exchange(&b.queue);
    let ours = |name: &str| name == b.exchange || name == b.queue || name.contains(&b.queue);

    let exchanges: BTreeSet<(String, String, bool)> =
        rabbitmqctl(&["list_exchanges", "name", "type", "durable"])
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| ours(e["name"].as_str().unwrap()))
            .map(|e| {
                (
                    e["name"].as_str().unwrap().to_string(),
                    e["type"].as_str().unwrap().to_string(),
                    e["durable"].as_bool().unwrap(),
                )
            })
            .collect();
    assert_eq!(
        exchanges,
        BTreeSet::from([
            (b.exchange.clone(), "topic".into(), true),
            (rex.clone(), "headers".into(), true)
        ])
    );

    // rabbitmqctl prints arguments as [name, type, value] triples: compare them as {name: value}.
    let canon = |a: &Value| match a {
        Value::Array(triples) => {
            let map: serde_json::Map<String, Value> = triples
                .iter()
                .map(|t| (t[0].as_str().unwrap().to_string(), t[2].clone()))
                .collect();
            Value::Object(map).to_string()
        }
        other => other.to_string(),
    };
    let queues: BTreeSet<(String, bool, String)> =
        rabbitmqctl(&["list_queues", "name", "durable", "arguments"])
            .as_array()
            .unwrap()
            .iter()
            .filter(|q| ours(q["name"].as_str().unwrap()))
            .map(|q| {
                (
                    q["name"].as_str().unwrap().to_string(),
                    q["durable"].as_bool().unwrap(),
                    canon(&q["arguments"]),
                )
            })
            .collect();
    let delay_args =
        |ms: u64| canon(&json!({"x-dead-letter-exchange": b.exchange, "x-message-ttl": ms}));
    let mut want = BTreeSet::from([
        (b.queue.clone(), true, "{}".to_string()),
        (dlq.clone(), true, "{}".to_string()),
    ]);
    for (d, ms) in [(b.delays[0], 100), (b.delays[1], 300)] {
        want.insert((retry_queue(&b.queue, d), true, delay_args(ms)));
    }
    assert_eq!(queues, want);

    let bindings: BTreeSet<(String, String, String)> = rabbitmqctl(&[
        "list_bindings",
        "source_name",
        "destination_name",
        "routing_key",
    ])
    .as_array()
    .unwrap()
    .iter()
    .filter(|x| ours(x["destination_name"].as_str().unwrap()))
    .map(|x| {
        (
            x["source_name"].as_str().unwrap().to_string(),
            x["destination_name"].as_str().unwrap().to_string(),
            x["routing_key"].as_str().unwrap().to_string(),
        )
    })
    .collect();
    let mut want: BTreeSet<(String, String, String)> = BTreeSet::new();
    for q in [&b.queue, &dlq] {
        want.insert((String::new(), q.clone(), q.clone())); // the default exchange's binding
    }
    for id in &ids {
        want.insert((b.exchange.clone(), b.queue.clone(), id.clone()));
        want.insert((
            b.exchange.clone(),
            b.queue.clone(),
            format!("cqrs.{}.{id}", b.queue),
        ));
        want.insert((
            b.exchange.clone(),
            dlq.clone(),
            format!("cqrs.dead_letter_{}.{id}", b.queue),
        ));
    }
    for d in &b.delays {
        let q = retry_queue(&b.queue, *d);
        want.insert((String::new(), q.clone(), q.clone()));
        want.insert((rex.clone(), q, String::new()));
    }
    assert_eq!(bindings, want);
}

/// A directed SYNC reaches only the named replica's queue; broadcast messages reach every bound queue.
#[test]
fn directed_sync_reaches_only_the_named_queue() {
    let b = TestBroker::new();
    let other = b.another_queue();
    b.declare(&["item"]);
    other.declare(&["item"]);
    let t = TestDb::new(Kind::Postgres);
    let mut db = t.connect();
    atomic(&mut db, |tx| insert_m_items(tx, 1)).unwrap();
    let id: i64 = db
        .load_text("SELECT CAST(id AS TEXT) AS j FROM m_items", vec![])
        .unwrap()[0]
        .parse()
        .unwrap();
    atomic(&mut db, |tx| tx.sync::<PlainItem>(&id, Some(&b.queue))).unwrap();
    let mut relay = Relay::new(t.connect(), b.transport.publisher().unwrap(), b.settings());
    relay.run_once().unwrap();
    let mine = b.drain(&b.queue);
    let theirs = other.drain(&other.queue);
    assert_eq!(
        mine.iter().map(|m| m.0.clone()).collect::<Vec<_>>(),
        ["item".to_string(), format!("cqrs.{}.item", b.queue)]
    );
    assert_eq!(
        theirs.iter().map(|m| m.0.clone()).collect::<Vec<_>>(),
        ["item"]
    );
}
