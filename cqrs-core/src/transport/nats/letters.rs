//! One pass over a replica's dead letters on the dead-letter stream, for `dead-letters
//! dump|retry|purge`: read by sequence without removing them, removed one by one by sequence.

use std::sync::Arc;

use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::stream::{self, RawMessageErrorKind};

use super::{HEADER_MESSAGE_ID, NatsTransport, count_subject, header_map, headers_of, transient};
use crate::error::Result;
use crate::transport::{Headers, Letter, Letters};

impl NatsTransport {
    /// Start a pass over the dead letters of `queue` present now.
    pub fn letters(self: &Arc<Self>, queue: &str) -> Result<NatsLetters> {
        super::check_token("queue", queue)?;
        let filter = self.names.dead_all(queue);
        let (stream, last, total) = self.block_on(async {
            let (_, mut dead) = self.ensure_streams().await?;
            let last = dead
                .info()
                .await
                .map_err(|e| transient("reading the dead-letter stream", e))?
                .state
                .last_sequence;
            let total = count_subject(&dead, &filter).await?;
            Ok::<_, crate::error::Error>((dead, last, total))
        })?;
        Ok(NatsLetters {
            transport: self.clone(),
            stream,
            filter,
            next: 1,
            last,
            total,
        })
    }
}

/// One pass over `queue`'s dead letters.
pub struct NatsLetters {
    transport: Arc<NatsTransport>,
    stream: stream::Stream,
    filter: String,
    /// The sequence to read from next.
    next: u64,
    /// The stream's last sequence when the pass started: later letters are not part of it.
    last: u64,
    total: usize,
}

impl Letters for NatsLetters {
    fn total(&self) -> usize {
        self.total
    }

    fn next_letter(&mut self) -> Result<Option<Letter>> {
        if self.next > self.last {
            return Ok(None);
        }
        let (stream, filter, from) = (self.stream.clone(), self.filter.clone(), self.next);
        let got = self.transport.block_on(async move {
            stream
                .raw_message_builder()
                .sequence(from)
                .next_by_subject(filter)
                .send()
                .await
        });
        let m = match got {
            Ok(m) if m.sequence <= self.last => m,
            Ok(_) => return Ok(None),
            Err(e) if e.kind() == RawMessageErrorKind::NoMessageFound => return Ok(None),
            Err(e) => return Err(transient("reading a dead letter", e)),
        };
        self.next = m.sequence + 1;
        let (headers, message_id) = headers_of(Some(&m.headers));
        Ok(Some(Letter {
            tag: m.sequence,
            routing_key: self.transport.names.routing_key_of(&m.subject),
            body: m.payload.to_vec(),
            headers,
            message_id,
        }))
    }

    fn republish(
        &mut self,
        letter: &Letter,
        routing_key: &str,
        body: &[u8],
        headers: &Headers,
    ) -> Result<bool> {
        let Some(subject) = self.transport.names.subject_of(routing_key) else {
            return Ok(false);
        };
        let mut headers = headers.clone();
        if let Some(id) = &letter.message_id {
            headers.insert(HEADER_MESSAGE_ID.into(), id.clone());
        }
        // A replay made again (a crash before the letter was removed) is dropped as a duplicate.
        let id = format!(
            "{}:{}:replay",
            self.transport.names.dead_stream(),
            letter.tag
        );
        let message = PublishMessage::build()
            .payload(body.to_vec().into())
            .headers(header_map(&headers))
            .message_id(id);
        let t = self.transport.clone();
        t.block_on(async {
            // Nobody takes it (RabbitMQ would return it unroutable): the letter stays.
            if !t.taken(&subject).await? {
                return Ok(false);
            }
            t.publish_acked(subject, message).await.map(|()| true)
        })
    }

    fn remove(&mut self, letter: &Letter) -> Result<()> {
        let (stream, seq) = (self.stream.clone(), letter.tag);
        self.transport
            .block_on(async move { stream.delete_message(seq).await })
            .map(|_| ())
            .map_err(|e| transient("removing a dead letter", e))
    }

    fn purge_all(&mut self) -> Result<usize> {
        let (stream, filter, last) = (self.stream.clone(), self.filter.clone(), self.last);
        // Letters that came after the pass started are not part of it.
        self.transport
            .block_on(async move { stream.purge().filter(filter).sequence(last + 1).await })
            .map(|r| r.purged as usize)
            .map_err(|e| transient("purging dead letters", e))
    }
}
