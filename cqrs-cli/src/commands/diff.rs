//! The diff and deleted-rows pipeline stages: data through stdin/stdout, counts on stderr.

use std::io::{BufReader, BufWriter};
use std::path::Path;

use cqrs::ops::diff;
use cqrs::{Db, Error, ErrorKind, Registry, Settings};

use crate::cli::{DeletedDiffReplicaArgs, DiffMasterArgs, DiffSyncArgs};
use crate::progress::{Meter, open_input};

fn db(settings: &Settings) -> Result<Db, Error> {
    Db::connect(settings.require_database_url()?)
}

pub(crate) fn master(
    registry: &Registry,
    settings: &Settings,
    args: &DiffMasterArgs,
) -> Result<(), Error> {
    let spec = registry.master_named(&args.cqrs_id)?;
    let mut out = BufWriter::new(std::io::stdout().lock());
    let n = diff::diff_master(
        &mut db(settings)?,
        spec,
        args.filter.as_deref(),
        if args.content {
            diff::Compare::Content
        } else {
            diff::Compare::Revision
        },
        args.batch,
        &mut out,
    )?;
    eprintln!("diff-master {}: {n} rows", args.cqrs_id);
    Ok(())
}

pub(crate) fn replica(registry: &Registry, settings: &Settings) -> Result<(), Error> {
    let queue = settings.require_queue("diff-replica")?;
    let mut input = BufReader::new(std::io::stdin().lock());
    let mut out = BufWriter::new(std::io::stdout().lock());
    let n = diff::diff_replica(&mut db(settings)?, registry, queue, &mut input, &mut out)?;
    eprintln!("diff-replica: {n} rows differ");
    Ok(())
}

pub(crate) fn sync(
    registry: &Registry,
    settings: &Settings,
    args: &DiffSyncArgs,
) -> Result<(), Error> {
    let (input, total) = open_input(Path::new("-"))
        .map_err(|e| Error::new(ErrorKind::Io, format!("cannot read stdin: {e}")))?;
    let mut input = BufReader::new(input);
    let broker = super::broker_unless(args.no_wait, settings, "diff-sync")?;
    let mut meter = Meter::new(args.progress, "diff-sync", total);
    let (cqrs_id, queue, n) = diff::diff_sync_and_publish(
        registry,
        settings,
        broker.as_deref(),
        &mut input,
        &mut |n| meter.tick(n),
    )?;
    drop(meter);
    let to = queue.map_or_else(|| "broadcast".to_string(), |q| format!("to queue {q}"));
    eprintln!("diff-sync {cqrs_id}: {n} rows synced {to}");
    Ok(())
}

pub(crate) fn deleted_replica(
    registry: &Registry,
    settings: &Settings,
    args: &DeletedDiffReplicaArgs,
) -> Result<(), Error> {
    let mut out = BufWriter::new(std::io::stdout().lock());
    let n = diff::deleted_diff_replica(
        &mut db(settings)?,
        registry,
        &args.cqrs_id,
        args.batch,
        &mut out,
    )?;
    eprintln!("deleted-diff-replica {}: {n} rows", args.cqrs_id);
    Ok(())
}

pub(crate) fn deleted_master(registry: &Registry, settings: &Settings) -> Result<(), Error> {
    let mut input = BufReader::new(std::io::stdin().lock());
    let mut out = BufWriter::new(std::io::stdout().lock());
    let n = diff::deleted_diff_master(&mut db(settings)?, registry, &mut input, &mut out)?;
    eprintln!("deleted-diff-master: {n} rows no longer on the master");
    Ok(())
}

pub(crate) fn deleted_sync(registry: &Registry, settings: &Settings) -> Result<(), Error> {
    let mut input = BufReader::new(std::io::stdin().lock());
    let n = diff::deleted_sync_replica(&mut db(settings)?, registry, &mut input)?;
    eprintln!("deleted-sync-replica: {n} rows deleted");
    Ok(())
}
