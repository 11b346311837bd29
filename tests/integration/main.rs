//! Black-box integration tests against real PostgreSQL and SQLite (one binary, shared support).

// Tests on both backends use `cqrs_tests::both!` (each module imports `cqrs_tests::*`).

mod amqp_dead_letters;
mod amqp_end_to_end;
mod amqp_quorum;
mod amqp_relay;
mod amqp_retries;
mod amqp_tls;
mod amqp_topology;
mod background;
mod capture;
mod capture_edges;
mod capture_property;
mod consumer;
mod derive;
mod examples;
mod filters;
mod fuzz;
mod hostile;
mod local;
mod logs;
mod migrations;
mod model_settings;
mod nats;
mod property;
mod protocol;
mod reconnect;
mod rules;
mod statements;
mod transports;
mod triggers;
