//! The relay's publisher: a batch sent before any confirm is awaited, one round trip per batch.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use lapin::Channel;
use lapin::options::BasicPublishOptions;

use super::{AmqpTransport, MAX_ROUTING_KEY, properties, to_confirm, transient};
use tokio::sync::oneshot;

use crate::error::Result;
use crate::transport::{Confirm, Outgoing, Publisher, Sent};

impl AmqpTransport {
    /// A relay publisher on its own confirm-mode channel.
    pub fn publisher(self: &Arc<Self>) -> Result<AmqpPublisher> {
        Ok(AmqpPublisher {
            transport: self.clone(),
            channel: self.channel(true)?,
            last_written: None,
            broken: Arc::new(AtomicBool::new(false)),
        })
    }
}

/// The relay's publisher: every message of a batch is sent before any confirm is awaited, so a
/// batch costs one round trip, not one per message; the sending itself runs on the transport's
/// runtime, so the relay claims its next batch meanwhile.
pub struct AmqpPublisher {
    transport: Arc<AmqpTransport>,
    channel: Channel,
    /// Fires when the last batch handed to the runtime has been written to the channel.
    last_written: Option<oneshot::Receiver<()>>,
    /// Set when a batch on the channel was nacked or failed: a channel kept after nacks was seen
    /// to nack every publish for 30 s (a 3-node cluster that lost a quorum leader), so the next
    /// batch goes out on a fresh one, and the refused rows, back in the outbox, with it.
    broken: Arc<AtomicBool>,
}

impl Publisher for AmqpPublisher {
    fn publish(&mut self, messages: &[Outgoing]) -> Result<Vec<Confirm>> {
        self.send(messages)?.confirms()
    }

    fn send(&mut self, messages: &[Outgoing]) -> Result<Sent> {
        self.check()?;
        let ch = self.channel.clone();
        let exchange = self.transport.config.exchange.clone();
        let batch = messages.to_vec();
        let previous = self.last_written.take();
        let (written, written_rx) = oneshot::channel::<()>();
        self.last_written = Some(written_rx);
        Ok(self.transport.runtime.send_batch(
            self.broken.clone(),
            write_and_confirm(ch, exchange, batch, previous, written),
        ))
    }

    fn check(&mut self) -> Result<()> {
        // lapin marks the channel closed when its connection's socket ends (a cut link, a broker
        // restart) or a heartbeat is missed; a new one reconnects first. One that nacked is not
        // kept either (see `broken`); its batches still unconfirmed fail and are published again.
        let refused = self.broken.swap(false, Ordering::AcqRel);
        if refused || !self.channel.status().connected() {
            let fresh = self.transport.channel(true)?;
            let old = std::mem::replace(&mut self.channel, fresh);
            if refused {
                metrics::counter!("cqrs_relay_channels_replaced_total").increment(1);
                tracing::warn!("publisher: a batch was refused; publishing on a new channel");
                self.transport.block_on(async move {
                    let _ = old.close(200, "OK".into()).await;
                });
            }
        }
        Ok(())
    }
}

/// Write `batch` to the channel once the batch before it is written (`previous` fires), signal
/// `written`, then collect the broker's confirms.
async fn write_and_confirm(
    ch: Channel,
    exchange: String,
    batch: Vec<Outgoing>,
    previous: Option<oneshot::Receiver<()>>,
    written: oneshot::Sender<()>,
) -> Result<Vec<Confirm>> {
    // Batches go out in the order they were handed over (written or failed, it fires).
    if let Some(previous) = previous {
        let _ = previous.await;
    }
    let mut pending = Vec::with_capacity(batch.len());
    for m in &batch {
        if m.routing_key.len() > MAX_ROUTING_KEY {
            pending.push(None); // as in publish_confirmed: nothing can be bound for it
            continue;
        }
        let props = properties(&m.headers, Some(&m.message_id));
        let opts = BasicPublishOptions {
            mandatory: true,
            ..Default::default()
        };
        let confirm = ch
            .basic_publish(
                exchange.as_str().into(),
                m.routing_key.as_str().into(),
                opts,
                &m.body,
                props,
            )
            .await
            .map_err(|e| transient("publishing", e))?;
        pending.push(Some(confirm));
    }
    crate::crash::point("relay.after_publish");
    drop(written);
    let mut out = Vec::with_capacity(pending.len());
    for confirm in pending {
        out.push(match confirm {
            Some(c) => to_confirm(c.await),
            None => Confirm::Unroutable,
        });
    }
    Ok(out)
}
