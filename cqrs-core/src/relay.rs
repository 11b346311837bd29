//! Stage 3: The relay: claim a batch of outbox rows -> set `expires`/`retries` -> publish with
//! confirms -> delete what was confirmed, release the rest for a later attempt.
//!
//! On PostgreSQL, when the relay knows its database's URL ([`Relay::reconnect_with`]), a batch is
//! claimed by deleting its rows in a transaction of its own connection that stays open until the
//! broker confirms them ([`outbox::take`]): committed when all went out, rolled back otherwise. That
//! is one write per row and one commit per batch, and no commit before the publish. Otherwise (SQLite,
//! whose one write lock cannot be held that long, or no URL for the extra connections) rows are
//! leased, then deleted ([`outbox::claim`]).
//!
//! Transport-agnostic: it publishes through [`Publisher`]. It wakes as soon as a capture
//! transaction commits: in-process through [`crate::outbox::wakeup`], from other processes on
//! PostgreSQL through the outbox's `NOTIFY` ([`crate::outbox::CHANNEL`]; an idle relay waits on
//! the listening connection's socket, a busy one checks every millisecond). It also polls:
//! immediately again while batches come back full, backing off to [`IDLE_POLL`] when the outbox
//! is empty, which is all SQLite has across processes.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use chrono::Utc;

use crate::backoff::Backoff;
use crate::config::Settings;
use crate::db::listen::Listener;
use crate::db::{Backend, Db, SqlConn};
use crate::error::{Error, Result};
use crate::message::{self, Message, SignalType};
use crate::outbox::{self, Claimed, Wakeup};
use crate::shutdown::Shutdown;
use crate::telemetry::Readiness;
use crate::transport::{
    Confirm, HEADER_DIRECTED, HEADER_PRODUCER, Headers, Outgoing, Publisher, Sent,
};

/// Longest sleep of an idle relay. A capture in the same process wakes it at once; another
/// process's commits wait at most this long.
pub const IDLE_POLL: Duration = Duration::from_millis(500);
/// A row whose publish failed is tried again after this delay.
const RETRY_DELAY: Duration = Duration::from_secs(1);
/// A message kept because no queue is bound for it (`keep_unroutable`) is tried again after this
/// delay: binding a queue is a deploy step, not a blip, and every try logs a warning.
const UNROUTABLE_RETRY: Duration = Duration::from_secs(5);
/// How long an idle relay, having told writers to notify it, waits for the transactions that
/// could not know before claiming once more (longer ones are found by its next poll).
const IDLE_SETTLE: Duration = Duration::from_millis(200);
/// How often a relay that has not announced itself idle checks for the outbox's notification
/// (a commit in this process wakes it at once).
const LISTEN_CHECK: Duration = Duration::from_millis(1);
/// How long a relay announced idle waits on the notification connection's socket before it
/// looks at the in-process signal (a notification wakes it at once; so does this process's
/// commit, whose outbox row notifies too).
const IDLE_SLICE: Duration = Duration::from_millis(10);
/// A lost listening connection is opened again after this delay (polling covers the gap).
const LISTEN_RETRY: Duration = Duration::from_secs(5);
/// Batches sent and not yet settled before the relay waits for the oldest one's confirms: the
/// broker confirms these while the database claims the next.
const IN_FLIGHT: usize = 3;
/// How often a relay with batches awaiting confirms and nothing new to claim checks for them
/// (and for a commit to claim).
const CONFIRM_CHECK: Duration = Duration::from_millis(1);
/// The shortest time [`Relay::drain_rows`] keeps trying before it reports what is left.
const DRAIN_AT_LEAST: Duration = Duration::from_secs(10);

/// How often a one-shot drain looks again for its rows while another relay publishes them.
const OTHERS_POLL: Duration = Duration::from_millis(20);

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
    readiness: Option<Readiness>,
    /// Connections with no batch held in them, for [`outbox::take`].
    lanes: Vec<Db>,
    /// The highest outbox id this relay has claimed (claims go oldest first).
    claimed_up_to: i64,
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
            readiness: None,
            lanes: Vec::new(),
            claimed_up_to: 0,
        }
    }

    /// Report to `readiness` (as part `relay`) whether each turn of [`Relay::run`] worked.
    pub fn report_to(mut self, readiness: Readiness) -> Self {
        readiness.set("relay", Err("starting".into()));
        self.readiness = Some(readiness);
        self
    }

    /// After a transient database error, [`Relay::run`] replaces a connection that no longer
    /// answers (the database restarted, a link was cut) with a new one to `url`. On PostgreSQL the
    /// relay also opens a connection to `url` per batch in flight (up to four), each holding its
    /// batch's rows deleted in a transaction until the broker confirms them: so a relay with a URL
    /// uses up to six connections (with the one it was given and the one listening for commits).
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
        match self.send_batch()? {
            None => Ok(0),
            Some(batch) => self.settle(batch),
        }
    }

    /// Send the next batch, then settle what is due: the oldest batch when [`IN_FLIGHT`] await
    /// their confirms (or, with `block_when_idle`, when nothing new was claimed), and any batch at
    /// the front whose confirms are already in. The database claims while the broker confirms.
    /// Returns how many rows the new batch holds. Batches may be confirmed out of order only when
    /// one fails, as with retries: the replica's revision check keeps the newest state.
    fn step(&mut self, in_flight: &mut VecDeque<InFlight>, block_when_idle: bool) -> Result<usize> {
        let next = self.send_batch();
        let wait_for_oldest = match &next {
            Ok(Some(_)) => in_flight.len() >= IN_FLIGHT,
            Ok(None) => block_when_idle,
            Err(_) => true,
        };
        let settled = self.settle_due(in_flight, wait_for_oldest);
        // A batch sent is settled by a later step even when this settle failed.
        let n = match next {
            Ok(Some(batch)) => {
                let n = batch.rows.len();
                in_flight.push_back(batch);
                n
            }
            Ok(None) => 0,
            Err(e) => return settled.and(Err(e)),
        };
        settled.map(|()| n)
    }

    /// Settle the batches at the front whose confirms are in; with `wait_for_oldest`, the oldest
    /// one in any case.
    fn settle_due(
        &mut self,
        in_flight: &mut VecDeque<InFlight>,
        wait_for_oldest: bool,
    ) -> Result<()> {
        let mut wait = wait_for_oldest;
        while let Some(oldest) = in_flight.pop_front() {
            if !wait && !oldest.sent.is_ready() {
                in_flight.push_front(oldest);
                break;
            }
            wait = false;
            self.settle(oldest)?;
        }
        Ok(())
    }

    /// Settle every batch in flight, logging failures (their leases bring the rows back).
    fn settle_all(&mut self, in_flight: &mut VecDeque<InFlight>) {
        while let Some(batch) = in_flight.pop_front() {
            if let Err(e) = self.settle(batch) {
                tracing::warn!("relay: settling a batch: {e}");
            }
        }
    }

    /// Claim a batch and send it without waiting for its confirms.
    fn send_batch(&mut self) -> Result<Option<InFlight>> {
        let now = Utc::now();
        let batch = self.settings.batch_size;
        // A claimed row is invisible to other relays for the lease; a relay killed mid-batch loses
        // nothing, its rows come back after it.
        let lease = self.settings.relay_lease;
        let started = Instant::now();
        let (rows, held) = match self.lane()? {
            Some(mut lane) => match take(&mut lane, batch, now) {
                Ok(rows) if rows.is_empty() => {
                    self.lanes.push(lane);
                    (rows, None)
                }
                Ok(rows) => (rows, Some(lane)),
                // The lane is dropped: a broken connection is not used again.
                Err(e) => return Err(e),
            },
            None => (
                self.db
                    .write_transaction(|db| outbox::claim(db, batch, lease, now))?,
                None,
            ),
        };
        if rows.is_empty() {
            return Ok(None);
        }
        let newest = rows.iter().map(|r| r.id).max().unwrap_or(0);
        self.claimed_up_to = self.claimed_up_to.max(newest);
        self.stats.claimed += rows.len();
        metrics::counter!("cqrs_relay_claimed_total").increment(rows.len() as u64);
        let claimed_at = Instant::now();
        let messages = match rows
            .iter()
            .map(|row| self.outgoing(row))
            .collect::<Result<Vec<_>>>()
        {
            Ok(m) => m,
            Err(e) => {
                self.give_back(held);
                return Err(e);
            }
        };
        let encoded_at = Instant::now();
        match self.publisher.send(&messages) {
            Ok(sent) => Ok(Some({
                metrics::counter!("cqrs_relay_published_total").increment(messages.len() as u64);
                InFlight {
                    rows,
                    messages,
                    sent,
                    held,
                    timings: Timings {
                        claim_ms: ms(claimed_at - started),
                        encode_ms: ms(encoded_at - claimed_at),
                        send_ms: ms(encoded_at.elapsed()),
                        sent_at: Instant::now(),
                    },
                }
            })),
            Err(e) => {
                self.give_back(held);
                Err(self.publish_failed(&rows, e))
            }
        }
    }

    /// A connection to hold the next batch in ([`outbox::take`]): a free one, or a new one to the
    /// relay's URL; `None` where batches are leased instead (SQLite, or no URL).
    fn lane(&mut self) -> Result<Option<Db>> {
        if let Some(lane) = self.lanes.pop() {
            return Ok(Some(lane));
        }
        let Some(url) = self.reconnect_url.as_deref() else {
            return Ok(None);
        };
        if self.db.backend() != Backend::Postgres {
            return Ok(None);
        }
        let mut lane = Db::connect(url)?;
        // A relay cut off from the database (not killed: its session would end) must not hold its
        // rows for longer than a lease would: the server ends the session, the rows come back.
        // The server takes at most i32::MAX ms (about 24 days).
        let lease_ms = self
            .settings
            .relay_lease
            .as_millis()
            .clamp(1, i32::MAX as u128);
        // Its commits need not wait for the disk: a commit lost in a server crash only brings its
        // rows back, to be published again, which at-least-once delivery allows anyway.
        lane.batch_execute(&format!(
            "SET idle_in_transaction_session_timeout = {lease_ms}; SET synchronous_commit = off"
        ))?;
        Ok(Some(lane))
    }

    /// Roll back a held batch (its rows are in the outbox again) and keep the connection if that
    /// worked.
    fn give_back(&mut self, held: Option<Db>) {
        if let Some(mut lane) = held {
            match lane.rollback() {
                Ok(()) => self.lanes.push(lane),
                Err(e) => tracing::debug!("relay: rolling back a held batch: {e}"),
            }
        }
    }

    /// Give a batch whose publish failed back to the outbox, to be tried after [`RETRY_DELAY`].
    fn publish_failed(&mut self, rows: &[Claimed], e: Error) -> Error {
        self.stats.failed += rows.len();
        metrics::counter!("cqrs_relay_messages_total", "outcome" => "failed")
            .increment(rows.len() as u64);
        let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
        let retry_at = Utc::now() + chrono::Duration::from_std(RETRY_DELAY).unwrap_or_default();
        if let Err(release) = self
            .db
            .write_transaction(|db| outbox::release(db, &ids, retry_at))
        {
            // The lease brings them back instead.
            tracing::warn!("relay: releasing a batch that failed to publish: {release}");
        }
        e.context("publishing an outbox batch")
    }

    /// Wait for a batch's confirms, then delete what was delivered and release the rest.
    fn settle(&mut self, batch: InFlight) -> Result<usize> {
        let InFlight {
            rows,
            messages,
            sent,
            mut held,
            timings,
        } = batch;
        let confirms = match sent.confirms() {
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
                self.give_back(held);
                return Err(self.publish_failed(&rows, e));
            }
        };
        crate::crash::point("relay.after_confirm");
        let confirmed_at = Instant::now();
        let (mut done, mut failed, mut kept) = (Vec::new(), Vec::new(), Vec::new());
        let mut unroutable: BTreeMap<&str, usize> = BTreeMap::new();
        let before = self.stats;
        for ((row, msg), confirm) in rows.iter().zip(&messages).zip(confirms) {
            match confirm {
                Confirm::Delivered => {
                    self.stats.published += 1;
                    done.push(row.id);
                }
                Confirm::Unroutable => {
                    if tracing::enabled!(tracing::Level::DEBUG) {
                        let (pk, revision) = pk_and_revision(row);
                        tracing::debug!(routing_key = %msg.routing_key, cqrs_id = %row.cqrs_id, pk, revision, message_id = %row.message_id, "no queue is bound for this routing key");
                    }
                    self.stats.unroutable += 1;
                    *unroutable.entry(row.cqrs_id.as_str()).or_default() += 1;
                    if self.settings.keep_unroutable {
                        kept.push(row.id);
                    } else {
                        done.push(row.id);
                    }
                }
                Confirm::Failed(why) => {
                    let (pk, revision) = pk_and_revision(row);
                    tracing::warn!(routing_key = %msg.routing_key, cqrs_id = %row.cqrs_id, pk, revision, message_id = %row.message_id, attempts = row.attempts, "publish not confirmed, will retry: {why}");
                    self.stats.failed += 1;
                    failed.push(row.id);
                }
            }
        }
        // Counted once per batch: the recorder looks each series up by name.
        for (outcome, n) in [
            ("confirmed", self.stats.published - before.published),
            ("unroutable", self.stats.unroutable - before.unroutable),
            ("failed", self.stats.failed - before.failed),
        ] {
            if n > 0 {
                metrics::counter!("cqrs_relay_messages_total", "outcome" => outcome)
                    .increment(n as u64);
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
        if let Some(mut lane) = held.take() {
            if failed.is_empty() && kept.is_empty() {
                // Every row went out: the held deletes stand.
                lane.commit()?;
                self.lanes.push(lane);
                return Ok(timings.log(rows.len(), confirmed_at));
            }
            // Rare: undo the batch's deletes, then delete and release as leased rows are (another
            // relay may take them in between; it publishes them again, as after a crash).
            lane.rollback()?;
            self.lanes.push(lane);
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
        Ok(timings.log(rows.len(), confirmed_at))
    }

    fn outgoing(&self, row: &Claimed) -> Result<Outgoing> {
        let mut headers = Headers::new();
        headers.insert(HEADER_PRODUCER.into(), self.settings.service_name.clone());
        // Set at publish time, not at capture: a relay outage longer than the TTL must not
        // dead-letter the backlog.
        let ttl = chrono::Duration::from_std(self.settings.model(&row.cqrs_id).message_ttl())
            .map_err(|e| Error::config(e.to_string()))?;
        let (signal_type, body) = match message::restamp(row.body.as_bytes(), Utc::now() + ttl) {
            Ok(stamped) => stamped,
            Err(e) => {
                // Not written by capture (edited by hand, another writer): it must not hold up
                // every row behind it. It goes out as it is; a replica dead-letters it as
                // malformed, where it can be read.
                tracing::error!(outbox_id = row.id, cqrs_id = %row.cqrs_id, message_id = %row.message_id, "outbox row is not a valid message, published unchanged: {e}");
                return Ok(Outgoing {
                    routing_key: row.routing_key.clone(),
                    body: row.body.clone().into_bytes(),
                    headers,
                    message_id: row.message_id.clone(),
                });
            }
        };
        if signal_type == SignalType::Sync && row.routing_key.starts_with("cqrs.") {
            headers.insert(HEADER_DIRECTED.into(), "true".into());
        }
        Ok(Outgoing {
            routing_key: row.routing_key.clone(),
            body,
            headers,
            message_id: row.message_id.clone(),
        })
    }

    /// Relay until the outbox rows `ids` are published, failing if the broker did not confirm
    /// them all (one-shot commands that publish what they wrote: `sync`, `diff-sync`). Other
    /// rows go out on the way, oldest first, but are not waited for. A row another relay has
    /// claimed is its to publish: this waits for it to go from the outbox (confirmed), or for
    /// that relay's lease to lapse (then it is claimed here). It fails, naming how many rows
    /// are left, only after a lease (at least 10 s) and 10 s more without progress.
    pub fn drain_rows(&mut self, ids: &[i64]) -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        // Rows the broker keeps refusing are retried with other traffic flowing, and rows
        // another relay holds may only come back when its lease lapses: give up after a lease
        // and then some without progress rather than never return. Progress (claims moving on
        // toward our newest row, or ours leaving the outbox) starts the wait again, so a large
        // sync is not cut short.
        let patience = self.settings.relay_lease.max(DRAIN_AT_LEAST) + DRAIN_AT_LEAST;
        let mut deadline = Instant::now() + patience;
        let newest = ids.iter().copied().max().unwrap_or(0);
        let mut in_flight = VecDeque::new();
        let mut left = outbox::pending_of(&mut self.db, ids)?;
        while left > 0 && Instant::now() < deadline {
            // Batches in flight as in `drain`: the next claim overlaps the last one's confirms.
            let reached = self.claimed_up_to;
            let n = match self.step(&mut in_flight, true) {
                Ok(n) => n,
                Err(e) => {
                    self.settle_all(&mut in_flight);
                    return Err(e);
                }
            };
            // Claims go oldest first: claiming further toward our newest row is progress (a row
            // claimed again, refused by the broker and kept, is not; nor is other traffic past it).
            if self.claimed_up_to > reached && reached < newest {
                deadline = Instant::now() + patience;
            }
            // Until the claims pass our newest row, the rows of ours not claimed yet are still
            // ahead: counting them is a statement over every id, too dear to run per batch of a
            // sync of a whole table.
            if n > 0 && self.claimed_up_to < newest {
                continue;
            }
            let now_left = outbox::pending_of(&mut self.db, ids)?;
            if now_left < left {
                deadline = Instant::now() + patience;
            }
            left = now_left;
            if left > 0 && n == 0 && in_flight.is_empty() {
                // Nothing to claim, ours still there: leased by another relay (or set aside to
                // retry later).
                std::thread::sleep(OTHERS_POLL);
            }
        }
        // Other rows still in flight: settle them rather than leave them to their leases.
        self.settle_all(&mut in_flight);
        if left > 0 {
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
            announced: false,
            announcing: true,
        };
        let mut in_flight = VecDeque::new();
        // Whether to claim this turn: always, except while batches await their confirms and no
        // commit has been signalled since the last claim.
        let mut claim = true;
        let mut link = BrokerLink::default();
        let mut progress = crate::telemetry::Progress::new("relay");
        while !shutdown.is_triggered() {
            let s = self.stats;
            progress.tick(s.published, || {
                format!(
                    "{} published in all, {} unroutable, {} failed",
                    s.published, s.unroutable, s.failed
                )
            });
            let turn = if claim {
                self.step(&mut in_flight, false)
            } else {
                self.settle_due(&mut in_flight, false).map(|()| 0)
            };
            if matches!(turn, Ok(0)) && in_flight.is_empty() {
                // Nothing published this turn: ask the broker link itself, so readiness turns
                // false while it is down and the link is back before the next commit.
                if let Err(e) = self.publisher.check() {
                    self.ready(Err(format!("broker: {e}")));
                    if link.lost(&e, shutdown) {
                        break;
                    }
                    continue;
                }
                link.up();
            }
            self.ready(turn.as_ref().map(|_| ()).map_err(|e| e.to_string()));
            match turn {
                Ok(n) if n > 0 => {
                    waiter.busy();
                    idle = Duration::from_millis(10);
                    claim = true;
                    continue;
                }
                // Confirms outstanding: a commit meanwhile is claimed at once rather than after
                // them; otherwise settle each batch as its confirms come in.
                Ok(_) if !in_flight.is_empty() => {
                    let (now, signalled) = waiter.wait(wake, seen, CONFIRM_CHECK);
                    seen = now;
                    claim = signalled;
                    continue;
                }
                // Writers do not notify a relay that is not idle: a turn that only settled
                // confirms claims before the relay decides to sleep.
                Ok(_) if !claim => {
                    claim = true;
                    continue;
                }
                // Nothing to claim: tell writers to notify, then claim once more for what
                // committed while they could not know.
                Ok(_) if waiter.idle() => {
                    claim = true;
                    continue;
                }
                Ok(_) => idle = (idle * 2).min(IDLE_POLL),
                Err(e) => {
                    tracing::warn!("relay: {e}");
                    if shutdown.sleep(RETRY_DELAY) {
                        break;
                    }
                    if e.is_transient() {
                        // Free held-batch connections may be as dead as this one: open new ones.
                        self.lanes.clear();
                        metrics::counter!("cqrs_reconnects_total", "role" => "relay").increment(1);
                        if let Some(url) = &self.reconnect_url
                            && let Err(e) = self.db.heal(url)
                        {
                            tracing::warn!("relay: reconnecting to the database failed: {e}");
                        }
                    }
                }
            }
            seen = waiter.wait(wake, seen, idle).0;
            claim = true;
        }
        waiter.busy();
        self.settle_all(&mut in_flight);
        Ok(())
    }

    fn ready(&self, state: std::result::Result<(), String>) {
        if let Some(ready) = &self.readiness {
            ready.set("relay", state);
        }
    }

    /// Relay until the outbox has nothing available, with batches in flight as [`Relay::run`]
    /// has them; returns how many rows were relayed.
    pub fn drain(&mut self) -> Result<usize> {
        self.drain_until(None)
    }

    /// [`Relay::drain`], claiming no new batch after `deadline` (the batches in flight then are
    /// still settled): what a relay stopping inside a service does with the time it is given.
    pub fn drain_within(&mut self, deadline: Instant) -> Result<usize> {
        self.drain_until(Some(deadline))
    }

    fn drain_until(&mut self, deadline: Option<Instant>) -> Result<usize> {
        let mut in_flight = VecDeque::new();
        let mut total = 0;
        loop {
            if deadline.is_some_and(|d| Instant::now() >= d) {
                self.settle_all(&mut in_flight);
                return Ok(total);
            }
            match self.step(&mut in_flight, true) {
                Ok(0) if in_flight.is_empty() => return Ok(total),
                Ok(n) => total += n,
                Err(e) => {
                    self.settle_all(&mut in_flight);
                    return Err(e);
                }
            }
        }
    }
}

/// The idle relay's view of its broker link: one warning and one counted reconnect per lost
/// link, retried with the reconnect backoff (a database error is not the broker's: no heal).
struct BrokerLink {
    down: bool,
    backoff: Backoff,
}

impl Default for BrokerLink {
    fn default() -> Self {
        BrokerLink {
            down: false,
            backoff: Backoff::reconnect(),
        }
    }
}

impl BrokerLink {
    /// The link failed its check: say so once, then wait the backoff; `true` if `shutdown` fired.
    fn lost(&mut self, e: &Error, shutdown: &Shutdown) -> bool {
        if !self.down {
            self.down = true;
            metrics::counter!("cqrs_reconnects_total", "role" => "relay").increment(1);
            tracing::warn!("relay: lost the broker link while idle, reconnecting: {e}");
        } else {
            tracing::debug!("relay: broker still unreachable: {e}");
        }
        self.backoff.sleep(shutdown)
    }

    /// The link answered.
    fn up(&mut self) {
        if self.down {
            tracing::info!("relay: broker link back");
            self.down = false;
            self.backoff.reset();
        }
    }
}

/// A batch sent whose confirms are not settled yet.
struct InFlight {
    rows: Vec<Claimed>,
    messages: Vec<Outgoing>,
    sent: Sent,
    /// The connection whose open transaction deleted `rows` ([`outbox::take`]), if taken so.
    held: Option<Db>,
    timings: Timings,
}

/// Where a batch's time went, logged at debug level when it is settled.
struct Timings {
    /// Claiming its rows (the database).
    claim_ms: f64,
    /// Framing its messages.
    encode_ms: f64,
    /// Handing them to the publisher.
    send_ms: f64,
    sent_at: Instant,
}

impl Timings {
    /// Log them; returns `rows`.
    fn log(&self, rows: usize, confirmed_at: Instant) -> usize {
        tracing::debug!(
            rows,
            claim_ms = self.claim_ms,
            encode_ms = self.encode_ms,
            send_ms = self.send_ms,
            confirm_ms = ms(confirmed_at - self.sent_at),
            settle_ms = ms(confirmed_at.elapsed()),
            "relay batch"
        );
        rows
    }
}

/// [`outbox::take`] in a transaction left open on `lane` (rolled back if nothing was taken or the
/// statement failed).
fn take(lane: &mut Db, limit: usize, now: chrono::DateTime<Utc>) -> Result<Vec<Claimed>> {
    lane.begin()?;
    match outbox::take(lane, limit, now) {
        Ok(rows) if !rows.is_empty() => Ok(rows),
        other => {
            lane.rollback()?;
            other
        }
    }
}

/// Milliseconds, for logs.
fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// How an idle relay waits: for the in-process wakeup, and, when it has its database's URL, for
/// other processes' commits (the outbox's notification on PostgreSQL, the file's data version on
/// SQLite).
struct Idle {
    url: Option<String>,
    listener: Option<Listener>,
    retry_at: Instant,
    /// Whether the listener has said it is idle (writers notify it).
    announced: bool,
    /// False once announcing failed on a schema without `cqrs_relay_idle` (whose trigger
    /// notifies every commit).
    announcing: bool,
}

impl Idle {
    /// Announce the relay idle if it has a listener and has not yet (see
    /// [`Listener::announce_idle`]); true if it announced now, so the caller claims once more
    /// before sleeping.
    fn idle(&mut self) -> bool {
        self.open();
        if self.announced || !self.announcing {
            return false;
        }
        let Some(listener) = self.listener.as_mut() else {
            return false;
        };
        match listener.announce_idle(IDLE_SETTLE) {
            Ok(settled) => {
                if !settled {
                    tracing::debug!(
                        "relay: transactions older than the idle announcement still running after {IDLE_SETTLE:?}; the idle poll covers them"
                    );
                }
                self.announced = true;
                true
            }
            Err(e) => {
                // The listener's connection may be gone: `wait` finds out and listens again.
                tracing::debug!(
                    "relay: cannot announce itself idle ({e}); writers notify every commit"
                );
                self.announcing = false;
                false
            }
        }
    }

    /// The relay is publishing again: writers may stop notifying.
    fn busy(&mut self) {
        if !self.announced {
            return;
        }
        self.announced = false;
        if let Some(listener) = self.listener.as_mut()
            && let Err(e) = listener.announce_busy()
        {
            tracing::debug!("relay: cannot announce itself busy ({e})");
        }
    }

    /// Wait until a commit is signalled or `timeout` passes: the in-process generation, and
    /// whether a commit was signalled (in this process or by a notification).
    fn wait(&mut self, wake: &Wakeup, seen: u64, timeout: Duration) -> (u64, bool) {
        self.open();
        let deadline = Instant::now() + timeout;
        let in_process = |generation: u64| (generation, generation != seen);
        let announced = self.announced;
        let Some(listener) = self.listener.as_mut() else {
            return in_process(wake.wait(seen, timeout));
        };
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            // Announced idle, every commit notifies (this process's too): wait on the
            // notification itself, looking at the in-process signal between slices. Otherwise
            // only this process's commits signal: wait on that, looking for a notification
            // between checks.
            let waited = if announced {
                listener.wait(IDLE_SLICE.min(left))
            } else {
                listener.notified()
            };
            match waited {
                Ok(true) => return (wake.generation(), true),
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(
                        "relay: lost the outbox notification connection ({e}); polling until it is back"
                    );
                    self.listener = None;
                    self.announced = false;
                    self.retry_at = Instant::now() + LISTEN_RETRY;
                    let left = deadline.saturating_duration_since(Instant::now());
                    return in_process(wake.wait(seen, left));
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            let generation = if announced {
                wake.generation()
            } else {
                wake.wait(seen, LISTEN_CHECK.min(left))
            };
            if generation != seen || left.is_zero() {
                return in_process(generation);
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
            Ok(l) => {
                // A new session: whatever the old one announced went with it.
                self.listener = Some(l);
                self.announced = false;
                self.announcing = true;
            }
            Err(e) => {
                tracing::warn!("relay: cannot listen for outbox notifications ({e}); polling");
                self.retry_at = Instant::now() + LISTEN_RETRY;
            }
        }
    }
}

/// The key and revision a claimed row's body names, for a line about that message (decoded
/// again: only the rare paths log one).
fn pk_and_revision(row: &Claimed) -> (Option<String>, Option<i32>) {
    match Message::decode(row.body.as_bytes()) {
        Ok(m) => (Some(m.instance_pk.to_string()), m.revision().ok()),
        Err(_) => (None, None),
    }
}
