//! The stock `cqrs` binary: model-free commands. Applications build their own with their models.

fn main() -> std::process::ExitCode {
    cqrs_cli::run(cqrs::Registry::new())
}
