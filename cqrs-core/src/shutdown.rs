//! The shutdown signal shared by long-running loops: they finish the work in flight, then stop.

use std::sync::{Arc, Condvar, Mutex, Weak};
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
pub struct Shutdown(Arc<Inner>);

#[derive(Debug, Default)]
struct Inner {
    /// Fired, and the children to fire with it.
    state: Mutex<(bool, Vec<Weak<Inner>>)>,
    wake: Condvar,
    /// The same wake-up for async waiters ([`Shutdown::wait`]).
    notify: tokio::sync::Notify,
}

impl Shutdown {
    /// A signal that has not fired.
    pub fn new() -> Self {
        Shutdown::default()
    }

    /// A signal that fires with this one, and can also fire alone (e.g. the workers of one
    /// `consume`, stopped together when one of them fails, without stopping the caller's others).
    ///
    /// ```
    /// let parent = cqrs::Shutdown::new();
    /// let child = parent.child();
    /// child.trigger();
    /// assert!(!parent.is_triggered());
    /// let other = parent.child();
    /// parent.trigger();
    /// assert!(other.is_triggered());
    /// ```
    pub fn child(&self) -> Shutdown {
        let child = Shutdown::new();
        let mut state = self.0.state.lock().unwrap_or_else(|p| p.into_inner());
        if state.0 {
            drop(state);
            child.trigger();
        } else {
            state.1.retain(|w| w.strong_count() > 0);
            state.1.push(Arc::downgrade(&child.0));
        }
        child
    }

    /// Fire the signal (and its children's) and wake every sleeper.
    pub fn trigger(&self) {
        let children = {
            let mut state = self.0.state.lock().unwrap_or_else(|p| p.into_inner());
            state.0 = true;
            self.0.wake.notify_all();
            self.0.notify.notify_waiters();
            std::mem::take(&mut state.1)
        };
        for child in children.iter().filter_map(Weak::upgrade) {
            Shutdown(child).trigger();
        }
    }

    /// True once [`Shutdown::trigger`] was called.
    pub fn is_triggered(&self) -> bool {
        self.0.state.lock().unwrap_or_else(|p| p.into_inner()).0
    }

    /// Sleep up to `d`; returns true if the signal fired (before or during the sleep).
    pub fn sleep(&self, d: Duration) -> bool {
        let guard = self.0.state.lock().unwrap_or_else(|p| p.into_inner());
        let (guard, _) = self
            .0
            .wake
            .wait_timeout_while(guard, d, |state| !state.0)
            .unwrap_or_else(|p| p.into_inner());
        guard.0
    }

    /// Wait, without blocking a thread, until the signal fires: what an async service passes
    /// to its HTTP server's graceful shutdown (see [`crate::background`] for stopping the relay
    /// after the server).
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
    /// let shutdown = cqrs::Shutdown::new();
    /// let fired = shutdown.clone();
    /// std::thread::spawn(move || fired.trigger());
    /// shutdown.wait().await;
    /// assert!(shutdown.is_triggered());
    /// # });
    /// ```
    pub async fn wait(&self) {
        loop {
            let notified = self.0.notify.notified();
            let mut notified = std::pin::pin!(notified);
            // Registered before the check, so a trigger between the two is not missed.
            notified.as_mut().enable();
            if self.is_triggered() {
                return;
            }
            notified.await;
        }
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
