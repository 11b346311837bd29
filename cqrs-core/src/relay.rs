//! Stage 3: The relay: claim a batch of outbox rows -> set `expires`/`retries` -> publish with
//! confirms -> delete what was confirmed, release the rest for a later attempt.
//!
//! Transport-agnostic: it publishes through [`Publisher`]. It wakes as soon as a capture
//! transaction commits: in-process through [`crate::outbox::wakeup`], from other processes on
//! PostgreSQL through the outbox's `NOTIFY` ([`crate::outbox::CHANNEL`], checked every
//! millisecond while idle). It also polls: immediately again while batches come back full, backing
//! off to [`IDLE_POLL`] when the outbox is empty, which is all SQLite has across processes.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use chrono::Utc;

use crate::config::Settings;
use crate::db::Db;
use crate::db::listen::Listener;
use crate::error::{Error, Result};
use crate::message::{Expires, Message, SignalType};
use crate::outbox::{self, Claimed, Wakeup};
use crate::shutdown::Shutdown;
use crate::transport::{Confirm, HEADER_DIRECTED, HEADER_PRODUCER, Headers, Outgoing, Publisher};

/// Longest sleep of an idle relay. A capture in the same process wakes it at once; another
/// process's commits wait at most this long.
pub const IDLE_POLL: Duration = Duration::from_millis(500);
/// A row whose publish failed is tried again after this delay.
const RETRY_DELAY: Duration = Duration::from_secs(1);
/// A message kept because no queue is bound for it (`keep_unroutable`) is tried again after this
/// delay: binding a queue is a deploy step, not a blip, and every try logs a warning.
const UNROUTABLE_RETRY: Duration = Duration::from_secs(5);
/// How often an idle relay checks for the outbox's notification.
const LISTEN_CHECK: Duration = Duration::from_millis(1);
/// A lost listening connection is opened again after this delay (polling covers the gap).
const LISTEN_RETRY: Duration = Duration::from_secs(5);
/// The shortest time [`Relay::drain_rows`] keeps trying before it reports what is left.
const DRAIN_AT_LEAST: Duration = Duration::from_secs(10);

/// Counters of a relay.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RelayStats {
    /// Rows claimed.
    pub claimed: usize,
    /// Messages confirmed and routed.
    pub published: usize,
    /// Messages confirmed but routed nowhere (no queue bound): counted and logged per model, then
    /// deleted as django-cqrs does, or kept in the outbox with `keep_unroutable`.
    pub unroutable: usize,
    /// Messages that failed and went back to the outbox.
    pub failed: usize,
}

/// Moves outbox rows to a broker.
pub struct Relay<P: Publisher> {
    db: Db,
    publisher: P,
    settings: Settings,
    stats: RelayStats,
    unroutable: BTreeMap<String, usize>,
    reconnect_url: Option<String>,
}

impl<P: Publisher> Relay<P> {
    /// A relay from `db`'s outbox to `publisher`.
    pub fn new(db: Db, publisher: P, settings: Settings) -> Self {
        Relay {
            db,
            publisher,
            settings,
            stats: RelayStats::default(),
            unroutable: BTreeMap::new(),
            reconnect_url: None,
        }
    }

    /// After a transient database error, [`Relay::run`] replaces a connection that no longer
    /// answers (the database restarted, a link was cut) with a new one to `url`.
    pub fn reconnect_with(mut self, url: impl Into<String>) -> Self {
        self.reconnect_url = Some(url.into());
        self
    }

    /// Unroutable messages so far, per `cqrs_id`.
    pub fn unroutable_by_model(&self) -> &BTreeMap<String, usize> {
        &self.unroutable
    }

    /// Counters so far.
    pub fn stats(&self) -> RelayStats {
        self.stats
    }

    /// The publisher (tests inspect it).
    pub fn publisher(&mut self) -> &mut P {
        &mut self.publisher
    }

    /// Claim, publish and settle one batch; returns how many rows were claimed.
    pub fn run_once(&mut self) -> Result<usize> {
        let now = Utc::now();
        let batch = self.settings.batch_size;
        // A claimed row is invisible to other relays for the lease; a relay killed mid-batch loses
        // nothing, its rows come back after it.
        let lease = self.settings.relay_lease;
        let started = Instant::now();
        let claimed = self
            .db
            .write_transaction(|db| outbox::claim(db, batch, lease, now))?;
        if claimed.is_empty() {
            return Ok(0);
        }
        self.stats.claimed += claimed.len();
        let messages = claimed
            .iter()
            .map(|row| self.outgoing(row))
            .collect::<Result<Vec<_>>>()?;
        let ids: Vec<i64> = claimed.iter().map(|r| r.id).collect();
        let claimed_at = Instant::now();
        let confirms = match self.publisher.publish(&messages) {
            Ok(c) if c.len() == messages.len() => c,
            Ok(c) => vec![
                Confirm::Failed(format!(
                    "{} confirms for {} messages",
                    c.len(),
                    messages.len()
                ));
                messages.len()
            ],
            Err(e) => {
                self.stats.failed += ids.len();
                let retry_at =
                    Utc::now() + chrono::Duration::from_std(RETRY_DELAY).unwrap_or_default();
                self.db
                    .write_transaction(|db| outbox::release(db, &ids, retry_at))?;
                return Err(e.context("publishing an outbox batch"));
            }
        };
        crate::crash::point("relay.after_confirm");
        let confirmed_at = Instant::now();
        let (mut done, mut failed, mut kept) = (Vec::new(), Vec::new(), Vec::new());
        let mut unroutable: BTreeMap<&str, usize> = BTreeMap::new();
        for ((row, msg), confirm) in claimed.iter().zip(&messages).zip(confirms) {
            match confirm {
                Confirm::Delivered => {
                    self.stats.published += 1;
                    done.push(row.id);
                }
                Confirm::Unroutable => {
                    tracing::debug!(routing_key = %msg.routing_key, cqrs_id = %row.cqrs_id, "no queue is bound for this routing key");
                    self.stats.unroutable += 1;
                    *unroutable.entry(row.cqrs_id.as_str()).or_default() += 1;
                    if self.settings.keep_unroutable {
                        kept.push(row.id);
                    } else {
                        done.push(row.id);
                    }
                }
                Confirm::Failed(why) => {
                    tracing::warn!(routing_key = %msg.routing_key, attempts = row.attempts, "publish not confirmed, will retry: {why}");
                    self.stats.failed += 1;
                    failed.push(row.id);
                }
            }
        }
        for (cqrs_id, n) in unroutable {
            let total = self.unroutable.entry(cqrs_id.to_string()).or_default();
            *total += n;
            let fate = if self.settings.keep_unroutable {
                "kept in the outbox until a queue binds (keep_unroutable), tried again every 5 s"
            } else {
                "dropped, as django-cqrs does (set keep_unroutable to keep them)"
            };
            tracing::warn!(
                cqrs_id,
                count = n,
                total = *total,
                "no queue is bound for {n} message(s) of {cqrs_id} ({total} so far): {fate}"
            );
        }
        self.db.write_transaction(|db| {
            outbox::delete(db, &done)?;
            for (ids, delay) in [(&failed, RETRY_DELAY), (&kept, UNROUTABLE_RETRY)] {
                if !ids.is_empty() {
                    let at = Utc::now() + chrono::Duration::from_std(delay).unwrap_or_default();
                    outbox::release(db, ids, at)?;
                }
            }
            Ok(())
        })?;
        tracing::debug!(
            rows = claimed.len(),
            claim_ms = ms(claimed_at - started),
            publish_ms = ms(confirmed_at - claimed_at),
            settle_ms = ms(confirmed_at.elapsed()),
            "relay batch"
        );
        Ok(claimed.len())
    }

    fn outgoing(&self, row: &Claimed) -> Result<Outgoing> {
        let mut headers = Headers::new();
        headers.insert(HEADER_PRODUCER.into(), self.settings.service_name.clone());
        let mut m = match Message::decode(row.body.as_bytes()) {
            Ok(m) => m,
            Err(e) => {
                // Not written by capture (edited by hand, another writer): it must not hold up
                // every row behind it. It goes out as it is; a replica dead-letters it as
                // malformed, where it can be read.
                tracing::error!(outbox_id = row.id, cqrs_id = %row.cqrs_id, "outbox row is not a valid message, published unchanged: {e}");
                return Ok(Outgoing {
                    routing_key: row.routing_key.clone(),
                    body: row.body.clone().into_bytes(),
                    headers,
                    message_id: row.message_id.clone(),
                });
            }
        };
        // Set at publish time, not at capture: a relay outage longer than the TTL must not
        // dead-letter the backlog.
        let ttl = chrono::Duration::from_std(self.settings.message_ttl)
            .map_err(|e| Error::config(e.to_string()))?;
        m.expires = Expires::At(Utc::now() + ttl);
        m.retries = 0;
        if m.signal_type == SignalType::Sync && row.routing_key.starts_with("cqrs.") {
            headers.insert(HEADER_DIRECTED.into(), "true".into());
        }
        Ok(Outgoing {
            routing_key: row.routing_key.clone(),
            body: m.encode(),
            headers,
            message_id: row.message_id.clone(),
        })
    }

    /// Relay until the outbox rows `ids` are published, failing if the broker did not confirm
    /// them all (one-shot commands that publish what they wrote: `sync`, `diff-sync`). Other
    /// rows go out on the way, oldest first, but are not waited for.
    pub fn drain_rows(&mut self, ids: &[i64]) -> Result<()> {
        // Rows the broker keeps refusing are retried with other traffic flowing: give up after a
        // lease's worth of attempts rather than never return.
        let deadline = std::time::Instant::now() + self.settings.relay_lease.max(DRAIN_AT_LEAST);
        let mut left = outbox::pending_of(&mut self.db, ids)?;
        while left > 0 && std::time::Instant::now() < deadline && self.run_once()? > 0 {
            left = outbox::pending_of(&mut self.db, ids)?;
        }
        if left > 0 {
            return Err(Error::new(
                crate::error::ErrorKind::Transport,
                format!(
                    "{left} outbox row(s) were not confirmed by the broker; a relay will retry them"
                ),
            ));
        }
        Ok(())
    }

    /// Relay until `shutdown` fires: drain while there is a backlog, then sleep until woken by a
    /// capture in this process or until the poll interval passes (doubling from 10 ms to
    /// [`IDLE_POLL`] while idle). Errors are logged and retried after a pause.
    pub fn run(&mut self, shutdown: &Shutdown) -> Result<()> {
        let wake = outbox::wakeup();
        let mut idle = Duration::from_millis(10);
        let mut seen = wake.generation();
        let mut waiter = Idle {
            url: self.reconnect_url.clone(),
            listener: None,
            retry_at: Instant::now(),
        };
        while !shutdown.is_triggered() {
            match self.run_once() {
                Ok(n) if n >= self.settings.batch_size => {
                    idle = Duration::from_millis(10);
                    continue;
                }
                Ok(0) => idle = (idle * 2).min(IDLE_POLL),
                Ok(_) => idle = Duration::from_millis(10),
                Err(e) => {
                    tracing::warn!("relay: {e}");
                    if shutdown.sleep(RETRY_DELAY) {
                        break;
                    }
                    if e.is_transient()
                        && let Some(url) = &self.reconnect_url
                        && let Err(e) = self.db.heal(url)
                    {
                        tracing::warn!("relay: reconnecting to the database failed: {e}");
                    }
                }
            }
            seen = waiter.wait(wake, seen, idle);
        }
        Ok(())
    }
}

/// Milliseconds, for logs.
fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// How an idle relay waits: for the in-process wakeup, and, when it has a PostgreSQL URL, for the
/// outbox's notification from other processes' commits.
struct Idle {
    url: Option<String>,
    listener: Option<Listener>,
    retry_at: Instant,
}

impl Idle {
    /// Wait until a commit is signalled or `timeout` passes; the in-process generation.
    fn wait(&mut self, wake: &Wakeup, seen: u64, timeout: Duration) -> u64 {
        self.open();
        let deadline = Instant::now() + timeout;
        let Some(listener) = self.listener.as_mut() else {
            return wake.wait(seen, timeout);
        };
        loop {
            match listener.notified() {
                Ok(true) => return wake.generation(),
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(
                        "relay: lost the outbox notification connection ({e}); polling until it is back"
                    );
                    self.listener = None;
                    self.retry_at = Instant::now() + LISTEN_RETRY;
                    return wake.wait(seen, deadline.saturating_duration_since(Instant::now()));
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            let generation = wake.wait(seen, LISTEN_CHECK.min(left));
            if generation != seen || left.is_zero() {
                return generation;
            }
        }
    }

    /// Listen on the outbox channel if there is a PostgreSQL URL and no listener yet.
    fn open(&mut self) {
        if self.listener.is_some() || Instant::now() < self.retry_at {
            return;
        }
        let Some(url) = self.url.as_deref() else {
            return;
        };
        match Listener::listen(url, outbox::CHANNEL) {
            Ok(Some(l)) => self.listener = Some(l),
            // SQLite: nothing to listen to.
            Ok(None) => self.url = None,
            Err(e) => {
                tracing::warn!("relay: cannot listen for outbox notifications ({e}); polling");
                self.retry_at = Instant::now() + LISTEN_RETRY;
            }
        }
    }
}
