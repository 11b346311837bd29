//! One replica queue on any transport, reached only through cqrs's own `Broker` trait, so a test
//! body written once runs on RabbitMQ, the SQLite queue file and NATS JetStream ([`transports!`]).
//! Each gets names of its own and leaves nothing behind: RabbitMQ's queues and exchange are
//! deleted ([`TestBroker`]), the queue file and the private nats-server are removed.

use std::time::Duration;

use cqrs::Settings;
use cqrs::transport::{Broker, Confirm, Headers, Outgoing};

use crate::nats::PrivateNats;
use crate::{TestBroker, db::unique};

/// The transports a generic body runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    /// The machine's RabbitMQ.
    Amqp,
    /// A SQLite queue file (the embedded default).
    Local,
    /// A private nats-server with JetStream.
    Nats,
}

/// What is removed when the test ends (by its own `Drop` for RabbitMQ and NATS).
#[allow(dead_code)]
enum Keep {
    Amqp(TestBroker),
    Local(std::path::PathBuf),
    Nats(PrivateNats),
}

/// A replica queue on one transport.
pub struct TestTransport {
    /// Which transport.
    pub engine: Engine,
    /// Broker URL, exchange, queue, retry delays (100 and 300 ms) and 2 retries.
    pub settings: Settings,
    keep: Keep,
}

impl TestTransport {
    /// Fresh names on `engine` (panics, failing the test, when its server is missing).
    pub fn new(engine: Engine) -> TestTransport {
        let delays = vec![Duration::from_millis(100), Duration::from_millis(300)];
        let (url, exchange, queue, keep) = match engine {
            Engine::Amqp => {
                let b = TestBroker::new();
                (
                    b.url.clone(),
                    b.exchange.clone(),
                    b.queue.clone(),
                    Keep::Amqp(b),
                )
            }
            Engine::Local => {
                let dir = std::env::temp_dir().join(unique("cqrs_queue"));
                std::fs::create_dir_all(&dir).unwrap();
                let url = format!("sqlite://{}", dir.join("queue.db").display());
                (url, "cqrs".to_string(), "tq".to_string(), Keep::Local(dir))
            }
            Engine::Nats => {
                let n = PrivateNats::start();
                (n.url(), "cqrs".to_string(), "tq".to_string(), Keep::Nats(n))
            }
        };
        let settings = Settings {
            broker_url: Some(url),
            exchange,
            queue: Some(queue),
            retry_delays: delays,
            max_retries: 2,
            ..Settings::default()
        };
        TestTransport {
            engine,
            settings,
            keep,
        }
    }

    /// The replica queue's name.
    pub fn queue(&self) -> &str {
        self.settings.queue.as_deref().unwrap()
    }

    /// A new connection to the broker, through the scheme table as the commands connect.
    pub fn broker(&self) -> Box<dyn Broker> {
        cqrs::transport::connect(&self.settings, "test")
            .unwrap_or_else(|e| panic!("{:?} broker: {e}", self.engine))
    }

    /// Declare the replica queue for `cqrs_ids`: messages published from now on wait in it.
    pub fn declare(&self, cqrs_ids: &[&str]) {
        let ids: Vec<String> = cqrs_ids.iter().map(|s| s.to_string()).collect();
        self.broker()
            .declare_replica(self.queue(), &ids, &self.settings.retry_delays)
            .unwrap();
    }

    /// Publish `body` with `routing_key` through the relay's publisher; its confirm.
    pub fn publish(&self, routing_key: &str, body: &[u8], message_id: &str) -> Confirm {
        let mut p = self.broker().publisher().unwrap();
        let m = Outgoing {
            routing_key: routing_key.to_string(),
            body: body.to_vec(),
            headers: Headers::new(),
            message_id: message_id.to_string(),
        };
        p.publish(&[m]).unwrap().remove(0)
    }

    /// The private NATS server, on [`Engine::Nats`].
    pub fn nats(&mut self) -> Option<&mut PrivateNats> {
        match &mut self.keep {
            Keep::Nats(n) => Some(n),
            _ => None,
        }
    }
}

impl Drop for TestTransport {
    fn drop(&mut self) {
        if let Keep::Local(dir) = &self.keep {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// Define a test body once and run it on every transport: `name::amqp`, `name::local`,
/// `name::nats`. The body gets the [`Engine`].
#[macro_export]
macro_rules! transports {
    ($(#[$meta:meta])* fn $name:ident($engine:ident: Engine) $body:block) => {
        $(#[$meta])*
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            fn run($engine: $crate::transports::Engine) $body
            #[test]
            fn amqp() { run($crate::transports::Engine::Amqp) }
            #[test]
            fn local() { run($crate::transports::Engine::Local) }
            #[test]
            fn nats() { run($crate::transports::Engine::Nats) }
        }
    };
}
