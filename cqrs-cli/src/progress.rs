//! Progress on stderr for the data commands: an indicatif bar (rows, rows/s, ETA) when stderr is a
//! terminal; otherwise a plain line every few seconds, so logs stay readable and stdout carries
//! only data.
//!
//! The total is known up front for a dump and a sync (a count query). A load or a diff-sync read
//! from a file estimate it from the bytes read so far; from a pipe there is no total, so a spinner
//! shows rows and rows/s only.

use std::fs::File;
use std::io::{IsTerminal, Read};
use std::os::fd::AsFd;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

/// How many rows the command will handle, as far as it can tell before it starts.
pub(crate) enum Total {
    /// A pipe: no estimate.
    Unknown,
    /// Counted.
    Rows(usize),
    /// A file of `size` bytes of which `read` have been consumed: the row total is extrapolated
    /// from the rows per byte so far.
    Bytes { size: u64, read: Arc<AtomicU64> },
}

impl Total {
    fn rows(&self, done: usize) -> Option<u64> {
        match self {
            Total::Unknown => None,
            Total::Rows(n) => Some(*n as u64),
            Total::Bytes { size, read } => {
                let read = read.load(Ordering::Relaxed);
                (read > 0).then(|| (done as u128 * *size as u128 / read as u128) as u64)
            }
        }
    }
}

/// Reports the running row count; does nothing unless enabled. Dropping it leaves the bar's last
/// state on the terminal.
pub(crate) struct Meter {
    what: &'static str,
    enabled: bool,
    total: Total,
    bar: Option<ProgressBar>,
    start: Instant,
    last: Instant,
}

impl Meter {
    /// A meter for `what` (the command's name, its prefix on stderr).
    pub(crate) fn new(enabled: bool, what: &'static str, total: Total) -> Meter {
        let bar = (enabled && std::io::stderr().is_terminal()).then(|| {
            let (bar, template) = match total {
                Total::Unknown => (
                    ProgressBar::new_spinner(),
                    "{spinner} {prefix}: {human_pos} rows, {per_sec}, {elapsed}",
                ),
                _ => (
                    ProgressBar::new(total.rows(0).unwrap_or(0)),
                    "{prefix}: [{bar:30}] {human_pos}/{human_len} rows, {per_sec}, ETA {eta}",
                ),
            };
            bar.set_style(ProgressStyle::with_template(template).expect("a valid template"));
            bar.set_prefix(what);
            bar.enable_steady_tick(Duration::from_millis(120));
            bar
        });
        Meter {
            what,
            enabled,
            total,
            bar,
            start: Instant::now(),
            last: Instant::now(),
        }
    }

    /// `n` rows done so far.
    pub(crate) fn tick(&mut self, n: usize) {
        match &self.bar {
            Some(bar) => {
                if let Some(len) = self.total.rows(n) {
                    bar.set_length(len.max(n as u64));
                }
                bar.set_position(n as u64);
            }
            None if self.enabled && self.last.elapsed() >= Duration::from_secs(5) => {
                self.last = Instant::now();
                let line = plain_line(self.what, n, self.total.rows(n), self.start.elapsed());
                eprintln!("{line}");
            }
            None => {}
        }
    }
}

impl Drop for Meter {
    fn drop(&mut self) {
        if let Some(bar) = &self.bar {
            bar.abandon();
        }
    }
}

/// `bulk-load: 12000 of 100000 rows, 2400 rows/s, ETA 33 s`.
fn plain_line(what: &str, n: usize, total: Option<u64>, elapsed: Duration) -> String {
    let rate = n as f64 / elapsed.as_secs_f64().max(1e-3);
    match total {
        Some(t) if t >= n as u64 => {
            let eta = (t - n as u64) as f64 / rate.max(1e-3);
            format!("{what}: {n} of {t} rows, {rate:.0} rows/s, ETA {eta:.0} s")
        }
        _ => format!("{what}: {n} rows, {rate:.0} rows/s"),
    }
}

/// A reader that counts the bytes taken from it, for [`Total::Bytes`].
pub(crate) struct Counting<R> {
    inner: R,
    read: Arc<AtomicU64>,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

/// Open `path` (`-` = stdin) for reading, with the total it allows: by size when it is a regular
/// file (a redirected stdin included), unknown for a pipe.
pub(crate) fn open_input(path: &Path) -> std::io::Result<(Box<dyn Read>, Total)> {
    let (reader, size): (Box<dyn Read>, Option<u64>) = if path.as_os_str() == "-" {
        let stdin = std::io::stdin();
        let size = stdin
            .as_fd()
            .try_clone_to_owned()
            .ok()
            .and_then(|fd| File::from(fd).metadata().ok())
            .filter(|m| m.is_file())
            .map(|m| m.len());
        (Box::new(stdin.lock()), size)
    } else {
        let f = File::open(path)?;
        let size = f.metadata()?.len();
        (Box::new(f), Some(size))
    };
    Ok(match size {
        Some(size) if size > 0 => {
            let read = Arc::new(AtomicU64::new(0));
            let total = Total::Bytes {
                size,
                read: read.clone(),
            };
            (
                Box::new(Counting {
                    inner: reader,
                    read,
                }),
                total,
            )
        }
        _ => (reader, Total::Unknown),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_total_is_extrapolated_from_the_bytes_read() {
        let read = Arc::new(AtomicU64::new(250));
        let total = Total::Bytes { size: 1_000, read };
        assert_eq!(total.rows(10), Some(40));
        assert_eq!(Total::Unknown.rows(10), None);
    }

    #[test]
    fn plain_lines_carry_the_eta_when_the_total_is_known() {
        let line = plain_line("bulk-load", 100, Some(300), Duration::from_secs(1));
        assert_eq!(line, "bulk-load: 100 of 300 rows, 100 rows/s, ETA 2 s");
        let line = plain_line("diff-sync", 100, None, Duration::from_secs(2));
        assert_eq!(line, "diff-sync: 100 rows, 50 rows/s");
    }

    #[test]
    fn a_counting_reader_counts() {
        let mut r = Counting {
            inner: &b"abcdef"[..],
            read: Arc::new(AtomicU64::new(0)),
        };
        let mut buf = String::new();
        r.read_to_string(&mut buf).unwrap();
        assert_eq!(r.read.load(Ordering::Relaxed), 6);
    }
}
