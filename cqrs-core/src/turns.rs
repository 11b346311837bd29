//! First come, first served turns at a SQLite file's write lock among this process's connections.
//!
//! SQLite's busy handler is not fair: a writer that commits and begins again at once takes the
//! lock back before a waiting connection's sleep ends. An application committing back to back
//! therefore starved the in-process relay of the outbox (the SQLite demo's commit → apply p50 was
//! the whole burst). Every write transaction this crate opens on a SQLite file first takes a
//! ticket here and waits for it, so waiters are served in arrival order. Other processes still
//! meet at SQLite's lock as before; PostgreSQL needs none of this (row locks).
//!
//! A turn is waited for at most [`MAX_WAIT`] (the busy timeout): after that the writer goes on
//! and meets SQLite's own lock, so a thread that nests a second connection's write inside its
//! own transaction gets SQLite's busy error, as without turns, instead of hanging.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

/// Longest wait for a turn; SQLite's busy timeout on our connections is the same.
pub(crate) const MAX_WAIT: Duration = Duration::from_secs(10);

#[derive(Default)]
struct State {
    next: u64,
    serving: u64,
    /// Tickets that left before their turn came (their holders stopped waiting).
    left_early: BTreeSet<u64>,
}

#[derive(Default)]
struct Gate {
    state: Mutex<State>,
    turn: Condvar,
}

impl Gate {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A writer's turn at one file; held until the transaction ends, then the next ticket goes.
pub struct Turn {
    gate: Arc<Gate>,
    ticket: u64,
}

impl std::fmt::Debug for Turn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Turn({})", self.ticket)
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        let mut s = self.gate.lock();
        if s.serving == self.ticket {
            s.serving += 1;
            loop {
                let serving = s.serving;
                if !s.left_early.remove(&serving) {
                    break;
                }
                s.serving += 1;
            }
            self.gate.turn.notify_all();
        } else {
            s.left_early.insert(self.ticket);
        }
    }
}

/// Wait for this process's turn to write `file` (a SQLite main database path).
pub(crate) fn take(file: &str) -> Turn {
    take_within(file, MAX_WAIT)
}

fn take_within(file: &str, max_wait: Duration) -> Turn {
    static GATES: OnceLock<Mutex<HashMap<String, Arc<Gate>>>> = OnceLock::new();
    let gate = GATES
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .entry(file.to_string())
        .or_default()
        .clone();
    let deadline = Instant::now() + max_wait;
    let mut s = gate.lock();
    let ticket = s.next;
    s.next += 1;
    while s.serving != ticket {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            tracing::debug!(
                file,
                "no turn at the SQLite write lock after {max_wait:?}: going on"
            );
            break;
        }
        s = gate
            .turn
            .wait_timeout(s, left)
            .unwrap_or_else(|e| e.into_inner())
            .0;
    }
    drop(s);
    Turn { gate, ticket }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    #[test]
    fn waiters_are_served_in_arrival_order() {
        let file = "turns-test-order";
        let first = take(file);
        let (tx, rx) = mpsc::channel();
        let mut handles = Vec::new();
        for i in 0..4 {
            let tx = tx.clone();
            handles.push(std::thread::spawn(move || {
                let _turn = take(file);
                tx.send(i).unwrap();
            }));
            // Each takes its ticket before the next thread starts.
            std::thread::sleep(Duration::from_millis(30));
        }
        drop(first);
        for h in handles {
            h.join().unwrap();
        }
        assert_eq!(rx.iter().take(4).collect::<Vec<_>>(), [0, 1, 2, 3]);
    }

    #[test]
    fn a_waiter_that_gave_up_does_not_block_the_ones_after_it() {
        let file = "turns-test-gave-up";
        let first = take(file);
        let impatient = take_within(file, Duration::from_millis(20));
        let (tx, rx) = mpsc::channel();
        let later = std::thread::spawn(move || {
            let _turn = take(file);
            tx.send(()).unwrap();
        });
        std::thread::sleep(Duration::from_millis(30));
        drop(first);
        // `impatient` still holds its (skipped) ticket; the later waiter is served once it leaves.
        drop(impatient);
        rx.recv_timeout(Duration::from_secs(2)).unwrap();
        later.join().unwrap();
    }

    #[test]
    fn files_are_independent() {
        let _a = take("turns-test-a");
        let _b = take("turns-test-b");
    }
}
