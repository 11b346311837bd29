//! Seeded random histories of statements on a trigger-captured table (plain SQL, from one
//! session or two interleaved) and on an atomic-captured one (the Diesel statements on `tx`):
//! inserts, upserts, updates by key, by filter and with nothing to change, deletes by key and by
//! filter, writable CTEs deleting and inserting a key, savepoints rolled back and released (ours
//! and the application's own), optimistic locking, with the application's own write-back
//! triggers present or not. After every transaction the outbox is relayed to a replica, which
//! must equal the master row for row (values, revisions, `cqrs_updated`).

use cqrs::atomic;
use cqrs_tests::rng::Rng;
use diesel::prelude::*;

use super::capture_edges::{pg, write_back_triggers};
use super::triggers::{Replica, a_items, master_db};

const SEEDS: u64 = 8;
const TRANSACTIONS: usize = 20;
const KEYS: u64 = 6;

/// A key of the session's parity (`None`: any), so two interleaved sessions never wait on each
/// other's row locks.
fn key(rng: &mut Rng, parity: Option<u64>) -> u64 {
    match parity {
        None => 1 + rng.below(2 * KEYS),
        Some(p) => 2 + 2 * rng.below(KEYS) + p,
    }
}

fn own(parity: Option<u64>) -> String {
    parity.map_or_else(String::new, |p| format!(" AND id % 2 = {p}"))
}

/// One SQL statement on `t_items`.
fn statement(rng: &mut Rng, parity: Option<u64>, nested: bool) -> String {
    let (k, v, r) = (key(rng, parity), rng.below(100), rng.below(1000));
    match rng.below(if nested { 9 } else { 10 }) {
        0 => format!(
            "INSERT INTO t_items (id, name, value) VALUES ({k}, 'N{r}', {v}), ({}, 'M{r}', {v}) ON CONFLICT (id) DO NOTHING",
            key(rng, parity)
        ),
        1 => format!(
            "INSERT INTO t_items (id, name, value, ratio) VALUES ({k}, 'U{r}', {v}, {v} * 0.1) \
             ON CONFLICT (id) DO UPDATE SET value = EXCLUDED.value, ratio = EXCLUDED.ratio"
        ),
        2 => format!("UPDATE t_items SET value = {v}, ratio = {v} * 0.1 WHERE id = {k}"),
        3 => format!(
            "UPDATE t_items SET name = 'F{r}' WHERE value < {v}{}",
            own(parity)
        ),
        4 => format!("UPDATE t_items SET name = name WHERE id = {k}"),
        5 => format!("DELETE FROM t_items WHERE id = {k}"),
        6 => format!(
            "DELETE FROM t_items WHERE value > {}{}",
            50 + v,
            own(parity)
        ),
        7 => format!(
            "WITH d AS (DELETE FROM t_items WHERE id = {k} RETURNING id) \
             INSERT INTO t_items (id, name, value) SELECT id, 'R{r}', {v} FROM d"
        ),
        8 => format!(
            "UPDATE t_items SET value = value + 1 WHERE id IN ({k}, {})",
            key(rng, parity)
        ),
        _ => format!(
            "SAVEPOINT s; {}; {} s",
            statement(rng, parity, true),
            if rng.chance(0.5) {
                "ROLLBACK TO SAVEPOINT"
            } else {
                "RELEASE SAVEPOINT"
            }
        ),
    }
}

#[test]
fn random_sql_on_a_trigger_captured_table_replicates_after_every_transaction() {
    for seed in 0..SEEDS {
        let t = master_db();
        let replica = Replica::new();
        let mut rng = Rng::new(seed);
        if seed % 2 == 1 {
            write_back_triggers(&mut t.connect(), "t_items");
        }
        let (mut a, mut b) = (t.connect(), t.connect());
        for n in 0..TRANSACTIONS {
            let mut log = Vec::new();
            if rng.chance(0.3) {
                // Two sessions, statements interleaved, commits in either order.
                a.batch_execute("BEGIN").unwrap();
                b.batch_execute("BEGIN").unwrap();
                for _ in 0..1 + rng.below(4) {
                    let (session, parity) = if rng.chance(0.5) {
                        (&mut a, 0)
                    } else {
                        (&mut b, 1)
                    };
                    let sql = statement(&mut rng, Some(parity), false);
                    session
                        .batch_execute(&sql)
                        .unwrap_or_else(|e| panic!("seed {seed}: {sql}: {e}"));
                    log.push(format!("[{parity}] {sql}"));
                }
                let (first, second) = if rng.chance(0.5) {
                    (&mut a, &mut b)
                } else {
                    (&mut b, &mut a)
                };
                first.batch_execute("COMMIT").unwrap();
                second.batch_execute("COMMIT").unwrap();
            } else {
                let sql: Vec<String> = (0..1 + rng.below(4))
                    .map(|_| statement(&mut rng, None, false))
                    .collect();
                let tx = format!("BEGIN; {}; COMMIT;", sql.join("; "));
                a.batch_execute(&tx)
                    .unwrap_or_else(|e| panic!("seed {seed}: {tx}: {e}"));
                log.extend(sql);
            }
            replica.follow(&t);
            assert_eq!(
                replica.read_copy(),
                replica.read(&t, "t_items"),
                "seed {seed}, transaction {n}: {log:#?}"
            );
        }
    }
}

/// One step of an atomic transaction on `a_items`, through the Diesel statements on `tx`;
/// returns what it did, for the failure message.
fn step(
    tx: &mut cqrs::Tx<'_, diesel::PgConnection>,
    rng: &mut Rng,
    depth: u32,
) -> cqrs::Result<String> {
    let (k, v, r) = (
        key(rng, None) as i64,
        rng.below(100) as i64,
        rng.below(1000),
    );
    let choice = rng.below(if depth > 1 { 6 } else { 8 });
    Ok(match choice {
        0 => {
            let exists: Option<i64> = a_items::table
                .find(k)
                .select(a_items::id)
                .first(tx.conn())
                .optional()?;
            if exists.is_some() {
                tx.update(a_items::table.find(k))
                    .set(a_items::value.eq(v))
                    .execute()?;
                format!("update {k} (exists)")
            } else {
                tx.insert_into(a_items::table)
                    .values((
                        a_items::id.eq(k),
                        a_items::name.eq(format!("N{r}")),
                        a_items::value.eq(v),
                        a_items::secret.eq(""),
                    ))
                    .execute()?;
                format!("insert {k}")
            }
        }
        1 => {
            tx.update(a_items::table.find(k))
                .set((a_items::value.eq(v), a_items::ratio.eq(v as f64 * 0.1)))
                .execute()?;
            format!("update {k}")
        }
        2 => {
            let n = tx
                .update(a_items::table.filter(a_items::value.lt(v)))
                .set(a_items::name.eq(format!("F{r}")))
                .execute()?;
            format!("update value < {v}: {n}")
        }
        3 => {
            tx.delete(a_items::table.find(k)).execute()?;
            format!("delete {k}")
        }
        4 => {
            let n = tx
                .delete(a_items::table.filter(a_items::value.gt(50 + v)))
                .execute()?;
            format!("delete value > {}: {n}", 50 + v)
        }
        5 => {
            // Optimistic locking, with the revision read now or a stale one.
            let rev: Option<i32> = a_items::table
                .find(k)
                .select(a_items::cqrs_revision)
                .first(tx.conn())
                .optional()?;
            let rev = rev.unwrap_or(0) - i32::from(rng.chance(0.3));
            let n = tx
                .update(
                    a_items::table
                        .find(k)
                        .filter(a_items::cqrs_revision.eq(rev)),
                )
                .set(a_items::value.eq(v))
                .execute()?;
            format!("update {k} at revision {rev}: {n}")
        }
        6 => {
            let keep = rng.chance(0.5);
            let mut inner = String::new();
            let _ = tx.savepoint(|tx| {
                inner = step(tx, rng, depth + 1)?;
                if keep {
                    Ok(())
                } else {
                    Err(cqrs::Error::config("rolled back"))
                }
            });
            format!("savepoint (kept: {keep}) {{ {inner} }}")
        }
        _ => {
            // The application's own savepoint around a nested atomic.
            let keep = rng.chance(0.5);
            let mut inner = String::new();
            let _ = tx.conn().transaction(|conn| {
                atomic(conn, |tx| {
                    inner = step(tx, rng, depth + 1)?;
                    Ok(())
                })
                .map_err(|_| diesel::result::Error::NotFound)?;
                if keep {
                    Ok(())
                } else {
                    Err(diesel::result::Error::RollbackTransaction)
                }
            });
            format!("conn.transaction (kept: {keep}) {{ {inner} }}")
        }
    })
}

#[test]
fn random_diesel_statements_on_an_atomic_table_replicate_after_every_transaction() {
    for seed in 0..SEEDS {
        let t = master_db();
        let replica = Replica::new();
        let mut rng = Rng::new(100 + seed);
        if seed % 2 == 1 {
            write_back_triggers(&mut t.connect(), "a_items");
        }
        let mut conn = pg(&t);
        for n in 0..TRANSACTIONS {
            let steps = atomic(&mut conn, |tx| {
                (0..1 + rng.below(4))
                    .map(|_| step(tx, &mut rng, 1))
                    .collect::<cqrs::Result<Vec<_>>>()
            })
            .unwrap_or_else(|e| panic!("seed {seed}, transaction {n}: {e}"));
            replica.follow(&t);
            assert_eq!(
                replica.read_copy(),
                replica.read(&t, "a_items"),
                "seed {seed}, transaction {n}: {steps:#?}"
            );
        }
    }
}
