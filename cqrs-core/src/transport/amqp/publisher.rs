//! The relay's publisher: a batch sent before any confirm is awaited, one round trip per batch.

use std::sync::Arc;

use lapin::Channel;
use lapin::options::BasicPublishOptions;

use super::{AmqpTransport, MAX_ROUTING_KEY, properties, to_confirm, transient};
use crate::error::Result;
use crate::transport::{Confirm, Outgoing, Publisher};

impl AmqpTransport {
    /// A relay publisher on its own confirm-mode channel.
    pub fn publisher(self: &Arc<Self>) -> Result<AmqpPublisher> {
        Ok(AmqpPublisher {
            transport: self.clone(),
            channel: self.channel(true)?,
        })
    }
}

/// The relay's publisher: every message of a batch is sent before any confirm is awaited, so a
/// batch costs one round trip, not one per message.
pub struct AmqpPublisher {
    transport: Arc<AmqpTransport>,
    channel: Channel,
}

impl Publisher for AmqpPublisher {
    fn publish(&mut self, messages: &[Outgoing]) -> Result<Vec<Confirm>> {
        if !self.channel.status().connected() {
            self.channel = self.transport.channel(true)?;
        }
        let ch = self.channel.clone();
        let exchange = self.transport.config.exchange.clone();
        self.transport.runtime.block_on(async move {
            let mut pending = Vec::with_capacity(messages.len());
            for m in messages {
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
            let mut out = Vec::with_capacity(pending.len());
            for confirm in pending {
                out.push(match confirm {
                    Some(c) => to_confirm(c.await),
                    None => Confirm::Unroutable,
                });
            }
            Ok(out)
        })
    }
}
