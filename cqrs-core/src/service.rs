//! Long-running processes over a broker URL: `consume` (N workers, each with its own channel,
//! database thread and connection) and `relay`. What `cqrs consume` and `cqrs relay` run.
//!
//! Failures of the broker or the database are transient: a worker backs off (capped
//! exponential), reconnects, re-declares the topology and resumes; unacked deliveries come back
//! from the broker and re-apply idempotently (revisions), so nothing is lost or applied twice.

use std::sync::Arc;
use std::time::Duration;

use crate::config::Settings;
use crate::consumer::{Consumer, ConsumerStats};
use crate::db::Db;
use crate::error::{Error, ErrorKind, Result};
use crate::model::Registry;
use crate::relay::{Relay, RelayStats};
use crate::shutdown::Shutdown;
use crate::transport::amqp::{AmqpConfig, AmqpTransport};
use crate::transport::local::LocalTransport;
use crate::transport::{Inbox, Publisher};

/// Reconnect backoff: first pause and cap. A broker restart takes ~10-20 s; 10 s keeps the worst
/// extra wait after it comes back small without hammering it while it starts.
const BACKOFF_START: Duration = Duration::from_millis(200);
const BACKOFF_CAP: Duration = Duration::from_secs(10);

/// The broker a broker URL names: RabbitMQ (`amqp://`) or the embedded queue file (`sqlite://`).
#[derive(Clone)]
pub enum Broker {
    /// RabbitMQ.
    Amqp(Arc<AmqpTransport>),
    /// A queue in a SQLite file.
    Local(Arc<LocalTransport>),
}

impl Broker {
    /// Connect to the broker of `settings` (`role` names the connection: `<service>-<role>`);
    /// one attempt.
    pub fn connect(settings: &Settings, role: &str) -> Result<Broker> {
        Broker::connect_until(settings, role, &Shutdown::new(), 1)
    }

    /// [`Broker::connect`] for a long-running service: a broker that is not up yet (started in
    /// the wrong order, restarting) is waited for with the reconnect backoff, up to `attempts`
    /// tries or until `shutdown`.
    pub fn connect_until(
        settings: &Settings,
        role: &str,
        shutdown: &Shutdown,
        attempts: u32,
    ) -> Result<Broker> {
        let url = settings.broker_url.as_deref().ok_or_else(|| {
            Error::config(format!(
                "{role} needs a broker: pass --broker-url or set CQRS_BROKER_URL (amqp://guest:guest@127.0.0.1:5672/%2f or sqlite:///path/queue.db)"
            ))
        })?;
        if url.starts_with("sqlite:") {
            return Ok(Broker::Local(LocalTransport::open(
                url,
                settings.local_lease,
            )?));
        }
        let config = AmqpConfig {
            url: url.to_string(),
            connection_name: format!("{}-{role}", settings.service_name),
            exchange: settings.exchange.clone(),
            tls_ca_pem: match &settings.tls_ca_file {
                Some(path) => Some(std::fs::read_to_string(path).map_err(|e| {
                    Error::config(format!("cannot read --tls-ca-file {}: {e}", path.display()))
                })?),
                None => None,
            },
        };
        Ok(Broker::Amqp(connect_with_backoff(
            config, shutdown, attempts,
        )?))
    }

    /// Declare a replica's queues and bindings.
    pub fn declare_replica(&self, queue: &str, ids: &[String], delays: &[Duration]) -> Result<()> {
        match self {
            Broker::Amqp(t) => t.declare_replica(queue, ids, delays),
            Broker::Local(t) => t.declare_replica(queue, ids),
        }
    }

    /// A consumer of `queue`.
    pub fn inbox(&self, queue: &str, prefetch: u16, delays: &[Duration]) -> Result<Box<dyn Inbox>> {
        Ok(match self {
            Broker::Amqp(t) => Box::new(t.inbox(queue, prefetch, delays)?),
            Broker::Local(t) => Box::new(t.inbox(queue)?),
        })
    }

    /// A relay publisher.
    pub fn publisher(&self) -> Result<Box<dyn Publisher>> {
        Ok(match self {
            Broker::Amqp(t) => {
                t.declare_exchange()?;
                Box::new(t.publisher()?)
            }
            Broker::Local(t) => Box::new(t.publisher()?),
        })
    }
}

fn broker(settings: &Settings, role: &str) -> Result<Broker> {
    Broker::connect(settings, role)
}

fn connect_with_backoff(
    config: AmqpConfig,
    shutdown: &Shutdown,
    attempts: u32,
) -> Result<Arc<AmqpTransport>> {
    let mut backoff = BACKOFF_START;
    let mut n = 0;
    loop {
        match AmqpTransport::connect(config.clone()) {
            Ok(t) => return Ok(t),
            Err(e) if e.is_transient() && n + 1 < attempts && !shutdown.is_triggered() => {
                tracing::warn!("{e}; retrying in {} ms", backoff.as_millis());
                shutdown.sleep(backoff);
                backoff = (backoff * 2).min(BACKOFF_CAP);
                n += 1;
            }
            Err(e) => return Err(e),
        }
    }
}

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
pub fn consume(
    registry: &Registry,
    settings: &Settings,
    workers: usize,
    only: &[String],
    shutdown: &Shutdown,
) -> Result<ConsumerStats> {
    let ids = consumed_ids(registry, only)?;
    let db_url = settings.require_database_url()?.to_string();
    let queue = settings.queue.clone().ok_or_else(|| {
        Error::config("consume needs this replica's queue: pass --queue or set CQRS_QUEUE")
    })?;
    if workers == 0 {
        return Err(Error::config("--workers must be at least 1"));
    }
    let transport = Broker::connect_until(settings, "consumer", shutdown, u32::MAX)?;
    transport.declare_replica(&queue, &ids, &settings.retry_delays)?;
    // Prefetch two batches: one being applied, one arriving.
    let prefetch = (settings.batch_size * 2).min(u16::MAX as usize) as u16;
    let results: Vec<Result<ConsumerStats>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..workers)
            .map(|w| {
                let (transport, ids, queue, db_url) = (transport.clone(), &ids, &queue, &db_url);
                std::thread::Builder::new()
                    .name(format!("cqrs-worker-{w}"))
                    .spawn_scoped(s, move || {
                        worker(
                            registry, settings, &transport, queue, ids, db_url, prefetch, shutdown,
                        )
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
    for r in results {
        total += r?;
    }
    Ok(total)
}

#[allow(clippy::too_many_arguments)]
fn worker(
    registry: &Registry,
    settings: &Settings,
    transport: &Broker,
    queue: &str,
    ids: &[String],
    db_url: &str,
    prefetch: u16,
    shutdown: &Shutdown,
) -> Result<ConsumerStats> {
    let mut backoff = BACKOFF_START;
    let mut total = ConsumerStats::default();
    let mut db: Option<Db> = None;
    while !shutdown.is_triggered() {
        let attempt = (|| -> Result<()> {
            let conn = match db.take() {
                Some(c) => c,
                None => Db::connect(db_url)?,
            };
            transport.declare_replica(queue, ids, &settings.retry_delays)?;
            let inbox = transport.inbox(queue, prefetch, &settings.retry_delays)?;
            let mut consumer =
                Consumer::new(registry, settings, conn, inbox).reconnect_with(db_url);
            let result = consumer.run(shutdown);
            let stats = consumer.stats();
            total += stats;
            db = Some(consumer.into_db());
            if stats.received > 0 {
                // It worked for a while: the next failure starts from a short pause again.
                backoff = BACKOFF_START;
            }
            result
        })();
        match attempt {
            Ok(()) => break,
            Err(e) if e.is_transient() => {
                tracing::warn!(
                    queue,
                    "worker lost its connection: {e}; reconnecting in {} ms",
                    backoff.as_millis()
                );
                if shutdown.sleep(backoff) {
                    break;
                }
                backoff = (backoff * 2).min(BACKOFF_CAP);
            }
            Err(e) => return Err(e),
        }
    }
    Ok(total)
}

/// Relay the outbox of the settings' database to the broker until `shutdown` fires.
pub fn relay(settings: &Settings, shutdown: &Shutdown) -> Result<RelayStats> {
    let db = Db::connect(settings.require_database_url()?)?;
    let transport = Broker::connect_until(settings, "relay", shutdown, u32::MAX)?;
    let mut relay = Relay::new(db, transport.publisher()?, settings.clone());
    relay.run(shutdown)?;
    Ok(relay.stats())
}

/// `dead-letters dump|retry|purge` on the settings' queue.
pub fn dead_letters(
    settings: &Settings,
    action: crate::ops::dead_letters::Action,
    filter: &crate::ops::dead_letters::Filter,
    out: &mut dyn std::io::Write,
) -> Result<crate::ops::dead_letters::Report> {
    let queue = settings.queue.clone().ok_or_else(|| {
        Error::config("dead-letters needs the replica's queue: pass --queue or set CQRS_QUEUE")
    })?;
    let transport = broker(settings, "dead-letters")?;
    let mut pass: Box<dyn crate::transport::Letters> = match &transport {
        Broker::Amqp(t) => Box::new(t.letters(&queue)?),
        Broker::Local(t) => Box::new(t.letters(&queue)?),
    };
    crate::ops::dead_letters::run(pass.as_mut(), &queue, action, filter, out)
}

/// `sync`: SYNC the rows of `cqrs_id` matching `filter` (to the settings' queue if set, else
/// broadcast), then, unless `no_wait`, relay until the outbox is empty (the broker confirmed them).
pub fn sync(
    registry: &Registry,
    settings: &Settings,
    cqrs_id: &str,
    filter: &str,
    no_wait: bool,
    progress: &mut dyn FnMut(usize),
) -> Result<usize> {
    let spec = registry.master_named(cqrs_id)?;
    // Check the filter before touching anything, so a usage error changes nothing.
    crate::ops::filter::compile(spec.table(), crate::db::Backend::Postgres, filter, 1)?;
    let mut db = Db::connect(settings.require_database_url()?)?;
    let transport = if no_wait {
        None
    } else {
        Some(broker(settings, "sync")?)
    };
    let n = crate::ops::sync::sync(
        &mut db,
        spec,
        filter,
        settings.queue.as_deref(),
        settings.batch_size,
        progress,
    )?;
    if let Some(transport) = transport {
        publish_outbox(settings, db, &transport)?;
    }
    Ok(n)
}

/// Relay the outbox until it is empty, failing if the broker did not confirm everything.
fn publish_outbox(settings: &Settings, db: Db, transport: &Broker) -> Result<()> {
    let mut relay = Relay::new(db, transport.publisher()?, settings.clone());
    while relay.run_once()? > 0 {}
    let mut db = Db::connect(settings.require_database_url()?)?;
    let left = crate::outbox::pending(&mut db)?;
    if left > 0 {
        return Err(Error::new(
            ErrorKind::Transport,
            format!(
                "{left} outbox row(s) were not confirmed by the broker; a relay will retry them"
            ),
        ));
    }
    Ok(())
}

/// `diff-sync`: directed SYNCs for the pks read from `input` (stage 2's output), then, unless
/// `no_wait`, relay them with confirms. Returns `(cqrs_id, queue, rows)`.
pub fn diff_sync(
    registry: &Registry,
    settings: &Settings,
    input: &mut dyn std::io::BufRead,
    no_wait: bool,
    progress: &mut dyn FnMut(usize),
) -> Result<(String, Option<String>, usize)> {
    let mut db = Db::connect(settings.require_database_url()?)?;
    let transport = if no_wait {
        None
    } else {
        Some(broker(settings, "diff-sync")?)
    };
    let result = crate::ops::diff::diff_sync(&mut db, registry, input, progress)?;
    if let Some(transport) = transport {
        publish_outbox(settings, db, &transport)?;
    }
    Ok(result)
}
