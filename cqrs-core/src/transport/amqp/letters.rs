//! One pass over a replica's dead-letter queue for `dead-letters dump|retry|purge`.

use std::sync::Arc;

use lapin::Channel;
use lapin::options::{BasicAckOptions, QueueDeclareOptions};
use lapin::types::FieldTable;

use super::{AmqpTransport, Confirm, headers_of, properties, publish_confirmed, transient};
use crate::error::{Error, Result};
use crate::transport::routing::dead_letter_queue;
use crate::transport::{Headers, Letter, Letters};

/// One pass over `dead_letter_<queue>`: reads the letters present when it starts, without
/// removing them; a letter is removed only by [`LetterPass::remove`]. Letters not removed return
/// to the queue when the pass ends (its channel closes), as django-cqrs's `dump` leaves them.
pub struct LetterPass {
    transport: Arc<AmqpTransport>,
    read: Channel,
    publish: Channel,
    dlq: String,
    remaining: u32,
    total: usize,
}

impl AmqpTransport {
    /// Start a pass over the dead letters of `queue` (the queue must exist).
    pub fn letters(self: &Arc<Self>, queue: &str) -> Result<LetterPass> {
        let read = self.channel(false)?;
        let publish = self.channel(true)?;
        let dlq = dead_letter_queue(queue);
        let ch = read.clone();
        let name = dlq.clone();
        let remaining = self.runtime.block_on(async move {
            ch.queue_declare(
                name.as_str().into(),
                QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .map(|q| q.message_count())
            .map_err(|e| {
                Error::config(format!(
                    "dead-letter queue {name} does not exist (is --queue right?): {e}"
                ))
            })
        })?;
        Ok(LetterPass {
            transport: self.clone(),
            read,
            publish,
            dlq,
            remaining,
            total: remaining as usize,
        })
    }
}

impl Letters for LetterPass {
    fn total(&self) -> usize {
        self.total
    }

    fn purge_all(&mut self) -> Result<usize> {
        self.transport.purge(&self.dlq)
    }

    /// The next letter, or `None` when every letter present at the start was read.
    fn next_letter(&mut self) -> Result<Option<Letter>> {
        if self.remaining == 0 {
            return Ok(None);
        }
        self.remaining -= 1;
        let (ch, dlq) = (self.read.clone(), self.dlq.clone());
        let got = self
            .transport
            .runtime
            .block_on(async move {
                ch.basic_get(
                    dlq.as_str().into(),
                    lapin::options::BasicGetOptions { no_ack: false },
                )
                .await
            })
            .map_err(|e| transient("reading a dead letter", e))?;
        Ok(got.map(|m| {
            let d = m.delivery;
            Letter {
                tag: d.delivery_tag,
                routing_key: d.routing_key.to_string(),
                headers: headers_of(&d.properties),
                message_id: d.properties.message_id().as_ref().map(|m| m.to_string()),
                body: d.data,
            }
        }))
    }

    /// Publish `body` to the main exchange with `routing_key` and wait for the confirm.
    fn republish(
        &mut self,
        letter: &Letter,
        routing_key: &str,
        body: &[u8],
        headers: &Headers,
    ) -> Result<bool> {
        let (ch, exchange) = (self.publish.clone(), self.transport.config.exchange.clone());
        match self.transport.runtime.block_on(publish_confirmed(
            &ch,
            &exchange,
            routing_key,
            body,
            properties(headers, letter.message_id.as_deref()),
        ))? {
            Confirm::Delivered => Ok(true),
            Confirm::Unroutable => Ok(false),
            Confirm::Failed(why) => Err(transient(&format!("republishing to {routing_key}"), why)),
        }
    }

    /// Remove a letter from the queue.
    fn remove(&mut self, letter: &Letter) -> Result<()> {
        let (ch, tag) = (self.read.clone(), letter.tag);
        self.transport
            .runtime
            .block_on(async move { ch.basic_ack(tag, BasicAckOptions { multiple: false }).await })
            .map_err(|e| transient("removing a dead letter", e))
    }
}

impl Drop for LetterPass {
    fn drop(&mut self) {
        // Closing the reading channel gives back every letter not removed.
        let (r, p) = (self.read.clone(), self.publish.clone());
        let _ = self.transport.runtime.block_on(async move {
            let _ = r.close(200, "OK".into()).await;
            p.close(200, "OK".into()).await
        });
    }
}
