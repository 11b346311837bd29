//! `cqrs relay`: publish the outbox until SIGINT/SIGTERM.

use cqrs::{Error, Settings, Shutdown};

pub(crate) fn run(settings: &Settings) -> Result<(), Error> {
    let shutdown = Shutdown::new();
    shutdown
        .on_signals()
        .map_err(|e| Error::new(cqrs::ErrorKind::Io, format!("listening for signals: {e}")))?;
    let stats = cqrs::service::relay(settings, &shutdown)?;
    eprintln!(
        "relayed {} messages ({} with no queue bound, {} failed and kept)",
        stats.published, stats.unroutable, stats.failed
    );
    Ok(())
}
