//! `cqrs-bench`: the performance harness. In one run it measures each figure of the write and
//! read paths beside its ceiling, taken in the same run on the same PostgreSQL and RabbitMQ, and
//! prints a table of figures and ratios (and JSON with `--json`):
//!
//! - master capture, 1 and 100 rows per transaction, 1 and 4 writers, against the same
//!   transactions without capture;
//! - the relay alone draining an outbox, against lapin publishing the same messages with confirms
//!   (as the relay framed them, and the bare bodies);
//! - a replica (`consume -w 1` / `-w 2`, a process) draining a backlog (timed from its first row
//!   applied), against lapin consuming it with multiple acks and against the same rows upserted
//!   raw (500-row `INSERT … ON CONFLICT DO UPDATE WHERE` older); the consumer's peak RSS;
//! - end to end (4 writers, 1 and 100 rows per transaction, the relay and `consume -w 1` /
//!   `-w 2` as processes): rows on the replica per second from the first write to the last row applied,
//!   against the same writers capturing with no relay or consumer running;
//! - commit→apply latency (applied time − `cqrs_updated`) with the relay and the consumer as
//!   processes under a fixed offered load, against a bare publish→consume round trip at the same
//!   rate;
//! - the end-to-end and latency figures again on the embedded stack: SQLite master and replica
//!   files and the SQLite queue file, the relay and the consumer as processes;
//! - `--only cluster`: on a private 3-node RabbitMQ cluster with classic and with quorum queues,
//!   the relay alone, a drain and a fan-out to 10 queues, each beside lapin on the same queues.
//!
//! ```text
//! cargo run --release -p cqrs-tests --bin cqrs-bench               # full run (several minutes)
//! cargo run --release -p cqrs-tests --bin cqrs-bench -- --smoke    # seconds: it works, replica == master
//! ```
//!
//! Throughput figures are the median of `--runs`, figure and ceiling interleaved. It uses the
//! PostgreSQL at `CQRS_TEST_DATABASE_URL` and the RabbitMQ at `CQRS_TEST_AMQP_URL` (the test
//! defaults), with databases, exchange and queues of its own, dropped at the end. Exits 1 if the
//! replica does not equal the master after a drain or the latency run.

// The figures' fields are their documentation.
#![allow(missing_docs)]

mod raw;

use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use cqrs::capture::triggers;
use cqrs::db::{Db, SqlConn};
use cqrs::value::SqlValue;
use cqrs::{Error, MasterModel, Relay, atomic};
use cqrs_tests::items::{self, CQRS_ID, MASTER_TABLE, REPLICA_TABLE, SoakItem};
use cqrs_tests::{Kind, TestBroker, TestDb, amqp_url, sql_for};

/// The performance harness (see the crate docs).
#[derive(Debug, Parser)]
#[command(name = "cqrs-bench")]
struct Args {
    /// A few seconds in all: checks that every figure can be taken and the replica equals the master.
    #[arg(long)]
    smoke: bool,
    /// Runs per throughput figure (the median is reported).
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Seconds per capture measurement.
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    /// Messages in the relay and drain backlogs.
    #[arg(long, default_value_t = 20_000)]
    messages: usize,
    /// Offered load of the latency run, changes per second.
    #[arg(long, default_value_t = 1000.0)]
    latency_rate: f64,
    /// Seconds of the latency run.
    #[arg(long, default_value_t = 20.0)]
    latency_seconds: f64,
    /// Write the table as JSON here too.
    #[arg(long)]
    json: Option<std::path::PathBuf>,
    /// Rows of the bulk-dump, bulk-load and diff runs.
    #[arg(long, default_value_t = 1_000_000)]
    bulk_rows: usize,
    /// Take only these groups of figures (default: all).
    #[arg(long, value_delimiter = ',', value_parser = ["capture", "relay", "e2e", "latency", "bulk", "diff", "cluster"])]
    only: Vec<String>,
    /// `CQRS_LOG` of the relay and consumer processes (e.g. `cqrs=debug` for per-batch timings).
    #[arg(long, default_value = "error")]
    process_log: String,
}

/// One line of the table.
#[derive(Debug, serde::Serialize)]
struct Figure {
    figure: String,
    value: f64,
    unit: &'static str,
    ceiling_name: String,
    ceiling: Option<f64>,
}

impl Figure {
    fn ratio(&self) -> String {
        match self.ceiling {
            Some(c) if c > 0.0 && self.unit.ends_with("/s") => {
                format!("{:.0}%", 100.0 * self.value / c)
            }
            Some(c) if c > 0.0 => format!("{:.1}×", self.value / c),
            _ => String::new(),
        }
    }
}

/// The databases, the broker's queues and the figures taken so far.
struct Bench {
    master: TestDb,
    replica: TestDb,
    /// The replica's queue.
    broker: TestBroker,
    /// Bound like the replica's queue: the raw consume ceiling reads the same messages from it.
    tap: TestBroker,
    /// Where the raw publish ceiling goes.
    sink: TestBroker,
    /// A second queue bound to [`SINK_KEY`]: the raw publish fans out to two queues, as the
    /// relay's messages do (the replica's queue and the tap).
    sink_twin: TestBroker,
    /// The SQLite master, replica and queue file of the end-to-end and latency figures on the
    /// embedded stack, made when those groups run.
    sqlite: Option<SqliteFiles>,
    figures: Vec<Figure>,
    problems: Vec<String>,
}

/// SQLite databases and a queue file in a directory of their own (removed on drop).
struct SqliteFiles {
    master: TestDb,
    replica: TestDb,
    queue_dir: std::path::PathBuf,
}

impl Drop for SqliteFiles {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.queue_dir);
    }
}

/// Where the end-to-end and latency figures run: the master and replica databases and the
/// broker that the writers, the relay process and the consumer process use.
#[derive(Clone)]
struct Stack {
    /// Named in the figures.
    label: &'static str,
    master: String,
    replica: String,
    broker: String,
}

impl Stack {
    fn master(&self) -> cqrs::Result<Db> {
        Db::connect(&self.master)
    }

    fn replica(&self) -> cqrs::Result<Db> {
        Db::connect(&self.replica)
    }

    /// Empty the master table and the outbox.
    fn clear_master(&self) -> cqrs::Result<()> {
        clear(&mut self.master()?, &[MASTER_TABLE, "cqrs_outbox"])
    }

    /// Empty the replica table and its tombstones.
    fn clear_replica(&self) -> cqrs::Result<()> {
        clear(&mut self.replica()?, &[REPLICA_TABLE, "cqrs_tombstones"])
    }

    fn is_sqlite(&self) -> bool {
        self.master.starts_with("sqlite:")
    }

    /// `what`, with the stack's name unless it is the default PostgreSQL + RabbitMQ.
    fn named(&self, what: &str) -> String {
        if self.label.is_empty() {
            what.to_string()
        } else {
            format!("{what} [{}]", self.label)
        }
    }
}

const SINK_KEY: &str = "bench_sink";
/// The columns master and replica tables share, for `\copy`.
const COLUMNS: &str = "id, name, value, note, cqrs_revision, cqrs_updated";
const ROUND_TRIP_KEY: &str = "bench_rt";
/// Rows per statement of the raw upsert ceiling: the consumer's default batch.
const UPSERT_BATCH: usize = 500;

fn main() -> ExitCode {
    if std::env::args().nth(1).as_deref() == Some("cqrs") {
        let mut args = std::env::args_os();
        let program = args.next().expect("argv[0]");
        args.next();
        return cqrs_cli::run_from(items::registry(), std::iter::once(program).chain(args));
    }
    let mut args = Args::parse();
    // The relay under test runs in this process: `CQRS_LOG=cqrs=debug` shows its per-batch timings.
    if let Ok(filter) = tracing_subscriber::EnvFilter::try_from_env("CQRS_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .try_init();
    }
    if args.smoke {
        args.runs = 1;
        args.seconds = 0.5;
        args.messages = 500;
        args.latency_rate = 100.0;
        args.latency_seconds = 1.0;
        args.bulk_rows = 2_000;
    }
    let mut bench = match Bench::new() {
        Ok(b) => b,
        Err(e) => {
            eprintln!("cqrs-bench: preparing: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Err(e) = bench.run(&args) {
        eprintln!("cqrs-bench: {e}");
        return ExitCode::FAILURE;
    }
    bench.print(&args);
    if let Some(path) = &args.json
        && let Err(e) = std::fs::write(
            path,
            serde_json::to_string_pretty(&bench.figures).expect("serializes"),
        )
    {
        eprintln!("cqrs-bench: {}: {e}", path.display());
        return ExitCode::FAILURE;
    }
    if bench.problems.is_empty() {
        ExitCode::SUCCESS
    } else {
        for p in &bench.problems {
            eprintln!("cqrs-bench: FAILED: {p}");
        }
        ExitCode::FAILURE
    }
}

/// p50, p99 and max of `xs` (sorted in place).
fn percentiles(xs: &mut [f64]) -> (f64, f64, f64) {
    xs.sort_by(f64::total_cmp);
    let at = |q: f64| xs[((xs.len() - 1) as f64 * q) as usize];
    (at(0.5), at(0.99), at(1.0))
}

/// Empty `tables` (TRUNCATE on PostgreSQL; SQLite has none).
fn clear(db: &mut Db, tables: &[&str]) -> cqrs::Result<()> {
    match db.backend() {
        cqrs::db::Backend::Postgres => db.batch_execute(&format!("TRUNCATE {}", tables.join(", "))),
        cqrs::db::Backend::Sqlite => db.batch_execute(
            &tables
                .iter()
                .map(|t| format!("DELETE FROM {t};"))
                .collect::<String>(),
        ),
    }
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

impl Bench {
    fn new() -> cqrs::Result<Bench> {
        let (master, replica) = (TestDb::empty(Kind::Postgres), TestDb::empty(Kind::Postgres));
        items::create(&mut master.connect(), true)?;
        items::create(&mut replica.connect(), false)?;
        let broker = TestBroker::new();
        let (tap, sink) = (broker.another_queue(), broker.another_queue());
        broker.declare(&[CQRS_ID]);
        tap.declare(&[CQRS_ID]);
        sink.declare(&[SINK_KEY, ROUND_TRIP_KEY]);
        let sink_twin = broker.another_queue();
        sink_twin.declare(&[SINK_KEY]);
        Ok(Bench {
            master,
            replica,
            broker,
            tap,
            sink,
            sink_twin,
            sqlite: None,
            figures: Vec::new(),
            problems: Vec::new(),
        })
    }

    fn run(&mut self, args: &Args) -> cqrs::Result<()> {
        let wanted = |group: &str| args.only.is_empty() || args.only.iter().any(|g| g == group);
        if wanted("capture") {
            for writers in [1, 4] {
                for rows in [1, 100] {
                    self.capture(args, writers, rows)?;
                }
            }
        }
        if wanted("relay") {
            self.relay_and_drain(args)?;
        }
        let stacks = if wanted("e2e") || wanted("latency") {
            self.stacks()?
        } else {
            Vec::new()
        };
        if wanted("e2e") {
            for stack in &stacks {
                for rows in [1, 100] {
                    for workers in [1, 2] {
                        self.end_to_end(args, rows, workers, stack)?;
                    }
                }
            }
        }
        if wanted("latency") {
            for stack in &stacks {
                self.latency(args, stack)?;
            }
        }
        if wanted("bulk") {
            self.bulk(args)?;
        }
        if wanted("diff") {
            self.diff(args)?;
        }
        if wanted("cluster") {
            self.cluster(args)?;
        }
        Ok(())
    }

    /// An empty master with `n` captured rows, drained by an in-process relay to `broker`:
    /// messages per second.
    fn relay_rate(&self, broker: &TestBroker, n: usize) -> cqrs::Result<f64> {
        self.clear_master()?;
        fill(&self.master.url, n)?;
        let mut r = Relay::new(
            self.master.connect(),
            broker.transport.publisher()?,
            broker.settings(),
        );
        let started = Instant::now();
        r.drain()?;
        Ok(n as f64 / started.elapsed().as_secs_f64())
    }

    /// On a private 3-node RabbitMQ cluster, with classic and then quorum queues: the relay
    /// alone (to the replica's queue and a tap) beside lapin publishing the same messages to two
    /// queues of the same type; `consume -w 2` draining the replica's queue beside lapin consuming
    /// the tap; the relay fanning out to 10 replica queues beside lapin publishing to 10 queues.
    /// Every queue is declared through the first node, so it leads them all, and the relay
    /// connects to it first.
    fn cluster(&mut self, args: &Args) -> cqrs::Result<()> {
        use cqrs::config::QueueType;
        let nodes = cqrs_tests::PrivateCluster::start(3);
        let urls = nodes.urls(&[0, 1, 2]);
        let n = args.messages;
        let fan_n = (n / 4).max(1);
        for kind in [QueueType::Classic, QueueType::Quorum] {
            let queues = |count: usize, b: &TestBroker, key: &str| -> Vec<TestBroker> {
                (0..count)
                    .map(|_| {
                        let q = b.another_queue();
                        q.declare(&[key]);
                        q
                    })
                    .collect()
            };
            let broker = TestBroker::at(&urls, kind);
            broker.declare(&[CQRS_ID]);
            let tap = queues(1, &broker, CQRS_ID).remove(0);
            let sinks = queues(2, &broker, SINK_KEY);
            let (mut relay, mut publish, mut drain, mut consume) =
                (Vec::new(), Vec::new(), Vec::new(), Vec::new());
            let (mut fan_relay, mut fan_publish) = (Vec::new(), Vec::new());
            for _ in 0..args.runs {
                self.clear_replica()?;
                relay.push(self.relay_rate(&broker, n)?);
                let (received, took) = raw::consume(&tap.transport, &tap.queue, n);
                consume.push(n as f64 / took.as_secs_f64());
                let took = raw::publish(
                    &sinks[0].transport,
                    &sinks[0].exchange,
                    SINK_KEY,
                    &received,
                    raw::Framing::AsRelayed,
                );
                publish.push(n as f64 / took.as_secs_f64());
                for q in &sinks {
                    q.transport.purge(&q.queue)?;
                }
                let mut arrivals = Arrivals::new(&self.replica.url, &self.master.url)?;
                let started = Instant::now();
                let child = spawn(
                    cqrs_command(&["consume", "-w", "2"], &urls, &broker),
                    &self.replica.url,
                    args,
                );
                let drained = arrivals.drain_time(n, started);
                stop(child);
                let Some((took, before)) = drained else {
                    self.problems.push(format!(
                        "{kind} cluster: consume -w 2 did not apply {n} messages"
                    ));
                    continue;
                };
                drain.push((n - before) as f64 / took.as_secs_f64());
                self.compare(
                    &self.pg(),
                    &format!("after a drain from {kind} cluster queues"),
                )?;

                // Fan-out: the replica's queue, the tap and 8 more take every message.
                let more = queues(8, &broker, CQRS_ID);
                let fan_sinks = queues(8, &broker, SINK_KEY);
                fan_relay.push(self.relay_rate(&broker, fan_n)?);
                let took = raw::publish(
                    &sinks[0].transport,
                    &sinks[0].exchange,
                    SINK_KEY,
                    &received[..fan_n.min(received.len())],
                    raw::Framing::AsRelayed,
                );
                fan_publish.push(fan_n as f64 / took.as_secs_f64());
                for q in [&broker, &tap]
                    .into_iter()
                    .chain(&sinks)
                    .chain(&more)
                    .chain(&fan_sinks)
                {
                    q.transport.purge(&q.queue)?;
                }
            }
            if relay.is_empty() || drain.is_empty() {
                continue;
            }
            let ceiling = |what: &str| format!("lapin {what}, {kind} queues, same 3-node cluster");
            self.add(
                format!("relay alone, {n} messages, 3-node cluster, {kind} queues"),
                median(relay),
                "msgs/s",
                &ceiling("confirmed publish of the same messages to 2 queues"),
                Some(median(publish)),
            );
            self.add(
                format!("replica drains {n} messages, consume -w 2, 3-node cluster, {kind} queues"),
                median(drain),
                "msgs/s",
                &ceiling("consume, multiple acks"),
                Some(median(consume)),
            );
            self.add(
                format!(
                    "relay fans out {fan_n} messages to 10 queues, 3-node cluster, {kind} queues"
                ),
                median(fan_relay),
                "msgs/s",
                &ceiling("confirmed publish of the same messages to 10 queues"),
                Some(median(fan_publish)),
            );
        }
        Ok(())
    }

    fn add(
        &mut self,
        figure: String,
        value: f64,
        unit: &'static str,
        ceiling_name: &str,
        ceiling: Option<f64>,
    ) {
        println!(
            "  {figure}: {value:.1} {unit} (ceiling {ceiling_name}: {})",
            ceiling.map_or("-".into(), |c| format!("{c:.1}"))
        );
        self.figures.push(Figure {
            figure,
            value,
            unit,
            ceiling_name: ceiling_name.into(),
            ceiling,
        });
    }

    fn clear_master(&self) -> cqrs::Result<()> {
        self.pg().clear_master()
    }

    fn clear_replica(&self) -> cqrs::Result<()> {
        self.pg().clear_replica()
    }

    /// PostgreSQL + RabbitMQ: this bench's databases, exchange and queue.
    fn pg(&self) -> Stack {
        Stack {
            label: "",
            master: self.master.url.clone(),
            replica: self.replica.url.clone(),
            broker: amqp_url(),
        }
    }

    /// The stacks the end-to-end and latency figures run on: PostgreSQL + RabbitMQ, and SQLite
    /// files + the queue file (made on first use).
    fn stacks(&mut self) -> cqrs::Result<Vec<Stack>> {
        let pg = self.pg();
        let files = match self.sqlite.take() {
            Some(files) => files,
            None => {
                let (master, replica) = (TestDb::empty(Kind::Sqlite), TestDb::empty(Kind::Sqlite));
                items::create(&mut master.connect(), true)?;
                items::create(&mut replica.connect(), false)?;
                let queue_dir =
                    std::env::temp_dir().join(format!("cqrs-bench-queue-{}", std::process::id()));
                std::fs::create_dir_all(&queue_dir)
                    .map_err(|e| Error::config(format!("{queue_dir:?}: {e}")))?;
                SqliteFiles {
                    master,
                    replica,
                    queue_dir,
                }
            }
        };
        let sqlite = Stack {
            label: "SQLite + queue file",
            master: files.master.url.clone(),
            replica: files.replica.url.clone(),
            broker: format!("sqlite://{}", files.queue_dir.join("queue.db").display()),
        };
        self.sqlite = Some(files);
        Ok(vec![pg, sqlite])
    }

    /// Capture by `atomic` and by triggers against the same inserts without capture: rows (1
    /// row/txn: transactions) per second.
    fn capture(&mut self, args: &Args, writers: usize, rows: usize) -> cqrs::Result<()> {
        let (mut with, mut without, mut by_trigger) = (Vec::new(), Vec::new(), Vec::new());
        let trigger_spec = SoakItem::master_spec()
            .capture(cqrs::model::CaptureMode::Trigger)
            .expect("the soak model has no hooks");
        for _ in 0..args.runs {
            self.clear_master()?;
            without.push(write(
                &self.master.url,
                writers,
                rows,
                Capture::None,
                args.seconds,
            )?);
            self.clear_master()?;
            with.push(write(
                &self.master.url,
                writers,
                rows,
                Capture::Atomic,
                args.seconds,
            )?);
            self.clear_master()?;
            // Installed for this measurement only: the other figures capture with atomic, and
            // clearing the table truncates it (which the triggers refuse).
            triggers::install(&mut self.master.connect(), &trigger_spec)?;
            let rate = write(&self.master.url, writers, rows, Capture::None, args.seconds);
            triggers::uninstall(&mut self.master.connect(), &trigger_spec)?;
            by_trigger.push(rate?);
            let (written, queued) = (
                count(&self.master.url, MASTER_TABLE),
                count(&self.master.url, "cqrs_outbox"),
            );
            if written != queued {
                self.problems.push(format!(
                    "capture by triggers: {written} rows written but {queued} messages queued"
                ));
            }
        }
        self.clear_master()?;
        let without = median(without);
        let unit = if rows == 1 { "txn/s" } else { "rows/s" };
        let plural = if writers == 1 { "" } else { "s" };
        let rows_plural = if rows == 1 { "" } else { "s" };
        self.add(
            format!("capture, {rows} row{rows_plural}/txn, {writers} writer{plural}"),
            median(with),
            unit,
            &format!("BEGIN; {rows}× INSERT; COMMIT, {writers} writer{plural}"),
            Some(without),
        );
        self.add(
            format!("capture by triggers, {rows} row{rows_plural}/txn, {writers} writer{plural}"),
            median(by_trigger),
            unit,
            &format!("BEGIN; {rows}× INSERT; COMMIT, {writers} writer{plural}"),
            Some(without),
        );
        Ok(())
    }

    /// Fill the outbox, relay it (timed), read the tap raw (timed), publish it raw (timed), drain
    /// the replica queue with a consumer process (timed), for `-w 1` and `-w 2`.
    fn relay_and_drain(&mut self, args: &Args) -> cqrs::Result<()> {
        let n = args.messages;
        let (mut relay, mut publish, mut consume) = (Vec::new(), Vec::new(), Vec::new());
        let mut publish_bare = Vec::new();
        let mut drain: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
        let mut upsert = Vec::new();
        let mut rss = 0.0f64;
        for _ in 0..args.runs {
            for workers in [1, 2] {
                self.clear_master()?;
                self.clear_replica()?;
                fill(&self.master.url, n)?;
                let mut r = Relay::new(
                    self.master.connect(),
                    self.broker.transport.publisher()?,
                    self.broker.settings(),
                );
                let started = Instant::now();
                r.drain()?;
                relay.push(n as f64 / started.elapsed().as_secs_f64());
                let (received, took) = raw::consume(&self.tap.transport, &self.tap.queue, n);
                consume.push(n as f64 / took.as_secs_f64());
                for (framing, rates) in [
                    (raw::Framing::AsRelayed, &mut publish),
                    (raw::Framing::Bare, &mut publish_bare),
                ] {
                    let took = raw::publish(
                        &self.sink.transport,
                        &self.sink.exchange,
                        SINK_KEY,
                        &received,
                        framing,
                    );
                    rates.push(n as f64 / took.as_secs_f64());
                    self.sink.transport.purge(&self.sink.queue)?;
                    self.sink_twin.transport.purge(&self.sink_twin.queue)?;
                }
                let mut arrivals = Arrivals::new(&self.replica.url, &self.master.url)?;
                let started = Instant::now();
                let child = self.process(
                    &["consume", "-w", &workers.to_string()],
                    &self.replica.url,
                    &amqp_url(),
                    args,
                );
                let drained = arrivals.drain_time(n, started);
                let peak = peak_rss_mb(&child);
                stop(child);
                let Some((took, applied_before)) = drained else {
                    self.problems
                        .push(format!("consume -w {workers} did not apply {n} messages"));
                    continue;
                };
                drain[workers - 1].push((n - applied_before) as f64 / took.as_secs_f64());
                if workers == 2 {
                    rss = rss.max(peak);
                }
                self.compare(&self.pg(), "after a drain")?;
                if workers == 1 {
                    self.clear_replica()?;
                    let took =
                        raw::upsert(&mut self.replica.connect(), REPLICA_TABLE, n, UPSERT_BATCH)?;
                    upsert.push(n as f64 / took.as_secs_f64());
                }
            }
        }
        let consume = median(consume);
        let relay = median(relay);
        self.add(
            format!("relay alone, {n} messages"),
            relay,
            "msgs/s",
            "lapin confirmed publish of the same messages (headers, message_id, mandatory), same fan-out",
            Some(median(publish)),
        );
        self.add(
            format!("relay alone, {n} messages, against bare bodies"),
            relay,
            "msgs/s",
            "lapin confirmed publish of the bodies alone, same fan-out",
            Some(median(publish_bare)),
        );
        let upsert = (!upsert.is_empty()).then(|| median(upsert));
        for (i, d) in drain.into_iter().enumerate() {
            if !d.is_empty() {
                let d = median(d);
                self.add(
                    format!("replica drains {n} messages, consume -w {}", i + 1),
                    d,
                    "msgs/s",
                    "lapin consume, multiple acks",
                    Some(consume),
                );
                self.add(
                    format!(
                        "replica drains {n} messages, consume -w {}, against a raw upsert",
                        i + 1
                    ),
                    d,
                    "msgs/s",
                    &format!(
                        "INSERT … ON CONFLICT DO UPDATE WHERE older, {UPSERT_BATCH} rows per transaction, one connection"
                    ),
                    upsert,
                );
            }
        }
        self.add("consumer peak RSS, -w 2".into(), rss, "MB", "", None);
        Ok(())
    }

    /// 4 writers capturing `rows`-row transactions for `--seconds` with the relay and
    /// `consume -w <workers>` running on `stack`: rows written / time until the replica holds them
    /// all, against the same writers with nothing running behind them.
    fn end_to_end(
        &mut self,
        args: &Args,
        rows: usize,
        workers: usize,
        stack: &Stack,
    ) -> cqrs::Result<()> {
        let (mut alone, mut through) = (Vec::new(), Vec::new());
        for _ in 0..args.runs {
            stack.clear_master()?;
            alone.push(write(
                &stack.master,
                4,
                rows,
                Capture::Atomic,
                args.seconds,
            )?);
            stack.clear_master()?;
            stack.clear_replica()?;
            let relay = self.process(&["relay"], &stack.master, &stack.broker, args);
            let consumer = self.process(
                &["consume", "-w", &workers.to_string()],
                &stack.replica,
                &stack.broker,
                args,
            );
            // Both connected and idle before the load starts.
            std::thread::sleep(Duration::from_millis(1500));
            let started = Instant::now();
            let written = write(&stack.master, 4, rows, Capture::Atomic, args.seconds)
                .map(|rate| (rate * args.seconds).round() as usize);
            let done = written.as_ref().is_ok_and(|n| {
                Arrivals::new(&stack.replica, &stack.master)
                    .is_ok_and(|mut a| wait_for(Duration::from_secs(300), || a.all(*n)))
            });
            let took = started.elapsed();
            stop(relay);
            stop(consumer);
            let written = written?;
            if !done {
                self.problems.push(stack.named(&format!(
                    "end to end: {written} rows did not all reach the replica"
                )));
                continue;
            }
            through.push(written as f64 / took.as_secs_f64());
            self.compare(stack, "after an end-to-end run")?;
        }
        if !through.is_empty() {
            self.add(
                stack.named(&format!(
                    "end to end, 4 writers, {rows} row(s)/txn, relay + consume -w {workers}"
                )),
                median(through),
                "rows/s",
                "the same writers, nothing behind them",
                Some(median(alone)),
            );
        }
        Ok(())
    }

    /// Relay and consumer processes running on `stack`, 4 writers offering `latency_rate` 1-row
    /// creates per second: applied time − `cqrs_updated` per row, against a bare RabbitMQ round
    /// trip (on PostgreSQL + RabbitMQ; the queue file has no bare counterpart).
    fn latency(&mut self, args: &Args, stack: &Stack) -> cqrs::Result<()> {
        stack.clear_master()?;
        stack.clear_replica()?;
        let mut replica = stack.replica()?;
        // The replica stamps each row as it is written. SQLite's clock has millisecond resolution
        // and is read once per statement (a batch's rows share its start time).
        let (stamp, lag, unstamp) = match replica.backend() {
            cqrs::db::Backend::Postgres => (
                format!(
                    "ALTER TABLE {REPLICA_TABLE} ADD COLUMN IF NOT EXISTS applied_at TIMESTAMPTZ;
                     CREATE OR REPLACE FUNCTION bench_applied() RETURNS trigger AS $$
                     BEGIN NEW.applied_at := clock_timestamp(); RETURN NEW; END $$ LANGUAGE plpgsql;
                     DROP TRIGGER IF EXISTS bench_applied ON {REPLICA_TABLE};
                     CREATE TRIGGER bench_applied BEFORE INSERT OR UPDATE ON {REPLICA_TABLE}
                       FOR EACH ROW EXECUTE FUNCTION bench_applied();"
                ),
                format!(
                    "SELECT CAST(extract(epoch FROM applied_at - cqrs_updated) * 1000 AS TEXT) AS j \
                     FROM {REPLICA_TABLE}"
                ),
                format!(
                    "DROP TRIGGER bench_applied ON {REPLICA_TABLE}; \
                     ALTER TABLE {REPLICA_TABLE} DROP COLUMN applied_at"
                ),
            ),
            cqrs::db::Backend::Sqlite => (
                format!(
                    "ALTER TABLE {REPLICA_TABLE} ADD COLUMN applied_at TEXT;
                     CREATE TRIGGER bench_applied AFTER INSERT ON {REPLICA_TABLE} BEGIN
                       UPDATE {REPLICA_TABLE} SET applied_at = strftime('%Y-%m-%d %H:%M:%f', 'now')
                       WHERE id = NEW.id;
                     END;"
                ),
                format!(
                    "SELECT CAST((julianday(applied_at) - julianday(cqrs_updated)) * 86400000.0 AS TEXT) \
                     AS j FROM {REPLICA_TABLE}"
                ),
                format!(
                    "DROP TRIGGER bench_applied; ALTER TABLE {REPLICA_TABLE} DROP COLUMN applied_at"
                ),
            ),
        };
        replica.batch_execute(&stamp)?;
        let relay = self.process(&["relay"], &stack.master, &stack.broker, args);
        let consumer = self.process(&["consume", "-w", "2"], &stack.replica, &stack.broker, args);
        // Both connected and idle before the load starts.
        std::thread::sleep(Duration::from_millis(1500));
        let written = offered(&stack.master, 4, args.latency_rate, args.latency_seconds);
        let done = written.as_ref().is_ok_and(|n| {
            Arrivals::new(&stack.replica, &stack.master)
                .is_ok_and(|mut a| wait_for(Duration::from_secs(120), || a.all(*n)))
        });
        let (relay_rss, consumer_rss) = (peak_rss_mb(&relay), peak_rss_mb(&consumer));
        stop(relay);
        stop(consumer);
        let written = written?;
        if !done {
            self.problems.push(stack.named(&format!(
                "the latency run's {written} rows did not all reach the replica"
            )));
            return Ok(());
        }
        self.compare(stack, "after the latency run")?;
        let mut lags: Vec<f64> = replica
            .load_text(&lag, vec![])?
            .iter()
            .map(|x| x.parse().expect("a number of milliseconds"))
            .collect();
        // Later groups (bulk-load and its \copy ceiling) want the replica table as it was.
        replica.batch_execute(&unstamp)?;
        let (p50, p99, max) = percentiles(&mut lags);
        let rt = if stack.is_sqlite() {
            None
        } else {
            let mut rt: Vec<f64> = raw::round_trips(
                &self.sink.transport,
                &self.sink.exchange,
                ROUND_TRIP_KEY,
                &self.sink.queue,
                args.latency_rate,
                args.latency_seconds,
            )
            .iter()
            .map(|d| d.as_secs_f64() * 1000.0)
            .collect();
            Some(percentiles(&mut rt))
        };
        let load = format!("{:.0} changes/s offered, {written} rows", args.latency_rate);
        for (name, value, ceiling) in [
            ("p50", p50, rt.map(|r| r.0)),
            ("p99", p99, rt.map(|r| r.1)),
            ("max", max, rt.map(|r| r.2)),
        ] {
            self.add(
                stack.named(&format!("commit→apply {name} ({load})")),
                value,
                "ms",
                &if rt.is_some() {
                    format!("RabbitMQ round trip {name}")
                } else {
                    "none".into()
                },
                ceiling,
            );
        }
        self.add(stack.named("relay peak RSS"), relay_rss, "MB", "", None);
        self.add(
            stack.named("consumer peak RSS, -w 2, latency run"),
            consumer_rss,
            "MB",
            "",
            None,
        );
        Ok(())
    }

    /// Record a problem unless the replica equals the master row by row.
    /// `bulk-dump` of rows inserted just before (no statistics: autovacuum is off for the table)
    /// and again after ANALYZE, against psql's `\copy` of the same table to CSV; `bulk-load` of
    /// that dump into an empty replica, against `\copy` of the CSV into it. Rows/s; the replica
    /// must equal the master after each load.
    fn bulk(&mut self, args: &Args) -> cqrs::Result<()> {
        let dir = std::env::temp_dir().join(format!("cqrs-bench-{}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|e| Error::config(format!("{dir:?}: {e}")))?;
        let (dump, csv) = (dir.join("dump"), dir.join("csv"));
        let (dump, csv) = (dump.to_str().expect("utf-8"), csv.to_str().expect("utf-8"));
        let n = args.bulk_rows;
        let secs = |command: &mut Command| -> cqrs::Result<f64> {
            let started = Instant::now();
            let out = command
                .stdin(Stdio::null())
                .output()
                .map_err(|e| Error::config(format!("{command:?}: {e}")))?;
            if !out.status.success() {
                return Err(Error::config(format!(
                    "{command:?}: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                )));
            }
            Ok(started.elapsed().as_secs_f64())
        };
        let psql = |url: &str, meta: String| {
            let mut c = Command::new("psql");
            c.args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", url, "-c", &meta]);
            c
        };
        let [mut fresh, mut analysed, mut copy_out, mut load, mut copy_in] =
            std::array::from_fn::<Vec<f64>, 5, _>(|_| Vec::new());
        for _ in 0..args.runs {
            // A new table each run: TRUNCATE would keep the last run's statistics.
            let mut master = self.master.connect();
            master.batch_execute(&format!("DROP TABLE {MASTER_TABLE}"))?;
            items::create(&mut master, true)?;
            master.batch_execute(&format!(
                "ALTER TABLE {MASTER_TABLE} SET (autovacuum_enabled = false)"
            ))?;
            generate(&mut master, MASTER_TABLE, n)?;
            let dump_cmd = || {
                let mut c = self.command(&["bulk-dump", "-c", CQRS_ID, "-o", dump, "--force"]);
                c.args(["--database-url", &self.master.url]);
                c
            };
            fresh.push(n as f64 / secs(&mut dump_cmd())?);
            self.master
                .connect()
                .batch_execute(&format!("ANALYZE {MASTER_TABLE}"))?;
            analysed.push(n as f64 / secs(&mut dump_cmd())?);
            copy_out.push(
                n as f64
                    / secs(&mut psql(
                        &self.master.url,
                        format!("\\copy {MASTER_TABLE} ({COLUMNS}) TO '{csv}' CSV"),
                    ))?,
            );
            self.clear_replica()?;
            let mut load_cmd = self.command(&["bulk-load", "-i", dump]);
            load_cmd.args(["--database-url", &self.replica.url]);
            load.push(n as f64 / secs(&mut load_cmd)?);
            self.compare(&self.pg(), "after bulk-load")?;
            self.clear_replica()?;
            copy_in.push(
                n as f64
                    / secs(&mut psql(
                        &self.replica.url,
                        format!("\\copy {REPLICA_TABLE} ({COLUMNS}) FROM '{csv}' CSV"),
                    ))?,
            );
        }
        self.master.connect().batch_execute(&format!(
            "ALTER TABLE {MASTER_TABLE} RESET (autovacuum_enabled)"
        ))?;
        let copy_out = median(copy_out);
        let label = |what: &str| format!("{what}, {n} rows");
        self.add(
            label("bulk-dump, fresh (no statistics)"),
            median(fresh),
            "rows/s",
            "psql \\copy TO",
            Some(copy_out),
        );
        self.add(
            label("bulk-dump, analysed"),
            median(analysed),
            "rows/s",
            "psql \\copy TO",
            Some(copy_out),
        );
        self.add(
            label("bulk-load"),
            median(load),
            "rows/s",
            "psql \\copy FROM",
            Some(median(copy_in)),
        );
        let _ = std::fs::remove_dir_all(&dir);
        self.clear_master()?;
        self.clear_replica()
    }

    /// `cqrs diff-master | cqrs diff-replica | cqrs diff-sync` as three processes over
    /// `--bulk-rows` rows of which 1% have a newer revision on the master: seconds from start to
    /// the last directed SYNC confirmed by the broker, in ms. No ceiling: django-cqrs took 7.59 s for
    /// 100,000 rows here (issue 17). Checks that exactly the drifted rows were sent.
    fn diff(&mut self, args: &Args) -> cqrs::Result<()> {
        let n = args.bulk_rows;
        let drifted = n / 100;
        let mut times = Vec::new();
        for _ in 0..args.runs {
            self.clear_master()?;
            self.clear_replica()?;
            generate(&mut self.master.connect(), MASTER_TABLE, n)?;
            generate(&mut self.replica.connect(), REPLICA_TABLE, n)?;
            self.master.connect().batch_execute(&format!(
                "UPDATE {MASTER_TABLE} SET cqrs_revision = cqrs_revision + 1 WHERE id % 100 = 0; \
                 ANALYZE {MASTER_TABLE}"
            ))?;
            self.replica
                .connect()
                .batch_execute(&format!("ANALYZE {REPLICA_TABLE}"))?;
            let stage = |command: &[&str], db: &str, stdin: Stdio| {
                self.command(command)
                    .args(["--database-url", db])
                    .env("CQRS_LOG", &args.process_log)
                    .stdin(stdin)
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .expect("this binary starts as a cqrs process")
            };
            let started = Instant::now();
            let mut master = stage(
                &["diff-master", "-c", CQRS_ID],
                &self.master.url,
                Stdio::null(),
            );
            let mut replica = stage(
                &["diff-replica"],
                &self.replica.url,
                master.stdout.take().expect("piped").into(),
            );
            let sync = stage(
                &["diff-sync"],
                &self.master.url,
                replica.stdout.take().expect("piped").into(),
            );
            let synced = sync.wait_with_output();
            times.push(started.elapsed().as_secs_f64() * 1000.0);
            // Every stage is waited for before any error returns.
            let outputs = [
                ("diff-master", master.wait_with_output()),
                ("diff-replica", replica.wait_with_output()),
                ("diff-sync", synced),
            ];
            for (name, out) in outputs {
                let out = out.map_err(|e| Error::config(format!("{name}: {e}")))?;
                if !out.status.success() {
                    self.problems.push(format!(
                        "{name}: {}",
                        String::from_utf8_lossy(&out.stderr).trim()
                    ));
                }
            }
            let sent = self.broker.count(&self.broker.queue) as usize;
            if sent != drifted {
                self.problems.push(format!(
                    "the diff pipeline sent {sent} SYNCs for {drifted} drifted rows"
                ));
            }
            for q in [&self.broker, &self.tap] {
                q.transport.purge(&q.queue)?;
            }
        }
        self.add(
            format!("diff pipeline, {n} rows, 1% drift"),
            median(times),
            "ms",
            "none",
            None,
        );
        self.clear_master()?;
        self.clear_replica()
    }

    fn compare(&mut self, stack: &Stack, when: &str) -> cqrs::Result<()> {
        let m = items::snapshot(&mut stack.master()?, MASTER_TABLE)?;
        let r = items::snapshot(&mut stack.replica()?, REPLICA_TABLE)?;
        let differing = items::differing(&m, &r);
        if !differing.is_empty() {
            self.problems.push(format!(
                "{}: {} rows differ, e.g. {:?}",
                stack.named(when),
                differing.len(),
                &differing[..differing.len().min(5)]
            ));
        }
        Ok(())
    }

    /// This binary as a `cqrs` process on `db` and `broker`.
    fn process(&self, command: &[&str], db: &str, broker: &str, args: &Args) -> Child {
        spawn(self.command_on(command, broker), db, args)
    }

    /// This binary as `cqrs <command>` with the bench's broker, exchange and queue.
    fn command(&self, command: &[&str]) -> Command {
        self.command_on(command, &amqp_url())
    }

    /// This binary as `cqrs <command>` with the bench's exchange and queue on `broker`.
    fn command_on(&self, command: &[&str], broker: &str) -> Command {
        cqrs_command(command, broker, &self.broker)
    }

    fn print(&self, args: &Args) {
        println!();
        println!(
            "cqrs-bench: PostgreSQL + RabbitMQ, {} run(s) per figure, {} messages per backlog{}",
            args.runs,
            args.messages,
            if args.smoke {
                " (smoke: sizes too small to mean anything)"
            } else {
                ""
            }
        );
        println!("| figure | cqrs | ceiling (same run) | ratio |");
        println!("|---|---|---|---|");
        for f in &self.figures {
            let ceiling = f.ceiling.map_or(String::new(), |c| {
                format!("{c:.1} {} ({})", f.unit, f.ceiling_name)
            });
            println!(
                "| {} | {:.1} {} | {ceiling} | {} |",
                f.figure,
                f.value,
                f.unit,
                f.ratio()
            );
        }
    }
}

/// `writers` threads writing transactions of `rows` inserts for `secs`, captured or not; rows/s
/// (with 1 row per transaction, transactions/s).
fn write(url: &str, writers: usize, rows: usize, capture: Capture, secs: f64) -> cqrs::Result<f64> {
    let done = AtomicU64::new(0);
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    std::thread::scope(|s| -> cqrs::Result<()> {
        let handles: Vec<_> = (0..writers)
            .map(|w| {
                let done = &done;
                s.spawn(move || -> cqrs::Result<()> {
                    let mut db = Db::connect(url)?;
                    let mut k = 0u64;
                    while Instant::now() < deadline {
                        transaction(&mut db, rows, capture, w as u64 * 1_000_000_000 + k)?;
                        k += rows as u64;
                        done.fetch_add(rows as u64, Ordering::Relaxed);
                    }
                    Ok(())
                })
            })
            .collect();
        for h in handles {
            h.join().expect("a writer does not panic")?;
        }
        Ok(())
    })?;
    Ok(done.load(Ordering::Relaxed) as f64 / secs)
}

/// Whether a bench transaction captures its rows through `atomic`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Capture {
    /// A plain transaction: nothing captures, or the table's triggers do.
    None,
    /// Through `atomic`.
    Atomic,
}

/// One transaction of `rows` inserts (the application's statement), captured or not.
fn transaction(db: &mut Db, rows: usize, capture: Capture, first: u64) -> cqrs::Result<()> {
    let (insert, _) = items::statements(db.backend());
    let binds = |k: u64| {
        vec![
            SqlValue::Text(format!("item {k}")),
            SqlValue::BigInt(k as i64),
            SqlValue::Null(cqrs::value::ColumnType::Text),
        ]
    };
    if capture == Capture::Atomic {
        atomic(db, |tx| {
            for k in first..first + rows as u64 {
                tx.create_with::<SoakItem, String, Error>(|c| {
                    Ok(c.load_text(insert, binds(k))?.remove(0))
                })?;
            }
            Ok(())
        })
    } else {
        db.write_transaction(|db| {
            for k in first..first + rows as u64 {
                db.load_text(insert, binds(k))?;
            }
            Ok(())
        })
    }
}

/// Rows 1..=`n` of `table` written by one statement (no capture), the same on every database.
fn generate(db: &mut Db, table: &str, n: usize) -> cqrs::Result<()> {
    db.batch_execute(&format!(
        "INSERT INTO {table} ({COLUMNS}) \
         SELECT g, 'item ' || g, g * 7, CASE WHEN g % 3 = 0 THEN NULL ELSE 'note ' || g END, g % 5, \
         TIMESTAMPTZ '2026-12-04 00:00:00+00' + g * INTERVAL '1 millisecond' \
         FROM generate_series(1, {n}) g"
    ))
}

/// Capture `n` rows, 100 per transaction.
fn fill(url: &str, n: usize) -> cqrs::Result<()> {
    let mut db = Db::connect(url)?;
    for start in (0..n).step_by(100) {
        transaction(&mut db, 100.min(n - start), Capture::Atomic, start as u64)?;
    }
    Ok(())
}

/// `writers` threads sharing `rate` 1-row captured creates per second for `secs`, each on a
/// fixed schedule; how many were written.
fn offered(url: &str, writers: usize, rate: f64, secs: f64) -> cqrs::Result<usize> {
    let n = (rate * secs) as usize;
    let pace = Duration::from_secs_f64(writers as f64 / rate);
    let origin = Instant::now();
    std::thread::scope(|s| -> cqrs::Result<usize> {
        let handles: Vec<_> = (0..writers)
            .map(|w| {
                s.spawn(move || -> cqrs::Result<usize> {
                    let mut db = Db::connect(url)?;
                    let mine = (w..n).step_by(writers).count();
                    for i in 0..mine {
                        if let Some(wait) = (pace * i as u32).checked_sub(origin.elapsed()) {
                            std::thread::sleep(wait);
                        }
                        transaction(&mut db, 1, Capture::Atomic, (w * n + i) as u64)?;
                    }
                    Ok(mine)
                })
            })
            .collect();
        let mut total = 0;
        for h in handles {
            total += h.join().expect("a writer does not panic")?;
        }
        Ok(total)
    })
}

fn count(url: &str, table: &str) -> usize {
    Db::connect(url)
        .and_then(|mut db| {
            db.load_text(
                &format!("SELECT CAST(count(*) AS TEXT) AS j FROM {table}"),
                vec![],
            )
        })
        .ok()
        .and_then(|r| r.first().and_then(|n| n.parse().ok()))
        .unwrap_or(0)
}

/// Watches the replica table fill without loading the servers being measured: one connection
/// (not one per poll: each new PostgreSQL connection forks a backend and shakes hands over TLS),
/// an index lookup of the master's highest key until it lands, and only then `count(*)` (a full
/// scan) until every row is there. Polling `count(*)` on new connections every 10 ms was a large
/// part of PostgreSQL's CPU during a drain (its top symbols were fork, exit and sequential scans).
struct Arrivals {
    db: Db,
    /// The master's highest key when the wait began (its rows are all written by then).
    last: Option<i64>,
    landed: bool,
}

impl Arrivals {
    fn new(replica_url: &str, master_url: &str) -> cqrs::Result<Arrivals> {
        // '' for an empty table (no key to wait for: count instead).
        let max = format!("SELECT COALESCE(CAST(max(id) AS TEXT), '') AS j FROM {MASTER_TABLE}");
        let last = Db::connect(master_url)?
            .load_text(&max, vec![])?
            .first()
            .and_then(|k| k.parse().ok());
        Ok(Arrivals {
            db: Db::connect(replica_url)?,
            last,
            landed: false,
        })
    }

    /// Whether any row has arrived.
    fn any(&mut self) -> bool {
        let sql = format!("SELECT CAST(id AS TEXT) AS j FROM {REPLICA_TABLE} LIMIT 1");
        self.db.load_text(&sql, vec![]).is_ok_and(|r| !r.is_empty())
    }

    /// Rows in the replica table now.
    fn count(&mut self) -> usize {
        let sql = format!("SELECT CAST(count(*) AS TEXT) AS j FROM {REPLICA_TABLE}");
        self.db
            .load_text(&sql, vec![])
            .ok()
            .and_then(|r| r.first().and_then(|n| n.parse().ok()))
            .unwrap_or(0)
    }

    /// Wait (up to 300 s) until `n` rows have arrived; the time from the first row's arrival (a
    /// process's start-up, connecting and declaring, is not draining) or from `started` if none
    /// was seen, and how many rows had arrived by then. `None` if they did not all arrive.
    fn drain_time(&mut self, n: usize, started: Instant) -> Option<(Duration, usize)> {
        let mut first: Option<(Instant, usize)> = None;
        let done = wait_for(Duration::from_secs(300), || {
            if first.is_none() && self.any() {
                first = Some((Instant::now(), self.count()));
            }
            first.is_some() && self.all(n)
        });
        let (from, before) = first.unwrap_or((started, 0));
        done.then(|| (from.elapsed(), before))
    }

    /// Whether `n` rows have arrived: the last key first, then the count.
    fn all(&mut self, n: usize) -> bool {
        if !self.landed {
            let Some(last) = self.last else {
                return self.count() >= n;
            };
            let sql = sql_for(
                &self.db,
                &format!("SELECT CAST(id AS TEXT) AS j FROM {REPLICA_TABLE} WHERE id = $1"),
            );
            self.landed = self
                .db
                .load_text(&sql, vec![cqrs::value::SqlValue::BigInt(last)])
                .is_ok_and(|r| !r.is_empty());
            if !self.landed {
                return false;
            }
        }
        self.count() >= n
    }
}

fn wait_for(timeout: Duration, mut reached: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if reached() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    false
}

/// This binary as `cqrs <command>` on `broker` with the exchange, queue and queue type of `b`.
fn cqrs_command(command: &[&str], broker: &str, b: &TestBroker) -> Command {
    let mut c = Command::new(std::env::current_exe().expect("this binary's path"));
    c.arg("cqrs").args(command).args([
        "--broker-url",
        broker,
        "--exchange",
        &b.exchange,
        "--queue",
        &b.queue,
        "--queue-type",
        b.queue_type.as_str(),
        "--service-name",
        "bench",
    ]);
    c
}

/// Start `c` on database `db` with the processes' log level.
fn spawn(mut c: Command, db: &str, args: &Args) -> Child {
    c.args(["--database-url", db])
        .env("CQRS_LOG", &args.process_log)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .expect("this binary starts as a cqrs process")
}

/// The process's peak resident set (VmHWM), MB.
fn peak_rss_mb(child: &Child) -> f64 {
    std::fs::read_to_string(format!("/proc/{}/status", child.id()))
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| {
                l.split_whitespace()
                    .nth(1)
                    .and_then(|kb| kb.parse::<f64>().ok())
            })
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// SIGTERM, then wait (SIGKILL after 30 s).
fn stop(mut child: Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().ok().flatten().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.wait();
}
