//! The [`Registry`] of the models a binary serves: replicas by `cqrs_id` (tables become
//! [`TableReplica`]s of the apply engine) and master specs. It sits above the apply engine so the
//! model descriptions below it never depend on how they are applied.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::apply::TableReplica;
use crate::error::{Error, Result};
use crate::model::{MasterModel, MasterSpec, Replica, ReplicaModel};

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
        self.with_replica(TableReplica::new(T::table_spec()).with_hooks(T::hooks()))
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

    /// A config error if `settings` has `[models.<cqrs_id>]` for a model not registered here.
    pub fn check_settings(&self, settings: &crate::config::Settings) -> Result<()> {
        let known: Vec<&str> = self.master_ids().chain(self.replica_ids()).collect();
        settings.check_models(&known)
    }

    /// A config error naming every table or column the replicas `ids` write that the database
    /// does not have, and cqrs's own tables if `cqrs migrate` has not run: checked when `consume`
    /// starts, so a wrong database is refused at once rather than on the first message.
    pub fn check_schema(&self, db: &mut crate::db::Db, ids: &[String]) -> Result<()> {
        use crate::db::{Backend, SqlConn};
        let columns_sql = match db.backend() {
            Backend::Postgres => {
                "SELECT CAST(column_name AS TEXT) AS j FROM information_schema.columns \
                 WHERE table_schema = current_schema() AND table_name = $1"
            }
            Backend::Sqlite => "SELECT name AS j FROM pragma_table_info(?)",
        };
        let mut missing = Vec::new();
        let columns_of = |db: &mut crate::db::Db, table: &str| -> Result<Vec<String>> {
            db.load_text(
                columns_sql,
                vec![crate::value::SqlValue::Text(table.into())],
            )
        };
        if columns_of(db, "cqrs_tombstones")?.is_empty() {
            missing.push("table cqrs_tombstones (run `cqrs migrate`)".to_string());
        }
        for id in ids {
            let Some(t) = self.replicas.get(id).and_then(|r| r.table()) else {
                continue;
            };
            let have = columns_of(db, t.table())?;
            if have.is_empty() {
                missing.push(format!("table {} (replica `{id}`)", t.table()));
                continue;
            }
            let absent: Vec<&str> = t
                .columns()
                .iter()
                .map(|c| c.name.as_str())
                .filter(|c| !have.iter().any(|h| h == c))
                .collect();
            if !absent.is_empty() {
                missing.push(format!(
                    "column(s) {} of table {} (replica `{id}`)",
                    absent.join(", "),
                    t.table()
                ));
            }
        }
        if missing.is_empty() {
            return Ok(());
        }
        Err(Error::config(format!(
            "the replica database lacks {}",
            missing.join("; ")
        )))
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
