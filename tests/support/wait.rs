//! Waiting in tests: for a state to be reached, and for workers to stop when a test fails.

/// Triggers a shutdown when dropped: a failed assertion inside a thread scope must still stop
/// the workers, or the scope would wait for them forever.
pub struct StopOnDrop<'a>(pub &'a cqrs::Shutdown);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.trigger();
    }
}
