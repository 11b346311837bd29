//! The master's application: a seeded random stream of captured transactions (creates, updates,
//! deletes, broadcast syncs; one to several changes each) at a steady pace, riding out every
//! fault: a transaction that fails is counted and the writer reconnects.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use cqrs::db::{Db, SqlConn};
use cqrs::value::SqlValue;
use cqrs::{Error, atomic};

use cqrs_tests::items::{MASTER_TABLE, SoakItem, statements};
use cqrs_tests::rng::Rng;

/// What the writer did, read by the report while it runs.
#[derive(Debug, Default)]
pub struct Written {
    /// Transactions committed.
    pub transactions: AtomicU64,
    /// Row changes in committed transactions (creates, updates, deletes, syncs).
    pub changes: AtomicU64,
    pub creates: AtomicU64,
    pub updates: AtomicU64,
    pub deletes: AtomicU64,
    pub syncs: AtomicU64,
    /// Transactions that failed (refused, or cut off with an unknown outcome).
    pub failed: AtomicU64,
}

/// One planned change.
enum Change {
    Create {
        name: String,
        value: i64,
        note: Option<String>,
    },
    Update {
        id: i64,
        name: String,
        delta: i64,
        note: Option<String>,
    },
    Delete(i64),
    Sync(i64),
}

/// Write until `stop`, `rate` transactions per second at most.
pub fn run(url: &str, seed: u64, rate: f64, stop: &AtomicBool, written: &Written) {
    let mut rng = Rng::new(seed);
    let pace = Duration::from_secs_f64(1.0 / rate.max(1.0));
    let mut db: Option<Db> = None;
    let mut live: Vec<i64> = Vec::new();
    let mut stale = true;
    let mut serial = 0u64;
    while !stop.load(Ordering::SeqCst) {
        let started = Instant::now();
        let conn = match db.as_mut() {
            Some(c) => c,
            None => match Db::connect(url) {
                Ok(c) => db.insert(c),
                Err(_) => {
                    std::thread::sleep(Duration::from_millis(200));
                    continue;
                }
            },
        };
        if stale {
            // After a failure the outcome is unknown: the master's table says which rows exist.
            match live_ids(conn) {
                Ok(ids) => {
                    live = ids;
                    stale = false;
                }
                Err(_) => {
                    db = None;
                    continue;
                }
            }
        }
        let plan = plan(&mut rng, &live, &mut serial);
        match apply(conn, &plan) {
            Ok(created) => {
                count(written, &plan);
                for change in &plan {
                    if let Change::Delete(id) = change {
                        live.retain(|l| l != id);
                    }
                }
                live.extend(created);
            }
            Err(_) => {
                written.failed.fetch_add(1, Ordering::Relaxed);
                db = None;
                stale = true;
            }
        }
        if let Some(rest) = pace.checked_sub(started.elapsed()) {
            std::thread::sleep(rest);
        }
    }
}

fn live_ids(db: &mut Db) -> cqrs::Result<Vec<i64>> {
    Ok(db
        .load_text(
            &format!("SELECT CAST(id AS TEXT) AS j FROM {MASTER_TABLE}"),
            vec![],
        )?
        .iter()
        .filter_map(|t| t.parse().ok())
        .collect())
}

/// One transaction's changes: mostly one, sometimes a burst of up to 20; each key at most once.
fn plan(rng: &mut Rng, live: &[i64], serial: &mut u64) -> Vec<Change> {
    let n = if rng.chance(0.1) {
        2 + rng.below(19) as usize
    } else {
        1
    };
    let mut used: Vec<i64> = Vec::new();
    let mut pick = |rng: &mut Rng| -> Option<i64> {
        if live.is_empty() {
            return None;
        }
        let id = live[rng.below(live.len() as u64) as usize];
        (!used.contains(&id)).then(|| {
            used.push(id);
            id
        })
    };
    let mut changes = Vec::with_capacity(n);
    for _ in 0..n {
        *serial += 1;
        let note = rng.chance(0.3).then(|| format!("note {serial} ✓"));
        let roll = rng.below(100);
        let change = if roll < 35 || live.len() < 20 {
            Some(Change::Create {
                name: format!("item {serial}"),
                value: rng.below(1_000_000) as i64,
                note,
            })
        } else if roll < 80 {
            pick(rng).map(|id| Change::Update {
                id,
                name: format!("renamed {serial}"),
                delta: rng.below(100) as i64 + 1,
                note,
            })
        } else if roll < 92 {
            pick(rng).map(Change::Delete)
        } else {
            pick(rng).map(Change::Sync)
        };
        changes.extend(change);
    }
    changes
}

/// Run the changes in one captured transaction; the keys created.
fn apply(db: &mut Db, plan: &[Change]) -> cqrs::Result<Vec<i64>> {
    let (insert, update) = statements(db.backend());
    let text = |s: &Option<String>| {
        s.clone().map_or(
            SqlValue::Null(cqrs::value::ColumnType::Text),
            SqlValue::Text,
        )
    };
    atomic(db, |tx| {
        let mut created = Vec::new();
        for change in plan {
            match change {
                Change::Create { name, value, note } => {
                    let id = tx.create_with::<SoakItem, i64, Error>(|c| {
                        let row = c.load_text(
                            insert,
                            vec![
                                SqlValue::Text(name.clone()),
                                SqlValue::BigInt(*value),
                                text(note),
                            ],
                        )?;
                        Ok(row[0].parse().expect("an id"))
                    })?;
                    created.push(id);
                }
                Change::Update {
                    id,
                    name,
                    delta,
                    note,
                } => {
                    tx.update_with::<SoakItem, usize, Error>(id, |c| {
                        c.exec(
                            update,
                            vec![
                                SqlValue::Text(name.clone()),
                                SqlValue::BigInt(*delta),
                                text(note),
                                SqlValue::BigInt(*id),
                            ],
                        )
                    })?;
                }
                Change::Delete(id) => {
                    tx.delete_key::<SoakItem>(id)?;
                }
                Change::Sync(id) => tx.sync::<SoakItem>(id, None)?,
            }
        }
        Ok(created)
    })
}

fn count(written: &Written, plan: &[Change]) {
    written.transactions.fetch_add(1, Ordering::Relaxed);
    written
        .changes
        .fetch_add(plan.len() as u64, Ordering::Relaxed);
    for change in plan {
        let counter = match change {
            Change::Create { .. } => &written.creates,
            Change::Update { .. } => &written.updates,
            Change::Delete(_) => &written.deletes,
            Change::Sync(_) => &written.syncs,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}
