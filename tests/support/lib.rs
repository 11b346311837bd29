//! Shared support for the integration tests, by theme; every item is re-exported here, so a test
//! needs only `use cqrs_tests::*;`.
//!
//! - [`db`]: a database of its own per test on the machine's PostgreSQL or in a temporary SQLite
//!   file ([`TestDb`], [`Kind`]), the test tables and SQL placeholders per backend.
//! - [`models`]: the test models' replica specs and the fixed instants [`t0`] and [`at`].
//! - [`messages`]: item states, deletes and the captured django-cqrs messages.
//! - [`rows`]: readers of replica rows, tombstones, master rows and the outbox.
//! - [`broker`]: the machine's RabbitMQ with a unique exchange and queue ([`TestBroker`]).
//! - [`consumer`]: a replica consuming a [`TestBroker`]'s queue ([`TestReplica`]).
//! - [`wait`]: [`wait_until`] a state is reached; [`StopOnDrop`] for worker threads.
//! - [`logs`]: the JSON log lines of code run on the test's thread.
//! - [`examples`]: the example services' databases and rows.
//! - [`rabbit`]: a private RabbitMQ node for tests that stop and start the broker.
//! - [`nats`]: a private nats-server with JetStream per test; [`transports`]: one replica queue
//!   on any transport through the `Broker` trait, and [`transports!`] to run a body on each.
//! - [`postgres`]: a private PostgreSQL cluster for tests that stop and kill the database server.
//! - [`proxy`]: a TCP proxy whose links a test can cut or slow down.
//! - [`django`]: a real django-cqrs project as master or replica, in a cached virtual
//!   environment; [`interop`]: the Rust models of the same tables.
//! - [`items`]: the soak and bench harnesses' model, on either backend; [`rng`]: their seeded
//!   random numbers.

pub mod broker;
pub mod consumer;
pub mod db;
pub mod django;
pub mod examples;
pub mod interop;
pub mod items;
pub mod logs;
pub mod messages;
pub mod models;
pub mod nats;
pub mod postgres;
pub mod proxy;
pub mod rabbit;
pub mod rng;
pub mod rows;
pub mod transports;
pub mod wait;

pub use broker::*;
pub use consumer::*;
pub use db::*;
pub use examples::*;
pub use logs::*;
pub use messages::*;
pub use models::*;
pub use nats::PrivateNats;
pub use postgres::PrivatePostgres;
pub use proxy::ChaosProxy;
pub use rabbit::{PrivateCluster, PrivateRabbit};
pub use rows::*;
pub use transports::{Engine, TestTransport};
pub use wait::*;

/// Define a test body once and run it on both backends: `name::postgres` and `name::sqlite`.
#[macro_export]
macro_rules! both {
    ($(#[$meta:meta])* fn $name:ident($kind:ident: Kind) $body:block) => {
        $(#[$meta])*
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            fn run($kind: $crate::Kind) $body
            #[test]
            fn postgres() { run($crate::Kind::Postgres) }
            #[test]
            fn sqlite() { run($crate::Kind::Sqlite) }
        }
    };
}
