//! `cqrs outbox status` and `cqrs tombstones prune`: the master's backlog and the replica's
//! tombstones, model-free.

use cqrs::{Db, Error, Settings, apply, outbox};

pub(crate) fn outbox_status(settings: &Settings) -> Result<(), Error> {
    let mut db = Db::connect(settings.require_database_url()?)?;
    let backlog = outbox::status(&mut db)?;
    let (pending, leased) = backlog
        .iter()
        .fold((0, 0), |(p, l), b| (p + b.pending, l + b.leased));
    let oldest = backlog
        .iter()
        .map(|b| b.oldest_age_seconds)
        .fold(0.0f64, f64::max);
    println!(
        "outbox: {pending} pending, {leased} leased, oldest {}",
        age(pending, oldest)
    );
    for b in &backlog {
        println!(
            "  {}: {} pending, {} leased, oldest {}",
            b.cqrs_id,
            b.pending,
            b.leased,
            age(b.pending, b.oldest_age_seconds)
        );
    }
    Ok(())
}

/// An age in seconds as `cqrs outbox status` prints it: `-` when nothing waits.
fn age(pending: u64, seconds: f64) -> String {
    if pending == 0 {
        "-".into()
    } else {
        format!("{seconds:.1} s")
    }
}

pub(crate) fn prune_tombstones(settings: &Settings) -> Result<(), Error> {
    let mut db = Db::connect(settings.require_database_url()?)?;
    let pruned = apply::prune_tombstones(&mut db, settings.tombstone_retention)?;
    println!(
        "pruned {pruned} tombstone(s) older than {} days",
        settings.tombstone_retention_days()
    );
    Ok(())
}
