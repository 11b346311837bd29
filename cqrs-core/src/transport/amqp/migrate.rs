//! `cqrs queues migrate --to quorum|classic`: a replica's queues moved to the other queue type
//! under the same names, with their bindings and every waiting message, while the master keeps
//! publishing and the replica's workers keep consuming.
//!
//! RabbitMQ cannot change a queue's type, so each queue goes through a parking queue of the new
//! type (`cqrs_migrating_<name>`): the parking queue takes the queue's bindings, the queue loses
//! them, its messages are moved to the parking queue (each one confirmed there before it is
//! acknowledged here), the emptied queue is deleted (only if empty: a message that slipped in
//! is moved first) and declared again with the new type and its bindings, and the parking queue
//! is emptied into it and deleted. A message is always in one queue or, for a moment, in both:
//! the copy a worker may apply twice carries the same revision, which the replica ignores.
//! Run again after an interruption, the command finishes what it began.

use lapin::options::{
    BasicAckOptions, BasicGetOptions, BasicNackOptions, BasicPublishOptions, ConfirmSelectOptions,
    QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::FieldTable;
use lapin::{Channel, Confirmation, Connection};
use std::time::Duration;

use super::{
    AmqpTransport, bind, declare_failed, delay_args, delay_binding, refused, retry_exchange,
    retry_queue, transient, typed,
};
use crate::config::QueueType;
use crate::error::{Error, ErrorKind, Result};
use crate::transport::QueueMove;
use crate::transport::routing::{dead_letter_key, dead_letter_queue, directed_key};

/// Messages moved between confirms: the broker's confirms are awaited a window at a time.
const WINDOW: usize = 500;

/// One queue as the new type declares it: its arguments and its bindings
/// `(exchange, routing key, binding arguments)`.
struct Spec {
    name: String,
    args: FieldTable,
    bindings: Vec<(String, String, FieldTable)>,
}

/// The parking queue of `queue` during a migration.
pub fn parking_queue(queue: &str) -> String {
    format!("cqrs_migrating_{queue}")
}

impl AmqpTransport {
    /// Move `queue`, its dead-letter queue and its delay queues (`delays`) to type `to`, bound for
    /// `cqrs_ids`; returns what happened to each. Queues that already have type `to` are only
    /// (re)bound. Bindings of models not in `cqrs_ids` are not carried over.
    pub fn migrate_replica(
        &self,
        queue: &str,
        cqrs_ids: &[String],
        delays: &[Duration],
        to: QueueType,
    ) -> Result<Vec<QueueMove>> {
        super::super::routing::check_queue_name(queue).map_err(Error::config)?;
        let exchange = self.config.exchange.clone();
        let dlq = dead_letter_queue(queue);
        let mut specs = vec![
            Spec {
                name: queue.to_string(),
                args: typed(to),
                bindings: cqrs_ids
                    .iter()
                    .flat_map(|id| [id.clone(), directed_key(queue, id)])
                    .map(|key| (exchange.clone(), key, FieldTable::default()))
                    .collect(),
            },
            Spec {
                name: dlq,
                args: typed(to),
                bindings: cqrs_ids
                    .iter()
                    .map(|id| {
                        (
                            exchange.clone(),
                            dead_letter_key(queue, id),
                            FieldTable::default(),
                        )
                    })
                    .collect(),
            },
        ];
        for &delay in delays {
            specs.push(Spec {
                name: retry_queue(queue, delay),
                args: delay_args(&exchange, delay, to),
                bindings: vec![(retry_exchange(queue), String::new(), delay_binding(delay))],
            });
        }
        let conn = self.connection()?;
        self.runtime.block_on(async move {
            let mut out = Vec::new();
            for spec in &specs {
                out.push(migrate_one(&conn, spec, to).await?);
            }
            Ok(out)
        })
    }
}

async fn channel(conn: &Connection) -> Result<Channel> {
    let ch = conn
        .create_channel()
        .await
        .map_err(|e| transient("opening a channel", e))?;
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .map_err(|e| transient("confirm_select", e))?;
    Ok(ch)
}

async fn migrate_one(conn: &Connection, spec: &Spec, to: QueueType) -> Result<QueueMove> {
    let parking = parking_queue(&spec.name);
    let mut report = QueueMove {
        queue: spec.name.clone(),
        changed: false,
        moved: 0,
        unparked: 0,
    };
    // Until the queue declares as `to`: park its bindings and messages, then delete it. A worker
    // that declares it again in between with the old type (its reconnect) sends us round again.
    loop {
        let ch = channel(conn).await?;
        let e = match ch
            .queue_declare(
                spec.name.as_str().into(),
                QueueDeclareOptions::durable(),
                spec.args.clone(),
            )
            .await
        {
            Ok(_) => {
                let _ = ch.close(200, "OK".into()).await;
                break;
            }
            Err(e) => e, // the broker closed that channel
        };
        let err = declare_failed(&spec.name, to, e);
        if err.kind() != ErrorKind::Config {
            return Err(err);
        }
        report.changed = true;
        let ch = channel(conn).await?;
        ch.queue_declare(
            parking.as_str().into(),
            QueueDeclareOptions::durable(),
            spec.args.clone(),
        )
        .await
        .map_err(|e| refused(&format!("declaring the parking queue {parking}"), e))?;
        for (exchange, key, args) in &spec.bindings {
            bind(&ch, &parking, exchange, key, args.clone()).await?;
        }
        for (exchange, key, args) in &spec.bindings {
            unbind(&ch, &spec.name, exchange, key, args).await?;
        }
        report.moved += move_all(&ch, &spec.name, &parking).await?;
        // A message that came in meanwhile is moved at the next round.
        delete_if_empty(&ch, &spec.name).await?;
        let _ = ch.close(200, "OK".into()).await;
    }
    // The queue has the new type: bind it, and empty the parking queue (if any) into it.
    let ch = channel(conn).await?;
    for (exchange, key, args) in &spec.bindings {
        bind(&ch, &spec.name, exchange, key, args.clone()).await?;
    }
    let passive = QueueDeclareOptions {
        passive: true,
        ..Default::default()
    };
    if ch
        .queue_declare(parking.as_str().into(), passive, FieldTable::default())
        .await
        .is_err()
    {
        return Ok(report); // nothing parked (the 404 closed that channel)
    }
    for (exchange, key, args) in &spec.bindings {
        unbind(&ch, &parking, exchange, key, args).await?;
    }
    let _ = ch.close(200, "OK".into()).await;
    loop {
        let ch = channel(conn).await?;
        report.unparked += move_all(&ch, &parking, &spec.name).await?;
        let deleted = delete_if_empty(&ch, &parking).await?;
        let _ = ch.close(200, "OK".into()).await;
        if deleted {
            return Ok(report);
        }
    }
}

async fn unbind(
    ch: &Channel,
    queue: &str,
    exchange: &str,
    key: &str,
    args: &FieldTable,
) -> Result<()> {
    // Unbinding what is not bound succeeds: a second run repeats it harmlessly.
    ch.queue_unbind(queue.into(), exchange.into(), key.into(), args.clone())
        .await
        .map_err(|e| {
            refused(
                &format!("unbinding {queue} from {exchange} with {key:?}"),
                e,
            )
        })
}

/// Delete `queue` if no message waits in it; false if one does. (Quorum queues refuse the
/// `if-empty` flag, with a connection error: the count is asked first instead. The queue is
/// unbound by now, so only a publish to it by name could come between the two.)
async fn delete_if_empty(ch: &Channel, queue: &str) -> Result<bool> {
    let passive = QueueDeclareOptions {
        passive: true,
        ..Default::default()
    };
    let waiting = ch
        .queue_declare(queue.into(), passive, FieldTable::default())
        .await
        .map_err(|e| refused(&format!("counting the messages in {queue}"), e))?
        .message_count();
    if waiting > 0 {
        return Ok(false);
    }
    ch.queue_delete(queue.into(), QueueDeleteOptions::default())
        .await
        .map_err(|e| refused(&format!("deleting queue {queue}"), e))?;
    Ok(true)
}

/// Move every message waiting in `from` to `to` (through the default exchange, properties and
/// headers kept); each is acknowledged in `from` only after `to` confirmed it. Returns how many.
async fn move_all(ch: &Channel, from: &str, to: &str) -> Result<usize> {
    let mut moved = 0;
    loop {
        let mut window = Vec::with_capacity(WINDOW);
        while window.len() < WINDOW {
            let got = ch
                .basic_get(from.into(), BasicGetOptions { no_ack: false })
                .await
                .map_err(|e| refused(&format!("reading {from}"), e))?;
            let Some(msg) = got else { break };
            let d = msg.delivery;
            let confirm = ch
                .basic_publish(
                    "".into(),
                    to.into(),
                    BasicPublishOptions {
                        mandatory: true,
                        ..Default::default()
                    },
                    &d.data,
                    d.properties.clone(),
                )
                .await
                .map_err(|e| refused(&format!("moving a message to {to}"), e))?;
            window.push((d.delivery_tag, confirm));
        }
        let Some(&(last, _)) = window.last() else {
            return Ok(moved);
        };
        let n = window.len();
        for (_, confirm) in window {
            match confirm.await {
                Ok(Confirmation::Ack(None)) => {}
                other => {
                    // Nothing of this window is acknowledged: it stays in `from` (copies that
                    // did reach `to` are duplicates the replica ignores).
                    let _ = ch
                        .basic_nack(
                            last,
                            BasicNackOptions {
                                multiple: true,
                                requeue: true,
                            },
                        )
                        .await;
                    return Err(Error::new(
                        ErrorKind::Transport,
                        format!("moving messages from {from} to {to}: not confirmed ({other:?})"),
                    ));
                }
            }
        }
        ch.basic_ack(last, BasicAckOptions { multiple: true })
            .await
            .map_err(|e| refused(&format!("acknowledging moved messages in {from}"), e))?;
        moved += n;
    }
}
