//! `cqrs demo`: the whole product in one process — a master and a replica database, the outbox,
//! an in-process relay, a consumer, a realistic stream of creates, updates, deletes and a directed
//! sync — then the diff and deleted-rows pipelines to prove zero drift. Written as an application
//! would use the library: its public API only.
//!
//! Defaults to the embedded setup (SQLite files and the SQLite queue file in one directory);
//! database and broker URLs switch it to PostgreSQL and RabbitMQ.

mod models;
mod timed;
mod workload;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use cqrs::db::{Db, SqlConn, redact};
use cqrs::ops::diff;
use cqrs::transport::{self, Broker, dead_letter_queue};
use cqrs::{
    Consumer, Error, ErrorKind, MasterModel, Registry, Relay, Replica, Settings, Shutdown,
    TableReplica,
};

use models::{CQRS_ID, DemoItem, MASTER_TABLE, REPLICA_TABLE, ddl, table};
use timed::{Latencies, Timed};

/// The replica queue the demo consumes unless told otherwise.
pub(crate) const DEFAULT_QUEUE: &str = "cqrs_demo_replica";

/// How long the replica may take to converge after the workload.
const CONVERGE_TIMEOUT: Duration = Duration::from_secs(300);

/// What to run.
#[derive(Debug, Clone)]
pub(crate) struct Options {
    /// Rows created (updates, deletes and the sync scale with it).
    pub rows: usize,
    /// Where the SQLite files go.
    pub dir: PathBuf,
    /// Master and replica database (default: `master.db` / `replica.db` in `dir`).
    pub database_url: Option<String>,
    /// Broker (default: `queue.db` in `dir`).
    pub broker_url: Option<String>,
    /// Exchange on RabbitMQ.
    pub exchange: String,
    /// The replica's queue.
    pub queue: String,
}

/// What happened.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Summary {
    /// Rows on the master at the end.
    pub master_rows: usize,
    /// Rows on the replica at the end.
    pub replica_rows: usize,
    /// Rows the diff pipelines found different or missing (must be 0).
    pub drift: usize,
    /// Messages published.
    pub messages: usize,
    /// From the first change to the replica converged.
    pub elapsed: Duration,
    /// Commit → apply latency, 50th percentile.
    pub p50: Duration,
    /// Commit → apply latency, 99th percentile.
    pub p99: Duration,
    /// The database URLs (master, replica) and the broker URL used.
    pub urls: (String, String, String),
}

/// The databases and broker of one run, prepared and empty.
struct Setup {
    master_url: String,
    replica_url: String,
    broker_url: String,
    settings: Settings,
    master: Db,
    replica: Db,
    broker: Box<dyn Broker>,
    registry: Registry,
    latencies: Latencies,
}

/// Run the demo; `progress` gets one-line status updates.
pub(crate) fn run(opts: &Options, progress: &mut dyn FnMut(&str)) -> cqrs::Result<Summary> {
    let mut setup = prepare(opts)?;
    let started = Instant::now();
    let messages = stream(&mut setup, opts, progress)?;
    let elapsed = started.elapsed();
    let Setup {
        mut master,
        mut replica,
        registry,
        latencies,
        ..
    } = setup;
    Ok(Summary {
        master_rows: count(&mut master, MASTER_TABLE)?,
        replica_rows: count(&mut replica, REPLICA_TABLE)?,
        drift: drift(&mut master, &mut replica, &registry, &opts.queue)?,
        messages,
        elapsed,
        p50: latencies.percentile(0.50),
        p99: latencies.percentile(0.99),
        urls: (
            redact(&setup.master_url),
            redact(&setup.replica_url),
            redact(&setup.broker_url),
        ),
    })
}

/// Fresh tables on both sides, an empty outbox, tombstones and queue: nothing left from an
/// earlier run.
fn prepare(opts: &Options) -> cqrs::Result<Setup> {
    std::fs::create_dir_all(&opts.dir)
        .map_err(|e| Error::new(ErrorKind::Io, format!("{}: {e}", opts.dir.display())))?;
    let file = |name: &str| format!("sqlite://{}", opts.dir.join(name).display());
    let master_url = opts
        .database_url
        .clone()
        .unwrap_or_else(|| file("master.db"));
    let replica_url = opts
        .database_url
        .clone()
        .unwrap_or_else(|| file("replica.db"));
    let broker_url = opts.broker_url.clone().unwrap_or_else(|| file("queue.db"));
    let settings = Settings {
        broker_url: Some(broker_url.clone()),
        queue: Some(opts.queue.clone()),
        exchange: opts.exchange.clone(),
        service_name: "cqrs-demo".into(),
        batch_size: 500,
        ..Settings::default()
    };

    let mut master = Db::connect(&master_url)?;
    master.migrate()?;
    let ddl_master = ddl(&master, MASTER_TABLE);
    master.batch_execute(&ddl_master)?;
    master.batch_execute("DELETE FROM cqrs_outbox")?;
    let mut replica = Db::connect(&replica_url)?;
    replica.migrate()?;
    let ddl_replica = ddl(&replica, REPLICA_TABLE);
    replica.batch_execute(&ddl_replica)?;
    let latencies = Latencies::default();
    let timed = Timed {
        inner: TableReplica::new(table(REPLICA_TABLE)),
        latencies: latencies.clone(),
    };
    timed.clear(&mut replica)?;
    let registry = Registry::new()
        .with_master(DemoItem::master_spec())
        .with_replica(timed);

    let broker = transport::connect(&settings, "demo")?;
    broker.declare_replica(
        &opts.queue,
        &[CQRS_ID.to_string()],
        &settings.retry_levels(),
    )?;
    // A queue file is the demo's own; a queue on a RabbitMQ someone named may hold other work.
    if broker_url.starts_with("sqlite:") {
        broker.purge(&opts.queue)?;
        broker.purge(&dead_letter_queue(&opts.queue))?;
    }
    Ok(Setup {
        master_url,
        replica_url,
        broker_url,
        settings,
        master,
        replica,
        broker,
        registry,
        latencies,
    })
}

/// The workload with a relay and a consumer running beside it, until the replica converged;
/// returns how many messages went through.
fn stream(
    setup: &mut Setup,
    opts: &Options,
    progress: &mut dyn FnMut(&str),
) -> cqrs::Result<usize> {
    let Setup {
        master_url,
        replica_url,
        settings,
        master,
        replica,
        broker,
        registry,
        ..
    } = setup;
    let (broker, registry, settings) = (broker.as_ref(), &*registry, &*settings);
    let shutdown = Shutdown::new();
    let rows = opts.rows.max(10);
    std::thread::scope(|s| -> cqrs::Result<usize> {
        let relay = s.spawn(|| -> cqrs::Result<usize> {
            let mut relay = Relay::new(
                Db::connect(master_url)?,
                broker.publisher()?,
                settings.clone(),
            )
            .reconnect_with(master_url.as_str());
            relay.run(&shutdown)?;
            Ok(relay.stats().published)
        });
        let consumer = s.spawn(|| -> cqrs::Result<()> {
            let inbox = broker.inbox(&opts.queue, 1000, &settings.retry_levels())?;
            Consumer::new(registry, settings, Db::connect(replica_url)?, inbox).run(&shutdown)
        });
        let outcome = workload::run(master, rows, &opts.queue, progress).and_then(|messages| {
            converge(master, replica, registry, &opts.queue, progress).map(|()| messages)
        });
        shutdown.trigger();
        let published = join(relay, "relay")?;
        join(consumer, "consumer")?;
        Ok(outcome?.max(published))
    })
}

/// Wait until the outbox is empty and the replica holds the master's revisions (or the timeout;
/// the drift is then reported by the summary).
fn converge(
    master: &mut Db,
    replica: &mut Db,
    registry: &Registry,
    queue: &str,
    progress: &mut dyn FnMut(&str),
) -> cqrs::Result<()> {
    let deadline = Instant::now() + CONVERGE_TIMEOUT;
    loop {
        let pending = cqrs::outbox::pending(master)?;
        if pending == 0 && drift(master, replica, registry, queue)? == 0
            || Instant::now() > deadline
        {
            return Ok(());
        }
        progress(&format!(
            "waiting for the replica: {pending} messages still in the outbox"
        ));
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn join<T>(
    handle: std::thread::ScopedJoinHandle<'_, cqrs::Result<T>>,
    what: &str,
) -> cqrs::Result<T> {
    handle
        .join()
        .map_err(|_| Error::new(ErrorKind::Database, format!("the {what} panicked")))?
}

fn count(db: &mut Db, table: &str) -> cqrs::Result<usize> {
    Ok(db.load_text(
        &format!("SELECT CAST(count(*) AS TEXT) AS j FROM {table}"),
        vec![],
    )?[0]
        .parse()
        .unwrap_or(0))
}

/// Rows the diff pipeline (differing or missing revisions) and the deleted-rows pipeline (rows
/// the master no longer has) report, run through the library with in-memory pipes.
fn drift(
    master: &mut Db,
    replica: &mut Db,
    registry: &Registry,
    queue: &str,
) -> cqrs::Result<usize> {
    let spec = registry.master_named(CQRS_ID)?.clone();
    let mut stage1 = Vec::new();
    diff::diff_master(
        master,
        &spec,
        None,
        diff::Compare::Revision,
        5_000,
        &mut stage1,
    )?;
    let differ = diff::diff_replica(
        replica,
        registry,
        queue,
        &mut stage1.as_slice(),
        &mut Vec::new(),
    )?;
    let mut deleted = Vec::new();
    diff::deleted_diff_replica(replica, registry, CQRS_ID, 5_000, &mut deleted)?;
    let gone =
        diff::deleted_diff_master(master, registry, &mut deleted.as_slice(), &mut Vec::new())?;
    Ok(differ + gone)
}
