//! Metrics and readiness over PostgreSQL and RabbitMQ (the body is shared with `metrics_nats`).

mod body;

#[test]
fn counters_and_readiness_during_a_real_sync() {
    body::counters_and_readiness_during_a_real_sync(cqrs_tests::transports::Engine::Amqp);
}
