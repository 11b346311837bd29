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
//! - commit→apply latency with the relay and the consumer as processes, 4 writers offering a
//!   fixed rate on a schedule: the replica's apply time minus the time the change was *due* to be
//!   written (a writer that falls behind is measured from when it should have written), p50 / p99
//!   / p99.9 at each of `--latency-rates`, the rate achieved, and the highest rate whose p99 stays
//!   under 50 ms; beside a bare publish→consume round trip at the same rate (a floor: it has no
//!   database and runs on an idle machine);
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
//! Each figure is taken `--runs` times, each run beside its ceiling (the two in alternating order
//! from run to run), and printed as min / median / max of the values, of the ceilings and of the
//! per-run ratios, with the count of failed runs. It uses the
//! PostgreSQL at `CQRS_TEST_DATABASE_URL` and the RabbitMQ at `CQRS_TEST_AMQP_URL` (the test
//! defaults), with databases, exchange and queues of its own, dropped at the end. Exits 1 if the
//! replica does not equal the master after a drain or the latency run.

// The figures' fields are their documentation.
#![allow(missing_docs)]

mod cpu;
mod nats;
mod raw;
mod raw_nats;
mod stats;

use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use cqrs::capture::triggers;
use cqrs::db::{Db, SqlConn};
use cqrs::{Error, MasterModel, Relay, atomic};
use cqrs_tests::items::{self, CQRS_ID, MASTER_TABLE, REPLICA_TABLE, SoakItem};
use cqrs_tests::{Kind, TestBroker, TestDb, amqp_url, sql_for};
use stats::{Runs, Spread};

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
    /// Offered loads of the latency curve, changes per second.
    #[arg(long, value_delimiter = ',', default_values_t = [100.0, 250.0, 500.0])]
    latency_rates: Vec<f64>,
    /// Seconds of each latency run.
    #[arg(long, default_value_t = 10.0)]
    latency_seconds: f64,
    /// The p99 the highest sustainable rate must stay under, ms.
    #[arg(long, default_value_t = 50.0)]
    latency_bound: f64,
    /// Rates tried (one run each) after the curve to find the highest that keeps the bound.
    #[arg(long, default_value_t = 4)]
    latency_search: usize,
    /// Write the table as JSON here too.
    #[arg(long)]
    json: Option<std::path::PathBuf>,
    /// Rows of the bulk-dump, bulk-load and diff runs.
    #[arg(long, default_value_t = 1_000_000)]
    bulk_rows: usize,
    /// Take only these groups of figures (default: all but the peer group).
    #[arg(long, value_delimiter = ',', value_parser = ["capture", "relay", "e2e", "latency", "bulk", "diff", "cluster", "nats"])]
    only: Vec<String>,
    /// Also take the same figures from a peer in the same run: `django` (django-cqrs 3.1.0 in the
    /// interop tests' virtual environment, on the same model shape).
    #[arg(long, value_parser = ["django"])]
    peer: Option<String>,
    /// Messages in the peer group's drain backlog (django-cqrs consumes a few hundred per second).
    #[arg(long, default_value_t = 2_000)]
    peer_messages: usize,
    /// Rows of the peer group's bulk-dump and bulk-load.
    #[arg(long, default_value_t = 20_000)]
    peer_rows: usize,
    /// `CQRS_LOG` of the relay and consumer processes (e.g. `cqrs=debug` for per-batch timings);
    /// the default is what `cqrs` logs when `CQRS_LOG` is unset. Their stderr goes to
    /// `cqrs-bench-<pid>.log` in the temporary directory.
    #[arg(long, default_value = cqrs_cli::DEFAULT_LOG_FILTER)]
    process_log: String,
}

/// One line of the table.
#[derive(Debug, serde::Serialize)]
struct Figure {
    figure: String,
    /// The median of the runs.
    value: f64,
    unit: &'static str,
    values: Option<Spread>,
    ceiling_name: String,
    ceiling: Option<Spread>,
    /// value ÷ ceiling per run.
    ratio: Option<Spread>,
    runs: usize,
    failed: usize,
}

impl Figure {
    /// The figure as a row of the printed table.
    fn row(&self) -> String {
        let decimals = if self.unit == "ms" { 2 } else { 1 };
        let show = |s: &Option<Spread>| {
            s.map_or(String::new(), |s| {
                s.show(decimals, &format!(" {}", self.unit))
            })
        };
        let ceiling = match self.ceiling {
            Some(_) => format!("{} ({})", show(&self.ceiling), self.ceiling_name),
            None => self.ceiling_name.clone(),
        };
        format!(
            "| {} | {} | {ceiling} | {} | {} / {} |",
            self.figure,
            show(&self.values),
            self.ratio(),
            self.runs,
            self.failed
        )
    }

    fn ratio(&self) -> String {
        match self.ratio {
            Some(r) if self.unit.ends_with("/s") => r.scaled(100.0).show(0, "%"),
            Some(r) => r.show(1, "×"),
            None => String::new(),
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
    /// The shared PostgreSQL server and RabbitMQ node, for CPU per row.
    meter: cpu::Meter,
    /// CPU per row of each measured window, per run, for the CPU table.
    cpu: Vec<(String, Vec<cpu::Window>)>,
    /// A private nats-server, started by the first group that wants NATS.
    nats: Option<nats::NatsServer>,
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

/// What one latency run measured.
struct LatencyRun {
    /// Each row's lag from its due time to its apply time, ms, sorted.
    lags: Vec<f64>,
    /// The same split at the master's stamp and at the relay's claim (PostgreSQL), one sorted list
    /// per stage, in the order `pg_stages` gives them.
    stages: Vec<Vec<f64>>,
    /// Changes per second the writers achieved.
    achieved: f64,
    relay_rss: f64,
    consumer_rss: f64,
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

    fn is_nats(&self) -> bool {
        self.broker.starts_with("nats://")
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
        args.latency_rates = vec![100.0];
        args.latency_search = 0;
        args.latency_seconds = 1.0;
        args.bulk_rows = 2_000;
        args.peer_messages = 200;
        args.peer_rows = 2_000;
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

/// A trigger on the master recording when the relay's claim deleted each outbox row (latency
/// runs on PostgreSQL: the relay claims by `DELETE … RETURNING`, and an `AFTER` row trigger runs
/// at the end of that statement, in its transaction).
const CLAIMS_ON: &str = "CREATE TABLE IF NOT EXISTS bench_claims (pk TEXT NOT NULL, \
       at TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp());
     CREATE OR REPLACE FUNCTION bench_claimed() RETURNS trigger AS $$
     BEGIN INSERT INTO bench_claims (pk) VALUES (OLD.pk); RETURN NULL; END $$ LANGUAGE plpgsql;
     DROP TRIGGER IF EXISTS bench_claimed ON cqrs_outbox;
     CREATE TRIGGER bench_claimed AFTER DELETE ON cqrs_outbox
       FOR EACH ROW EXECUTE FUNCTION bench_claimed();";
const CLAIMS_OFF: &str = "DROP TRIGGER bench_claimed ON cqrs_outbox; \
     DROP FUNCTION bench_claimed(); DROP TABLE bench_claims";

/// The stages of a PostgreSQL latency run, ms per row, each sorted: due→master stamp, master
/// stamp→apply, master stamp→relay claim, relay claim→apply. A row claimed twice (a relay that
/// lost its batch) counts from its last claim.
fn pg_stages(replica: &mut Db, master: &mut Db) -> cqrs::Result<Vec<Vec<f64>>> {
    let ms = |t: &str| format!("CAST(extract(epoch FROM {t}) * 1000 AS TEXT)");
    let claims: std::collections::HashMap<String, f64> = master
        .load_text(
            &format!(
                "SELECT json_build_object('pk', pk, 'at', {})::text AS j FROM bench_claims",
                ms("at")
            ),
            vec![],
        )?
        .iter()
        .map(|j| {
            let v: serde_json::Value = serde_json::from_str(j).expect("json");
            let at: f64 = v["at"].as_str().expect("at").parse().expect("ms");
            (v["pk"].as_str().expect("pk").to_string(), at)
        })
        .fold(Default::default(), |mut m, (pk, at)| {
            let e = m.entry(pk).or_insert(at);
            *e = f64::max(*e, at);
            m
        });
    let rows = replica.load_text(
        &format!(
            "SELECT json_build_object('id', CAST(id AS TEXT), 'due', CAST(CAST(note AS DOUBLE PRECISION) / 1000 AS TEXT), \
               'stamp', {}, 'applied', {})::text AS j FROM {REPLICA_TABLE}",
            ms("cqrs_updated"),
            ms("applied_at")
        ),
        vec![],
    )?;
    let mut stages: Vec<Vec<f64>> = vec![Vec::new(); 4];
    for j in rows {
        let v: serde_json::Value = serde_json::from_str(&j).expect("json");
        let f = |k: &str| -> f64 { v[k].as_str().expect(k).parse().expect("ms") };
        let (due, stamp, applied) = (f("due"), f("stamp"), f("applied"));
        stages[0].push(stamp - due);
        stages[1].push(applied - stamp);
        let id = v["id"].as_str().expect("id");
        let claimed = *claims.get(id).ok_or_else(|| {
            Error::config(format!(
                "row {id} reached the replica without a recorded claim"
            ))
        })?;
        stages[2].push(claimed - stamp);
        stages[3].push(applied - claimed);
    }
    for s in &mut stages {
        s.sort_by(f64::total_cmp);
    }
    Ok(stages)
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
        let backend: Vec<String> = master
            .connect()
            .load_text("SELECT CAST(pg_backend_pid() AS TEXT) AS j", vec![])?;
        let meter = cpu::Meter {
            postmaster: backend
                .first()
                .and_then(|p| p.parse().ok())
                .and_then(cpu::postmaster_of),
            broker: cpu::rabbitmq_pid(),
            ..cpu::Meter::default()
        };
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
            meter,
            cpu: Vec::new(),
            nats: None,
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
        if wanted("nats") {
            self.nats_relay_and_drain(args)?;
        }
        let stacks = if wanted("e2e") || wanted("latency") {
            let mut stacks = self.stacks()?;
            if wanted("nats") {
                stacks.push(self.nats_stack()?);
            }
            stacks
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
        if args.peer.as_deref() == Some("django") {
            self.django(args)?;
        }
        Ok(())
    }

    /// django-cqrs 3.1.0 beside cqrs in the same run, on the same model shape (the interop
    /// tests' Django project: `SoakItem` as master and replica, tables `soak_items` and
    /// `soak_replica_items`), on a queue and exchange of its own; each figure is cqrs's beside
    /// django-cqrs's from the same run (order alternating), the ratio cqrs ÷ django-cqrs:
    /// a replica draining a backlog (`consume -w 1` against `cqrs_consume -w 1`), a master
    /// creating rows one per transaction end to end to a replica (one writer with the relay and
    /// `consume -w N` against `save()` with `cqrs_consume -w N`, N = 1, 2), `bulk-dump` against
    /// `cqrs_bulk_dump` and `bulk-load` against `cqrs_bulk_load`.
    fn django(&mut self, args: &Args) -> cqrs::Result<()> {
        use cqrs_tests::django::{Django, Role, Running};
        let n = args.peer_messages;
        let peer = TestBroker::new();
        let theirs = Django::new(Role::Replica, &peer);
        let their_master = Django::new(Role::Master, &peer);
        let their_stack = Stack {
            label: "django-cqrs",
            master: their_master.db.url.clone(),
            replica: theirs.db.url.clone(),
            broker: amqp_url(),
        };
        let consuming = |workers: usize| -> cqrs::Result<Running> {
            let mut c = theirs.spawn(&["cqrs_consume", "-w", &workers.to_string()]);
            let up = wait_for(Duration::from_secs(60), || {
                c.exited().is_none()
                    && peer
                        .consumers_if_declared(&peer.queue)
                        .is_some_and(|n| n > 0)
            });
            if up {
                Ok(c)
            } else {
                Err(Error::config(
                    "django-cqrs's cqrs_consume did not start consuming",
                ))
            }
        };
        // django-cqrs declares its queue itself: once, before the first backlog.
        drop(consuming(1)?);

        let mut drain = Runs::default();
        for run in 0..args.runs {
            self.clear_replica()?;
            clear(&mut Db::connect(&theirs.db.url)?, &[REPLICA_TABLE])?;
            // The same backlog on both queues, each through our relay.
            let url = self.master.url.clone();
            relay_to_both(&url, &self.broker, &peer, n)?;
            self.tap.transport.purge(&self.tap.queue)?;
            let ours = || self.drain_process(args, 1, n).map(|d| d.map(|d| d.0));
            let django = || -> cqrs::Result<Option<f64>> {
                let mut arrivals = Arrivals::new(&theirs.db.url, &url)?;
                let started = Instant::now();
                let c = consuming(1)?;
                let drained = arrivals.drain_time(n, started);
                drop(c);
                Ok(drained.map(|(took, before)| (n - before) as f64 / took.as_secs_f64()))
            };
            let pair = in_turn(run, ours, django)?;
            self.record_pair(&mut drain, pair, &format!("a drain of {n} messages"));
            self.compare(&self.pg(), "after a drain beside django-cqrs")?;
            self.compare(
                &Stack {
                    master: url.clone(),
                    ..their_stack.clone()
                },
                "after django-cqrs's drain",
            )?;
        }
        self.add(
            format!("replica drains {n} messages, consume -w 1, beside django-cqrs"),
            "msgs/s",
            "django-cqrs 3.1.0 cqrs_consume -w 1, the same messages",
            &drain,
        );

        // One writer, one row per transaction: creates, then updates of rows both replicas
        // already hold.
        let table_rows = args.peer_rows;
        let shapes = [
            (
                Work::Creates {
                    writers: 1,
                    rows: 1,
                },
                "creates",
                "save()",
            ),
            (
                Work::Updates(table_rows),
                "updates",
                "save() of a changed row",
            ),
        ];
        for (work, what, their_way) in shapes {
            for workers in [1, 2] {
                let mut e2e = Runs::default();
                for run in 0..args.runs {
                    let stack = self.pg();
                    let ours = || -> cqrs::Result<Option<f64>> {
                        let t = self.through(args, &stack, cpu::Meter::default(), work, workers)?;
                        Ok(t.done.then(|| t.rows as f64 / t.took.as_secs_f64()))
                    };
                    let django = || -> cqrs::Result<Option<f64>> {
                        let secs = args.seconds.to_string();
                        let mut save = vec!["bench_save", "--seconds", &secs];
                        let n = table_rows.to_string();
                        match work {
                            Work::Creates { .. } => {
                                clear(&mut Db::connect(&their_stack.master)?, &[MASTER_TABLE])?;
                                clear(&mut Db::connect(&their_stack.replica)?, &[REPLICA_TABLE])?;
                            }
                            Work::Updates(_) => {
                                populate(&their_stack.master, &their_stack.replica, table_rows)?;
                                save.extend(["--updates", &n]);
                            }
                        }
                        let c = consuming(workers)?;
                        let started = Instant::now();
                        let saved: usize = their_master
                            .manage(&save)
                            .trim()
                            .parse()
                            .map_err(|e| Error::config(format!("bench_save's count: {e}")))?;
                        let done = match work {
                            Work::Creates { .. } => {
                                Arrivals::new(&their_stack.replica, &their_stack.master).is_ok_and(
                                    |mut a| wait_for(Duration::from_secs(300), || a.all(saved)),
                                )
                            }
                            Work::Updates(_) => {
                                revisions_arrive(&their_stack.master, &their_stack.replica)
                            }
                        };
                        let took = started.elapsed();
                        drop(c);
                        Ok(done.then(|| saved as f64 / took.as_secs_f64()))
                    };
                    let pair = in_turn(run, ours, django)?;
                    let label = format!("{what} end to end with -w {workers}");
                    self.record_pair(&mut e2e, pair, &label);
                    self.compare(&self.pg(), &format!("after {label} beside django-cqrs"))?;
                    self.compare(&their_stack, &format!("after django-cqrs {label}"))?;
                }
                self.add(
                    format!(
                        "end to end, 1 writer, 1 row/txn {what}, relay + consume -w {workers}, beside django-cqrs"
                    ),
                    "rows/s",
                    &format!("django-cqrs 3.1.0: {their_way} + cqrs_consume -w {workers}"),
                    &e2e,
                );
            }
        }

        // Bulk: the same generated rows in both masters.
        let rows = args.peer_rows;
        let dir = std::env::temp_dir().join(format!("cqrs-bench-peer-{}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|e| Error::config(format!("{dir:?}: {e}")))?;
        let (ours_file, theirs_file) = (dir.join("cqrs.dump"), dir.join("django.dump"));
        let (ours_file, theirs_file) = (
            ours_file.to_str().expect("utf-8"),
            theirs_file.to_str().expect("utf-8"),
        );
        self.clear_master()?;
        generate(&mut self.master.connect(), MASTER_TABLE, rows)?;
        clear(&mut Db::connect(&their_stack.master)?, &[MASTER_TABLE])?;
        generate(&mut Db::connect(&their_stack.master)?, MASTER_TABLE, rows)?;
        let timed =
            |command: &mut Command| seconds_of(&mut [command]).map(|secs| rows as f64 / secs);
        let (mut dumps, mut loads) = (Runs::default(), Runs::default());
        for run in 0..args.runs {
            let dump_ours = || {
                let mut c = self.command(&["bulk-dump", "-c", CQRS_ID, "-o", ours_file, "--force"]);
                c.args(["--database-url", &self.master.url]);
                timed(&mut c)
            };
            let dump_theirs = || {
                let _ = std::fs::remove_file(theirs_file);
                timed(&mut their_master.command(&[
                    "cqrs_bulk_dump",
                    "-c",
                    CQRS_ID,
                    "-o",
                    theirs_file,
                ]))
            };
            let (a, b) = in_turn(run, dump_ours, dump_theirs)?;
            dumps.push(a, Some(b));
            let load_ours = |this: &mut Self| -> cqrs::Result<f64> {
                this.clear_replica()?;
                let mut c = this.command(&["bulk-load", "-i", ours_file]);
                c.args(["--database-url", &this.replica.url]);
                let rate = timed(&mut c)?;
                this.compare(&this.pg(), "after bulk-load beside django-cqrs")?;
                Ok(rate)
            };
            let load_theirs = |this: &mut Self| -> cqrs::Result<f64> {
                clear(&mut Db::connect(&their_stack.replica)?, &[REPLICA_TABLE])?;
                let rate = timed(&mut theirs.command(&["cqrs_bulk_load", "-i", theirs_file]))?;
                this.compare(&their_stack, "after django-cqrs's cqrs_bulk_load")?;
                Ok(rate)
            };
            let (a, b) = if run % 2 == 0 {
                let a = load_ours(self)?;
                (a, load_theirs(self)?)
            } else {
                let b = load_theirs(self)?;
                (load_ours(self)?, b)
            };
            loads.push(a, Some(b));
        }
        let _ = std::fs::remove_dir_all(&dir);
        self.add(
            format!("bulk-dump, {rows} rows, beside django-cqrs"),
            "rows/s",
            "django-cqrs 3.1.0 cqrs_bulk_dump, the same rows",
            &dumps,
        );
        self.add(
            format!("bulk-load, {rows} rows, beside django-cqrs"),
            "rows/s",
            "django-cqrs 3.1.0 cqrs_bulk_load of its own dump of the same rows",
            &loads,
        );

        // The diff pipeline over the loaded replicas, 1% of the rows newer on each master.
        let drifted = rows / 100;
        let drift = format!(
            "UPDATE {MASTER_TABLE} SET cqrs_revision = cqrs_revision + 1 WHERE id % 100 = 0; ANALYZE {MASTER_TABLE}"
        );
        self.master.connect().batch_execute(&drift)?;
        Db::connect(&their_stack.master)?.batch_execute(&drift)?;
        // Rows compared per second, once the SYNCs of exactly the drifted rows are on the queue.
        let synced = |secs: f64, broker: &TestBroker| -> cqrs::Result<f64> {
            let there = wait_for(Duration::from_secs(30), || {
                broker.count(&broker.queue) as usize >= drifted
            });
            let count = broker.count(&broker.queue) as usize;
            broker.transport.purge(&broker.queue)?;
            if !there || count != drifted {
                return Err(Error::config(format!(
                    "the diff pipeline left {count} SYNCs on {}, not the {drifted} drifted rows",
                    broker.queue
                )));
            }
            Ok(rows as f64 / secs)
        };
        let mut diffs = Runs::default();
        for run in 0..args.runs {
            let stage = |command: &[&str], db: &str| {
                let mut c = self.command(command);
                c.args(["--database-url", db])
                    .env("CQRS_LOG", &args.process_log);
                c
            };
            let ours = || {
                let secs = seconds_of(&mut [
                    &mut stage(&["diff-master", "-c", CQRS_ID], &self.master.url),
                    &mut stage(&["diff-replica"], &self.replica.url),
                    &mut stage(&["diff-sync"], &self.master.url),
                ])?;
                self.tap.transport.purge(&self.tap.queue)?;
                synced(secs, &self.broker)
            };
            let django = || {
                let secs = seconds_of(&mut [
                    &mut their_master.command(&["cqrs_diff_master", "-cid", CQRS_ID]),
                    &mut theirs.command(&["cqrs_diff_replica"]),
                    &mut their_master.command(&["cqrs_diff_sync"]),
                ])?;
                synced(secs, &peer)
            };
            let (a, b) = in_turn(run, ours, django)?;
            diffs.push(a, Some(b));
        }
        self.add(
            format!("diff pipeline, {rows} rows, 1% drift, beside django-cqrs"),
            "rows/s",
            "django-cqrs 3.1.0 cqrs_diff_master | cqrs_diff_replica | cqrs_diff_sync, the same rows",
            &diffs,
        );
        self.clear_master()?;
        self.clear_replica()
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
            let (mut relay, mut drain, mut fan) =
                (Runs::default(), Runs::default(), Runs::default());
            let mut last: Option<Vec<raw::Received>> = None;
            let publish = |messages: &[raw::Received]| {
                let took = raw::publish(
                    &sinks[0].transport,
                    &sinks[0].exchange,
                    SINK_KEY,
                    messages,
                    raw::Framing::AsRelayed,
                );
                messages.len() as f64 / took.as_secs_f64()
            };
            let purge = |qs: &[&TestBroker]| -> cqrs::Result<()> {
                qs.iter()
                    .try_for_each(|q| q.transport.purge(&q.queue).map(drop))
            };
            for run in 0..args.runs {
                // lapin goes first every other run, with the previous run's messages.
                let early = last.as_deref().filter(|_| run % 2 == 1).map(publish);
                purge(&[&sinks[0], &sinks[1]])?;
                self.clear_replica()?;
                let (rate, _) = relay_rate(&self.master.url, &broker, n, &cpu::Meter::default())?;
                let url = self.master.url.clone();
                self.check_relayed(&url, &format!("{kind} cluster relay"));
                let Some((received, took)) = raw::consume(&tap.transport, &tap.queue, n) else {
                    self.problems
                        .push(format!("{kind} cluster: lapin did not read {n} messages"));
                    relay.fail();
                    drain.fail();
                    fan.fail();
                    purge(&[&broker])?;
                    continue;
                };
                let consume = n as f64 / took.as_secs_f64();
                relay.push(rate, Some(early.unwrap_or_else(|| publish(&received))));
                purge(&[&sinks[0], &sinks[1]])?;
                let mut arrivals = Arrivals::new(&self.replica.url, &self.master.url)?;
                let started = Instant::now();
                let child = spawn(
                    cqrs_command(&["consume", "-w", "2"], &urls, &broker),
                    &self.replica.url,
                    args,
                );
                let drained = arrivals.drain_time(n, started);
                stop(child);
                match drained {
                    Some((took, before)) => {
                        drain.push((n - before) as f64 / took.as_secs_f64(), Some(consume));
                        self.compare(
                            &self.pg(),
                            &format!("after a drain from {kind} cluster queues"),
                        )?;
                    }
                    None => {
                        self.problems.push(format!(
                            "{kind} cluster: consume -w 2 did not apply {n} messages"
                        ));
                        drain.fail();
                    }
                }

                // Fan-out: the replica's queue, the tap and 8 more take every message.
                let more = queues(8, &broker, CQRS_ID);
                let fan_sinks = queues(8, &broker, SINK_KEY);
                let few = &received[..fan_n.min(received.len())];
                let early = (run % 2 == 1).then(|| publish(few));
                purge(&[&sinks[0], &sinks[1]])?;
                purge(&fan_sinks.iter().collect::<Vec<_>>())?;
                let (rate, _) =
                    relay_rate(&self.master.url, &broker, fan_n, &cpu::Meter::default())?;
                self.check_relayed(&url, &format!("{kind} cluster fan-out"));
                fan.push(rate, Some(early.unwrap_or_else(|| publish(few))));
                let all: Vec<&TestBroker> = [&broker, &tap]
                    .into_iter()
                    .chain(&sinks)
                    .chain(&more)
                    .chain(&fan_sinks)
                    .collect();
                purge(&all)?;
                last = Some(received);
            }
            let ceiling = |what: &str| format!("lapin {what}, {kind} queues, same 3-node cluster");
            self.add(
                format!("relay alone, {n} messages, 3-node cluster, {kind} queues"),
                "msgs/s",
                &ceiling("confirmed publish of the same messages to 2 queues"),
                &relay,
            );
            self.add(
                format!("replica drains {n} messages, consume -w 2, 3-node cluster, {kind} queues"),
                "msgs/s",
                &ceiling("consume, multiple acks"),
                &drain,
            );
            self.add(
                format!(
                    "relay fans out {fan_n} messages to 10 queues, 3-node cluster, {kind} queues"
                ),
                "msgs/s",
                &ceiling("confirmed publish of the same messages to 10 queues"),
                &fan,
            );
        }
        Ok(())
    }

    /// A figure over its runs, beside the ceiling of each run.
    fn add(&mut self, figure: String, unit: &'static str, ceiling_name: &str, runs: &Runs) {
        let values = runs.values();
        let f = Figure {
            figure,
            value: values.map_or(f64::NAN, |v| v.median),
            unit,
            values,
            ceiling_name: ceiling_name.into(),
            ceiling: runs.ceilings(),
            ratio: runs.ratios(),
            runs: runs.ok(),
            failed: runs.failed(),
        };
        println!("  {}", f.row());
        if f.failed > 0 {
            self.problems
                .push(format!("{}: {} run(s) failed", f.figure, f.failed));
        }
        self.figures.push(f);
    }

    /// Record a problem unless every row in the master table has its message in the outbox.
    fn check_captured(&mut self, what: &str) {
        let (written, queued) = (
            count(&self.master.url, MASTER_TABLE),
            count(&self.master.url, "cqrs_outbox"),
        );
        if written != queued {
            self.problems.push(format!(
                "{what}: {written} rows written but {queued} messages queued"
            ));
        }
    }

    /// Record a problem unless the relay deleted every outbox row it published (waiting up to
    /// 10 s: a relay deletes a batch's rows just after the broker confirms them).
    fn check_relayed(&mut self, master_url: &str, what: &str) {
        if !wait_for(Duration::from_secs(10), || {
            count(master_url, "cqrs_outbox") == 0
        }) {
            let left = count(master_url, "cqrs_outbox");
            self.problems
                .push(format!("{what}: {left} outbox rows left after the relay"));
        }
    }

    /// CPU µs per row of a window over its runs, a figure per component that used any.
    fn add_cpu(&mut self, window: String, runs: Vec<cpu::Window>) {
        if runs.is_empty() {
            return;
        }
        for (i, (part, _)) in runs[0].parts().into_iter().enumerate() {
            let mut r = Runs::default();
            for w in &runs {
                r.push(w.parts()[i].1, None);
            }
            if r.values().is_some_and(|v| v.max > 0.0) {
                self.add(format!("CPU per row, {window}: {part}"), "µs/row", "", &r);
            }
        }
        self.cpu.push((window, runs));
    }

    /// A run of ours beside django-cqrs's: both values, or a failed run and a problem saying which
    /// side did not finish.
    fn record_pair(&mut self, runs: &mut Runs, pair: (Option<f64>, Option<f64>), what: &str) {
        match pair {
            (Some(a), Some(b)) => runs.push(a, Some(b)),
            (a, b) => {
                self.problems.push(format!(
                    "{what} beside django-cqrs did not finish (ours {a:?}, django-cqrs {b:?})"
                ));
                runs.fail();
            }
        }
    }

    /// A figure taken once, with no ceiling (a peak RSS).
    fn add_one(&mut self, figure: String, value: f64, unit: &'static str) {
        let mut runs = Runs::default();
        runs.push(value, None);
        self.add(figure, unit, "", &runs);
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
    /// row/txn: transactions) per second. The three take turns, in reverse order every other run.
    fn capture(&mut self, args: &Args, writers: usize, rows: usize) -> cqrs::Result<()> {
        let (mut atomic_runs, mut trigger_runs) = (Runs::default(), Runs::default());
        let trigger_spec = SoakItem::master_spec()
            .capture(cqrs::model::CaptureMode::Trigger)
            .expect("the soak model has no hooks");
        let mut cpu_runs: [Vec<cpu::Window>; 3] = Default::default();
        for run in 0..args.runs {
            // 0: no capture, 1: atomic, 2: triggers.
            let mut rates = [0.0; 3];
            let mut order = [0, 1, 2];
            if run % 2 == 1 {
                order.reverse();
            }
            for way in order {
                self.clear_master()?;
                let start = self.meter.read();
                let written = match way {
                    0 => write(&self.master.url, writers, rows, Capture::None, args.seconds)?,
                    1 => write(
                        &self.master.url,
                        writers,
                        rows,
                        Capture::Atomic,
                        args.seconds,
                    )?,
                    _ => {
                        // Installed for this measurement only: the other figures capture with
                        // atomic, and clearing the table truncates it (which the triggers refuse).
                        triggers::install(&mut self.master.connect(), &trigger_spec)?;
                        let rate =
                            write(&self.master.url, writers, rows, Capture::None, args.seconds);
                        triggers::uninstall(&mut self.master.connect(), &trigger_spec)?;
                        self.check_captured("capture by triggers");
                        rate?
                    }
                };
                cpu_runs[way].push(self.meter.since(&start, written.cpu).per_row(written.rows));
                rates[way] = written.rate;
                if way == 1 {
                    self.check_captured("capture by atomic");
                }
            }
            atomic_runs.push(rates[1], Some(rates[0]));
            trigger_runs.push(rates[2], Some(rates[0]));
        }
        self.clear_master()?;
        let unit = if rows == 1 { "txn/s" } else { "rows/s" };
        let plural = if writers == 1 { "" } else { "s" };
        let rows_plural = if rows == 1 { "" } else { "s" };
        let ceiling = format!("BEGIN; {rows}× INSERT; COMMIT, {writers} writer{plural}");
        self.add(
            format!("capture, {rows} row{rows_plural}/txn, {writers} writer{plural}"),
            unit,
            &ceiling,
            &atomic_runs,
        );
        self.add(
            format!("capture by triggers, {rows} row{rows_plural}/txn, {writers} writer{plural}"),
            unit,
            &ceiling,
            &trigger_runs,
        );
        let shape = format!("{rows} row{rows_plural}/txn, {writers} writer{plural}");
        let [plain, by_atomic, by_triggers] = cpu_runs;
        self.add_cpu(format!("no capture, {shape}"), plain);
        self.add_cpu(format!("capture by atomic, {shape}"), by_atomic);
        self.add_cpu(format!("capture by triggers, {shape}"), by_triggers);
        Ok(())
    }

    /// Per run and consumer worker count: fill the outbox and relay it (timed) beside lapin
    /// publishing the same messages (timed; it goes first every other turn, sending the previous
    /// turn's messages); drain the replica queue with a consumer process (timed) beside lapin
    /// consuming the tap (timed, order alternating); with `-w 1`, the drain beside a raw upsert of
    /// the same rows (order alternating).
    fn relay_and_drain(&mut self, args: &Args) -> cqrs::Result<()> {
        let n = args.messages;
        let (mut relayed, mut relayed_bare) = (Runs::default(), Runs::default());
        let mut drain = [Runs::default(), Runs::default()];
        let mut drain_upsert = Runs::default();
        let mut rss = 0.0f64;
        // CPU per message of each piece: the relay, lapin's publish and consume, each drain, the
        // raw upsert.
        let mut windows: [Vec<cpu::Window>; 6] = Default::default();
        let meter = self.meter;
        // The tap's copy of the last relay turn: what lapin sends when it goes first.
        let mut last: Option<Vec<raw::Received>> = None;
        let mut turn = 0usize;
        for _ in 0..args.runs {
            for workers in [1, 2] {
                turn += 1;
                let early = match &last {
                    Some(messages) if turn.is_multiple_of(2) => Some(publish_rates(
                        &self.sink,
                        &self.sink_twin,
                        messages,
                        &meter,
                    )?),
                    _ => None,
                };
                self.clear_replica()?;
                let (rate, window) = relay_rate(&self.master.url, &self.broker, n, &meter)?;
                windows[0].push(window.per_row(n));
                let url = self.master.url.clone();
                self.check_relayed(&url, "relay alone");
                let consume_first = turn % 2 == 1;
                let tap_read = |tap: &TestBroker| {
                    let start = meter.read();
                    let consumed = raw::consume(&tap.transport, &tap.queue, n);
                    (consumed, meter.since(&start, 0.0).per_row(n))
                };
                let mut consumed = None;
                if consume_first {
                    consumed = Some(tap_read(&self.tap));
                }
                let upsert_first = workers == 1 && turn % 4 == 3;
                let mut upsert = None;
                if upsert_first {
                    upsert = Some(self.raw_upsert(n)?);
                    self.clear_replica()?;
                }
                let drained = self.drain_process(args, workers, n)?;
                if !consume_first {
                    consumed = Some(tap_read(&self.tap));
                }
                let (consumed, window) = consumed.expect("read before or after the drain");
                windows[2].push(window);
                if let Some((_, _, window)) = drained {
                    windows[2 + workers].push(window);
                    self.compare(&self.pg(), "after a drain")?;
                }
                if workers == 1 && !upsert_first {
                    upsert = Some(self.raw_upsert(n)?);
                }
                let upsert = upsert.map(|(secs, window)| {
                    windows[5].push(window);
                    secs
                });
                let Some((received, took)) = consumed else {
                    self.problems
                        .push(format!("lapin did not read {n} messages from the tap"));
                    relayed.fail();
                    relayed_bare.fail();
                    drain[workers - 1].fail();
                    continue;
                };
                let (framed, bare, window) = match early {
                    Some(rates) => rates,
                    None => publish_rates(&self.sink, &self.sink_twin, &received, &meter)?,
                };
                windows[1].push(window);
                relayed.push(rate, Some(framed));
                relayed_bare.push(rate, Some(bare));
                last = Some(received);
                match drained {
                    Some((d, peak, _)) => {
                        drain[workers - 1].push(d, Some(n as f64 / took.as_secs_f64()));
                        if workers == 2 {
                            rss = rss.max(peak);
                        }
                        if let Some(upsert) = upsert {
                            drain_upsert.push(d, Some(n as f64 / upsert));
                        }
                    }
                    None => {
                        self.problems
                            .push(format!("consume -w {workers} did not apply {n} messages"));
                        drain[workers - 1].fail();
                        if workers == 1 {
                            drain_upsert.fail();
                        }
                    }
                }
            }
        }
        self.add(
            format!("relay alone, {n} messages"),
            "msgs/s",
            &format!(
                "lapin confirmed publish of the same messages (headers, message_id, mandatory), same fan-out, {} unconfirmed at most",
                raw::PUBLISH_WINDOW
            ),
            &relayed,
        );
        self.add(
            format!("relay alone, {n} messages, against bare bodies"),
            "msgs/s",
            "lapin confirmed publish of the bodies alone, same fan-out",
            &relayed_bare,
        );
        for (i, d) in drain.iter().enumerate() {
            self.add(
                format!("replica drains {n} messages, consume -w {}", i + 1),
                "msgs/s",
                "lapin consume, multiple acks",
                d,
            );
        }
        self.add(
            format!("replica drains {n} messages, consume -w 1, against a raw upsert"),
            "msgs/s",
            &format!(
                "INSERT … ON CONFLICT DO UPDATE WHERE older, {UPSERT_BATCH} rows per transaction, one connection"
            ),
            &drain_upsert,
        );
        self.add_one("consumer peak RSS, -w 2".into(), rss, "MB");
        let [relay, publish, consume, drain_1, drain_2, upsert] = windows;
        self.add_cpu(format!("relay alone, in this process, {n} messages"), relay);
        self.add_cpu(
            format!("lapin confirmed publish of the same {n} messages"),
            publish,
        );
        self.add_cpu(format!("lapin consume of {n} messages"), consume);
        self.add_cpu(format!("consume -w 1 draining {n} messages"), drain_1);
        self.add_cpu(format!("consume -w 2 draining {n} messages"), drain_2);
        self.add_cpu(
            format!("raw upsert of {n} rows, {UPSERT_BATCH} per transaction"),
            upsert,
        );
        Ok(())
    }

    /// Seconds to upsert `n` rows raw into the empty replica table (left cleared), and the CPU
    /// per row.
    fn raw_upsert(&mut self, n: usize) -> cqrs::Result<(f64, cpu::Window)> {
        self.clear_replica()?;
        let mut db = self.replica.connect();
        let start = self.meter.read();
        let took = raw::upsert(&mut db, REPLICA_TABLE, n, UPSERT_BATCH)?;
        let window = self.meter.since(&start, 0.0).per_row(n);
        self.clear_replica()?;
        Ok((took.as_secs_f64(), window))
    }

    /// `consume -w <workers>` as a process draining the replica queue's `n` messages: msgs/s from
    /// the first row applied, the process's peak RSS, and the CPU per message (the consumer's
    /// start-up included); `None` if they did not all arrive.
    fn drain_process(
        &mut self,
        args: &Args,
        workers: usize,
        n: usize,
    ) -> cqrs::Result<Option<(f64, f64, cpu::Window)>> {
        self.drain_process_on(args, workers, n, &amqp_url())
    }

    /// [`Bench::drain_process`] from the broker at `broker`.
    fn drain_process_on(
        &mut self,
        args: &Args,
        workers: usize,
        n: usize,
        broker: &str,
    ) -> cqrs::Result<Option<(f64, f64, cpu::Window)>> {
        let mut arrivals = Arrivals::new(&self.replica.url, &self.master.url)?;
        let start = self.meter.read();
        let started = Instant::now();
        let child = self.process(
            &["consume", "-w", &workers.to_string()],
            &self.replica.url,
            broker,
            args,
        );
        let drained = arrivals.drain_time(n, started);
        let meter = cpu::Meter {
            consumer: Some(child.id()),
            ..self.meter
        };
        let window = meter.since(&start, 0.0).per_row(n);
        let peak = peak_rss_mb(&child);
        stop(child);
        Ok(drained.map(|(took, before)| ((n - before) as f64 / took.as_secs_f64(), peak, window)))
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
        let mut runs = Runs::default();
        let (mut cpu_alone, mut cpu_through) = (Vec::new(), Vec::new());
        // The servers' CPU only where the stack uses them.
        let servers = if stack.is_sqlite() {
            cpu::Meter::default()
        } else {
            self.meter
        };
        for run in 0..args.runs {
            let alone = |stack: &Stack| -> cqrs::Result<(f64, cpu::Window)> {
                stack.clear_master()?;
                let start = servers.read();
                let w = write(&stack.master, 4, rows, Capture::Atomic, args.seconds)?;
                Ok((w.rate, servers.since(&start, w.cpu).per_row(w.rows)))
            };
            // The writers alone go first every other run.
            let early = if run % 2 == 1 {
                Some(alone(stack)?)
            } else {
                None
            };
            let Through {
                rows: written,
                done,
                took,
                window,
            } = self.through(
                args,
                stack,
                servers,
                Work::Creates { writers: 4, rows },
                workers,
            )?;
            if !done {
                self.problems.push(stack.named(&format!(
                    "end to end: {written} rows did not all reach the replica"
                )));
                runs.fail();
                continue;
            }
            self.compare(stack, "after an end-to-end run")?;
            let (ceiling, alone_window) = match early {
                Some(a) => a,
                None => alone(stack)?,
            };
            runs.push(written as f64 / took.as_secs_f64(), Some(ceiling));
            cpu_alone.push(alone_window);
            cpu_through.push(window);
        }
        self.add(
            stack.named(&format!(
                "end to end, 4 writers, {rows} row(s)/txn, relay + consume -w {workers}"
            )),
            "rows/s",
            "the same writers, nothing behind them",
            &runs,
        );
        let shape = format!("4 writers, {rows} row(s)/txn");
        self.add_cpu(
            stack.named(&format!(
                "end to end, {shape}, relay + consume -w {workers}"
            )),
            cpu_through,
        );
        self.add_cpu(
            stack.named(&format!("the same capturing writers alone, {shape}")),
            cpu_alone,
        );
        Ok(())
    }

    /// The relay and `consume -w <workers>` as processes on `stack` (emptied first), then
    /// `writers` capturing `rows`-row transactions for `--seconds`: how many rows, whether they
    /// all reached the replica, the time from the first write to the last row applied, and the
    /// CPU per row (`servers` as they apply to the stack). The outbox must be empty after.
    fn through(
        &mut self,
        args: &Args,
        stack: &Stack,
        servers: cpu::Meter,
        work: Work,
        workers: usize,
    ) -> cqrs::Result<Through> {
        stack.clear_master()?;
        stack.clear_replica()?;
        if let Work::Updates(n) = work {
            populate(stack.master.as_str(), stack.replica.as_str(), n)?;
        }
        let relay = self.process(&["relay"], &stack.master, &stack.broker, args);
        let consumer = self.process(
            &["consume", "-w", &workers.to_string()],
            &stack.replica,
            &stack.broker,
            args,
        );
        // Both connected and idle before the load starts.
        std::thread::sleep(Duration::from_millis(1500));
        let meter = cpu::Meter {
            relay: Some(relay.id()),
            consumer: Some(consumer.id()),
            ..servers
        };
        let start = meter.read();
        let started = Instant::now();
        let written = match work {
            Work::Creates { writers, rows } => {
                write(&stack.master, writers, rows, Capture::Atomic, args.seconds)
            }
            Work::Updates(n) => update(&stack.master, n, args.seconds),
        };
        let done = written.as_ref().is_ok_and(|w| match work {
            Work::Creates { .. } => Arrivals::new(&stack.replica, &stack.master)
                .is_ok_and(|mut a| wait_for(Duration::from_secs(300), || a.all(w.rows))),
            Work::Updates(_) => revisions_arrive(&stack.master, &stack.replica),
        });
        let took = started.elapsed();
        self.check_relayed(&stack.master, &stack.named("end to end"));
        let window = written
            .as_ref()
            .map(|w| meter.since(&start, w.cpu).per_row(w.rows))
            .unwrap_or_default();
        // Stopped before any error returns: no process outlives its run.
        stop(relay);
        stop(consumer);
        Ok(Through {
            rows: written?.rows,
            done,
            took,
            window,
        })
    }

    /// The commit→apply curve on `stack`: at each of `--latency-rates`, `--runs` runs of 4
    /// writers offering the rate on a schedule with the relay and `consume -w 2` running as
    /// processes; each row's lag is its apply time on the replica minus the time it was due to be
    /// written (carried in the row's `note`), so a writer that falls behind is not excused. Then a
    /// search (one run per rate) for the highest rate whose p99 stays under `--latency-bound` with
    /// at least 95% of the offered rate achieved. Beside a bare RabbitMQ publish→consume round
    /// trip at the same rate, run alone right after (a floor, not a bound).
    fn latency(&mut self, args: &Args, stack: &Stack) -> cqrs::Result<()> {
        let mut replica = stack.replica()?;
        // The replica stamps each row as it is written. SQLite's clock has millisecond resolution
        // and is read once per statement (a batch's rows share its start time).
        // On PostgreSQL the lag is also split in three: at the master's stamp (`cqrs_updated`,
        // set in the writer's transaction just before its commit) and at the relay's claim of
        // the row's outbox row (a trigger on the master records when the claim's `DELETE` ran):
        // the writer's part; the master's commit and the relay's wake-up and claim; the
        // publish, the broker and the consumer.
        let stages: &[&str] = match replica.backend() {
            cqrs::db::Backend::Postgres => {
                stack.master()?.batch_execute(CLAIMS_ON)?;
                &[
                    "due→master stamp",
                    "master stamp→apply",
                    "master stamp→relay claim",
                    "relay claim→apply",
                ]
            }
            cqrs::db::Backend::Sqlite => &[],
        };
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
                    "SELECT CAST(extract(epoch FROM applied_at) * 1000 \
                       - CAST(note AS DOUBLE PRECISION) / 1000 AS TEXT) AS j FROM {REPLICA_TABLE}"
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
                    "SELECT CAST((julianday(applied_at) - 2440587.5) * 86400000.0 \
                       - CAST(note AS REAL) / 1000.0 AS TEXT) AS j FROM {REPLICA_TABLE}"
                ),
                format!(
                    "DROP TRIGGER bench_applied; ALTER TABLE {REPLICA_TABLE} DROP COLUMN applied_at"
                ),
            ),
        };
        replica.batch_execute(&stamp)?;
        let (mut relay_rss, mut consumer_rss) = (0.0f64, 0.0f64);
        let bound = args.latency_bound;
        // (rate, passed) of every rate tried.
        let mut tried: Vec<(f64, bool)> = Vec::new();
        let mut next = args.latency_rates.first().copied();
        let mut searched = 0;
        while let Some(rate) = next {
            let curve = tried.len() < args.latency_rates.len();
            let runs = if curve { args.runs } else { 1 };
            let [mut p50, mut p99, mut p999, mut achieved] =
                std::array::from_fn::<Runs, 4, _>(|_| Runs::default());
            // p50 and p99 of each stage.
            let mut parts: Vec<[Runs; 2]> = stages.iter().map(|_| Default::default()).collect();
            let mut p99s = Vec::new();
            let mut rates = Vec::new();
            for _ in 0..runs {
                let Some(run) = self.latency_run(args, stack, &lag, rate)? else {
                    for r in [&mut p50, &mut p99, &mut p999, &mut achieved]
                        .into_iter()
                        .chain(parts.iter_mut().flatten())
                    {
                        r.fail();
                    }
                    continue;
                };
                relay_rss = relay_rss.max(run.relay_rss);
                consumer_rss = consumer_rss.max(run.consumer_rss);
                let rt: Option<Vec<f64>> = (!stack.is_sqlite()).then(|| {
                    let trips = match &self.nats {
                        Some(n) if stack.is_nats() => raw_nats::round_trips(
                            &n.transport,
                            "bench_rt",
                            rate,
                            args.latency_seconds,
                        ),
                        _ => raw::round_trips(
                            &self.sink.transport,
                            &self.sink.exchange,
                            ROUND_TRIP_KEY,
                            &self.sink.queue,
                            rate,
                            args.latency_seconds,
                        ),
                    };
                    let mut rt: Vec<f64> = trips.iter().map(|d| d.as_secs_f64() * 1000.0).collect();
                    rt.sort_by(f64::total_cmp);
                    rt
                });
                let q = |xs: &[f64], at: f64| stats::quantile(xs, at);
                p50.push(q(&run.lags, 0.5), rt.as_deref().map(|r| q(r, 0.5)));
                p99.push(q(&run.lags, 0.99), rt.as_deref().map(|r| q(r, 0.99)));
                p999.push(q(&run.lags, 0.999), rt.as_deref().map(|r| q(r, 0.999)));
                achieved.push(run.achieved, Some(rate));
                for ([p50, p99], lags) in parts.iter_mut().zip(&run.stages) {
                    p50.push(q(lags, 0.5), None);
                    p99.push(q(lags, 0.99), None);
                }
                p99s.push(q(&run.lags, 0.99));
                rates.push(run.achieved);
            }
            let passed = !p99s.is_empty()
                && stats::median(&p99s) < bound
                && stats::median(&rates) >= 0.95 * rate;
            tried.push((rate, passed));
            let load = if curve {
                format!("{rate:.0} changes/s offered")
            } else {
                format!("{rate:.0} changes/s offered, search")
            };
            for (name, runs) in [("p50", &p50), ("p99", &p99), ("p99.9", &p999)] {
                let floor = if stack.is_sqlite() {
                    "none (the queue file has no bare counterpart)".to_string()
                } else if stack.is_nats() {
                    format!(
                        "bare JetStream publish→pull round trip {name} at the same rate, run alone"
                    )
                } else {
                    format!("bare RabbitMQ round trip {name} at the same rate, run alone")
                };
                self.add(
                    stack.named(&format!("commit→apply {name} ({load})")),
                    "ms",
                    &floor,
                    runs,
                );
            }
            for (stage, [p50, p99]) in stages.iter().zip(&parts) {
                for (name, runs) in [("p50", p50), ("p99", p99)] {
                    self.add(
                        stack.named(&format!("of which {stage} {name} ({load})")),
                        "ms",
                        "none (a part of the line above)",
                        runs,
                    );
                }
            }
            self.add(
                stack.named(&format!("changes/s achieved ({load})")),
                "changes/s",
                "offered",
                &achieved,
            );
            next = if curve {
                args.latency_rates.get(tried.len()).copied()
            } else {
                None
            };
            if next.is_none() && searched < args.latency_search {
                // Between the highest rate that passed and the lowest that failed, or up by half.
                let lo = tried
                    .iter()
                    .filter(|t| t.1)
                    .map(|t| t.0)
                    .fold(0.0, f64::max);
                let hi = tried
                    .iter()
                    .filter(|t| !t.1 && t.0 > lo)
                    .map(|t| t.0)
                    .fold(f64::INFINITY, f64::min);
                let candidate = match (lo > 0.0, hi.is_finite()) {
                    (true, true) => ((lo + hi) / 2.0).round(),
                    (true, false) => (lo * 1.5).round(),
                    (false, _) => (hi / 2.0).round(),
                };
                let close = hi.is_finite() && lo > 0.0 && hi - lo <= 0.1 * lo;
                if !close && candidate >= 10.0 {
                    searched += 1;
                    next = Some(candidate);
                }
            }
        }
        // Later groups (bulk-load and its \copy ceiling) want the replica table as it was, and
        // the relay groups an outbox without the claims' trigger.
        replica.batch_execute(&unstamp)?;
        if !stages.is_empty() {
            stack.master()?.batch_execute(CLAIMS_OFF)?;
        }
        let highest = tried
            .iter()
            .filter(|t| t.1)
            .map(|t| t.0)
            .fold(0.0, f64::max);
        self.add_one(
            stack.named(&format!(
                "highest offered rate with commit→apply p99 < {bound:.0} ms (of {} tried)",
                tried.len()
            )),
            highest,
            "changes/s",
        );
        self.add_one(stack.named("relay peak RSS, latency runs"), relay_rss, "MB");
        self.add_one(
            stack.named("consumer peak RSS, -w 2, latency runs"),
            consumer_rss,
            "MB",
        );
        Ok(())
    }

    /// One latency run at `rate` on `stack` (see [`Bench::latency`]); `None` (and a problem)
    /// if the rows did not all reach the replica.
    fn latency_run(
        &mut self,
        args: &Args,
        stack: &Stack,
        lag_sql: &str,
        rate: f64,
    ) -> cqrs::Result<Option<LatencyRun>> {
        stack.clear_master()?;
        if !stack.is_sqlite() {
            clear(&mut stack.master()?, &["bench_claims"])?;
        }
        stack.clear_replica()?;
        let relay = self.process(&["relay"], &stack.master, &stack.broker, args);
        let consumer = self.process(&["consume", "-w", "2"], &stack.replica, &stack.broker, args);
        // Both connected and idle before the load starts.
        std::thread::sleep(Duration::from_millis(1500));
        let written = offered(&stack.master, 4, rate, args.latency_seconds);
        let done = written.as_ref().is_ok_and(|(n, _)| {
            Arrivals::new(&stack.replica, &stack.master)
                .is_ok_and(|mut a| wait_for(Duration::from_secs(120), || a.all(*n)))
        });
        self.check_relayed(&stack.master, &stack.named("latency run"));
        let (relay_rss, consumer_rss) = (peak_rss_mb(&relay), peak_rss_mb(&consumer));
        stop(relay);
        stop(consumer);
        let (written, achieved) = written?;
        if !done {
            self.problems.push(stack.named(&format!(
                "a latency run's {written} rows did not all reach the replica"
            )));
            return Ok(None);
        }
        self.compare(stack, "after a latency run")?;
        let mut replica = stack.replica()?;
        let mut sorted = |sql: &str| -> cqrs::Result<Vec<f64>> {
            let mut ms: Vec<f64> = replica
                .load_text(sql, vec![])?
                .iter()
                .map(|x| x.parse().expect("a number of milliseconds"))
                .collect();
            ms.sort_by(f64::total_cmp);
            Ok(ms)
        };
        let lags = sorted(lag_sql)?;
        let stages = if stack.is_sqlite() {
            Vec::new()
        } else {
            pg_stages(&mut replica, &mut stack.master()?)?
        };
        Ok(Some(LatencyRun {
            lags,
            stages,
            achieved,
            relay_rss,
            consumer_rss,
        }))
    }

    /// `bulk-dump` of rows inserted just before (no statistics: autovacuum is off for the table)
    /// and again after ANALYZE, against psql's `\copy` of the same table to CSV; `bulk-load` of
    /// that dump into an empty replica, against `\copy` of the CSV into it. Rows/s; the replica
    /// must equal the master after each load. Then `sync` of every row to the bench's queue (an
    /// adopted table's first sync), no ceiling: every SYNC on the queue and the outbox empty.
    fn bulk(&mut self, args: &Args) -> cqrs::Result<()> {
        let dir = std::env::temp_dir().join(format!("cqrs-bench-{}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|e| Error::config(format!("{dir:?}: {e}")))?;
        let (dump, csv) = (dir.join("dump"), dir.join("csv"));
        let (dump, csv) = (dump.to_str().expect("utf-8"), csv.to_str().expect("utf-8"));
        let n = args.bulk_rows;
        let secs = |c: &mut Command| seconds_of(&mut [c]);
        let psql = |url: &str, meta: String| {
            let mut c = Command::new("psql");
            c.args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", url, "-c", &meta]);
            c
        };
        let [mut fresh, mut analysed, mut loaded, mut synced] =
            std::array::from_fn::<Runs, 4, _>(|_| Runs::default());
        for run in 0..args.runs {
            // The ceilings go first every other run.
            let ceilings_first = run % 2 == 1;
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
            let copy_out = |secs: &dyn Fn(&mut Command) -> cqrs::Result<f64>| {
                secs(&mut psql(
                    &self.master.url,
                    format!("\\copy {MASTER_TABLE} ({COLUMNS}) TO '{csv}' CSV"),
                ))
            };
            // The fresh dump must run before ANALYZE, so every run takes it first; \copy TO
            // goes before the analysed dump every other run.
            let fresh_rate = n as f64 / secs(&mut dump_cmd())?;
            let early_out = if ceilings_first {
                Some(copy_out(&secs)?)
            } else {
                None
            };
            self.master
                .connect()
                .batch_execute(&format!("ANALYZE {MASTER_TABLE}"))?;
            let analysed_rate = n as f64 / secs(&mut dump_cmd())?;
            let out_rate = n as f64
                / match early_out {
                    Some(t) => t,
                    None => copy_out(&secs)?,
                };
            fresh.push(fresh_rate, Some(out_rate));
            analysed.push(analysed_rate, Some(out_rate));
            let copy_in = |this: &Self| -> cqrs::Result<f64> {
                this.clear_replica()?;
                let t = secs(&mut psql(
                    &this.replica.url,
                    format!("\\copy {REPLICA_TABLE} ({COLUMNS}) FROM '{csv}' CSV"),
                ))?;
                this.clear_replica()?;
                Ok(n as f64 / t)
            };
            let early_in = if ceilings_first {
                Some(copy_in(self)?)
            } else {
                None
            };
            self.clear_replica()?;
            let mut load_cmd = self.command(&["bulk-load", "-i", dump]);
            load_cmd.args(["--database-url", &self.replica.url]);
            let load_rate = n as f64 / secs(&mut load_cmd)?;
            self.compare(&self.pg(), "after bulk-load")?;
            let in_rate = match early_in {
                Some(r) => r,
                None => copy_in(self)?,
            };
            loaded.push(load_rate, Some(in_rate));
            // The first sync of an adopted table: one SYNC per row, directed to the bench's
            // queue, until the last is confirmed (`sync` waits for its own messages).
            let mut sync_cmd = self.command(&["sync", "-c", CQRS_ID, "-f", "{}"]);
            sync_cmd.args(["--database-url", &self.master.url]);
            let took = secs(&mut sync_cmd);
            let (queued, left) = (
                self.broker.count(&self.broker.queue) as usize,
                count(&self.master.url, "cqrs_outbox"),
            );
            match took {
                Ok(t) if queued == n && left == 0 => synced.push(n as f64 / t, None),
                Ok(_) => {
                    self.problems.push(format!(
                        "sync of {n} rows left {queued} SYNCs on the queue and {left} outbox rows"
                    ));
                    synced.fail();
                }
                Err(e) => {
                    self.problems.push(format!("sync: {e}"));
                    synced.fail();
                }
            }
            self.broker.transport.purge(&self.broker.queue)?;
        }
        self.master.connect().batch_execute(&format!(
            "ALTER TABLE {MASTER_TABLE} RESET (autovacuum_enabled)"
        ))?;
        let label = |what: &str| format!("{what}, {n} rows");
        self.add(
            label("bulk-dump, fresh (no statistics)"),
            "rows/s",
            "psql \\copy TO",
            &fresh,
        );
        self.add(
            label("bulk-dump, analysed"),
            "rows/s",
            "psql \\copy TO",
            &analysed,
        );
        self.add(label("bulk-load"), "rows/s", "psql \\copy FROM", &loaded);
        self.add(
            label("sync of every row (an adopted table's first sync), until confirmed"),
            "rows/s",
            "none",
            &synced,
        );
        let _ = std::fs::remove_dir_all(&dir);
        self.clear_master()?;
        self.clear_replica()
    }

    /// `cqrs diff-master | cqrs diff-replica | cqrs diff-sync` as three processes over
    /// `--bulk-rows` rows of which 1% have a newer revision on the master: seconds from start to
    /// the last directed SYNC confirmed by the broker, in ms. No ceiling. Checks that the SYNCs
    /// on the replica's queue name exactly the drifted keys, each once.
    fn diff(&mut self, args: &Args) -> cqrs::Result<()> {
        let n = args.bulk_rows;
        let drifted = n / 100;
        let mut times = Runs::default();
        let want: Vec<i64> = (1..=n as i64).filter(|k| k % 100 == 0).collect();
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
            let stage = |command: &[&str], db: &str| {
                let mut c = self.command(command);
                c.args(["--database-url", db])
                    .env("CQRS_LOG", &args.process_log);
                c
            };
            let piped = seconds_of(&mut [
                &mut stage(&["diff-master", "-c", CQRS_ID], &self.master.url),
                &mut stage(&["diff-replica"], &self.replica.url),
                &mut stage(&["diff-sync"], &self.master.url),
            ]);
            let mut failed = false;
            let took = match piped {
                Ok(secs) => secs * 1000.0,
                Err(e) => {
                    failed = true;
                    self.problems.push(e.to_string());
                    0.0
                }
            };
            let sent = raw::consume(&self.broker.transport, &self.broker.queue, drifted);
            let mut keys: Vec<i64> = sent
                .iter()
                .flat_map(|(received, _)| received)
                .filter_map(|m| {
                    let body: serde_json::Value = serde_json::from_slice(&m.body).ok()?;
                    body["instance_pk"].as_i64()
                })
                .collect();
            keys.sort_unstable();
            let extra = self.broker.count(&self.broker.queue);
            if keys != want || extra != 0 {
                failed = true;
                self.problems.push(format!(
                    "the diff pipeline's SYNCs named {} keys ({} more left on the queue), not the {drifted} drifted ones",
                    keys.len(),
                    extra
                ));
            }
            for q in [&self.broker, &self.tap] {
                q.transport.purge(&q.queue)?;
            }
            if failed {
                times.fail();
            } else {
                times.push(took, None);
            }
        }
        self.add(
            format!("diff pipeline, {n} rows, 1% drift"),
            "ms",
            "none",
            &times,
        );
        self.clear_master()?;
        self.clear_replica()
    }

    /// Record a problem unless the replica equals the master row by row.
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
        println!(
            "Each cell: median (min–max) over the runs; the ratio is taken in each run, then spread."
        );
        println!(
            "Relay and consumer processes: this binary as an application's cqrs binary \
             (cqrs_cli::run with the harness's model), CQRS_LOG={:?}, logs in {}. \
             PostgreSQL commits with its own settings (fsync, synchronous_commit); RabbitMQ \
             messages are persistent and confirmed; the SQLite stack runs as cqrs opens it \
             (WAL, synchronous=NORMAL: durable across a process crash, not a power loss).",
            args.process_log,
            process_log_path().display()
        );
        println!("| figure | cqrs | ceiling (same runs) | ratio | runs ok / failed |");
        println!("|---|---|---|---|---|");
        for f in &self.figures {
            println!("{}", f.row());
        }
        if self.cpu.is_empty() {
            return;
        }
        println!();
        println!(
            "CPU µs per row (median of the runs): the writer threads, the PostgreSQL server (every \
             process, exited backends included), the RabbitMQ node, the relay and consumer processes, \
             and the rest of this process (lapin's threads, an in-process relay)."
        );
        println!("| window | writers | PostgreSQL | RabbitMQ | relay | consumer | harness | all |");
        println!("|---|---|---|---|---|---|---|---|");
        for (window, runs) in &self.cpu {
            let cells: Vec<String> = (0..7)
                .map(|i| {
                    let xs: Vec<f64> = runs.iter().map(|w| w.parts()[i].1).collect();
                    format!("{:.0}", stats::median(&xs))
                })
                .collect();
            println!("| {window} | {} |", cells.join(" | "));
        }
    }
}

/// `writers` threads writing transactions of `rows` inserts for `secs`, captured or not; rows/s
/// (with 1 row per transaction, transactions/s).
fn write(
    url: &str,
    writers: usize,
    rows: usize,
    capture: Capture,
    secs: f64,
) -> cqrs::Result<Written> {
    let done = AtomicU64::new(0);
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let cpu = std::thread::scope(|s| -> cqrs::Result<f64> {
        let handles: Vec<_> = (0..writers)
            .map(|w| {
                let done = &done;
                s.spawn(move || -> cqrs::Result<f64> {
                    let started = cpu::this_thread();
                    let mut db = Db::connect(url)?;
                    let mut k = 0u64;
                    while Instant::now() < deadline {
                        transaction(&mut db, rows, capture, w as u64 * 1_000_000_000 + k, None)?;
                        k += rows as u64;
                        done.fetch_add(rows as u64, Ordering::Relaxed);
                    }
                    Ok(cpu::this_thread() - started)
                })
            })
            .collect();
        let mut cpu = 0.0;
        for h in handles {
            cpu += h.join().expect("a writer does not panic")?;
        }
        Ok(cpu)
    })?;
    let rows = done.load(Ordering::Relaxed) as usize;
    Ok(Written {
        rate: rows as f64 / secs,
        rows,
        cpu,
    })
}

/// `ours` and `theirs`, ours first on even runs and second on odd ones: a pair's order alternates.
fn in_turn<T>(
    run: usize,
    ours: impl FnOnce() -> cqrs::Result<T>,
    theirs: impl FnOnce() -> cqrs::Result<T>,
) -> cqrs::Result<(T, T)> {
    if run.is_multiple_of(2) {
        let a = ours()?;
        Ok((a, theirs()?))
    } else {
        let b = theirs()?;
        Ok((ours()?, b))
    }
}

/// Run `stages` as a shell pipeline (each one's stdout the next one's stdin; the last one's
/// dropped) to the end of every stage: the seconds it took, or an error naming each stage that
/// failed with its stderr.
fn seconds_of(stages: &mut [&mut Command]) -> cqrs::Result<f64> {
    let started = Instant::now();
    let mut children = Vec::new();
    let mut input = Stdio::null();
    let last = stages.len() - 1;
    let mut failed = Vec::new();
    for (i, stage) in stages.iter_mut().enumerate() {
        let out = if i == last {
            Stdio::null()
        } else {
            Stdio::piped()
        };
        match stage
            .stdin(input)
            .stdout(out)
            .stderr(Stdio::piped())
            .spawn()
        {
            Ok(mut child) => {
                input = child.stdout.take().map_or(Stdio::null(), Stdio::from);
                children.push((format!("{stage:?}"), child));
            }
            Err(e) => {
                failed.push(format!("{stage:?}: {e}"));
                break;
            }
        }
    }
    // Every stage started is waited for before an error returns.
    for (name, child) in children {
        match child.wait_with_output() {
            Ok(out) if out.status.success() => {}
            Ok(out) => failed.push(format!(
                "{name}: {}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            )),
            Err(e) => failed.push(format!("{name}: {e}")),
        }
    }
    let took = started.elapsed().as_secs_f64();
    if failed.is_empty() {
        Ok(took)
    } else {
        Err(Error::config(failed.join("; ")))
    }
}

/// What the writers of [`Bench::through`] do.
#[derive(Debug, Clone, Copy)]
enum Work {
    /// Threads inserting transactions of `rows` rows.
    Creates { writers: usize, rows: usize },
    /// One thread changing one row per transaction, in turn over a table of this many rows that
    /// the replica already holds.
    Updates(usize),
}

/// One writer changing rows 1..=`n` in turn, one per transaction captured by `atomic` (the
/// application's Diesel `UPDATE`), for `secs`.
fn update(url: &str, n: usize, secs: f64) -> cqrs::Result<Written> {
    use diesel::{ExpressionMethods, QueryDsl};
    use items::soak_items::dsl as t;
    let started = cpu::this_thread();
    let mut db = Db::connect(url)?;
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let mut done = 0usize;
    macro_rules! on {
        ($conn:expr) => {
            while Instant::now() < deadline {
                let k = (done % n) as i64 + 1;
                atomic($conn, |tx| {
                    tx.update(t::soak_items.find(k))
                        .set(t::value.eq(t::value + 1))
                        .execute()
                })?;
                done += 1;
            }
        };
    }
    match &mut db {
        Db::Pg(conn) => on!(conn),
        Db::Sqlite(conn) => on!(conn),
    }
    Ok(Written {
        rate: done as f64 / secs,
        rows: done,
        cpu: cpu::this_thread() - started,
    })
}

/// Master and replica emptied and given the same `n` rows (so the replica holds what the
/// master's updates change).
fn populate(master: &str, replica: &str, n: usize) -> cqrs::Result<()> {
    for (url, table) in [(master, MASTER_TABLE), (replica, REPLICA_TABLE)] {
        let mut db = Db::connect(url)?;
        clear(&mut db, &[table])?;
        generate(&mut db, table, n)?;
    }
    Ok(())
}

/// Wait (up to 300 s) until the replica's revisions add up to the master's: every update applied.
fn revisions_arrive(master: &str, replica: &str) -> bool {
    let total = |url: &str, table: &str| -> Option<i64> {
        let sql = format!("SELECT CAST(COALESCE(sum(cqrs_revision), 0) AS TEXT) AS j FROM {table}");
        Db::connect(url)
            .ok()?
            .load_text(&sql, vec![])
            .ok()?
            .first()?
            .parse()
            .ok()
    };
    let Some(want) = total(master, MASTER_TABLE) else {
        return false;
    };
    let Ok(mut db) = Db::connect(replica) else {
        return false;
    };
    let sql =
        format!("SELECT CAST(COALESCE(sum(cqrs_revision), 0) AS TEXT) AS j FROM {REPLICA_TABLE}");
    wait_for(Duration::from_secs(300), || {
        db.load_text(&sql, vec![])
            .ok()
            .and_then(|r| r.first().and_then(|v| v.parse::<i64>().ok()))
            .is_some_and(|got| got >= want)
    })
}

/// What [`Bench::through`] measured.
struct Through {
    rows: usize,
    done: bool,
    took: Duration,
    window: cpu::Window,
}

/// What [`write`] did.
struct Written {
    /// Rows (1 row/txn: transactions) per second.
    rate: f64,
    rows: usize,
    /// CPU seconds of the writer threads.
    cpu: f64,
}

/// Whether a bench transaction captures its rows through `atomic`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Capture {
    /// A plain transaction: nothing captures, or the table's triggers do.
    None,
    /// Through `atomic`.
    Atomic,
}

/// One transaction of `rows` inserts (the application's Diesel statement), captured by `atomic`
/// or not, with `note` in each row.
fn transaction(
    db: &mut Db,
    rows: usize,
    capture: Capture,
    first: u64,
    note: Option<&str>,
) -> cqrs::Result<()> {
    use diesel::{Connection, ExpressionMethods, RunQueryDsl};
    use items::soak_items::dsl as t;
    let keys = first..first + rows as u64;
    let values = |k: u64| {
        (
            t::name.eq(format!("item {k}")),
            t::value.eq(k as i64),
            t::note.eq(note.map(str::to_string)),
        )
    };
    // The same code for each backend's connection.
    macro_rules! on {
        ($conn:expr) => {
            if capture == Capture::Atomic {
                atomic($conn, |tx| {
                    for k in keys {
                        tx.insert_into(t::soak_items).values(values(k)).execute()?;
                    }
                    Ok(())
                })
            } else {
                $conn.transaction(|c| {
                    for k in keys {
                        diesel::insert_into(t::soak_items)
                            .values(values(k))
                            .execute(c)?;
                    }
                    Ok::<_, cqrs::Error>(())
                })
            }
        };
    }
    match db {
        Db::Pg(conn) => on!(conn),
        Db::Sqlite(conn) => on!(conn),
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

/// An emptied master with `n` captured rows, drained by an in-process relay to `broker`:
/// messages per second, and the CPU of the drain as `meter` reads it.
fn relay_rate(
    master_url: &str,
    broker: &TestBroker,
    n: usize,
    meter: &cpu::Meter,
) -> cqrs::Result<(f64, cpu::Window)> {
    clear(
        &mut Db::connect(master_url)?,
        &[MASTER_TABLE, "cqrs_outbox"],
    )?;
    fill(master_url, n)?;
    let mut r = Relay::new(
        Db::connect(master_url)?,
        broker.transport.publisher()?,
        broker.settings(),
    )
    .reconnect_with(master_url);
    let start = meter.read();
    let started = Instant::now();
    r.drain()?;
    let rate = n as f64 / started.elapsed().as_secs_f64();
    Ok((rate, meter.since(&start, 0.0)))
}

/// An emptied master with `n` captured rows whose outbox is relayed to `first` and then, the
/// same rows put back, to `second`: the same SAVE messages on both exchanges.
fn relay_to_both(
    master_url: &str,
    first: &TestBroker,
    second: &TestBroker,
    n: usize,
) -> cqrs::Result<()> {
    clear(
        &mut Db::connect(master_url)?,
        &[MASTER_TABLE, "cqrs_outbox"],
    )?;
    fill(master_url, n)?;
    let mut db = Db::connect(master_url)?;
    db.batch_execute(
        "DROP TABLE IF EXISTS bench_outbox_copy; \
         CREATE TABLE bench_outbox_copy AS SELECT * FROM cqrs_outbox",
    )?;
    Relay::new(db, first.transport.publisher()?, first.settings())
        .reconnect_with(master_url)
        .drain()?;
    let mut db = Db::connect(master_url)?;
    db.batch_execute(
        "INSERT INTO cqrs_outbox SELECT * FROM bench_outbox_copy; DROP TABLE bench_outbox_copy",
    )?;
    Relay::new(db, second.transport.publisher()?, second.settings())
        .reconnect_with(master_url)
        .drain()?;
    Ok(())
}

/// lapin publishing `messages` with confirms to the sink (and its twin: the same fan-out as the
/// relay's), framed as the relay sent them and as bare bodies: msgs/s of each, and the CPU per
/// message of the first as `meter` reads it.
fn publish_rates(
    sink: &TestBroker,
    twin: &TestBroker,
    messages: &[raw::Received],
    meter: &cpu::Meter,
) -> cqrs::Result<(f64, f64, cpu::Window)> {
    let mut rates = [0.0; 2];
    let mut window = cpu::Window::default();
    for (i, framing) in [raw::Framing::AsRelayed, raw::Framing::Bare]
        .into_iter()
        .enumerate()
    {
        let start = meter.read();
        let took = raw::publish(&sink.transport, &sink.exchange, SINK_KEY, messages, framing);
        if i == 0 {
            window = meter.since(&start, 0.0).per_row(messages.len());
        }
        rates[i] = messages.len() as f64 / took.as_secs_f64();
        sink.transport.purge(&sink.queue)?;
        twin.transport.purge(&twin.queue)?;
    }
    Ok((rates[0], rates[1], window))
}

/// Capture `n` rows, 100 per transaction.
fn fill(url: &str, n: usize) -> cqrs::Result<()> {
    let mut db = Db::connect(url)?;
    for start in (0..n).step_by(100) {
        transaction(
            &mut db,
            100.min(n - start),
            Capture::Atomic,
            start as u64,
            None,
        )?;
    }
    Ok(())
}

/// `writers` threads sharing `rate` 1-row captured creates per second for `secs` on one schedule
/// (change k is due k / rate seconds from the start, taken in turn by the writers), each row's
/// `note` its due time in microseconds since the Unix epoch; how many were written and the rate
/// achieved (written ÷ time to the last commit).
fn offered(url: &str, writers: usize, rate: f64, secs: f64) -> cqrs::Result<(usize, f64)> {
    let n = (rate * secs) as usize;
    let origin = Instant::now();
    let wall = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970");
    let written = std::thread::scope(|s| -> cqrs::Result<usize> {
        let handles: Vec<_> = (0..writers)
            .map(|w| {
                s.spawn(move || -> cqrs::Result<usize> {
                    let mut db = Db::connect(url)?;
                    let mut mine = 0;
                    for k in (w..n).step_by(writers) {
                        let due = Duration::from_secs_f64(k as f64 / rate);
                        if let Some(wait) = due.checked_sub(origin.elapsed()) {
                            std::thread::sleep(wait);
                        }
                        let note = (wall + due).as_micros().to_string();
                        transaction(&mut db, 1, Capture::Atomic, k as u64, Some(&note))?;
                        mine += 1;
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
    })?;
    Ok((written, written as f64 / origin.elapsed().as_secs_f64()))
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

/// Where the relay and consumer processes write their logs.
fn process_log_path() -> std::path::PathBuf {
    std::env::temp_dir().join(format!("cqrs-bench-{}.log", std::process::id()))
}

/// Start `c` on database `db` with the processes' log level, its logs appended to
/// [`process_log_path`].
fn spawn(mut c: Command, db: &str, args: &Args) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(process_log_path())
        .expect("the processes' log file opens");
    c.args(["--database-url", db])
        .env("CQRS_LOG", &args.process_log)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
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
