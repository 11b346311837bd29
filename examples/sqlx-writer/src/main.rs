//! The sqlx-writing master as a program: its writes go through sqlx, the triggers capture them,
//! and the relay runs in the same process (`cqrs::background::relay`); when the writes are done
//! the relay is stopped, which publishes what is left, and the program exits.
//!
//! ```text
//! DATABASE_URL=postgres://… CQRS_BROKER_URL=amqp://… example-sqlx-writer 100
//! ```

use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    let n: i64 = match std::env::args().nth(1).map(|a| a.parse()) {
        None => 100,
        Some(Ok(n)) if n > 0 => n,
        Some(_) => {
            eprintln!("error: usage: example-sqlx-writer [NOTES] (a positive number)");
            return ExitCode::from(2);
        }
    };
    let settings = match cqrs::Settings::resolve(Default::default(), None) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let url = match settings.require_database_url() {
        Ok(url) => url.to_string(),
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let pool = match sqlx::PgPool::connect(&url).await {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: database: {e}");
            return ExitCode::FAILURE;
        }
    };
    let shutdown = cqrs::Shutdown::new();
    let mut relay = cqrs::background::relay(settings, &shutdown);
    let written = tokio::select! {
        written = example_sqlx_writer::write(&pool, n) => written,
        ended = &mut relay => {
            eprintln!("error: the relay stopped: {:?}", ended.err());
            return ExitCode::FAILURE;
        }
    };
    match (written, relay.stop().await) {
        (Ok(left), Ok(stats)) => {
            println!(
                "{} notes left, {} messages published",
                left.len(),
                stats.published
            );
            ExitCode::SUCCESS
        }
        (Err(e), _) => {
            eprintln!("error: writing: {e}");
            ExitCode::FAILURE
        }
        (_, Err(e)) => {
            eprintln!("error: relay: {e}");
            ExitCode::FAILURE
        }
    }
}
