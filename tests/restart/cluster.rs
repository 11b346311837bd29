//! A private 3-node RabbitMQ cluster with the replica's queues as quorum queues: a node is lost
//! (killed, or each in turn restarted) while the relay publishes and `consume -w 2` applies, and
//! the replica ends equal to the master row by row, with no dead letters.
//!
//! The relay connects first to the node that leads the replica's queue, so the kill takes its
//! connection: it reconnects to another node at once and opens a channel there while the queue
//! elects a new leader. RabbitMQ nacks publishes on such a channel, and one kept after the nacks
//! went on nacking every publish (../shared/research/ha-rabbitmq.md): a publisher that kept it
//! would leave this test's outbox full until the deadline.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use cqrs::config::QueueType;
use cqrs::relay::RelayStats;
use cqrs::transport::routing::dead_letter_queue;
use cqrs::{Db, Settings, Shutdown};
use cqrs_tests::*;
use diesel::prelude::*;
use diesel::sql_types::BigInt;
use example_master::{NewItem, schema::items};

pub(crate) const QUEUE: &str = "cluster_replica";
/// Rows per writer transaction.
const PER_COMMIT: usize = 100;

/// The leader of the replica's quorum queue killed with SIGKILL after 5,000 of 20,000 changes are
/// applied: nothing is lost or dead-lettered. Prints the time from the kill to the next confirm
/// and to the next apply.
#[test]
fn a_quorum_leader_killed_mid_stream_loses_nothing() {
    let _alone = crate::alone();
    let mut cluster = PrivateCluster::start(3);
    let flow = Flow::new(&cluster);
    let leader = cluster.leader_of(QUEUE);
    let total = 20_000;
    let (stats, (confirm_after, apply_after)) =
        flow.run(cluster.urls_leader_first(leader), Some(total), 50, |stop| {
            flow.wait_applied(5_000);
            let killed = Instant::now();
            let (confirmed, applied) = (flow.confirmed(), flow.applied());
            cluster.nodes[leader].crash();
            let firsts = first_after(
                killed,
                || flow.confirmed() > confirmed,
                || flow.applied() > applied,
            );
            let _ = stop; // the writer goes on to `total`
            firsts
        });
    eprintln!(
        "leader kill: next confirm after {} ms, next apply after {} ms; {} publishes refused",
        confirm_after.as_millis(),
        apply_after.as_millis(),
        stats.failed
    );
    assert_eq!(flow.applied(), total as i64);
    assert_eq!(cluster.count(&dead_letter_queue(QUEUE)), 0);
}

/// Every node stopped and started again in turn (each once the queues no longer need it for a
/// majority, as an operator's rolling upgrade does) while changes flow: nothing is lost.
#[test]
fn a_rolling_restart_of_the_cluster_loses_nothing() {
    let _alone = crate::alone();
    let mut cluster = PrivateCluster::start(3);
    let flow = Flow::new(&cluster);
    let leader = cluster.leader_of(QUEUE);
    let (stats, written) = flow.run(cluster.urls_leader_first(leader), None, 250, |stop| {
        flow.wait_applied(2_000);
        for i in 0..cluster.nodes.len() {
            cluster.await_not_quorum_critical(i);
            cluster.nodes[i].stop();
            std::thread::sleep(Duration::from_secs(2));
            cluster.nodes[i].boot();
        }
        std::thread::sleep(Duration::from_secs(2));
        stop.store(true, Ordering::Release);
        flow.confirmed() // at least this much was written
    });
    eprintln!(
        "rolling restart: {} rows, {} publishes refused",
        flow.applied(),
        stats.failed
    );
    assert!(flow.applied() >= written && written > 2_000);
    assert_eq!(cluster.count(&dead_letter_queue(QUEUE)), 0);
}

/// How long after `since` each of `a` and `b` first held (both polled every 20 ms).
pub(crate) fn first_after(
    since: Instant,
    a: impl Fn() -> bool,
    b: impl Fn() -> bool,
) -> (Duration, Duration) {
    let (mut at_a, mut at_b) = (None, None);
    wait_until(Duration::from_secs(120), "a confirm and an apply", || {
        if at_a.is_none() && a() {
            at_a = Some(since.elapsed());
        }
        if at_b.is_none() && b() {
            at_b = Some(since.elapsed());
        }
        std::thread::sleep(Duration::from_millis(20));
        at_a.is_some() && at_b.is_some()
    });
    (at_a.unwrap(), at_b.unwrap())
}

/// A master and a replica database with the example models, and the replica's queue declared on
/// a cluster (RabbitMQ's or NATS's).
pub(crate) struct Flow {
    master: TestDb,
    replica: TestDb,
    base: Settings,
}

impl Flow {
    fn new(cluster: &PrivateCluster) -> Flow {
        Flow::on(Settings {
            broker_url: Some(cluster.urls(&[0])),
            queue_type: QueueType::Quorum,
            ..Settings::default()
        })
    }

    /// Declare the replica's queue with `broker`'s URL and queue type.
    pub(crate) fn on(broker: Settings) -> Flow {
        let (master, replica) = example_dbs();
        let _ = tracing_subscriber::fmt()
            .with_env_filter("warn")
            .with_test_writer()
            .try_init();
        let base = Settings {
            queue: Some(QUEUE.into()),
            service_name: "cluster".into(),
            batch_size: 100,
            ..broker
        };
        cqrs::transport::connect(&base, "setup")
            .unwrap()
            .declare_replica(QUEUE, &["item".into(), "typed".into()], &base.retry_delays)
            .unwrap();
        Flow {
            master,
            replica,
            base,
        }
    }

    fn pg(db: &TestDb) -> PgConnection {
        match db.connect() {
            Db::Pg(pg) => pg,
            Db::Sqlite(_) => unreachable!(),
        }
    }

    /// Items committed on the master whose outbox row is gone (confirmed), in one snapshot.
    pub(crate) fn confirmed(&self) -> i64 {
        diesel::select(diesel::dsl::sql::<BigInt>(
            "(SELECT count(*) FROM items) - (SELECT count(*) FROM cqrs_outbox)",
        ))
        .get_result(&mut Self::pg(&self.master))
        .unwrap()
    }

    /// Items in the replica.
    pub(crate) fn applied(&self) -> i64 {
        diesel::select(diesel::dsl::sql::<BigInt>(
            "(SELECT count(*) FROM replica_items)",
        ))
        .get_result(&mut Self::pg(&self.replica))
        .unwrap()
    }

    pub(crate) fn wait_applied(&self, n: i64) {
        wait_until(
            Duration::from_secs(120),
            &format!("{n} items applied"),
            || self.applied() >= n,
        );
    }

    /// Run a relay (on the first of `urls`) and `consume -w 2` (on the second) while a writer
    /// commits items, 100 per transaction every `pace_ms`, until `total` are written or (with no
    /// `total`) `disrupt` sets the flag it gets. Then wait until the
    /// replica equals the master row by row and return the relay's counters and what `disrupt`
    /// returned.
    pub(crate) fn run<T: Send>(
        &self,
        urls: (String, String),
        total: Option<usize>,
        pace_ms: u64,
        disrupt: impl FnOnce(&AtomicBool) -> T + Send,
    ) -> (RelayStats, T) {
        let relay_settings = Settings {
            database_url: Some(self.master.url.clone()),
            broker_url: Some(urls.0),
            ..self.base.clone()
        };
        let consumer_settings = Settings {
            database_url: Some(self.replica.url.clone()),
            broker_url: Some(urls.1),
            ..self.base.clone()
        };
        let registry = example_replica::registry();
        let shutdown = Shutdown::new();
        let stop_writing = AtomicBool::new(false);
        let (stats, out) = std::thread::scope(|s| {
            let _stop = StopOnDrop(&shutdown);
            let consumer = s
                .spawn(|| cqrs::service::consume(&registry, &consumer_settings, 2, &[], &shutdown));
            let relay = s.spawn(|| cqrs::service::relay(&relay_settings, &shutdown));
            let writer = s.spawn(|| {
                let mut pg = Self::pg(&self.master);
                let mut written = 0;
                while total.is_none_or(|t| written < t) && !stop_writing.load(Ordering::Acquire) {
                    let names: Vec<String> = (0..PER_COMMIT)
                        .map(|i| format!("item {}", written + i))
                        .collect();
                    let rows: Vec<NewItem> = names
                        .iter()
                        .enumerate()
                        .map(|(i, name)| NewItem {
                            name,
                            value: (written + i) as i64,
                        })
                        .collect();
                    cqrs::atomic(&mut pg, |tx| {
                        tx.insert_into(items::table).values(&rows).execute()
                    })
                    .unwrap();
                    written += PER_COMMIT;
                    std::thread::sleep(Duration::from_millis(pace_ms));
                }
            });
            let out = disrupt(&stop_writing);
            writer.join().unwrap();
            wait_until(
                Duration::from_secs(180),
                "an empty outbox and the replica's items equal to the master's",
                || {
                    cqrs::outbox::pending(&mut self.master.connect()).unwrap() == 0
                        && example_replica_items(&self.replica)
                            == example_master_items(&self.master)
                },
            );
            shutdown.trigger();
            consumer.join().unwrap().unwrap();
            (relay.join().unwrap().unwrap(), out)
        });
        (stats, out)
    }
}
