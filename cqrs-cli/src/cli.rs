//! Flags shared by every command, and the command enum.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use cqrs::config::Layer;

/// Keep replicas of database models in sync with their master (django-cqrs compatible).
#[derive(Debug, Parser)]
#[command(name = "cqrs", version, about, propagate_version = true)]
pub struct Cli {
    /// Settings every command understands.
    #[command(flatten)]
    pub common: CommonArgs,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The common flags (ARCHITECTURE.md §2): flags > environment > `cqrs.toml` > defaults.
#[derive(Debug, Clone, Args)]
pub struct CommonArgs {
    /// Database URL: postgres://…, sqlite://relative.db or sqlite:///absolute.db [env: DATABASE_URL]
    #[arg(long, global = true)]
    pub database_url: Option<String>,
    /// Broker URL: amqp:// or amqps:// (RabbitMQ), nats:// or tls:// (NATS JetStream), or a sqlite:// queue file [env: CQRS_BROKER_URL, AMQP_URL]
    #[arg(long, global = true, visible_alias = "amqp-url")]
    pub broker_url: Option<String>,
    /// This replica's queue [env: CQRS_QUEUE]
    #[arg(long, global = true)]
    pub queue: Option<String>,
    /// The topic exchange [env: CQRS_EXCHANGE] [default: cqrs]
    #[arg(long, global = true)]
    pub exchange: Option<String>,
    /// The type of the replica's queues consume declares: classic or quorum (RabbitMQ) [env: CQRS_QUEUE_TYPE] [default: classic]
    #[arg(long, global = true)]
    pub queue_type: Option<cqrs::config::QueueType>,
    /// This service's name (connection names, cqrs-producer header) [env: CQRS_SERVICE_NAME] [default: cqrs]
    #[arg(long, global = true)]
    pub service_name: Option<String>,
    /// CA certificates (PEM) to trust for amqps:// besides the public roots [env: CQRS_TLS_CA_FILE]
    #[arg(long, global = true)]
    pub tls_ca_file: Option<PathBuf>,
    /// Configuration file [env: CQRS_CONFIG] [default: cqrs.toml if present]
    #[arg(long, global = true)]
    pub config: Option<PathBuf>,
    /// Log lines on stderr: text (for people) or json (one object per line, for collectors)
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// The global flags only a broker connection reads (clap's ids: the field names).
const BROKER_FLAGS: [&str; 5] = [
    "broker_url",
    "exchange",
    "queue_type",
    "service_name",
    "tls_ca_file",
];

/// Subcommands that never connect to a broker, and whether each reads `--queue`.
const NO_BROKER: [(&str, bool); 13] = [
    ("migrate", false),
    ("generate-migration", false),
    ("models", false),
    ("triggers", false),
    ("outbox", false),
    ("tombstones", false),
    ("bulk-dump", false),
    ("bulk-load", false),
    ("diff-master", false),
    ("diff-replica", true),
    ("deleted-diff-replica", false),
    ("deleted-diff-master", false),
    ("deleted-sync-replica", false),
];

/// The clap command: [`Cli`] with the broker's flags left out of the help of the subcommands
/// that talk to no broker. They still accept them, as a shared environment or `cqrs.toml` sets
/// them for every command.
pub fn command() -> clap::Command {
    use clap::CommandFactory;
    let cli = Cli::command();
    let globals: Vec<clap::Arg> = cli.get_arguments().cloned().collect();
    let hidden = |reads_queue: bool| {
        globals
            .iter()
            .filter(move |a| {
                let id = a.get_id().as_str();
                BROKER_FLAGS.contains(&id) || (!reads_queue && id == "queue")
            })
            .map(|a| a.clone().hide(true))
            .collect::<Vec<_>>()
    };
    // clap propagates a global flag to a subcommand only where the subcommand has no flag of that
    // id, so a hidden copy added first takes its place (same id, so the value lands in the same
    // field). Changing args after `build()` would corrupt clap's index of them instead.
    NO_BROKER.iter().fold(cli, |cli, &(name, reads_queue)| {
        let copies = hidden(reads_queue);
        cli.mut_subcommand(name, |sub| sub.args(copies))
    })
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// `2026-12-04T18:00:00Z  INFO cqrs::relay: relay: 500 message(s) in the last 60 s …`
    Text,
    /// `{"timestamp":…,"level":"INFO","fields":{"message":…},"target":…}`
    Json,
}

impl CommonArgs {
    /// The flags' layer of the settings (the environment and the file are read by
    /// [`cqrs::Settings::resolve`]).
    pub fn layer(&self) -> Layer {
        Layer {
            database_url: self.database_url.clone(),
            broker_url: self.broker_url.clone(),
            queue: self.queue.clone(),
            exchange: self.exchange.clone(),
            queue_type: self.queue_type,
            service_name: self.service_name.clone(),
            tls_ca_file: self.tls_ca_file.clone(),
            ..Layer::default()
        }
    }
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the whole pipeline on built-in models: master, relay, queue, consumer, replica, then a diff
    Demo(DemoArgs),
    /// Create or update the cqrs tables (cqrs_outbox, cqrs_tombstones) in the database
    Migrate,
    /// Print the effective settings and where each came from (flag, env, file, default); secrets redacted
    Config,
    /// List the models this binary serves (needs an application binary with models)
    Models,
    /// Consume this replica's queue and apply the messages (needs replica models)
    Consume(ConsumeArgs),
    /// Publish the outbox to the broker, with confirms
    Relay(RelayArgs),
    /// Inspect and recover this replica's dead letters: dump, retry, purge
    DeadLetters(DeadLettersArgs),
    /// This replica's RabbitMQ queues: migrate them to another type with their messages (needs replica models), or delete them
    Queues(QueuesArgs),
    /// Install or check the PostgreSQL triggers of masters with `capture = "trigger"` (needs master models)
    Triggers(TriggersArgs),
    /// Write the Diesel migration that adds cqrs_revision and cqrs_updated to a table that already
    /// holds rows (and installs its triggers if its model is captured by them)
    GenerateMigration(GenerateMigrationArgs),
    /// The master's outbox: `status` prints the backlog per model (pending, leased, oldest age)
    Outbox(OutboxArgs),
    /// The replica's tombstones: `prune` deletes those past the retention (`consume` does it hourly)
    Tombstones(TombstonesArgs),
    /// Write every row of a master model in django-cqrs's dump format (needs master models)
    BulkDump(BulkDumpArgs),
    /// Load a dump into the replica it names (needs replica models)
    BulkLoad(BulkLoadArgs),
    /// Send SYNC messages for the master rows matching a filter (to --queue, or broadcast) (needs master models)
    Sync(SyncArgs),
    /// Diff stage 1 (master): `<cqrs_id>,<now>` then [[pk, revision], ...] per batch (needs master models)
    DiffMaster(DiffMasterArgs),
    /// Diff stage 2 (replica): the pks whose revision differs or is missing here (needs replica models)
    DiffReplica,
    /// Diff stage 3 (master): directed SYNCs for the listed pks (broadcast for queue None) (needs master models)
    DiffSync(DiffSyncArgs),
    /// Deleted-rows stage 1 (replica): `<cqrs_id>,<now>` then the replica's pks per batch (needs replica models)
    DeletedDiffReplica(DeletedDiffReplicaArgs),
    /// Deleted-rows stage 2 (master): the pks the master no longer has (needs master models)
    DeletedDiffMaster,
    /// Deleted-rows stage 3 (replica): delete the listed rows (leaving tombstones) (needs replica models)
    DeletedSyncReplica,
}

/// `cqrs diff-master`.
#[derive(Debug, Args)]
pub struct DiffMasterArgs {
    /// The master model
    #[arg(short = 'c', long = "cqrs-id")]
    pub cqrs_id: String,
    /// Only rows matching these Django-style lookups (JSON object)
    #[arg(short = 'f', long)]
    pub filter: Option<String>,
    /// Rows per line
    #[arg(short = 'b', long, default_value_t = 10_000)]
    pub batch: usize,
    /// Also send each row's values, so diff-replica finds rows changed without a new revision
    /// (by hand, or by a write capture did not see). Only cqrs's diff-replica reads this format
    #[arg(long)]
    pub content: bool,
}

/// `cqrs diff-sync`.
#[derive(Debug, Args)]
pub struct DiffSyncArgs {
    /// Report progress on stderr
    #[arg(long)]
    pub progress: bool,
    /// Leave publishing to the running relay
    #[arg(long)]
    pub no_wait: bool,
}

/// `cqrs deleted-diff-replica`.
#[derive(Debug, Args)]
pub struct DeletedDiffReplicaArgs {
    /// The replica model
    #[arg(short = 'c', long = "cqrs-id")]
    pub cqrs_id: String,
    /// Rows per line
    #[arg(short = 'b', long, default_value_t = 10_000)]
    pub batch: usize,
}

/// `cqrs sync`.
#[derive(Debug, Args)]
pub struct SyncArgs {
    /// The master model
    #[arg(short = 'c', long = "cqrs-id")]
    pub cqrs_id: String,
    /// Django-style lookups as a JSON object, e.g. '{"id__in": [1, 2]}'; '{}' for all rows
    #[arg(short = 'f', long)]
    pub filter: String,
    /// Rows per transaction [env: CQRS_BATCH_SIZE] [default: the model's batch_size in cqrs.toml, else batch_size, 500]
    #[arg(short = 'b', long)]
    pub batch: Option<usize>,
    /// Report progress on stderr
    #[arg(long)]
    pub progress: bool,
    /// Leave publishing to the running relay
    #[arg(long)]
    pub no_wait: bool,
}

/// `cqrs bulk-dump`.
#[derive(Debug, Args)]
pub struct BulkDumpArgs {
    /// The master model
    #[arg(short = 'c', long = "cqrs-id")]
    pub cqrs_id: String,
    /// Output file, or - for stdout
    #[arg(short = 'o', long, default_value = "-")]
    pub output: PathBuf,
    /// Rows per query
    #[arg(short = 'b', long, default_value_t = 10_000)]
    pub batch: usize,
    /// Report progress on stderr
    #[arg(long)]
    pub progress: bool,
    /// Overwrite the output file if it exists
    #[arg(long)]
    pub force: bool,
}

/// `cqrs bulk-load`.
#[derive(Debug, Args)]
pub struct BulkLoadArgs {
    /// Input file, or - for stdin
    #[arg(short = 'i', long, default_value = "-")]
    pub input: PathBuf,
    /// Delete the model's replica rows (and tombstones) first
    #[arg(long)]
    pub clear: bool,
    /// Rows per transaction
    #[arg(short = 'b', long, default_value_t = 5_000)]
    pub batch: usize,
    /// Report progress on stderr
    #[arg(long)]
    pub progress: bool,
}

/// `cqrs dead-letters`.
#[derive(Debug, Args)]
pub struct DeadLettersArgs {
    /// dump: print each letter's body on a line and keep it; retry: re-publish with retries 0 and
    /// a fresh expiry, then remove; purge: remove
    #[arg(value_enum)]
    pub action: LetterAction,
    /// Only letters of these models (repeatable)
    #[arg(short = 'c', long = "cqrs-id")]
    pub cqrs_ids: Vec<String>,
    /// At most this many letters
    #[arg(long)]
    pub limit: Option<usize>,
}

/// `cqrs queues`.
#[derive(Debug, Args)]
pub struct QueuesArgs {
    /// migrate: move the replica's queue, dead-letter queue and delay queues to the type --to
    /// names, with their bindings and waiting messages, while workers run; then set queue_type.
    /// delete: remove those queues and the replica's retry exchange (a retired replica); refused
    /// while one holds messages, unless --force
    #[arg(value_enum)]
    pub action: QueuesAction,
    /// migrate: the queue type to move to, classic or quorum
    #[arg(long, required_if_eq("action", "migrate"))]
    pub to: Option<cqrs::config::QueueType>,
    /// delete: also when the queues hold messages (they are lost)
    #[arg(long)]
    pub force: bool,
}

/// What `queues` does.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum QueuesAction {
    /// Move the queues to another type
    Migrate,
    /// Delete the queues and the retry exchange
    Delete,
}

/// `cqrs outbox`.
#[derive(Debug, Args)]
pub struct OutboxArgs {
    /// status: the backlog per model
    #[arg(value_enum)]
    pub action: OutboxAction,
}

/// What `outbox` does.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum OutboxAction {
    /// Print the backlog
    Status,
}

/// `cqrs tombstones`.
#[derive(Debug, Args)]
pub struct TombstonesArgs {
    /// prune: delete the tombstones recorded longer ago than the retention
    #[arg(value_enum)]
    pub action: TombstoneAction,
    /// The retention, in days (default: `tombstone_retention_days`, 14); refused if shorter than
    /// the time a message can still arrive in
    #[arg(long)]
    pub older_than_days: Option<u64>,
}

/// What `tombstones` does.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum TombstoneAction {
    /// Delete those past the retention
    Prune,
}

/// `cqrs triggers`.
#[derive(Debug, Args)]
pub struct TriggersArgs {
    /// install: create or replace the triggers; check: report any that is missing, disabled or
    /// differs from its model, and exit 1 if one does; uninstall: drop them (capture returns to
    /// atomic only once the model no longer says `capture = "trigger"`)
    #[arg(value_enum)]
    pub action: TriggerAction,
    /// Only these models (repeatable; default: every master with `capture = "trigger"`)
    #[arg(short = 'c', long = "cqrs-id")]
    pub cqrs_ids: Vec<String>,
}

/// `cqrs generate-migration`.
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("target").required(true).args(["cqrs_id", "table"])))]
pub struct GenerateMigrationArgs {
    /// The model whose table to adopt: the columns typed as it declares them, and its triggers
    /// if it is captured by them (master or replica; needs your binary's models)
    #[arg(
        short = 'c',
        long = "cqrs-id",
        required_unless_present = "table",
        conflicts_with = "table"
    )]
    pub cqrs_id: Option<String>,
    /// A table by name (`name` or `schema.name`), for a binary without the model
    #[arg(long)]
    pub table: Option<String>,
    /// The application's Diesel migrations directory (the migration is a new directory in it)
    #[arg(long, default_value = "migrations")]
    pub migration_dir: std::path::PathBuf,
    /// The database the migration is for [default: the scheme of --database-url]
    #[arg(long, value_enum)]
    pub backend: Option<BackendArg>,
}

/// A database kind named on the command line.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum BackendArg {
    /// PostgreSQL
    Postgres,
    /// SQLite
    Sqlite,
}

/// What `triggers` does.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum TriggerAction {
    /// Create or replace
    Install,
    /// Compare with the models
    Check,
    /// Drop
    Uninstall,
}

/// What `dead-letters` does.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum LetterAction {
    /// Print and keep
    Dump,
    /// Re-publish to cqrs.<queue>.<cqrs_id>, then remove
    Retry,
    /// Remove
    Purge,
}

/// `cqrs demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Rows to create (updates, deletes and syncs scale with it)
    #[arg(long, default_value_t = 2_000)]
    pub rows: usize,
    /// Directory for the SQLite files [default: a new temporary directory]
    #[arg(long)]
    pub dir: Option<PathBuf>,
}

/// `cqrs consume`.
#[derive(Debug, Args)]
pub struct ConsumeArgs {
    /// Worker threads, each with its own channel and database connection
    #[arg(short = 'w', long = "workers", default_value_t = 1)]
    pub workers: usize,
    /// Consume only these models (repeatable); default: every replica model
    #[arg(short = 'c', long = "cqrs-id")]
    pub cqrs_ids: Vec<String>,
    /// Most messages applied in one transaction [env: CQRS_BATCH_SIZE] [default: 500]
    #[arg(short = 'b', long)]
    pub batch_size: Option<usize>,
    /// Serve /metrics, /healthz and /readyz on this host:port [env: CQRS_METRICS_ADDR] [default: off]
    #[arg(long)]
    pub metrics_addr: Option<String>,
}

/// `cqrs relay`.
#[derive(Debug, Args)]
pub struct RelayArgs {
    /// Most outbox rows published per batch (the window of outstanding confirms) [env: CQRS_BATCH_SIZE] [default: 500]
    #[arg(short = 'b', long)]
    pub batch_size: Option<usize>,
    /// Serve /metrics, /healthz and /readyz on this host:port [env: CQRS_METRICS_ADDR] [default: off]
    #[arg(long)]
    pub metrics_addr: Option<String>,
}

#[cfg(test)]
mod tests {
    use clap::FromArgMatches;

    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        let argv = std::iter::once("cqrs").chain(args.iter().copied());
        command()
            .try_get_matches_from(argv)
            .and_then(|m| Cli::from_arg_matches(&m))
    }

    fn help(sub: &str) -> String {
        parse(&[sub, "--help"]).unwrap_err().render().to_string()
    }

    #[test]
    fn broker_flags_are_in_the_help_of_broker_commands_only() {
        let flags = [
            "--broker-url",
            "--exchange",
            "--queue-type",
            "--service-name",
            "--tls-ca-file",
        ];
        for (sub, shown) in [
            ("migrate", false),
            ("bulk-dump", false),
            ("diff-replica", false),
            ("relay", true),
            ("consume", true),
            ("queues", true),
            ("sync", true),
            ("config", true),
        ] {
            let text = help(sub);
            for flag in flags {
                assert_eq!(
                    text.contains(flag),
                    shown,
                    "{sub} --help and {flag}:\n{text}"
                );
            }
        }
        assert!(!help("migrate").contains("--queue <"));
        assert!(
            help("diff-replica").contains("--queue <"),
            "diff-replica reads --queue"
        );
        assert!(help("migrate").contains("--database-url"));
    }

    /// The hidden copies must land in the same fields as the global flags, wherever they are
    /// given (a first attempt that edited clap's args after `build()` sent `--exchange` to
    /// `--log-format`).
    #[test]
    fn hidden_broker_flags_are_still_parsed_into_their_own_fields() {
        let before = parse(&["--exchange", "x1", "--queue", "q1", "migrate"]).unwrap();
        let after = parse(&[
            "migrate",
            "--exchange",
            "x1",
            "--queue",
            "q1",
            "--broker-url",
            "amqp://h",
            "--service-name",
            "s",
            "--queue-type",
            "quorum",
            "--tls-ca-file",
            "/ca.pem",
            "--log-format",
            "json",
        ])
        .unwrap();
        for cli in [&before, &after] {
            assert_eq!(cli.common.exchange.as_deref(), Some("x1"));
            assert_eq!(cli.common.queue.as_deref(), Some("q1"));
            assert!(matches!(cli.command, Command::Migrate));
        }
        let c = &after.common;
        assert_eq!(c.broker_url.as_deref(), Some("amqp://h"));
        assert_eq!(c.service_name.as_deref(), Some("s"));
        assert_eq!(c.queue_type, Some(cqrs::config::QueueType::Quorum));
        assert_eq!(
            c.tls_ca_file.as_deref(),
            Some(std::path::Path::new("/ca.pem"))
        );
        assert_eq!(c.log_format, LogFormat::Json);
        assert_eq!(before.common.log_format, LogFormat::Text);
    }

    #[test]
    fn the_command_is_consistent() {
        command().debug_assert();
    }
}
