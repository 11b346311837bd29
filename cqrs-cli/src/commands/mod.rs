//! One module per subcommand; each parses nothing itself and makes one library call.

mod bulk;
mod config;
mod consume;
mod dead_letters;
mod demo;
mod diff;
mod generate_migration;
mod housekeeping;
mod migrate;
mod models;
mod queues;
mod relay;
mod triggers;

use cqrs::{Error, Registry, Settings};

use crate::cli::{Cli, Command};

pub(crate) fn dispatch(cli: Cli, registry: &Registry) -> Result<(), Error> {
    let mut layer = cli.common.layer();
    match &cli.command {
        Command::Consume(a) => {
            layer.batch_size = a.batch_size;
            layer.metrics_addr = a.metrics_addr.clone();
        }
        Command::Relay(a) => {
            layer.batch_size = a.batch_size;
            layer.metrics_addr = a.metrics_addr.clone();
        }
        Command::Sync(a) => layer.batch_size = a.batch,
        Command::Tombstones(a) => layer.tombstone_retention_days = a.older_than_days,
        _ => {}
    }
    if let Command::Config = cli.command {
        return config::run(layer, cli.common.config.as_deref(), registry);
    }
    let settings = Settings::resolve(layer, cli.common.config.as_deref())?;
    if !registry.is_empty() {
        registry.check_settings(&settings)?;
    }
    match cli.command {
        Command::Config => unreachable!("handled above: it explains the settings it resolves"),
        Command::Migrate => migrate::run(&settings),
        Command::Demo(args) => demo::run(&settings, &args),
        Command::Models => models::run(require_models(registry)?),
        Command::Consume(args) => consume::run(require_models(registry)?, &settings, &args),
        Command::Relay(_) => relay::run(&settings),
        Command::DeadLetters(args) => dead_letters::run(&settings, &args),
        // `delete` needs no models; `migrate` binds for them and asks for them itself.
        Command::Queues(args) => queues::run(registry, &settings, &args),
        Command::Outbox(_) => housekeeping::outbox_status(&settings),
        Command::Tombstones(_) => housekeeping::prune_tombstones(&settings),
        Command::Triggers(args) => triggers::run(require_models(registry)?, &settings, &args),
        Command::GenerateMigration(args) => generate_migration::run(registry, &settings, &args),
        Command::BulkDump(args) => bulk::dump(require_models(registry)?, &settings, &args),
        Command::BulkLoad(args) => bulk::load(require_models(registry)?, &settings, &args),
        Command::Sync(args) => bulk::sync(require_models(registry)?, &settings, &args),
        Command::DiffMaster(args) => diff::master(require_models(registry)?, &settings, &args),
        Command::DiffReplica => diff::replica(require_models(registry)?, &settings),
        Command::DiffSync(args) => diff::sync(require_models(registry)?, &settings, &args),
        Command::DeletedDiffReplica(args) => {
            diff::deleted_replica(require_models(registry)?, &settings, &args)
        }
        Command::DeletedDiffMaster => diff::deleted_master(require_models(registry)?, &settings),
        Command::DeletedSyncReplica => diff::deleted_sync(require_models(registry)?, &settings),
    }
}

/// The broker a command publishes through, unless `--no-wait` leaves its messages in the outbox
/// for a relay.
fn broker_unless(
    no_wait: bool,
    settings: &Settings,
    role: &str,
) -> Result<Option<Box<dyn cqrs::transport::Broker>>, Error> {
    if no_wait {
        Ok(None)
    } else {
        cqrs::transport::connect(settings, role).map(Some)
    }
}

/// Model commands need an application binary; the stock one has no models.
pub(crate) fn require_models(registry: &Registry) -> Result<&Registry, Error> {
    if registry.is_empty() {
        Err(Error::config(crate::NO_MODELS))
    } else {
        Ok(registry)
    }
}
