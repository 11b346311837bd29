//! The embedded transport: a durable queue in one SQLite file (`--broker-url sqlite:///path/queue.db`)
//! with the AMQP transport's semantics — topic routing keys and per-queue bindings (a message
//! fans out to every bound queue), competing consumers, ack after apply, delayed retries,
//! dead letters with reason headers — for services that run on one machine without RabbitMQ.
//!
//! Durability and concurrency come from SQLite itself (WAL, busy timeout, `BEGIN IMMEDIATE`).
//! A consumer takes messages by leasing them; a killed consumer's leases run out and its messages
//! are delivered again (marked redelivered). Retries are rows that become visible after their delay.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use chrono::Utc;
use serde::Deserialize;

use super::routing::{bound_queues, dead_letter_key, dead_letter_queue, directed_key};
use super::{Broker, Confirm, Delivery, Headers, Inbox, Letter, Letters, Outgoing, Publisher};
use crate::config::Settings;
use crate::db::{Backend, Db, SqlConn};
use crate::error::{Error, ErrorKind, Result};
use crate::value::ColumnType;
use crate::value::SqlValue;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS cqrs_local_bindings (
    queue TEXT NOT NULL,
    pattern TEXT NOT NULL,
    PRIMARY KEY (queue, pattern)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS cqrs_local_messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,   -- delivery order and delivery tag
    queue TEXT NOT NULL,
    routing_key TEXT NOT NULL,
    body BLOB NOT NULL,
    headers TEXT NOT NULL,                  -- JSON object of strings
    message_id TEXT,
    visible_at INTEGER NOT NULL,            -- unix ms: retries wait until then
    lease_until INTEGER,                    -- unix ms; NULL = not taken
    lease_owner TEXT,
    deliveries INTEGER NOT NULL DEFAULT 0,
    expires_at INTEGER                      -- unix ms (dead letters' TTL)
);
CREATE INDEX IF NOT EXISTS cqrs_local_ready ON cqrs_local_messages (queue, visible_at, id);
";

fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

/// A queue file. Cheap to clone; every inbox and publisher opens its own connection.
#[derive(Debug, Clone)]
pub struct LocalTransport {
    url: String,
    /// How long a taken message stays invisible to other consumers. A batch that takes longer may
    /// be delivered twice, which revisions make harmless; a killed consumer's messages return after it.
    lease: Duration,
}

impl LocalTransport {
    /// Open (and create) the queue file of a `sqlite://` broker URL.
    pub fn open(url: &str, lease: Duration) -> Result<Arc<LocalTransport>> {
        let t = LocalTransport {
            url: url.to_string(),
            lease,
        };
        t.connect()?
            .batch_execute(SCHEMA)
            .map_err(|e| e.context(format!("queue file {url}")))?;
        Ok(Arc::new(t))
    }

    fn connect(&self) -> Result<Db> {
        Db::connect(&self.url)
    }

    /// Bind a replica queue as django-cqrs's topology does: `<id>` and `cqrs.<queue>.<id>` to the
    /// queue, `cqrs.dead_letter_<queue>.<id>` to `dead_letter_<queue>`.
    pub fn declare_replica(&self, queue: &str, cqrs_ids: &[String]) -> Result<()> {
        let mut db = self.connect()?;
        db.write_transaction(|db| {
            for id in cqrs_ids {
                for (q, pattern) in [
                    (queue.to_string(), id.clone()),
                    (queue.to_string(), directed_key(queue, id)),
                    (dead_letter_queue(queue), dead_letter_key(queue, id)),
                ] {
                    db.exec(
                        "INSERT OR IGNORE INTO cqrs_local_bindings (queue, pattern) VALUES (?, ?)",
                        vec![SqlValue::Text(q), SqlValue::Text(pattern)],
                    )?;
                }
            }
            Ok(())
        })
    }

    /// A publisher on its own connection.
    pub fn publisher(&self) -> Result<LocalPublisher> {
        Ok(LocalPublisher {
            db: self.connect()?,
        })
    }

    /// A consumer of `queue` on its own connection.
    pub fn inbox(&self, queue: &str) -> Result<LocalInbox> {
        static N: AtomicU64 = AtomicU64::new(0);
        Ok(LocalInbox {
            lease_ms: self.lease.as_millis() as i64,
            db: self.connect()?,
            queue: queue.to_string(),
            owner: format!(
                "{}-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed),
                now_ms()
            ),
            last_delivery: Instant::now(),
        })
    }

    /// Drop every message of `queue` (taken or not); returns how many.
    pub fn purge(&self, queue: &str) -> Result<usize> {
        let queue = SqlValue::Text(queue.to_string());
        self.connect()?.write_transaction(|db| {
            db.exec(
                "DELETE FROM cqrs_local_messages WHERE queue = ?",
                vec![queue],
            )
        })
    }

    /// Messages in `queue` (taken or not).
    pub fn count(&self, queue: &str) -> Result<usize> {
        let rows = self.connect()?.load_text(
            "SELECT CAST(count(*) AS TEXT) AS j FROM cqrs_local_messages WHERE queue = ?",
            vec![SqlValue::Text(queue.to_string())],
        )?;
        Ok(rows.first().and_then(|n| n.parse().ok()).unwrap_or(0))
    }
}

/// Every `(queue, pattern)` binding.
fn bindings(db: &mut Db) -> Result<Vec<(String, String)>> {
    Ok(db
        .load_text(
            "SELECT json_array(queue, pattern) AS j FROM cqrs_local_bindings",
            vec![],
        )?
        .iter()
        .filter_map(|b| serde_json::from_str::<(String, String)>(b).ok())
        .collect())
}

/// A message to store.
struct NewMessage<'a> {
    routing_key: &'a str,
    body: &'a [u8],
    headers: &'a Headers,
    message_id: Option<&'a str>,
    /// Unix ms: retries wait until then.
    visible_at: i64,
    /// Unix ms (dead letters' TTL).
    expires_at: Option<i64>,
}

/// Store each message in every queue bound to its routing key (`bound` read once per batch), in
/// multi-row inserts; returns how many queues got each message.
fn route(
    db: &mut Db,
    bound: &[(String, String)],
    messages: &[NewMessage<'_>],
) -> Result<Vec<usize>> {
    let mut rows = Vec::new();
    let counts = messages
        .iter()
        .map(|m| {
            let queues = bound_queues(
                bound.iter().map(|(q, p)| (q.as_str(), p.as_str())),
                m.routing_key,
            );
            let n = queues.len();
            rows.extend(queues.into_iter().map(|q| (q, m)));
            n
        })
        .collect();
    insert(db, &rows)?;
    Ok(counts)
}

/// Multi-row insert of `(queue, message)` pairs, chunked under SQLite's bind limit.
fn insert(db: &mut Db, rows: &[(String, &NewMessage<'_>)]) -> Result<()> {
    const COLS: usize = 7;
    for chunk in rows.chunks(Backend::Sqlite.bind_limit() / COLS) {
        let mut sql = String::from(
            "INSERT INTO cqrs_local_messages (queue, routing_key, body, headers, message_id, visible_at, expires_at) VALUES ",
        );
        let mut binds = Vec::with_capacity(chunk.len() * COLS);
        for (i, (queue, m)) in chunk.iter().enumerate() {
            sql.push_str(if i == 0 {
                "(?, ?, CAST(? AS BLOB), ?, ?, ?, ?)"
            } else {
                ",(?, ?, CAST(? AS BLOB), ?, ?, ?, ?)"
            });
            binds.extend([
                SqlValue::Text(queue.clone()),
                SqlValue::Text(m.routing_key.to_string()),
                SqlValue::Text(String::from_utf8_lossy(m.body).into_owned()),
                SqlValue::Text(serde_json::to_string(m.headers).expect("string map serializes")),
                m.message_id.map_or(SqlValue::Null(ColumnType::Text), |id| {
                    SqlValue::Text(id.to_string())
                }),
                SqlValue::BigInt(m.visible_at),
                m.expires_at
                    .map_or(SqlValue::Null(ColumnType::BigInt), SqlValue::BigInt),
            ]);
        }
        db.exec(&sql, binds)?;
    }
    Ok(())
}

/// Route one message with freshly read bindings; how many queues got it.
fn route_one(db: &mut Db, message: NewMessage<'_>) -> Result<usize> {
    let bound = bindings(db)?;
    Ok(route(db, &bound, &[message])?[0])
}

/// The relay's publisher: a batch is one transaction; committed means confirmed.
pub struct LocalPublisher {
    db: Db,
}

impl Publisher for LocalPublisher {
    fn publish(&mut self, messages: &[Outgoing]) -> Result<Vec<Confirm>> {
        let now = now_ms();
        let stored: Vec<NewMessage<'_>> = messages
            .iter()
            .map(|m| NewMessage {
                routing_key: &m.routing_key,
                body: &m.body,
                headers: &m.headers,
                message_id: Some(&m.message_id),
                visible_at: now,
                expires_at: None,
            })
            .collect();
        let counts = self.db.write_transaction(|db| {
            let bound = bindings(db)?;
            route(db, &bound, &stored)
        })?;
        Ok(counts
            .into_iter()
            .map(|n| {
                if n == 0 {
                    Confirm::Unroutable
                } else {
                    Confirm::Delivered
                }
            })
            .collect())
    }
}

#[derive(Deserialize)]
struct Row {
    id: i64,
    routing_key: String,
    body: String,
    headers: String,
    message_id: Option<String>,
    deliveries: i64,
}

/// One consumer of a queue in the file.
pub struct LocalInbox {
    lease_ms: i64,
    db: Db,
    queue: String,
    owner: String,
    /// When a take last returned messages: how often an idle inbox looks at the file.
    last_delivery: Instant,
}

/// How often an inbox that took messages in the last [`BUSY_FOR`] looks whether another
/// connection committed to the queue file, and how often one idle for longer does: a commit is
/// seen within a millisecond under load, and an idle worker costs a fifth of that CPU.
const CHECK_BUSY: Duration = Duration::from_millis(1);
const CHECK_IDLE: Duration = Duration::from_millis(5);
const BUSY_FOR: Duration = Duration::from_millis(200);

impl LocalInbox {
    fn take(&mut self, max: usize) -> Result<Vec<Delivery>> {
        let now = now_ms();
        let (queue, owner) = (self.queue.clone(), self.owner.clone());
        let rows = self.db.write_transaction(|db| {
            db.load_text(
                "UPDATE cqrs_local_messages SET lease_until = ?, lease_owner = ?, deliveries = deliveries + 1 \
                 WHERE id IN (SELECT id FROM cqrs_local_messages WHERE queue = ? AND visible_at <= ? \
                 AND (lease_until IS NULL OR lease_until < ?) ORDER BY id LIMIT ?) \
                 RETURNING json_object('id', id, 'routing_key', routing_key, 'body', CAST(body AS TEXT), \
                 'headers', headers, 'message_id', message_id, 'deliveries', deliveries) AS j",
                vec![
                    SqlValue::BigInt(now + self.lease_ms),
                    SqlValue::Text(owner),
                    SqlValue::Text(queue),
                    SqlValue::BigInt(now),
                    SqlValue::BigInt(now),
                    SqlValue::BigInt(max as i64),
                ],
            )
        })?;
        let mut out: Vec<Delivery> = rows
            .iter()
            .map(|j| {
                let r: Row = serde_json::from_str(j)
                    .map_err(|e| Error::new(ErrorKind::Transport, format!("queue row: {e}")))?;
                Ok(Delivery {
                    tag: r.id as u64,
                    routing_key: r.routing_key,
                    body: r.body.into_bytes(),
                    headers: serde_json::from_str(&r.headers).unwrap_or_default(),
                    redelivered: r.deliveries > 1,
                    message_id: r.message_id,
                })
            })
            .collect::<Result<_>>()?;
        out.sort_by_key(|d| d.tag);
        Ok(out)
    }
}

impl Inbox for LocalInbox {
    fn queue(&self) -> &str {
        &self.queue
    }

    fn receive(&mut self, max: usize, wait: Duration) -> Result<Vec<Delivery>> {
        let deadline = Instant::now() + wait;
        // Taking is a write transaction; while the queue is idle, look every CHECK_BUSY (or
        // CHECK_IDLE) whether another connection committed to the file (a publish) and take again
        // only then, or when the pause (2 ms doubling to 50 ms: delayed retries become visible
        // without a commit) has passed.
        let mut pause = Duration::from_millis(2);
        loop {
            // Read before taking: a publish committed while the take runs still changes it.
            let version = self.db.data_version()?;
            let got = self.take(max)?;
            if !got.is_empty() {
                self.last_delivery = Instant::now();
                return Ok(got);
            }
            if Instant::now() >= deadline {
                return Ok(got);
            }
            let until =
                Instant::now() + pause.min(deadline.saturating_duration_since(Instant::now()));
            let check = if self.last_delivery.elapsed() < BUSY_FOR {
                CHECK_BUSY
            } else {
                CHECK_IDLE
            };
            while Instant::now() < until && self.db.data_version()? == version {
                std::thread::sleep(check.min(until.saturating_duration_since(Instant::now())));
            }
            pause = (pause * 2).min(Duration::from_millis(50));
        }
    }

    fn ack_up_to(&mut self, tag: u64) -> Result<()> {
        let (queue, owner) = (self.queue.clone(), self.owner.clone());
        self.db.write_transaction(|db| {
            db.exec(
                "DELETE FROM cqrs_local_messages WHERE queue = ? AND lease_owner = ? AND id <= ?",
                vec![
                    SqlValue::Text(queue),
                    SqlValue::Text(owner),
                    SqlValue::BigInt(tag as i64),
                ],
            )
        })?;
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
        let key = directed_key(&self.queue, cqrs_id);
        let visible = now_ms() + delay.as_millis() as i64;
        let message = NewMessage {
            routing_key: &key,
            body: &body,
            headers: &headers,
            message_id: original.message_id.as_deref(),
            visible_at: visible,
            expires_at: None,
        };
        let n = self.db.write_transaction(|db| route_one(db, message))?;
        if n == 0 {
            return Err(Error::new(
                ErrorKind::Transport,
                format!("no queue is bound for {key:?}"),
            ));
        }
        Ok(())
    }

    fn publish_dead_letter(
        &mut self,
        original: &Delivery,
        cqrs_id: Option<&str>,
        headers: Headers,
        ttl: Duration,
    ) -> Result<()> {
        let now = now_ms();
        let expires = Some(now + ttl.as_millis() as i64);
        let queue = self.queue.clone();
        let dlq = dead_letter_queue(&queue);
        let key = cqrs_id.map(|id| dead_letter_key(&queue, id));
        self.db.write_transaction(|db| {
            let letter = |routing_key| NewMessage {
                routing_key,
                body: &original.body,
                headers: &headers,
                message_id: original.message_id.as_deref(),
                visible_at: now,
                expires_at: expires,
            };
            let routed = match &key {
                Some(key) => route_one(db, letter(key))?,
                None => 0,
            };
            if routed == 0 {
                // Straight to the dead-letter queue, as AMQP's default exchange would.
                insert(db, &[(dlq.clone(), &letter(&dlq))])?;
            }
            Ok(())
        })
    }

    fn requeue_unacked(&mut self) -> Result<()> {
        let (queue, owner) = (self.queue.clone(), self.owner.clone());
        self.db.write_transaction(|db| {
            db.exec(
                "UPDATE cqrs_local_messages SET lease_until = NULL, lease_owner = NULL WHERE queue = ? AND lease_owner = ?",
                vec![SqlValue::Text(queue), SqlValue::Text(owner)],
            )
        })?;
        Ok(())
    }
}

impl LocalTransport {
    /// A pass over `dead_letter_<queue>` (see [`Letters`]).
    pub fn letters(&self, queue: &str) -> Result<LocalLetters> {
        let mut db = self.connect()?;
        let dlq = dead_letter_queue(queue);
        let now = now_ms();
        // The letters present now (expired ones are gone, as RabbitMQ drops them at their TTL).
        db.write_transaction(|db| {
            db.exec(
                "DELETE FROM cqrs_local_messages WHERE queue = ? AND expires_at IS NOT NULL AND expires_at <= ?",
                vec![SqlValue::Text(dlq.clone()), SqlValue::BigInt(now)],
            )
        })?;
        let ids: Vec<i64> = db
            .load_text(
                "SELECT CAST(id AS TEXT) AS j FROM cqrs_local_messages WHERE queue = ? ORDER BY id",
                vec![SqlValue::Text(dlq.clone())],
            )?
            .iter()
            .filter_map(|s| s.parse().ok())
            .collect();
        Ok(LocalLetters {
            db,
            dlq,
            total: ids.len(),
            ids: ids.into_iter().rev().collect(),
        })
    }
}

/// A pass over a local dead-letter queue.
pub struct LocalLetters {
    db: Db,
    dlq: String,
    total: usize,
    /// Ids still to read, last first.
    ids: Vec<i64>,
}

impl Letters for LocalLetters {
    fn total(&self) -> usize {
        self.total
    }

    fn next_letter(&mut self) -> Result<Option<Letter>> {
        while let Some(id) = self.ids.pop() {
            let rows = self.db.load_text(
                "SELECT json_object('id', id, 'routing_key', routing_key, 'body', CAST(body AS TEXT), 'headers', headers, \
                 'message_id', message_id, 'deliveries', deliveries) AS j FROM cqrs_local_messages WHERE id = ?",
                vec![SqlValue::BigInt(id)],
            )?;
            if let Some(j) = rows.first() {
                let r: Row = serde_json::from_str(j)
                    .map_err(|e| Error::new(ErrorKind::Transport, format!("queue row: {e}")))?;
                return Ok(Some(Letter {
                    tag: r.id as u64,
                    routing_key: r.routing_key,
                    body: r.body.into_bytes(),
                    headers: serde_json::from_str(&r.headers).unwrap_or_default(),
                    message_id: r.message_id,
                }));
            }
        }
        Ok(None)
    }

    fn republish(
        &mut self,
        letter: &Letter,
        routing_key: &str,
        body: &[u8],
        headers: &Headers,
    ) -> Result<bool> {
        let message = NewMessage {
            routing_key,
            body,
            headers,
            message_id: letter.message_id.as_deref(),
            visible_at: now_ms(),
            expires_at: None,
        };
        let n = self.db.write_transaction(|db| route_one(db, message))?;
        Ok(n > 0)
    }

    fn remove(&mut self, letter: &Letter) -> Result<()> {
        let id = SqlValue::BigInt(letter.tag as i64);
        self.db.write_transaction(|db| {
            db.exec("DELETE FROM cqrs_local_messages WHERE id = ?", vec![id])
        })?;
        Ok(())
    }

    fn purge_all(&mut self) -> Result<usize> {
        let dlq = SqlValue::Text(self.dlq.clone());
        self.db.write_transaction(|db| {
            db.exec("DELETE FROM cqrs_local_messages WHERE queue = ?", vec![dlq])
        })
    }
}

/// [`Broker`] over a [`LocalTransport`].
struct LocalBroker(Arc<LocalTransport>);

/// The `sqlite:` row of the scheme table.
pub(crate) fn connect_broker(
    settings: &Settings,
    url: &str,
    _name: &str,
) -> Result<Box<dyn Broker>> {
    Ok(Box::new(LocalBroker(LocalTransport::open(
        url,
        settings.local_lease,
    )?)))
}

impl Broker for LocalBroker {
    /// Delays are not declared: a retry is stored with its visible-after time.
    fn declare_replica(
        &self,
        queue: &str,
        cqrs_ids: &[String],
        _delays: &[Duration],
    ) -> Result<()> {
        self.0.declare_replica(queue, cqrs_ids)
    }

    /// Every message of the queue is visible; `prefetch` is the consumer's batch size there.
    fn inbox(&self, queue: &str, _prefetch: u16, _delays: &[Duration]) -> Result<Box<dyn Inbox>> {
        Ok(Box::new(self.0.inbox(queue)?))
    }

    fn publisher(&self) -> Result<Box<dyn Publisher>> {
        Ok(Box::new(self.0.publisher()?))
    }

    fn letters(&self, queue: &str) -> Result<Box<dyn Letters>> {
        Ok(Box::new(self.0.letters(queue)?))
    }

    fn purge(&self, queue: &str) -> Result<usize> {
        self.0.purge(queue)
    }
}
