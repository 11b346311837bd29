//! What the two example web services share: an axum server over a pool of blocking Diesel
//! connections, the library's relay or consumers beside it on threads of their own
//! (`cqrs::background`), operations routes (`/healthz`, `/readyz`, `/metrics`) on the service's
//! own router, and one shutdown (SIGTERM, Ctrl-C) that stops both in order: the HTTP server
//! finishes its requests, then the relay publishes what they committed (or the workers finish
//! their batch), then the process exits 0.
//!
//! Diesel's connections are blocking: handlers borrow one from an r2d2 pool (Diesel's own
//! `diesel::r2d2`) inside `tokio::task::spawn_blocking`, so a slow query never stalls the
//! runtime's threads.

use std::future::IntoFuture;
use std::net::SocketAddr;
use std::process::ExitCode;

use axum::Router;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use cqrs::background::Background;
use cqrs::telemetry::Readiness;
use diesel::PgConnection;
use diesel::r2d2::{ConnectionManager, Pool as R2d2Pool};

/// An item as both services' APIs show it (the replica's `title` is the master's `name`), so a
/// client compares the two as they are.
#[derive(Debug, serde::Serialize)]
pub struct ItemView {
    /// Its key.
    pub id: i64,
    /// Its name.
    pub name: String,
    /// Its value.
    pub value: i64,
    /// `cqrs_revision`.
    pub revision: i32,
}

impl From<example_master::Item> for ItemView {
    fn from(i: example_master::Item) -> Self {
        ItemView {
            id: i.id,
            name: i.name,
            value: i.value,
            revision: i.cqrs_revision,
        }
    }
}

impl From<example_replica::ReplicaItem> for ItemView {
    fn from(i: example_replica::ReplicaItem) -> Self {
        ItemView {
            id: i.id,
            name: i.title,
            value: i.value,
            revision: i.cqrs_revision,
        }
    }
}

/// The service's pool of Diesel connections.
pub type Pool = R2d2Pool<ConnectionManager<PgConnection>>;

/// What a service starts with.
pub struct Service {
    /// Where its HTTP server listens.
    pub listen: SocketAddr,
    /// The library's settings, for its relay or consumers.
    pub settings: cqrs::Settings,
    /// Its database connections.
    pub pool: Pool,
    /// Fired by SIGTERM or Ctrl-C.
    pub shutdown: cqrs::Shutdown,
}

/// Logging, settings, the pool, the metrics recorder (before the relay or workers start, so
/// their first counts are recorded) and the signals; on failure, the exit code (2 for a usage
/// error), the reason on stderr.
pub fn start() -> Result<Service, ExitCode> {
    init_logging();
    let (listen, settings) = config().map_err(|e| fail(2, e))?;
    let pool = pool(&settings).map_err(|e| fail(1, e))?;
    cqrs::telemetry::install().map_err(|e| fail(1, e))?;
    let shutdown = cqrs::Shutdown::new();
    shutdown
        .on_signals()
        .map_err(|e| fail(1, format!("cannot listen for signals: {e}")))?;
    Ok(Service {
        listen,
        settings,
        pool,
        shutdown,
    })
}

/// Say why on stderr; the exit code.
fn fail(code: u8, why: impl std::fmt::Display) -> ExitCode {
    eprintln!("error: {why}");
    ExitCode::from(code)
}

/// Where to listen (`--listen ADDR`, default 127.0.0.1:8080) and the library's settings
/// (environment, then `cqrs.toml`: `DATABASE_URL`, `CQRS_BROKER_URL`, `CQRS_QUEUE`, ...).
fn config() -> Result<(SocketAddr, cqrs::Settings), String> {
    let mut listen = "127.0.0.1:8080".to_string();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match (arg.as_str(), args.next()) {
            ("--listen", Some(addr)) => listen = addr,
            _ => {
                return Err(format!(
                    "unexpected argument {arg:?} (usage: --listen ADDR)"
                ));
            }
        }
    }
    let listen = listen
        .parse()
        .map_err(|e| format!("--listen {listen:?}: {e}"))?;
    let settings = cqrs::Settings::resolve(Default::default(), None).map_err(|e| e.to_string())?;
    Ok((listen, settings))
}

/// Logs as the `cqrs` command writes them: `CQRS_LOG` filters (default `info`).
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("CQRS_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

/// A pool of connections to the settings' database (PostgreSQL).
fn pool(settings: &cqrs::Settings) -> Result<Pool, String> {
    let url = settings.require_database_url().map_err(|e| e.to_string())?;
    R2d2Pool::builder()
        .max_size(8)
        .connection_timeout(std::time::Duration::from_secs(5))
        .build(ConnectionManager::new(url))
        .map_err(|e| format!("database pool: {e}"))
}

/// Run `f` on a pooled connection on tokio's blocking threads.
pub async fn with_conn<T, F>(pool: &Pool, f: F) -> Result<T, ApiError>
where
    T: Send + 'static,
    F: FnOnce(&mut PgConnection) -> Result<T, ApiError> + Send + 'static,
{
    let pool = pool.clone();
    tokio::task::spawn_blocking(move || {
        let mut conn = pool
            .get()
            .map_err(|e| ApiError::Unavailable(format!("database: {e}")))?;
        f(&mut conn)
    })
    .await
    .map_err(|e| ApiError::Internal(format!("handler: {e}")))?
}

/// A request's failure as its HTTP status: what was missing or wrong is the client's (4xx); a
/// database that cannot be reached now is 503 (try again); anything else is 500.
#[derive(Debug)]
pub enum ApiError {
    /// No such row.
    NotFound,
    /// The request cannot be done as asked.
    BadRequest(String),
    /// The database is unreachable or busy now.
    Unavailable(String),
    /// Anything else.
    Internal(String),
}

impl From<cqrs::Error> for ApiError {
    fn from(e: cqrs::Error) -> Self {
        if e.is_transient() {
            ApiError::Unavailable(e.to_string())
        } else {
            ApiError::Internal(e.to_string())
        }
    }
}

impl From<diesel::result::Error> for ApiError {
    fn from(e: diesel::result::Error) -> Self {
        match e {
            diesel::result::Error::NotFound => ApiError::NotFound,
            e => ApiError::Internal(e.to_string()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, why) = match self {
            ApiError::NotFound => (StatusCode::NOT_FOUND, "not found".to_string()),
            ApiError::BadRequest(why) => (StatusCode::BAD_REQUEST, why),
            ApiError::Unavailable(why) => (StatusCode::SERVICE_UNAVAILABLE, why),
            ApiError::Internal(why) => {
                tracing::error!("request failed: {why}");
                (StatusCode::INTERNAL_SERVER_ERROR, why)
            }
        };
        (status, format!("{why}\n")).into_response()
    }
}

/// `/healthz` (the process answers), `/readyz` (the background relay or workers have their
/// database and broker now; 503 with the reasons otherwise) and `/metrics` (the library's
/// Prometheus metrics, recorded since [`cqrs::telemetry::install`]).
pub fn operations(readiness: Readiness) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route(
            "/readyz",
            get(move || {
                let readiness = readiness.clone();
                async move {
                    match readiness.check() {
                        Ok(()) => (StatusCode::OK, "ready\n".to_string()),
                        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, why.join("\n") + "\n"),
                    }
                }
            }),
        )
        .route(
            "/metrics",
            get(|| async {
                match cqrs::telemetry::render() {
                    Ok(text) => (StatusCode::OK, text),
                    Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")),
                }
            }),
        )
}

/// Serve `app` on `listen` beside `background` until `shutdown` fires, then stop the server
/// (requests in flight finish), then `background` (its work in flight finishes). A background
/// part that ends on its own failed: the server is stopped and the process exits 1, so its
/// supervisor restarts it rather than leaving it half running.
pub async fn serve_beside<T: Send + 'static>(
    listen: SocketAddr,
    app: Router,
    mut background: Background<T>,
    shutdown: &cqrs::Shutdown,
) -> ExitCode {
    let listener = match tokio::net::TcpListener::bind(listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("error: --listen {listen}: {e}");
            return ExitCode::from(2);
        }
    };
    match listener.local_addr() {
        // The first line on stdout: how a supervisor (or the test) learns a port chosen by `:0`.
        Ok(addr) => println!("listening on http://{addr}"),
        Err(e) => tracing::warn!("listening address unknown: {e}"),
    }
    let stopping = shutdown.clone();
    let mut server = std::pin::pin!(
        axum::serve(listener, app)
            .with_graceful_shutdown(async move { stopping.wait().await })
            .into_future()
    );
    let served = tokio::select! {
        served = &mut server => served,
        ended = &mut background => {
            let why = match ended {
                Ok(_) => "stopped unexpectedly".to_string(),
                Err(e) => e.to_string(),
            };
            tracing::error!("background work ended ({why}): stopping the service");
            shutdown.trigger();
            let _ = server.await;
            return ExitCode::FAILURE;
        }
    };
    if let Err(e) = &served {
        tracing::error!("HTTP server failed: {e}");
    }
    match (served, background.stop().await) {
        (Ok(()), Ok(_)) => ExitCode::SUCCESS,
        (_, Err(e)) => {
            tracing::error!("stopping: {e}");
            ExitCode::FAILURE
        }
        (Err(_), Ok(_)) => ExitCode::FAILURE,
    }
}
