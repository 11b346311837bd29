//! `cqrs-soak`: the chaos soak. A master writes a seeded random stream of creates, updates,
//! deletes and syncs while a relay and two consumer processes run, and faults are injected at
//! random moments: SIGKILL of the relay and of consumers, a private RabbitMQ node and a private
//! PostgreSQL cluster stopped and killed, links cut and slowed through a proxy, connections closed
//! by name, duplicated and delayed deliveries; on a 3-node RabbitMQ cluster with quorum queues,
//! nodes stopped and killed, the replica queue's leader among them; on NATS JetStream, the server
//! stopped and killed. Then the faults stop, the replica must converge,
//! and master and replica are compared row by row.
//!
//! ```text
//! cargo run --release -p cqrs-tests --bin cqrs-soak -- --seed 7 --duration 60      # short
//! cargo run --release -p cqrs-tests --bin cqrs-soak -- --long                      # 30 min per setup
//! ```
//!
//! It prints what it did and exits 1 unless every setup converged with no row differing, no dead
//! letter, something written and every fault kind injected at least once. `--json FILE` writes
//! the same report as JSON. `cqrs-soak cqrs ...` is the soak's own `cqrs` binary (its models),
//! which the supervised relay and consumers run.

// The report's fields are its documentation.
#![allow(missing_docs)]

mod injector;
mod processes;
mod setup;
mod workload;

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use cqrs::Db;

use cqrs_tests::items;
use cqrs_tests::rng::Rng;
use processes::Supervisor;
use setup::{Fault, Setup};

/// The chaos soak (see the crate docs).
#[derive(Debug, Parser)]
#[command(name = "cqrs-soak")]
struct Args {
    /// Seed of the workload and the fault schedule (default: from the clock; printed).
    #[arg(long)]
    seed: Option<u64>,
    /// Seconds of faults per setup (at least until every kind happened once).
    #[arg(long, default_value_t = 60)]
    duration: u64,
    /// The long soak: 30 minutes per setup, longer pauses between faults.
    #[arg(long)]
    long: bool,
    /// Which setups: pg (private PostgreSQL + RabbitMQ), sqlite (files + queue file), cluster
    /// (private PostgreSQL + 3-node RabbitMQ cluster, quorum queues), nats (private PostgreSQL +
    /// nats-server with JetStream), all.
    #[arg(long, default_value = "all", value_parser = ["pg", "sqlite", "cluster", "nats", "all"])]
    setup: String,
    /// Master transactions per second.
    #[arg(long, default_value_t = 150.0)]
    rate: f64,
    /// Seconds the replica may take to converge after the last fault.
    #[arg(long, default_value_t = 300)]
    converge_timeout: u64,
    /// Write the report as JSON here too.
    #[arg(long)]
    json: Option<std::path::PathBuf>,
}

/// What one setup's soak did.
#[derive(Debug, serde::Serialize)]
struct Report {
    setup: &'static str,
    seed: u64,
    fault_seconds: f64,
    transactions: u64,
    changes: u64,
    creates: u64,
    updates: u64,
    deletes: u64,
    syncs: u64,
    failed_transactions: u64,
    faults: BTreeMap<String, u64>,
    duplicated_deliveries: u64,
    delayed_deliveries: u64,
    master_rows: usize,
    replica_rows: usize,
    rows_differing: usize,
    differing_keys: Vec<i64>,
    dead_letters: usize,
    converge_seconds: Option<f64>,
    unexpected_exits: Vec<String>,
    sigterm_exits: BTreeMap<String, String>,
}

impl Report {
    /// Why this run fails, if it does.
    fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        if self.changes == 0 {
            p.push("nothing was written".into());
        }
        if self.converge_seconds.is_none() || self.rows_differing > 0 {
            p.push(format!(
                "{} rows differ: {:?}",
                self.rows_differing, self.differing_keys
            ));
        }
        if self.dead_letters > 0 {
            p.push(format!("{} dead letters without poison", self.dead_letters));
        }
        for (kind, n) in &self.faults {
            if *n == 0 {
                p.push(format!("fault {kind} never injected"));
            }
        }
        if self.duplicated_deliveries == 0 || self.delayed_deliveries == 0 {
            p.push("no duplicated or no delayed delivery injected".into());
        }
        for (label, status) in &self.sigterm_exits {
            if status != "0" {
                p.push(format!("{label} did not exit 0 on SIGTERM: {status}"));
            }
        }
        p
    }

    fn print(&self) {
        println!("== soak {} (seed {}) ==", self.setup, self.seed);
        println!("faults for {:.0} s", self.fault_seconds);
        println!(
            "written: {} transactions, {} changes ({} creates, {} updates, {} deletes, {} syncs); {} transactions failed under faults",
            self.transactions,
            self.changes,
            self.creates,
            self.updates,
            self.deletes,
            self.syncs,
            self.failed_transactions
        );
        for (kind, n) in &self.faults {
            println!("fault {kind:<30} {n:>5}");
        }
        println!(
            "fault {:<30} {:>5}",
            "duplicated deliveries", self.duplicated_deliveries
        );
        println!(
            "fault {:<30} {:>5}",
            "delayed deliveries", self.delayed_deliveries
        );
        println!(
            "rows: master {}, replica {}, differing {}",
            self.master_rows, self.replica_rows, self.rows_differing
        );
        println!("dead letters: {}", self.dead_letters);
        match self.converge_seconds {
            Some(s) => println!("converged {s:.1} s after the last fault"),
            None => println!("DID NOT CONVERGE"),
        }
        println!(
            "process exits the soak did not cause: {}",
            self.unexpected_exits.len()
        );
        for e in &self.unexpected_exits {
            println!("  {e}");
        }
        println!("exit status on SIGTERM: {:?}", self.sigterm_exits);
    }
}

fn main() -> ExitCode {
    let mut args = std::env::args_os();
    if std::env::args().nth(1).as_deref() == Some("cqrs") {
        let program = args.next().expect("argv[0]");
        args.next();
        return cqrs_cli::run_from(items::registry(), std::iter::once(program).chain(args));
    }
    let args = Args::parse();
    let seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    });
    let duration = Duration::from_secs(if args.long { 1800 } else { args.duration });
    let setups: &[&'static str] = match args.setup.as_str() {
        "pg" => &["pg"],
        "sqlite" => &["sqlite"],
        "cluster" => &["cluster"],
        "nats" => &["nats"],
        _ => &["sqlite", "pg", "cluster", "nats"],
    };
    let mut reports = Vec::new();
    for name in setups {
        match soak(name, seed, duration, &args) {
            Ok(report) => {
                report.print();
                reports.push(report);
            }
            Err(e) => {
                eprintln!("cqrs-soak: setup {name}: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&reports).expect("the report serializes");
        if let Err(e) = std::fs::write(path, text) {
            eprintln!("cqrs-soak: {}: {e}", path.display());
            return ExitCode::FAILURE;
        }
    }
    let problems: Vec<String> = reports
        .iter()
        .flat_map(|r| {
            r.problems()
                .into_iter()
                .map(move |p| format!("{}: {p}", r.setup))
        })
        .collect();
    if problems.is_empty() {
        println!("soak passed");
        ExitCode::SUCCESS
    } else {
        for p in &problems {
            eprintln!("cqrs-soak: FAILED: {p}");
        }
        ExitCode::FAILURE
    }
}

/// One setup: stream with faults, then converge and compare.
fn soak(name: &'static str, seed: u64, duration: Duration, args: &Args) -> cqrs::Result<Report> {
    let mut setup = Setup::prepare(name, seed)?;
    let supervisor = Supervisor::new(&setup.dir);
    setup.start_processes(&supervisor);
    let written = workload::Written::default();
    let injected = injector::Injected::default();
    let (stop_writer, stop_injector, stop_tending) = (
        AtomicBool::new(false),
        AtomicBool::new(false),
        AtomicBool::new(false),
    );
    let settings = setup.settings();
    let mut rng = Rng::new(seed ^ 0xFA17);
    let mut faults: BTreeMap<Fault, u64> = setup.faults().into_iter().map(|f| (f, 0)).collect();
    let (master_url, tap, queue) = (
        setup.master_url.clone(),
        setup.tap.clone(),
        setup.queue.clone(),
    );
    let (fault_time, converge, differing) = std::thread::scope(|s| {
        s.spawn(|| workload::run(&master_url, seed, args.rate, &stop_writer, &written));
        let injector = s.spawn(|| {
            injector::run(
                &settings,
                &tap,
                &queue,
                seed ^ 0xD0B1E,
                &stop_injector,
                &injected,
            )
        });
        s.spawn(|| {
            while !stop_tending.load(Ordering::SeqCst) {
                supervisor.tend();
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        let started = Instant::now();
        // Every kind once, in a seeded order, then at random until the time is up.
        let mut first_round: Vec<Fault> = faults.keys().copied().collect();
        while started.elapsed() < duration || !first_round.is_empty() {
            std::thread::sleep(setup::gap(&mut rng, args.long));
            let fault = if first_round.is_empty() {
                let kinds: Vec<Fault> = faults.keys().copied().collect();
                kinds[rng.below(kinds.len() as u64) as usize]
            } else {
                first_round.remove(rng.below(first_round.len() as u64) as usize)
            };
            let what = setup.inject(fault, &mut rng, &supervisor);
            *faults.get_mut(&fault).expect("a kind of this setup") += 1;
            println!(
                "[{:>6.1} s] {}: {what}",
                started.elapsed().as_secs_f64(),
                fault.name()
            );
        }
        let fault_time = started.elapsed();
        stop_writer.store(true, Ordering::SeqCst);
        stop_injector.store(true, Ordering::SeqCst);
        let healed = Instant::now();
        // Its delayed copies go out first: convergence is judged after the last delivery.
        injector.join().expect("the injector does not panic");
        let outcome = converge(&setup, Duration::from_secs(args.converge_timeout));
        let converge = outcome.as_ref().ok().map(|_| healed.elapsed());
        stop_tending.store(true, Ordering::SeqCst);
        (fault_time, converge, outcome.err().unwrap_or_default())
    });
    let sigterm = supervisor.terminate(Duration::from_secs(60));
    let dead_letters = cqrs::transport::connect(&settings, "check")?
        .letters(&setup.queue)?
        .total();
    let master = items::snapshot(&mut Db::connect(&setup.master_url)?, items::MASTER_TABLE)?;
    let replica = items::snapshot(&mut Db::connect(&setup.replica_url)?, items::REPLICA_TABLE)?;
    let load = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
    let unexpected = supervisor.unexpected.lock().unwrap().clone();
    Ok(Report {
        setup: name,
        seed,
        fault_seconds: fault_time.as_secs_f64(),
        transactions: load(&written.transactions),
        changes: load(&written.changes),
        creates: load(&written.creates),
        updates: load(&written.updates),
        deletes: load(&written.deletes),
        syncs: load(&written.syncs),
        failed_transactions: load(&written.failed),
        faults: faults
            .into_iter()
            .map(|(f, n)| (f.name().to_string(), n))
            .collect(),
        duplicated_deliveries: load(&injected.duplicated),
        delayed_deliveries: load(&injected.delayed),
        master_rows: master.len(),
        replica_rows: replica.len(),
        rows_differing: differing
            .len()
            .max(items::differing(&master, &replica).len()),
        differing_keys: differing.into_iter().take(20).collect(),
        dead_letters,
        converge_seconds: converge.map(|d| d.as_secs_f64()),
        unexpected_exits: unexpected,
        sigterm_exits: sigterm
            .into_iter()
            .map(|(label, status)| {
                let s = match status {
                    Some(s) => s.code().map_or_else(|| format!("{s}"), |c| c.to_string()),
                    None => "still running after 60 s".into(),
                };
                (label, s)
            })
            .collect(),
    })
}

/// Wait until the outbox is empty and the replica equals the master row by row; the keys still
/// differing when `timeout` passes.
fn converge(setup: &Setup, timeout: Duration) -> Result<(), Vec<i64>> {
    let deadline = Instant::now() + timeout;
    let mut last = Vec::new();
    loop {
        let check = || -> cqrs::Result<(usize, Vec<i64>)> {
            let mut m = Db::connect(&setup.master_url)?;
            let pending = cqrs::outbox::pending(&mut m)?;
            let master = items::snapshot(&mut m, items::MASTER_TABLE)?;
            let replica =
                items::snapshot(&mut Db::connect(&setup.replica_url)?, items::REPLICA_TABLE)?;
            Ok((pending, items::differing(&master, &replica)))
        };
        if let Ok((pending, differing)) = check() {
            if pending == 0 && differing.is_empty() {
                return Ok(());
            }
            last = differing;
        }
        if Instant::now() > deadline {
            return Err(last);
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}
