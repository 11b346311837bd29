//! What a model is to the pipeline: the [`Replica`] trait, the table description the derive will
//! generate ([`TableSpec`]), and the [`Registry`] of models a binary serves.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::db::Db;
use crate::error::{Error, Result};
use crate::message::Message;
use crate::value::ColumnType;

/// One message ready to apply, with how the consumer judged it on receipt.
#[derive(Debug, Clone)]
pub struct Change {
    /// The decoded body.
    pub message: Message,
    /// A SYNC aimed at this replica (header `cqrs-directed`, or a Django master's directed routing
    /// key on first delivery): it may write an older state (ARCHITECTURE.md §5).
    pub directed: bool,
}

impl Change {
    /// A change that is not a directed SYNC.
    pub fn new(message: Message) -> Self {
        Change {
            message,
            directed: false,
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
/// Tables get this from [`crate::apply::TableReplica`] (and later from `#[derive(Replica)]`). A
/// replica that is not a table (a cache, a search index) implements it by hand; it is called inside
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

/// A custom serializer: the connection (inside the capture transaction) and the `instance_data`
/// to rewrite.
pub type Serializer = fn(&mut dyn crate::db::SqlConn, &mut InstanceData) -> Result<()>;

/// Hooks of a replica table model (`#[cqrs(after_apply = "fn", retry = "fn")]`).
#[derive(Clone, Copy, Default)]
pub struct ReplicaHooks {
    /// Called inside the apply transaction with the changes that were applied (their `meta` and
    /// `previous_data` included); an error fails the batch like a constraint would.
    pub after_apply: Option<AfterApply>,
    /// The per-model retry policy.
    pub retry: Option<fn(&Message, &Error) -> Retry>,
}

impl std::fmt::Debug for ReplicaHooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplicaHooks")
            .field("after_apply", &self.after_apply.is_some())
            .field("retry", &self.retry.is_some())
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

/// One column of a replicated table.
#[derive(Debug, Clone, PartialEq)]
pub struct ColumnSpec {
    /// Column name in the replica table.
    pub name: String,
    /// Key in `instance_data` (CQRS_MAPPING); the column name unless renamed.
    pub wire: String,
    /// SQL type.
    pub ty: ColumnType,
    /// The column accepts NULL.
    pub nullable: bool,
    /// The key may be absent from `instance_data`: the database default applies on insert and the
    /// stored value is kept on update.
    pub optional: bool,
}

impl ColumnSpec {
    /// A required, NOT NULL column whose wire name is its name.
    pub fn new(name: impl Into<String>, ty: ColumnType) -> Self {
        let name = name.into();
        ColumnSpec {
            wire: name.clone(),
            name,
            ty,
            nullable: false,
            optional: false,
        }
    }

    /// Read this column from a differently named `instance_data` key.
    pub fn wire(mut self, wire: impl Into<String>) -> Self {
        self.wire = wire.into();
        self
    }

    /// The column accepts NULL (an `Option` field).
    pub fn nullable(mut self) -> Self {
        self.nullable = true;
        self
    }

    /// The key may be absent from `instance_data`.
    pub fn optional(mut self) -> Self {
        self.optional = true;
        self
    }
}

/// A replicated table: what the apply engine needs to write rows of one model.
///
/// ```
/// use cqrs::{ColumnSpec, TableSpec, value::ColumnType};
/// let spec = TableSpec::new("item", "replica_items")
///     .key("id", ColumnType::BigInt)
///     .column(ColumnSpec::new("title", ColumnType::Text).wire("name"))
///     .build()
///     .unwrap();
/// assert_eq!(spec.columns().len(), 4); // id, title, cqrs_revision, cqrs_updated
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct TableSpec {
    cqrs_id: String,
    table: String,
    columns: Vec<ColumnSpec>,
    key: usize,
    revision: usize,
    updated: usize,
    depends_on: Vec<String>,
}

/// Builder for [`TableSpec`].
#[derive(Debug, Clone)]
pub struct TableSpecBuilder {
    cqrs_id: String,
    table: String,
    key: Option<ColumnSpec>,
    columns: Vec<ColumnSpec>,
    depends_on: Vec<String>,
}

impl TableSpec {
    /// Start describing the table `table` that replicates `cqrs_id`.
    #[allow(clippy::new_ret_no_self)]
    pub fn new(cqrs_id: impl Into<String>, table: impl Into<String>) -> TableSpecBuilder {
        TableSpecBuilder {
            cqrs_id: cqrs_id.into(),
            table: table.into(),
            key: None,
            columns: Vec::new(),
            depends_on: Vec::new(),
        }
    }

    /// The model identifier.
    pub fn cqrs_id(&self) -> &str {
        &self.cqrs_id
    }
    /// The table name.
    pub fn table(&self) -> &str {
        &self.table
    }
    /// All columns, the key first.
    pub fn columns(&self) -> &[ColumnSpec] {
        &self.columns
    }
    /// Index of the primary key column.
    pub fn key_index(&self) -> usize {
        self.key
    }
    /// Index of `cqrs_revision`.
    pub fn revision_index(&self) -> usize {
        self.revision
    }
    /// Index of `cqrs_updated`.
    pub fn updated_index(&self) -> usize {
        self.updated
    }
    /// The primary key column.
    pub fn key_column(&self) -> &ColumnSpec {
        &self.columns[self.key]
    }
    /// Models this one references.
    pub fn depends_on(&self) -> &[String] {
        &self.depends_on
    }
}

/// True if `name` may be used as an SQL identifier without quoting surprises.
pub(crate) fn is_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && name.len() <= 63
}

impl TableSpecBuilder {
    /// The single-column primary key (integer, text or UUID).
    pub fn key(mut self, name: impl Into<String>, ty: ColumnType) -> Self {
        self.key = Some(ColumnSpec::new(name, ty));
        self
    }

    /// The primary key column with a different wire name (the DELETE body always says `id`).
    pub fn key_column(mut self, column: ColumnSpec) -> Self {
        self.key = Some(column);
        self
    }

    /// A replicated column.
    pub fn column(mut self, column: ColumnSpec) -> Self {
        self.columns.push(column);
        self
    }

    /// A model whose rows this one references; its batches apply first.
    pub fn depends_on(mut self, cqrs_id: impl Into<String>) -> Self {
        self.depends_on.push(cqrs_id.into());
        self
    }

    /// Check names and types and add `cqrs_revision` / `cqrs_updated` unless declared.
    pub fn build(self) -> Result<TableSpec> {
        let ctx = |m: String| {
            Error::config(format!(
                "replica `{}` (table {}): {m}",
                self.cqrs_id, self.table
            ))
        };
        let key = self
            .key
            .ok_or_else(|| ctx("no primary key column declared".into()))?;
        if !key.ty.can_be_key() {
            return Err(ctx(format!(
                "primary key type {} is not supported (integer, text or uuid)",
                key.ty.name()
            )));
        }
        let mut columns = vec![key];
        columns.extend(self.columns);
        if !columns.iter().any(|c| c.name == "cqrs_revision") {
            columns.push(ColumnSpec::new("cqrs_revision", ColumnType::Integer));
        }
        if !columns.iter().any(|c| c.name == "cqrs_updated") {
            columns.push(ColumnSpec::new("cqrs_updated", ColumnType::Timestamptz));
        }
        if columns.len() > 64 {
            return Err(ctx(format!(
                "{} columns, at most 64 are supported",
                columns.len()
            )));
        }
        for name in std::iter::once(&self.table).chain(columns.iter().map(|c| &c.name)) {
            if !is_identifier(name) {
                return Err(ctx(format!("{name:?} is not a plain SQL identifier")));
            }
        }
        for (i, c) in columns.iter().enumerate() {
            if columns[..i].iter().any(|o| o.name == c.name) {
                return Err(ctx(format!("column `{}` is declared twice", c.name)));
            }
            if columns[..i].iter().any(|o| o.wire == c.wire) {
                return Err(ctx(format!(
                    "wire name `{}` is used by two columns",
                    c.wire
                )));
            }
        }
        let find = |n: &str| {
            columns
                .iter()
                .position(|c| c.name == n)
                .expect("added above")
        };
        let (revision, updated) = (find("cqrs_revision"), find("cqrs_updated"));
        if columns[revision].ty != ColumnType::Integer {
            return Err(ctx("cqrs_revision must be an integer column".into()));
        }
        if columns[updated].ty != ColumnType::Timestamptz {
            return Err(ctx("cqrs_updated must be a timestamptz column".into()));
        }
        Ok(TableSpec {
            cqrs_id: self.cqrs_id,
            table: self.table,
            columns,
            key: 0,
            revision,
            updated,
            depends_on: self.depends_on,
        })
    }
}

/// The models a binary serves, by `cqrs_id`.
///
/// ```
/// use cqrs::{Registry, TableReplica, TableSpec, value::ColumnType};
/// let spec = TableSpec::new("item", "items").key("id", ColumnType::BigInt).build().unwrap();
/// let registry = Registry::new().with_replica(TableReplica::new(spec));
/// assert!(registry.replica_for("item").is_some());
/// ```
#[derive(Clone, Default)]
pub struct Registry {
    replicas: BTreeMap<String, Arc<dyn Replica>>,
    masters: BTreeMap<String, Arc<MasterSpec>>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("replicas", &self.replicas.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Registry {
    /// An empty registry (the stock `cqrs` binary's).
    pub fn new() -> Self {
        Registry::default()
    }

    /// Register a replica table model (one that derives [`ReplicaModel`] via `#[derive(Replica)]`).
    ///
    /// # Panics
    /// If another replica is registered for the same `cqrs_id`: that is a programming error.
    pub fn replica<T: ReplicaModel>(self) -> Self {
        self.with_replica(crate::apply::TableReplica::new(T::table_spec()).with_hooks(T::hooks()))
    }

    /// Register a hand-written [`Replica`] (a table described by hand, a cache, a search index).
    ///
    /// # Panics
    /// If another replica is registered for the same `cqrs_id`: that is a programming error.
    pub fn with_replica(mut self, replica: impl Replica) -> Self {
        let id = replica.cqrs_id().to_string();
        assert!(
            !self.replicas.contains_key(&id),
            "two replicas registered for cqrs_id {id:?}"
        );
        self.replicas.insert(id, Arc::new(replica));
        self
    }

    /// Register a master model (one that derives [`MasterModel`] via `#[derive(Master)]`).
    ///
    /// # Panics
    /// If another master is registered for the same `cqrs_id`.
    pub fn master<T: MasterModel>(self) -> Self {
        self.with_master(T::master_spec())
    }

    /// Register a master described by hand.
    ///
    /// # Panics
    /// If another master is registered for the same `cqrs_id`.
    pub fn with_master(mut self, spec: MasterSpec) -> Self {
        let id = spec.table().cqrs_id().to_string();
        assert!(
            !self.masters.contains_key(&id),
            "two masters registered for cqrs_id {id:?}"
        );
        self.masters.insert(id, Arc::new(spec));
        self
    }

    /// The master registered for `cqrs_id`, or a usage error naming the ones there are.
    pub fn master_named(&self, cqrs_id: &str) -> Result<&Arc<MasterSpec>> {
        self.masters.get(cqrs_id).ok_or_else(|| {
            let known: Vec<&str> = self.master_ids().collect();
            Error::config(format!(
                "unknown cqrs id {cqrs_id:?} (masters: {})",
                known.join(", ")
            ))
        })
    }

    /// The replica registered for `cqrs_id`, or a usage error naming the ones there are.
    pub fn replica_named(&self, cqrs_id: &str) -> Result<&Arc<dyn Replica>> {
        self.replicas.get(cqrs_id).ok_or_else(|| {
            let known: Vec<&str> = self.replica_ids().collect();
            Error::config(format!(
                "unknown cqrs id {cqrs_id:?} (replicas: {})",
                known.join(", ")
            ))
        })
    }

    /// The master registered for `cqrs_id`.
    pub fn master_for(&self, cqrs_id: &str) -> Option<&Arc<MasterSpec>> {
        self.masters.get(cqrs_id)
    }

    /// The replica registered for `cqrs_id`.
    pub fn replica_for(&self, cqrs_id: &str) -> Option<&Arc<dyn Replica>> {
        self.replicas.get(cqrs_id)
    }

    /// The `cqrs_id`s of all masters.
    pub fn master_ids(&self) -> impl Iterator<Item = &str> {
        self.masters.keys().map(String::as_str)
    }

    /// The `cqrs_id`s of all replicas.
    pub fn replica_ids(&self) -> impl Iterator<Item = &str> {
        self.replicas.keys().map(String::as_str)
    }

    /// True if no model is registered.
    pub fn is_empty(&self) -> bool {
        self.replicas.is_empty() && self.masters.is_empty()
    }

    /// Rank of each replica in foreign-key order: a model applies after those it depends on.
    /// Cycles fall back to name order for the models in the cycle.
    pub fn apply_rank(&self) -> BTreeMap<String, usize> {
        let mut rank = BTreeMap::new();
        let mut left: Vec<&String> = self.replicas.keys().collect();
        let mut next = 0;
        while !left.is_empty() {
            let ready: Vec<&String> =
                left.iter()
                    .copied()
                    .filter(|id| {
                        self.replicas[*id].depends_on().iter().all(|d| {
                            rank.contains_key(d) || !self.replicas.contains_key(d) || d == *id
                        })
                    })
                    .collect();
            let take = if ready.is_empty() {
                vec![left[0]]
            } else {
                ready
            };
            for id in take {
                rank.insert(id.clone(), next);
                next += 1;
                left.retain(|l| *l != id);
            }
        }
        rank
    }
}

/// A row's `instance_data` as the hooks see it.
pub type InstanceData = serde_json::Map<String, serde_json::Value>;

/// Hooks of a master model (django-cqrs's master options), plain functions so the derive can name them.
#[derive(Clone, Copy, Default)]
pub struct MasterHooks {
    /// `is_sync_instance`: given the row's `instance_data`, should a SAVE be sent? The revision
    /// counts either way. Also honoured by `diff-master`.
    pub filter: Option<fn(&InstanceData) -> bool>,
    /// `meta` for a message, given the row's `instance_data` (or, for DELETE, the last state).
    pub meta: Option<fn(&InstanceData) -> serde_json::Value>,
    /// `correlation_id` for the messages of a transaction.
    pub correlation_id: Option<fn() -> Option<String>>,
    /// A custom serializer: rewrites the `instance_data` of a SAVE or SYNC before it is sent
    /// (e.g. nested related rows read with the connection, inside the capture transaction).
    pub serializer: Option<Serializer>,
    /// Extra `custom` data on DELETE, given the deleted row's last `instance_data`.
    pub delete_custom: Option<fn(&InstanceData) -> Option<serde_json::Value>>,
}

impl std::fmt::Debug for MasterHooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MasterHooks")
            .field("filter", &self.filter.is_some())
            .field("meta", &self.meta.is_some())
            .field("correlation_id", &self.correlation_id.is_some())
            .field("delete_custom", &self.delete_custom.is_some())
            .field("serializer", &self.serializer.is_some())
            .finish()
    }
}

/// A master table: the columns that go on the wire, which are tracked, and the master options.
///
/// ```
/// use cqrs::{ColumnSpec, MasterSpec, TableSpec, value::ColumnType};
/// let spec = MasterSpec::new(
///     TableSpec::new("item", "items")
///         .key("id", ColumnType::BigInt)
///         .column(ColumnSpec::new("price", ColumnType::BigInt))
///         .build()
///         .unwrap(),
/// )
/// .track("price")
/// .unwrap();
/// assert!(spec.is_tracked("price"));
/// ```
#[derive(Debug, Clone)]
pub struct MasterSpec {
    table: TableSpec,
    tracked: Vec<bool>,
    produce: bool,
    hooks: MasterHooks,
}

impl MasterSpec {
    /// A master over `table` (columns by wire name), producing, tracking nothing.
    pub fn new(table: TableSpec) -> Self {
        let tracked = vec![false; table.columns().len()];
        MasterSpec {
            table,
            tracked,
            produce: true,
            hooks: MasterHooks::default(),
        }
    }

    /// Track a column (by column name): its old value goes in `previous_data`.
    pub fn track(mut self, column: &str) -> Result<Self> {
        let i = self
            .table
            .columns()
            .iter()
            .position(|c| c.name == column)
            .ok_or_else(|| {
                Error::config(format!(
                    "master `{}`: cannot track unknown column `{column}`",
                    self.table.cqrs_id()
                ))
            })?;
        self.tracked[i] = true;
        Ok(self)
    }

    /// Turn message production off (changes still bump revisions).
    pub fn produce(mut self, on: bool) -> Self {
        self.produce = on;
        self
    }

    /// Set the hooks.
    pub fn hooks(mut self, hooks: MasterHooks) -> Self {
        self.hooks = hooks;
        self
    }

    /// The table description.
    pub fn table(&self) -> &TableSpec {
        &self.table
    }

    /// True if the column is tracked.
    pub fn is_tracked(&self, column: &str) -> bool {
        self.table
            .columns()
            .iter()
            .zip(&self.tracked)
            .any(|(c, t)| *t && c.name == column)
    }

    /// Indexes of tracked columns.
    pub fn tracked_indexes(&self) -> impl Iterator<Item = usize> + '_ {
        self.tracked
            .iter()
            .enumerate()
            .filter(|(_, t)| **t)
            .map(|(i, _)| i)
    }

    /// Whether messages are produced.
    pub fn produces(&self) -> bool {
        self.produce
    }

    /// The hooks.
    pub fn hooks_ref(&self) -> &MasterHooks {
        &self.hooks
    }
}

/// A Diesel model whose changes are captured and published: what `#[derive(Master)]` implements.
pub trait MasterModel: 'static {
    /// The `cqrs_id` shared with the replicas.
    const CQRS_ID: &'static str;

    /// The master table description.
    fn master_spec() -> MasterSpec;
}
