//! A broker chosen by the scheme of its URL: one table maps each scheme to the transport module
//! that connects it, and every caller (services, one-shot commands, the demo) sees the same
//! [`Broker`] trait. A new transport is one module implementing [`Broker`] and one row in
//! [`SCHEMES`].

use std::time::Duration;

use crate::backoff::Backoff;
use crate::config::{QueueType, Settings};
use crate::error::{Error, Result};
use crate::shutdown::Shutdown;

use super::{Inbox, Letters, Publisher, amqp, local, nats};

/// What a command or service needs from a broker, whatever it is.
pub trait Broker: Send + Sync {
    /// Declare a replica's queue, its bindings for `cqrs_ids` (broadcast, directed and dead-letter
    /// keys) and, where the transport needs them, its retry levels `delays`.
    fn declare_replica(&self, queue: &str, cqrs_ids: &[String], delays: &[Duration]) -> Result<()>;

    /// [`declare_replica`](Self::declare_replica) again for a worker that lost its queue (a
    /// reconnect, a server-side cancel). Where queues have a type, one found with the other type
    /// is used as it is, with a warning: `cqrs queues migrate` leaves them so while workers run.
    fn redeclare_replica(
        &self,
        queue: &str,
        cqrs_ids: &[String],
        delays: &[Duration],
    ) -> Result<()> {
        self.declare_replica(queue, cqrs_ids, delays)
    }

    /// Move the replica's queues to queue type `to` with their bindings for `cqrs_ids` and every
    /// waiting message (`cqrs queues migrate`). Only RabbitMQ's queues have a type.
    fn migrate_replica(
        &self,
        queue: &str,
        cqrs_ids: &[String],
        delays: &[Duration],
        to: QueueType,
    ) -> Result<Vec<QueueMove>> {
        let _ = (queue, cqrs_ids, delays, to);
        Err(Error::config(
            "only RabbitMQ (amqp://) queues have a type to migrate",
        ))
    }

    /// Delete a retired replica's queues (`queue`, its dead-letter queue, its delay queues for
    /// `delays`) and what the transport made for it besides (`cqrs queues delete`); refused while
    /// one holds messages, unless `force`.
    fn delete_replica(
        &self,
        queue: &str,
        delays: &[Duration],
        force: bool,
    ) -> Result<Vec<QueueDeleted>> {
        let _ = (queue, delays, force);
        Err(Error::config(
            "deleting a replica's queues is for RabbitMQ (amqp://); a queue file's replica is deleted with the file",
        ))
    }

    /// A consumer of `queue` taking up to `prefetch` unacknowledged deliveries.
    fn inbox(&self, queue: &str, prefetch: u16, delays: &[Duration]) -> Result<Box<dyn Inbox>>;

    /// A publisher to the exchange (declared if it does not exist).
    fn publisher(&self) -> Result<Box<dyn Publisher>>;

    /// One pass over `queue`'s dead letters.
    fn letters(&self, queue: &str) -> Result<Box<dyn Letters>>;

    /// Drop every message waiting in `queue` (not its dead letters); returns how many.
    fn purge(&self, queue: &str) -> Result<usize>;
}

/// What [`Broker::migrate_replica`] did to one queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueMove {
    /// The queue.
    pub queue: String,
    /// Whether it had the other type and was moved (false: it had the type asked for already,
    /// or did not exist and was declared with it).
    pub changed: bool,
    /// Messages moved out of it into its parking queue.
    pub moved: usize,
    /// Messages moved from its parking queue into it: those of `moved`, those that arrived through
    /// the bindings meanwhile, and any an interrupted run left there.
    pub unparked: usize,
}

/// A queue [`Broker::delete_replica`] deleted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueDeleted {
    /// The queue.
    pub queue: String,
    /// Messages it held, deleted with it.
    pub messages: u32,
}

/// Connects a broker URL of one scheme: `(settings, url, connection name)`.
type Connect = fn(&Settings, &str, &str) -> Result<Box<dyn Broker>>;

/// One row per transport: the URL prefixes it answers to and how to connect it.
pub struct Scheme {
    /// URL prefixes (`amqp://`).
    pub prefixes: &'static [&'static str],
    /// What the broker is, for messages.
    pub name: &'static str,
    connect: Connect,
}

/// Every transport reachable by URL, in the order they are tried.
pub const SCHEMES: &[Scheme] = &[
    Scheme {
        prefixes: &["amqp://", "amqps://"],
        name: "RabbitMQ",
        connect: amqp::connect_broker,
    },
    Scheme {
        prefixes: &["nats://", "tls://"],
        name: "NATS JetStream",
        connect: nats::connect_broker,
    },
    Scheme {
        prefixes: &["sqlite:"],
        name: "a SQLite queue file",
        connect: local::connect_broker,
    },
];

/// The example URLs a usage error shows, from the scheme table.
fn examples() -> String {
    SCHEMES
        .iter()
        .map(|s| format!("{} ({})", s.prefixes.join(" or "), s.name))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Connect to the broker of `settings` (`role` names the connection: `<service>-<role>`); one attempt.
///
/// ```
/// use cqrs::Settings;
/// let settings = Settings { broker_url: Some("kafka://localhost".into()), ..Settings::default() };
/// let err = cqrs::transport::connect(&settings, "relay").err().unwrap();
/// assert!(err.to_string().contains("amqp://"), "{err}");
/// ```
pub fn connect(settings: &Settings, role: &str) -> Result<Box<dyn Broker>> {
    connect_until(settings, role, &Shutdown::new(), 1)
}

/// [`connect`] for a long-running service: a broker that is not up yet (started in the wrong
/// order, restarting) is waited for with the reconnect backoff, up to `attempts` tries or until
/// `shutdown`.
pub fn connect_until(
    settings: &Settings,
    role: &str,
    shutdown: &Shutdown,
    attempts: u32,
) -> Result<Box<dyn Broker>> {
    let url = settings.broker_url.as_deref().ok_or_else(|| {
        Error::config(format!(
            "{role} needs a broker: pass --broker-url or set CQRS_BROKER_URL (amqp://guest:guest@127.0.0.1:5672/%2f or sqlite:///path/queue.db)"
        ))
    })?;
    let scheme = SCHEMES
        .iter()
        .find(|s| s.prefixes.iter().any(|p| url.starts_with(p)))
        .ok_or_else(|| {
            Error::config(format!(
                "broker URL {:?} has an unknown scheme: expected {}",
                crate::db::redact(url),
                examples()
            ))
        })?;
    let name = format!("{}-{role}", settings.service_name);
    let mut backoff = Backoff::reconnect();
    let mut n = 0;
    loop {
        match (scheme.connect)(settings, url, &name) {
            Ok(b) => return Ok(b),
            Err(e) if e.is_transient() && n + 1 < attempts && !shutdown.is_triggered() => {
                tracing::warn!("{e}; retrying in {} ms", backoff.peek().as_millis());
                backoff.sleep(shutdown);
                n += 1;
            }
            Err(e) => return Err(e),
        }
    }
}
