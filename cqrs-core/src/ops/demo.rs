//! `cqrs demo`: the whole product in one process — a master and a replica database, the outbox,
//! an in-process relay, a consumer, a realistic stream of creates, updates, deletes and a directed
//! sync — then the diff and deleted-rows pipelines through the library to prove zero drift.
//!
//! Defaults to the embedded setup (SQLite files and the SQLite queue file in one directory);
//! database and broker URLs switch it to PostgreSQL and RabbitMQ.

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use chrono::Utc;

use crate::capture::atomic;
use crate::config::Settings;
use crate::db::{Db, SqlConn};
use crate::error::Result;
use crate::model::{
    Change, ColumnSpec, MasterModel, MasterSpec, Registry, ReplicaHooks, TableSpec,
};
use crate::ops::diff;
use crate::relay::Relay;
use crate::service::Broker;
use crate::shutdown::Shutdown;
use crate::value::{ColumnType, SqlValue};

/// The replica queue the demo consumes unless told otherwise.
pub const DEFAULT_QUEUE: &str = "cqrs_demo_replica";

/// What to run.
#[derive(Debug, Clone)]
pub struct Options {
    /// Rows created (updates, deletes and the sync scale with it).
    pub rows: usize,
    /// Where the SQLite files go.
    pub dir: PathBuf,
    /// Master and replica database (default: `master.db` / `replica.db` in `dir`).
    pub database_url: Option<String>,
    /// Broker (default: `queue.db` in `dir`).
    pub broker_url: Option<String>,
    /// Exchange on RabbitMQ.
    pub exchange: String,
    /// The replica's queue.
    pub queue: String,
}

/// What happened.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    /// Rows on the master at the end.
    pub master_rows: usize,
    /// Rows on the replica at the end.
    pub replica_rows: usize,
    /// Rows the diff pipelines found different or missing (must be 0).
    pub drift: usize,
    /// Messages published.
    pub messages: usize,
    /// From the first change to the replica converged.
    pub elapsed: Duration,
    /// Commit → apply latency, 50th percentile.
    pub p50: Duration,
    /// Commit → apply latency, 99th percentile.
    pub p99: Duration,
    /// The database URLs (master, replica) and the broker URL used.
    pub urls: (String, String, String),
}

/// The demo master: `demo_items`.
struct DemoItem;

fn table(cqrs_id: &str, name: &str) -> TableSpec {
    TableSpec::new(cqrs_id, name)
        .key("id", ColumnType::BigInt)
        .column(ColumnSpec::new("name", ColumnType::Text))
        .column(ColumnSpec::new("price", ColumnType::Numeric))
        .column(ColumnSpec::new("stock", ColumnType::Integer))
        .column(
            ColumnSpec::new("note", ColumnType::Text)
                .nullable()
                .optional(),
        )
        .build()
        .expect("a valid demo table")
}

impl MasterModel for DemoItem {
    const CQRS_ID: &'static str = "demo_item";
    fn master_spec() -> MasterSpec {
        MasterSpec::new(table("demo_item", "demo_items"))
            .track("price")
            .expect("price is a column")
    }
}

static LATENCIES: Mutex<Vec<i64>> = Mutex::new(Vec::new());

/// After-apply hook of the demo replica: record how long each change took from its capture.
fn record_latency(_db: &mut Db, changes: &[&Change]) -> Result<()> {
    let now = Utc::now();
    let mut l = LATENCIES.lock().unwrap_or_else(|p| p.into_inner());
    for c in changes {
        if let Ok(t) = c.message.updated() {
            l.push((now - t).num_microseconds().unwrap_or(0));
        }
    }
    Ok(())
}

fn ddl(db: &Db, name: &str) -> String {
    let num = if db.backend() == crate::db::Backend::Postgres {
        "NUMERIC(12,2)"
    } else {
        "TEXT"
    };
    let ts = if db.backend() == crate::db::Backend::Postgres {
        "TIMESTAMPTZ"
    } else {
        "TEXT"
    };
    let id = if name == "demo_items" && db.backend() == crate::db::Backend::Postgres {
        "BIGSERIAL PRIMARY KEY"
    } else if name == "demo_items" {
        "INTEGER PRIMARY KEY AUTOINCREMENT"
    } else {
        "BIGINT PRIMARY KEY"
    };
    format!(
        "DROP TABLE IF EXISTS {name}; CREATE TABLE {name} (id {id}, name TEXT NOT NULL, price {num} NOT NULL, \
         stock INTEGER NOT NULL, note TEXT, cqrs_revision INTEGER NOT NULL DEFAULT 0, cqrs_updated {ts} NOT NULL DEFAULT '2000-01-01 00:00:00+00:00')"
    )
}

/// Run the demo; `progress` gets one-line status updates.
pub fn run(opts: &Options, progress: &mut dyn FnMut(&str)) -> Result<Summary> {
    std::fs::create_dir_all(&opts.dir).map_err(|e| {
        crate::Error::new(crate::ErrorKind::Io, format!("{}: {e}", opts.dir.display()))
    })?;
    let file = |name: &str| format!("sqlite://{}", opts.dir.join(name).display());
    let master_url = opts
        .database_url
        .clone()
        .unwrap_or_else(|| file("master.db"));
    let replica_url = opts
        .database_url
        .clone()
        .unwrap_or_else(|| file("replica.db"));
    let broker_url = opts.broker_url.clone().unwrap_or_else(|| file("queue.db"));
    let settings = Settings {
        broker_url: Some(broker_url.clone()),
        queue: Some(opts.queue.clone()),
        exchange: opts.exchange.clone(),
        service_name: "cqrs-demo".into(),
        batch_size: 500,
        ..Settings::default()
    };

    let mut master = Db::connect(&master_url)?;
    master.migrate()?;
    let ddl_master = ddl(&master, "demo_items");
    master.batch_execute(&ddl_master)?;
    master.batch_execute("DELETE FROM cqrs_outbox")?;
    let mut replica = Db::connect(&replica_url)?;
    replica.migrate()?;
    let ddl_replica = ddl(&replica, "demo_replica_items");
    replica.batch_execute(&ddl_replica)?;
    replica.execute(
        &format!(
            "DELETE FROM cqrs_tombstones WHERE cqrs_id = {}",
            if replica.backend() == crate::db::Backend::Postgres {
                "$1"
            } else {
                "?"
            }
        ),
        vec![SqlValue::Text("demo_item".into())],
    )?;
    LATENCIES.lock().unwrap_or_else(|p| p.into_inner()).clear();

    let hooks = ReplicaHooks {
        after_apply: Some(record_latency),
        retry: None,
    };
    let registry = Registry::new()
        .with_master(DemoItem::master_spec())
        .with_replica(
            crate::apply::TableReplica::new(table("demo_item", "demo_replica_items"))
                .with_hooks(hooks),
        );
    let broker = Broker::connect(&settings, "demo")?;
    broker.declare_replica(
        &opts.queue,
        &["demo_item".to_string()],
        &settings.retry_delays,
    )?;
    if let Broker::Local(t) = &broker {
        // A fresh run: nothing left over from an earlier one.
        let mut q = Db::connect(&broker_url)?;
        q.batch_execute("DELETE FROM cqrs_local_messages")?;
        let _ = t;
    }

    let shutdown = Shutdown::new();
    let started = Instant::now();
    let rows = opts.rows.max(10);
    let result = std::thread::scope(|s| -> Result<(usize, usize)> {
        let relay_handle = s.spawn(|| -> Result<usize> {
            let mut relay = Relay::new(
                Db::connect(&master_url)?,
                broker.publisher()?,
                settings.clone(),
            );
            relay.run(&shutdown)?;
            Ok(relay.stats().published)
        });
        let consumer_handle = s.spawn(|| -> Result<()> {
            let inbox = broker.inbox(&opts.queue, 1000, &settings.retry_delays)?;
            let mut c = crate::consumer::Consumer::new(
                &registry,
                &settings,
                Db::connect(&replica_url)?,
                inbox,
            );
            c.run(&shutdown)
        });
        let work = (|| -> Result<usize> {
            // Creates in transactions of 50, then updates, deletes and a directed sync.
            let mut ids: Vec<i64> = Vec::with_capacity(rows);
            let insert = if master.backend() == crate::db::Backend::Postgres {
                "INSERT INTO demo_items (name, price, stock) VALUES ($1, $2, $3) RETURNING CAST(id AS TEXT) AS j"
            } else {
                "INSERT INTO demo_items (name, price, stock) VALUES (?, ?, ?) RETURNING CAST(id AS TEXT) AS j"
            };
            for chunk in 0..rows.div_ceil(50) {
                let n = 50.min(rows - chunk * 50);
                let created = atomic(&mut master, |tx| {
                    let mut out = Vec::with_capacity(n);
                    for i in 0..n {
                        let k = chunk * 50 + i;
                        let price = SqlValue::Numeric(
                            format!("{}.{:02}", 1 + k % 97, k % 100)
                                .parse()
                                .expect("a decimal"),
                        );
                        let id = tx.create::<DemoItem, i64, crate::Error>(|c| {
                            let row = c.load_text(
                                insert,
                                vec![
                                    SqlValue::Text(format!("item {k}")),
                                    price,
                                    SqlValue::Integer((k % 17) as i32),
                                ],
                            )?;
                            Ok(row[0].parse().expect("an id"))
                        })?;
                        out.push(id);
                    }
                    Ok(out)
                })?;
                ids.extend(created);
                if chunk % 10 == 0 {
                    progress(&format!("created {} of {rows} rows", ids.len()));
                }
            }
            let update = if master.backend() == crate::db::Backend::Postgres {
                "UPDATE demo_items SET stock = stock + 1, price = price + 1 WHERE id = $1"
            } else {
                "UPDATE demo_items SET stock = stock + 1, price = CAST(price AS REAL) + 1 WHERE id = ?"
            };
            for (i, id) in ids.iter().enumerate().filter(|(i, _)| i % 2 == 0) {
                atomic(&mut master, |tx| {
                    tx.update::<DemoItem, usize, crate::Error>(id, |c| {
                        c.exec(update, vec![SqlValue::BigInt(*id)])
                    })
                })?;
                if i % 500 == 0 {
                    progress(&format!("updated {} rows", i / 2));
                }
            }
            let doomed: Vec<i64> = ids.iter().copied().filter(|id| id % 10 == 3).collect();
            atomic(&mut master, |tx| tx.delete_many::<DemoItem>(&doomed))?;
            progress(&format!("deleted {} rows", doomed.len()));
            atomic(&mut master, |tx| {
                for id in ids.iter().filter(|id| *id % 10 != 3).take(5) {
                    tx.sync::<DemoItem>(id, Some(&opts.queue))?;
                }
                Ok(())
            })?;
            Ok(rows + rows.div_ceil(2) + doomed.len() + 5)
        })();
        let messages = match work {
            Ok(m) => m,
            Err(e) => {
                shutdown.trigger();
                return Err(e);
            }
        };
        // Converged when the outbox is empty and the replica holds the master's revisions.
        let deadline = Instant::now() + Duration::from_secs(300);
        let converged = loop {
            let pending = crate::outbox::pending(&mut master)?;
            if pending == 0 && drift(&mut master, &mut replica, &registry, &opts.queue)? == 0 {
                break true;
            }
            if Instant::now() > deadline {
                break false;
            }
            progress(&format!(
                "waiting for the replica: {pending} messages still in the outbox"
            ));
            std::thread::sleep(Duration::from_millis(100));
        };
        shutdown.trigger();
        let published = relay_handle
            .join()
            .map_err(|_| crate::Error::new(crate::ErrorKind::Database, "the relay panicked"))??;
        consumer_handle.join().map_err(|_| {
            crate::Error::new(crate::ErrorKind::Database, "the consumer panicked")
        })??;
        let _ = converged;
        Ok((messages.max(published), published))
    });
    let (messages, _) = result?;
    let elapsed = started.elapsed();
    let drift = drift(&mut master, &mut replica, &registry, &opts.queue)?;
    let count = |db: &mut Db, t: &str| -> Result<usize> {
        Ok(db.load_text(
            &format!("SELECT CAST(count(*) AS TEXT) AS j FROM {t}"),
            vec![],
        )?[0]
            .parse()
            .unwrap_or(0))
    };
    let mut lat = LATENCIES.lock().unwrap_or_else(|p| p.into_inner()).clone();
    lat.sort_unstable();
    let pct = |p: f64| {
        lat.get(((lat.len() as f64 * p) as usize).min(lat.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0)
            .max(0) as u64
    };
    Ok(Summary {
        master_rows: count(&mut master, "demo_items")?,
        replica_rows: count(&mut replica, "demo_replica_items")?,
        drift,
        messages,
        elapsed,
        p50: Duration::from_micros(pct(0.50)),
        p99: Duration::from_micros(pct(0.99)),
        urls: (
            crate::db::redact(&master_url),
            crate::db::redact(&replica_url),
            crate::db::redact(&broker_url),
        ),
    })
}

/// Rows the diff pipeline (differing or missing revisions) and the deleted-rows pipeline (rows
/// the master no longer has) report, run through the library with in-memory pipes.
pub fn drift(master: &mut Db, replica: &mut Db, registry: &Registry, queue: &str) -> Result<usize> {
    let spec = registry
        .master_for("demo_item")
        .expect("registered")
        .clone();
    let mut stage1 = Vec::new();
    diff::diff_master(master, &spec, None, 5_000, &mut stage1)?;
    let mut stage2 = Vec::new();
    let differ = diff::diff_replica(
        replica,
        registry,
        queue,
        &mut stage1.as_slice(),
        &mut stage2,
    )?;
    let mut d1 = Vec::new();
    diff::deleted_diff_replica(replica, registry, "demo_item", 5_000, &mut d1)?;
    let gone = diff::deleted_diff_master(master, registry, &mut d1.as_slice(), &mut Vec::new())?;
    Ok(differ + gone)
}
