//! One module per subcommand; each parses nothing itself and makes one library call.

mod migrate;
mod models;

use cqrs::{Error, Registry, Settings};

use crate::cli::{Cli, Command};

pub(crate) fn dispatch(cli: Cli, registry: &Registry) -> Result<(), Error> {
    let settings = Settings::resolve(cli.common.layer(), cli.common.config.as_deref())?;
    match cli.command {
        Command::Migrate => migrate::run(&settings),
        Command::Models => models::run(require_models(registry)?),
    }
}

/// Model commands need an application binary; the stock one has no models.
fn require_models(registry: &Registry) -> Result<&Registry, Error> {
    if registry.is_empty() {
        Err(Error::config(crate::NO_MODELS))
    } else {
        Ok(registry)
    }
}
