//! A private 3-node JetStream cluster with the stream at 3 replicas: the stream's leader is killed
//! while the relay publishes and `consume -w 2` applies, and the replica ends equal to the master
//! row by row, with no dead letters. The same flow as the RabbitMQ cluster's (`cluster.rs`).

use std::time::Instant;

use cqrs::Settings;
use cqrs_tests::nats::PrivateNatsCluster;

use crate::cluster::{Flow, QUEUE, first_after};

/// The leader of the stream killed with SIGKILL after 5,000 of 20,000 changes are applied:
/// nothing is lost or dead-lettered. Prints the time from the kill to the next confirm and to
/// the next apply.
#[test]
fn a_stream_leader_killed_mid_stream_loses_nothing() {
    let _alone = crate::alone();
    let mut cluster = PrivateNatsCluster::start(3);
    let urls = cluster.urls(3);
    let flow = Flow::on(Settings {
        broker_url: Some(urls.clone()),
        ..Settings::default()
    });
    let leader = cluster.leader_of("cqrs");
    let total = 20_000;
    let (stats, (confirm_after, apply_after)) =
        flow.run((urls.clone(), urls), Some(total), 50, |_| {
            flow.wait_applied(5_000);
            let killed = Instant::now();
            let (confirmed, applied) = (flow.confirmed(), flow.applied());
            cluster.nodes[leader].kill();
            first_after(
                killed,
                || flow.confirmed() > confirmed,
                || flow.applied() > applied,
            )
        });
    eprintln!(
        "NATS stream leader kill: next confirm after {} ms, next apply after {} ms; {} publishes refused",
        confirm_after.as_millis(),
        apply_after.as_millis(),
        stats.failed
    );
    assert_eq!(flow.applied(), total as i64);
    let settings = Settings {
        broker_url: Some(cluster.urls(3)),
        ..Settings::default()
    };
    let dead = cqrs::transport::connect(&settings, "check")
        .unwrap()
        .letters(QUEUE)
        .unwrap()
        .total();
    assert_eq!(dead, 0);
}
