//! The replica side of a model: the [`Replica`] trait the consumer applies batches through, what
//! it reports per message, and the hooks and trait `#[derive(Replica)]` implements.

use crate::db::Db;
use crate::error::{Error, Result};
use crate::message::Message;
#[allow(unused_imports)] // named in docs
use crate::value::ColumnType;

use super::{InstanceData, TableSpec};

/// One message ready to apply, with how the consumer judged it on receipt.
#[derive(Debug, Clone)]
pub struct Change {
    /// The decoded body.
    pub message: Message,
    /// A SYNC aimed at this replica (header `cqrs-directed`, or a Django master's directed routing
    /// key on first delivery): it may write an older state (ARCHITECTURE.md §5).
    pub directed: bool,
    /// The delivery's message id (the master's outbox row), for logs; `None` when the publisher
    /// set none (django-cqrs sets none).
    pub message_id: Option<String>,
}

impl Change {
    /// A change that is not a directed SYNC.
    pub fn new(message: Message) -> Self {
        Change {
            message,
            directed: false,
            message_id: None,
        }
    }
}

/// What applying one message did. `Applied` and `Skipped` are final (ack); `Failed` takes the
/// retry path.
#[derive(Debug)]
pub enum Outcome {
    /// The replica now reflects the message.
    Applied,
    /// Duplicate or stale: nothing to do (the reason says which).
    Skipped(&'static str),
    /// The message cannot be applied as it is ([`crate::ErrorKind::Apply`]).
    Failed(Error),
}

impl Outcome {
    /// True for `Applied` and `Skipped`.
    pub fn is_final(&self) -> bool {
        !matches!(self, Outcome::Failed(_))
    }
}

/// Counters of one [`Replica::apply`] call.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ApplyStats {
    /// Messages that changed the replica.
    pub applied: usize,
    /// Messages skipped as duplicate or stale.
    pub skipped: usize,
    /// Messages that failed on their own (bad data), before any statement ran.
    pub failed: usize,
    /// Rows inserted or updated.
    pub rows_written: usize,
    /// Rows deleted.
    pub rows_deleted: usize,
    /// Tombstones recorded.
    pub tombstones_written: usize,
    /// Multi-row upsert statements executed (one per chunk under the bind limit).
    pub upsert_statements: usize,
}

impl std::ops::AddAssign for ApplyStats {
    fn add_assign(&mut self, o: Self) {
        self.applied += o.applied;
        self.skipped += o.skipped;
        self.failed += o.failed;
        self.rows_written += o.rows_written;
        self.rows_deleted += o.rows_deleted;
        self.tombstones_written += o.tombstones_written;
        self.upsert_statements += o.upsert_statements;
    }
}

/// The result of applying a batch of one model: an outcome per change, in input order.
#[derive(Debug, Default)]
pub struct BatchReport {
    /// `outcomes[i]` belongs to `changes[i]`.
    pub outcomes: Vec<Outcome>,
    /// Counters.
    pub stats: ApplyStats,
}

/// A replicated model: applies batches of changes for one `cqrs_id`.
///
/// Tables get this from [`crate::apply::TableReplica`], which `Registry::replica` builds for a
/// `#[derive(Replica)]` model. A replica that is not a table (a cache, a search index) implements it by hand; it is called inside
/// the consumer's database transaction and may be called again with the same changes if that
/// transaction is redone, so its writes must be idempotent (compare revisions, as the table engine does).
///
/// ```
/// use std::{collections::HashMap, sync::Mutex};
/// use cqrs::{BatchReport, Change, Db, Outcome, Replica};
///
/// #[derive(Default)]
/// struct Names(Mutex<HashMap<String, (i32, String)>>);
///
/// impl Replica for Names {
///     fn cqrs_id(&self) -> &str { "item" }
///     fn apply(&self, _db: &mut Db, changes: &[&Change]) -> cqrs::Result<BatchReport> {
///         let mut map = self.0.lock().unwrap();
///         let mut report = BatchReport::default();
///         for c in changes {
///             let m = &c.message;
///             let rev = match m.revision() { Ok(r) => r, Err(e) => { report.outcomes.push(Outcome::Failed(e)); continue } };
///             let key = m.instance_pk.to_string();
///             let name = m.instance_data.get("name").and_then(|v| v.as_str()).unwrap_or_default();
///             match map.get(&key) {
///                 Some((have, _)) if *have >= rev => report.outcomes.push(Outcome::Skipped("stale")),
///                 _ => { map.insert(key, (rev, name.to_string())); report.outcomes.push(Outcome::Applied) }
///             }
///         }
///         Ok(report)
///     }
/// }
/// ```
pub trait Replica: Send + Sync + 'static {
    /// The model identifier this replica consumes.
    fn cqrs_id(&self) -> &str;

    /// `cqrs_id`s whose rows this model references (foreign keys): their batches apply first.
    fn depends_on(&self) -> Vec<String> {
        Vec::new()
    }

    /// Apply `changes` (all of this model) inside the caller's transaction.
    ///
    /// `Ok` carries one outcome per change. `Err` means the batch as a whole failed (a constraint,
    /// a lost connection): the caller rolls back, and splits the batch or redoes it by the error's kind.
    fn apply(&self, db: &mut Db, changes: &[&Change]) -> Result<BatchReport>;

    /// The table this replica writes, if it is one (the diff and deleted-rows pipelines read it).
    fn table(&self) -> Option<&TableSpec> {
        None
    }

    /// The `instance_pk` of a row given as `instance_data` (bulk load reads rows, not messages).
    fn instance_pk(&self, data: &InstanceData) -> Option<serde_json::Value> {
        data.get("id").cloned()
    }

    /// Delete every replicated row and tombstone of this model (`bulk-load --clear`).
    fn clear(&self, db: &mut Db) -> Result<()> {
        let _ = db;
        Err(Error::config(format!(
            "replica {} cannot be cleared",
            self.cqrs_id()
        )))
    }

    /// What to do with a message of this model that failed to apply (`message.retries` is the
    /// count so far). The default follows the consumer's settings (delay levels, max retries).
    fn retry(&self, message: &Message, error: &Error) -> Retry {
        let _ = (message, error);
        Retry::Default
    }

    /// Whether broadcast SYNCs are acknowledged and ignored, only SYNCs sent to this replica's
    /// queue applied (django-cqrs's `CQRS_ONLY_DIRECT_SYNCS`): for a replica that a master's
    /// periodic broadcast would load for nothing. Default: every SYNC is applied.
    fn only_direct_syncs(&self) -> bool {
        false
    }
}

/// A replica's decision for a message that failed to apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// Follow the consumer's settings.
    Default,
    /// Retry after this delay (whatever the count).
    After(std::time::Duration),
    /// Dead-letter now.
    DeadLetter,
}

/// An after-apply hook: the connection (inside the apply transaction) and the applied changes.
pub type AfterApply = fn(&mut Db, &[&Change]) -> Result<()>;

/// Hooks and options of a replica table model (`#[cqrs(after_apply = "fn", retry = "fn",
/// only_direct_syncs)]`).
#[derive(Clone, Copy, Default)]
pub struct ReplicaHooks {
    /// Called inside the apply transaction with the changes that were applied (their `meta` and
    /// `previous_data` included); an error fails the batch like a constraint would.
    pub after_apply: Option<AfterApply>,
    /// The per-model retry policy.
    pub retry: Option<fn(&Message, &Error) -> Retry>,
    /// Apply only SYNCs sent to this replica's queue; broadcast SYNCs are acknowledged and
    /// ignored (django-cqrs's `CQRS_ONLY_DIRECT_SYNCS`).
    pub only_direct_syncs: bool,
}

impl std::fmt::Debug for ReplicaHooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplicaHooks")
            .field("after_apply", &self.after_apply.is_some())
            .field("retry", &self.retry.is_some())
            .field("only_direct_syncs", &self.only_direct_syncs)
            .finish()
    }
}

/// A Diesel model replicated into a table: what `#[derive(Replica)]` implements.
///
/// The derive reads `#[diesel(table_name, primary_key)]`, maps each field's Rust type to a
/// [`ColumnType`] and builds the [`TableSpec`] the apply engine writes with.
pub trait ReplicaModel: 'static {
    /// The `cqrs_id` shared with the master.
    const CQRS_ID: &'static str;

    /// The table description.
    fn table_spec() -> TableSpec;

    /// Hooks (none unless the derive was given `after_apply` or `retry`).
    fn hooks() -> ReplicaHooks {
        ReplicaHooks::default()
    }
}
