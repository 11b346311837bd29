//! The ceilings: what PostgreSQL and RabbitMQ do on this machine, in this run, without cqrs in
//! the way — the same statements without capture, lapin publishing with confirms and consuming
//! with multiple acks, a bare publish→consume round trip.

use std::time::{Duration, Instant};

use cqrs::transport::amqp::AmqpTransport;
use futures_lite::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions,
};

/// A message as a consumer received it: body and AMQP properties (headers, `message_id`).
pub struct Received {
    pub body: Vec<u8>,
    pub properties: lapin::BasicProperties,
}

/// How [`publish`] frames the messages it sends again.
#[derive(Clone, Copy)]
pub enum Framing {
    /// The bodies alone, persistent: the broker's best case.
    Bare,
    /// As the relay sent them: its headers and `message_id`, `mandatory` (the broker reports
    /// what no queue takes): the same work for the broker per message.
    AsRelayed,
}

/// How long [`consume`] waits for the next message before it gives up.
const CONSUME_TIMEOUT: Duration = Duration::from_secs(30);

/// Publishes sent and not yet confirmed before [`publish`] waits for the oldest: more than the
/// relay keeps in flight (3 batches of 500), so the ceiling is at least as pipelined as the relay.
pub const PUBLISH_WINDOW: usize = 4_000;

/// Consume `n` messages from `queue` with a prefetch of 1,000, acking every 500 at once; the
/// messages and the time it took, or `None` if a message did not come within 30 s.
pub fn consume(t: &AmqpTransport, queue: &str, n: usize) -> Option<(Vec<Received>, Duration)> {
    let ch = t.channel(false).expect("a channel");
    let queue = queue.to_string();
    t.block_on(async move {
        ch.basic_qos(1000, BasicQosOptions::default())
            .await
            .unwrap();
        let started = Instant::now();
        let mut consumer = ch
            .basic_consume(
                queue.as_str().into(),
                "bench-raw".into(),
                BasicConsumeOptions::default(),
                Default::default(),
            )
            .await
            .unwrap();
        let mut received = Vec::with_capacity(n);
        while received.len() < n {
            let Ok(next) = tokio::time::timeout(CONSUME_TIMEOUT, consumer.next()).await else {
                let _ = ch.close(200, "OK".into()).await;
                return None;
            };
            let d = next.expect("a delivery").expect("no error");
            received.push(Received {
                body: d.data.clone(),
                properties: d.properties.clone(),
            });
            if received.len() % 500 == 0 || received.len() == n {
                d.acker
                    .ack(BasicAckOptions { multiple: true })
                    .await
                    .unwrap();
            }
        }
        let took = started.elapsed();
        let _ = ch.close(200, "OK".into()).await;
        Some((received, took))
    })
}

/// Publish `messages` persistent to `exchange` with `key`, framed as `framing` says, with up to
/// [`PUBLISH_WINDOW`] unconfirmed (awaited oldest first); the time until the last is confirmed.
pub fn publish(
    t: &AmqpTransport,
    exchange: &str,
    key: &str,
    messages: &[Received],
    framing: Framing,
) -> Duration {
    let ch = t.channel(true).expect("a channel");
    let (exchange, key) = (exchange.to_string(), key.to_string());
    t.block_on(async move {
        ch.confirm_select(ConfirmSelectOptions::default())
            .await
            .ok();
        let bare = lapin::BasicProperties::default()
            .with_content_type("text/plain".into())
            .with_delivery_mode(2);
        let options = BasicPublishOptions {
            mandatory: matches!(framing, Framing::AsRelayed),
            ..Default::default()
        };
        let started = Instant::now();
        let mut unconfirmed: std::collections::VecDeque<lapin::PublisherConfirm> =
            std::collections::VecDeque::with_capacity(PUBLISH_WINDOW + 1);
        for m in messages {
            if unconfirmed.len() >= PUBLISH_WINDOW {
                let oldest = unconfirmed.pop_front().expect("a full window");
                oldest.await.unwrap();
            }
            let props = match framing {
                Framing::Bare => bare.clone(),
                Framing::AsRelayed => m.properties.clone(),
            };
            unconfirmed.push_back(
                ch.basic_publish(
                    exchange.as_str().into(),
                    key.as_str().into(),
                    options,
                    &m.body,
                    props,
                )
                .await
                .unwrap(),
            );
        }
        for c in unconfirmed {
            c.await.unwrap();
        }
        let took = started.elapsed();
        let _ = ch.close(200, "OK".into()).await;
        took
    })
}

/// Publish one small persistent message with confirm every `1 / rate` seconds for `secs` to
/// `exchange`/`key`, consumed from `queue`; each message's publish→delivery time.
pub fn round_trips(
    t: &AmqpTransport,
    exchange: &str,
    key: &str,
    queue: &str,
    rate: f64,
    secs: f64,
) -> Vec<Duration> {
    let (pub_ch, sub_ch) = (t.channel(true).unwrap(), t.channel(false).unwrap());
    let (exchange, key, queue) = (exchange.to_string(), key.to_string(), queue.to_string());
    let n = (rate * secs) as usize;
    t.block_on(async move {
        let origin = Instant::now();
        let mut consumer = sub_ch
            .basic_consume(
                queue.as_str().into(),
                "bench-rt".into(),
                BasicConsumeOptions::default(),
                Default::default(),
            )
            .await
            .unwrap();
        let receiver = tokio::spawn(async move {
            let mut times = Vec::with_capacity(n);
            while times.len() < n {
                let d = consumer
                    .next()
                    .await
                    .expect("a delivery")
                    .expect("no error");
                let sent: u64 = String::from_utf8_lossy(&d.data).parse().unwrap();
                times.push(origin.elapsed().saturating_sub(Duration::from_nanos(sent)));
                d.acker.ack(BasicAckOptions::default()).await.unwrap();
            }
            times
        });
        pub_ch
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .ok();
        let props = lapin::BasicProperties::default().with_delivery_mode(2);
        let pace = Duration::from_secs_f64(1.0 / rate);
        for i in 0..n {
            let due = pace * i as u32;
            if let Some(wait) = due.checked_sub(origin.elapsed()) {
                tokio::time::sleep(wait).await;
            }
            let body = (origin.elapsed().as_nanos() as u64).to_string();
            pub_ch
                .basic_publish(
                    exchange.as_str().into(),
                    key.as_str().into(),
                    BasicPublishOptions::default(),
                    body.as_bytes(),
                    props.clone(),
                )
                .await
                .unwrap()
                .await
                .unwrap();
        }
        receiver.await.unwrap()
    })
}

/// Upsert rows 1..=`n` of the harness's model into the PostgreSQL replica `table` in statements of
/// `batch` rows, each in its own transaction, with the replica's revision guard (`ON CONFLICT
/// DO UPDATE … WHERE` the stored revision is older): what applying a backlog costs the database
/// without cqrs. The time it took.
pub fn upsert(db: &mut cqrs::Db, table: &str, n: usize, batch: usize) -> cqrs::Result<Duration> {
    use cqrs::db::SqlConn;
    use cqrs::value::{ColumnType, SqlValue};
    let updated = chrono::Utc::now();
    let started = Instant::now();
    for first in (1..=n).step_by(batch) {
        let last = (first + batch - 1).min(n);
        let mut sql = format!(
            "INSERT INTO {table} (id, name, value, note, cqrs_revision, cqrs_updated) VALUES "
        );
        let mut binds = Vec::with_capacity((last - first + 1) * 6);
        for (row, id) in (first..=last).enumerate() {
            let p = row * 6;
            if row > 0 {
                sql.push(',');
            }
            sql.push_str(&format!(
                "(${}, ${}, ${}, ${}, ${}, ${})",
                p + 1,
                p + 2,
                p + 3,
                p + 4,
                p + 5,
                p + 6
            ));
            binds.extend([
                SqlValue::BigInt(id as i64),
                SqlValue::Text(format!("item {id}")),
                SqlValue::BigInt(id as i64),
                SqlValue::Null(ColumnType::Text),
                SqlValue::Integer(0),
                SqlValue::Timestamptz(updated),
            ]);
        }
        sql.push_str(&format!(
            " ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name, value = EXCLUDED.value, \
             note = EXCLUDED.note, cqrs_revision = EXCLUDED.cqrs_revision, \
             cqrs_updated = EXCLUDED.cqrs_updated WHERE {table}.cqrs_revision < EXCLUDED.cqrs_revision"
        ));
        db.write_transaction(|db| db.exec(&sql, binds))?;
    }
    Ok(started.elapsed())
}
