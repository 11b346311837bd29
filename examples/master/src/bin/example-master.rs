//! The example master service's own `cqrs` binary.

fn main() -> std::process::ExitCode {
    cqrs_cli::run(example_master::registry())
}
