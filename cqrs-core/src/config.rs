//! Typed settings, layered once at startup: command-line flags > environment > `cqrs.toml` > defaults.
//!
//! The CLI hands this module the flags it parsed as one [`Layer`]; [`Settings::resolve`] reads
//! the environment and the file and layers them below, so this is the only place settings are
//! read. Library users build [`Settings`] directly or through [`Settings::resolve`]. Every
//! setting is declared once, in the `settings!` table below.
//!
//! | setting | flag | environment | `cqrs.toml` key | default |
//! |---|---|---|---|---|
//! | database | `--database-url` | `DATABASE_URL` | `database_url` | — |
//! | broker | `--broker-url` (`--amqp-url`) | `CQRS_BROKER_URL` (`AMQP_URL`) | `broker_url` | — |
//! | replica queue | `--queue` | `CQRS_QUEUE` | `queue` | — |
//! | exchange | `--exchange` | `CQRS_EXCHANGE` | `exchange` | `cqrs` |
//! | queue type (AMQP) | `--queue-type` | `CQRS_QUEUE_TYPE` | `queue_type` | `classic` |
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
//! | keep unroutable messages | — | — | `keep_unroutable` | false (dropped, as django-cqrs) |
//! | tombstone retention (days) | — | `CQRS_TOMBSTONE_RETENTION_DAYS` | `tombstone_retention_days` | 14 |
//! | metrics and health listener | `consume`/`relay --metrics-addr` | `CQRS_METRICS_ADDR` | `metrics_addr` | off |
//! | TLS CA file (amqps) | `--tls-ca-file` | `CQRS_TLS_CA_FILE` | `tls_ca_file` | public roots only |
//! | statement timeout while applying (ms) | — | `CQRS_QUERY_TIMEOUT_MS` | `query_timeout_ms` | none |
//! | one model's own settings | — | — | `[models.<cqrs_id>]` ([`ModelLayer`]) | the global ones |

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::error::{Error, Result};

/// Seconds in a day (`_days` settings).
const DAY: u64 = 86_400;

/// The RabbitMQ queue type of a replica's queues (`queue_type`, `CQRS_QUEUE_TYPE`,
/// `--queue-type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum QueueType {
    /// RabbitMQ's classic queue, on one node: what django-cqrs declares.
    #[default]
    Classic,
    /// A quorum queue, replicated across a cluster's nodes (RabbitMQ 3.8+).
    Quorum,
}

impl QueueType {
    /// The `x-queue-type` value.
    pub fn as_str(self) -> &'static str {
        match self {
            QueueType::Classic => "classic",
            QueueType::Quorum => "quorum",
        }
    }
}

impl std::str::FromStr for QueueType {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s.trim() {
            "classic" => Ok(QueueType::Classic),
            "quorum" => Ok(QueueType::Quorum),
            other => Err(format!("queue type {other:?} is not classic or quorum")),
        }
    }
}

impl std::fmt::Display for QueueType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The default config file, read if present in the working directory.
pub const DEFAULT_CONFIG_FILE: &str = "cqrs.toml";

/// The variable naming the config file (the `--config` flag's fallback).
pub const CONFIG_ENV: &str = "CQRS_CONFIG";

/// Declares every setting once: its resolved field and type, its default, the `cqrs.toml` key
/// (also the [`Layer`] field) with the raw type a layer holds, the environment variables that
/// set it (first set wins) and how a raw value becomes the resolved one. Adding a setting is one
/// entry here plus its row in the table above.
macro_rules! settings {
    ($(
        $(#[doc = $doc:literal])*
        $field:ident: $ty:ty = $default:expr,
            key $key:ident: $raw:ty $(, env [$($env:literal),+])?
            => |$v:ident| $conv:expr;
    )*) => {
        /// One layer of settings; `None` means "not set here, look further down".
        #[derive(Debug, Clone, Default, Deserialize, PartialEq)]
        #[serde(deny_unknown_fields)]
        pub struct Layer {
            $( $(#[doc = $doc])* pub $key: Option<$raw>, )*
        }

        impl Layer {
            /// `self` where set, else `lower`.
            pub fn over(self, lower: Layer) -> Layer {
                Layer { $( $key: self.$key.or(lower.$key), )* }
            }

            /// The `cqrs.toml` keys this layer sets, in declaration order.
            pub fn keys_set(&self) -> Vec<&'static str> {
                let mut keys = Vec::new();
                $( if self.$key.is_some() { keys.push(stringify!($key)); } )*
                keys
            }

            /// The environment layer, read through `var` (empty values count as unset).
            pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Layer> {
                #[allow(unused_mut)]
                let mut layer = Layer::default();
                $( $( layer.$key = first_var(&var, &[$($env),+])?; )? )*
                Ok(layer)
            }
        }

        /// Resolved settings.
        #[derive(Debug, Clone, PartialEq)]
        pub struct Settings {
            $( $(#[doc = $doc])* pub $field: $ty, )*
        }

        impl Default for Settings {
            fn default() -> Self {
                Settings { $( $field: $default, )* }
            }
        }

        /// Every setting's `cqrs.toml` key and the environment variables that set it.
        pub const KEYS: &[(&str, &[&str])] = &[ $( (stringify!($key), &[$($($env),+)?]), )* ];

        impl Settings {
            /// Each setting's `cqrs.toml` key and its value as text, secrets redacted.
            pub fn values(&self) -> Vec<(&'static str, String)> {
                vec![ $( (stringify!($key), Show::show(&self.$field, stringify!($key))), )* ]
            }

            /// `layer`'s values where set, the defaults elsewhere (not checked).
            fn fill(layer: Layer) -> Settings {
                let d = Settings::default();
                Settings {
                    $( $field: match layer.$key { Some($v) => $conv, None => d.$field }, )*
                }
            }
        }
    };
}

settings! {
    /// Database URL (`postgres://…`, `sqlite://…`).
    database_url: Option<String> = None,
        key database_url: String, env ["DATABASE_URL"] => |v| Some(v);
    /// Broker URL (`amqp://…`, `amqps://…`, a `sqlite://` queue file).
    broker_url: Option<String> = None,
        key broker_url: String, env ["CQRS_BROKER_URL", "AMQP_URL"] => |v| Some(v);
    /// This replica's queue.
    queue: Option<String> = None,
        key queue: String, env ["CQRS_QUEUE"] => |v| Some(v);
    /// The topic exchange (`cqrs`).
    exchange: String = "cqrs".into(),
        key exchange: String, env ["CQRS_EXCHANGE"] => |v| v;
    /// The type of the queues `consume` declares for this replica (its queue, dead-letter queue
    /// and retry delay queues): `classic` (what django-cqrs declares) or `quorum` (replicated
    /// across a RabbitMQ cluster's nodes).
    queue_type: QueueType = QueueType::Classic,
        key queue_type: QueueType, env ["CQRS_QUEUE_TYPE"] => |v| v;
    /// This service's name (connection names, `cqrs-producer` header).
    service_name: String = "cqrs".into(),
        key service_name: String, env ["CQRS_SERVICE_NAME"] => |v| v;
    /// Most messages applied in one transaction; rows per relay batch and per sync transaction.
    batch_size: usize = 500,
        key batch_size: usize, env ["CQRS_BATCH_SIZE"] => |v| v;
    /// Retries before a message that cannot be applied is dead-lettered.
    max_retries: u32 = 30,
        key max_retries: u32 => |v| v;
    /// Delay before retry n (index n-1; the last repeats).
    retry_delays: Vec<Duration> = [2, 4, 8, 16, 32, 60].iter().map(|s| Duration::from_secs(*s)).collect(),
        key retry_delays_ms: Vec<u64> => |v| v.into_iter().map(Duration::from_millis).collect();
    /// TTL the master gives a message (`expires`) and the replica assumes when `expires` is absent.
    message_ttl: Duration = Duration::from_secs(86_400),
        key message_ttl_seconds: u64 => |v| Duration::from_secs(v);
    /// How long a dead letter stays in the dead-letter queue.
    dead_letter_ttl: Duration = Duration::from_secs(864_000),
        key dead_letter_ttl_seconds: u64 => |v| Duration::from_secs(v);
    /// Larger bodies are dead-lettered as `too-large`.
    max_body_bytes: usize = 1 << 20,
        key max_body_bytes: usize => |v| v;
    /// How long a relay's claim on outbox rows lasts (a killed relay's rows return after it).
    relay_lease: Duration = Duration::from_secs(60),
        key relay_lease_ms: u64 => |v| Duration::from_millis(v);
    /// How long a consumer of the local sqlite:// transport holds taken messages.
    local_lease: Duration = Duration::from_secs(30),
        key local_lease_ms: u64 => |v| Duration::from_millis(v);
    /// Keep messages no queue is bound for in the outbox (tried again every 5 s) instead of
    /// dropping them as django-cqrs does: for a master whose relay may start before its replicas
    /// declared their queues.
    keep_unroutable: bool = false,
        key keep_unroutable: bool => |v| v;
    /// How long a replica keeps a tombstone before `consume` (hourly) or `cqrs tombstones prune`
    /// removes it. Must be longer than anything that can still deliver an old message (message
    /// TTL + dead-letter TTL + the longest retry chain), so a re-driven dead letter cannot bring a
    /// deleted row back.
    tombstone_retention: Duration = Duration::from_secs(14 * DAY),
        key tombstone_retention_days: u64, env ["CQRS_TOMBSTONE_RETENTION_DAYS"] => |v| Duration::from_secs(v.saturating_mul(DAY));
    /// Where `relay` and `consume` serve `/metrics`, `/healthz` and `/readyz` (`host:port`);
    /// off when unset.
    metrics_addr: Option<String> = None,
        key metrics_addr: String, env ["CQRS_METRICS_ADDR"] => |v| Some(v);
    /// A PEM file of CA certificates to trust for `amqps://` (a private CA).
    tls_ca_file: Option<PathBuf> = None,
        key tls_ca_file: PathBuf, env ["CQRS_TLS_CA_FILE"] => |v| Some(v);
    /// The replica's statement timeout while it applies messages (PostgreSQL's
    /// `statement_timeout`, django-cqrs's `CQRS_QUERY_TIMEOUT`): a statement that runs longer is
    /// cancelled and its messages retried, then dead-lettered. Unset or 0: the server's own.
    query_timeout: Option<Duration> = None,
        key query_timeout_ms: u64, env ["CQRS_QUERY_TIMEOUT_MS"] => |v| (v > 0).then(|| Duration::from_millis(v));
    /// Settings of one model that differ from the global ones: `[models.<cqrs_id>]` in
    /// `cqrs.toml` (see [`ModelLayer`]).
    models: BTreeMap<String, ModelLayer> = BTreeMap::new(),
        key models: BTreeMap<String, ModelLayer> => |v| v;
}

/// One model's own settings, `[models.<cqrs_id>]` in `cqrs.toml`; what it leaves unset is the
/// global value. A model's value beats the global one from the environment or the file; a
/// command-line flag (`--batch-size`, `--batch`) beats both.
///
/// ```toml
/// [models.audit_event]
/// max_retries = 5
/// retry_delays_ms = [500, 5000]
/// message_ttl_seconds = 3600
/// batch_size = 50
/// query_timeout_ms = 2000
/// ```
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ModelLayer {
    /// Most of this model's rows per `sync` transaction (the consumer's transactions mix models:
    /// their size is the global `batch_size`).
    pub batch_size: Option<usize>,
    /// Retries before this model's message is dead-lettered.
    pub max_retries: Option<u32>,
    /// Delays before this model's retries (the last repeats).
    pub retry_delays_ms: Option<Vec<u64>>,
    /// TTL the relay gives this model's messages (and the replica assumes when none is sent).
    pub message_ttl_seconds: Option<u64>,
    /// Statement timeout while this model's messages are applied; 0: none, not even the
    /// server's.
    pub query_timeout_ms: Option<u64>,
}

/// The effective settings of one model: its `[models.<cqrs_id>]` values over the global ones.
/// Borrowed, so asking per message costs one map lookup.
#[derive(Debug, Clone, Copy)]
pub struct ModelSettings<'a> {
    global: &'a Settings,
    own: Option<&'a ModelLayer>,
}

impl ModelSettings<'_> {
    /// Most of this model's rows per `sync` transaction.
    pub fn batch_size(&self) -> usize {
        self.own
            .and_then(|m| m.batch_size)
            .unwrap_or(self.global.batch_size)
    }

    /// Retries before a message is dead-lettered.
    pub fn max_retries(&self) -> u32 {
        self.own
            .and_then(|m| m.max_retries)
            .unwrap_or(self.global.max_retries)
    }

    /// The delay before retry number `retry` (1-based); the last level repeats.
    pub fn retry_delay(&self, retry: u32) -> Duration {
        let level = |n: usize| (retry.max(1) as usize - 1).min(n - 1);
        match self.own.and_then(|m| m.retry_delays_ms.as_deref()) {
            Some(ms) => Duration::from_millis(ms[level(ms.len())]),
            None => self.global.retry_delays[level(self.global.retry_delays.len())],
        }
    }

    /// The TTL of a message of this model.
    pub fn message_ttl(&self) -> Duration {
        self.own
            .and_then(|m| m.message_ttl_seconds)
            .map_or(self.global.message_ttl, Duration::from_secs)
    }

    /// The statement timeout while applying this model: `None` leaves the server's own,
    /// `Some(ZERO)` turns any off.
    pub fn query_timeout(&self) -> Option<Duration> {
        self.own
            .and_then(|m| m.query_timeout_ms)
            .map(Duration::from_millis)
            .or(self.global.query_timeout)
    }

    /// How long a message of this model can still be delivered once published: its TTL, then a
    /// dead letter's TTL (it may be re-driven at the end), then every retry's delay.
    fn reach(&self) -> Duration {
        let retries: Duration = (1..=self.max_retries()).map(|r| self.retry_delay(r)).sum();
        self.message_ttl() + self.global.dead_letter_ttl + retries
    }
}

/// The URL without its secrets, for messages: the password of `user:password@` and the value of
/// any query parameter named like one (`password`, `sslpassword`, `secret`, `token`).
///
/// ```
/// use cqrs::config::redact;
/// assert_eq!(redact("postgres://app:s3cret@db/x"), "postgres://app:***@db/x");
/// assert_eq!(
///     redact("postgres://db/x?user=app&password=s3cret&sslmode=require"),
///     "postgres://db/x?user=app&password=***&sslmode=require"
/// );
/// assert_eq!(redact("postgres://app:pa?ss@db/x"), "postgres://app:***@db/x");
/// ```
pub fn redact(url: &str) -> String {
    // A list of URLs (a cluster's brokers): each its own.
    if url.matches("://").count() > 1 {
        return url.split(',').map(redact).collect::<Vec<_>>().join(",");
    }
    // Query-style secrets first, wherever a `?` or `&` starts a parameter (a `?` inside a
    // password is not a parameter: it has no `=` of a secret name before the `@`)...
    let secret = |k: &str| {
        let k = k.to_ascii_lowercase();
        ["pass", "pwd", "secret", "token"]
            .iter()
            .any(|s| k.contains(s))
    };
    let mut masked = String::with_capacity(url.len());
    for (i, piece) in url.split_inclusive(['?', '&']).enumerate() {
        let (body, sep) = match piece.char_indices().last() {
            Some((at, c)) if c == '?' || c == '&' => (&piece[..at], &piece[at..]),
            _ => (piece, ""),
        };
        match body.split_once('=') {
            Some((k, _)) if i > 0 && secret(k) && !body.contains('@') => {
                masked.push_str(k);
                masked.push_str("=***");
            }
            _ => masked.push_str(body),
        }
        masked.push_str(sep);
    }
    // ...then the password of `user:password@`.
    match (masked.find("://"), masked.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &masked[s + 3..at];
            match creds.find(':') {
                Some(c) => format!("{}{}:***{}", &masked[..s + 3], &creds[..c], &masked[at..]),
                None => masked.clone(),
            }
        }
        _ => masked,
    }
}

/// A resolved value as `cqrs config` prints it, in the unit its `cqrs.toml` key names (`_ms`,
/// `_seconds`), so a printed line can be pasted into the file.
trait Show {
    fn show(&self, key: &str) -> String;
}

/// A duration in the unit of `key`.
fn in_unit(d: &Duration, key: &str) -> String {
    if key.ends_with("_days") {
        (d.as_secs() / DAY).to_string()
    } else if key.ends_with("_seconds") {
        d.as_secs().to_string()
    } else {
        d.as_millis().to_string()
    }
}

macro_rules! show_as {
    ($($ty:ty => |$v:ident, $k:ident| $e:expr;)*) => {
        $(impl Show for $ty {
            fn show(&self, key: &str) -> String {
                let ($v, $k) = (self, key);
                $e
            }
        })*
    };
}

show_as! {
    String => |v, _k| format!("{v:?}");
    QueueType => |v, _k| format!("{:?}", v.as_str());
    usize => |v, _k| v.to_string();
    u32 => |v, _k| v.to_string();
    bool => |v, _k| v.to_string();
    Duration => |v, k| in_unit(v, k);
    Vec<Duration> => |v, k| format!(
        "[{}]",
        v.iter().map(|d| in_unit(d, k)).collect::<Vec<_>>().join(", ")
    );
    // URLs are the only optional strings, and may carry passwords.
    Option<String> => |v, _k| v
        .as_deref()
        .map_or_else(|| "(not set)".into(), |s| format!("{:?}", redact(s)));
    Option<PathBuf> => |v, _k| v
        .as_ref()
        .map_or_else(|| "(not set)".into(), |p| format!("{:?}", p.display().to_string()));
    Option<Duration> => |v, k| v.as_ref().map_or_else(|| "(not set)".into(), |d| in_unit(d, k));
    // An inline table, so the line can be pasted into the file like the others.
    BTreeMap<String, ModelLayer> => |v, _k| {
        let models = v.iter().map(|(id, m)| {
            let set = [
                m.batch_size.map(|n| format!("batch_size = {n}")),
                m.max_retries.map(|n| format!("max_retries = {n}")),
                m.retry_delays_ms.as_ref().map(|d| format!("retry_delays_ms = {d:?}")),
                m.message_ttl_seconds.map(|n| format!("message_ttl_seconds = {n}")),
                m.query_timeout_ms.map(|n| format!("query_timeout_ms = {n}")),
            ];
            let set: Vec<String> = set.into_iter().flatten().collect();
            format!("{id:?} = {{ {} }}", set.join(", "))
        });
        format!("{{ {} }}", models.collect::<Vec<_>>().join(", ")).replace("{  }", "{}")
    };
}

/// Where a setting's value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A command-line flag.
    Flag,
    /// An environment variable (its name).
    Env(&'static str),
    /// The config file (its path).
    File(PathBuf),
    /// Nobody set it.
    Default,
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Flag => write!(f, "flag"),
            Source::Env(name) => write!(f, "env {name}"),
            Source::File(path) => write!(f, "file {}", path.display()),
            Source::Default => write!(f, "default"),
        }
    }
}

/// A setting's raw value from the text of an environment variable.
trait FromVar: Sized {
    fn from_var(text: &str) -> std::result::Result<Self, String>;
}

impl FromVar for String {
    fn from_var(text: &str) -> std::result::Result<Self, String> {
        Ok(text.to_string())
    }
}

impl FromVar for PathBuf {
    fn from_var(text: &str) -> std::result::Result<Self, String> {
        Ok(PathBuf::from(text))
    }
}

impl FromVar for QueueType {
    fn from_var(text: &str) -> std::result::Result<Self, String> {
        text.parse()
    }
}

macro_rules! from_var_number {
    ($($ty:ty),*) => {$(
        impl FromVar for $ty {
            fn from_var(text: &str) -> std::result::Result<Self, String> {
                text.trim()
                    .parse()
                    .map_err(|e| format!("expected a whole number: {e}"))
            }
        }
    )*};
}

from_var_number!(usize, u64);

/// The first of `names` that is set and not empty, parsed.
fn first_var<T: FromVar>(
    var: &impl Fn(&str) -> Option<String>,
    names: &[&str],
) -> Result<Option<T>> {
    for name in names {
        if let Some(text) = var(name).filter(|t| !t.is_empty()) {
            return T::from_var(&text)
                .map(Some)
                .map_err(|e| Error::config(format!("environment variable {name}={text:?}: {e}")));
        }
    }
    Ok(None)
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

    /// The process environment's layer.
    pub fn from_env() -> Result<Layer> {
        Layer::from_vars(|k| std::env::var(k).ok())
    }
}

impl Settings {
    /// Layer `flags` over the environment over the config file over the defaults: the one place
    /// settings are read. `config` is the file named by `--config` (else `CQRS_CONFIG`; it must
    /// exist); without either, `cqrs.toml` is read if present.
    pub fn resolve(flags: Layer, config: Option<&Path>) -> Result<Settings> {
        Settings::explain(flags, config).map(|(s, _)| s)
    }

    /// [`Settings::resolve`], also saying where each value came from (`cqrs config`), by
    /// `cqrs.toml` key in declaration order.
    pub fn explain(
        flags: Layer,
        config: Option<&Path>,
    ) -> Result<(Settings, Vec<(&'static str, Source)>)> {
        let named = config.map(Path::to_path_buf).or_else(|| {
            std::env::var_os(CONFIG_ENV)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        });
        let (file, path) = match named {
            Some(path) => (Layer::from_file(&path)?, Some(path)),
            None => {
                let default = PathBuf::from(DEFAULT_CONFIG_FILE);
                if default.is_file() {
                    (Layer::from_file(&default)?, Some(default))
                } else {
                    (Layer::default(), None)
                }
            }
        };
        let env = Layer::from_env()?;
        let (from_flags, from_env, from_file) = (flags.keys_set(), env.keys_set(), file.keys_set());
        let sources = KEYS
            .iter()
            .map(|(key, vars)| {
                let source = if from_flags.contains(key) {
                    Source::Flag
                } else if from_env.contains(key) {
                    let set = vars
                        .iter()
                        .find(|v| std::env::var(v).is_ok_and(|t| !t.is_empty()));
                    Source::Env(set.copied().unwrap_or(vars[0]))
                } else if from_file.contains(key) {
                    Source::File(path.clone().unwrap_or_default())
                } else {
                    Source::Default
                };
                (*key, source)
            })
            .collect();
        let by_flag = flags.batch_size.is_some();
        let mut settings = Settings::from_layer(flags.over(env).over(file))?;
        if by_flag {
            // A flag is this run's explicit choice: it beats the models' own values too.
            for m in settings.models.values_mut() {
                m.batch_size = None;
            }
        }
        Ok((settings, sources))
    }

    /// Fill unset values of `layer` with the defaults and check them.
    pub fn from_layer(layer: Layer) -> Result<Settings> {
        let s = Settings::fill(layer);
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
        if let Some(queue) = &s.queue {
            crate::transport::routing::check_queue_name(queue).map_err(Error::config)?;
        }
        if let Some(addr) = &s.metrics_addr {
            s.metrics_socket(addr)?;
        }
        // PostgreSQL takes a statement_timeout up to i32::MAX milliseconds (24.8 days).
        let too_long = |ms: Option<u64>| ms.is_some_and(|ms| ms > i32::MAX as u64);
        if too_long(s.query_timeout.map(|d| d.as_millis() as u64)) {
            return Err(Error::config(format!(
                "query_timeout_ms must be at most {} (24.8 days)",
                i32::MAX
            )));
        }
        for (id, m) in &s.models {
            let at = |key: &str| format!("models.{id}.{key}");
            if too_long(m.query_timeout_ms) {
                return Err(Error::config(format!(
                    "{} must be at most {} (24.8 days)",
                    at("query_timeout_ms"),
                    i32::MAX
                )));
            }
            if m.batch_size == Some(0) {
                return Err(Error::config(format!(
                    "{} must be at least 1",
                    at("batch_size")
                )));
            }
            if m.retry_delays_ms.as_ref().is_some_and(Vec::is_empty) {
                return Err(Error::config(format!(
                    "{} must list at least one delay",
                    at("retry_delays_ms")
                )));
            }
        }
        let reach = s.message_reach();
        if s.tombstone_retention <= reach {
            return Err(Error::config(format!(
                "tombstone_retention_days = {} is too short: a tombstone must outlive every message that can still arrive \
                 (message TTL + dead-letter TTL + the longest retry chain: {:.1} days)",
                s.tombstone_retention_days(),
                reach.as_secs_f64() / DAY as f64
            )));
        }
        Ok(s)
    }

    /// The metrics listener's address, parsed (`host:port`, resolved; `:port` or a bare port
    /// listens on every interface, as other Prometheus exporters take it).
    pub fn metrics_socket(&self, addr: &str) -> Result<std::net::SocketAddr> {
        use std::net::ToSocketAddrs;
        let port = addr.strip_prefix(':').unwrap_or(addr);
        let full = if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) {
            format!("0.0.0.0:{port}")
        } else {
            addr.to_string()
        };
        full.to_socket_addrs()
            .ok()
            .and_then(|mut a| a.next())
            .ok_or_else(|| Error::config(format!("metrics_addr {addr:?} is not a host:port")))
    }

    /// How long a message can still be delivered once published: its TTL, then a dead letter's
    /// TTL (it may be re-driven at the end), then every retry's delay. Not counted: time spent in
    /// the outbox before publishing (the relay sets `expires`), and a re-driven letter's new TTL.
    /// The longest over the global settings and every model's own.
    pub fn message_reach(&self) -> Duration {
        let models = self.models.keys().map(|id| self.model(id).reach());
        models.fold(self.global_model().reach(), Duration::max)
    }

    /// `tombstone_retention` in whole days, as `tombstone_retention_days` sets it.
    pub fn tombstone_retention_days(&self) -> u64 {
        self.tombstone_retention.as_secs() / DAY
    }

    fn global_model(&self) -> ModelSettings<'_> {
        ModelSettings {
            global: self,
            own: None,
        }
    }

    /// The effective settings of the model `cqrs_id` (the global ones where it has none).
    pub fn model(&self, cqrs_id: &str) -> ModelSettings<'_> {
        ModelSettings {
            global: self,
            own: self.models.get(cqrs_id),
        }
    }

    /// Every retry delay any model may use: the levels a replica's queue needs.
    pub fn retry_levels(&self) -> Vec<Duration> {
        let own = self
            .models
            .values()
            .filter_map(|m| m.retry_delays_ms.as_ref());
        let mut levels: Vec<Duration> = own
            .flatten()
            .map(|ms| Duration::from_millis(*ms))
            .chain(self.retry_delays.iter().copied())
            .collect();
        levels.sort();
        levels.dedup();
        levels
    }

    /// A config error if `[models.<cqrs_id>]` names a model this binary does not know (a typo
    /// would otherwise leave the model on the global settings without a word).
    pub fn check_models(&self, known: &[&str]) -> Result<()> {
        for id in self.models.keys() {
            if !known.contains(&id.as_str()) {
                let mut names = known.to_vec();
                names.sort();
                names.dedup();
                return Err(Error::config(format!(
                    "[models.{id}] in the config file: no model with cqrs_id {id:?} is registered (known: {})",
                    names.join(", ")
                )));
            }
        }
        Ok(())
    }

    /// The database URL or a config error naming the flag and variable to set.
    pub fn require_database_url(&self) -> Result<&str> {
        self.database_url.as_deref().ok_or_else(|| {
            Error::config("no database: pass --database-url or set DATABASE_URL (or database_url in cqrs.toml)")
        })
    }

    /// This replica's queue, or a usage error naming `command` and how to give one.
    pub fn require_queue(&self, command: &str) -> Result<&str> {
        self.queue.as_deref().ok_or_else(|| {
            Error::config(format!(
                "{command} needs this replica's queue: pass --queue or set CQRS_QUEUE"
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bare_port_listens_on_every_interface() {
        let s = Settings::default();
        for addr in [":9464", "9464"] {
            assert_eq!(s.metrics_socket(addr).unwrap().to_string(), "0.0.0.0:9464");
        }
        assert_eq!(
            s.metrics_socket("127.0.0.1:9").unwrap().to_string(),
            "127.0.0.1:9"
        );
        for bad in ["", ":", "x", ":x"] {
            assert!(s.metrics_socket(bad).is_err(), "{bad:?}");
        }
    }

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
    fn environment_sits_between_flags_and_file() {
        let env = Layer::from_vars(|k| match k {
            "CQRS_QUEUE" => Some("q_env".into()),
            "CQRS_EXCHANGE" => Some("x_env".into()),
            "AMQP_URL" => Some("amqp://alias".into()),
            "CQRS_BATCH_SIZE" => Some("".into()),
            _ => None,
        })
        .unwrap();
        let file: Layer = toml::from_str("exchange = \"x_file\"\nbatch_size = 7").unwrap();
        let flags = Layer {
            queue: Some("q_flag".into()),
            ..Layer::default()
        };
        let s = Settings::from_layer(flags.over(env).over(file)).unwrap();
        assert_eq!(s.queue.as_deref(), Some("q_flag"));
        assert_eq!(s.exchange, "x_env");
        assert_eq!(s.broker_url.as_deref(), Some("amqp://alias"));
        assert_eq!(s.batch_size, 7, "an empty variable is unset");
        let err = Layer::from_vars(|k| (k == "CQRS_BATCH_SIZE").then(|| "ten".into())).unwrap_err();
        assert!(err.to_string().contains("CQRS_BATCH_SIZE"), "{err}");
    }

    #[test]
    fn unknown_file_keys_are_named() {
        let err = toml::from_str::<Layer>("exchnage = \"x\"").unwrap_err();
        assert!(err.message().contains("exchnage"), "{}", err.message());
    }

    #[test]
    fn a_models_own_values_beat_the_global_ones() {
        let file: Layer = toml::from_str(
            "max_retries = 4\nquery_timeout_ms = 3000\n\
             [models.audit]\nmax_retries = 1\nretry_delays_ms = [250, 500]\n\
             message_ttl_seconds = 60\nbatch_size = 9\nquery_timeout_ms = 0\n\
             [models.item]\nquery_timeout_ms = 800\n",
        )
        .unwrap();
        let s = Settings::from_layer(file).unwrap();
        let audit = s.model("audit");
        assert_eq!(audit.max_retries(), 1);
        assert_eq!(audit.retry_delay(1), Duration::from_millis(250));
        assert_eq!(audit.retry_delay(7), Duration::from_millis(500));
        assert_eq!(audit.message_ttl(), Duration::from_secs(60));
        assert_eq!(audit.batch_size(), 9);
        assert_eq!(
            audit.query_timeout(),
            Some(Duration::ZERO),
            "0 turns any timeout off"
        );
        let item = s.model("item");
        assert_eq!(item.query_timeout(), Some(Duration::from_millis(800)));
        assert_eq!(item.max_retries(), 4);
        assert_eq!(item.retry_delay(1), Duration::from_secs(2));
        let other = s.model("other");
        assert_eq!(other.query_timeout(), Some(Duration::from_secs(3)));
        assert_eq!(other.batch_size(), 500);
        let levels: Vec<u64> = s
            .retry_levels()
            .iter()
            .map(|d| d.as_millis() as u64)
            .collect();
        assert_eq!(levels, [250, 500, 2000, 4000, 8000, 16000, 32000, 60000]);
        assert_eq!(
            Show::show(&s.models, "models"),
            "{ \"audit\" = { batch_size = 9, max_retries = 1, retry_delays_ms = [250, 500], \
             message_ttl_seconds = 60, query_timeout_ms = 0 }, \"item\" = { query_timeout_ms = 800 } }"
        );
        assert_eq!(Show::show(&Settings::default().models, "models"), "{}");
    }

    #[test]
    fn bad_model_settings_are_named() {
        for (toml, says) in [
            (
                "[models.a]\nbatch_size = 0",
                "models.a.batch_size must be at least 1",
            ),
            (
                "[models.a]\nretry_delays_ms = []",
                "models.a.retry_delays_ms must list",
            ),
            ("[models.a]\nmax_retry = 3", "max_retry"),
            (
                "[models.a]\nquery_timeout_ms = 2147483648",
                "models.a.query_timeout_ms must be at most 2147483647",
            ),
            (
                "query_timeout_ms = 2147483648",
                "query_timeout_ms must be at most 2147483647",
            ),
        ] {
            let err = match toml::from_str::<Layer>(toml) {
                Ok(layer) => Settings::from_layer(layer).unwrap_err().to_string(),
                Err(e) => e.message().to_string(),
            };
            assert!(err.contains(says), "{toml}: {err}");
        }
        let s = Settings::from_layer(toml::from_str("[models.itme]\nmax_retries = 1").unwrap())
            .unwrap();
        let err = s.check_models(&["item", "order"]).unwrap_err().to_string();
        assert!(
            err.contains("\"itme\"") && err.contains("known: item, order"),
            "{err}"
        );
        s.check_models(&["itme"]).unwrap();
    }

    #[test]
    fn tombstones_must_outlive_the_longest_reach_of_any_model() {
        // A model whose messages live 30 days needs tombstones kept longer than the default 14.
        let layer: Layer = toml::from_str("[models.slow]\nmessage_ttl_seconds = 2592000").unwrap();
        let err = Settings::from_layer(layer).unwrap_err().to_string();
        assert!(
            err.contains("tombstone_retention_days = 14 is too short"),
            "{err}"
        );
        let layer: Layer = toml::from_str(
            "tombstone_retention_days = 45\n[models.slow]\nmessage_ttl_seconds = 2592000",
        )
        .unwrap();
        Settings::from_layer(layer).unwrap();
    }

    #[test]
    fn a_flag_beats_a_models_own_batch_size() {
        let path = std::env::temp_dir().join(format!("cqrs-flag-{}.toml", std::process::id()));
        std::fs::write(&path, "[models.item]\nbatch_size = 10\n").unwrap();
        let (s, _) = Settings::explain(Layer::default(), Some(&path)).unwrap();
        assert_eq!(s.model("item").batch_size(), 10);
        let flags = Layer {
            batch_size: Some(7),
            ..Layer::default()
        };
        let (s, _) = Settings::explain(flags, Some(&path)).unwrap();
        assert_eq!(s.model("item").batch_size(), 7);
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn retry_delay_levels_repeat_the_last() {
        let s = Settings::default();
        let s = s.model("any");
        assert_eq!(s.retry_delay(1), Duration::from_secs(2));
        assert_eq!(s.retry_delay(5), Duration::from_secs(32));
        assert_eq!(s.retry_delay(30), Duration::from_secs(60));
    }
}
