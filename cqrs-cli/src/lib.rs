//! The `cqrs` command line as a library: an application builds its own `cqrs` binary with its
//! models, the way a Django project has `manage.py`.
//!
//! ```no_run
//! fn main() -> std::process::ExitCode {
//!     cqrs_cli::run(cqrs::Registry::new() /* .replica::<MyReplicaModel>() */)
//! }
//! ```
//!
//! Exit codes are decided here and only here: 0 success, 1 failure, 2 usage error (a bad flag, a
//! missing setting, no models registered).

mod cli;
mod commands;
mod demo;
mod progress;

use std::ffi::OsString;
use std::process::ExitCode;

use cqrs::{Error, ErrorKind, Registry};

pub use cli::{Cli, Command, CommonArgs};

/// The message a model command prints when the binary has no models.
pub const NO_MODELS: &str =
    "no models registered: build your own binary with cqrs_cli::run (see README)";

/// What the stock binary's help says about the commands it cannot run.
const STOCK_BINARY: &str = "\
This binary has no models: the commands marked (needs ... models) run only in your own cqrs binary,
whose main calls cqrs_cli::run with your models' Registry (cargo add diesel-cqrs-cli; see the README):

    fn main() -> std::process::ExitCode {
        cqrs_cli::run(cqrs::Registry::new().master::<Item>().replica::<ReplicaItem>())
    }

The others (demo, migrate, config, relay, dead-letters, queues delete, outbox, tombstones) work here.";

/// Parse the process arguments and run the command against `registry`.
pub fn run(registry: Registry) -> ExitCode {
    run_from(registry, std::env::args_os())
}

/// [`run`] with explicit arguments (the first is the program name).
pub fn run_from<I, T>(registry: Registry, args: I) -> ExitCode
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    use clap::FromArgMatches;
    let args: Vec<OsString> = args.into_iter().map(Into::into).collect();
    let mut command = cli::command();
    if registry.is_empty() {
        command = command.after_help(STOCK_BINARY);
    } else {
        // An application's own binary (clap names it after argv[0]): no built-in demo.
        command = command
            .about("cqrs commands for this service's models (built with cqrs_cli::run)")
            .mut_subcommand("demo", |c| c.hide(true));
    }
    let parsed = command
        .try_get_matches_from(args)
        .and_then(|m| Cli::from_arg_matches(&m));
    let cli = match parsed {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() { 2 } else { 0 };
            // clap renders help and usage errors itself (help on stdout, errors on stderr).
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    init_logging(cli.common.log_format);
    match commands::dispatch(cli, &registry) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cqrs: {e}");
            ExitCode::from(exit_code(&e))
        }
    }
}

/// 2 for usage and configuration errors, 1 for everything else.
pub fn exit_code(e: &Error) -> u8 {
    if e.kind() == ErrorKind::Config { 2 } else { 1 }
}

/// The log filter when `CQRS_LOG` is not set.
pub const DEFAULT_LOG_FILTER: &str = "info,lapin::returned_messages=error";

fn init_logging(format: cli::LogFormat) {
    use tracing_subscriber::EnvFilter;
    // lapin logs every message the broker returns, body and all, at WARN; the relay already
    // counts unroutable messages per cqrs_id (one line per batch), so by default only its line shows.
    let filter =
        EnvFilter::try_from_env("CQRS_LOG").unwrap_or_else(|_| EnvFilter::new(DEFAULT_LOG_FILTER));
    // Colours only for a person at a terminal, not in a file or a collector's pipe.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    let _ = match format {
        cli::LogFormat::Text => logs.try_init(),
        cli::LogFormat::Json => logs.json().try_init(),
    };
}

/// The README's Rust examples, compiled by `cargo test --doc` so they stay true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeExamples;
