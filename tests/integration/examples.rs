//! The example services: Diesel models with the derives, captured with Diesel statements, relayed
//! and consumed into the replica service's tables (PostgreSQL, their schema's backend).

use std::time::Duration;

use cqrs::transport::memory::MemoryBroker;
use cqrs::{Consumer, Db, Relay, Settings};
use cqrs_tests::*;

#[test]
fn example_master_replicates_into_example_replica() {
    let (master, replica) = example_dbs();
    let Db::Pg(mut pg) = master.connect() else {
        unreachable!()
    };

    let mut pairs = Vec::new();
    for i in 0..20 {
        pairs.push(
            example_master::create_pair(&mut pg, &format!("item {i}"), i, &format!("{i}.50"))
                .unwrap(),
        );
    }
    for (id, _) in &pairs[..10] {
        example_master::set_value(&mut pg, *id, id * 100).unwrap();
    }
    // Items 10..14 hold values 10..14 (the first ten were raised to id * 100 above).
    assert_eq!(example_master::raise_to(&mut pg, 15).unwrap(), 5);
    for (_, typed) in &pairs[15..] {
        assert!(example_master::delete_typed(&mut pg, *typed).unwrap());
    }

    let broker = MemoryBroker::new();
    broker.declare_replica_queue("example_replica", &["item", "typed"]);
    let mut relay = Relay::new(master.connect(), broker.clone(), Settings::default());
    while relay.run_once().unwrap() > 0 {}
    let registry = example_replica::registry();
    let settings = Settings::default();
    let mut consumer = Consumer::new(
        &registry,
        &settings,
        replica.connect(),
        broker.inbox("example_replica"),
    );
    consumer.drain(Duration::from_millis(50)).unwrap();

    assert_eq!(
        example_replica_items(&replica),
        example_master_items(&master)
    );
    let got = example_replica_typed(&replica);
    assert_eq!(got, example_master_typed(&master));
    assert_eq!(got.len(), 15, "five UUID-keyed rows deleted");
    assert_eq!(tombstones(&mut replica.connect(), "typed").len(), 5);
}
