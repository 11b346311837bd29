//! Long-running processes over a broker URL: `consume` (N workers, each with its own channel,
//! database thread and connection) and `relay`. What `cqrs consume` and `cqrs relay` run.
//!
//! Failures of the broker or the database are transient: a worker backs off (capped
//! exponential), reconnects, re-declares the topology and resumes; unacked deliveries come back
//! from the broker and re-apply idempotently (revisions), so nothing is lost or applied twice.

use std::time::Duration;

use crate::apply;
use crate::backoff::Backoff;
use crate::config::Settings;
use crate::consumer::{Consumer, ConsumerStats};
use crate::db::Db;
use crate::error::{Error, ErrorKind, Result};
use crate::registry::Registry;
use crate::relay::{Relay, RelayStats};
use crate::shutdown::Shutdown;
use crate::telemetry::{self, Readiness};
use crate::transport::{self, Broker};

/// The replicas to consume: all registered, or the `only` ones (each must be registered).
pub fn consumed_ids(registry: &Registry, only: &[String]) -> Result<Vec<String>> {
    if registry.replica_ids().next().is_none() {
        return Err(Error::config(
            "no replica models registered: build your own binary with cqrs_cli::run (see README)",
        ));
    }
    if only.is_empty() {
        return Ok(registry.replica_ids().map(str::to_string).collect());
    }
    for id in only {
        registry.replica_named(id)?;
    }
    Ok(only.to_vec())
}

/// Run `workers` consumers of the settings' queue until `shutdown` fires; returns their summed counters.
///
/// Workers run together or not at all: a worker that stops on a fatal error (or panics) is
/// logged and stops the others, and this returns its error, so `cqrs consume` exits 1 and its
/// supervisor restarts it rather than running on with fewer workers. Nothing is lost: what the
/// workers had not acked goes back to the queue.
pub fn consume(
    registry: &Registry,
    settings: &Settings,
    workers: usize,
    only: &[String],
    shutdown: &Shutdown,
) -> Result<ConsumerStats> {
    consume_reporting(
        registry,
        settings,
        workers,
        only,
        shutdown,
        &Readiness::default(),
    )
}

/// [`consume`], its workers' readiness (one part each) set in `readiness`.
pub(crate) fn consume_reporting(
    registry: &Registry,
    settings: &Settings,
    workers: usize,
    only: &[String],
    shutdown: &Shutdown,
    readiness: &Readiness,
) -> Result<ConsumerStats> {
    let ids = consumed_ids(registry, only)?;
    registry.check_settings(settings)?;
    let db_url = settings.require_database_url()?.to_string();
    if crate::db::parse_database_url(&db_url)?.0 == crate::db::Backend::Sqlite
        && ids.iter().any(|id| {
            settings
                .model(id)
                .query_timeout()
                .is_some_and(|t| !t.is_zero())
        })
    {
        tracing::warn!("query_timeout_ms is not applied on SQLite (it has no statement timeout)");
    }
    let queue = settings.require_queue("consume")?.to_string();
    if workers == 0 {
        return Err(Error::config("--workers must be at least 1"));
    }
    // A database that answers is checked now; one that does not is waited for by the workers.
    match crate::db::Db::connect(&db_url) {
        Ok(mut db) => registry.check_schema(&mut db, &ids)?,
        Err(e) => tracing::warn!("cannot check the replica tables yet: {e}"),
    }
    tracing::info!(
        queue = %queue,
        workers,
        models = %ids.join(","),
        broker = %settings.broker_url.as_deref().map(crate::db::redact).unwrap_or_default(),
        "consume starting"
    );
    for w in 0..workers {
        readiness.set(&worker_part(w), Err("starting".into()));
    }
    let _server = observe(settings, readiness, None, shutdown)?;
    let transport = transport::connect_until(settings, "consumer", shutdown, u32::MAX)?;
    transport.declare_replica(&queue, &ids, &settings.retry_levels())?;
    // Prefetch two batches: one being applied, one arriving.
    let prefetch = (settings.batch_size * 2).min(u16::MAX as usize) as u16;
    let together = shutdown.child();
    let results: Vec<Result<ConsumerStats>> = std::thread::scope(|s| {
        let (url, together_ref) = (db_url.as_str(), &together);
        std::thread::Builder::new()
            .name("cqrs-housekeeper".into())
            .spawn_scoped(s, move || housekeeper(settings, url, together_ref))
            .expect("spawning the housekeeping thread");
        let handles: Vec<_> = (0..workers)
            .map(|w| {
                let (transport, ids, queue, db_url, together) =
                    (transport.as_ref(), &ids, &queue, &db_url, &together);
                let readiness = readiness.clone();
                std::thread::Builder::new()
                    .name(format!("cqrs-worker-{w}"))
                    .spawn_scoped(s, move || {
                        // However this worker ends (shutdown, error, panic), the others stop.
                        let _stop_all = StopOnExit(together);
                        let r = worker(
                            registry,
                            settings,
                            transport,
                            queue,
                            ids,
                            db_url,
                            prefetch,
                            together,
                            (&readiness, &worker_part(w)),
                        );
                        if let Err(e) = &r {
                            tracing::error!(
                                worker = w,
                                queue,
                                "worker stopped: {e}; stopping the others"
                            );
                        }
                        r
                    })
                    .expect("spawning a worker thread")
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(Error::new(ErrorKind::Database, "a worker panicked")))
            })
            .collect()
    });
    let mut total = ConsumerStats::default();
    let mut first_error = None;
    for r in results {
        match r {
            Ok(stats) => total += stats,
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(total),
    }
}

/// How often `consume` prunes the replica's tombstones.
pub const PRUNE_EVERY: Duration = Duration::from_secs(3_600);

/// `consume`'s housekeeping until `shutdown`: prune the tombstones past their retention at start
/// and every [`PRUNE_EVERY`]. A failure is logged and tried again at the next turn: the workers
/// do not depend on it (tombstones only grow meanwhile).
fn housekeeper(settings: &Settings, db_url: &str, shutdown: &Shutdown) {
    loop {
        match Db::connect(db_url)
            .and_then(|mut db| apply::prune_tombstones(&mut db, settings.tombstone_retention))
        {
            Ok(0) => {}
            Ok(n) => tracing::info!(
                pruned = n,
                retention_days = settings.tombstone_retention_days(),
                "pruned tombstones past their retention"
            ),
            Err(e) => tracing::warn!(
                "pruning tombstones failed: {e}; trying again in {} min",
                PRUNE_EVERY.as_secs() / 60
            ),
        }
        if shutdown.sleep(PRUNE_EVERY) {
            return;
        }
    }
}

/// Triggers its signal when dropped, including while a panic unwinds.
struct StopOnExit<'a>(&'a Shutdown);

impl Drop for StopOnExit<'_> {
    fn drop(&mut self) {
        self.0.trigger();
    }
}

#[allow(clippy::too_many_arguments)]
fn worker(
    registry: &Registry,
    settings: &Settings,
    transport: &dyn Broker,
    queue: &str,
    ids: &[String],
    db_url: &str,
    prefetch: u16,
    shutdown: &Shutdown,
    (readiness, part): (&Readiness, &str),
) -> Result<ConsumerStats> {
    let mut backoff = Backoff::reconnect();
    let mut total = ConsumerStats::default();
    let mut db: Option<Db> = None;
    while !shutdown.is_triggered() {
        let attempt = (|| -> Result<()> {
            let conn = match db.take() {
                Some(c) => c,
                None => Db::connect(db_url)?,
            };
            let levels = settings.retry_levels();
            // Queues migrated to the other type while this runs are used as they are.
            transport.redeclare_replica(queue, ids, &levels)?;
            let inbox = transport.inbox(queue, prefetch, &levels)?;
            let mut consumer = Consumer::new(registry, settings, conn, inbox)
                .reconnect_with(db_url)
                .report_to(readiness.clone(), part);
            readiness.set(part, Ok(()));
            let result = consumer.run(shutdown);
            let stats = consumer.stats();
            total += stats;
            db = Some(consumer.into_db());
            if stats.received > 0 {
                // It worked for a while: the next failure starts from a short pause again.
                backoff.reset();
            }
            result
        })();
        match attempt {
            Ok(()) => break,
            Err(e) if e.is_transient() => {
                readiness.set(part, Err(e.to_string()));
                metrics::counter!("cqrs_reconnects_total", "role" => "consumer").increment(1);
                tracing::warn!(
                    queue,
                    "worker lost its connection: {e}; reconnecting in {} ms",
                    backoff.peek().as_millis()
                );
                if backoff.sleep(shutdown) {
                    break;
                }
            }
            Err(e) => return Err(e),
        }
    }
    Ok(total)
}

/// Relay the outbox of the settings' database to the broker until `shutdown` fires.
pub fn relay(settings: &Settings, shutdown: &Shutdown) -> Result<RelayStats> {
    relay_reporting(settings, shutdown, &Readiness::default(), None)
}

/// [`relay`], its readiness set in `readiness` (part "relay"); with `publish_on_stop`, once
/// `shutdown` fires it goes on publishing what is in the outbox for at most that long (an
/// application's own relay, stopped after its last request committed, leaves nothing behind).
pub(crate) fn relay_reporting(
    settings: &Settings,
    shutdown: &Shutdown,
    readiness: &Readiness,
    publish_on_stop: Option<Duration>,
) -> Result<RelayStats> {
    let url = settings.require_database_url()?;
    let Some(db) = database_until(url, shutdown)? else {
        return Ok(RelayStats::default());
    };
    tracing::info!(
        database = %crate::db::redact(url),
        broker = %settings.broker_url.as_deref().map(crate::db::redact).unwrap_or_default(),
        exchange = %settings.exchange,
        batch_size = settings.batch_size,
        "relay starting"
    );
    readiness.set("relay", Err("connecting".into()));
    let mut gauges = BacklogGauges::new(url);
    let _server = observe(
        settings,
        readiness,
        Some(Box::new(move || gauges.refresh())),
        shutdown,
    )?;
    let transport = transport::connect_until(settings, "relay", shutdown, u32::MAX)?;
    let mut relay = Relay::new(db, transport.publisher()?, settings.clone())
        .reconnect_with(url)
        .report_to(readiness.clone());
    relay.run(shutdown)?;
    if let Some(grace) = publish_on_stop {
        match relay.drain_within(std::time::Instant::now() + grace) {
            Ok(n) if n > 0 => tracing::info!("published {n} outbox row(s) while stopping"),
            Ok(_) => {}
            Err(e) => tracing::warn!(
                "stopping with rows left in the outbox (the next relay publishes them): {e}"
            ),
        }
    }
    Ok(relay.stats())
}

/// The readiness part of consumer worker `w`.
fn worker_part(w: usize) -> String {
    format!("worker {w}")
}

/// What [`observe`] keeps running until dropped.
enum Observer {
    Nothing,
    Listener { _server: telemetry::Server },
    Refresher { _refresher: telemetry::Refresher },
}

/// Serve metrics and health if the settings ask for it (`metrics_addr`); stops with `shutdown`.
/// Without a listener, an application that renders the metrics itself (the recorder installed,
/// `telemetry::render` on its own route) still gets the gauges `refresh` sets.
fn observe(
    settings: &Settings,
    readiness: &Readiness,
    refresh: Option<telemetry::Refresh>,
    shutdown: &Shutdown,
) -> Result<Observer> {
    match (&settings.metrics_addr, refresh) {
        (Some(addr), refresh) => {
            let addr = settings.metrics_socket(addr)?;
            telemetry::serve(addr, readiness.clone(), refresh, shutdown)
                .map(|_server| Observer::Listener { _server })
        }
        (None, Some(refresh)) if telemetry::installed() => {
            telemetry::refresh_every(refresh, shutdown)
                .map(|_refresher| Observer::Refresher { _refresher })
        }
        (None, _) => Ok(Observer::Nothing),
    }
}

/// The outbox gauges, set from the database every few seconds on one connection of their own
/// (dropped on an error, opened again at the next refresh): pending and leased rows and the
/// oldest pending row's age, per model; 0 for a model `seen` before that has none now. A
/// database that does not answer leaves them as they were.
struct BacklogGauges {
    url: String,
    db: Option<Db>,
    seen: std::collections::BTreeSet<String>,
}

impl BacklogGauges {
    fn new(url: &str) -> Self {
        BacklogGauges {
            url: url.to_string(),
            db: None,
            seen: Default::default(),
        }
    }

    fn read(&mut self) -> Result<Vec<crate::outbox::Backlog>> {
        let db = match &mut self.db {
            Some(db) => db,
            None => self.db.insert(Db::connect(&self.url)?),
        };
        crate::outbox::status(db)
    }

    fn refresh(&mut self) {
        let backlog = match self.read() {
            Ok(backlog) => backlog,
            Err(e) => {
                self.db = None;
                tracing::debug!("outbox gauges not refreshed: {e}");
                return;
            }
        };
        let gone: Vec<String> = self
            .seen
            .iter()
            .filter(|id| !backlog.iter().any(|b| &b.cqrs_id == *id))
            .cloned()
            .collect();
        let empty = gone.into_iter().map(|cqrs_id| crate::outbox::Backlog {
            cqrs_id,
            pending: 0,
            leased: 0,
            oldest_age_seconds: 0.0,
        });
        for b in backlog.into_iter().chain(empty) {
            let id = b.cqrs_id;
            metrics::gauge!("cqrs_outbox_pending", "cqrs_id" => id.clone()).set(b.pending as f64);
            metrics::gauge!("cqrs_outbox_leased", "cqrs_id" => id.clone()).set(b.leased as f64);
            metrics::gauge!("cqrs_outbox_oldest_age_seconds", "cqrs_id" => id.clone())
                .set(b.oldest_age_seconds);
            self.seen.insert(id);
        }
    }
}

/// Connect to the database, waiting with the reconnect backoff while it is unreachable (started
/// after us, restarting); `None` if `shutdown` fires first. A bad URL fails at once.
fn database_until(url: &str, shutdown: &Shutdown) -> Result<Option<Db>> {
    let mut backoff = Backoff::reconnect();
    loop {
        match Db::connect(url) {
            Ok(db) => return Ok(Some(db)),
            Err(e) if e.is_transient() => {
                tracing::warn!("{e}; trying again in {} ms", backoff.peek().as_millis());
                if backoff.sleep(shutdown) {
                    return Ok(None);
                }
            }
            Err(e) => return Err(e),
        }
    }
}
