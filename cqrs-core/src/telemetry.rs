//! What `relay` and `consume` tell their operators: Prometheus metrics (recorded with the
//! `metrics` crate wherever the pipeline counts something) and health, served by one small HTTP
//! listener (`--metrics-addr`): `GET /metrics`, `/healthz` (the process answers) and `/readyz`
//! (every part that needs the database or the broker has them now).
//!
//! The listener is plain `std::net`: three read-only routes, one request per connection, answered
//! in order; a scrape renders the recorder's state. Gauges that are read, not counted (the outbox
//! backlog), are refreshed by a hook on a thread of their own every [`REFRESH`], so a database
//! that does not answer never holds up `/healthz`.
//!
//! ```no_run
//! let readiness = cqrs::telemetry::Readiness::default();
//! readiness.set("relay", Err("connecting".into()));
//! let shutdown = cqrs::Shutdown::new();
//! let server = cqrs::telemetry::serve("127.0.0.1:9187".parse().unwrap(), readiness.clone(), None, &shutdown)?;
//! println!("metrics on http://{}/metrics", server.addr());
//! readiness.set("relay", Ok(()));
//! # Ok::<(), cqrs::Error>(())
//! ```

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::error::{Error, ErrorKind, Result};
use crate::shutdown::Shutdown;

/// A hook run every [`REFRESH`] (to set gauges read from the database).
pub type Refresh = Box<dyn FnMut() + Send>;

/// How often the refresh hook runs and the recorder's histograms are compacted.
pub const REFRESH: Duration = Duration::from_secs(5);

/// The parts a process needs running, each ready or not with the reason.
#[derive(Debug, Clone, Default)]
pub struct Readiness(Arc<Mutex<BTreeMap<String, std::result::Result<(), String>>>>);

impl Readiness {
    /// Record whether `part` (a worker, the relay) can do its work now.
    pub fn set(&self, part: &str, state: std::result::Result<(), String>) {
        let mut parts = self.0.lock().unwrap_or_else(|p| p.into_inner());
        parts.insert(part.to_string(), state);
    }

    /// Ready when at least one part is registered and all are ready; else the reasons.
    pub fn check(&self) -> std::result::Result<(), Vec<String>> {
        let parts = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let waiting: Vec<String> = parts
            .iter()
            .filter_map(|(part, state)| state.as_ref().err().map(|why| format!("{part}: {why}")))
            .collect();
        match (parts.is_empty(), waiting.is_empty()) {
            (true, _) => Err(vec!["starting".into()]),
            (false, true) => Ok(()),
            (false, false) => Err(waiting),
        }
    }
}

/// The process's Prometheus recorder once installed, or why it could not be.
static HANDLE: OnceLock<std::result::Result<PrometheusHandle, String>> = OnceLock::new();

/// Whether this process records metrics ([`install`] or [`serve`] ran): without a recorder the
/// pipeline's metrics go nowhere, so nothing needs refreshing.
pub fn installed() -> bool {
    matches!(HANDLE.get(), Some(Ok(_)))
}

/// The process's Prometheus recorder, installed on first use.
fn recorder() -> Result<&'static PrometheusHandle> {
    let handle = HANDLE
        .get_or_init(|| {
            let handle = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &SECONDS)
                .and_then(|b| b.set_buckets_for_metric(Matcher::Suffix("_size".into()), &SIZES))
                .map_err(|e| e.to_string())?
                .install_recorder()
                .map_err(|e| e.to_string())?;
            describe();
            Ok(handle)
        })
        .as_ref()
        .map_err(|e| Error::config(format!("cannot record metrics: {e}")))?;
    static UPKEEP: OnceLock<()> = OnceLock::new();
    UPKEEP.get_or_init(|| {
        // Histogram samples wait in the recorder until rendered: compact them even when nobody
        // scrapes, whoever serves the metrics.
        let kept = std::thread::Builder::new()
            .name("cqrs-metrics-upkeep".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(REFRESH);
                    handle.run_upkeep();
                }
            });
        if let Err(e) = kept {
            tracing::warn!("metrics upkeep thread not started: {e}");
        }
    });
    Ok(handle)
}

/// Install the process's metrics recorder, so the relay and consumers started after it record:
/// for a service that serves [`render`] on its own router rather than [`serve`]'s listener.
pub fn install() -> Result<()> {
    recorder().map(|_| ())
}

/// The metrics recorded so far, in Prometheus's text format (installs the recorder if needed).
///
/// ```
/// cqrs::telemetry::install()?;
/// let text = cqrs::telemetry::render()?;
/// assert!(text.contains("cqrs_up"));
/// # Ok::<(), cqrs::Error>(())
/// ```
pub fn render() -> Result<String> {
    recorder().map(|h| h.render())
}

/// Buckets of the `_seconds` histograms: 1 ms to 1 min.
const SECONDS: [f64; 13] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, 60.0,
];

/// Buckets of the `_size` histograms (messages per batch).
const SIZES: [f64; 8] = [1.0, 10.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 5000.0];

/// Every metric the pipeline records, with its help text (the README's operations section lists
/// the same).
pub const METRICS: [(&str, &str); 14] = [
    (
        "cqrs_outbox_pending",
        "Outbox rows waiting to be published, per cqrs_id (read every 5 s; relay)",
    ),
    (
        "cqrs_outbox_leased",
        "Of those, rows a relay holds a lease on, per cqrs_id (relay)",
    ),
    (
        "cqrs_outbox_oldest_age_seconds",
        "Age of the oldest waiting outbox row, per cqrs_id (relay)",
    ),
    (
        "cqrs_relay_claimed_total",
        "Outbox rows claimed by the relay",
    ),
    ("cqrs_relay_published_total", "Messages sent to the broker"),
    (
        "cqrs_relay_channels_replaced_total",
        "Publisher channels replaced after a batch was nacked or failed (its rows are published again)",
    ),
    (
        "cqrs_relay_messages_total",
        "Messages by broker outcome: confirmed, unroutable, failed",
    ),
    (
        "cqrs_consumer_messages_total",
        "Messages by outcome: applied, duplicate, stale, ignored, retried, dead_lettered",
    ),
    (
        "cqrs_consumer_transient_redos_total",
        "Batches redone after a transient failure",
    ),
    ("cqrs_consumer_batch_size", "Messages per batch received"),
    (
        "cqrs_consumer_batch_seconds",
        "Time to apply and settle one batch",
    ),
    (
        "cqrs_consumer_lag_seconds",
        "From the master's cqrs_updated to the apply here, per applied message",
    ),
    (
        "cqrs_reconnects_total",
        "Lost broker or database connections, by role (relay, consumer)",
    ),
    ("cqrs_up", "1 while the process serves metrics"),
];

/// Give each metric its help text, and set `cqrs_up`.
fn describe() {
    for (name, help) in METRICS {
        match name {
            n if n.ends_with("_total") => metrics::describe_counter!(n, help),
            n if n.ends_with("_seconds") && !n.starts_with("cqrs_outbox")
                || n.ends_with("_size") =>
            {
                metrics::describe_histogram!(n, help)
            }
            n => metrics::describe_gauge!(n, help),
        }
    }
    metrics::gauge!("cqrs_up").set(1.0);
}

/// The running listener; stops when dropped or with the shutdown it was given.
pub struct Server {
    addr: SocketAddr,
    stop: Shutdown,
    threads: Vec<std::thread::JoinHandle<()>>,
    _refresher: Option<Refresher>,
}

/// A refresh hook running every [`REFRESH`] on a thread of its own; stops when dropped or with
/// the shutdown it was given.
pub struct Refresher {
    stop: Shutdown,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Refresher {
    fn drop(&mut self) {
        self.stop.trigger();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Run `refresh` now and then every [`REFRESH`] until `shutdown`, on a thread: the gauges a
/// process reads rather than counts, for whoever renders the metrics ([`serve`]'s listener, or
/// the application's own route through [`render`]).
pub fn refresh_every(mut refresh: Refresh, shutdown: &Shutdown) -> Result<Refresher> {
    let stop = shutdown.child();
    let refreshing = stop.clone();
    let thread = spawn("cqrs-metrics-refresh", move || {
        loop {
            refresh();
            if refreshing.sleep(REFRESH) {
                break;
            }
        }
    })?;
    Ok(Refresher {
        stop,
        thread: Some(thread),
    })
}

impl Server {
    /// The address it listens on (the port chosen when `:0` was asked for).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // A process that ends on an error (not on its shutdown) must not wait for its listener.
        self.stop.trigger();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Listen on `addr` until `shutdown`: metrics and health. Installs the process's metrics
/// recorder. An address that cannot be bound is a configuration error (exit 2).
pub fn serve(
    addr: SocketAddr,
    readiness: Readiness,
    refresh: Option<Refresh>,
    shutdown: &Shutdown,
) -> Result<Server> {
    let handle = recorder()?;
    let listener = TcpListener::bind(addr)
        .map_err(|e| Error::config(format!("--metrics-addr {addr}: cannot listen: {e}")))?;
    let addr = listener.local_addr().map_err(io)?;
    // Accept polls so the thread notices the shutdown.
    listener.set_nonblocking(true).map_err(io)?;
    let stop = shutdown.child();
    let mut threads = Vec::new();
    let listening = stop.clone();
    let listen = move || {
        while !listening.is_triggered() {
            match listener.accept() {
                Ok((stream, _)) => {
                    if let Err(e) = answer(stream, handle, &readiness) {
                        tracing::debug!("metrics request: {e}");
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    listening.sleep(Duration::from_millis(50));
                }
                Err(e) => {
                    tracing::warn!("metrics listener: {e}");
                    listening.sleep(Duration::from_millis(500));
                }
            }
        }
    };
    threads.push(spawn("cqrs-metrics", listen)?);
    let refresher = match refresh {
        Some(mut refresh) => {
            // Once before returning, so the first scrape has the gauges (the thread reads them
            // again at once: one small query).
            refresh();
            Some(refresh_every(refresh, &stop)?)
        }
        None => None,
    };
    tracing::info!(%addr, "serving /metrics, /healthz and /readyz");
    Ok(Server {
        addr,
        stop,
        threads,
        _refresher: refresher,
    })
}

fn spawn(name: &str, f: impl FnOnce() + Send + 'static) -> Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name(name.into())
        .spawn(f)
        .map_err(io)
}

fn io(e: std::io::Error) -> Error {
    Error::new(ErrorKind::Io, format!("metrics listener: {e}"))
}

/// Read one request's head and answer it.
fn answer(
    mut stream: TcpStream,
    handle: &PrometheusHandle,
    readiness: &Readiness,
) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    stream.set_write_timeout(Some(Duration::from_secs(2)))?;
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 8192 {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let line = String::from_utf8_lossy(&head);
    let mut words = line.split_whitespace();
    let (method, path) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    let (status, kind, body) = match (method, path.split('?').next().unwrap_or("")) {
        ("GET", "/metrics") => ("200 OK", "text/plain; version=0.0.4", handle.render()),
        ("GET", "/healthz") => ("200 OK", "text/plain", "ok\n".to_string()),
        ("GET", "/readyz") => match readiness.check() {
            Ok(()) => ("200 OK", "text/plain", "ready\n".to_string()),
            Err(why) => (
                "503 Service Unavailable",
                "text/plain",
                format!("not ready: {}\n", why.join("; ")),
            ),
        },
        ("GET", _) => ("404 Not Found", "text/plain", "not found\n".to_string()),
        _ => (
            "405 Method Not Allowed",
            "text/plain",
            "GET only\n".to_string(),
        ),
    };
    write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    stream.flush()
}

/// How often a running relay or consumer says at `info` what it has done.
pub const PROGRESS_EVERY: Duration = Duration::from_secs(60);

/// A line at `info` every [`PROGRESS_EVERY`] with what a long-running loop did since the last
/// one (nothing when it did nothing): what a person watching a terminal needs, without a line
/// per message.
pub struct Progress {
    what: &'static str,
    since: Instant,
    last: usize,
}

impl Progress {
    /// A reporter for `what` ("relay", "consumer").
    pub fn new(what: &'static str) -> Progress {
        Progress {
            what,
            since: Instant::now(),
            last: 0,
        }
    }

    /// `total` is the count so far; `detail` says the rest (called only when a line is due).
    pub fn tick(&mut self, total: usize, detail: impl FnOnce() -> String) {
        let elapsed = self.since.elapsed();
        if elapsed < PROGRESS_EVERY {
            return;
        }
        let done = total.saturating_sub(self.last);
        if done > 0 {
            tracing::info!(
                "{}: {done} message(s) in the last {} s ({:.0}/s); {}",
                self.what,
                elapsed.as_secs(),
                done as f64 / elapsed.as_secs_f64(),
                detail()
            );
        }
        self.since = Instant::now();
        self.last = total;
    }
}
