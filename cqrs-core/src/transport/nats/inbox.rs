//! One worker's view of a replica queue: the consumer's pull stream pumped into a channel the
//! synchronous consumer engine reads; acks after the batch commits; retry and dead-letter copies
//! acked by their stream before the original is.
//!
//! A retry is a copy with `retries` incremented on the queue's directed subject, stamped with the
//! time it is due ([`HEADER_RETRY_AT`]); a worker that pulls it sooner gives it back with a `NAK`
//! delayed until then, so the wait happens on the server. The count lives in the body, as on
//! RabbitMQ, and not in the server's delivery count, which also counts deliveries a crashed or
//! stopped worker never settled: those must not spend a retry.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::Subject;
use async_nats::jetstream::message::PublishMessage;
use futures_lite::StreamExt;
use tokio::sync::mpsc::{Receiver, Sender, error::TryRecvError};
use tokio::task::JoinHandle;

use super::{
    HEADER_MESSAGE_ID, HEADER_RETRY_AT, NatsTransport, check_token, header_map, headers_of,
    refused, transient,
};
use crate::error::{Error, ErrorKind, Result};
use crate::transport::{Delivery, Headers, Inbox};

/// How often held deliveries are kept alive (`+WPI`), well inside the consumer's ack wait.
const KEEP_ALIVE: Duration = Duration::from_secs(10);
/// How long one pull request stays open (see [`NatsInbox::start`]).
const PULL_EXPIRES: Duration = Duration::from_secs(300);
/// How long acks and NAKs may take to reach a server that is away before they are given up (the
/// server delivers again after its ack wait): a worker stopping while NATS is down still stops.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(5);

/// A delivery handed to the engine and not acked yet.
struct Held {
    reply: Subject,
    stream_sequence: u64,
}

type HeldMap = Arc<Mutex<BTreeMap<u64, Held>>>;

impl NatsTransport {
    /// A worker's inbox on `queue`'s consumer, pulling up to `prefetch` messages at a time.
    pub fn inbox(self: &Arc<Self>, queue: &str, prefetch: u16) -> Result<NatsInbox> {
        check_token("queue", queue)?;
        let held: HeldMap = Arc::default();
        let keep_alive = self
            .runtime
            .spawn(keep_alive(self.client.clone(), held.clone()));
        let mut inbox = NatsInbox {
            transport: self.clone(),
            queue: queue.to_string(),
            prefetch: prefetch.max(1) as usize,
            rx: None,
            pump: None,
            keep_alive,
            held,
            next_tag: Arc::default(),
            closed: false,
        };
        inbox.start()?;
        Ok(inbox)
    }
}

/// One worker's view of a replica queue on NATS.
pub struct NatsInbox {
    transport: Arc<NatsTransport>,
    queue: String,
    prefetch: usize,
    rx: Option<Receiver<Result<Delivery>>>,
    pump: Option<JoinHandle<()>>,
    keep_alive: JoinHandle<()>,
    held: HeldMap,
    /// Tags increase across pumps, so a tag is never reused within the inbox.
    next_tag: Arc<std::sync::atomic::AtomicU64>,
    closed: bool,
}

impl NatsInbox {
    /// Start pulling from the consumer (it must have been declared).
    fn start(&mut self) -> Result<()> {
        let t = self.transport.clone();
        let queue = self.queue.clone();
        let batch = self.prefetch;
        let messages = t.block_on(async {
            let consumer: async_nats::jetstream::consumer::PullConsumer = t
                .js
                .get_stream(t.names.stream())
                .await
                .map_err(|e| refused(&format!("consuming {queue}"), e))?
                .get_consumer(&queue)
                .await
                .map_err(|e| {
                    Error::new(
                        ErrorKind::Transport,
                        format!("consuming {queue}: no consumer {queue} on stream {} (declare the replica first): {e}", t.names.stream()),
                    )
                })?;
            consumer
                .stream()
                .max_messages_per_batch(batch)
                .heartbeat(Duration::from_secs(5))
                // A pull request stays open this long, and async-nats asks again when one expires
                // even if nothing was read: while the engine holds a long batch (a database
                // outage) a request's messages wait unread and come back after the ack wait, at
                // most one batch per request. Heartbeats keep a live request known.
                .expires(PULL_EXPIRES)
                .messages()
                .await
                .map_err(|e| transient(&format!("consuming {queue}"), e))
        })?;
        // Bounded: the pump pulls no further ahead of the engine than one batch.
        let (tx, rx) = tokio::sync::mpsc::channel(batch);
        let (held, tags, client) = (self.held.clone(), self.next_tag.clone(), t.client.clone());
        let pump = t
            .runtime
            .spawn(pump(t.clone(), client, messages, tx, held, tags, queue));
        self.rx = Some(rx);
        self.pump = Some(pump);
        self.closed = false;
        Ok(())
    }

    fn stop(&mut self) {
        if let Some(p) = self.pump.take() {
            p.abort();
            // Until it has stopped it may still hold one more delivery.
            let _ = self.transport.block_on(p);
        }
        self.rx = None;
    }

    fn broken(&mut self, e: Error) -> Error {
        self.closed = true;
        e
    }

    /// Send `payload` to the reply subject of every held delivery with a tag up to `tag` (all of
    /// them: `u64::MAX`), forgetting them.
    fn settle_up_to(&mut self, tag: u64, payload: &'static [u8]) -> Result<()> {
        let replies: Vec<Subject> = {
            let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
            let rest = held.split_off(&tag.saturating_add(1));
            std::mem::replace(&mut *held, rest)
                .into_values()
                .map(|h| h.reply)
                .collect()
        };
        if replies.is_empty() {
            return Ok(());
        }
        let client = self.transport.client.clone();
        self.transport.block_on(async move {
            let send = async {
                for reply in replies {
                    client
                        .publish(reply, payload.into())
                        .await
                        .map_err(|e| transient("acknowledging", e))?;
                }
                Ok(())
            };
            tokio::time::timeout(SETTLE_TIMEOUT, send)
                .await
                .map_err(|_| transient("acknowledging", "NATS did not take the acks"))?
        })
    }

    fn held_sequence(&self, tag: u64) -> Option<u64> {
        let held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        held.get(&tag).map(|h| h.stream_sequence)
    }

    /// The id a copy of `original` is deduplicated by: its stream sequence and what it is, so a
    /// copy made again after a crash (the original redelivered) is dropped by the server.
    fn copy_id(&self, original: &Delivery, what: &str) -> String {
        match self.held_sequence(original.tag) {
            Some(seq) => format!("{}:{seq}:{what}", self.transport.names.stream()),
            None => format!("{}:{what}", uuid::Uuid::new_v4()),
        }
    }

    fn copy(
        &self,
        original: &Delivery,
        body: Vec<u8>,
        mut headers: Headers,
        what: &str,
    ) -> PublishMessage {
        if let Some(id) = &original.message_id {
            headers.insert(HEADER_MESSAGE_ID.into(), id.clone());
        }
        PublishMessage::build()
            .payload(body.into())
            .headers(header_map(&headers))
            .message_id(self.copy_id(original, what))
    }
}

impl Inbox for NatsInbox {
    fn queue(&self) -> &str {
        &self.queue
    }

    fn receive(&mut self, max: usize, wait: Duration) -> Result<Vec<Delivery>> {
        if self.closed {
            return Err(transient(
                &format!("consuming {}", self.queue),
                "the pull stream ended",
            ));
        }
        if self.rx.is_none() {
            self.start()?;
        }
        let rx = self.rx.as_mut().expect("started");
        let first = self
            .transport
            .runtime
            .block_on(async { tokio::time::timeout(wait, rx.recv()).await });
        let first = match first {
            Ok(Some(d)) => d,
            // async-nats reconnects by itself and the pull stream notices a lost link only when
            // two of its 5 s heartbeats are missing: an idle worker asks the client, so readiness
            // and the reconnect count follow the link within one wait (the metrics test's cut:
            // its run went from 29 s to 19 s). The worker is built again once the server answers.
            Err(_)
                if matches!(
                    self.transport.client.connection_state(),
                    async_nats::connection::State::Disconnected
                ) =>
            {
                let e = transient(
                    &format!("consuming {}", self.queue),
                    "lost the connection to the NATS server",
                );
                return Err(self.broken(e));
            }
            Err(_) => return Ok(Vec::new()),
            Ok(None) => {
                let e = transient(
                    &format!("consuming {}", self.queue),
                    "the pull stream ended",
                );
                return Err(self.broken(e));
            }
        };
        let mut out = vec![first];
        while out.len() < max {
            match rx.try_recv() {
                Ok(d) => out.push(d),
                Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
            }
        }
        let mut deliveries = Vec::with_capacity(out.len());
        for d in out {
            match d {
                Ok(d) => deliveries.push(d),
                // What came before the error is handed over; the error ends the pull stream.
                Err(e) if deliveries.is_empty() => return Err(self.broken(e)),
                Err(_) => {
                    self.closed = true;
                    break;
                }
            }
        }
        Ok(deliveries)
    }

    fn ack_up_to(&mut self, tag: u64) -> Result<()> {
        self.settle_up_to(tag, b"+ACK")
    }

    fn publish_retry(
        &mut self,
        original: &Delivery,
        cqrs_id: &str,
        body: Vec<u8>,
        mut headers: Headers,
        delay: Duration,
    ) -> Result<()> {
        let due = chrono::Utc::now() + chrono::Duration::from_std(delay).unwrap_or_default();
        headers.insert(HEADER_RETRY_AT.into(), due.timestamp_millis().to_string());
        let subject = self.transport.names.directed(&self.queue, cqrs_id);
        let message = self.copy(original, body, headers, "retry");
        let t = self.transport.clone();
        t.block_on(t.publish_acked(subject, message))
    }

    fn publish_dead_letter(
        &mut self,
        original: &Delivery,
        cqrs_id: Option<&str>,
        headers: Headers,
        _ttl: Duration,
    ) -> Result<()> {
        // The letter's age limit is the dead-letter stream's `max_age`.
        let subject = self.transport.names.dead(&self.queue, cqrs_id);
        let message = self.copy(original, original.body.clone(), headers, "dead");
        let t = self.transport.clone();
        t.block_on(t.publish_acked(subject, message))
    }

    fn requeue_unacked(&mut self) -> Result<()> {
        // Stop pulling first, so nothing new arrives; what the pump already took is held too.
        self.stop();
        self.settle_up_to(u64::MAX, b"-NAK")?;
        let client = self.transport.client.clone();
        self.transport
            .block_on(async move { tokio::time::timeout(SETTLE_TIMEOUT, client.flush()).await })
            .map_err(|_| transient("giving deliveries back", "NATS did not answer"))?
            .map_err(|e| transient("giving deliveries back", e))
    }
}

impl Drop for NatsInbox {
    fn drop(&mut self) {
        self.keep_alive.abort();
        // Whatever is still held goes back now rather than after the ack wait.
        let _ = self.requeue_unacked();
    }
}

/// Pull messages into `tx`, holding each under a new tag; a retry copy that is not due yet is
/// given back with a `NAK` delayed until it is.
async fn pump(
    t: Arc<NatsTransport>,
    client: async_nats::Client,
    mut messages: async_nats::jetstream::consumer::pull::Stream,
    tx: Sender<Result<Delivery>>,
    held: HeldMap,
    tags: Arc<std::sync::atomic::AtomicU64>,
    queue: String,
) {
    while let Some(m) = messages.next().await {
        let m = match m {
            Ok(m) => m,
            Err(e) => {
                let _ = tx
                    .send(Err(transient(&format!("consuming {queue}"), e)))
                    .await;
                return;
            }
        };
        let (Some(reply), Ok(info)) = (m.reply.clone(), m.info()) else {
            continue; // not a JetStream delivery: nothing to ack
        };
        let (stream_sequence, delivered) = (info.stream_sequence, info.delivered);
        let (headers, message_id) = headers_of(m.headers.as_ref());
        if let Some(wait) = not_due(&headers) {
            let nak = format!("-NAK {{\"delay\": {}}}", wait.as_nanos());
            let _ = client.publish(reply, nak.into()).await;
            continue;
        }
        let tag = tags.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        held.lock().unwrap_or_else(|p| p.into_inner()).insert(
            tag,
            Held {
                reply,
                stream_sequence,
            },
        );
        let delivery = Delivery {
            tag,
            routing_key: t.names.routing_key_of(&m.subject),
            body: m.payload.to_vec(),
            headers: headers
                .into_iter()
                .filter(|(k, _)| k != HEADER_RETRY_AT)
                .collect(),
            redelivered: delivered > 1,
            message_id,
        };
        if tx.send(Ok(delivery)).await.is_err() {
            return;
        }
    }
}

/// How long until a retry copy is due, if it is not yet.
fn not_due(headers: &Headers) -> Option<Duration> {
    let at: i64 = headers.get(HEADER_RETRY_AT)?.parse().ok()?;
    let wait = at - chrono::Utc::now().timestamp_millis();
    (wait > 0).then(|| Duration::from_millis(wait as u64))
}

/// Keep every held delivery from being delivered again while the engine holds it (a batch
/// waiting out a database outage spends no retry and is not handed to another worker).
async fn keep_alive(client: async_nats::Client, held: HeldMap) {
    loop {
        tokio::time::sleep(KEEP_ALIVE).await;
        let replies: Vec<Subject> = {
            let held = held.lock().unwrap_or_else(|p| p.into_inner());
            held.values().map(|h| h.reply.clone()).collect()
        };
        for reply in replies {
            let _ = client.publish(reply, "+WPI".into()).await;
        }
    }
}
