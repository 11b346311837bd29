//! Black-box integration tests against real PostgreSQL and SQLite (one binary, shared support).

/// Define a test body once and run it on both backends: `name::postgres` and `name::sqlite`.
macro_rules! both {
    ($(#[$meta:meta])* fn $name:ident($kind:ident: Kind) $body:block) => {
        $(#[$meta])*
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            fn run($kind: Kind) $body
            #[test]
            fn postgres() { run(Kind::Postgres) }
            #[test]
            fn sqlite() { run(Kind::Sqlite) }
        }
    };
}

mod amqp_dead_letters;
mod amqp_end_to_end;
mod amqp_relay;
mod amqp_retries;
mod amqp_tls;
mod amqp_topology;
mod capture;
mod consumer;
mod derive;
mod examples;
mod filters;
mod fuzz;
mod hostile;
mod local;
mod logs;
mod model_settings;
mod property;
mod protocol;
mod reconnect;
mod rules;
mod statements;
mod triggers;
