//! Duplicated and delayed deliveries: a tap queue bound like the replica's receives every
//! broadcast message; some are sent again to the replica's queue alone (its directed key, marked
//! broadcast as our retry copies are), at once or seconds later, after newer states of the row.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use cqrs::Settings;
use cqrs::transport::{self, HEADER_DIRECTED, Outgoing, directed_key};

use cqrs_tests::items::CQRS_ID;
use cqrs_tests::rng::Rng;

/// Copies sent.
#[derive(Debug, Default)]
pub struct Injected {
    /// Sent again at once.
    pub duplicated: AtomicU64,
    /// Sent again 1 to 5 s later.
    pub delayed: AtomicU64,
}

/// Share of broadcast messages sent again.
const SHARE: f64 = 0.15;

/// Tap `tap` and copy into `queue` until `stop`, then send what is still held and return.
pub fn run(
    settings: &Settings,
    tap: &str,
    queue: &str,
    seed: u64,
    stop: &AtomicBool,
    injected: &Injected,
) {
    let mut rng = Rng::new(seed);
    let mut held: Vec<(Instant, Outgoing, bool)> = Vec::new();
    let mut copies = 0u64;
    loop {
        if stop.load(Ordering::SeqCst) && held.is_empty() {
            return;
        }
        let Ok(broker) = transport::connect(settings, "injector") else {
            std::thread::sleep(Duration::from_millis(300));
            continue;
        };
        let (Ok(mut inbox), Ok(mut publisher)) = (broker.inbox(tap, 500, &[]), broker.publisher())
        else {
            std::thread::sleep(Duration::from_millis(300));
            continue;
        };
        loop {
            let stopping = stop.load(Ordering::SeqCst);
            if stopping && held.is_empty() {
                return;
            }
            let Ok(deliveries) = inbox.receive(200, Duration::from_millis(100)) else {
                break;
            };
            for d in &deliveries {
                if stopping || !rng.chance(SHARE) {
                    continue;
                }
                let mut headers = d.headers.clone();
                headers
                    .entry(HEADER_DIRECTED.into())
                    .or_insert_with(|| "false".into());
                let late = rng.chance(0.5);
                let due = Instant::now()
                    + if late {
                        rng.millis(1_000, 5_000)
                    } else {
                        Duration::ZERO
                    };
                copies += 1;
                let copy = Outgoing {
                    routing_key: directed_key(queue, CQRS_ID),
                    body: d.body.clone(),
                    headers,
                    // An id of its own: NATS drops a message whose id it stored in the last two
                    // minutes, which would make the duplicate no duplicate.
                    message_id: format!(
                        "{}:copy{copies}",
                        d.message_id.as_deref().unwrap_or("none")
                    ),
                };
                held.push((due, copy, late));
            }
            if let Some(last) = deliveries.last()
                && inbox.ack_up_to(last.tag).is_err()
            {
                break;
            }
            let now = Instant::now();
            let (due, later): (Vec<_>, Vec<_>) = held.drain(..).partition(|(at, _, _)| *at <= now);
            held = later;
            if due.is_empty() {
                continue;
            }
            let batch: Vec<Outgoing> = due.iter().map(|(_, m, _)| m.clone()).collect();
            match publisher.publish(&batch) {
                Ok(confirms) if confirms.iter().all(|c| *c == transport::Confirm::Delivered) => {
                    for (_, _, late) in &due {
                        let counter = if *late {
                            &injected.delayed
                        } else {
                            &injected.duplicated
                        };
                        counter.fetch_add(1, Ordering::Relaxed);
                    }
                }
                _ => {
                    // The broker is away: keep them for the next connection.
                    held.extend(due);
                    break;
                }
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}
