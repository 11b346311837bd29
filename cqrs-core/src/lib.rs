//! `cqrs` keeps read-only copies of database models (replicas) in other services in sync with the
//! service that owns them (the master), wire-compatible with the Python package django-cqrs.
//!
//! # Layout
//!
//! The pipeline, stage by stage; a stage uses earlier stages and the shared modules, never a later one.
//!
//! ```text
//!  master: [1] capture -> [2] outbox -> [3] relay -> [4] transport -> [5] consumer -> [6] apply :replica
//! ```
//!
//! - shared: [`error`] (one error type, outcome classes), [`config`] (flags > env > `cqrs.toml` >
//!   defaults), [`shutdown`], [`message`] (the django-cqrs wire body), [`value`] (column types and
//!   value forms), [`db`] (connections to PostgreSQL and SQLite, migrations, [`db::SqlConn`]),
//!   [`turns`] (fair turns at a SQLite file's write lock within a process),
//!   [`model`] (the [`Replica`] trait, [`TableSpec`], [`MasterSpec`], [`Registry`]), [`rows`] (rows
//!   as wire JSON), [`crash`] (test-only crash points).
//! - 1 · [`capture`]: [`atomic`] and [`Tx`]: revision bump, touched set, outbox rows in the same transaction.
//! - 2 · [`outbox`]: the only code that writes, claims and deletes `cqrs_outbox` rows.
//! - 3 · [`relay`]: claim -> publish with confirms -> delete.
//! - 4 · [`transport`]: the [`transport::Inbox`] and [`transport::Publisher`] traits;
//!   [`transport::amqp`] (RabbitMQ), [`transport::local`] (a SQLite queue file), [`transport::memory`] (tests).
//! - 5 · [`consumer`]: deliveries -> decode -> batch per model -> apply in one transaction -> ack;
//!   retries and dead letters by outcome class.
//! - 6 · [`apply`]: versioned multi-row upsert, revision-checked delete, tombstones.
//! - on top: [`service`] (long-running `consume`/`relay` over a broker URL) and [`ops`] (bulk dump and
//!   load, filters, sync, the diff pipelines, dead letters, the demo), which the CLI calls.

pub mod apply;
pub mod capture;
pub mod config;
pub mod consumer;
pub mod crash;
pub mod db;
pub mod error;
pub mod message;
pub mod model;
pub mod ops;
pub mod outbox;
pub mod relay;
pub mod rows;
pub mod service;
pub mod shutdown;
pub mod transport;
pub mod turns;
pub mod value;

pub use apply::TableReplica;
pub use capture::{Tx, atomic};
pub use config::Settings;
pub use consumer::Consumer;
pub use db::Db;
pub use error::{Error, ErrorKind, Result};
pub use message::{Message, SignalType};
pub use model::{
    ApplyStats, BatchReport, Change, ColumnSpec, InstanceData, MasterHooks, MasterModel,
    MasterSpec, Outcome, Registry, Replica, ReplicaHooks, ReplicaModel, Retry, TableSpec,
};

/// `#[derive(Replica)]` on a Diesel model: implements [`ReplicaModel`] (see the README's attribute table).
pub use cqrs_derive::Replica;

/// `#[derive(Master)]` on a Diesel model: implements [`MasterModel`] (see the README's attribute table).
pub use cqrs_derive::Master;
pub use relay::Relay;
pub use shutdown::Shutdown;

/// Support items for generated code; not a public API.
#[doc(hidden)]
pub mod __private {
    pub use crate::model::{
        ColumnSpec, MasterHooks, MasterModel, MasterSpec, ReplicaHooks, ReplicaModel, TableSpec,
    };
    pub use crate::value::ColumnType;
    pub use serde_json;
}
