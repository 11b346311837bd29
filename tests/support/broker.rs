//! The machine's RabbitMQ as a test uses it: a unique exchange and queue, raw publishing,
//! draining and counting, and everything deleted when the test ends.

use crate::db::unique;

/// The broker tests use.
pub fn amqp_url() -> String {
    std::env::var("CQRS_TEST_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".to_string())
}

/// `rabbitmqctl <args> --formatter json -q` on the machine's broker, parsed; panics (failing the
/// test) when it fails.
pub fn rabbitmqctl(args: &[&str]) -> serde_json::Value {
    let out = std::process::Command::new("rabbitmqctl")
        .args(args)
        .args(["--formatter", "json", "-q"])
        .output()
        .expect("rabbitmqctl runs");
    assert!(
        out.status.success(),
        "rabbitmqctl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "rabbitmqctl {args:?} JSON: {e}: {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// A unique exchange and replica queue on the machine's RabbitMQ, deleted (with the dead-letter
/// and delay queues and the retry exchange) when dropped.
pub struct TestBroker {
    /// The test's topic exchange.
    pub exchange: String,
    /// The test's replica queue.
    pub queue: String,
    /// The connected transport.
    pub transport: std::sync::Arc<cqrs::transport::amqp::AmqpTransport>,
    /// Delay levels declared.
    pub delays: Vec<std::time::Duration>,
    /// The type of the queues it declares (classic unless made by [`TestBroker::quorum`]).
    pub queue_type: cqrs::config::QueueType,
    /// The broker's URL: the machine's ([`amqp_url`]) unless made by [`TestBroker::at`].
    pub url: String,
    /// Whether the exchange is this one's to delete (not a sibling's from
    /// [`TestBroker::another_queue`], which may be dropped first).
    owns_exchange: bool,
}

impl TestBroker {
    /// Connect (panics, failing the test, if RabbitMQ is not there) with unique names.
    pub fn new() -> TestBroker {
        TestBroker::at(&amqp_url(), cqrs::config::QueueType::Classic)
    }

    /// [`TestBroker::new`] whose replica queues (main, dead-letter, delay) are quorum queues.
    pub fn quorum() -> TestBroker {
        TestBroker::at(&amqp_url(), cqrs::config::QueueType::Quorum)
    }

    /// Unique names on the broker at `url` (a private node), declaring queues of `queue_type`.
    pub fn at(url: &str, queue_type: cqrs::config::QueueType) -> TestBroker {
        let mut b = TestBroker::on_exchange(url, unique("cqrs_tx"), queue_type);
        b.owns_exchange = true;
        b
    }

    /// Another replica queue on the same exchange as `self`.
    pub fn another_queue(&self) -> TestBroker {
        TestBroker::on_exchange(&self.url, self.exchange.clone(), self.queue_type)
    }

    fn on_exchange(url: &str, exchange: String, queue_type: cqrs::config::QueueType) -> TestBroker {
        let queue = unique("tq");
        let transport =
            cqrs::transport::amqp::AmqpTransport::connect(cqrs::transport::amqp::AmqpConfig {
                url: url.to_string(),
                connection_name: format!("cqrs-test-{queue}"),
                exchange: exchange.clone(),
                tls_ca_pem: None,
                queue_type,
            })
            .unwrap_or_else(|e| {
                panic!("RabbitMQ is required at {url} (set CQRS_TEST_AMQP_URL): {e}")
            });
        TestBroker {
            exchange,
            queue,
            transport,
            delays: vec![
                std::time::Duration::from_millis(100),
                std::time::Duration::from_millis(300),
            ],
            queue_type,
            url: url.to_string(),
            owns_exchange: false,
        }
    }

    /// Settings for this broker.
    pub fn settings(&self) -> cqrs::Settings {
        cqrs::Settings {
            broker_url: Some(self.url.clone()),
            queue: Some(self.queue.clone()),
            exchange: self.exchange.clone(),
            retry_delays: self.delays.clone(),
            max_retries: 2,
            queue_type: self.queue_type,
            ..cqrs::Settings::default()
        }
    }

    /// Declare the test's replica queue bound for `cqrs_ids`, with its dead-letter and delay
    /// queues; messages published from now on wait in it.
    pub fn declare(&self, cqrs_ids: &[&str]) {
        let ids: Vec<String> = cqrs_ids.iter().map(|id| id.to_string()).collect();
        self.transport
            .declare_replica(&self.queue, &ids, &self.delays)
            .unwrap();
    }

    /// Publish raw bytes to the test exchange (no confirms needed: tests read state after).
    pub fn publish_raw(&self, routing_key: &str, body: &[u8]) {
        self.publish_raw_with_id(routing_key, body, None);
    }

    /// [`TestBroker::publish_raw`] with an AMQP `message_id`, as our relay sets one.
    pub fn publish_raw_with_id(&self, routing_key: &str, body: &[u8], message_id: Option<&str>) {
        use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
        let ch = self.transport.channel(true).unwrap();
        let (ex, key, body) = (
            self.exchange.clone(),
            routing_key.to_string(),
            body.to_vec(),
        );
        let mut props = lapin::BasicProperties::default()
            .with_content_type("text/plain".into())
            .with_delivery_mode(2);
        if let Some(id) = message_id {
            props = props.with_message_id(id.into());
        }
        self.transport.block_on(async move {
            ch.confirm_select(ConfirmSelectOptions::default())
                .await
                .ok();
            ch.basic_publish(
                ex.as_str().into(),
                key.as_str().into(),
                BasicPublishOptions::default(),
                &body,
                props,
            )
            .await
            .unwrap()
            .await
            .unwrap();
        });
    }

    /// Take every message in `queue` with basic_get (acked): (routing key, properties, body).
    pub fn drain(&self, queue: &str) -> Vec<(String, lapin::BasicProperties, Vec<u8>)> {
        use lapin::options::{BasicAckOptions, BasicGetOptions};
        let ch = self.transport.channel(false).unwrap();
        let queue = queue.to_string();
        self.transport.block_on(async move {
            let mut out = Vec::new();
            while let Some(m) = ch
                .basic_get(queue.as_str().into(), BasicGetOptions::default())
                .await
                .unwrap()
            {
                m.delivery
                    .acker
                    .ack(BasicAckOptions::default())
                    .await
                    .unwrap();
                out.push((
                    m.delivery.routing_key.to_string(),
                    m.delivery.properties.clone(),
                    m.delivery.data.clone(),
                ));
            }
            out
        })
    }

    /// Messages ready in `queue` (delivered but unacknowledged ones are not counted).
    pub fn count(&self, queue: &str) -> u32 {
        self.declare_passive(queue).message_count()
    }

    /// Consumers subscribed to `queue`.
    pub fn consumers(&self, queue: &str) -> u32 {
        self.declare_passive(queue).consumer_count()
    }

    /// Consumers subscribed to `queue`, or `None` while nobody has declared it.
    pub fn consumers_if_declared(&self, queue: &str) -> Option<u32> {
        self.try_declare_passive(queue)
            .ok()
            .map(|q| q.consumer_count())
    }

    /// `queue.declare` with `passive` (the queue's counts), on a channel of its own that is
    /// closed after, so tests can poll it.
    fn declare_passive(&self, queue: &str) -> lapin::Queue {
        self.try_declare_passive(queue)
            .unwrap_or_else(|e| panic!("queue {queue}: {e}"))
    }

    /// The same, an error if the queue does not exist (the broker closes that channel).
    fn try_declare_passive(&self, queue: &str) -> Result<lapin::Queue, lapin::Error> {
        use lapin::options::QueueDeclareOptions;
        let ch = self.transport.channel(false).unwrap();
        let queue = queue.to_string();
        self.transport.block_on(async move {
            let q = ch
                .queue_declare(
                    queue.as_str().into(),
                    QueueDeclareOptions {
                        passive: true,
                        ..Default::default()
                    },
                    Default::default(),
                )
                .await?;
            let _ = ch.close(200, "OK".into()).await;
            Ok(q)
        })
    }
}

impl Default for TestBroker {
    fn default() -> Self {
        TestBroker::new()
    }
}

impl Drop for TestBroker {
    fn drop(&mut self) {
        use cqrs::transport::amqp::{retry_exchange, retry_queue};
        use lapin::options::{ExchangeDeleteOptions, QueueDeleteOptions};
        let Ok(ch) = self.transport.channel(false) else {
            return;
        };
        let mut queues = vec![
            self.queue.clone(),
            cqrs::transport::dead_letter_queue(&self.queue),
        ];
        // A `cqrs consume` process started on this queue (bench, CLI tests) declares the default
        // delays, not the test's.
        let mut delays = self.delays.clone();
        delays.extend(cqrs::Settings::default().retry_delays);
        delays.sort();
        delays.dedup();
        queues.extend(delays.iter().map(|d| retry_queue(&self.queue, *d)));
        // Left by a `queues migrate` test that failed half way.
        let parked: Vec<String> = queues
            .iter()
            .map(|q| cqrs::transport::amqp::parking_queue(q))
            .collect();
        queues.extend(parked);
        let mut exchanges = vec![retry_exchange(&self.queue)];
        if self.owns_exchange {
            exchanges.push(self.exchange.clone());
        }
        self.transport.block_on(async move {
            for q in queues {
                let _ = ch
                    .queue_delete(q.as_str().into(), QueueDeleteOptions::default())
                    .await;
            }
            for e in exchanges {
                let _ = ch
                    .exchange_delete(e.as_str().into(), ExchangeDeleteOptions::default())
                    .await;
            }
        });
        let _ = std::process::Command::new("rabbitmqctl")
            .args(["clear_policy", &self.queue])
            .output();
    }
}
