//! `cqrs` keeps read-only copies of database models (replicas) in other services in sync with the
//! service that owns them (the master), wire-compatible with the Python package django-cqrs.
//!
//! # Where to start
//!
//! - A master: `#[derive(Master)]` on the Diesel model ([`Master`]), then write through [`atomic`]
//!   and the Diesel statements on its [`Tx`] (`tx.insert_into(..)`, `tx.update(..)`,
//!   `tx.delete(..)`), or install PostgreSQL triggers (`capture = "trigger"`) for writers that are
//!   not Diesel. Run [`Db::migrate`] once for the outbox.
//! - Publishing: the `relay` command, or a relay inside your service, woken at each commit
//!   ([`background::relay`] beside an async HTTP server; a [`Relay`] for full control).
//! - A replica: `#[derive(Replica)]` ([`Replica`]), a [`Registry`] of the models, and
//!   the `consume` command or [`background::consume`] inside the service that serves the reads.
//! - The commands: the `diesel-cqrs-cli` crate's `cqrs_cli::run` with your [`Registry`] is your own
//!   `cqrs` binary (the stock one has no models).
//! - Settings: [`Settings`] (flags > environment > `cqrs.toml` > defaults). The repository's README
//!   walks through all of it with a demo that needs no broker.
//!
//! # Layout
//!
//! The pipeline, stage by stage, as data flows:
//!
//! ```text
//!  master: [1] capture -> [2] outbox -> [3] relay -> [4] transport -> [5] consumer -> [6] apply :replica
//! ```
//!
//! - shared: [`error`] (one error type, outcome classes), [`crash`] (test-only crash points),
//!   [`shutdown`], [`backoff`] (the capped pause of every reconnect and redo loop), [`message`]
//!   (the django-cqrs wire body), [`value`] (column types and value forms), [`turns`] (fair turns
//!   at a SQLite file's write lock within a process), [`config`] (flags > env > `cqrs.toml` >
//!   defaults, every setting declared once), [`db`] (connections, migrations, [`db::SqlConn`]) with
//!   [`db::dialect`] (every SQL difference between PostgreSQL and SQLite), [`model`] (table specs,
//!   the replica and master sides of a model), [`rows`] (rows as wire JSON).
//! - 1 · [`capture`]: [`atomic`] and [`Tx`]: revision bump, touched set, outbox rows in the same transaction.
//! - 2 · [`outbox`]: the only code that writes, claims and deletes `cqrs_outbox` rows.
//! - 3 · [`relay`]: claim -> publish with confirms -> delete.
//! - 4 · [`transport`]: everything about brokers: the [`transport::Inbox`], [`transport::Publisher`]
//!   and [`transport::Letters`] traits, [`transport::Broker`] chosen by URL scheme from one table,
//!   [`transport::routing`] (queue and routing-key names); [`transport::amqp`] (RabbitMQ),
//!   [`transport::local`] (a SQLite queue file), [`transport::nats`] (NATS JetStream),
//!   [`transport::memory`] (tests).
//! - 5 · [`consumer`]: deliveries -> decode -> batch per model -> apply in one transaction -> ack;
//!   retries and dead letters by outcome class.
//! - 6 · [`apply`]: versioned multi-row upsert, revision-checked delete, tombstones.
//! - on top: [`registry`] (the models a binary serves), [`service`] (the long-running `consume`
//!   and `relay` loops), [`background`] (the same on threads inside an application's async
//!   service: awaited, stopped, readiness for its `/readyz`) and [`ops`] (bulk dump and load, filters, sync, the diff pipelines, dead
//!   letters), which the CLI calls with a broker it connected.
//!
//! Imports follow one order, bottom up: a module uses only the modules before it. The order is
//! written once, in `src/layers.rs`, whose test reads every `use crate::…` of the crate and fails
//! on a backward import or a cycle.

pub mod apply;
pub mod background;
pub mod backoff;
pub mod capture;
pub mod config;
pub mod consumer;
pub mod crash;
pub mod db;
pub mod error;
#[cfg(test)]
mod layers;
pub mod message;
pub mod model;
pub mod ops;
pub mod outbox;
pub mod registry;
pub mod relay;
pub mod rows;
pub mod service;
pub mod shutdown;
pub mod telemetry;
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
    MasterSpec, Outcome, Replica, ReplicaHooks, ReplicaModel, Retry, TableSpec,
};
pub use registry::Registry;

/// `#[derive(Replica)]` on a Diesel model: implements [`ReplicaModel`] (see the README's attribute table).
pub use cqrs_derive::Replica;

/// `#[derive(Master)]` on a Diesel model: implements [`MasterModel`] (see the README's attribute table).
pub use cqrs_derive::Master;
pub use relay::Relay;
pub use shutdown::Shutdown;

/// Support items for generated code; not a public API.
#[doc(hidden)]
pub mod __private {
    pub use crate::capture::MasterTable;
    pub use crate::model::{
        CaptureMode, ColumnSpec, MasterHooks, MasterModel, MasterSpec, ReplicaHooks, ReplicaModel,
        TableSpec,
    };
    pub use crate::value::ColumnType;
    pub use diesel;
    pub use serde_json;
}
