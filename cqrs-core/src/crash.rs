//! Crash points for tests: named places where a process can be made to die as if killed.
//!
//! **Test-only.** Set `CQRS_CRASH_POINT=<name>` and the process aborts (no destructors, no acks,
//! no commits) the first time it reaches that point. Points: `relay.after_publish` (messages
//! sent, confirms not awaited, outbox rows not deleted), `relay.after_confirm` (confirmed, rows
//! not deleted), `consumer.after_commit` (batch committed, not acked).
//! Always compiled in so the binaries under test are the ones that ship; unset, a point costs one
//! comparison.

use std::sync::OnceLock;

/// Abort the process here if `CQRS_CRASH_POINT` names this point.
pub fn point(name: &str) {
    static WANTED: OnceLock<Option<String>> = OnceLock::new();
    if WANTED
        .get_or_init(|| std::env::var("CQRS_CRASH_POINT").ok())
        .as_deref()
        == Some(name)
    {
        eprintln!("cqrs: crash point {name} reached (CQRS_CRASH_POINT): aborting");
        std::process::abort();
    }
}
