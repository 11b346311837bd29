//! First come, first served turns at a SQLite file's write lock among this process's connections.
//!
//! SQLite's busy handler is not fair: a writer that commits and begins again at once takes the
//! lock back before a waiting connection's sleep ends. An application committing back to back
//! therefore starved the in-process relay of the outbox (the SQLite demo's commit → apply p50 was
//! the whole burst). Every write transaction this crate opens on a SQLite file first takes a
//! ticket here and waits for it, so waiters are served in arrival order. Other processes still
//! meet at SQLite's lock as before; PostgreSQL needs none of this (row locks).
//!
//! A turn is waited for at most [`MAX_WAIT`] (also our connections' busy timeout): after that
//! the writer goes on and meets SQLite's own lock, so a thread that nests a second connection's
//! write inside its own transaction gets SQLite's busy error (after up to twice the timeout)
//! instead of hanging.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

/// Longest wait for a turn; SQLite's busy timeout on our connections is the same.
pub const MAX_WAIT: Duration = Duration::from_secs(10);

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
    granted: bool,
}

impl Turn {
    /// Whether the turn came (false: the wait ran out and the writer went on without it).
    pub fn granted(&self) -> bool {
        self.granted
    }
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

fn gate(file: &str) -> Arc<Gate> {
    static GATES: OnceLock<Mutex<HashMap<String, Arc<Gate>>>> = OnceLock::new();
    GATES
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .entry(file.to_string())
        .or_default()
        .clone()
}

fn take_within(file: &str, max_wait: Duration) -> Turn {
    let gate = gate(file);
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
    let granted = s.serving == ticket;
    drop(s);
    Turn {
        gate,
        ticket,
        granted,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    /// Wait until `n` tickets have been handed out at `file`.
    fn until_tickets(file: &str, n: u64) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while gate(file).lock().next < n {
            assert!(Instant::now() < deadline, "tickets never reached {n}");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    #[test]
    fn waiters_are_served_in_arrival_order_and_only_after_the_holder() {
        let file = "turns-test-order";
        let first = take(file);
        assert!(first.granted());
        let (tx, rx) = mpsc::channel();
        let mut handles = Vec::new();
        for i in 0..4u64 {
            let tx = tx.clone();
            handles.push(std::thread::spawn(move || {
                let turn = take(file);
                tx.send((i, turn.granted())).unwrap();
            }));
            until_tickets(file, i + 2);
        }
        assert!(
            rx.recv_timeout(Duration::from_millis(100)).is_err(),
            "a waiter went ahead while the turn was held"
        );
        drop(first);
        for h in handles {
            h.join().unwrap();
        }
        let order: Vec<(u64, bool)> = rx.iter().take(4).collect();
        assert_eq!(order, [(0, true), (1, true), (2, true), (3, true)]);
    }

    #[test]
    fn a_waiter_that_gave_up_and_left_does_not_block_the_ones_after_it() {
        let file = "turns-test-gave-up";
        let first = take(file);
        let impatient = take_within(file, Duration::from_millis(20));
        assert!(!impatient.granted());
        let (tx, rx) = mpsc::channel();
        let later = std::thread::spawn(move || {
            let turn = take(file);
            tx.send(turn.granted()).unwrap();
        });
        until_tickets(file, 3);
        // It leaves before its turn came: its ticket is skipped when `first` leaves.
        drop(impatient);
        assert!(rx.recv_timeout(Duration::from_millis(100)).is_err());
        drop(first);
        assert_eq!(rx.recv_timeout(Duration::from_secs(5)), Ok(true));
        later.join().unwrap();
    }

    #[test]
    fn files_are_independent() {
        let _a = take("turns-test-a");
        assert!(take_within("turns-test-b", Duration::from_millis(10)).granted());
    }
}
