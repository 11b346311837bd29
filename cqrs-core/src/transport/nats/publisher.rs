//! The relay's publisher: a batch's publishes all sent before any ack is awaited, the acks then
//! read in order (the relay deletes outbox rows by confirmed prefix).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use async_nats::jetstream::context::{PublishAckFuture, PublishError, PublishErrorKind};
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::publish::PublishAck;
use tokio::sync::oneshot;

use super::{NatsTransport, header_map, transient};
use crate::error::Result;

/// How long a batch's acks are waited for, from when its last message was written.
const ACK_DEADLINE: std::time::Duration = std::time::Duration::from_secs(10);
use crate::transport::{Confirm, Outgoing, Publisher, Sent};

impl NatsTransport {
    /// A relay publisher (the streams must exist: [`Broker::publisher`](crate::transport::Broker)
    /// declares them first).
    pub fn publisher(self: &Arc<Self>) -> NatsPublisher {
        NatsPublisher {
            transport: self.clone(),
            last_written: None,
            recheck: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Publish one message to `subject` and wait for the stream's ack.
    pub(crate) async fn publish_acked(
        &self,
        subject: String,
        message: PublishMessage,
    ) -> Result<()> {
        let sent = self
            .js
            .send_publish(subject.clone(), message)
            .await
            .map_err(|e| transient(&format!("publishing to {subject}"), e))?;
        tokio::time::timeout(ACK_DEADLINE, sent.into_future())
            .await
            .map_err(|_| transient(&format!("publishing to {subject}"), "no ack"))?
            .map(drop)
            .map_err(|e| transient(&format!("publishing to {subject}"), no_ack(&e)))
    }
}

/// The relay's publisher over the transport's shared connection.
pub struct NatsPublisher {
    transport: Arc<NatsTransport>,
    /// Fires when the last batch handed to the runtime has been written: batches go out in order.
    last_written: Option<oneshot::Receiver<()>>,
    /// Set when a batch was not acked: the streams are declared again before the next one, so a
    /// stream deleted under the relay comes back instead of failing every publish.
    recheck: Arc<AtomicBool>,
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
        Ok(self
            .transport
            .runtime
            .send_batch(self.recheck.clone(), async move {
                write_and_confirm(&transport, batch, previous, written).await
            }))
    }

    fn check(&mut self) -> Result<()> {
        // async-nats reconnects in the background; until it has, a publish would only wait.
        if let state @ (async_nats::connection::State::Disconnected
        | async_nats::connection::State::Pending) = self.transport.client.connection_state()
        {
            return Err(transient(
                "publishing to NATS",
                format!("the connection is {state:?}"),
            ));
        }
        if self.recheck.swap(false, Ordering::AcqRel) {
            // Not fatal: between leaders a cluster answers no stream request either, and the
            // publish that follows is what finds the new leader.
            let t = self.transport.clone();
            if let Err(e) = t.block_on(t.ensure_streams()) {
                tracing::warn!("publisher: the streams could not be checked: {e}");
            }
        }
        Ok(())
    }
}

/// One message of a batch on its way.
enum Pending {
    Sent(PublishAckFuture),
    Unroutable,
    Refused(String),
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
    let mut dropped = transport.disconnects.clone();
    dropped.mark_unchanged();
    let mut pending: Vec<Pending> = Vec::with_capacity(batch.len());
    for m in batch {
        // No consumer can take a subject that is not made of tokens: nobody listens.
        let Some(subject) = transport.names.subject_of(&m.routing_key) else {
            pending.push(Pending::Unroutable);
            continue;
        };
        if !transport.taken(&subject).await? {
            pending.push(Pending::Unroutable);
            continue;
        }
        let message = PublishMessage::build()
            .payload(m.body.into())
            .headers(header_map(&m.headers))
            .message_id(&m.message_id);
        match transport.js.send_publish(subject, message).await {
            Ok(ack) => pending.push(Pending::Sent(ack)),
            // This message's own fault (too large for the server): the rest of the batch goes on.
            Err(e) if e.kind() == PublishErrorKind::MaxPayloadExceeded => {
                pending.push(Pending::Refused(format!("refused: {e}")));
            }
            Err(e) => return Err(transient("publishing", e)),
        }
    }
    crate::crash::point("relay.after_publish");
    drop(written);
    // One deadline for the whole batch: each ack future's own timeout starts only when it is
    // awaited, so awaiting them in turn after a lost node would wait 30 s per message.
    let deadline = tokio::time::Instant::now() + ACK_DEADLINE;
    let mut out = Vec::with_capacity(pending.len());
    let mut lost = false;
    for ack in pending {
        let ack = match ack {
            Pending::Sent(ack) => ack,
            Pending::Unroutable => {
                out.push(Confirm::Unroutable);
                continue;
            }
            Pending::Refused(why) => {
                out.push(Confirm::Failed(why));
                continue;
            }
        };
        if lost {
            out.push(Confirm::Failed(
                "the connection dropped before its ack".into(),
            ));
            continue;
        }
        out.push(tokio::select! {
            ack = tokio::time::timeout_at(deadline, ack.into_future()) => match ack {
                Ok(ack) => to_confirm(ack),
                Err(_) => Confirm::Failed(format!("no ack within {} s", ACK_DEADLINE.as_secs())),
            },
            _ = dropped.changed() => {
                lost = true;
                Confirm::Failed("the connection dropped before its ack".into())
            }
        });
    }
    Ok(out)
}

fn to_confirm(ack: std::result::Result<PublishAck, PublishError>) -> Confirm {
    match ack {
        // A duplicate was stored before (a re-publish after a crash): delivered all the same.
        Ok(_) => Confirm::Delivered,
        Err(e) => Confirm::Failed(no_ack(&e)),
    }
}

/// Why a publish was not acked. No stream answering is never taken for "nobody listens": the
/// streams were declared before the first publish, so it is a stream between leaders (a cluster
/// node lost) or one deleted under the relay, and the message must be published again.
fn no_ack(e: &PublishError) -> String {
    match e.kind() {
        PublishErrorKind::StreamNotFound => {
            "no stream answered for the subject (its leader being elected, or the stream deleted)"
                .into()
        }
        _ => format!("no ack: {e}"),
    }
}
