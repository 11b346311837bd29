//! One soak setup: where the master, the replica and the broker live, how the processes reach
//! them, and the faults that apply to it.
//!
//! - `pg`: a private PostgreSQL cluster and a private RabbitMQ node (never the machine's shared
//!   ones), each behind a [`ChaosProxy`] that the relay and consumers connect through.
//! - `sqlite`: SQLite files and the SQLite queue file in a temporary directory.
//! - `cluster`: a private PostgreSQL cluster and a private 3-node RabbitMQ cluster with quorum
//!   queues; the processes are given every node's URL.
//! - `nats`: a private PostgreSQL cluster and a private nats-server with JetStream.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use cqrs::db::Db;
use cqrs_tests::{ChaosProxy, PrivateCluster, PrivateNats, PrivatePostgres, PrivateRabbit};

use crate::processes::Supervisor;
use cqrs_tests::rng::Rng;

/// A kind of fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Fault {
    KillRelay,
    KillConsumer,
    RabbitStop,
    RabbitCrash,
    PostgresStop,
    PostgresCrash,
    LinkCut,
    LinkSlow,
    ConnectionsClosed,
    NodeStop,
    NodeCrash,
    LeaderCrash,
    NatsStop,
    NatsCrash,
}

impl Fault {
    /// The name printed in the report.
    pub fn name(self) -> &'static str {
        match self {
            Fault::KillRelay => "SIGKILL relay",
            Fault::KillConsumer => "SIGKILL consumer",
            Fault::RabbitStop => "RabbitMQ stopped",
            Fault::RabbitCrash => "RabbitMQ killed",
            Fault::PostgresStop => "PostgreSQL stopped",
            Fault::PostgresCrash => "PostgreSQL killed",
            Fault::LinkCut => "link cut",
            Fault::LinkSlow => "link slowed",
            Fault::ConnectionsClosed => "connections closed by name",
            Fault::NodeStop => "cluster node stopped",
            Fault::NodeCrash => "cluster node killed",
            Fault::LeaderCrash => "quorum leader killed",
            Fault::NatsStop => "nats-server stopped",
            Fault::NatsCrash => "nats-server killed",
        }
    }
}

/// The service name the processes connect as (RabbitMQ connection names `soak-<role>`).
pub const SERVICE: &str = "soak";

/// Servers of the `pg` setup.
struct Servers {
    pg: PrivatePostgres,
    rabbit: PrivateRabbit,
    pg_proxy: ChaosProxy,
    rabbit_proxy: ChaosProxy,
}

/// A prepared setup.
pub struct Setup {
    /// Direct URLs, for the writer and the final comparison.
    pub master_url: String,
    pub replica_url: String,
    pub broker_url: String,
    /// What the relay and consumers get (through the proxies where there are).
    pub process_master_url: String,
    pub process_replica_url: String,
    pub process_broker_url: String,
    pub exchange: String,
    pub queue: String,
    pub tap: String,
    /// Where the processes run, log and find their `cqrs.toml`.
    pub dir: PathBuf,
    servers: Option<Servers>,
    cluster: Option<ClusterServers>,
    nats: Option<NatsServers>,
}

/// Servers of the `nats` setup.
struct NatsServers {
    pg: PrivatePostgres,
    nats: PrivateNats,
}

/// Servers of the `cluster` setup.
struct ClusterServers {
    pg: PrivatePostgres,
    rabbit: PrivateCluster,
}

impl Setup {
    /// Start the servers (for `pg`) and create both databases' tables and the broker topology.
    pub fn prepare(name: &'static str, seed: u64) -> cqrs::Result<Setup> {
        let dir =
            std::env::temp_dir().join(format!("cqrs-soak-{name}-{}-{seed}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("a temporary directory");
        let file = |f: &str| format!("sqlite://{}", dir.join(f).display());
        let mut setup = if name == "pg" {
            let pg = PrivatePostgres::start();
            let rabbit = PrivateRabbit::start();
            let addr = |port: u16| SocketAddr::from(([127, 0, 0, 1], port));
            let pg_proxy = ChaosProxy::start(addr(pg.port));
            let rabbit_proxy = ChaosProxy::start(addr(rabbit.port));
            create_databases(&pg)?;
            let via = |db: &str| format!("postgres://postgres@127.0.0.1:{}/{db}", pg_proxy.port);
            Setup {
                master_url: pg.url("soak_master"),
                replica_url: pg.url("soak_replica"),
                broker_url: rabbit.url(),
                process_master_url: via("soak_master"),
                process_replica_url: via("soak_replica"),
                process_broker_url: format!(
                    "amqp://guest:guest@127.0.0.1:{}/%2f",
                    rabbit_proxy.port
                ),
                exchange: "soak".into(),
                queue: "soak_replica".into(),
                tap: "soak_tap".into(),
                dir: dir.clone(),
                servers: Some(Servers {
                    pg,
                    rabbit,
                    pg_proxy,
                    rabbit_proxy,
                }),
                cluster: None,
                nats: None,
            }
        } else if name == "nats" {
            let pg = PrivatePostgres::start();
            let nats = PrivateNats::start();
            create_databases(&pg)?;
            Setup {
                master_url: pg.url("soak_master"),
                replica_url: pg.url("soak_replica"),
                broker_url: nats.url(),
                process_master_url: pg.url("soak_master"),
                process_replica_url: pg.url("soak_replica"),
                process_broker_url: nats.url(),
                exchange: "soak".into(),
                queue: "soak_replica".into(),
                tap: "soak_tap".into(),
                dir: dir.clone(),
                servers: None,
                cluster: None,
                nats: Some(NatsServers { pg, nats }),
            }
        } else if name == "cluster" {
            let pg = PrivatePostgres::start();
            let rabbit = PrivateCluster::start(3);
            create_databases(&pg)?;
            let broker = rabbit.urls(&[0, 1, 2]);
            Setup {
                master_url: pg.url("soak_master"),
                replica_url: pg.url("soak_replica"),
                broker_url: broker.clone(),
                process_master_url: pg.url("soak_master"),
                process_replica_url: pg.url("soak_replica"),
                process_broker_url: broker,
                exchange: "soak".into(),
                queue: "soak_replica".into(),
                tap: "soak_tap".into(),
                dir: dir.clone(),
                servers: None,
                cluster: Some(ClusterServers { pg, rabbit }),
                nats: None,
            }
        } else {
            Setup {
                master_url: file("master.db"),
                replica_url: file("replica.db"),
                broker_url: file("queue.db"),
                process_master_url: file("master.db"),
                process_replica_url: file("replica.db"),
                process_broker_url: file("queue.db"),
                exchange: "soak".into(),
                queue: "soak_replica".into(),
                tap: "soak_tap".into(),
                dir: dir.clone(),
                servers: None,
                cluster: None,
                nats: None,
            }
        };
        cqrs_tests::items::create(&mut Db::connect(&setup.master_url)?, true)?;
        cqrs_tests::items::create(&mut Db::connect(&setup.replica_url)?, false)?;
        // Short leases: a killed relay's or consumer's messages come back within seconds.
        let queue_type = if setup.cluster.is_some() {
            "queue_type = \"quorum\"\n"
        } else {
            ""
        };
        std::fs::write(
            dir.join("cqrs.toml"),
            format!("relay_lease_ms = 2000\nlocal_lease_ms = 3000\nbatch_size = 200\n{queue_type}"),
        )
        .expect("cqrs.toml written");
        let settings = setup.settings();
        let broker = cqrs::transport::connect(&settings, "setup")?;
        let ids = [cqrs_tests::items::CQRS_ID.to_string()];
        broker.declare_replica(&setup.queue, &ids, &settings.retry_delays)?;
        broker.declare_replica(&setup.tap, &ids, &settings.retry_delays)?;
        setup.dir = dir;
        Ok(setup)
    }

    /// Settings for connecting directly to this setup's broker.
    pub fn settings(&self) -> cqrs::Settings {
        cqrs::Settings {
            broker_url: Some(self.broker_url.clone()),
            exchange: self.exchange.clone(),
            queue: Some(self.queue.clone()),
            service_name: SERVICE.into(),
            queue_type: if self.cluster.is_some() {
                cqrs::config::QueueType::Quorum
            } else {
                cqrs::config::QueueType::Classic
            },
            ..cqrs::Settings::default()
        }
    }

    /// The faults this setup can suffer.
    pub fn faults(&self) -> Vec<Fault> {
        let mut kinds = vec![Fault::KillRelay, Fault::KillConsumer];
        if self.servers.is_some() {
            kinds.extend([
                Fault::RabbitStop,
                Fault::RabbitCrash,
                Fault::PostgresStop,
                Fault::PostgresCrash,
                Fault::LinkCut,
                Fault::LinkSlow,
                Fault::ConnectionsClosed,
            ]);
        }
        if self.nats.is_some() {
            kinds.extend([Fault::NatsStop, Fault::NatsCrash, Fault::PostgresCrash]);
        }
        if self.cluster.is_some() {
            kinds.extend([
                Fault::NodeStop,
                Fault::NodeCrash,
                Fault::LeaderCrash,
                Fault::PostgresCrash,
            ]);
        }
        kinds
    }

    /// Start the relay and two consumer processes (two workers each).
    pub fn start_processes(&self, supervisor: &Supervisor) {
        let common = |db: &str| -> Vec<String> {
            [
                "--database-url",
                db,
                "--broker-url",
                &self.process_broker_url,
                "--exchange",
                &self.exchange,
                "--queue",
                &self.queue,
                "--service-name",
                SERVICE,
            ]
            .iter()
            .map(|s| s.to_string())
            .collect()
        };
        let mut relay = vec!["relay".to_string()];
        relay.extend(common(&self.process_master_url));
        supervisor.start("relay", relay);
        for n in 1..=2 {
            let mut consume = vec!["consume".to_string(), "-w".into(), "2".into()];
            consume.extend(common(&self.process_replica_url));
            supervisor.start(&format!("consumer-{n}"), consume);
        }
    }

    /// Inject one fault and undo it (a stopped server started again, a link healed) before
    /// returning; a short description of what was done.
    pub fn inject(&mut self, fault: Fault, rng: &mut Rng, supervisor: &Supervisor) -> String {
        let outage = rng.millis(1_000, 4_000);
        match fault {
            Fault::KillRelay => supervisor.kill("relay", rng).unwrap_or_default(),
            Fault::KillConsumer => supervisor.kill("consumer", rng).unwrap_or_default(),
            _ if self.nats.is_some() => {
                let n = self.nats.as_mut().expect("checked");
                match fault {
                    Fault::NatsStop => n.nats.stop(),
                    Fault::NatsCrash => n.nats.kill(),
                    Fault::PostgresCrash => n.pg.crash(),
                    _ => unreachable!("not a fault of the nats setup: {fault:?}"),
                }
                std::thread::sleep(outage);
                match fault {
                    Fault::PostgresCrash => n.pg.boot(),
                    _ => n.nats.boot(),
                }
                format!("down for {outage:?}")
            }
            _ if self.cluster.is_some() => {
                let c = self.cluster.as_mut().expect("checked");
                cluster_fault(c, fault, outage, rng, &self.queue)
            }
            _ => {
                let s = self
                    .servers
                    .as_mut()
                    .expect("server faults need the pg setup");
                match fault {
                    Fault::RabbitStop => {
                        s.rabbit.stop();
                        std::thread::sleep(outage);
                        s.rabbit.boot();
                    }
                    Fault::RabbitCrash => {
                        s.rabbit.crash();
                        std::thread::sleep(outage);
                        s.rabbit.boot();
                    }
                    Fault::PostgresStop => {
                        s.pg.stop();
                        std::thread::sleep(outage);
                        s.pg.boot();
                    }
                    Fault::PostgresCrash => {
                        s.pg.crash();
                        std::thread::sleep(outage);
                        s.pg.boot();
                    }
                    Fault::LinkCut | Fault::LinkSlow => {
                        let (proxy, which) = if rng.chance(0.5) {
                            (&s.pg_proxy, "PostgreSQL")
                        } else {
                            (&s.rabbit_proxy, "RabbitMQ")
                        };
                        let what = if fault == Fault::LinkCut {
                            proxy.cut();
                            format!("{which} link cut for {outage:?}")
                        } else {
                            let delay = rng.millis(20, 200);
                            proxy.slow(delay);
                            format!("{which} link slowed by {delay:?} per chunk for {outage:?}")
                        };
                        std::thread::sleep(outage);
                        proxy.heal();
                        return what;
                    }
                    Fault::ConnectionsClosed => return close_connections(s),
                    Fault::KillRelay
                    | Fault::KillConsumer
                    | Fault::NodeStop
                    | Fault::NodeCrash
                    | Fault::LeaderCrash
                    | Fault::NatsStop
                    | Fault::NatsCrash => unreachable!("not a fault of this setup"),
                }
                format!("down for {outage:?}")
            }
        }
    }
}

/// Inject `fault` into the cluster setup and undo it after `outage`. A node comes back only once
/// the queues again have every member they need, so the next fault never takes a majority.
fn cluster_fault(
    c: &mut ClusterServers,
    fault: Fault,
    outage: Duration,
    rng: &mut Rng,
    queue: &str,
) -> String {
    let n = c.rabbit.nodes.len();
    let node = match fault {
        Fault::LeaderCrash => c.rabbit.leader_of(queue),
        _ => rng.below(n as u64) as usize,
    };
    match fault {
        Fault::PostgresCrash => {
            c.pg.crash();
            std::thread::sleep(outage);
            c.pg.boot();
            return format!("down for {outage:?}");
        }
        Fault::NodeStop => c.rabbit.nodes[node].stop(),
        Fault::NodeCrash | Fault::LeaderCrash => c.rabbit.nodes[node].crash(),
        _ => unreachable!("not a cluster fault: {fault:?}"),
    }
    std::thread::sleep(outage);
    c.rabbit.nodes[node].boot();
    c.rabbit.await_not_quorum_critical((node + 1) % n);
    format!("node {} down for {outage:?}", node + 1)
}

/// Close the processes' RabbitMQ connections by their names and terminate every PostgreSQL
/// backend of the soak's databases; how many of each.
fn close_connections(s: &Servers) -> String {
    // The name a client gives its connection travels in its client properties (`connection_name`).
    let listed = s
        .rabbit
        .ctl(&["list_connections", "pid", "client_properties"])
        .map(|o| String::from_utf8_lossy(&o.stdout).to_string())
        .unwrap_or_default();
    let mut closed = 0;
    for line in listed.lines() {
        let Some((pid, properties)) = line.split_once('\t') else {
            continue;
        };
        if properties.contains(&format!("\"{SERVICE}-")) {
            let ok = s
                .rabbit
                .ctl(&["close_connection", pid, "soak: connection closed by name"])
                .map(|o| o.status.success())
                .unwrap_or(false);
            closed += usize::from(ok);
        }
    }
    let terminated = Command::new("psql")
        .arg(s.pg.url("postgres"))
        .args([
            "-Atc",
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
             WHERE datname IN ('soak_master', 'soak_replica') AND pid <> pg_backend_pid()",
        ])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    format!("{closed} RabbitMQ connections closed, {terminated} PostgreSQL backends terminated")
}

/// The master's and the replica's databases on the private cluster.
fn create_databases(pg: &PrivatePostgres) -> cqrs::Result<()> {
    let mut admin = Db::connect(&pg.url("postgres"))?;
    admin.batch_execute("CREATE DATABASE soak_master")?;
    admin.batch_execute("CREATE DATABASE soak_replica")
}

/// How long a fault-free pause between faults lasts.
pub fn gap(rng: &mut Rng, long: bool) -> Duration {
    if long {
        rng.millis(3_000, 15_000)
    } else {
        rng.millis(1_000, 3_000)
    }
}
