//! The in-memory broker for tests: a topic exchange with bindings, queues, competing consumers,
//! per-consumer delivery tags and acks, redelivery of unacked messages, delayed retries.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::routing::{bound_queues, dead_letter_key, dead_letter_queue, directed_key};
use super::{Confirm, Delivery, Headers, Inbox, Outgoing, Publisher};
use crate::error::{Error, ErrorKind, Result};

/// A message stored in a memory queue.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredMessage {
    /// The routing key it was published with.
    pub routing_key: String,
    /// Raw body.
    pub body: Vec<u8>,
    /// Headers.
    pub headers: Headers,
    /// Delivered before and not acked.
    pub redelivered: bool,
    /// Expiration as set by the publisher (dead letters), in milliseconds.
    pub expiration_ms: Option<u64>,
    /// The AMQP-style `message_id` (the relay's outbox row id, kept by retry and dead-letter copies).
    pub message_id: Option<String>,
}

#[derive(Default)]
struct State {
    bindings: Vec<(String, String)>,
    queues: HashMap<String, VecDeque<StoredMessage>>,
    delayed: Vec<(Instant, StoredMessage)>,
    published: u64,
}

impl State {
    /// Deliver to every queue with a matching binding (a fan-out per queue, once per queue).
    /// Returns how many queues got it.
    fn route(&mut self, msg: StoredMessage) -> usize {
        let targets = bound_queues(
            self.bindings.iter().map(|(p, q)| (q.as_str(), p.as_str())),
            &msg.routing_key,
        );
        for q in &targets {
            if let Some(queue) = self.queues.get_mut(q) {
                queue.push_back(msg.clone());
            }
        }
        self.published += 1;
        targets.len()
    }

    fn release_due(&mut self, now: Instant) {
        if self.delayed.iter().any(|(due, _)| *due <= now) {
            let (due, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.delayed)
                .into_iter()
                .partition(|(d, _)| *d <= now);
            self.delayed = later;
            for (_, msg) in due {
                self.route(msg);
            }
        }
    }
}

/// An in-process broker. Clones share the same state.
///
/// ```
/// use cqrs::transport::{memory::MemoryBroker, Inbox};
/// let broker = MemoryBroker::new();
/// broker.declare_replica_queue("replica", &["item"]);
/// broker.publish("item", b"{}".to_vec(), Default::default());
/// let mut inbox = broker.inbox("replica");
/// let got = inbox.receive(10, std::time::Duration::ZERO).unwrap();
/// assert_eq!(got.len(), 1);
/// inbox.ack_up_to(got[0].tag).unwrap();
/// assert_eq!(broker.queue_len("replica"), 0);
/// ```
#[derive(Clone, Default)]
pub struct MemoryBroker {
    inner: Arc<(Mutex<State>, Condvar)>,
}

impl MemoryBroker {
    /// An empty broker.
    pub fn new() -> Self {
        MemoryBroker::default()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.inner.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Declare a queue (idempotent).
    pub fn declare_queue(&self, queue: &str) {
        self.lock().queues.entry(queue.to_string()).or_default();
    }

    /// Bind `queue` to the exchange with a topic `pattern`.
    pub fn bind(&self, queue: &str, pattern: &str) {
        let mut s = self.lock();
        let b = (pattern.to_string(), queue.to_string());
        if !s.bindings.contains(&b) {
            s.bindings.push(b);
        }
    }

    /// Declare a replica queue and its dead-letter queue with django-cqrs's bindings for `cqrs_ids`.
    pub fn declare_replica_queue(&self, queue: &str, cqrs_ids: &[&str]) {
        let dlq = dead_letter_queue(queue);
        self.declare_queue(queue);
        self.declare_queue(&dlq);
        for id in cqrs_ids {
            self.bind(queue, id);
            self.bind(queue, &directed_key(queue, id));
            self.bind(&dlq, &dead_letter_key(queue, id));
        }
    }

    /// Publish through the exchange; returns the number of queues that got the message.
    pub fn publish(&self, routing_key: &str, body: Vec<u8>, headers: Headers) -> usize {
        self.publish_with_id(routing_key, body, headers, None)
    }

    /// [`MemoryBroker::publish`] with a `message_id`, as the relay publishes.
    pub fn publish_with_id(
        &self,
        routing_key: &str,
        body: Vec<u8>,
        headers: Headers,
        message_id: Option<String>,
    ) -> usize {
        let n = self.lock().route(StoredMessage {
            routing_key: routing_key.to_string(),
            body,
            headers,
            redelivered: false,
            expiration_ms: None,
            message_id,
        });
        self.inner.1.notify_all();
        n
    }

    /// Messages ready in `queue` (not delivered, or given back).
    pub fn queue_len(&self, queue: &str) -> usize {
        let mut s = self.lock();
        s.release_due(Instant::now());
        s.queues.get(queue).map_or(0, VecDeque::len)
    }

    /// Copies of the ready messages of `queue`, oldest first; they stay in the queue.
    pub fn peek(&self, queue: &str) -> Vec<StoredMessage> {
        let mut s = self.lock();
        s.release_due(Instant::now());
        s.queues
            .get(queue)
            .map(|q| q.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Messages waiting out a retry delay.
    pub fn delayed_len(&self) -> usize {
        self.lock().delayed.len()
    }

    /// A consumer of `queue` with its own delivery tags; dropping it requeues what it did not ack.
    pub fn inbox(&self, queue: &str) -> MemoryInbox {
        self.declare_queue(queue);
        MemoryInbox {
            broker: self.clone(),
            queue: queue.to_string(),
            next_tag: 0,
            unacked: BTreeMap::new(),
        }
    }
}

impl Publisher for MemoryBroker {
    fn publish(&mut self, messages: &[Outgoing]) -> Result<Vec<Confirm>> {
        Ok(messages
            .iter()
            .map(|m| {
                let id = Some(m.message_id.clone());
                match self.publish_with_id(&m.routing_key, m.body.clone(), m.headers.clone(), id) {
                    0 => Confirm::Unroutable,
                    _ => Confirm::Delivered,
                }
            })
            .collect())
    }
}

/// A consumer of one memory queue (like one AMQP channel with one consumer).
pub struct MemoryInbox {
    broker: MemoryBroker,
    queue: String,
    next_tag: u64,
    unacked: BTreeMap<u64, StoredMessage>,
}

impl MemoryInbox {
    /// Deliveries taken and not yet acked.
    pub fn unacked_len(&self) -> usize {
        self.unacked.len()
    }
}

impl Inbox for MemoryInbox {
    fn queue(&self) -> &str {
        &self.queue
    }

    fn receive(&mut self, max: usize, wait: Duration) -> Result<Vec<Delivery>> {
        let deadline = Instant::now() + wait;
        let (lock, cv) = &*self.broker.inner;
        let mut s = lock.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            let now = Instant::now();
            s.release_due(now);
            let ready = s.queues.get(&self.queue).map_or(0, VecDeque::len);
            if ready > 0 || now >= deadline {
                break;
            }
            // Wake for a publish, or at the next delayed message's due time.
            let next_due = s
                .delayed
                .iter()
                .map(|(d, _)| *d)
                .min()
                .unwrap_or(deadline)
                .min(deadline);
            s = cv
                .wait_timeout(s, next_due.saturating_duration_since(now))
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        let queue = s.queues.entry(self.queue.clone()).or_default();
        let take = max.min(queue.len());
        let mut out = Vec::with_capacity(take);
        for msg in queue.drain(..take) {
            self.next_tag += 1;
            out.push(Delivery {
                tag: self.next_tag,
                routing_key: msg.routing_key.clone(),
                body: msg.body.clone(),
                headers: msg.headers.clone(),
                redelivered: msg.redelivered,
                message_id: msg.message_id.clone(),
            });
            self.unacked.insert(self.next_tag, msg);
        }
        Ok(out)
    }

    fn ack_up_to(&mut self, tag: u64) -> Result<()> {
        if !self.unacked.contains_key(&tag) {
            // AMQP closes the channel on an unknown tag (PRECONDITION_FAILED); so do we.
            return Err(Error::new(
                ErrorKind::Transport,
                format!("unknown delivery tag {tag} on queue {}", self.queue),
            ));
        }
        self.unacked = self.unacked.split_off(&(tag + 1));
        Ok(())
    }

    fn publish_retry(
        &mut self,
        original: &Delivery,
        cqrs_id: &str,
        body: Vec<u8>,
        headers: Headers,
        delay: Duration,
    ) -> Result<()> {
        let msg = StoredMessage {
            routing_key: directed_key(&self.queue, cqrs_id),
            body,
            headers,
            redelivered: false,
            expiration_ms: None,
            message_id: original.message_id.clone(),
        };
        self.broker
            .lock()
            .delayed
            .push((Instant::now() + delay, msg));
        self.broker.inner.1.notify_all();
        Ok(())
    }

    fn publish_dead_letter(
        &mut self,
        original: &Delivery,
        cqrs_id: Option<&str>,
        headers: Headers,
        ttl: Duration,
    ) -> Result<()> {
        let mut msg = StoredMessage {
            routing_key: cqrs_id.map_or_else(
                || dead_letter_queue(&self.queue),
                |id| dead_letter_key(&self.queue, id),
            ),
            body: original.body.clone(),
            headers,
            redelivered: false,
            expiration_ms: Some(ttl.as_millis() as u64),
            message_id: original.message_id.clone(),
        };
        let mut s = self.broker.lock();
        let routed = if cqrs_id.is_some() {
            s.route(msg.clone())
        } else {
            0
        };
        if routed == 0 {
            // Like AMQP's default exchange: straight to the dead-letter queue by name.
            msg.routing_key = dead_letter_queue(&self.queue);
            s.queues
                .entry(dead_letter_queue(&self.queue))
                .or_default()
                .push_back(msg);
        }
        Ok(())
    }

    fn requeue_unacked(&mut self) -> Result<()> {
        let unacked = std::mem::take(&mut self.unacked);
        let mut s = self.broker.lock();
        let queue = s.queues.entry(self.queue.clone()).or_default();
        for (_, mut msg) in unacked.into_iter().rev() {
            msg.redelivered = true;
            queue.push_front(msg);
        }
        drop(s);
        self.broker.inner.1.notify_all();
        Ok(())
    }
}

impl Drop for MemoryInbox {
    fn drop(&mut self) {
        // A closed channel gives its unacked messages back, as AMQP does.
        let _ = self.requeue_unacked();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fan_out_acks_and_redelivery() {
        let b = MemoryBroker::new();
        b.declare_replica_queue("a", &["item"]);
        b.declare_replica_queue("b", &["item"]);
        assert_eq!(b.publish("item", b"1".to_vec(), Headers::new()), 2);
        assert_eq!(b.publish("cqrs.a.item", b"2".to_vec(), Headers::new()), 1);
        let mut ia = b.inbox("a");
        let got = ia.receive(10, Duration::ZERO).unwrap();
        assert_eq!(got.len(), 2);
        ia.ack_up_to(got[0].tag).unwrap();
        drop(ia);
        let again = b.peek("a");
        assert_eq!(again.len(), 1);
        assert!(again[0].redelivered);
        assert_eq!(again[0].body, b"2");
    }

    #[test]
    fn retry_copies_come_back_after_their_delay() {
        let b = MemoryBroker::new();
        b.declare_replica_queue("q", &["item"]);
        b.publish_with_id("item", b"x".to_vec(), Headers::new(), Some("m-1".into()));
        let mut i = b.inbox("q");
        let original = i.receive(1, Duration::ZERO).unwrap().remove(0);
        i.publish_retry(
            &original,
            "item",
            b"x".to_vec(),
            Headers::new(),
            Duration::from_millis(30),
        )
        .unwrap();
        assert!(i.receive(1, Duration::ZERO).unwrap().is_empty());
        let got = i.receive(1, Duration::from_secs(2)).unwrap();
        assert_eq!(got[0].routing_key, "cqrs.q.item");
        assert_eq!(
            got[0].message_id.as_deref(),
            Some("m-1"),
            "the copy keeps the id"
        );
    }
}
