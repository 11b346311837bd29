//! `cqrs consume -w N [-c ID ...]`: apply this replica's queue until SIGINT/SIGTERM.

use cqrs::{Error, Registry, Settings, Shutdown};

use crate::cli::ConsumeArgs;

pub(crate) fn run(
    registry: &Registry,
    settings: &Settings,
    args: &ConsumeArgs,
) -> Result<(), Error> {
    let shutdown = Shutdown::new();
    shutdown
        .on_signals()
        .map_err(|e| Error::new(cqrs::ErrorKind::Io, format!("listening for signals: {e}")))?;
    let stats =
        cqrs::service::consume(registry, settings, args.workers, &args.cqrs_ids, &shutdown)?;
    eprintln!(
        "consumed {} messages in {} batches: {} applied, {} skipped, {} retried, {} dead-lettered",
        stats.received,
        stats.batches,
        stats.apply.applied,
        stats.apply.skipped,
        stats.retried,
        stats.dead_lettered
    );
    Ok(())
}
