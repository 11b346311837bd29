//! Metrics and readiness over PostgreSQL and NATS JetStream: the body of `metrics`, in a binary of
//! its own because the metrics recorder is one per process.

#[path = "../metrics/body.rs"]
mod body;

#[test]
fn counters_and_readiness_during_a_real_sync() {
    body::counters_and_readiness_during_a_real_sync(cqrs_tests::transports::Engine::Nats);
}
