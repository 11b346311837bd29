//! The NATS ceilings: what a JetStream server does here without cqrs in the way — async-nats
//! publishing the relay's own messages (headers and `Nats-Msg-Id` included) with acks in a window,
//! pulling them with an explicit ack each, a bare publish→pull round trip — and the outbox's own
//! claim-and-delete without a broker.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use async_nats::HeaderMap;
use async_nats::jetstream::consumer::{AckPolicy, PullConsumer, pull};
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::stream;
use cqrs::db::SqlConn;
use cqrs::transport::nats::NatsTransport;
use futures_lite::StreamExt;

/// A message as a pull consumer received it.
pub struct Got {
    pub payload: Vec<u8>,
    pub headers: Option<HeaderMap>,
}

/// Publishes in flight before the oldest ack is awaited: more than the relay keeps (3 batches of
/// 500), so the ceiling is at least as pipelined as the relay.
pub const WINDOW: usize = 4_000;
/// How long [`pull`] waits for the next message before it gives up.
const PULL_TIMEOUT: Duration = Duration::from_secs(30);

/// A stream `name` on `name.>` with interest retention (made again if it exists) and a durable
/// pull consumer for each of `consumers`: where the publish ceiling goes, with the relay's fan-out.
pub fn sink(t: &NatsTransport, name: &str, consumers: &[&str]) {
    let js = t.jetstream().clone();
    let (name, consumers) = (
        name.to_string(),
        consumers.iter().map(|c| c.to_string()).collect::<Vec<_>>(),
    );
    t.block_on(async move {
        let _ = js.delete_stream(&name).await;
        let s = js
            .create_stream(stream::Config {
                name: name.clone(),
                subjects: vec![format!("{name}.>")],
                retention: stream::RetentionPolicy::Interest,
                ..Default::default()
            })
            .await
            .expect("the sink stream");
        for c in consumers {
            s.create_consumer(pull::Config {
                durable_name: Some(c),
                ack_policy: AckPolicy::Explicit,
                ..Default::default()
            })
            .await
            .expect("a sink consumer");
        }
    });
}

/// Drop every message of stream `name`.
pub fn purge(t: &NatsTransport, name: &str) {
    let js = t.jetstream().clone();
    let name = name.to_string();
    t.block_on(async move {
        js.get_stream(&name)
            .await
            .expect("the stream")
            .purge()
            .await
            .expect("purged");
    });
}

/// Pull `n` messages from `consumer` on `stream` in batches of 500, acking each; the messages and
/// the time it took, or `None` if a message did not come within 30 s.
pub fn pull(
    t: &NatsTransport,
    stream: &str,
    consumer: &str,
    n: usize,
) -> Option<(Vec<Got>, Duration)> {
    let js = t.jetstream().clone();
    let (stream, consumer) = (stream.to_string(), consumer.to_string());
    t.block_on(async move {
        let c: PullConsumer = js
            .get_stream(&stream)
            .await
            .expect("the stream")
            .get_consumer(&consumer)
            .await
            .expect("the consumer");
        let started = Instant::now();
        let mut messages = c
            .stream()
            .max_messages_per_batch(500)
            .messages()
            .await
            .expect("a pull stream");
        let mut got = Vec::with_capacity(n);
        while got.len() < n {
            let Ok(Some(Ok(m))) = tokio::time::timeout(PULL_TIMEOUT, messages.next()).await else {
                return None;
            };
            m.ack().await.expect("acked");
            got.push(Got {
                payload: m.message.payload.to_vec(),
                headers: m.message.headers.clone(),
            });
        }
        Some((got, started.elapsed()))
    })
}

/// Publish `messages` to `subject` as they were received (headers and message id included), up
/// to [`WINDOW`] unacked, awaited oldest first; the time until the last is acked.
pub fn publish(t: &NatsTransport, subject: &str, messages: &[Got]) -> Duration {
    let js = t.jetstream().clone();
    let subject = subject.to_string();
    let messages: Vec<(Vec<u8>, Option<HeaderMap>)> = messages
        .iter()
        .map(|m| (m.payload.clone(), m.headers.clone()))
        .collect();
    t.block_on(async move {
        let started = Instant::now();
        let mut pending = VecDeque::with_capacity(WINDOW + 1);
        for (payload, headers) in messages {
            if pending.len() >= WINDOW {
                let oldest: async_nats::jetstream::context::PublishAckFuture =
                    pending.pop_front().expect("a full window");
                oldest.await.expect("acked");
            }
            let mut m = PublishMessage::build().payload(payload.into());
            if let Some(h) = headers {
                m = m.headers(h);
            }
            pending.push_back(js.send_publish(subject.clone(), m).await.expect("sent"));
        }
        for p in pending {
            p.await.expect("acked");
        }
        started.elapsed()
    })
}

/// Publish one small message with its ack every `1 / rate` seconds for `secs` to stream `name`'s
/// subject, pulled by its consumer `rt`; each message's time from when it was due to be sent to
/// when it was pulled.
pub fn round_trips(t: &NatsTransport, name: &str, rate: f64, secs: f64) -> Vec<Duration> {
    sink(t, name, &["rt"]);
    let js = t.jetstream().clone();
    let name = name.to_string();
    let n = (rate * secs) as usize;
    t.block_on(async move {
        let c: PullConsumer = js
            .get_stream(&name)
            .await
            .unwrap()
            .get_consumer("rt")
            .await
            .unwrap();
        let origin = Instant::now();
        let mut messages = c
            .stream()
            .max_messages_per_batch(100)
            .messages()
            .await
            .unwrap();
        let receiver = tokio::spawn(async move {
            let mut times = Vec::with_capacity(n);
            while times.len() < n {
                let m = messages.next().await.expect("a message").expect("no error");
                let due: u64 = String::from_utf8_lossy(&m.message.payload).parse().unwrap();
                times.push(origin.elapsed().saturating_sub(Duration::from_nanos(due)));
                m.ack().await.unwrap();
            }
            times
        });
        let pace = Duration::from_secs_f64(1.0 / rate);
        let subject = format!("{name}.rt");
        for i in 0..n {
            let due = pace * i as u32;
            if let Some(wait) = due.checked_sub(origin.elapsed()) {
                tokio::time::sleep(wait).await;
            }
            let body = (due.as_nanos() as u64).to_string();
            js.publish(subject.clone(), body.into())
                .await
                .unwrap()
                .await
                .unwrap();
        }
        receiver.await.unwrap()
    })
}

/// The outbox's own ceiling without a broker: claim and delete `n` rows of `cqrs_outbox`, 500 per
/// transaction (`DELETE … RETURNING` the bodies, as a relay that published nothing); the time.
pub fn claim_and_delete(db: &mut cqrs::Db, n: usize) -> cqrs::Result<Duration> {
    let started = Instant::now();
    let mut left = n;
    while left > 0 {
        let got = db.write_transaction(|db| {
            db.load_text(
                "DELETE FROM cqrs_outbox WHERE id IN \
                   (SELECT id FROM cqrs_outbox ORDER BY id LIMIT 500 FOR UPDATE SKIP LOCKED) \
                 RETURNING body AS j",
                vec![],
            )
        })?;
        if got.is_empty() {
            break;
        }
        left = left.saturating_sub(got.len());
    }
    Ok(started.elapsed())
}
