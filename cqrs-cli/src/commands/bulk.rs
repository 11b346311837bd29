//! `cqrs bulk-dump` and `cqrs bulk-load`: data on stdout/stdin or files, summaries on stderr.

use std::fs::File;
use std::io::{BufReader, BufWriter, Write};
use std::time::Instant;

use cqrs::{Db, Error, ErrorKind, Registry, Settings};

use crate::cli::{BulkDumpArgs, BulkLoadArgs, SyncArgs};
use crate::progress::{Meter, Total, open_input};

pub(crate) fn dump(
    registry: &Registry,
    settings: &Settings,
    args: &BulkDumpArgs,
) -> Result<(), Error> {
    let spec = registry.master_named(&args.cqrs_id)?;
    let to_stdout = args.output.as_os_str() == "-";
    if !to_stdout && args.output.exists() && !args.force {
        return Err(Error::config(format!(
            "{} exists: pass --force to overwrite it",
            args.output.display()
        )));
    }
    let mut db = Db::connect(settings.require_database_url()?)?;
    let total = if args.progress {
        Total::Rows(cqrs::ops::bulk::count(&mut db, spec, None)?)
    } else {
        Total::Unknown
    };
    let started = Instant::now();
    let mut out: Box<dyn Write> = if to_stdout {
        Box::new(BufWriter::new(std::io::stdout().lock()))
    } else {
        let f = File::create(&args.output).map_err(|e| {
            Error::new(
                ErrorKind::Io,
                format!("cannot create {}: {e}", args.output.display()),
            )
        })?;
        Box::new(BufWriter::new(f))
    };
    let mut meter = Meter::new(args.progress, "bulk-dump", total);
    let report =
        cqrs::ops::bulk::dump(&mut db, spec, args.batch, &mut out, &mut |n| meter.tick(n))?;
    drop(meter);
    eprintln!(
        "bulk-dump {}: {} rows in {:.2} s",
        args.cqrs_id,
        report.rows,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

pub(crate) fn load(
    registry: &Registry,
    settings: &Settings,
    args: &BulkLoadArgs,
) -> Result<(), Error> {
    let mut db = Db::connect(settings.require_database_url()?)?;
    let started = Instant::now();
    let (input, total) = open_input(&args.input)
        .map_err(|e| Error::config(format!("cannot open {}: {e}", args.input.display())))?;
    let mut input = BufReader::new(input);
    let mut meter = Meter::new(args.progress, "bulk-load", total);
    let report = cqrs::ops::bulk::load(
        &mut db,
        registry,
        &mut input,
        args.batch,
        args.clear,
        &mut |n| meter.tick(n),
    )?;
    drop(meter);
    for (line, why) in &report.failed {
        eprintln!("line {line}: {why}");
    }
    eprintln!(
        "bulk-load {}: {} rows read, {} written, {} unchanged, {} failed in {:.2} s",
        report.cqrs_id,
        report.lines,
        report.applied,
        report.skipped,
        report.failed.len(),
        started.elapsed().as_secs_f64()
    );
    if report.failed.is_empty() {
        Ok(())
    } else {
        Err(Error::new(
            ErrorKind::Apply,
            format!("{} line(s) could not be loaded", report.failed.len()),
        ))
    }
}

pub(crate) fn sync(registry: &Registry, settings: &Settings, args: &SyncArgs) -> Result<(), Error> {
    let started = Instant::now();
    let spec = cqrs::ops::sync::check(registry, settings, &args.cqrs_id, &args.filter)?;
    let broker = super::broker_unless(args.no_wait, settings, "sync")?;
    let total = if args.progress {
        let mut db = Db::connect(settings.require_database_url()?)?;
        Total::Rows(cqrs::ops::bulk::count(&mut db, spec, Some(&args.filter))?)
    } else {
        Total::Unknown
    };
    let mut meter = Meter::new(args.progress, "sync", total);
    let (n, messages) =
        cqrs::ops::sync::run(settings, broker.as_deref(), spec, &args.filter, &mut |n| {
            meter.tick(n)
        })?;
    drop(meter);
    let to = settings
        .queue
        .as_deref()
        .map_or_else(|| "broadcast".to_string(), |q| format!("to queue {q}"));
    let how = if args.no_wait {
        "written to the outbox"
    } else {
        "published and confirmed"
    };
    eprintln!(
        "sync {}: {n} rows {to}, {messages} messages {how} in {:.2} s",
        args.cqrs_id,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
