//! The master side of a model: its [`MasterSpec`] (table plus django-cqrs's master options), the
//! hooks, and the trait `#[derive(Master)]` implements.

use crate::db::SqlConn;
use crate::error::{Error, Result};

use super::{InstanceData, TableSpec};

/// A custom serializer: the connection (inside the capture transaction) and the `instance_data`
/// to rewrite.
pub type Serializer = fn(&mut dyn SqlConn, &mut InstanceData) -> Result<()>;

/// What a correlation-id hook is told about the message it names: django-cqrs's
/// `correlation_function(signal_type, cqrs_id, instance_pk, queue)`.
///
/// ```
/// fn trace(m: &cqrs::model::Correlation<'_>) -> Option<String> {
///     Some(format!("{}:{}:{}", m.signal_type.as_str(), m.cqrs_id, m.instance_pk))
/// }
/// let hooks = cqrs::MasterHooks { correlation_id: Some(trace), ..Default::default() };
/// # let _ = hooks;
/// ```
#[derive(Debug, Clone, Copy)]
pub struct Correlation<'a> {
    /// SAVE, DELETE or SYNC.
    pub signal_type: crate::message::SignalType,
    /// The model.
    pub cqrs_id: &'a str,
    /// The row's key as sent (`instance_pk`).
    pub instance_pk: &'a serde_json::Value,
    /// The replica queue of a directed SYNC; `None` when the message is broadcast.
    pub queue: Option<&'a str>,
}

/// A correlation-id hook.
pub type CorrelationId = fn(&Correlation<'_>) -> Option<String>;

/// Hooks of a master model (django-cqrs's master options), plain functions so the derive can name them.
#[derive(Clone, Copy, Default)]
pub struct MasterHooks {
    /// `is_sync_instance`: given the row's `instance_data`, should its SAVE, SYNC or DELETE be
    /// sent? The revision counts either way. Also honoured by `diff-master`. For a DELETE it sees
    /// the row's last columns by wire name, without the serializer (the row is gone by commit).
    pub filter: Option<fn(&InstanceData) -> bool>,
    /// `meta` for a message, given the row's `instance_data` (or, for DELETE, the last state).
    pub meta: Option<fn(&InstanceData) -> serde_json::Value>,
    /// `correlation_id` of each message, given what the message is (django-cqrs's
    /// `correlation_function`).
    pub correlation_id: Option<CorrelationId>,
    /// A custom serializer: rewrites the `instance_data` of a SAVE or SYNC before it is sent
    /// (e.g. nested related rows read with the connection, inside the capture transaction).
    pub serializer: Option<Serializer>,
    /// Extra `custom` data on DELETE, given the deleted row's last `instance_data`.
    pub delete_custom: Option<fn(&InstanceData) -> Option<serde_json::Value>>,
}

impl MasterHooks {
    /// True if any hook is set.
    pub fn any(&self) -> bool {
        self.filter.is_some()
            || self.meta.is_some()
            || self.correlation_id.is_some()
            || self.serializer.is_some()
            || self.delete_custom.is_some()
    }
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

/// Who writes a master model's outbox rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CaptureMode {
    /// [`crate::atomic`] does, in Rust: only writes made through its [`crate::Tx`] are captured.
    #[default]
    Atomic,
    /// PostgreSQL triggers on the table do (installed by `cqrs triggers install`), so every write
    /// is captured, whoever makes it; `atomic` leaves those rows to them. On SQLite, which has no
    /// such triggers here, `atomic` captures as in [`CaptureMode::Atomic`].
    Trigger,
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
    capture: CaptureMode,
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
            capture: CaptureMode::Atomic,
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

    /// Choose who captures the model's changes. Trigger capture runs in SQL, where the Rust hooks
    /// (`filter`, `meta`, `correlation_id`, `serializer`, `delete_custom`) cannot: a spec with
    /// both is refused.
    pub fn capture(mut self, mode: CaptureMode) -> Result<Self> {
        if mode == CaptureMode::Trigger && self.hooks.any() {
            return Err(Error::config(format!(
                "master `{}`: trigger capture runs in SQL and cannot call the model's Rust hooks ({:?}): capture it with atomic",
                self.table.cqrs_id(),
                self.hooks
            )));
        }
        self.capture = mode;
        Ok(self)
    }

    /// Who captures the model's changes.
    pub fn capture_mode(&self) -> CaptureMode {
        self.capture
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
