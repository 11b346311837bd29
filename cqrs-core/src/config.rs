//! Typed settings, layered once at startup: command-line flags > environment > `cqrs.toml` > defaults.
//!
//! The CLI parses flags with their environment fallbacks (clap's `env`), so it hands this module one
//! [`Layer`] for both; the file is the next layer and [`Settings::default`] the last. Library users
//! build [`Settings`] directly or through [`Settings::resolve`].
//!
//! | setting | flag | environment | `cqrs.toml` key | default |
//! |---|---|---|---|---|
//! | database | `--database-url` | `DATABASE_URL` | `database_url` | — |
//! | broker | `--broker-url` (`--amqp-url`) | `CQRS_BROKER_URL` (`AMQP_URL`) | `broker_url` | — |
//! | replica queue | `--queue` | `CQRS_QUEUE` | `queue` | — |
//! | exchange | `--exchange` | `CQRS_EXCHANGE` | `exchange` | `cqrs` |
//! | service name | `--service-name` | `CQRS_SERVICE_NAME` | `service_name` | `cqrs` |
//! | config file | `--config` | `CQRS_CONFIG` | — | `cqrs.toml` if present |
//! | batch size | `--batch-size` | `CQRS_BATCH_SIZE` | `batch_size` | 500 |
//! | max retries | — | — | `max_retries` | 30 |
//! | retry delays (ms) | — | — | `retry_delays_ms` | 2000, 4000, 8000, 16000, 32000, 60000 |
//! | message TTL (s) | — | — | `message_ttl_seconds` | 86400 |
//! | dead-letter TTL (s) | — | — | `dead_letter_ttl_seconds` | 864000 |
//! | max body (bytes) | — | — | `max_body_bytes` | 1048576 |
//! | relay lease (ms) | — | — | `relay_lease_ms` | 60000 |
//! | local consumer lease (ms) | — | — | `local_lease_ms` | 30000 |
//! | TLS CA file (amqps) | `--tls-ca-file` | `CQRS_TLS_CA_FILE` | `tls_ca_file` | public roots only |

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::error::{Error, Result};

/// The default config file, read if present in the working directory.
pub const DEFAULT_CONFIG_FILE: &str = "cqrs.toml";

/// One layer of settings; `None` means "not set here, look further down".
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Layer {
    /// Database URL.
    pub database_url: Option<String>,
    /// Broker URL.
    pub broker_url: Option<String>,
    /// This replica's queue.
    pub queue: Option<String>,
    /// The topic exchange.
    pub exchange: Option<String>,
    /// This service's name (connection names, `cqrs-producer` header).
    pub service_name: Option<String>,
    /// Most messages applied in one transaction.
    pub batch_size: Option<usize>,
    /// Retries before a message that cannot be applied is dead-lettered.
    pub max_retries: Option<u32>,
    /// Delay before retry n (the last repeats).
    pub retry_delays_ms: Option<Vec<u64>>,
    /// TTL the master gives a message (`expires`) and the replica assumes when `expires` is absent.
    pub message_ttl_seconds: Option<u64>,
    /// How long a dead letter stays in the dead-letter queue.
    pub dead_letter_ttl_seconds: Option<u64>,
    /// Larger bodies are dead-lettered as `too-large`.
    pub max_body_bytes: Option<usize>,
    /// How long a relay's claim on outbox rows lasts (a killed relay's rows return after it).
    pub relay_lease_ms: Option<u64>,
    /// How long a consumer of the local sqlite:// transport holds taken messages.
    pub local_lease_ms: Option<u64>,
    /// A PEM file of CA certificates to trust for `amqps://` (a private CA).
    pub tls_ca_file: Option<PathBuf>,
}

impl Layer {
    /// Read a `cqrs.toml` layer; unknown keys are errors that name the file and the key.
    pub fn from_file(path: &Path) -> Result<Layer> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            Error::config(format!("cannot read config file {}: {e}", path.display()))
        })?;
        toml::from_str(&text)
            .map_err(|e| Error::config(format!("config file {}: {}", path.display(), e.message())))
    }

    /// `self` where set, else `lower`.
    pub fn over(self, lower: Layer) -> Layer {
        Layer {
            database_url: self.database_url.or(lower.database_url),
            broker_url: self.broker_url.or(lower.broker_url),
            queue: self.queue.or(lower.queue),
            exchange: self.exchange.or(lower.exchange),
            service_name: self.service_name.or(lower.service_name),
            batch_size: self.batch_size.or(lower.batch_size),
            max_retries: self.max_retries.or(lower.max_retries),
            retry_delays_ms: self.retry_delays_ms.or(lower.retry_delays_ms),
            message_ttl_seconds: self.message_ttl_seconds.or(lower.message_ttl_seconds),
            dead_letter_ttl_seconds: self
                .dead_letter_ttl_seconds
                .or(lower.dead_letter_ttl_seconds),
            max_body_bytes: self.max_body_bytes.or(lower.max_body_bytes),
            relay_lease_ms: self.relay_lease_ms.or(lower.relay_lease_ms),
            local_lease_ms: self.local_lease_ms.or(lower.local_lease_ms),
            tls_ca_file: self.tls_ca_file.or(lower.tls_ca_file),
        }
    }
}

/// Resolved settings.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// Database URL, if any layer gave one.
    pub database_url: Option<String>,
    /// Broker URL, if any layer gave one.
    pub broker_url: Option<String>,
    /// This replica's queue.
    pub queue: Option<String>,
    /// The topic exchange (`cqrs`).
    pub exchange: String,
    /// This service's name.
    pub service_name: String,
    /// Most messages applied in one transaction.
    pub batch_size: usize,
    /// Retries before dead-lettering.
    pub max_retries: u32,
    /// Delay before retry n (index n-1; the last repeats).
    pub retry_delays: Vec<Duration>,
    /// Message TTL.
    pub message_ttl: Duration,
    /// Dead-letter TTL.
    pub dead_letter_ttl: Duration,
    /// Body size limit.
    pub max_body_bytes: usize,
    /// Relay claim lease.
    pub relay_lease: Duration,
    /// Local transport consumer lease.
    pub local_lease: Duration,
    /// CA certificates (PEM file) to trust for `amqps://`.
    pub tls_ca_file: Option<PathBuf>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            database_url: None,
            broker_url: None,
            queue: None,
            exchange: "cqrs".into(),
            service_name: "cqrs".into(),
            batch_size: 500,
            max_retries: 30,
            retry_delays: [2, 4, 8, 16, 32, 60]
                .iter()
                .map(|s| Duration::from_secs(*s))
                .collect(),
            message_ttl: Duration::from_secs(86_400),
            dead_letter_ttl: Duration::from_secs(864_000),
            max_body_bytes: 1 << 20,
            relay_lease: Duration::from_secs(60),
            local_lease: Duration::from_secs(30),
            tls_ca_file: None,
        }
    }
}

impl Settings {
    /// Layer `flags_and_env` over the config file over the defaults. `config` is the file named by
    /// `--config`/`CQRS_CONFIG` (it must exist); without it `cqrs.toml` is read if present.
    pub fn resolve(flags_and_env: Layer, config: Option<&Path>) -> Result<Settings> {
        let file = match config {
            Some(path) => Layer::from_file(path)?,
            None => {
                let default = PathBuf::from(DEFAULT_CONFIG_FILE);
                if default.is_file() {
                    Layer::from_file(&default)?
                } else {
                    Layer::default()
                }
            }
        };
        Settings::from_layer(flags_and_env.over(file))
    }

    /// Fill unset values of `layer` with the defaults and check them.
    pub fn from_layer(layer: Layer) -> Result<Settings> {
        let d = Settings::default();
        let s = Settings {
            database_url: layer.database_url,
            broker_url: layer.broker_url,
            queue: layer.queue,
            exchange: layer.exchange.unwrap_or(d.exchange),
            service_name: layer.service_name.unwrap_or(d.service_name),
            batch_size: layer.batch_size.unwrap_or(d.batch_size),
            max_retries: layer.max_retries.unwrap_or(d.max_retries),
            retry_delays: layer
                .retry_delays_ms
                .map(|v| v.into_iter().map(Duration::from_millis).collect())
                .unwrap_or(d.retry_delays),
            message_ttl: layer
                .message_ttl_seconds
                .map(Duration::from_secs)
                .unwrap_or(d.message_ttl),
            dead_letter_ttl: layer
                .dead_letter_ttl_seconds
                .map(Duration::from_secs)
                .unwrap_or(d.dead_letter_ttl),
            max_body_bytes: layer.max_body_bytes.unwrap_or(d.max_body_bytes),
            relay_lease: layer
                .relay_lease_ms
                .map(Duration::from_millis)
                .unwrap_or(d.relay_lease),
            local_lease: layer
                .local_lease_ms
                .map(Duration::from_millis)
                .unwrap_or(d.local_lease),
            tls_ca_file: layer.tls_ca_file,
        };
        if s.batch_size == 0 {
            return Err(Error::config("batch_size must be at least 1"));
        }
        if s.retry_delays.is_empty() {
            return Err(Error::config(
                "retry_delays_ms must list at least one delay",
            ));
        }
        if s.exchange.is_empty() {
            return Err(Error::config("exchange must not be empty"));
        }
        Ok(s)
    }

    /// The delay before retry number `retry` (1-based); the last level repeats.
    pub fn retry_delay(&self, retry: u32) -> Duration {
        let i = (retry.max(1) as usize - 1).min(self.retry_delays.len() - 1);
        self.retry_delays[i]
    }

    /// The database URL or a config error naming the flag and variable to set.
    pub fn require_database_url(&self) -> Result<&str> {
        self.database_url.as_deref().ok_or_else(|| {
            Error::config("no database: pass --database-url or set DATABASE_URL (or database_url in cqrs.toml)")
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_beat_file_beat_defaults() {
        let file: Layer =
            toml::from_str("exchange = \"from_file\"\nqueue = \"q_file\"\nbatch_size = 7").unwrap();
        let flags = Layer {
            queue: Some("q_flag".into()),
            ..Layer::default()
        };
        let s = Settings::from_layer(flags.over(file)).unwrap();
        assert_eq!(s.queue.as_deref(), Some("q_flag"));
        assert_eq!(s.exchange, "from_file");
        assert_eq!(s.batch_size, 7);
        assert_eq!(s.service_name, "cqrs");
    }

    #[test]
    fn unknown_file_keys_are_named() {
        let err = toml::from_str::<Layer>("exchnage = \"x\"").unwrap_err();
        assert!(err.message().contains("exchnage"), "{}", err.message());
    }

    #[test]
    fn retry_delay_levels_repeat_the_last() {
        let s = Settings::default();
        assert_eq!(s.retry_delay(1), Duration::from_secs(2));
        assert_eq!(s.retry_delay(5), Duration::from_secs(32));
        assert_eq!(s.retry_delay(30), Duration::from_secs(60));
    }
}
