//! The tokio runtime a transport owns: its public callers are blocking (a relay or a worker on a
//! thread of its own), but an application may call them from inside its own runtime.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use super::{Confirm, Sent};
use crate::error::{Error, ErrorKind, Result};

/// The transport's own tokio runtime. Its public callers are blocking (a relay or a worker on a
/// thread of its own), but an application may call them from inside its own runtime (an
/// in-process relay started in `#[tokio::main]`): waiting and dropping both work there instead of
/// panicking as tokio's would.
pub(crate) struct OwnRuntime(Option<tokio::runtime::Runtime>);

impl OwnRuntime {
    /// A runtime of two worker threads named `name`: enough for a client's I/O and the pumps on
    /// a 2-core machine; Diesel work runs on the callers' own threads, never here.
    pub(crate) fn start(name: &str) -> Result<OwnRuntime> {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name(name)
            .enable_all()
            .build()
            .map(|rt| OwnRuntime(Some(rt)))
            .map_err(|e| Error::new(ErrorKind::Io, format!("starting the {name} runtime: {e}")))
    }

    fn rt(&self) -> &tokio::runtime::Runtime {
        self.0.as_ref().expect("taken only on drop")
    }

    /// `Runtime::block_on`, also from inside another runtime: on a multi-thread runtime's worker
    /// the wait moves off it (`block_in_place`); on a current-thread runtime, whose one thread
    /// cannot be given up, the wait runs on a thread of its own.
    pub(crate) fn block_on<F>(&self, f: F) -> F::Output
    where
        F: std::future::Future + Send,
        F::Output: Send,
    {
        use tokio::runtime::{Handle, RuntimeFlavor};
        match Handle::try_current().map(|h| h.runtime_flavor()) {
            Err(_) => self.rt().block_on(f),
            Ok(RuntimeFlavor::MultiThread) => tokio::task::block_in_place(|| self.rt().block_on(f)),
            Ok(_) => std::thread::scope(|s| {
                s.spawn(|| self.rt().block_on(f))
                    .join()
                    .unwrap_or_else(|p| std::panic::resume_unwind(p))
            }),
        }
    }

    pub(crate) fn spawn<F>(&self, f: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: std::future::Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.rt().spawn(f)
    }
}

impl Drop for OwnRuntime {
    fn drop(&mut self) {
        // Dropping a runtime waits for its threads, which tokio forbids inside another runtime.
        if let Some(rt) = self.0.take()
            && tokio::runtime::Handle::try_current().is_ok()
        {
            rt.shutdown_background();
        }
    }
}

impl OwnRuntime {
    /// Publish a relay batch on this runtime with `work` (its confirms, one per message): the
    /// [`Sent`] returned is ready once `work` ends. `refused` is set when the batch
    /// failed or a confirm did, so the publisher can mend its link before the next batch.
    pub(crate) fn send_batch<F>(self: &Arc<Self>, refused: Arc<AtomicBool>, work: F) -> Sent
    where
        F: Future<Output = Result<Vec<Confirm>>> + Send + 'static,
    {
        let done = Arc::new(AtomicBool::new(false));
        let finished = done.clone();
        let task = self.spawn(async move {
            let result = work.await;
            let failed = result
                .as_ref()
                .map_or(true, |c| c.iter().any(|c| matches!(c, Confirm::Failed(_))));
            if failed {
                refused.store(true, Ordering::Release);
            }
            // Set whatever the result: an error too is ready to read.
            finished.store(true, Ordering::Release);
            result
        });
        let runtime = self.clone();
        Sent::waiting(done, move || {
            runtime.block_on(task).unwrap_or_else(|e| {
                Err(Error::new(
                    ErrorKind::Transport,
                    format!("the publishing task ended: {e}"),
                ))
            })
        })
    }
}
