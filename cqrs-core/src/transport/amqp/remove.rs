//! `cqrs queues delete`: a replica's queues and its retry exchange removed from the broker when the
//! replica is retired, refusing while any of them still holds messages unless forced.

use std::time::Duration;

use lapin::Channel;
use lapin::options::{ExchangeDeleteOptions, QueueDeclareOptions, QueueDeleteOptions};
use lapin::types::FieldTable;

use super::{AmqpTransport, parking_queue, refused, retry_exchange, retry_queue, transient};
use crate::error::{Error, ErrorKind, Result};
use crate::transport::QueueDeleted;
use crate::transport::routing::dead_letter_queue;

impl AmqpTransport {
    /// Delete `queue`, its dead-letter queue, its delay queues (`delays`), any parking queue a
    /// migration left and its retry exchange. Unless `force`, nothing is deleted while one of the
    /// queues holds a message: the error names each and its count. Returns the queues that
    /// existed, with the messages deleted with them.
    pub fn delete_replica(
        &self,
        queue: &str,
        delays: &[Duration],
        force: bool,
    ) -> Result<Vec<QueueDeleted>> {
        super::super::routing::check_queue_name(queue).map_err(Error::config)?;
        let mut names = vec![queue.to_string(), dead_letter_queue(queue)];
        names.extend(delays.iter().map(|d| retry_queue(queue, *d)));
        let parked: Vec<String> = names.iter().map(|n| parking_queue(n)).collect();
        names.extend(parked);
        let conn = self.connection()?;
        let exchange = retry_exchange(queue);
        self.runtime.block_on(async move {
            let mut found = Vec::new();
            for name in &names {
                if let Some(messages) = waiting(&conn, name).await? {
                    found.push(QueueDeleted {
                        queue: name.clone(),
                        messages,
                    });
                }
            }
            let holding: Vec<String> = found
                .iter()
                .filter(|q| q.messages > 0)
                .map(|q| format!("{} holds {}", q.queue, q.messages))
                .collect();
            if !force && !holding.is_empty() {
                return Err(Error::new(
                    ErrorKind::Transport,
                    format!(
                        "not deleting: {} (consume or dump them first, or --force)",
                        holding.join(", ")
                    ),
                ));
            }
            let ch = channel(&conn).await?;
            for q in &found {
                ch.queue_delete(q.queue.as_str().into(), QueueDeleteOptions::default())
                    .await
                    .map_err(|e| refused(&format!("deleting queue {}", q.queue), e))?;
            }
            ch.exchange_delete(exchange.as_str().into(), ExchangeDeleteOptions::default())
                .await
                .map_err(|e| refused(&format!("deleting exchange {exchange}"), e))?;
            let _ = ch.close(200, "OK".into()).await;
            Ok(found)
        })
    }
}

async fn channel(conn: &lapin::Connection) -> Result<Channel> {
    conn.create_channel()
        .await
        .map_err(|e| transient("opening a channel", e))
}

/// Messages waiting in `queue`, or `None` if it does not exist (a passive declare; the 404 closes
/// only the channel it was asked on).
async fn waiting(conn: &lapin::Connection, queue: &str) -> Result<Option<u32>> {
    let ch = channel(conn).await?;
    let passive = QueueDeclareOptions {
        passive: true,
        ..Default::default()
    };
    match ch
        .queue_declare(queue.into(), passive, FieldTable::default())
        .await
    {
        Ok(q) => {
            let _ = ch.close(200, "OK".into()).await;
            Ok(Some(q.message_count()))
        }
        Err(e) if e.to_string().contains("NOT_FOUND") => Ok(None),
        Err(e) => Err(refused(&format!("looking up queue {queue}"), e)),
    }
}
