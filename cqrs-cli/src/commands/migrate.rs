//! `cqrs migrate`: run the embedded migrations.

use cqrs::{Db, Error, Settings};

pub(crate) fn run(settings: &Settings) -> Result<(), Error> {
    let url = settings.require_database_url()?;
    let applied = Db::connect(url)?.migrate()?;
    if applied.is_empty() {
        eprintln!("cqrs tables are up to date");
    } else {
        eprintln!(
            "applied {} migration(s): {}",
            applied.len(),
            applied.join(", ")
        );
    }
    Ok(())
}
