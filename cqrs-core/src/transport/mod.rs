//! Stage 4: Transports: what the consumer and the relay need from a broker, whatever the broker is.
//!
//! The consumer engine is synchronous (it runs on a database thread, ARCHITECTURE.md §6) and sees
//! one queue through [`Inbox`]; the relay publishes through [`Publisher`]; `dead-letters` reads
//! through [`Letters`]. [`Broker`] hands them out for a broker URL, chosen by its scheme from one
//! table ([`SCHEMES`]); [`routing`] names queues and routing keys as django-cqrs does (PROTOCOL.md
//! "Broker topology").
//!
//! A new transport: one module here implementing [`Broker`], [`Inbox`], [`Publisher`] and
//! [`Letters`], plus its row in [`SCHEMES`].

pub mod amqp;
pub mod broker;
pub mod local;
pub mod memory;
pub mod nats;
pub mod routing;
mod runtime;

pub use broker::{Broker, QueueDeleted, QueueMove, SCHEMES, Scheme, connect, connect_until};
pub use routing::{bound_queues, dead_letter_key, dead_letter_queue, directed_key, topic_matches};

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::error::Result;

/// Message headers we read and write (`cqrs-directed`, `cqrs-error`, `cqrs-error-kind`, ...).
pub type Headers = BTreeMap<String, String>;

/// Header: a SYNC judged directed on first receipt (`true`).
pub const HEADER_DIRECTED: &str = "cqrs-directed";
/// Header: why a message was dead-lettered.
pub const HEADER_ERROR: &str = "cqrs-error";
/// Header: the outcome class of a dead letter (`malformed`, `unknown-model`, ...).
pub const HEADER_ERROR_KIND: &str = "cqrs-error-kind";
/// Header: the service that published the message.
pub const HEADER_PRODUCER: &str = "cqrs-producer";

/// A message received from a queue, not yet acknowledged.
#[derive(Debug, Clone, PartialEq)]
pub struct Delivery {
    /// Channel-scoped, increasing delivery tag.
    pub tag: u64,
    /// The routing key it was published with.
    pub routing_key: String,
    /// The raw body.
    pub body: Vec<u8>,
    /// String headers.
    pub headers: Headers,
    /// The broker delivered it before (to a consumer that did not ack it).
    pub redelivered: bool,
    /// AMQP `message_id` (the outbox row's UUID when we published it).
    pub message_id: Option<String>,
}

/// One replica queue as the consumer engine uses it.
///
/// Every publishing method returns only after the broker confirmed the copy, so the engine can ack
/// the original right after: a crash in between duplicates a message, never loses one.
pub trait Inbox: Send {
    /// The replica queue's name.
    fn queue(&self) -> &str;

    /// Up to `max` deliveries, waiting at most `wait` for the first one (empty on timeout).
    fn receive(&mut self, max: usize, wait: Duration) -> Result<Vec<Delivery>>;

    /// Acknowledge every unacknowledged delivery with a tag up to and including `tag`.
    fn ack_up_to(&mut self, tag: u64) -> Result<()>;

    /// Publish a retry copy of `original` with `body` (its `retries` already incremented)
    /// routed back to this queue with [`directed_key`] after `delay`; it keeps `original`'s
    /// message id, so the logs of every attempt name the same message.
    fn publish_retry(
        &mut self,
        original: &Delivery,
        cqrs_id: &str,
        body: Vec<u8>,
        headers: Headers,
        delay: Duration,
    ) -> Result<()>;

    /// Publish `original`'s body unchanged to this queue's dead-letter queue with `headers`
    /// (reason and kind) and `ttl` as the message expiration. `cqrs_id` is `None` when the body
    /// did not say (the copy then goes straight to the dead-letter queue).
    fn publish_dead_letter(
        &mut self,
        original: &Delivery,
        cqrs_id: Option<&str>,
        headers: Headers,
        ttl: Duration,
    ) -> Result<()>;

    /// Give every unacknowledged delivery back to the queue for redelivery.
    fn requeue_unacked(&mut self) -> Result<()>;
}

/// A message the relay publishes to the exchange.
#[derive(Debug, Clone, PartialEq)]
pub struct Outgoing {
    /// Routing key (`<cqrs_id>` or `cqrs.<queue>.<cqrs_id>`).
    pub routing_key: String,
    /// The body, `expires` and `retries` set.
    pub body: Vec<u8>,
    /// Headers (`cqrs-producer`, `cqrs-directed`).
    pub headers: Headers,
    /// AMQP `message_id`: the outbox row's UUID.
    pub message_id: String,
}

/// What the broker said about one published message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Confirm {
    /// Confirmed and routed to at least one queue.
    Delivered,
    /// Confirmed but no queue is bound for its routing key (nobody listens; as django-cqrs, dropped).
    Unroutable,
    /// Refused or not confirmed; the message must be published again.
    Failed(String),
}

/// The relay's view of a broker: publish a batch with confirms.
pub trait Publisher: Send {
    /// Publish `messages` in order; one [`Confirm`] per message, in the same order. `Err` means
    /// the whole batch's fate is unknown (e.g. the connection dropped) and all of it is retried.
    fn publish(&mut self, messages: &[Outgoing]) -> Result<Vec<Confirm>>;

    /// Send `messages` in order without waiting for their confirms; [`Sent::confirms`] waits.
    /// The relay claims its next batch while the broker confirms this one. A transport whose
    /// confirms come back with the send (the queue file, memory) publishes here.
    fn send(&mut self, messages: &[Outgoing]) -> Result<Sent> {
        self.publish(messages).map(Sent::ready)
    }

    /// `Ok` if the next publish can reach the broker now, reconnecting if the link dropped; the
    /// idle relay asks, so its readiness follows the broker between publishes. A transport with
    /// no link to lose (the queue file, memory) is always reachable.
    fn check(&mut self) -> Result<()> {
        Ok(())
    }
}

/// A batch sent by [`Publisher::send`] whose confirms may not be in yet.
pub struct Sent {
    wait: Box<dyn FnOnce() -> Result<Vec<Confirm>> + Send>,
    /// Set once [`Sent::confirms`] would not block (`None`: it never blocks).
    done: Option<Arc<AtomicBool>>,
}

impl Sent {
    /// Confirms already known.
    pub fn ready(confirms: Vec<Confirm>) -> Sent {
        Sent {
            wait: Box::new(move || Ok(confirms)),
            done: None,
        }
    }

    /// Confirms that `wait` blocks for until `done` is set; `Err` as for [`Publisher::publish`].
    pub fn waiting(
        done: Arc<AtomicBool>,
        wait: impl FnOnce() -> Result<Vec<Confirm>> + Send + 'static,
    ) -> Sent {
        Sent {
            wait: Box::new(wait),
            done: Some(done),
        }
    }

    /// Whether every confirm is in ([`Sent::confirms`] returns at once).
    pub fn is_ready(&self) -> bool {
        self.done.as_ref().is_none_or(|d| d.load(Ordering::Acquire))
    }

    /// Wait for the confirms: one per message, in the order sent.
    pub fn confirms(self) -> Result<Vec<Confirm>> {
        (self.wait)()
    }
}

impl<I: Inbox + ?Sized> Inbox for Box<I> {
    fn queue(&self) -> &str {
        (**self).queue()
    }
    fn receive(&mut self, max: usize, wait: Duration) -> Result<Vec<Delivery>> {
        (**self).receive(max, wait)
    }
    fn ack_up_to(&mut self, tag: u64) -> Result<()> {
        (**self).ack_up_to(tag)
    }
    fn publish_retry(
        &mut self,
        original: &Delivery,
        cqrs_id: &str,
        body: Vec<u8>,
        headers: Headers,
        delay: Duration,
    ) -> Result<()> {
        (**self).publish_retry(original, cqrs_id, body, headers, delay)
    }
    fn publish_dead_letter(
        &mut self,
        original: &Delivery,
        cqrs_id: Option<&str>,
        headers: Headers,
        ttl: Duration,
    ) -> Result<()> {
        (**self).publish_dead_letter(original, cqrs_id, headers, ttl)
    }
    fn requeue_unacked(&mut self) -> Result<()> {
        (**self).requeue_unacked()
    }
}

impl<P: Publisher + ?Sized> Publisher for Box<P> {
    fn publish(&mut self, messages: &[Outgoing]) -> Result<Vec<Confirm>> {
        (**self).publish(messages)
    }
    fn send(&mut self, messages: &[Outgoing]) -> Result<Sent> {
        (**self).send(messages)
    }
    fn check(&mut self) -> Result<()> {
        (**self).check()
    }
}

/// A letter read from a dead-letter queue, not yet removed.
#[derive(Debug, Clone)]
pub struct Letter {
    /// Transport handle (delivery tag, row id).
    pub(crate) tag: u64,
    /// Routing key of the dead-letter copy.
    pub routing_key: String,
    /// The body as dead-lettered.
    pub body: Vec<u8>,
    /// Its headers (`cqrs-error`, `cqrs-error-kind`, `cqrs-directed`, ...).
    pub headers: Headers,
    /// The message id it was published with, if any.
    pub message_id: Option<String>,
}

/// One pass over a replica's dead-letter queue (`dead-letters dump|retry|purge`): reads the
/// letters present when it starts without removing them; only [`Letters::remove`] removes one.
pub trait Letters {
    /// Letters in the queue when the pass started.
    fn total(&self) -> usize;
    /// The next letter, or `None` when every letter present at the start was read.
    fn next_letter(&mut self) -> Result<Option<Letter>>;
    /// Publish `body` of `letter` through the exchange with `routing_key` (keeping the letter's
    /// message id); returns once it is confirmed: `true` if a queue took it, `false` if none is
    /// bound for the key (the letter should stay).
    fn republish(
        &mut self,
        letter: &Letter,
        routing_key: &str,
        body: &[u8],
        headers: &Headers,
    ) -> Result<bool>;
    /// Remove a letter.
    fn remove(&mut self, letter: &Letter) -> Result<()>;
    /// Remove every letter; returns how many.
    fn purge_all(&mut self) -> Result<usize>;
}
