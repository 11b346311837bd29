//! The capped exponential pause between attempts, one type for every loop that retries after a
//! fault that would hit any message (a lost connection, a broker or database restarting).

use std::time::Duration;

use crate::shutdown::Shutdown;

/// A pause that doubles after each failed attempt up to a cap, and starts over after a success.
///
/// ```
/// use std::time::Duration;
/// use cqrs::backoff::Backoff;
/// let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(300));
/// assert_eq!(b.next_pause(), Duration::from_millis(100));
/// assert_eq!(b.next_pause(), Duration::from_millis(200));
/// assert_eq!(b.next_pause(), Duration::from_millis(300));
/// assert_eq!(b.next_pause(), Duration::from_millis(300));
/// b.reset();
/// assert_eq!(b.next_pause(), Duration::from_millis(100));
/// ```
#[derive(Debug, Clone)]
pub struct Backoff {
    start: Duration,
    cap: Duration,
    next: Duration,
}

impl Backoff {
    /// First pause `start`, never more than `cap`.
    pub fn new(start: Duration, cap: Duration) -> Backoff {
        Backoff {
            start,
            cap,
            next: start,
        }
    }

    /// Reconnecting to a broker: a restart takes ~10-20 s; a 10 s cap keeps the extra wait after
    /// it comes back small without hammering it while it starts.
    pub fn reconnect() -> Backoff {
        Backoff::new(Duration::from_millis(200), Duration::from_secs(10))
    }

    /// Redoing a batch after a transient database error: a restart or failover takes seconds; 5 s
    /// keeps the redo close behind recovery without hammering a server that is starting up.
    pub fn redo() -> Backoff {
        Backoff::new(Duration::from_millis(100), Duration::from_secs(5))
    }

    /// The pause before the next attempt; the one after it is twice as long, up to the cap.
    pub fn next_pause(&mut self) -> Duration {
        let pause = self.next;
        self.next = (self.next * 2).min(self.cap);
        pause
    }

    /// Sleep the next pause unless `shutdown` fires first; `true` if it fired.
    pub fn sleep(&mut self, shutdown: &Shutdown) -> bool {
        let pause = self.next_pause();
        shutdown.sleep(pause)
    }

    /// The pause the next attempt would wait, without advancing.
    pub fn peek(&self) -> Duration {
        self.next
    }

    /// Start from the first pause again (the last attempt worked for a while).
    pub fn reset(&mut self) {
        self.next = self.start;
    }
}
