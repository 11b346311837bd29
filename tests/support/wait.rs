//! Waiting in tests: for a state to be reached, and for workers to stop when a test fails.

use std::time::{Duration, Instant};

/// Wait until `reached` returns true, calling it again after a short pause (10 ms, doubling up to
/// 200 ms) each time it returns false; panics, failing the test, with `what` when `timeout` passes
/// first. `what` names the awaited state: "timed out after 10s waiting for {what}".
///
/// Wait for the very state the next assertion checks, and keep the assertion after the wait:
///
/// ```no_run
/// # let b = cqrs_tests::TestBroker::new();
/// # use std::time::Duration;
/// cqrs_tests::wait_until(Duration::from_secs(10), "the queue to hold 3 messages", || {
///     b.count(&b.queue) >= 3
/// });
/// assert_eq!(b.count(&b.queue), 3);
/// ```
///
/// The closure may also drive the work it waits for (poll a consumer once, then look).
#[track_caller]
pub fn wait_until(timeout: Duration, what: &str, mut reached: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(10);
    while !reached() {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(200));
    }
}

/// Triggers a shutdown when dropped: a failed assertion inside a thread scope must still stop
/// the workers, or the scope would wait for them forever.
pub struct StopOnDrop<'a>(pub &'a cqrs::Shutdown);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.trigger();
    }
}
