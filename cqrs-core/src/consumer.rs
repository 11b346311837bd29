//! Stage 5: The consumer engine, transport-agnostic: deliveries -> decode -> batch per model -> apply in
//! one transaction -> retry or dead-letter what failed -> ack.
//!
//! Outcome classes (ARCHITECTURE.md §5): malformed, too-large, unknown-model and expired messages
//! are dead-lettered at once; apply errors are retried with a delay, counting `retries`, then
//! dead-lettered; transient errors spend no retry: the batch is held, the engine backs off and
//! redoes it. A batch that fails as a whole (a constraint) is split in halves until the failing
//! message stands alone, so the rest of the batch still applies.
//!
//! Acks go out only after the transaction committed and every retry or dead-letter copy was
//! confirmed, with `multiple` up to the highest tag below which everything is final.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::Utc;

use crate::backoff::Backoff;
use crate::config::Settings;
use crate::db::Db;
use crate::error::{Error, ErrorKind, Result};
use crate::message::{Expires, Message, SignalType};
use crate::model::{ApplyStats, Change, Outcome, Retry};
use crate::registry::Registry;
use crate::shutdown::Shutdown;
use crate::telemetry::Readiness;
use crate::transport::{
    Delivery, HEADER_DIRECTED, HEADER_ERROR, HEADER_ERROR_KIND, Headers, Inbox, directed_key,
};

/// How long `receive` waits for the first delivery of a batch; bounds shutdown latency when idle.
const RECEIVE_WAIT: Duration = Duration::from_millis(200);

/// Counters over the life of a [`Consumer`].
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ConsumerStats {
    /// Deliveries received.
    pub received: usize,
    /// Transactions committed.
    pub batches: usize,
    /// Apply counters summed over batches.
    pub apply: ApplyStats,
    /// Retry copies published.
    pub retried: usize,
    /// Dead letters published.
    pub dead_lettered: usize,
    /// Transient failures that were redone.
    pub transient_redos: usize,
    /// Batches split to isolate a failing message.
    pub splits: usize,
}

impl std::ops::AddAssign for ConsumerStats {
    fn add_assign(&mut self, o: Self) {
        self.received += o.received;
        self.batches += o.batches;
        self.apply += o.apply;
        self.retried += o.retried;
        self.dead_lettered += o.dead_lettered;
        self.transient_redos += o.transient_redos;
        self.splits += o.splits;
    }
}

/// What happens to one delivery once the batch is done.
enum Fate {
    Done,
    Retry {
        cqrs_id: String,
        body: Vec<u8>,
        headers: Headers,
        delay: Duration,
    },
    DeadLetter {
        cqrs_id: Option<String>,
        kind: ErrorKind,
        reason: String,
        /// How a SYNC was judged on receipt (`None`: not a SYNC, or not decoded).
        directed: Option<bool>,
    },
}

/// A delivery refused by the envelope checks, with what is known of it.
struct Rejected {
    cqrs_id: Option<String>,
    /// The key and revision, when the body decoded.
    pk: Option<String>,
    revision: Option<i32>,
    directed: Option<bool>,
    error: Error,
}

/// The `cqrs-directed` header of a copy (retry, dead letter): the judgement travels either way,
/// so a broadcast SYNC brought back with `retries` 0 on `cqrs.<queue>.<id>` stays broadcast.
fn directed_header(headers: &mut Headers, directed: Option<bool>) {
    if let Some(directed) = directed {
        headers.insert(HEADER_DIRECTED.into(), directed.to_string());
    }
}

/// A delivery that passed the envelope checks.
struct Valid {
    at: usize,
    change: Change,
}

/// Consumes one queue into one database.
///
/// ```no_run
/// # fn main() -> cqrs::Result<()> {
/// use cqrs::{Consumer, Db, Registry, Settings, Shutdown};
/// use cqrs::transport::memory::MemoryBroker;
/// let broker = MemoryBroker::new();
/// let registry = Registry::new(); // .replica::<MyModel>()
/// let settings = Settings::default();
/// let db = Db::connect("sqlite://replica.db")?;
/// let mut consumer = Consumer::new(&registry, &settings, db, broker.inbox("replica"));
/// consumer.run(&Shutdown::new())?;
/// # Ok(()) }
/// ```
pub struct Consumer<'a, I: Inbox> {
    registry: &'a Registry,
    settings: &'a Settings,
    db: Db,
    inbox: I,
    rank: BTreeMap<String, usize>,
    reconnect_url: Option<String>,
    shutdown: Shutdown,
    stats: ConsumerStats,
    /// Where to report whether the database answers, and as which part.
    readiness: Option<(Readiness, String)>,
}

impl<'a, I: Inbox> Consumer<'a, I> {
    /// A consumer applying `inbox`'s messages to `db` with the replicas of `registry`.
    pub fn new(registry: &'a Registry, settings: &'a Settings, db: Db, inbox: I) -> Self {
        Consumer {
            rank: registry.apply_rank(),
            registry,
            settings,
            db,
            inbox,
            reconnect_url: None,
            shutdown: Shutdown::new(),
            stats: ConsumerStats::default(),
            readiness: None,
        }
    }

    /// Report to `readiness`, as `part`, whether this consumer's database answers (not while it
    /// redoes a batch after a lost connection).
    pub fn report_to(mut self, readiness: Readiness, part: impl Into<String>) -> Self {
        self.readiness = Some((readiness, part.into()));
        self
    }

    fn ready(&self, state: std::result::Result<(), String>) {
        if let Some((readiness, part)) = &self.readiness {
            readiness.set(part, state);
        }
    }

    /// Reconnect to `url` when the database connection is lost.
    pub fn reconnect_with(mut self, url: impl Into<String>) -> Self {
        self.reconnect_url = Some(url.into());
        self
    }

    /// Counters so far.
    pub fn stats(&self) -> ConsumerStats {
        self.stats
    }

    /// The database connection (for tests and tools that inspect the replica).
    pub fn db(&mut self) -> &mut Db {
        &mut self.db
    }

    /// Give the database connection back (to reuse it with a new inbox after a broker failure).
    pub fn into_db(self) -> Db {
        self.db
    }

    /// Process batches until `shutdown` fires; the batch in flight is finished and acked first.
    pub fn run(&mut self, shutdown: &Shutdown) -> Result<()> {
        self.shutdown = shutdown.clone();
        let mut progress = crate::telemetry::Progress::new("consumer");
        while !shutdown.is_triggered() {
            self.poll(RECEIVE_WAIT)?;
            let s = self.stats;
            progress.tick(s.received, || {
                format!(
                    "{} received in all, {} batches, {} retried, {} dead-lettered",
                    s.received, s.batches, s.retried, s.dead_lettered
                )
            });
        }
        // Deliveries prefetched but not taken go back to the queue for the next consumer.
        self.inbox.requeue_unacked()
    }

    /// Process batches until the queue stays empty for `idle` (tests, bulk catch-up).
    pub fn drain(&mut self, idle: Duration) -> Result<()> {
        while self.poll(idle)? > 0 {}
        Ok(())
    }

    /// Receive one batch (waiting up to `wait` for its first message) and process it to the end.
    /// Returns the number of deliveries handled.
    pub fn poll(&mut self, wait: Duration) -> Result<usize> {
        let deliveries = self.inbox.receive(self.settings.batch_size, wait)?;
        if deliveries.is_empty() {
            return Ok(0);
        }
        self.stats.received += deliveries.len();
        let started = std::time::Instant::now();
        let before = self.stats;
        self.process(&deliveries)?;
        record(&before, &self.stats, deliveries.len(), started.elapsed());
        tracing::debug!(
            queue = self.inbox.queue(),
            messages = deliveries.len(),
            ms = started.elapsed().as_secs_f64() * 1000.0,
            "batch applied and acknowledged"
        );
        Ok(deliveries.len())
    }

    fn process(&mut self, deliveries: &[Delivery]) -> Result<()> {
        let mut fates: Vec<Option<Fate>> = (0..deliveries.len()).map(|_| None).collect();
        let mut valid = Vec::with_capacity(deliveries.len());
        let mut ignored = 0u64;
        for (at, d) in deliveries.iter().enumerate() {
            match self.check(d) {
                Ok(change) if self.ignores(&change) => {
                    let m = &change.message;
                    tracing::debug!(cqrs_id = %m.cqrs_id, pk = %m.instance_pk, revision = m.revision().ok(), message_id = d.message_id.as_deref(), "broadcast SYNC ignored: the model takes only directed SYNCs");
                    self.stats.apply.skipped += 1;
                    ignored += 1;
                    fates[at] = Some(Fate::Done);
                }
                Ok(change) => valid.push(Valid { at, change }),
                Err(Rejected {
                    cqrs_id,
                    pk,
                    revision,
                    directed,
                    error,
                }) => {
                    tracing::warn!(queue = self.inbox.queue(), routing_key = %d.routing_key, kind = %error.kind(), cqrs_id = cqrs_id.as_deref(), pk = pk.as_deref(), revision, message_id = d.message_id.as_deref(), "dead-lettering at once: {error}");
                    fates[at] = Some(Fate::DeadLetter {
                        cqrs_id,
                        kind: error.kind(),
                        reason: error.message().to_string(),
                        directed,
                    });
                }
            }
        }
        let all: Vec<usize> = (0..valid.len()).collect();
        let Some(outcomes) = self.apply_with_redo(&valid, &all)? else {
            // Shutdown while redoing a transient failure: nothing is final, give it all back.
            return self.inbox.requeue_unacked();
        };
        crate::crash::point("consumer.after_commit");
        let now = Utc::now();
        // Ignored, duplicate and stale messages, counted once for the batch.
        let mut skipped = [0u64; 2];
        let lags = metrics::histogram!("cqrs_consumer_lag_seconds");
        for (i, outcome) in outcomes {
            let v = &valid[i];
            if let Outcome::Applied = outcome
                && v.change.message.signal_type != SignalType::Sync
                && let Ok(updated) = v.change.message.updated()
            {
                // From the change on the master (its clock, at the row's first change in its
                // transaction) to the apply here; a SYNC re-sends an old change, so it is left out.
                let lag = (now - updated).to_std().unwrap_or_default();
                lags.record(lag.as_secs_f64());
            }
            if let Outcome::Skipped(why) = outcome {
                skipped[usize::from(!why.contains("duplicate"))] += 1;
            }

            fates[v.at] = Some(match outcome {
                Outcome::Applied | Outcome::Skipped(_) => Fate::Done,
                Outcome::Failed(err) => self.retry_or_dead_letter(&v.change, err),
            });
        }
        for (kind, n) in ["ignored", "duplicate", "stale"]
            .into_iter()
            .zip([ignored, skipped[0], skipped[1]])
        {
            if n > 0 {
                metrics::counter!("cqrs_consumer_messages_total", "outcome" => kind).increment(n);
            }
        }
        self.settle(deliveries, fates)
    }

    /// Envelope checks, in the order django-cqrs would fail them.
    fn check(&self, d: &Delivery) -> std::result::Result<Change, Rejected> {
        let reject = |cqrs_id, directed, error| Rejected {
            cqrs_id,
            pk: None,
            revision: None,
            directed,
            error,
        };
        // Refused after decoding: the key and revision are known for the logs.
        let refuse = |m: &Message, directed, error| Rejected {
            cqrs_id: Some(m.cqrs_id.clone()),
            pk: Some(m.instance_pk.to_string()),
            revision: m.revision().ok(),
            directed,
            error,
        };
        if d.body.len() > self.settings.max_body_bytes {
            let id = sniff_cqrs_id(&d.body);
            return Err(reject(
                id,
                None,
                Error::new(
                    ErrorKind::TooLarge,
                    format!(
                        "body is {} bytes, over the limit of {}",
                        d.body.len(),
                        self.settings.max_body_bytes
                    ),
                ),
            ));
        }
        let mut message =
            Message::decode(&d.body).map_err(|e| reject(sniff_cqrs_id(&d.body), None, e))?;
        let directed = self.judge_directed(d, &message);
        let sync = (message.signal_type == SignalType::Sync).then_some(directed);
        if self.registry.replica_for(&message.cqrs_id).is_none() {
            return Err(refuse(
                &message,
                sync,
                Error::new(
                    ErrorKind::UnknownModel,
                    format!("no replica registered for cqrs_id {:?}", message.cqrs_id),
                ),
            ));
        }
        let now = Utc::now();
        if message.is_expired(now) {
            return Err(refuse(
                &message,
                sync,
                Error::new(
                    ErrorKind::Expired,
                    format!(
                        "message expired at {}",
                        crate::message::format_expires(match message.expires {
                            Expires::At(t) => t,
                            _ => now,
                        })
                    ),
                ),
            ));
        }
        if message.expires == Expires::Absent {
            // An older master sent no expiry: the replica's own TTL starts at receipt (as django-cqrs).
            let ttl =
                chrono::Duration::from_std(self.settings.model(&message.cqrs_id).message_ttl())
                    .unwrap_or(chrono::Duration::days(1));
            message.expires = Expires::At(now + ttl);
        }
        Ok(Change {
            message,
            directed,
            message_id: d.message_id.clone(),
        })
    }

    /// A broadcast SYNC for a model that takes only directed ones: acknowledged, not applied.
    fn ignores(&self, change: &Change) -> bool {
        change.message.signal_type == SignalType::Sync
            && !change.directed
            && self
                .registry
                .replica_for(&change.message.cqrs_id)
                .is_some_and(|r| r.only_direct_syncs())
    }

    /// A SYNC is directed if our header says so, or, without it (a Django master), if it came on
    /// `cqrs.<queue>.<id>` with `retries` 0 (ARCHITECTURE.md §5).
    fn judge_directed(&self, d: &Delivery, message: &Message) -> bool {
        match d.headers.get(HEADER_DIRECTED) {
            Some(v) => v == "true",
            None => {
                message.signal_type == SignalType::Sync
                    && message.retries == 0
                    && d.routing_key == directed_key(self.inbox.queue(), &message.cqrs_id)
            }
        }
    }

    /// Apply `items` (indexes into `valid`), redoing transient failures with backoff. `None` if
    /// shutdown fired while waiting to redo.
    fn apply_with_redo(
        &mut self,
        valid: &[Valid],
        items: &[usize],
    ) -> Result<Option<Vec<(usize, Outcome)>>> {
        let mut backoff = Backoff::redo();
        loop {
            match self.apply_split(valid, items) {
                Ok(outcomes) => {
                    self.ready(Ok(()));
                    return Ok(Some(outcomes));
                }
                Err(e) if e.is_transient() => {
                    self.stats.transient_redos += 1;
                    self.ready(Err(format!("database: {e}")));
                    tracing::warn!(
                        queue = self.inbox.queue(),
                        pause_ms = backoff.peek().as_millis() as u64,
                        "transient failure, redoing the batch: {e}"
                    );
                    if backoff.sleep(&self.shutdown) {
                        return Ok(None);
                    }
                    // A connection that no longer answers is replaced; a deadlock or serialization
                    // failure leaves it healthy and the redo reuses it.
                    if let Some(url) = &self.reconnect_url
                        && let Err(e) = self.db.heal(url)
                    {
                        tracing::warn!("reconnecting to the database failed: {e}");
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Apply `items` in one transaction; if it fails as a whole with an apply-class error, split it.
    fn apply_split(&mut self, valid: &[Valid], items: &[usize]) -> Result<Vec<(usize, Outcome)>> {
        if items.is_empty() {
            return Ok(Vec::new());
        }
        match self.apply_once(valid, items) {
            Ok(outcomes) => Ok(outcomes),
            Err(e) if e.kind() == ErrorKind::Apply && items.len() == 1 => {
                Ok(vec![(items[0], Outcome::Failed(e))])
            }
            Err(e) if e.kind() == ErrorKind::Apply && e.is_statement_timeout() => {
                // Halving would run up to log2(n) more statements into the timeout, each holding
                // its row locks that long: one message per transaction finds the slow one in one.
                // Parents before children (foreign-key order, as one transaction applies them).
                self.stats.splits += 1;
                // Worth a warning: a timeout too tight for whole batches makes each batch cost one
                // timed-out transaction and then one per message.
                tracing::warn!(
                    size = items.len(),
                    "batch timed out, applying its messages one by one: {e}"
                );
                let mut order = items.to_vec();
                order.sort_by_key(|&i| self.apply_order(&valid[i].change.message.cqrs_id));
                let mut out = Vec::with_capacity(items.len());
                for i in &order {
                    out.extend(self.apply_split(valid, std::slice::from_ref(i))?);
                }
                Ok(out)
            }
            Err(e) if e.kind() == ErrorKind::Apply => {
                self.stats.splits += 1;
                tracing::debug!(size = items.len(), "batch failed, splitting it: {e}");
                let (a, b) = items.split_at(items.len() / 2);
                let mut out = self.apply_split(valid, a)?;
                out.extend(self.apply_split(valid, b)?);
                Ok(out)
            }
            Err(e) => Err(e),
        }
    }

    /// Where a model's messages go in a transaction: parents before children, then by cqrs_id.
    fn apply_order<'s>(&self, cqrs_id: &'s str) -> (usize, &'s str) {
        (
            self.rank.get(cqrs_id).copied().unwrap_or(usize::MAX),
            cqrs_id,
        )
    }

    /// One transaction: per model, in foreign-key order.
    fn apply_once(&mut self, valid: &[Valid], items: &[usize]) -> Result<Vec<(usize, Outcome)>> {
        let mut groups: BTreeMap<(usize, &str), Vec<usize>> = BTreeMap::new();
        for &i in items {
            let id = valid[i].change.message.cqrs_id.as_str();
            groups.entry(self.apply_order(id)).or_default().push(i);
        }
        let (registry, settings) = (self.registry, self.settings);
        let (outcomes, stats) = self.db.write_transaction(|db| {
            let mut out = Vec::with_capacity(items.len());
            let mut stats = ApplyStats::default();
            let mut timeout = StatementTimeout::default();
            for ((_, id), idxs) in &groups {
                let replica = registry.replica_for(id).expect("checked on receipt");
                // One apply per model: its row locks are taken at once, in order, so two
                // workers cannot deadlock on them.
                timeout.set(db, settings.model(id).query_timeout())?;
                let changes: Vec<&Change> = idxs.iter().map(|&i| &valid[i].change).collect();
                let report = replica
                    .apply(db, &changes)
                    .map_err(|e| e.context(format!("applying {id}")))?;
                if report.outcomes.len() != idxs.len() {
                    return Err(Error::new(
                        ErrorKind::Database,
                        format!(
                            "replica {id} returned {} outcomes for {} changes",
                            report.outcomes.len(),
                            idxs.len()
                        ),
                    ));
                }
                stats += report.stats;
                out.extend(idxs.iter().copied().zip(report.outcomes));
            }
            Ok((out, stats))
        })?;
        self.stats.batches += 1;
        self.stats.apply += stats;
        Ok(outcomes)
    }

    fn retry_or_dead_letter(&self, change: &Change, err: Error) -> Fate {
        let msg = &change.message;
        let sync = msg.signal_type == SignalType::Sync;
        let decision = self
            .registry
            .replica_for(&msg.cqrs_id)
            .map_or(Retry::Default, |r| r.retry(msg, &err));
        let model = self.settings.model(&msg.cqrs_id);
        let delay = match decision {
            Retry::Default if msg.retries < model.max_retries() => {
                Some(model.retry_delay(msg.retries.saturating_add(1)))
            }
            Retry::After(d) => Some(d),
            Retry::Default | Retry::DeadLetter => None,
        };
        if let Some(delay) = delay {
            let mut copy = msg.clone();
            // A hostile `retries` near u32::MAX under a hook that always retries must not overflow.
            copy.retries = copy.retries.saturating_add(1);
            let mut headers = Headers::new();
            directed_header(&mut headers, sync.then_some(change.directed));
            tracing::info!(cqrs_id = %msg.cqrs_id, pk = %msg.instance_pk, revision = msg.revision().ok(), message_id = change.message_id.as_deref(), retries = copy.retries, "apply failed, retrying: {err}");
            Fate::Retry {
                cqrs_id: msg.cqrs_id.clone(),
                body: copy.encode(),
                headers,
                delay,
            }
        } else {
            tracing::warn!(cqrs_id = %msg.cqrs_id, pk = %msg.instance_pk, revision = msg.revision().ok(), message_id = change.message_id.as_deref(), retries = msg.retries, "apply failed after the last retry, dead-lettering: {err}");
            Fate::DeadLetter {
                cqrs_id: Some(msg.cqrs_id.clone()),
                kind: ErrorKind::Apply,
                reason: err.message().to_string(),
                directed: sync.then_some(change.directed),
            }
        }
    }

    /// Publish retry and dead-letter copies (each confirmed), then ack.
    fn settle(&mut self, deliveries: &[Delivery], fates: Vec<Option<Fate>>) -> Result<()> {
        let mut highest_final = None;
        for (d, fate) in deliveries.iter().zip(fates) {
            match fate.expect("every delivery has a fate") {
                Fate::Done => {}
                Fate::Retry {
                    cqrs_id,
                    body,
                    headers,
                    delay,
                } => {
                    self.inbox
                        .publish_retry(d, &cqrs_id, body, headers, delay)?;
                    self.stats.retried += 1;
                }
                Fate::DeadLetter {
                    cqrs_id,
                    kind,
                    reason,
                    directed,
                } => {
                    let mut headers = Headers::new();
                    headers.insert(HEADER_ERROR.into(), reason);
                    headers.insert(HEADER_ERROR_KIND.into(), kind.as_str().into());
                    directed_header(&mut headers, directed);
                    self.inbox.publish_dead_letter(
                        d,
                        cqrs_id.as_deref(),
                        headers,
                        self.settings.dead_letter_ttl,
                    )?;
                    self.stats.dead_lettered += 1;
                }
            }
            // A publish error returned above leaves this and later deliveries unacked: they come back.
            highest_final = Some(highest_final.map_or(d.tag, |t: u64| t.max(d.tag)));
        }
        if let Some(tag) = highest_final {
            self.inbox.ack_up_to(tag)?;
        }
        Ok(())
    }
}

/// Count one batch's outcomes (what `stats` gained while it was processed), its size and the
/// time it took. Skips are counted where their reason is known.
fn record(before: &ConsumerStats, after: &ConsumerStats, size: usize, took: Duration) {
    let gained = |a: usize, b: usize| (b - a) as u64;
    for (outcome, n) in [
        ("applied", gained(before.apply.applied, after.apply.applied)),
        ("retried", gained(before.retried, after.retried)),
        (
            "dead_lettered",
            gained(before.dead_lettered, after.dead_lettered),
        ),
    ] {
        if n > 0 {
            metrics::counter!("cqrs_consumer_messages_total", "outcome" => outcome).increment(n);
        }
    }
    let redos = gained(before.transient_redos, after.transient_redos);
    if redos > 0 {
        metrics::counter!("cqrs_consumer_transient_redos_total").increment(redos);
    }
    metrics::histogram!("cqrs_consumer_batch_size").record(size as f64);
    metrics::histogram!("cqrs_consumer_batch_seconds").record(took.as_secs_f64());
}

/// The statement timeout of one apply transaction, set per model as its group starts (PostgreSQL;
/// SQLite has none, `consume` says so at start). `SET LOCAL` ends with the transaction; its
/// `COMMIT` (and deferred constraint checks) run under the last group's timeout.
#[derive(Default)]
struct StatementTimeout {
    /// What this transaction set last; `None`: the session's own (`TO DEFAULT` restores it).
    current: Option<Duration>,
}

impl StatementTimeout {
    fn set(&mut self, db: &mut Db, timeout: Option<Duration>) -> Result<()> {
        if db.backend() != crate::db::Backend::Postgres || self.current == timeout {
            return Ok(());
        }
        // Whole milliseconds from the settings (checked to fit PostgreSQL's int), not user text;
        // 0 turns the server's own timeout off.
        let sql = match timeout {
            Some(t) => format!("SET LOCAL statement_timeout = {}", t.as_millis()),
            None => "SET LOCAL statement_timeout TO DEFAULT".to_string(),
        };
        db.batch_execute(&sql)?;
        self.current = timeout;
        Ok(())
    }
}

/// Best effort: the `cqrs_id` of a body that failed to decode, for routing its dead letter.
fn sniff_cqrs_id(body: &[u8]) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    v.get("cqrs_id")?
        .as_str()
        .filter(|s| !s.is_empty() && !s.contains(['.', '#', '*']))
        .map(str::to_string)
}
