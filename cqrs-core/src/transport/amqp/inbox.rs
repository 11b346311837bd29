//! One worker's view of a replica queue: the lapin consumer stream pumped into a channel the
//! synchronous consumer engine reads, acks with `multiple`, confirmed retry and dead-letter copies.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError, TryRecvError};
use std::time::Duration;

use futures_lite::StreamExt;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel};

use super::{
    AmqpTransport, Confirm, Found, HEADER_DELAY, TypedChannel, declare_delay_level, headers_of,
    properties, publish_confirmed, refused_unless_gone, retry_exchange, transient,
};
use crate::error::{Error, ErrorKind, Result};
use crate::transport::routing::{dead_letter_key, dead_letter_queue, directed_key};
use crate::transport::{Delivery, Headers, Inbox};

impl AmqpTransport {
    /// A consumer of `queue` on its own channel with `prefetch` unacked deliveries in flight.
    pub fn inbox(
        self: &Arc<Self>,
        queue: &str,
        prefetch: u16,
        delays: &[Duration],
    ) -> Result<AmqpInbox> {
        let consume = self.channel(false)?;
        let publish = self.channel(true)?;
        let (tx, rx) = std::sync::mpsc::channel();
        let queue_name = queue.to_string();
        let ch = consume.clone();
        let mut consumer = self.runtime.block_on(async move {
            ch.basic_qos(prefetch, BasicQosOptions::default())
                .await
                .map_err(|e| transient("basic_qos", e))?;
            ch.basic_consume(
                queue_name.as_str().into(),
                "".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(|e| refused_unless_gone(&format!("consuming {queue_name}"), e))
        })?;
        self.runtime.spawn(async move {
            while let Some(d) = consumer.next().await {
                if tx.send(d).is_err() {
                    break;
                }
            }
        });
        Ok(AmqpInbox {
            transport: self.clone(),
            queue: queue.to_string(),
            consume,
            publish,
            rx,
            closed: false,
            delays: delays.iter().copied().collect(),
        })
    }
}

/// One worker's view of a replica queue.
pub struct AmqpInbox {
    transport: Arc<AmqpTransport>,
    queue: String,
    consume: Channel,
    publish: Channel,
    rx: Receiver<lapin::Result<lapin::message::Delivery>>,
    closed: bool,
    delays: BTreeSet<Duration>,
}

impl AmqpInbox {
    fn convert(d: lapin::message::Delivery) -> Delivery {
        Delivery {
            tag: d.delivery_tag,
            routing_key: d.routing_key.to_string(),
            headers: headers_of(&d.properties),
            redelivered: d.redelivered,
            message_id: d.properties.message_id().as_ref().map(|m| m.to_string()),
            body: d.data,
        }
    }

    fn take(&mut self, item: lapin::Result<lapin::message::Delivery>) -> Result<Delivery> {
        item.map(Self::convert).map_err(|e| {
            self.closed = true;
            transient(&format!("consuming {}", self.queue), e)
        })
    }

    fn publish_confirmed(
        &mut self,
        exchange: &str,
        key: &str,
        body: &[u8],
        props: BasicProperties,
    ) -> Result<()> {
        let ch = self.publish.clone();
        match self
            .transport
            .runtime
            .block_on(publish_confirmed(&ch, exchange, key, body, props))?
        {
            Confirm::Delivered => Ok(()),
            Confirm::Unroutable => Err(Error::new(
                ErrorKind::Transport,
                format!("no queue bound for {key:?} on {exchange:?}"),
            )),
            Confirm::Failed(why) => Err(transient(&format!("publishing to {exchange}/{key}"), why)),
        }
    }
}

impl Inbox for AmqpInbox {
    fn queue(&self) -> &str {
        &self.queue
    }

    fn receive(&mut self, max: usize, wait: Duration) -> Result<Vec<Delivery>> {
        if self.closed {
            return Err(transient(
                &format!("consuming {}", self.queue),
                "the channel is closed",
            ));
        }
        let first = match self.rx.recv_timeout(wait) {
            Ok(item) => item,
            Err(RecvTimeoutError::Timeout) => {
                // A connection closed by the broker may leave the stream silent: ask the channel.
                if !self.consume.status().connected() {
                    self.closed = true;
                    return Err(transient(
                        &format!("consuming {}", self.queue),
                        "the channel is no longer connected",
                    ));
                }
                return Ok(Vec::new());
            }
            Err(RecvTimeoutError::Disconnected) => {
                self.closed = true;
                return Err(transient(
                    &format!("consuming {}", self.queue),
                    "the consumer was cancelled",
                ));
            }
        };
        let mut out = vec![self.take(first)?];
        while out.len() < max {
            match self.rx.try_recv() {
                Ok(item) => out.push(self.take(item)?),
                Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
            }
        }
        Ok(out)
    }

    fn ack_up_to(&mut self, tag: u64) -> Result<()> {
        let ch = self.consume.clone();
        self.transport
            .runtime
            .block_on(async move { ch.basic_ack(tag, BasicAckOptions { multiple: true }).await })
            .map_err(|e| transient("acknowledging", e))
    }

    fn publish_retry(
        &mut self,
        original: &Delivery,
        cqrs_id: &str,
        body: Vec<u8>,
        mut headers: Headers,
        delay: Duration,
    ) -> Result<()> {
        if self.delays.insert(delay) {
            // A level the policy chose that was not declared up front; one found with the other
            // type is used (the queues were migrated while this worker ran).
            let conn = self.transport.connection()?;
            let (mut ch, exchange, queue, kind) = (
                self.transport.channel(false)?,
                self.transport.config.exchange.clone(),
                self.queue.clone(),
                self.transport.config.queue_type,
            );
            self.transport.runtime.block_on(async move {
                let mut typed_ch = TypedChannel {
                    ch: &mut ch,
                    conn: &conn,
                    kind,
                    found: Found::Use,
                };
                declare_delay_level(&mut typed_ch, &exchange, &queue, delay).await?;
                let _ = ch.close(200, "OK".into()).await;
                Ok::<_, Error>(())
            })?;
        }
        headers.insert(HEADER_DELAY.into(), delay.as_millis().to_string());
        let props = properties(&headers, original.message_id.as_deref());
        let key = directed_key(&self.queue, cqrs_id);
        self.publish_confirmed(&retry_exchange(&self.queue), &key, &body, props)
    }

    fn publish_dead_letter(
        &mut self,
        original: &Delivery,
        cqrs_id: Option<&str>,
        headers: Headers,
        ttl: Duration,
    ) -> Result<()> {
        let props = properties(&headers, original.message_id.as_deref())
            .with_expiration(ttl.as_millis().to_string().into());
        if let Some(id) = cqrs_id {
            // Routed by model as django-cqrs does, when the dead-letter queue is bound for it.
            let (ch, exchange) = (self.publish.clone(), self.transport.config.exchange.clone());
            let key = dead_letter_key(&self.queue, id);
            let confirm = self.transport.runtime.block_on(publish_confirmed(
                &ch,
                &exchange,
                &key,
                &original.body,
                props.clone(),
            ))?;
            match confirm {
                Confirm::Delivered => return Ok(()),
                // A model the queue is not bound for (unknown, or a key too long to bind): the
                // letter must not come back and stop the consumer, so it goes straight in.
                Confirm::Unroutable => {}
                Confirm::Failed(why) => {
                    return Err(transient(&format!("publishing to {exchange}/{key}"), why));
                }
            }
        }
        // Straight to the dead-letter queue through the default exchange.
        self.publish_confirmed("", &dead_letter_queue(&self.queue), &original.body, props)
    }

    fn requeue_unacked(&mut self) -> Result<()> {
        let ch = self.consume.clone();
        let r = self.transport.runtime.block_on(async move {
            ch.basic_nack(
                0,
                BasicNackOptions {
                    multiple: true,
                    requeue: true,
                },
            )
            .await
        });
        // Deliveries already pumped here carry tags the nack just gave back: drop them.
        while self.rx.try_recv().is_ok() {}
        r.map_err(|e| transient("requeueing", e))
    }
}

impl Drop for AmqpInbox {
    fn drop(&mut self) {
        // Closing the channel returns its unacked deliveries to the queue.
        let (c, p) = (self.consume.clone(), self.publish.clone());
        let _ = self.transport.runtime.block_on(async move {
            let _ = c.close(200, "OK".into()).await;
            p.close(200, "OK".into()).await
        });
    }
}
