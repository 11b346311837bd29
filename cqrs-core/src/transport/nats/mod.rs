//! The NATS JetStream transport (async-nats): the exchange as a stream, each replica queue as a
//! durable pull consumer, retries delayed by the server, dead letters on a stream of their own.
//!
//! Names (exchange `cqrs`, queue `billing`, model `item`; ARCHITECTURE.md §4):
//! - stream `cqrs`, subjects `cqrs.>`, interest retention: a message stays until every replica
//!   whose consumer takes its subject has acked it, as a RabbitMQ message stays in each bound queue;
//! - broadcast `cqrs.b.item` (AMQP routing key `item`), directed `cqrs.d.billing.item` (AMQP
//!   `cqrs.billing.item`);
//! - consumer `billing` on `cqrs`, filter subjects `cqrs.b.<id>` and `cqrs.d.billing.<id>` per
//!   model (several filter subjects need server 2.10; [`NatsTransport::connect`] checks);
//! - stream `cqrs_dead_letters`, subjects `cqrs_dead_letters.>`, limits retention with the
//!   dead-letter TTL as its age: `billing`'s letters on `cqrs_dead_letters.billing.<id>`.
//!
//! The outbox row's id travels as `Nats-Msg-Id`, so a relay's re-publish after a crash is dropped
//! by the server inside the stream's duplicate window (2 minutes). Names are subject tokens: a
//! queue, exchange or cqrs_id with `.`, `*`, `>` or white space is a usage error.
//!
//! Here: the connection, names and topology; [`publisher`](NatsPublisher) for the relay,
//! [`inbox`](NatsInbox) for the consumer, [`letters`](NatsLetters) for `dead-letters`.

use std::sync::Arc;
use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::consumer::IntoConsumerConfig;
use async_nats::jetstream::{self, consumer, stream};

mod inbox;
mod letters;
mod publisher;

pub use inbox::NatsInbox;
pub use letters::NatsLetters;
pub use publisher::NatsPublisher;

use super::routing::{dead_letter_key, dead_letter_queue, directed_key};
use super::runtime::OwnRuntime;
use super::{Broker, Headers, Inbox, Letters, Publisher, QueueDeleted};
use crate::config::Settings;
use crate::error::{Error, ErrorKind, Result};

/// Header: the id of the message a copy (retry, dead letter, replay) was made from; a copy's own
/// `Nats-Msg-Id` differs, or the server would drop it as a duplicate of the original.
pub const HEADER_MESSAGE_ID: &str = "cqrs-message-id";
/// Header: a retry copy is not to be applied before this time (Unix milliseconds); a consumer that
/// gets it sooner gives it back with a `NAK` delayed until then.
pub const HEADER_RETRY_AT: &str = "cqrs-retry-at";

/// How long a connect may take before it counts as a transient failure.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the server waits for an ack before it delivers again; held batches are kept alive
/// with progress acks well inside it.
const ACK_WAIT: Duration = Duration::from_secs(30);
/// Deliveries a replica's consumer lets out unacked, over all its workers.
const MAX_ACK_PENDING: i64 = 20_000;
/// The oldest server with consumers of several filter subjects (one replica queue = one consumer).
const MIN_SERVER: (u64, u64) = (2, 10);

/// Where and how to connect.
#[derive(Debug, Clone)]
pub struct NatsConfig {
    /// `nats://host:4222` or `tls://host:4222`; several, comma-separated, for a cluster. The first
    /// URL's `?stream_replicas=N` sets the replicas of the streams this declares (default 1).
    pub url: String,
    /// Connection name the server shows (`cqrs-relay`, `cqrs-consumer`).
    pub connection_name: String,
    /// The exchange: the stream's name and its subjects' first token.
    pub exchange: String,
    /// A PEM file of certificates to trust besides the public roots (a private CA).
    pub tls_ca_file: Option<std::path::PathBuf>,
    /// Age of a dead letter when it is dropped (the dead-letter stream's `max_age`).
    pub dead_letter_ttl: Duration,
}

/// The subjects and streams of one exchange.
#[derive(Debug, Clone)]
pub struct Names {
    exchange: String,
}

impl Names {
    /// The stream of `exchange` (checked as a subject token).
    pub fn new(exchange: &str) -> Result<Names> {
        check_token("exchange", exchange)?;
        Ok(Names {
            exchange: exchange.to_string(),
        })
    }

    /// The stream messages are published to.
    pub fn stream(&self) -> &str {
        &self.exchange
    }

    /// The stream of dead letters.
    pub fn dead_stream(&self) -> String {
        format!("{}_dead_letters", self.exchange)
    }

    /// Broadcast subject of a model.
    pub fn broadcast(&self, cqrs_id: &str) -> String {
        format!("{}.b.{cqrs_id}", self.exchange)
    }

    /// Subject of a message directed to `queue` (a directed SYNC, a retry copy).
    pub fn directed(&self, queue: &str, cqrs_id: &str) -> String {
        format!("{}.d.{queue}.{cqrs_id}", self.exchange)
    }

    /// Subject of `queue`'s dead letters of a model (`_` when the body did not name a valid one).
    pub fn dead(&self, queue: &str, cqrs_id: Option<&str>) -> String {
        let id = cqrs_id.filter(|id| check_token("cqrs_id", id).is_ok());
        format!("{}.{queue}.{}", self.dead_stream(), id.unwrap_or("_"))
    }

    /// Every dead letter of `queue`.
    pub fn dead_all(&self, queue: &str) -> String {
        format!("{}.{queue}.>", self.dead_stream())
    }

    /// The filter subjects of `queue`'s consumer: each model's broadcasts and what is directed to
    /// the queue for it (as RabbitMQ binds `<cqrs_id>` and `cqrs.<queue>.<cqrs_id>`), so a message
    /// directed to the queue for a model it does not take reaches nobody there either.
    pub fn filters(&self, queue: &str, cqrs_ids: &[String]) -> Vec<String> {
        cqrs_ids
            .iter()
            .flat_map(|id| [self.broadcast(id), self.directed(queue, id)])
            .collect()
    }

    /// The subject of an AMQP routing key (`<cqrs_id>` or `cqrs.<queue>.<cqrs_id>`); `None` when a
    /// part is not a subject token (nothing can be subscribed to it).
    pub fn subject_of(&self, routing_key: &str) -> Option<String> {
        match routing_key.strip_prefix("cqrs.") {
            Some(rest) => {
                let (queue, id) = rest.split_once('.')?;
                (check_token("queue", queue).is_ok() && check_token("cqrs_id", id).is_ok())
                    .then(|| self.directed(queue, id))
            }
            None => check_token("cqrs_id", routing_key)
                .is_ok()
                .then(|| self.broadcast(routing_key)),
        }
    }

    /// The AMQP routing key of a subject, as the consumer engine and `dead-letters` read them.
    pub fn routing_key_of(&self, subject: &str) -> String {
        let dead = self.dead_stream();
        let tokens: Vec<&str> = subject.split('.').collect();
        match tokens.as_slice() {
            [ex, "b", id] if *ex == self.exchange => id.to_string(),
            [ex, "d", queue, id] if *ex == self.exchange => directed_key(queue, id),
            [ex, queue, id] if *ex == dead => dead_letter_key(queue, id),
            _ => subject.to_string(),
        }
    }
}

/// Why `value` cannot be a subject token (and so a queue, exchange or model name on NATS).
///
/// ```
/// use cqrs::transport::nats::check_token;
/// assert!(check_token("queue", "billing").is_ok());
/// assert!(check_token("queue", "billing.items").is_err());
/// ```
pub fn check_token(what: &str, value: &str) -> Result<()> {
    let bad = value
        .chars()
        .find(|c| matches!(c, '.' | '*' | '>' | '/' | '\\') || c.is_whitespace() || c.is_control());
    if value.is_empty() || bad.is_some() {
        return Err(Error::config(format!(
            "{what} {value:?} cannot be used with NATS: names must be non-empty subject tokens \
             (no '.', '*', '>', '/', '\\' or white space)"
        )));
    }
    Ok(())
}

fn transient(what: &str, e: impl std::fmt::Display) -> Error {
    Error::new(ErrorKind::Transient, format!("{what}: {e}"))
}

/// A request the server answered with a refusal (not a lost connection).
fn refused(what: &str, e: impl std::fmt::Display) -> Error {
    Error::new(ErrorKind::Transport, format!("{what}: {e}"))
}

/// A connection to a NATS server (or cluster) with JetStream, shared by the process's workers;
/// async-nats reconnects it in the background.
pub struct NatsTransport {
    runtime: Arc<OwnRuntime>,
    client: async_nats::Client,
    js: jetstream::Context,
    names: Names,
    replicas: usize,
    dead_letter_ttl: Duration,
    /// Counts the connection's drops: a batch waiting for acks stops waiting when it changes
    /// (what was written on a dead connection will not be acked).
    disconnects: tokio::sync::watch::Receiver<u64>,
    interest: Interest,
}

/// The filter subjects of the stream's consumers as last read. An interest stream stores a
/// message no consumer takes and drops it at once, acking it all the same: the relay asks here
/// first, so such a message is unroutable (dropped as django-cqrs drops it, or kept with
/// `keep_unroutable`), as on RabbitMQ.
#[derive(Default)]
struct Interest(std::sync::Mutex<Option<(std::time::Instant, Vec<String>)>>);

/// How old the filters read may be before a subject they do not take makes them read again.
const INTEREST_FRESH: Duration = Duration::from_millis(100);

impl Interest {
    fn forget(&self) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    /// Keep `filters` as just read; whether one takes `subject`.
    fn store(&self, filters: Vec<String>, subject: &str) -> bool {
        let yes = filters.iter().any(|f| subject_matches(f, subject));
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) =
            Some((std::time::Instant::now(), filters));
        yes
    }

    /// `Some(true)` if a filter read takes `subject`, `Some(false)` if none does and the read is
    /// fresh, `None` when it must be read again.
    fn takes(&self, subject: &str) -> Option<bool> {
        let cached = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let (at, filters) = cached.as_ref()?;
        if filters.iter().any(|f| subject_matches(f, subject)) {
            Some(true)
        } else {
            (at.elapsed() < INTEREST_FRESH).then_some(false)
        }
    }
}

/// Whether NATS subject filter `pattern` (`*` one token, `>` the rest) takes `subject`.
fn subject_matches(pattern: &str, subject: &str) -> bool {
    let (mut p, mut s) = (pattern.split('.'), subject.split('.'));
    loop {
        match (p.next(), s.next()) {
            (Some(">"), Some(_)) => return true,
            (Some("*"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

impl NatsTransport {
    /// Connect (fails as [`ErrorKind::Transient`] if no server answers, as [`ErrorKind::Config`]
    /// for a server older than 2.10 or without JetStream).
    pub fn connect(config: NatsConfig) -> Result<Arc<NatsTransport>> {
        let names = Names::new(&config.exchange)?;
        let (urls, replicas) = parse_urls(&config.url)?;
        let runtime = OwnRuntime::start("cqrs-nats")?;
        let (dropped, disconnects) = tokio::sync::watch::channel(0u64);
        let mut options = async_nats::ConnectOptions::new()
            .name(&config.connection_name)
            .connection_timeout(CONNECT_TIMEOUT)
            .event_callback(move |event| {
                if matches!(event, async_nats::Event::Disconnected) {
                    tracing::warn!("NATS: the connection dropped; reconnecting");
                    dropped.send_modify(|n| *n += 1);
                }
                std::future::ready(())
            });
        if let Some(ca) = &config.tls_ca_file {
            options = options.add_root_certificates(ca.clone());
        }
        let shown = crate::db::redact(&config.url);
        let client = runtime.block_on(async move {
            let addrs: Vec<async_nats::ServerAddr> = urls
                .iter()
                .map(|u| u.parse())
                .collect::<std::io::Result<_>>()
                .map_err(|e| Error::config(format!("broker URL {shown}: {e}")))?;
            tokio::time::timeout(CONNECT_TIMEOUT, options.connect(addrs))
                .await
                .map_err(|_| transient(&format!("connecting to NATS at {shown}"), "timed out"))?
                .map_err(|e| transient(&format!("connecting to NATS at {shown}"), e))
        })?;
        let info = client.server_info();
        if version_of(&info.version) < MIN_SERVER {
            return Err(Error::config(format!(
                "NATS server {} at {}: cqrs needs {}.{} or later (one consumer with several filter subjects per replica queue)",
                info.version,
                crate::db::redact(&config.url),
                MIN_SERVER.0,
                MIN_SERVER.1
            )));
        }
        // The context spawns its ack-tracking task: it must be made on the runtime.
        let js = runtime.block_on(async { jetstream::new(client.clone()) });
        let t = Arc::new(NatsTransport {
            runtime: Arc::new(runtime),
            client,
            js,
            names,
            replicas,
            dead_letter_ttl: config.dead_letter_ttl,
            disconnects,
            interest: Interest::default(),
        });
        t.runtime.block_on(t.account())?;
        Ok(t)
    }

    /// The names of this transport's exchange.
    pub fn names(&self) -> &Names {
        &self.names
    }

    /// Run a future on the transport's runtime and wait for it, from a plain thread or from inside
    /// the caller's own tokio runtime.
    pub fn block_on<F>(&self, f: F) -> F::Output
    where
        F: std::future::Future + Send,
        F::Output: Send,
    {
        self.runtime.block_on(f)
    }

    /// The JetStream context (tests inspect streams and consumers through it).
    pub fn jetstream(&self) -> &jetstream::Context {
        &self.js
    }

    /// JetStream must be enabled for this account: said once, at connect, not at the first publish.
    async fn account(&self) -> Result<()> {
        self.js.query_account().await.map(|_| ()).map_err(|e| {
            Error::config(format!(
                "NATS server {} has no JetStream for this account (start it with -js): {e}",
                self.client.server_info().version
            ))
        })
    }

    /// The message stream and the dead-letter stream, created if missing (an existing one is used
    /// as it is: its replicas and limits are the operator's).
    async fn ensure_streams(&self) -> Result<(stream::Stream, stream::Stream)> {
        let main = stream::Config {
            name: self.names.stream().to_string(),
            subjects: vec![format!("{}.>", self.names.stream())],
            retention: stream::RetentionPolicy::Interest,
            storage: stream::StorageType::File,
            num_replicas: self.replicas,
            ..Default::default()
        };
        let dead = stream::Config {
            name: self.names.dead_stream(),
            subjects: vec![format!("{}.>", self.names.dead_stream())],
            retention: stream::RetentionPolicy::Limits,
            storage: stream::StorageType::File,
            num_replicas: self.replicas,
            max_age: self.dead_letter_ttl,
            ..Default::default()
        };
        let main = self
            .js
            .get_or_create_stream(main)
            .await
            .map_err(|e| refused(&format!("declaring stream {}", self.names.stream()), e))?;
        let dead =
            self.js.get_or_create_stream(dead).await.map_err(|e| {
                refused(&format!("declaring stream {}", self.names.dead_stream()), e)
            })?;
        Ok((main, dead))
    }

    /// A new consumer for `queue`: like a new RabbitMQ queue, it takes what is published from now
    /// on, not what the stream still keeps for other replicas.
    fn consumer_config(&self, queue: &str, filters: Vec<String>) -> consumer::pull::Config {
        consumer::pull::Config {
            durable_name: Some(queue.to_string()),
            filter_subjects: filters,
            ack_policy: consumer::AckPolicy::Explicit,
            ack_wait: ACK_WAIT,
            max_ack_pending: MAX_ACK_PENDING,
            deliver_policy: consumer::DeliverPolicy::New,
            ..Default::default()
        }
    }

    /// The streams, and `queue`'s consumer taking `cqrs_ids`' broadcasts and what is directed to
    /// it for them. Declared again, filters are only added, as RabbitMQ bindings are: a worker of
    /// an older deploy that reconnects must not take a model away from the newer ones.
    pub fn declare_replica(&self, queue: &str, cqrs_ids: &[String]) -> Result<()> {
        check_token("queue", queue)?;
        for id in cqrs_ids {
            check_token("cqrs_id", id)?;
        }
        let wanted = self.names.filters(queue, cqrs_ids);
        self.block_on(async {
            let (main, _) = self.ensure_streams().await?;
            let config = match self.consumer_info(queue).await? {
                Some(info) => {
                    let mut config = info.config.clone();
                    let missing: Vec<String> = wanted
                        .into_iter()
                        .filter(|f| {
                            !config.filter_subjects.contains(f) && config.filter_subject != *f
                        })
                        .collect();
                    if missing.is_empty() {
                        return Ok(());
                    }
                    if !config.filter_subject.is_empty() {
                        let one = std::mem::take(&mut config.filter_subject);
                        config.filter_subjects.insert(0, one);
                    }
                    config.filter_subjects.extend(missing);
                    config
                }
                None => self.consumer_config(queue, wanted).into_consumer_config(),
            };
            main.create_consumer(config)
                .await
                .map(|_| ())
                .map_err(|e| refused(&format!("declaring consumer {queue}"), e))?;
            self.interest.forget();
            Ok(())
        })
    }

    /// The message stream, `None` while nobody has declared it.
    async fn main_stream(&self) -> Result<Option<stream::Stream>> {
        match self.js.get_stream(self.names.stream()).await {
            Ok(s) => Ok(Some(s)),
            Err(e)
                if matches!(e.kind(), jetstream::context::GetStreamErrorKind::JetStream(j)
                    if j.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND) =>
            {
                Ok(None)
            }
            Err(e) => Err(transient("reading the stream", e)),
        }
    }

    /// Whether some consumer of the stream takes `subject` (see [`Interest`]).
    pub(crate) async fn taken(&self, subject: &str) -> Result<bool> {
        if let Some(yes) = self.interest.takes(subject) {
            return Ok(yes);
        }
        let mut filters = Vec::new();
        if let Some(main) = self.main_stream().await? {
            use futures_lite::StreamExt;
            let mut consumers = main.consumers();
            while let Some(c) = consumers.next().await {
                let c = c.map_err(|e| transient("listing consumers", e))?;
                let f = &c.config;
                if f.filter_subject.is_empty() && f.filter_subjects.is_empty() {
                    filters.push(">".to_string());
                }
                filters.extend(f.filter_subjects.iter().cloned());
                if !f.filter_subject.is_empty() {
                    filters.push(f.filter_subject.clone());
                }
            }
        }
        Ok(self.interest.store(filters, subject))
    }

    /// `queue`'s consumer, `None` if nobody declared it.
    async fn consumer_info(&self, queue: &str) -> Result<Option<consumer::Info>> {
        let Some(main) = self.main_stream().await? else {
            return Ok(None);
        };
        match main.consumer_info(queue).await {
            Ok(info) => Ok(Some(info)),
            Err(e)
                if matches!(
                    e.kind(),
                    jetstream::context::ConsumerInfoErrorKind::NotFound
                ) || matches!(e.kind(), jetstream::context::ConsumerInfoErrorKind::JetStream(j)
                    if j.error_code() == jetstream::ErrorCode::CONSUMER_NOT_FOUND) =>
            {
                Ok(None)
            }
            Err(e) => Err(transient(&format!("reading consumer {queue}"), e)),
        }
    }

    /// Messages waiting for `queue` (delivered and unacked ones included).
    fn waiting(info: &consumer::Info) -> usize {
        info.num_pending as usize + info.num_ack_pending
    }

    /// Drop every message waiting for `queue`: its consumer is deleted and declared again with the
    /// same filters (messages no other consumer wants leave the stream with it).
    pub fn purge(&self, queue: &str) -> Result<usize> {
        if let Some(of) = queue.strip_prefix("dead_letter_") {
            return self.purge_dead(of);
        }
        check_token("queue", queue)?;
        self.block_on(async {
            let Some(info) = self.consumer_info(queue).await? else {
                return Ok(0);
            };
            let mut main = self
                .js
                .get_stream(self.names.stream())
                .await
                .map_err(|e| transient("reading the stream", e))?;
            let next = main
                .info()
                .await
                .map_err(|e| transient("reading the stream", e))?
                .state
                .last_sequence
                + 1;
            main.delete_consumer(queue)
                .await
                .map_err(|e| refused(&format!("purging {queue}"), e))?;
            // Again from the stream's next message: not from its first, which would bring back
            // what it keeps for other replicas.
            let mut config = info.config.clone();
            config.deliver_policy = consumer::DeliverPolicy::ByStartSequence {
                start_sequence: next,
            };
            main.create_consumer(config)
                .await
                .map_err(|e| refused(&format!("declaring consumer {queue}"), e))?;
            Ok(Self::waiting(&info))
        })
    }

    /// Drop `queue`'s dead letters; returns how many.
    pub fn purge_dead(&self, queue: &str) -> Result<usize> {
        check_token("queue", queue)?;
        let filter = self.names.dead_all(queue);
        self.block_on(async {
            let (_, dead) = self.ensure_streams().await?;
            dead.purge()
                .filter(filter)
                .await
                .map(|r| r.purged as usize)
                .map_err(|e| refused(&format!("purging the dead letters of {queue}"), e))
        })
    }

    /// Delete a retired replica's consumer and dead letters; refused while either holds messages,
    /// unless `force`.
    pub fn delete_replica(&self, queue: &str, force: bool) -> Result<Vec<QueueDeleted>> {
        check_token("queue", queue)?;
        let filter = self.names.dead_all(queue);
        self.block_on(async {
            let (main, dead) = self.ensure_streams().await?;
            let waiting = self.consumer_info(queue).await?.map(|i| Self::waiting(&i));
            let letters = count_subject(&dead, &filter).await?;
            let held = waiting.unwrap_or(0) + letters;
            if held > 0 && !force {
                return Err(Error::config(format!(
                    "replica {queue} still holds {} message(s) and {letters} dead letter(s); pass --force to delete them too",
                    waiting.unwrap_or(0)
                )));
            }
            let mut out = Vec::new();
            if let Some(n) = waiting {
                main.delete_consumer(queue)
                    .await
                    .map_err(|e| refused(&format!("deleting consumer {queue}"), e))?;
                out.push(QueueDeleted { queue: queue.to_string(), messages: n as u32 });
            }
            dead.purge()
                .filter(filter)
                .await
                .map_err(|e| refused(&format!("deleting the dead letters of {queue}"), e))?;
            out.push(QueueDeleted { queue: dead_letter_queue(queue), messages: letters as u32 });
            Ok(out)
        })
    }
}

/// Messages of `stream` on subjects matching `filter`.
async fn count_subject(stream: &stream::Stream, filter: &str) -> Result<usize> {
    use futures_lite::StreamExt;
    let mut subjects = stream
        .info_with_subjects(filter)
        .await
        .map_err(|e| transient("counting messages", e))?;
    let mut n = 0;
    while let Some(s) = subjects.next().await {
        n += s.map_err(|e| transient("counting messages", e))?.1;
    }
    Ok(n)
}

/// `major.minor` of a server version (`2.10.22` → (2, 10)); (0, 0) when it does not parse.
fn version_of(v: &str) -> (u64, u64) {
    let mut parts = v
        .trim_start_matches('v')
        .split('.')
        .map(|p| p.parse().unwrap_or(0));
    (parts.next().unwrap_or(0), parts.next().unwrap_or(0))
}

/// The server URLs of a setting, and the stream replicas its first URL's query asks for.
fn parse_urls(setting: &str) -> Result<(Vec<String>, usize)> {
    let mut replicas = 1;
    let mut urls = Vec::new();
    for (i, url) in setting
        .split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .enumerate()
    {
        let (base, query) = url.split_once('?').unwrap_or((url, ""));
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            match pair.split_once('=') {
                Some(("stream_replicas", n)) if i == 0 => {
                    replicas = n
                        .parse()
                        .ok()
                        .filter(|n| (1..=5).contains(n))
                        .ok_or_else(|| {
                            Error::config(format!(
                                "stream_replicas={n} in the broker URL: expected 1 to 5"
                            ))
                        })?;
                }
                _ => {
                    return Err(Error::config(format!(
                        "broker URL {}: unknown parameter {pair:?} (NATS URLs take stream_replicas=N)",
                        crate::db::redact(url)
                    )));
                }
            }
        }
        urls.push(base.to_string());
    }
    if urls.is_empty() {
        return Err(Error::config("the broker URL is empty"));
    }
    Ok((urls, replicas))
}

/// Our headers as NATS headers.
fn header_map(headers: &Headers) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (k, v) in headers {
        // A header line cannot hold a line break (async-nats panics on one); an error text can.
        let v: String = v
            .chars()
            .map(|c| if c == '\r' || c == '\n' { ' ' } else { c })
            .collect();
        map.insert(k.as_str(), v.as_str());
    }
    map
}

/// A message's headers as ours (NATS's own, `Nats-*`, left out), and the message id it carries:
/// [`HEADER_MESSAGE_ID`] on a copy, else `Nats-Msg-Id`.
fn headers_of(map: Option<&HeaderMap>) -> (Headers, Option<String>) {
    let mut out = Headers::new();
    let mut nats_id = None;
    for (k, vs) in map.into_iter().flat_map(|m| m.iter()) {
        let (k, v) = (
            k.to_string(),
            vs.first().map(|v| v.to_string()).unwrap_or_default(),
        );
        if k.eq_ignore_ascii_case("Nats-Msg-Id") {
            nats_id = Some(v);
        } else if !k.starts_with("Nats-") {
            out.insert(k, v);
        }
    }
    let id = out.remove(HEADER_MESSAGE_ID).or(nats_id);
    (out, id)
}

/// [`Broker`] over a shared [`NatsTransport`].
struct NatsBroker(Arc<NatsTransport>);

/// The `nats://` / `tls://` row of the scheme table.
pub(crate) fn connect_broker(
    settings: &Settings,
    url: &str,
    name: &str,
) -> Result<Box<dyn Broker>> {
    let config = NatsConfig {
        url: url.to_string(),
        connection_name: name.to_string(),
        exchange: settings.exchange.clone(),
        tls_ca_file: settings.tls_ca_file.clone(),
        dead_letter_ttl: settings.dead_letter_ttl,
    };
    Ok(Box::new(NatsBroker(NatsTransport::connect(config)?)))
}

impl Broker for NatsBroker {
    fn declare_replica(
        &self,
        queue: &str,
        cqrs_ids: &[String],
        _delays: &[Duration],
    ) -> Result<()> {
        // Retries wait on the server (a delayed NAK): no delay levels to declare.
        self.0.declare_replica(queue, cqrs_ids)
    }

    fn delete_replica(
        &self,
        queue: &str,
        _delays: &[Duration],
        force: bool,
    ) -> Result<Vec<QueueDeleted>> {
        self.0.delete_replica(queue, force)
    }

    fn inbox(&self, queue: &str, prefetch: u16, _delays: &[Duration]) -> Result<Box<dyn Inbox>> {
        Ok(Box::new(self.0.inbox(queue, prefetch)?))
    }

    fn publisher(&self) -> Result<Box<dyn Publisher>> {
        self.0.block_on(self.0.ensure_streams())?;
        Ok(Box::new(self.0.publisher()))
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

    #[test]
    fn routing_keys_and_subjects_map_both_ways() {
        let n = Names::new("cqrs").unwrap();
        assert_eq!(n.subject_of("item").as_deref(), Some("cqrs.b.item"));
        assert_eq!(
            n.subject_of("cqrs.billing.item").as_deref(),
            Some("cqrs.d.billing.item")
        );
        assert_eq!(n.subject_of("a.b"), None, "a dotted cqrs_id is no token");
        assert_eq!(n.subject_of("it*em"), None);
        assert_eq!(n.subject_of("cqrs.billing.a.b"), None);
        for key in ["item", "cqrs.billing.item"] {
            assert_eq!(n.routing_key_of(&n.subject_of(key).unwrap()), key);
        }
        assert_eq!(
            n.routing_key_of(&n.dead("billing", Some("item"))),
            "cqrs.dead_letter_billing.item"
        );
        assert_eq!(
            n.dead("billing", Some("bad.id")),
            "cqrs_dead_letters.billing._"
        );
        assert_eq!(
            n.filters("billing", &["item".into()]),
            ["cqrs.b.item", "cqrs.d.billing.item"]
        );
    }

    #[test]
    fn urls_take_the_stream_replicas_and_refuse_anything_else() {
        let (urls, r) = parse_urls("nats://a:4222?stream_replicas=3, nats://b:4222").unwrap();
        assert_eq!(
            (urls, r),
            (vec!["nats://a:4222".to_string(), "nats://b:4222".into()], 3)
        );
        assert!(parse_urls("nats://a?stream_replicas=9").is_err());
        let err = parse_urls("nats://a?heartbeat=3").unwrap_err().to_string();
        assert!(err.contains("heartbeat"), "{err}");
        assert_eq!(version_of("2.9.10"), (2, 9));
        assert!(subject_matches("cqrs.b.item", "cqrs.b.item"));
        assert!(subject_matches("cqrs.*.item", "cqrs.b.item"));
        assert!(subject_matches("cqrs.>", "cqrs.d.q.item"));
        assert!(!subject_matches("cqrs.b.item", "cqrs.b.item2"));
        assert!(!subject_matches("cqrs.b", "cqrs.b.item"));
        assert!(!subject_matches("cqrs.>", "cqrs"));
        assert!(version_of("v2.15.1") >= MIN_SERVER);
    }
}
