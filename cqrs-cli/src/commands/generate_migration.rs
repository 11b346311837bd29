//! `cqrs generate-migration`: the Diesel migration that adopts a table holding rows.

use cqrs::ops::adopt::{self, Migration};
use cqrs::{Error, Registry, Settings};

use crate::cli::{BackendArg, GenerateMigrationArgs};

pub(crate) fn run(
    registry: &Registry,
    settings: &Settings,
    args: &GenerateMigrationArgs,
) -> Result<(), Error> {
    let backend = match (args.backend, settings.database_url.as_deref()) {
        (Some(BackendArg::Postgres), _) => cqrs::db::Backend::Postgres,
        (Some(BackendArg::Sqlite), _) => cqrs::db::Backend::Sqlite,
        (None, Some(url)) => cqrs::db::parse_database_url(url)?.0,
        (None, None) => {
            return Err(Error::config(
                "which database is the migration for? pass --backend postgres|sqlite or --database-url",
            ));
        }
    };
    let (migration, model) = match (&args.cqrs_id, &args.table) {
        (Some(id), _) => (for_model(registry, backend, id)?, Some(id)),
        (None, Some(table)) => (adopt::for_table(backend, table)?, None),
        (None, None) => return Err(Error::config("pass --cqrs-id or --table")),
    };
    let dir = migration.write(&args.migration_dir, chrono::Utc::now())?;
    println!("{}", dir.display());
    let sync = match model {
        Some(id) => format!("cqrs sync -c {id}"),
        None => "cqrs sync -c <its cqrs_id>".into(),
    };
    eprintln!(
        "wrote {0}/up.sql and {0}/down.sql: apply it with your migrations (`diesel migration run`), \
         then send the rows already there with `{sync}` (masters)",
        dir.display()
    );
    Ok(())
}

fn for_model(
    registry: &Registry,
    backend: cqrs::db::Backend,
    id: &str,
) -> Result<Migration, Error> {
    if let Some(spec) = registry.master_for(id) {
        return adopt::for_master(backend, spec);
    }
    match registry.replica_for(id).map(|r| r.table()) {
        Some(Some(table)) => Ok(adopt::for_replica(backend, table)),
        Some(None) => Err(Error::config(format!(
            "replica {id:?} is not a table (a hand-written Replica)"
        ))),
        None if registry.is_empty() => Err(Error::config(crate::NO_MODELS)),
        None => {
            let known: Vec<&str> = registry
                .master_ids()
                .chain(registry.replica_ids())
                .collect();
            Err(Error::config(format!(
                "unknown cqrs id {id:?} (models: {}); --table names a table without a model",
                known.join(", ")
            )))
        }
    }
}
