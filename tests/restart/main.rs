//! Tests that stop and start a broker node (RabbitMQ, or NATS in a JetStream cluster). They use
//! private nodes ([`PrivateRabbit`], `PrivateNatsCluster`), never the machine's shared broker, and
//! live in their own test binary so they do not run beside the other tests.

use std::time::Duration;

use cqrs::{Db, Settings, Shutdown};
use cqrs_tests::*;

mod cluster;
mod failover;
mod nats_cluster;

/// One broker scenario at a time: Erlang nodes booting beside the workers on 2 cores are slow to
/// no purpose, and a cluster's three nodes more so.
fn alone() -> std::sync::MutexGuard<'static, ()> {
    static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

/// How the broker goes away.
#[derive(Clone, Copy)]
enum Outage {
    /// `rabbitmqctl stop`.
    Stop,
    /// SIGKILL to the node.
    Crash,
    /// Down before the relay and the consumer start (its queues were declared earlier).
    NotYetStarted,
}

/// The broker stops (cleanly) in the middle of a stream of changes and starts again 5 s later:
/// the application keeps committing (the changes wait in the outbox), the relay and two consumer
/// workers reconnect on their own, and the replica converges to the master with nothing lost.
#[test]
fn a_broker_restart_mid_stream_loses_nothing() {
    outage_mid_stream(Outage::Stop);
}

/// The same with the broker killed by SIGKILL: messages it confirmed were on disk; the ones in
/// flight were not confirmed, stayed in the outbox and are published again.
#[test]
fn a_broker_killed_mid_stream_loses_nothing() {
    outage_mid_stream(Outage::Crash);
}

/// Services started while the broker is not up yet (a deploy that starts them first) wait for it
/// with the reconnect backoff instead of exiting; once it is up, everything committed meanwhile
/// arrives.
#[test]
fn services_started_before_the_broker_wait_for_it() {
    outage_mid_stream(Outage::NotYetStarted);
}

fn outage_mid_stream(outage: Outage) {
    let _alone = alone();
    let mut rabbit = PrivateRabbit::start();
    let (master, replica) = example_dbs();
    let _ = tracing_subscriber::fmt()
        .with_env_filter("warn")
        .with_test_writer()
        .try_init();
    let queue = "restart_replica".to_string();
    let base = Settings {
        broker_url: Some(rabbit.url()),
        queue: Some(queue.clone()),
        service_name: "restart".into(),
        batch_size: 100,
        ..Settings::default()
    };
    let replica_settings = Settings {
        database_url: Some(replica.url.clone()),
        ..base.clone()
    };
    let master_settings = Settings {
        database_url: Some(master.url.clone()),
        ..base.clone()
    };
    // The queue exists before the first publish (a message nobody is bound for is dropped).
    cqrs::transport::connect(&base, "setup")
        .unwrap()
        .declare_replica(&queue, &["item".into(), "typed".into()], &base.retry_delays)
        .unwrap();

    let registry = example_replica::registry();
    let shutdown = Shutdown::new();
    let Db::Pg(mut pg) = master.connect() else {
        unreachable!()
    };
    // The broker is down from round `down_at` (before the services start for NotYetStarted) to
    // round `down_at + 5`.
    let down_at = match outage {
        Outage::NotYetStarted => {
            rabbit.stop();
            0
        }
        Outage::Stop | Outage::Crash => 10,
    };
    let mut kept_while_down = 0;
    std::thread::scope(|s| {
        let _stop = StopOnDrop(&shutdown);
        let consumer =
            s.spawn(|| cqrs::service::consume(&registry, &replica_settings, 2, &[], &shutdown));
        let relay = s.spawn(|| cqrs::service::relay(&master_settings, &shutdown));
        let mut ids = Vec::new();
        for round in 0..30 {
            for i in 0..20 {
                let n = round * 20 + i;
                let (id, _) =
                    example_master::create_pair(&mut pg, &format!("item {n}"), n, "9.99").unwrap();
                ids.push(id);
            }
            for id in ids.iter().rev().take(10) {
                example_master::set_value(&mut pg, *id, id * 3).unwrap();
            }
            if round == down_at {
                match outage {
                    Outage::Stop => rabbit.stop(),
                    Outage::Crash => rabbit.crash(),
                    Outage::NotYetStarted => {}
                }
            }
            if round == down_at + 5 {
                kept_while_down = cqrs::outbox::pending(&mut master.connect()).unwrap();
                rabbit.boot();
            }
            // Pacing the producer: a round every 100 ms, a second per round while the broker is
            // down, so changes keep arriving before, during and after the outage.
            std::thread::sleep(Duration::from_millis(
                if (down_at..down_at + 5).contains(&round) {
                    1000
                } else {
                    100
                },
            ));
        }
        wait_until(
            Duration::from_secs(180),
            "an empty outbox and the replica's items equal to the master's",
            || {
                cqrs::outbox::pending(&mut master.connect()).unwrap() == 0
                    && example_replica_items(&replica) == example_master_items(&master)
            },
        );
        // Typed rows arrive in the same stream; let their last batch land too.
        wait_until(Duration::from_secs(30), "typed rows to converge", || {
            example_replica_typed(&replica) == example_master_typed(&master)
        });
        shutdown.trigger();
        consumer.join().unwrap().unwrap();
        relay.join().unwrap().unwrap();
    });
    // 5 rounds of 60 changes were committed while the broker was down: they waited in the outbox.
    assert!(
        kept_while_down >= 200,
        "only {kept_while_down} changes waited in the outbox while the broker was down"
    );
    assert_eq!(example_replica_items(&replica).len(), 600);
}
