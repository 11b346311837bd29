//! The relay's publisher: a batch's publishes all sent before any ack is awaited, the acks then
//! read in order (the relay deletes outbox rows by confirmed prefix).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use async_nats::jetstream::context::{PublishAckFuture, PublishErrorKind};
use async_nats::jetstream::message::PublishMessage;
use tokio::sync::oneshot;

use super::{NatsTransport, header_map, transient};
use crate::error::{Error, ErrorKind, Result};
use crate::transport::{Confirm, Outgoing, Publisher, Sent};

impl NatsTransport {
    /// A relay publisher (the streams must exist: [`Broker::publisher`](crate::transport::Broker)
    /// declares them first).
    pub fn publisher(self: &Arc<Self>) -> NatsPublisher {
        NatsPublisher {
            transport: self.clone(),
            last_written: None,
        }
    }

    /// Publish one message to `subject` and wait for the stream's ack: `Ok(false)` if no stream
    /// takes the subject.
    pub(crate) async fn publish_acked(
        &self,
        subject: String,
        message: PublishMessage,
    ) -> Result<bool> {
        let sent = self
            .js
            .send_publish(subject.clone(), message)
            .await
            .map_err(|e| transient(&format!("publishing to {subject}"), e))?;
        match to_confirm(sent.await) {
            Confirm::Delivered => Ok(true),
            Confirm::Unroutable => Ok(false),
            Confirm::Failed(why) => Err(transient(&format!("publishing to {subject}"), why)),
        }
    }
}

/// The relay's publisher over the transport's shared connection.
pub struct NatsPublisher {
    transport: Arc<NatsTransport>,
    /// Fires when the last batch handed to the runtime has been written: batches go out in order.
    last_written: Option<oneshot::Receiver<()>>,
}

impl Publisher for NatsPublisher {
    fn publish(&mut self, messages: &[Outgoing]) -> Result<Vec<Confirm>> {
        self.send(messages)?.confirms()
    }

    fn send(&mut self, messages: &[Outgoing]) -> Result<Sent> {
        self.check()?;
        let transport = self.transport.clone();
        let batch = messages.to_vec();
        let previous = self.last_written.take();
        let (written, written_rx) = oneshot::channel::<()>();
        self.last_written = Some(written_rx);
        let done = Arc::new(AtomicBool::new(false));
        let finished = done.clone();
        let task = self.transport.runtime.spawn(async move {
            let result = write_and_confirm(&transport, batch, previous, written).await;
            finished.store(true, Ordering::Release);
            result
        });
        let runtime = self.transport.runtime.clone();
        Ok(Sent::waiting(done, move || {
            runtime.block_on(task).unwrap_or_else(|e| {
                Err(Error::new(
                    ErrorKind::Transport,
                    format!("the publishing task ended: {e}"),
                ))
            })
        }))
    }

    fn check(&mut self) -> Result<()> {
        // async-nats reconnects in the background; until it has, a publish would only wait.
        match self.transport.client.connection_state() {
            async_nats::connection::State::Connected => Ok(()),
            state => Err(transient(
                "publishing to NATS",
                format!("the connection is {state:?}"),
            )),
        }
    }
}

/// Send every message of `batch` once the batch before it is written (`previous` fires), signal
/// `written`, then read the stream's acks in order.
async fn write_and_confirm(
    transport: &NatsTransport,
    batch: Vec<Outgoing>,
    previous: Option<oneshot::Receiver<()>>,
    written: oneshot::Sender<()>,
) -> Result<Vec<Confirm>> {
    if let Some(previous) = previous {
        let _ = previous.await;
    }
    let mut pending: Vec<Option<PublishAckFuture>> = Vec::with_capacity(batch.len());
    for m in batch {
        let Some(subject) = transport.names.subject_of(&m.routing_key) else {
            // No consumer can take a subject that is not made of tokens: nobody listens.
            pending.push(None);
            continue;
        };
        let message = PublishMessage::build()
            .payload(m.body.into())
            .headers(header_map(&m.headers))
            .message_id(&m.message_id);
        let ack = transport
            .js
            .send_publish(subject, message)
            .await
            .map_err(|e| transient("publishing", e))?;
        pending.push(Some(ack));
    }
    crate::crash::point("relay.after_publish");
    drop(written);
    let mut out = Vec::with_capacity(pending.len());
    for ack in pending {
        out.push(match ack {
            Some(a) => to_confirm(a.await),
            None => Confirm::Unroutable,
        });
    }
    Ok(out)
}

fn to_confirm(
    ack: std::result::Result<
        async_nats::jetstream::publish::PublishAck,
        async_nats::jetstream::context::PublishError,
    >,
) -> Confirm {
    match ack {
        // A duplicate was stored before (a re-publish after a crash): delivered all the same.
        Ok(_) => Confirm::Delivered,
        // No stream takes the subject: nobody declared a replica on this exchange yet.
        Err(e) if e.kind() == PublishErrorKind::StreamNotFound => Confirm::Unroutable,
        Err(e) => Confirm::Failed(format!("no ack: {e}")),
    }
}
