//! `dead-letters dump | retry | purge`: inspect and recover a replica's dead letters, compatible
//! with django-cqrs's `cqrs_dead_letters` (same queue, same retry routing and body changes).
//!
//! Every letter stays in the broker until a person decides: `dump` only reads, `retry` removes a
//! letter only after its copy was confirmed, `purge` removes.

use chrono::Utc;
use std::io::Write;

use crate::error::{Error, ErrorKind, Result};
use crate::message::{Expires, Message, SignalType};
use crate::transport::routing::directed_key;
use crate::transport::{HEADER_DIRECTED, Headers, Letter, Letters};

/// What to do with the letters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Print each body on a line; leave every letter in the queue.
    Dump,
    /// Re-publish with `retries` 0 and `expires` now + 1 day to `cqrs.<queue>.<cqrs_id>`, then remove.
    Retry,
    /// Remove.
    Purge,
}

/// Which letters.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Only letters of these models (empty: all).
    pub cqrs_ids: Vec<String>,
    /// At most this many letters.
    pub limit: Option<usize>,
}

/// Counts of one run.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Report {
    /// Letters in the queue at the start.
    pub total: usize,
    /// Letters that matched the filter (up to the limit).
    pub matched: usize,
    /// Letters dumped, retried or purged.
    pub done: usize,
    /// Letters that could not be retried (not a decodable message): left in the queue.
    pub left: usize,
}

/// Run `action` on the dead letters of `queue` read through `pass`; bodies (dump) and
/// re-published bodies (retry) go to `out`, one per line.
pub fn run(
    pass: &mut dyn Letters,
    queue: &str,
    action: Action,
    filter: &Filter,
    out: &mut dyn Write,
) -> Result<Report> {
    if action == Action::Purge && filter.cqrs_ids.is_empty() && filter.limit.is_none() {
        let n = pass.purge_all()?;
        return Ok(Report {
            total: n,
            matched: n,
            done: n,
            left: 0,
        });
    }
    let mut report = Report {
        total: pass.total(),
        ..Report::default()
    };
    let io = |e: std::io::Error| Error::new(ErrorKind::Io, format!("writing output: {e}"));
    while let Some(letter) = pass.next_letter()? {
        if filter.limit.is_some_and(|l| report.matched >= l) {
            break;
        }
        let decoded = Message::decode(&letter.body);
        let matches = filter.cqrs_ids.is_empty()
            || decoded
                .as_ref()
                .is_ok_and(|m| filter.cqrs_ids.contains(&m.cqrs_id));
        if !matches {
            continue;
        }
        report.matched += 1;
        match action {
            Action::Dump => {
                out.write_all(&letter.body)
                    .and_then(|_| out.write_all(b"\n"))
                    .map_err(io)?;
                report.done += 1;
            }
            Action::Purge => {
                pass.remove(&letter)?;
                report.done += 1;
            }
            Action::Retry => match decoded {
                Ok(mut m) => {
                    let body = retried_body(&mut m);
                    let (message_id, revision) = (letter.message_id.as_deref(), m.revision().ok());
                    tracing::info!(
                        cqrs_id = %m.cqrs_id,
                        pk = %m.instance_pk,
                        revision,
                        message_id,
                        "retrying {}/{}: {} pk {}",
                        report.matched,
                        report.total,
                        m.cqrs_id,
                        m.instance_pk
                    );
                    let key = directed_key(queue, &m.cqrs_id);
                    if !pass.republish(&letter, &key, &body, &retry_headers(&letter, &m))? {
                        // A model this queue does not consume (yet): the letter waits for it.
                        tracing::warn!(
                            cqrs_id = %m.cqrs_id,
                            pk = %m.instance_pk,
                            revision,
                            message_id,
                            "dead letter of {} left in the queue: no queue is bound for {key:?}",
                            m.cqrs_id
                        );
                        report.left += 1;
                        continue;
                    }
                    pass.remove(&letter)?;
                    out.write_all(&body)
                        .and_then(|_| out.write_all(b"\n"))
                        .map_err(io)?;
                    report.done += 1;
                }
                Err(e) => {
                    tracing::warn!(
                        message_id = letter.message_id.as_deref(),
                        "dead letter left in the queue: it cannot be retried: {e}"
                    );
                    report.left += 1;
                }
            },
        }
    }
    Ok(report)
}

/// django-cqrs's retry: `retries` 0, `expires` now + 1 day, everything else as it was.
fn retried_body(m: &mut Message) -> Vec<u8> {
    m.retries = 0;
    m.expires = Expires::At(Utc::now() + chrono::Duration::days(1));
    m.encode()
}

/// A SYNC keeps its judgement (directed or broadcast) through the retry; the error headers stay
/// behind. A SYNC letter without one (dead-lettered by a Django replica) is sent as broadcast:
/// it arrives with `retries` 0 on `cqrs.<queue>.<id>`, which would otherwise make it directed,
/// and a directed SYNC may overwrite a newer row with its older state.
fn retry_headers(letter: &Letter, m: &Message) -> Headers {
    let mut headers: Headers = letter
        .headers
        .iter()
        .filter(|(k, _)| k.as_str() == HEADER_DIRECTED)
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if m.signal_type == SignalType::Sync {
        headers
            .entry(HEADER_DIRECTED.into())
            .or_insert_with(|| "false".into());
    }
    headers
}
