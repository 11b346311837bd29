//! The relay and the consumers inside an application's own process (an axum or other tokio
//! service): started on threads of their own, since capture and apply are blocking Diesel work,
//! and handed back as a [`Background`] the service awaits, stops and reads readiness from.
//!
//! A master service runs [`relay`] beside its HTTP server: the relay wakes at each commit of
//! `cqrs::atomic` in the process (no polling), and when stopped it publishes what the last
//! requests committed before it returns. Start it on a [`Shutdown`] of its own and stop it once
//! the server has finished its requests: on the server's, it would stop while they still commit. A replica service runs [`consume`] beside the HTTP
//! server that serves its reads.
//!
//! ```no_run
//! # async fn service(settings: cqrs::Settings) -> Result<(), Box<dyn std::error::Error>> {
//! let shutdown = cqrs::Shutdown::new();
//! shutdown.on_signals()?; // SIGTERM or Ctrl-C fires it
//! // Its own shutdown, not the signal's: it must outlive the server's last requests.
//! let mut relay = cqrs::background::relay(settings, &cqrs::Shutdown::new());
//! let ready = relay.readiness().clone(); // for the service's /readyz
//! tokio::select! {
//!     // the HTTP server, with `shutdown.wait()` as its graceful shutdown
//!     _ = shutdown.wait() => {}
//!     // a relay that ends on its own failed: the service must not run on without it
//!     ended = &mut relay => return Err(format!("the relay stopped: {:?}", ended.err()).into()),
//! }
//! let stats = relay.stop().await?;
//! println!("{} published", stats.published);
//! # Ok(()) }
//! ```

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use crate::config::Settings;
use crate::consumer::ConsumerStats;
use crate::error::{Error, ErrorKind, Result};
use crate::registry::Registry;
use crate::relay::RelayStats;
use crate::service;
use crate::shutdown::Shutdown;
use crate::telemetry::Readiness;

/// How long a stopped [`relay`] goes on publishing what is already in the outbox.
pub const PUBLISH_ON_STOP: Duration = Duration::from_secs(10);

/// A relay or consume running on threads of its own. Awaiting it (`(&mut handle).await`) waits
/// until it ends on its own, which only a fatal error or its shutdown firing elsewhere does;
/// [`Background::stop`] fires its shutdown and waits for it to finish its work in flight.
///
/// Dropping the handle does not stop it: fire the [`Shutdown`] it was started with.
#[must_use = "a background relay or consume that nobody awaits can fail unnoticed"]
pub struct Background<T> {
    what: &'static str,
    readiness: Readiness,
    stop: Shutdown,
    /// Until its result has been taken.
    done: Option<tokio::sync::oneshot::Receiver<Result<T>>>,
}

impl<T: Send + 'static> Background<T> {
    fn spawn(
        what: &'static str,
        shutdown: &Shutdown,
        run: impl FnOnce(&Shutdown, &Readiness) -> Result<T> + Send + 'static,
    ) -> Background<T> {
        let readiness = Readiness::default();
        let stop = shutdown.child();
        let (tx, done) = tokio::sync::oneshot::channel();
        let (ready, stopping) = (readiness.clone(), stop.clone());
        let spawned = std::thread::Builder::new()
            .name(format!("cqrs-{what}"))
            .spawn(move || {
                let r = run(&stopping, &ready);
                if let Err(e) = &r {
                    tracing::error!("background {what} stopped: {e}");
                    ready.set(what, Err(format!("stopped: {e}")));
                }
                let _ = tx.send(r);
            });
        let done = match spawned {
            Ok(_) => done,
            Err(e) => {
                let (tx, done) = tokio::sync::oneshot::channel();
                let _ = tx.send(Err(Error::new(
                    ErrorKind::Io,
                    format!("cannot start the {what} thread: {e}"),
                )));
                done
            }
        };
        Background {
            what,
            readiness,
            stop,
            done: Some(done),
        }
    }

    /// Its readiness: what a service's `/readyz` reports (ready when every part is).
    pub fn readiness(&self) -> &Readiness {
        &self.readiness
    }

    /// Fire its shutdown (not the caller's) and wait until it has finished its work in flight.
    pub async fn stop(mut self) -> Result<T> {
        self.stop.trigger();
        (&mut self).await
    }

    /// [`Background::stop`] for a caller outside async code.
    pub fn stop_blocking(mut self) -> Result<T> {
        self.stop.trigger();
        match self.done.take() {
            Some(done) => done
                .blocking_recv()
                .unwrap_or_else(|_| Err(panicked(self.what))),
            None => Err(taken(self.what)),
        }
    }
}

impl<T> Future for Background<T> {
    type Output = Result<T>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<T>> {
        let what = self.what;
        let Some(done) = &mut self.done else {
            return Poll::Ready(Err(taken(what)));
        };
        let ended = std::task::ready!(Pin::new(done).poll(cx));
        self.done = None;
        Poll::Ready(ended.unwrap_or_else(|_| Err(panicked(what))))
    }
}

fn panicked(what: &str) -> Error {
    Error::new(ErrorKind::Io, format!("the background {what} panicked"))
}

fn taken(what: &str) -> Error {
    Error::new(
        ErrorKind::Io,
        format!("the background {what} already ended and its result was taken"),
    )
}

/// Relay the outbox of the settings' database until `shutdown` fires (as `cqrs relay` does,
/// metrics listener included when `metrics_addr` is set), then publish for up to
/// [`PUBLISH_ON_STOP`] what is left in the outbox, and stop.
pub fn relay(settings: Settings, shutdown: &Shutdown) -> Background<RelayStats> {
    Background::spawn("relay", shutdown, move |stop, ready| {
        service::relay_reporting(&settings, stop, ready, Some(PUBLISH_ON_STOP))
    })
}

/// Consume the settings' queue with `workers` workers until `shutdown` fires (as `cqrs consume
/// -w N` does, for every replica model of `registry`).
pub fn consume(
    registry: Registry,
    settings: Settings,
    workers: usize,
    shutdown: &Shutdown,
) -> Background<ConsumerStats> {
    Background::spawn("consume", shutdown, move |stop, ready| {
        service::consume_reporting(&registry, &settings, workers, &[], stop, ready)
    })
}
