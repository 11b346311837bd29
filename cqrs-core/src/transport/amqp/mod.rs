//! The RabbitMQ transport (lapin on tokio): django-cqrs topology plus our delayed-retry extension,
//! a relay [`Publisher`] with a window of publisher confirms, and a consumer [`Inbox`].
//!
//! One long-lived connection per process, one channel per worker or relay, never a connection per
//! message. The consumer engine is synchronous (a database thread per worker), so the lapin
//! consumer stream is pumped by a tokio task into a channel the worker reads, and acks and
//! publishes are driven with `block_on` on the transport's runtime.
//!
//! Here: the connection, the topology (django-cqrs's queues and bindings plus our delay levels)
//! and the publish-with-confirm primitive; [`publisher`](AmqpPublisher) for the relay,
//! [`inbox`](AmqpInbox) for the consumer, [`letters`](LetterPass) for `dead-letters`, each in its
//! own file.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lapin::Confirmation;
use lapin::options::{
    BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions,
    QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{BasicProperties, Channel, ConnectionProperties, ExchangeKind};

mod inbox;
mod letters;
mod migrate;
mod publisher;
mod remove;

pub use inbox::AmqpInbox;
pub use letters::LetterPass;
pub use migrate::parking_queue;
pub use publisher::AmqpPublisher;

use super::routing::{dead_letter_key, dead_letter_queue, directed_key};
use super::runtime::OwnRuntime;
use super::{Broker, Confirm, Headers, Inbox, Letters, Publisher, QueueDeleted, QueueMove};
use crate::config::{QueueType, Settings};
use crate::error::{Error, ErrorKind, Result};

/// Header carrying a retry copy's delay level (ms) to the headers exchange.
pub const HEADER_DELAY: &str = "cqrs-delay";

/// How long a connect may take before it counts as a transient failure.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest frame this client proposes, unless the URL sets `?frame_max=`. lapin keeps a
/// receive and a send buffer of 32 frames per connection, allocated and touched in full: with
/// RabbitMQ's 128 KiB default that is 8 MiB of every process's memory, for messages that are
/// rarely over a few KiB. Larger bodies are split into more frames, as AMQP does anyway.
pub const FRAME_MAX: u32 = 16 * 1024;

/// Where and how to connect.
#[derive(Debug, Clone)]
pub struct AmqpConfig {
    /// `amqp://user:pass@host:port/vhost?heartbeat=30`.
    pub url: String,
    /// Connection name shown by `rabbitmqctl list_connections name` (operators and tests find
    /// connections by it).
    pub connection_name: String,
    /// The topic exchange (`cqrs`).
    pub exchange: String,
    /// PEM certificates to trust for `amqps://` besides the public roots (a private CA).
    pub tls_ca_pem: Option<String>,
    /// The type of the replica queues this declares.
    pub queue_type: crate::config::QueueType,
}

fn transient(what: &str, e: impl std::fmt::Display) -> Error {
    Error::new(ErrorKind::Transient, format!("{what}: {e}"))
}

/// A broker operation the broker refused (not a lost connection).
fn refused(what: &str, e: lapin::Error) -> Error {
    Error::new(ErrorKind::Transport, format!("{what}: {e}"))
}

/// A refused binding or consume of a queue this process has just declared. 404 NOT_FOUND then
/// means the queue was deleted meanwhile: `cqrs queues migrate` moving it while a consumer
/// reconnects (the move cancelled its consumer). Transient: the next attempt declares again and
/// finds the moved queue. Any other refusal is [`refused`].
fn refused_unless_gone(what: &str, e: lapin::Error) -> Error {
    use lapin::protocol::{AMQPErrorKind, AMQPSoftError};
    let gone = matches!(e.kind(), lapin::ErrorKind::ProtocolError(p)
        if matches!(p.kind(), AMQPErrorKind::Soft(AMQPSoftError::NOTFOUND)));
    if gone {
        return transient(
            &format!("{what} (deleted meanwhile: moved by a migration?)"),
            e,
        );
    }
    refused(what, e)
}

/// The retry exchange of a replica queue: `cqrs_retry_<queue>` (headers, durable).
pub fn retry_exchange(queue: &str) -> String {
    format!("cqrs_retry_{queue}")
}

/// The delay queue of one level: `cqrs_retry_<queue>_<ms>`.
pub fn retry_queue(queue: &str, delay: Duration) -> String {
    format!("cqrs_retry_{queue}_{}", delay.as_millis())
}

/// A connection to RabbitMQ with its own small tokio runtime, shared by the process's workers.
/// Reconnects on demand: a channel asked for after the connection dropped opens a new connection.
pub struct AmqpTransport {
    runtime: Arc<OwnRuntime>,
    config: AmqpConfig,
    connection: Mutex<Option<Arc<lapin::Connection>>>,
    /// Which of the URLs to try first at the next (re)connect: the one after the last used, so
    /// reconnects go round a cluster's nodes.
    next_url: std::sync::atomic::AtomicUsize,
}

impl AmqpTransport {
    /// Connect (fails as [`ErrorKind::Transient`] if the broker is unreachable, as
    /// [`ErrorKind::Config`] for a URL that is not `amqp://` or `amqps://`).
    pub fn connect(config: AmqpConfig) -> Result<Arc<AmqpTransport>> {
        for url in urls(&config.url) {
            if !url.starts_with("amqp://") && !url.starts_with("amqps://") {
                return Err(Error::config(format!(
                    "broker URL {:?} is not amqp:// (or amqps://)",
                    crate::db::redact(url)
                )));
            }
        }
        let runtime = OwnRuntime::start("cqrs-amqp")?;
        let t = Arc::new(AmqpTransport {
            runtime: Arc::new(runtime),
            config,
            connection: Mutex::new(None),
            next_url: std::sync::atomic::AtomicUsize::new(0),
        });
        t.connection()?;
        Ok(t)
    }

    /// Run a future on the transport's runtime and wait for it: from a plain thread, or from
    /// inside the caller's own tokio runtime.
    pub fn block_on<F>(&self, f: F) -> F::Output
    where
        F: std::future::Future + Send,
        F::Output: Send,
    {
        self.runtime.block_on(f)
    }

    /// The live connection, reconnecting if the last one dropped.
    fn connection(&self) -> Result<Arc<lapin::Connection>> {
        let mut slot = self.connection.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = slot.as_ref()
            && c.status().connected()
        {
            return Ok(c.clone());
        }
        // Each URL in turn from the one after the last used; the first that answers wins.
        let urls = urls(&self.config.url);
        let first = self.next_url.load(std::sync::atomic::Ordering::Relaxed);
        let mut failed = Vec::new();
        for i in 0..urls.len() {
            let at = (first + i) % urls.len();
            match self.connect_to(urls[at]) {
                Ok(conn) => {
                    self.next_url
                        .store(at + 1, std::sync::atomic::Ordering::Relaxed);
                    let conn = Arc::new(conn);
                    *slot = Some(conn.clone());
                    return Ok(conn);
                }
                Err(e) if e.is_transient() && urls.len() > 1 => {
                    tracing::warn!("{e}; trying the next broker URL");
                    failed.push(e);
                }
                Err(e) => return Err(e),
            }
        }
        Err(failed.pop().expect("at least one URL"))
    }

    /// One connection attempt to `url`.
    fn connect_to(&self, url: &str) -> Result<lapin::Connection> {
        let props = ConnectionProperties::default()
            .with_connection_name(self.config.connection_name.clone().into());
        let mut uri: lapin::uri::AMQPUri = url.parse().map_err(|e: String| {
            Error::config(format!("broker URL {}: {e}", crate::db::redact(url)))
        })?;
        uri.query.frame_max.get_or_insert(FRAME_MAX);
        let tls = lapin::tcp::OwnedTLSConfig {
            identity: None,
            cert_chain: self.config.tls_ca_pem.clone(),
        };
        self.runtime
            .block_on(async move {
                let runtime = lapin::runtime::default_runtime()?;
                let connect = lapin::Connection::connect_uri_with_config(uri, props, tls, runtime);
                Ok::<_, lapin::Error>(tokio::time::timeout(CONNECT_TIMEOUT, connect).await)
            })
            .map_err(|e| transient("starting the AMQP runtime", e))?
            .map_err(|_| transient("connecting to RabbitMQ", "timed out"))?
            .map_err(|e| {
                transient(
                    &format!("connecting to RabbitMQ at {}", crate::db::redact(url)),
                    e,
                )
            })
    }

    /// Drop the connection a call gave up on: the next one connects anew (the socket may have
    /// died without lapin noticing).
    fn forget_connection(&self) {
        *self.connection.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    /// A new channel, in confirm mode if asked.
    pub fn channel(&self, confirms: bool) -> Result<Channel> {
        let conn = self.connection()?;
        let opened = self.runtime.block_on(async move {
            // A connection whose socket died a moment ago may still look open, and would leave
            // the channel's opening unanswered for ever.
            tokio::time::timeout(CONNECT_TIMEOUT, async move {
                let ch = conn
                    .create_channel()
                    .await
                    .map_err(|e| transient("opening a channel", e))?;
                if confirms {
                    ch.confirm_select(ConfirmSelectOptions::default())
                        .await
                        .map_err(|e| transient("confirm_select", e))?;
                }
                Ok(ch)
            })
            .await
        });
        match opened {
            Ok(result) => result,
            Err(_) => {
                self.forget_connection();
                Err(transient("opening a channel", "no answer from the broker"))
            }
        }
    }

    /// Declare the exchange (topic, durable), as both sides of django-cqrs do.
    pub fn declare_exchange(&self) -> Result<()> {
        let ch = self.channel(false)?;
        let exchange = self.config.exchange.clone();
        self.runtime.block_on(async move {
            declare_exchange(&ch, &exchange, ExchangeKind::Topic).await?;
            let _ = ch.close(200, "OK".into()).await;
            Ok(())
        })
    }

    /// Declare a replica's topology: django-cqrs's queue, dead-letter queue and bindings for
    /// `cqrs_ids`, plus our retry exchange and one delay queue per level (PROTOCOL.md). A queue
    /// that exists with the other type is a configuration error.
    pub fn declare_replica(
        &self,
        queue: &str,
        cqrs_ids: &[String],
        delays: &[Duration],
    ) -> Result<()> {
        self.declare_replica_as(queue, cqrs_ids, delays, Found::Refuse)
    }

    /// [`declare_replica`](Self::declare_replica) again, for a worker that lost its queue (a
    /// reconnect, a server-side cancel): a queue found with the other type is used as it is, with
    /// a warning. `cqrs queues migrate` leaves the queues so while workers run; the type asked
    /// for is enforced again when the process restarts.
    pub fn redeclare_replica(
        &self,
        queue: &str,
        cqrs_ids: &[String],
        delays: &[Duration],
    ) -> Result<()> {
        self.declare_replica_as(queue, cqrs_ids, delays, Found::Use)
    }

    fn declare_replica_as(
        &self,
        queue: &str,
        cqrs_ids: &[String],
        delays: &[Duration],
        found: Found,
    ) -> Result<()> {
        // Settings check this too; a queue given in code must not reach lapin's short strings.
        super::routing::check_queue_name(queue).map_err(Error::config)?;
        let mut ch = self.channel(false)?;
        let conn = self.connection()?;
        let (exchange, queue, ids) = (
            self.config.exchange.clone(),
            queue.to_string(),
            cqrs_ids.to_vec(),
        );
        let delays: BTreeSet<Duration> = delays.iter().copied().collect();
        let kind = self.config.queue_type;
        // The timer is made inside the runtime: tokio's timers need its context.
        let declared = self.runtime.block_on(async move {
            tokio::time::timeout(CONNECT_TIMEOUT, async move {
                let mut typed_ch = TypedChannel {
                    ch: &mut ch,
                    conn: &conn,
                    kind,
                    found,
                };
                declare_exchange(typed_ch.ch, &exchange, ExchangeKind::Topic).await?;
                let dlq = dead_letter_queue(&queue);
                for q in [&queue, &dlq] {
                    typed_ch.declare(q, typed(kind)).await?;
                }
                for id in &ids {
                    for (q, key) in [
                        (&queue, id.clone()),
                        (&queue, directed_key(&queue, id)),
                        (&dlq, dead_letter_key(&queue, id)),
                    ] {
                        bind(typed_ch.ch, q, &exchange, &key, FieldTable::default()).await?;
                    }
                }
                declare_exchange(typed_ch.ch, &retry_exchange(&queue), ExchangeKind::Headers)
                    .await?;
                for delay in delays {
                    declare_delay_level(&mut typed_ch, &exchange, &queue, delay).await?;
                }
                let _ = typed_ch.ch.close(200, "OK".into()).await;
                Ok(())
            })
            .await
        });
        declared.unwrap_or_else(|_| {
            self.forget_connection();
            Err(transient(
                "declaring the replica's queues",
                "no answer from the broker",
            ))
        })
    }
}

/// What declaring a queue that exists with the other type does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Found {
    /// A configuration error (at start: the settings are wrong, or the queue must be migrated).
    Refuse,
    /// Use the queue as it is, with a warning.
    Use,
}

/// A channel declaring queues of one type, and what to do with a queue of the other.
pub(crate) struct TypedChannel<'a> {
    /// The channel; replaced by a fresh one when the broker closed it over a mismatch.
    pub(crate) ch: &'a mut Channel,
    pub(crate) conn: &'a lapin::Connection,
    pub(crate) kind: QueueType,
    pub(crate) found: Found,
}

impl TypedChannel<'_> {
    /// Declare durable queue `name` with `args` (which carry the type).
    async fn declare(&mut self, name: &str, args: FieldTable) -> Result<()> {
        let e = match self
            .ch
            .queue_declare(name.into(), QueueDeclareOptions::durable(), args)
            .await
        {
            Ok(_) => return Ok(()),
            Err(e) => e,
        };
        let err = declare_failed(name, self.kind, e);
        if err.kind() != ErrorKind::Config || self.found == Found::Refuse {
            return Err(err);
        }
        // The 406 closed the channel; the queue is there, whatever its type.
        *self.ch = self
            .conn
            .create_channel()
            .await
            .map_err(|e| transient("opening a channel", e))?;
        self.ch
            .queue_declare(
                name.into(),
                QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .map_err(|e| transient(&format!("declaring queue {name}"), e))?;
        tracing::warn!("{err}; using it as it is until this process restarts");
        Ok(())
    }
}

/// The URLs of a broker URL setting: one, or several separated by commas (a cluster's nodes,
/// each with its own credentials and TLS).
fn urls(setting: &str) -> Vec<&str> {
    setting
        .split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .collect()
}

/// The arguments that make a queue of `kind` (none for classic: what django-cqrs declares).
fn typed(kind: QueueType) -> FieldTable {
    let mut args = FieldTable::default();
    if kind == QueueType::Quorum {
        args.insert(
            "x-queue-type".into(),
            AMQPValue::LongString(kind.as_str().into()),
        );
    }
    args
}

/// A failed queue declaration. RabbitMQ refuses (406 PRECONDITION_FAILED) a queue that exists
/// with other arguments; for its type that is a configuration error, said in one line.
fn declare_failed(queue: &str, asked: QueueType, e: lapin::Error) -> Error {
    let text = e.to_string();
    // The broker names the first argument that differs: for a delay queue that can be one only
    // quorum queues carry, before the type itself.
    let type_arg = ["x-queue-type", "x-overflow", "x-dead-letter-strategy"]
        .iter()
        .any(|arg| text.contains(&format!("inequivalent arg '{arg}'")));
    if text.contains("PRECONDITION_FAILED") && type_arg {
        let have = if asked == QueueType::Quorum {
            QueueType::Classic
        } else {
            QueueType::Quorum
        };
        return Error::config(format!(
            "queue {queue} exists as a {have} queue but queue_type is {asked}: set queue_type = \"{have}\" (--queue-type, CQRS_QUEUE_TYPE), or move it first: cqrs queues migrate --to {asked}"
        ));
    }
    Error::new(
        ErrorKind::Transport,
        format!("declaring queue {queue}: {text}"),
    )
}

async fn declare_exchange(ch: &Channel, name: &str, kind: ExchangeKind) -> Result<()> {
    let opts = ExchangeDeclareOptions {
        durable: true,
        ..Default::default()
    };
    ch.exchange_declare(name.into(), kind, opts, FieldTable::default())
        .await
        .map_err(|e| {
            Error::new(
                ErrorKind::Transport,
                format!("declaring exchange {name}: {e}"),
            )
        })
}

async fn bind(
    ch: &Channel,
    queue: &str,
    exchange: &str,
    key: &str,
    args: FieldTable,
) -> Result<()> {
    ch.queue_bind(
        queue.into(),
        exchange.into(),
        key.into(),
        QueueBindOptions::default(),
        args,
    )
    .await
    .map_err(|e| refused_unless_gone(&format!("binding {queue} to {exchange} with {key:?}"), e))
}

/// One delay level: a queue whose messages expire after `delay` into the main exchange (keeping
/// their routing key), bound to the retry exchange on header `cqrs-delay` = ms.
async fn declare_delay_level(
    ch: &mut TypedChannel<'_>,
    exchange: &str,
    queue: &str,
    delay: Duration,
) -> Result<()> {
    let name = retry_queue(queue, delay);
    ch.declare(&name, delay_args(exchange, delay, ch.kind))
        .await?;
    bind(
        ch.ch,
        &name,
        &retry_exchange(queue),
        "",
        delay_binding(delay),
    )
    .await
}

/// The arguments of a delay queue of `kind`: its TTL and where it dead-letters to.
fn delay_args(exchange: &str, delay: Duration, kind: QueueType) -> FieldTable {
    let mut args = typed(kind);
    args.insert(
        "x-message-ttl".into(),
        AMQPValue::LongLongInt(delay.as_millis() as i64),
    );
    args.insert(
        "x-dead-letter-exchange".into(),
        AMQPValue::LongString(exchange.into()),
    );
    if kind == QueueType::Quorum {
        // A quorum queue dead-letters at most once unless told otherwise: a retry leaving its
        // delay queue while a node fails would be lost. At least once needs reject-publish.
        args.insert(
            "x-dead-letter-strategy".into(),
            AMQPValue::LongString("at-least-once".into()),
        );
        args.insert(
            "x-overflow".into(),
            AMQPValue::LongString("reject-publish".into()),
        );
    }
    args
}

/// The binding of a delay queue to the retry exchange: header `cqrs-delay` = ms.
fn delay_binding(delay: Duration) -> FieldTable {
    let mut bind_args = FieldTable::default();
    bind_args.insert("x-match".into(), AMQPValue::LongString("all".into()));
    bind_args.insert(
        HEADER_DELAY.into(),
        AMQPValue::LongString(delay.as_millis().to_string().into()),
    );
    bind_args
}

fn properties(headers: &Headers, message_id: Option<&str>) -> BasicProperties {
    let mut table = FieldTable::default();
    for (k, v) in headers {
        table.insert(
            ShortString::from(k.as_str()),
            AMQPValue::LongString(v.as_str().into()),
        );
    }
    // As django-cqrs: text/plain, persistent.
    let mut p = BasicProperties::default()
        .with_content_type("text/plain".into())
        .with_delivery_mode(2)
        .with_headers(table);
    if let Some(id) = message_id {
        p = p.with_message_id(id.into());
    }
    p
}

fn headers_of(p: &BasicProperties) -> Headers {
    let mut out = Headers::new();
    if let Some(table) = p.headers() {
        for (k, v) in table.inner() {
            let value = match v {
                AMQPValue::LongString(s) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
                AMQPValue::ShortString(s) => s.to_string(),
                AMQPValue::Boolean(b) => b.to_string(),
                AMQPValue::LongInt(i) => i.to_string(),
                AMQPValue::LongLongInt(i) => i.to_string(),
                AMQPValue::ShortInt(i) => i.to_string(),
                _ => continue, // x-death and other tables: not ours
            };
            out.insert(k.to_string(), value);
        }
    }
    out
}

/// The longest routing key AMQP carries (a short string).
const MAX_ROUTING_KEY: usize = 255;

/// Publish one message and wait for its confirm.
async fn publish_confirmed(
    ch: &Channel,
    exchange: &str,
    key: &str,
    body: &[u8],
    props: BasicProperties,
) -> Result<Confirm> {
    if key.len() > MAX_ROUTING_KEY {
        // No binding can match it (AMQP short strings end at 255 bytes), and lapin would panic
        // converting it: the message is unroutable, like one nobody is bound for.
        return Ok(Confirm::Unroutable);
    }
    let confirm = ch
        .basic_publish(
            exchange.into(),
            key.into(),
            BasicPublishOptions {
                mandatory: true,
                ..Default::default()
            },
            body,
            props,
        )
        .await
        .map_err(|e| transient("publishing", e))?;
    Ok(to_confirm(confirm.await))
}

fn to_confirm(c: lapin::Result<Confirmation>) -> Confirm {
    match c {
        Ok(Confirmation::Ack(None)) => Confirm::Delivered,
        Ok(Confirmation::Ack(Some(_))) => Confirm::Unroutable,
        Ok(Confirmation::Nack(_)) => Confirm::Failed("nacked by the broker".into()),
        Ok(Confirmation::NotRequested) => Confirm::Failed("channel not in confirm mode".into()),
        Err(e) => Confirm::Failed(format!("no confirm: {e}")),
    }
}

impl AmqpTransport {
    /// Empty `queue` at once (`queue.purge`); returns how many messages were removed.
    pub fn purge(&self, queue: &str) -> Result<usize> {
        let ch = self.channel(false)?;
        let name = queue.to_string();
        self.runtime
            .block_on(async move {
                let n = ch
                    .queue_purge(
                        name.as_str().into(),
                        lapin::options::QueuePurgeOptions::default(),
                    )
                    .await;
                let _ = ch.close(200, "OK".into()).await;
                n
            })
            .map(|n| n as usize)
            .map_err(|e| Error::new(ErrorKind::Transport, format!("purging {queue}: {e}")))
    }
}

/// [`Broker`] over a shared [`AmqpTransport`].
struct AmqpBroker(Arc<AmqpTransport>);

/// The `amqp://` / `amqps://` row of the scheme table.
pub(crate) fn connect_broker(
    settings: &Settings,
    url: &str,
    name: &str,
) -> Result<Box<dyn Broker>> {
    let config = AmqpConfig {
        url: url.to_string(),
        connection_name: name.to_string(),
        exchange: settings.exchange.clone(),
        tls_ca_pem: match &settings.tls_ca_file {
            Some(path) => Some(std::fs::read_to_string(path).map_err(|e| {
                Error::config(format!("cannot read --tls-ca-file {}: {e}", path.display()))
            })?),
            None => None,
        },
        queue_type: settings.queue_type,
    };
    Ok(Box::new(AmqpBroker(AmqpTransport::connect(config)?)))
}

impl Broker for AmqpBroker {
    fn declare_replica(&self, queue: &str, cqrs_ids: &[String], delays: &[Duration]) -> Result<()> {
        self.0.declare_replica(queue, cqrs_ids, delays)
    }

    fn redeclare_replica(
        &self,
        queue: &str,
        cqrs_ids: &[String],
        delays: &[Duration],
    ) -> Result<()> {
        self.0.redeclare_replica(queue, cqrs_ids, delays)
    }

    fn migrate_replica(
        &self,
        queue: &str,
        cqrs_ids: &[String],
        delays: &[Duration],
        to: QueueType,
    ) -> Result<Vec<QueueMove>> {
        self.0.migrate_replica(queue, cqrs_ids, delays, to)
    }

    fn delete_replica(
        &self,
        queue: &str,
        delays: &[Duration],
        force: bool,
    ) -> Result<Vec<QueueDeleted>> {
        self.0.delete_replica(queue, delays, force)
    }

    fn inbox(&self, queue: &str, prefetch: u16, delays: &[Duration]) -> Result<Box<dyn Inbox>> {
        Ok(Box::new(self.0.inbox(queue, prefetch, delays)?))
    }

    fn publisher(&self) -> Result<Box<dyn Publisher>> {
        self.0.declare_exchange()?;
        Ok(Box::new(self.0.publisher()?))
    }

    fn letters(&self, queue: &str) -> Result<Box<dyn Letters>> {
        Ok(Box::new(self.0.letters(queue)?))
    }

    fn purge(&self, queue: &str) -> Result<usize> {
        self.0.purge(queue)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lapin::protocol::{AMQPError, AMQPErrorKind, AMQPSoftError};

    fn refusal(kind: AMQPSoftError, text: &str) -> lapin::Error {
        lapin::ErrorKind::ProtocolError(AMQPError::new(AMQPErrorKind::Soft(kind), text.into()))
            .into()
    }

    /// A queue that vanished between its declaration and its binding or consume (a migration
    /// moving it) is retried; any other refusal is not.
    #[test]
    fn a_queue_deleted_meanwhile_is_transient() {
        let gone = refused_unless_gone(
            "binding q",
            refusal(
                AMQPSoftError::NOTFOUND,
                "NOT_FOUND - no queue 'q' in vhost '/'",
            ),
        );
        assert!(gone.is_transient(), "{gone}");
        let refused = refused_unless_gone(
            "binding q",
            refusal(
                AMQPSoftError::ACCESSREFUSED,
                "ACCESS_REFUSED - no write access",
            ),
        );
        assert_eq!(refused.kind(), ErrorKind::Transport, "{refused}");
    }
}
