//! Shared support for the integration tests: a database of its own per test on the machine's
//! PostgreSQL or in a temporary SQLite file, the test models, message builders, row readers.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

use chrono::{DateTime, Duration, TimeZone, Utc};
use cqrs::value::ColumnType;
use cqrs::{ColumnSpec, Db, Message, SignalType, TableSpec};
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Integer, Nullable, Text, Timestamptz, TimestamptzSqlite};
use serde_json::{Map, Value, json};

mod examples;
mod rabbit;
pub use examples::*;
pub use rabbit::PrivateRabbit;

/// Which backend a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The machine's PostgreSQL, a fresh database per test.
    Postgres,
    /// A SQLite file in a fresh temporary directory.
    Sqlite,
}

/// The server URL tests create their databases on.
pub fn pg_server_url() -> String {
    std::env::var("CQRS_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_string())
}

fn unique(prefix: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!(
        "{prefix}_{}_{}_{nanos}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// A database that exists for one test and is dropped after it.
pub struct TestDb {
    /// Backend.
    pub kind: Kind,
    /// URL to connect with.
    pub url: String,
    name: String,
    dir: Option<PathBuf>,
}

impl TestDb {
    /// A fresh database of `kind`, migrated, with the test tables. Panics (fails the test) loudly if
    /// PostgreSQL is not reachable: tests never skip.
    pub fn new(kind: Kind) -> TestDb {
        let db = TestDb::empty(kind);
        let mut conn = db.connect();
        conn.migrate().expect("migrations run");
        conn.batch_execute(&tables_sql(kind))
            .expect("test tables created");
        db
    }

    /// A fresh, empty database of `kind` (no migrations, no tables).
    pub fn empty(kind: Kind) -> TestDb {
        match kind {
            Kind::Postgres => {
                let name = unique("cqrs_t");
                let server = pg_server_url();
                let mut admin = PgConnection::establish(&server).unwrap_or_else(|e| {
                    panic!("PostgreSQL is required at {server} (set CQRS_TEST_DATABASE_URL): {e}")
                });
                diesel::sql_query(format!("CREATE DATABASE {name}"))
                    .execute(&mut admin)
                    .unwrap();
                let base = server.rsplit_once('/').map(|(b, _)| b).unwrap_or(&server);
                TestDb {
                    kind,
                    url: format!("{base}/{name}"),
                    name,
                    dir: None,
                }
            }
            Kind::Sqlite => {
                let dir = std::env::temp_dir().join(unique("cqrs_t"));
                std::fs::create_dir_all(&dir).unwrap();
                let path = dir.join("replica.db");
                TestDb {
                    kind,
                    url: format!("sqlite://{}", path.display()),
                    name: String::new(),
                    dir: Some(dir),
                }
            }
        }
    }

    /// A new connection.
    pub fn connect(&self) -> Db {
        Db::connect(&self.url).unwrap_or_else(|e| panic!("connect {}: {e}", self.url))
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        match self.kind {
            Kind::Postgres => {
                if let Ok(mut admin) = PgConnection::establish(&pg_server_url()) {
                    let _ = diesel::sql_query(format!(
                        "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                        self.name
                    ))
                    .execute(&mut admin);
                }
            }
            Kind::Sqlite => {
                if let Some(dir) = &self.dir {
                    let _ = std::fs::remove_dir_all(dir);
                }
            }
        }
    }
}

/// DDL of the test tables: `m_items` (a master table), `items` (shaped like the captured django-cqrs `Item`, plus an optional
/// column with a default and a CHECK to provoke constraint errors), `wide` (9 columns, for the bind
/// limit) and `typed` (the captured `Typed` model).
pub fn tables_sql(kind: Kind) -> String {
    let (ts, json, num, dbl, boolean) = match kind {
        Kind::Postgres => (
            "TIMESTAMPTZ",
            "JSONB",
            "NUMERIC(12,2)",
            "DOUBLE PRECISION",
            "BOOLEAN",
        ),
        Kind::Sqlite => ("TEXT", "TEXT", "TEXT", "REAL", "INTEGER"),
    };
    let (serial, now) = match kind {
        Kind::Postgres => ("BIGSERIAL PRIMARY KEY", "clock_timestamp()"),
        Kind::Sqlite => (
            "INTEGER PRIMARY KEY AUTOINCREMENT",
            "(strftime('%Y-%m-%d %H:%M:%f+00:00', 'now'))",
        ),
    };
    let uuid = if kind == Kind::Postgres {
        "UUID"
    } else {
        "TEXT"
    };
    format!(
        "CREATE TABLE items (
            id BIGINT PRIMARY KEY,
            name TEXT NOT NULL,
            value BIGINT NOT NULL CHECK (value >= -4611686018427387904),
            updated {ts} NOT NULL,
            note TEXT NOT NULL DEFAULT 'none',
            cqrs_revision INTEGER NOT NULL,
            cqrs_updated {ts} NOT NULL
        );
        CREATE TABLE wide (
            id BIGINT PRIMARY KEY,
            a BIGINT NOT NULL, b BIGINT NOT NULL, c TEXT NOT NULL, d TEXT NOT NULL,
            e BIGINT NOT NULL, f TEXT NOT NULL,
            cqrs_revision INTEGER NOT NULL,
            cqrs_updated {ts} NOT NULL
        );
        CREATE TABLE m_items (
            id {serial},
            name TEXT NOT NULL,
            value BIGINT NOT NULL,
            updated {ts} NOT NULL,
            secret TEXT NOT NULL DEFAULT '',
            owner_id BIGINT,
            cqrs_revision INTEGER NOT NULL DEFAULT 0,
            cqrs_updated {ts} NOT NULL DEFAULT {now}
        );
        CREATE TABLE typed (
            id {uuid} PRIMARY KEY,
            price {num} NOT NULL,
            ratio {dbl} NOT NULL,
            flag {boolean} NOT NULL,
            day DATE NOT NULL,
            at {ts} NOT NULL,
            maybe_text TEXT,
            maybe_int INTEGER,
            owner_ref BIGINT,
            tags {json} NOT NULL,
            cqrs_revision INTEGER NOT NULL,
            cqrs_updated {ts} NOT NULL
        );"
    )
}

/// The replica of the captured `Item` model (`cqrs_id` "item").
pub fn item_spec() -> TableSpec {
    TableSpec::new("item", "items")
        .key("id", ColumnType::BigInt)
        .column(ColumnSpec::new("name", ColumnType::Text))
        .column(ColumnSpec::new("value", ColumnType::BigInt))
        .column(ColumnSpec::new("updated", ColumnType::Timestamptz))
        .column(ColumnSpec::new("note", ColumnType::Text).optional())
        .build()
        .unwrap()
}

/// A 9-column model (`cqrs_id` "wide").
pub fn wide_spec() -> TableSpec {
    TableSpec::new("wide", "wide")
        .key("id", ColumnType::BigInt)
        .column(ColumnSpec::new("a", ColumnType::BigInt))
        .column(ColumnSpec::new("b", ColumnType::BigInt))
        .column(ColumnSpec::new("c", ColumnType::Text))
        .column(ColumnSpec::new("d", ColumnType::Text))
        .column(ColumnSpec::new("e", ColumnType::BigInt))
        .column(ColumnSpec::new("f", ColumnType::Text))
        .build()
        .unwrap()
}

/// The replica of the captured `Typed` model (`cqrs_id` "typed"); the FK `owner` lands in `owner_ref`.
pub fn typed_spec(kind: Kind) -> TableSpec {
    TableSpec::new("typed", "typed")
        .key("id", ColumnType::Uuid)
        .column(ColumnSpec::new("price", ColumnType::Numeric))
        .column(ColumnSpec::new("ratio", ColumnType::Double))
        .column(ColumnSpec::new("flag", ColumnType::Bool))
        .column(ColumnSpec::new("day", ColumnType::Date))
        .column(ColumnSpec::new("at", ColumnType::Timestamptz))
        .column(
            ColumnSpec::new("maybe_text", ColumnType::Text)
                .nullable()
                .optional(),
        )
        .column(
            ColumnSpec::new("maybe_int", ColumnType::Integer)
                .nullable()
                .optional(),
        )
        .column(
            ColumnSpec::new("owner_ref", ColumnType::BigInt)
                .wire("owner")
                .nullable()
                .optional(),
        )
        .column(ColumnSpec::new(
            "tags",
            if kind == Kind::Postgres {
                ColumnType::Jsonb
            } else {
                ColumnType::Json
            },
        ))
        .build()
        .unwrap()
}

/// A fixed base instant so tests are reproducible.
pub fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 23, 12, 0, 0).unwrap()
}

/// `t0` plus `ms` milliseconds.
pub fn at(ms: i64) -> DateTime<Utc> {
    t0() + Duration::milliseconds(ms)
}

/// An item state as a master would send it.
#[derive(Debug, Clone, PartialEq)]
pub struct ItemState {
    /// Primary key.
    pub id: i64,
    /// Name.
    pub name: String,
    /// Value.
    pub value: i64,
    /// Revision.
    pub rev: i32,
    /// cqrs_updated.
    pub updated: DateTime<Utc>,
}

impl ItemState {
    /// A state with name `n<id>-<rev>` and value `rev`.
    pub fn new(id: i64, rev: i32, updated: DateTime<Utc>) -> Self {
        ItemState {
            id,
            name: format!("n{id}-{rev}"),
            value: i64::from(rev),
            rev,
            updated,
        }
    }

    fn data(&self) -> Map<String, Value> {
        let v = json!({
            "cqrs_revision": self.rev,
            "cqrs_updated": cqrs::message::format_datetime(&self.updated),
            "id": self.id,
            "name": self.name,
            "value": self.value,
            "updated": cqrs::message::format_datetime(&self.updated),
        });
        v.as_object().unwrap().clone()
    }

    /// SAVE of this state.
    pub fn save(&self) -> Message {
        Message::new(SignalType::Save, "item", json!(self.id), self.data())
    }

    /// Broadcast SYNC of this state.
    pub fn sync(&self) -> Message {
        Message::new(SignalType::Sync, "item", json!(self.id), self.data())
    }
}

/// A DELETE of item `id` with revision `rev`.
pub fn item_delete(id: i64, rev: i32, updated: DateTime<Utc>) -> Message {
    let data = json!({"id": id, "cqrs_revision": rev, "cqrs_updated": cqrs::message::format_datetime(&updated)});
    Message::new(
        SignalType::Delete,
        "item",
        json!(id),
        data.as_object().unwrap().clone(),
    )
}

/// A replica row of `items`.
#[derive(Debug, Clone, PartialEq)]
pub struct ItemRow {
    /// name.
    pub name: String,
    /// value.
    pub value: i64,
    /// note.
    pub note: String,
    /// cqrs_revision.
    pub rev: i32,
    /// cqrs_updated.
    pub updated: DateTime<Utc>,
}

macro_rules! item_row_struct {
    ($name:ident, $ts:ty) => {
        #[derive(QueryableByName)]
        struct $name {
            #[diesel(sql_type = BigInt)]
            id: i64,
            #[diesel(sql_type = Text)]
            name: String,
            #[diesel(sql_type = BigInt)]
            value: i64,
            #[diesel(sql_type = Text)]
            note: String,
            #[diesel(sql_type = Integer)]
            cqrs_revision: i32,
            #[diesel(sql_type = $ts)]
            cqrs_updated: DateTime<Utc>,
        }
        impl $name {
            fn into_pair(self) -> (i64, ItemRow) {
                (
                    self.id,
                    ItemRow {
                        name: self.name,
                        value: self.value,
                        note: self.note,
                        rev: self.cqrs_revision,
                        updated: self.cqrs_updated,
                    },
                )
            }
        }
    };
}
item_row_struct!(PgItem, Timestamptz);
item_row_struct!(SqliteItem, TimestamptzSqlite);

/// All rows of `items` by id.
pub fn items(db: &mut Db) -> BTreeMap<i64, ItemRow> {
    const Q: &str = "SELECT id, name, value, note, cqrs_revision, cqrs_updated FROM items";
    match db {
        Db::Pg(c) => diesel::sql_query(Q)
            .load::<PgItem>(c)
            .unwrap()
            .into_iter()
            .map(PgItem::into_pair)
            .collect(),
        Db::Sqlite(c) => diesel::sql_query(Q)
            .load::<SqliteItem>(c)
            .unwrap()
            .into_iter()
            .map(SqliteItem::into_pair)
            .collect(),
    }
}

/// Tombstones of a model: canonical pk -> (revision, cqrs_updated).
pub fn tombstones(db: &mut Db, cqrs_id: &str) -> BTreeMap<String, (i32, DateTime<Utc>)> {
    #[derive(QueryableByName)]
    struct PgT {
        #[diesel(sql_type = Text)]
        pk: String,
        #[diesel(sql_type = Integer)]
        revision: i32,
        #[diesel(sql_type = Timestamptz)]
        cqrs_updated: DateTime<Utc>,
    }
    #[derive(QueryableByName)]
    struct SqT {
        #[diesel(sql_type = Text)]
        pk: String,
        #[diesel(sql_type = Integer)]
        revision: i32,
        #[diesel(sql_type = TimestamptzSqlite)]
        cqrs_updated: DateTime<Utc>,
    }
    let q = |p: &str| {
        format!("SELECT pk, revision, cqrs_updated FROM cqrs_tombstones WHERE cqrs_id = {p}")
    };
    match db {
        Db::Pg(c) => diesel::sql_query(q("$1"))
            .bind::<Text, _>(cqrs_id)
            .load::<PgT>(c)
            .unwrap()
            .into_iter()
            .map(|t| (t.pk, (t.revision, t.cqrs_updated)))
            .collect(),
        Db::Sqlite(c) => diesel::sql_query(q("?"))
            .bind::<Text, _>(cqrs_id)
            .load::<SqT>(c)
            .unwrap()
            .into_iter()
            .map(|t| (t.pk, (t.revision, t.cqrs_updated)))
            .collect(),
    }
}

/// Count rows of a query `SELECT count(*) AS n ...`.
pub fn count(db: &mut Db, sql: &str) -> i64 {
    #[derive(QueryableByName)]
    struct N {
        #[diesel(sql_type = BigInt)]
        n: i64,
    }
    match db {
        Db::Pg(c) => diesel::sql_query(sql).get_result::<N>(c).unwrap().n,
        Db::Sqlite(c) => diesel::sql_query(sql).get_result::<N>(c).unwrap().n,
    }
}

/// Column `t` (nullable text) of every row of `sql`.
pub fn texts(db: &mut Db, sql: &str) -> Vec<Option<String>> {
    #[derive(QueryableByName)]
    struct T {
        #[diesel(sql_type = Nullable<Text>)]
        t: Option<String>,
    }
    match db {
        Db::Pg(c) => diesel::sql_query(sql).load::<T>(c).unwrap(),
        Db::Sqlite(c) => diesel::sql_query(sql).load::<T>(c).unwrap(),
    }
    .into_iter()
    .map(|r| r.t)
    .collect()
}

/// The captured django-cqrs messages of one fixture file: (routing key, raw body).
pub fn capture(name: &str) -> Vec<(String, Vec<u8>)> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/protocol")
        .join(name);
    let v: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    v["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["method"]["routing_key"].as_str().unwrap().to_string(),
                m["body_raw"].as_str().unwrap().as_bytes().to_vec(),
            )
        })
        .collect()
}

/// Every capture file `NN_*.json`, sorted.
pub fn capture_files() -> Vec<String> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/protocol");
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".json") && n.as_bytes()[0].is_ascii_digit())
        .collect();
    names.sort();
    names
}

/// Rewrite `$n` placeholders to `?` for SQLite (test statements bind in order).
pub fn sql_for(db: &Db, sql: &str) -> String {
    match db {
        Db::Pg(_) => sql.to_string(),
        Db::Sqlite(_) => {
            let mut out = String::with_capacity(sql.len());
            let mut chars = sql.chars().peekable();
            while let Some(c) = chars.next() {
                if c == '$' && chars.peek().is_some_and(char::is_ascii_digit) {
                    while chars.peek().is_some_and(char::is_ascii_digit) {
                        chars.next();
                    }
                    out.push('?');
                } else {
                    out.push(c);
                }
            }
            out
        }
    }
}

/// The bodies in the outbox, oldest first.
pub fn outbox_messages(db: &mut Db) -> Vec<Message> {
    use cqrs::db::SqlConn;
    db.load_text("SELECT body AS j FROM cqrs_outbox ORDER BY id", vec![])
        .unwrap()
        .iter()
        .map(|b| Message::decode(b.as_bytes()).unwrap())
        .collect()
}

/// A master row of `m_items`: (name, value, updated, revision, cqrs_updated).
pub type MasterRow = (String, i64, DateTime<Utc>, i32, DateTime<Utc>);

/// All rows of `m_items` by id.
pub fn master_items(db: &mut Db) -> BTreeMap<i64, MasterRow> {
    macro_rules! read {
        ($c:expr, $ts:ty) => {{
            #[derive(QueryableByName)]
            struct R {
                #[diesel(sql_type = BigInt)]
                id: i64,
                #[diesel(sql_type = Text)]
                name: String,
                #[diesel(sql_type = BigInt)]
                value: i64,
                #[diesel(sql_type = $ts)]
                updated: DateTime<Utc>,
                #[diesel(sql_type = Integer)]
                cqrs_revision: i32,
                #[diesel(sql_type = $ts)]
                cqrs_updated: DateTime<Utc>,
            }
            diesel::sql_query(
                "SELECT id, name, value, updated, cqrs_revision, cqrs_updated FROM m_items",
            )
            .load::<R>($c)
            .unwrap()
            .into_iter()
            .map(|r| {
                (
                    r.id,
                    (r.name, r.value, r.updated, r.cqrs_revision, r.cqrs_updated),
                )
            })
            .collect()
        }};
    }
    match db {
        Db::Pg(c) => read!(c, Timestamptz),
        Db::Sqlite(c) => read!(c, TimestamptzSqlite),
    }
}

/// The broker tests use.
pub fn amqp_url() -> String {
    std::env::var("CQRS_TEST_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".to_string())
}

/// A unique exchange and replica queue on the machine's RabbitMQ, deleted (with the dead-letter
/// and delay queues and the retry exchange) when dropped.
pub struct TestBroker {
    /// The test's topic exchange.
    pub exchange: String,
    /// The test's replica queue.
    pub queue: String,
    /// The connected transport.
    pub transport: std::sync::Arc<cqrs::transport::amqp::AmqpTransport>,
    /// Delay levels declared.
    pub delays: Vec<std::time::Duration>,
}

impl TestBroker {
    /// Connect (panics, failing the test, if RabbitMQ is not there) with unique names.
    pub fn new() -> TestBroker {
        TestBroker::on_exchange(unique("cqrs_tx"))
    }

    /// Another replica queue on the same exchange as `self`.
    pub fn another_queue(&self) -> TestBroker {
        TestBroker::on_exchange(self.exchange.clone())
    }

    fn on_exchange(exchange: String) -> TestBroker {
        let queue = unique("tq");
        let transport =
            cqrs::transport::amqp::AmqpTransport::connect(cqrs::transport::amqp::AmqpConfig {
                url: amqp_url(),
                connection_name: format!("cqrs-test-{queue}"),
                exchange: exchange.clone(),
                tls_ca_pem: None,
            })
            .unwrap_or_else(|e| {
                panic!(
                    "RabbitMQ is required at {} (set CQRS_TEST_AMQP_URL): {e}",
                    amqp_url()
                )
            });
        TestBroker {
            exchange,
            queue,
            transport,
            delays: vec![
                std::time::Duration::from_millis(100),
                std::time::Duration::from_millis(300),
            ],
        }
    }

    /// Settings for this broker.
    pub fn settings(&self) -> cqrs::Settings {
        cqrs::Settings {
            broker_url: Some(amqp_url()),
            queue: Some(self.queue.clone()),
            exchange: self.exchange.clone(),
            retry_delays: self.delays.clone(),
            max_retries: 2,
            ..cqrs::Settings::default()
        }
    }

    /// Publish raw bytes to the test exchange (no confirms needed: tests read state after).
    pub fn publish_raw(&self, routing_key: &str, body: &[u8]) {
        use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
        let ch = self.transport.channel(true).unwrap();
        let (ex, key, body) = (
            self.exchange.clone(),
            routing_key.to_string(),
            body.to_vec(),
        );
        self.transport.block_on(async move {
            ch.confirm_select(ConfirmSelectOptions::default())
                .await
                .ok();
            let props = lapin::BasicProperties::default()
                .with_content_type("text/plain".into())
                .with_delivery_mode(2);
            ch.basic_publish(
                ex.as_str().into(),
                key.as_str().into(),
                BasicPublishOptions::default(),
                &body,
                props,
            )
            .await
            .unwrap()
            .await
            .unwrap();
        });
    }

    /// Take every message in `queue` with basic_get (acked): (routing key, properties, body).
    pub fn drain(&self, queue: &str) -> Vec<(String, lapin::BasicProperties, Vec<u8>)> {
        use lapin::options::{BasicAckOptions, BasicGetOptions};
        let ch = self.transport.channel(false).unwrap();
        let queue = queue.to_string();
        self.transport.block_on(async move {
            let mut out = Vec::new();
            while let Some(m) = ch
                .basic_get(queue.as_str().into(), BasicGetOptions::default())
                .await
                .unwrap()
            {
                m.delivery
                    .acker
                    .ack(BasicAckOptions::default())
                    .await
                    .unwrap();
                out.push((
                    m.delivery.routing_key.to_string(),
                    m.delivery.properties.clone(),
                    m.delivery.data.clone(),
                ));
            }
            out
        })
    }

    /// Messages ready in `queue`.
    pub fn count(&self, queue: &str) -> u32 {
        use lapin::options::QueueDeclareOptions;
        let ch = self.transport.channel(false).unwrap();
        let queue = queue.to_string();
        self.transport.block_on(async move {
            ch.queue_declare(
                queue.as_str().into(),
                QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                Default::default(),
            )
            .await
            .unwrap()
            .message_count()
        })
    }
}

impl Default for TestBroker {
    fn default() -> Self {
        TestBroker::new()
    }
}

impl Drop for TestBroker {
    fn drop(&mut self) {
        use cqrs::transport::amqp::{retry_exchange, retry_queue};
        use lapin::options::{ExchangeDeleteOptions, QueueDeleteOptions};
        let Ok(ch) = self.transport.channel(false) else {
            return;
        };
        let mut queues = vec![
            self.queue.clone(),
            cqrs::transport::dead_letter_queue(&self.queue),
        ];
        queues.extend(self.delays.iter().map(|d| retry_queue(&self.queue, *d)));
        let exchanges = [self.exchange.clone(), retry_exchange(&self.queue)];
        self.transport.block_on(async move {
            for q in queues {
                let _ = ch
                    .queue_delete(q.as_str().into(), QueueDeleteOptions::default())
                    .await;
            }
            for e in exchanges {
                let _ = ch
                    .exchange_delete(e.as_str().into(), ExchangeDeleteOptions::default())
                    .await;
            }
        });
        let _ = std::process::Command::new("rabbitmqctl")
            .args(["clear_policy", &self.queue])
            .output();
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
