//! The shutdown signal shared by long-running loops: they finish the work in flight, then stop.

use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

/// A cloneable flag plus a wake-up for sleepers: [`Shutdown::sleep`] returns early when triggered,
/// so a loop that backs off for seconds still stops promptly.
///
/// ```
/// let shutdown = cqrs::Shutdown::new();
/// let other = shutdown.clone();
/// other.trigger();
/// assert!(shutdown.sleep(std::time::Duration::from_secs(60))); // returns at once
/// ```
#[derive(Clone, Debug, Default)]
pub struct Shutdown(Arc<(Mutex<bool>, Condvar)>);

impl Shutdown {
    /// A signal that has not fired.
    pub fn new() -> Self {
        Shutdown::default()
    }

    /// Fire the signal and wake every sleeper.
    pub fn trigger(&self) {
        let (flag, cv) = &*self.0;
        *flag.lock().unwrap_or_else(|p| p.into_inner()) = true;
        cv.notify_all();
    }

    /// True once [`Shutdown::trigger`] was called.
    pub fn is_triggered(&self) -> bool {
        *self.0.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sleep up to `d`; returns true if the signal fired (before or during the sleep).
    pub fn sleep(&self, d: Duration) -> bool {
        let (flag, cv) = &*self.0;
        let guard = flag.lock().unwrap_or_else(|p| p.into_inner());
        let (guard, _) = cv
            .wait_timeout_while(guard, d, |fired| !*fired)
            .unwrap_or_else(|p| p.into_inner());
        *guard
    }
}

impl Shutdown {
    /// Fire this signal on SIGINT or SIGTERM (a small thread waits for them).
    pub fn on_signals(&self) -> std::io::Result<()> {
        let shutdown = self.clone();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()?;
        std::thread::Builder::new()
            .name("cqrs-signals".into())
            .spawn(move || {
                rt.block_on(async {
                    let mut term = match tokio::signal::unix::signal(
                        tokio::signal::unix::SignalKind::terminate(),
                    ) {
                        Ok(t) => t,
                        Err(e) => {
                            tracing::warn!("cannot listen for SIGTERM: {e}");
                            let _ = tokio::signal::ctrl_c().await;
                            return;
                        }
                    };
                    tokio::select! {
                        _ = tokio::signal::ctrl_c() => {}
                        _ = term.recv() => {}
                    }
                });
                tracing::info!("shutting down: finishing the batch in flight");
                shutdown.trigger();
            })?;
        Ok(())
    }
}
