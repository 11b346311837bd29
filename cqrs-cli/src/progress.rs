//! Progress on stderr for the data commands: an indicatif spinner with rows, rows/s and elapsed
//! time when stderr is a terminal; otherwise a plain line every few seconds, so logs stay readable
//! and stdout carries only data.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

/// A callback taking the running row count; does nothing unless `enabled`.
pub(crate) fn progress(enabled: bool, what: &'static str) -> impl FnMut(usize) {
    progress_of(enabled, what, None)
}

/// [`progress`] with a known total: a bar with an ETA on a terminal.
pub(crate) fn progress_of(
    enabled: bool,
    what: &'static str,
    total: Option<usize>,
) -> impl FnMut(usize) {
    let bar = (enabled && std::io::stderr().is_terminal()).then(|| {
        let (bar, template) = match total {
            Some(n) => (
                ProgressBar::new(n as u64),
                "{prefix}: [{bar:30}] {human_pos}/{human_len} rows, {per_sec}, ETA {eta}",
            ),
            None => (
                ProgressBar::new_spinner(),
                "{spinner} {prefix}: {human_pos} rows, {per_sec}, {elapsed}",
            ),
        };
        bar.set_style(ProgressStyle::with_template(template).expect("a valid template"));
        bar.set_prefix(what);
        bar.enable_steady_tick(Duration::from_millis(120));
        bar
    });
    let start = Instant::now();
    let mut last = Instant::now();
    move |n| match &bar {
        Some(bar) => bar.set_position(n as u64),
        None if enabled && last.elapsed() >= Duration::from_secs(5) => {
            last = Instant::now();
            let rate = n as f64 / start.elapsed().as_secs_f64().max(1e-3);
            eprintln!("{what}: {n} rows, {rate:.0} rows/s");
        }
        None => {}
    }
}
