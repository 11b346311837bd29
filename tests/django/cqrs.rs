//! `cqrs-interop`: the `cqrs` command of the Rust side of the django-cqrs interoperability tests
//! (tests/django), master and replica of the models in `cqrs_tests::interop`.

fn main() -> std::process::ExitCode {
    cqrs_cli::run(cqrs_tests::interop::registry())
}
