//! Stage 2: The transactional outbox: the only code that writes, claims, releases and deletes
//! `cqrs_outbox` rows (ARCHITECTURE.md §7).
//!
//! Capture writes rows in the application's transaction; a relay claims a batch by setting a lease
//! (`FOR UPDATE SKIP LOCKED` on PostgreSQL so relays never wait on each other), publishes, then
//! deletes what the broker confirmed and releases the rest with a delay. A relay that dies leaves
//! leases that expire, so its rows are published again: at least once, never lost.

use std::sync::{Condvar, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Deserialize;

use crate::db::prepared::Statement;
use crate::db::{Backend, Db, SqlConn, typed};
use crate::error::{Error, ErrorKind, Result};
use crate::message::SignalType;
use crate::value::{ColumnType, SqlValue};

/// A message to write to the outbox.
#[derive(Debug, Clone, PartialEq)]
pub struct NewRow {
    /// Sent as the AMQP `message_id`.
    pub message_id: uuid::Uuid,
    /// Model.
    pub cqrs_id: String,
    /// SAVE, DELETE, SYNC.
    pub signal_type: SignalType,
    /// Canonical JSON of the key.
    pub pk: String,
    /// Routing key.
    pub routing_key: String,
    /// The encoded body; the relay sets `expires` and `retries` when it publishes.
    pub body: String,
}

/// A claimed outbox row.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Claimed {
    /// Claim order.
    pub id: i64,
    /// The AMQP `message_id`.
    pub message_id: String,
    /// Model.
    pub cqrs_id: String,
    /// SAVE, DELETE, SYNC.
    pub signal_type: String,
    /// Routing key.
    pub routing_key: String,
    /// Body as captured.
    pub body: String,
    /// Publish attempts including this one.
    pub attempts: i32,
}

/// Insert `rows` (several per statement, under the bind limit).
pub fn enqueue<C: SqlConn + ?Sized>(conn: &mut C, rows: &[NewRow]) -> Result<()> {
    insert(conn, rows, false).map(drop)
}

/// [`enqueue`], returning the rows' ids (for a command that waits for its own messages).
pub fn enqueue_returning<C: SqlConn + ?Sized>(conn: &mut C, rows: &[NewRow]) -> Result<Vec<i64>> {
    insert(conn, rows, true)
}

fn insert<C: SqlConn + ?Sized>(conn: &mut C, rows: &[NewRow], returning: bool) -> Result<Vec<i64>> {
    let backend = conn.backend();
    let mut ids = Vec::with_capacity(if returning { rows.len() } else { 0 });
    for chunk in rows.chunks(backend.bind_limit() / 6) {
        let mut sql = String::from(
            "INSERT INTO cqrs_outbox (message_id, cqrs_id, signal_type, pk, routing_key, body) VALUES ",
        );
        let mut binds = Vec::with_capacity(chunk.len() * 6);
        let mut n = 0;
        for (i, r) in chunk.iter().enumerate() {
            if i > 0 {
                sql.push(',');
            }
            backend.placeholder_list(&mut sql, &mut n, 6);
            binds.extend([
                SqlValue::Uuid(r.message_id),
                SqlValue::Text(r.cqrs_id.clone()),
                SqlValue::Text(r.signal_type.as_str().into()),
                SqlValue::Text(r.pk.clone()),
                SqlValue::Text(r.routing_key.clone()),
                SqlValue::Text(r.body.clone()),
            ]);
        }
        if !returning {
            conn.exec(&sql, binds)
                .map_err(|e| e.context("writing the outbox"))?;
            continue;
        }
        sql.push_str(" RETURNING CAST(id AS TEXT) AS j");
        for id in conn
            .load_text(&sql, binds)
            .map_err(|e| e.context("writing the outbox"))?
        {
            ids.push(
                id.parse().map_err(|e| {
                    Error::new(ErrorKind::Database, format!("outbox id {id:?}: {e}"))
                })?,
            );
        }
    }
    Ok(ids)
}

/// Lease up to `limit` available rows for `lease`, oldest first.
pub fn claim<C: SqlConn + ?Sized>(
    conn: &mut C,
    limit: usize,
    lease: Duration,
    now: DateTime<Utc>,
) -> Result<Vec<Claimed>> {
    let backend = conn.backend();
    let until = now + chrono::Duration::from_std(lease).unwrap_or(chrono::Duration::seconds(60));
    // Placeholders in text order (SQLite binds by position): lease, then the available rows'.
    let mut lease_at = String::new();
    backend.placeholder(1, &mut lease_at);
    let sql = format!(
        "UPDATE cqrs_outbox SET leased_until = {lease_at}, attempts = attempts + 1 WHERE {} RETURNING {}",
        backend.in_subquery("id", &available(backend, 2)),
        claimed_json(backend, "attempts"),
    );
    let mut binds = vec![SqlValue::Timestamptz(until)];
    binds.extend(available_binds(limit, now));
    load_claimed(conn, &sql, binds, "claiming outbox rows")
}

/// Delete up to `limit` available rows, oldest first, and return them: the caller keeps the
/// transaction open until the broker has confirmed them and then commits, or rolls back to give
/// them back. Cheaper than [`claim`] and [`delete`] (one write per row instead of two, one commit
/// instead of two), and a relay that dies gives its rows back at once, when its session ends.
/// PostgreSQL only in practice: on SQLite the open transaction would hold the database's one
/// write lock for as long as the broker takes.
pub fn take(db: &mut Db, limit: usize, now: DateTime<Utc>) -> Result<Vec<Claimed>> {
    let backend = db.backend();
    let rows = |returning: &str| {
        format!(
            "DELETE FROM cqrs_outbox WHERE {} RETURNING {returning}",
            backend.in_subquery("id", &available(backend, 1)),
        )
    };
    // Counted as if claimed: what a row that comes back says it has been through.
    let attempts = "attempts + 1";
    let Db::Pg(conn) = db else {
        let sql = rows(&claimed_json(backend, attempts));
        return load_claimed(db, &sql, available_binds(limit, now), "taking outbox rows");
    };
    // Binary columns rather than a JSON object per row: building and parsing those (each body
    // escaped inside one) cost twice the delete itself.
    let sql = rows(&format!(
        "id, CAST(message_id AS TEXT), cqrs_id, signal_type, routing_key, body, {attempts}"
    ));
    use ColumnType as T;
    let types = [
        T::BigInt,
        T::Text,
        T::Text,
        T::Text,
        T::Text,
        T::Text,
        T::Integer,
    ];
    // Prepared: planning this statement cost PostgreSQL more than running it on a short outbox
    // (about 0.2 ms a claim, paid on every commit's way to the broker).
    let statement = Statement::numbered(&sql, available_binds(limit, now))?;
    let mut rows = typed::load_prepared(conn, &statement, &types)
        .map_err(|e| e.context("taking outbox rows"))?
        .into_iter()
        .map(|row| match <[SqlValue; 7]>::try_from(row) {
            Ok(
                [
                    SqlValue::BigInt(id),
                    SqlValue::Text(message_id),
                    SqlValue::Text(cqrs_id),
                    SqlValue::Text(signal_type),
                    SqlValue::Text(routing_key),
                    SqlValue::Text(body),
                    SqlValue::Integer(attempts),
                ],
            ) => Ok(Claimed {
                id,
                message_id,
                cqrs_id,
                signal_type,
                routing_key,
                body,
                attempts,
            }),
            Ok(other) => Err(Error::new(
                ErrorKind::Database,
                format!("outbox row with a NULL or mistyped column: {other:?}"),
            )),
            Err(row) => Err(Error::new(
                ErrorKind::Database,
                format!("outbox row of {} columns", row.len()),
            )),
        })
        .collect::<Result<Vec<_>>>()?;
    rows.sort_by_key(|r| r.id);
    Ok(rows)
}

/// The ids of up to `limit` rows available at `now`, oldest first, skipping rows another relay
/// holds; its placeholders are `first` (now), `first + 1` (now), `first + 2` (limit).
fn available(backend: Backend, first: usize) -> String {
    let p: Vec<String> = (first..first + 3)
        .map(|n| {
            let mut s = String::new();
            backend.placeholder(n, &mut s);
            s
        })
        .collect();
    format!(
        "SELECT id FROM cqrs_outbox WHERE available_at <= {} AND (leased_until IS NULL OR leased_until < {}) \
         ORDER BY id LIMIT {}{}",
        p[0],
        p[1],
        p[2],
        backend.skip_locked(),
    )
}

fn available_binds(limit: usize, now: DateTime<Utc>) -> Vec<SqlValue> {
    vec![
        SqlValue::Timestamptz(now),
        SqlValue::Timestamptz(now),
        SqlValue::BigInt(limit as i64),
    ]
}

/// The JSON object of a [`Claimed`] row, its `attempts` given by the expression `attempts`.
fn claimed_json(backend: Backend, attempts: &str) -> String {
    let mut pairs: Vec<String> = [
        "id",
        "message_id",
        "cqrs_id",
        "signal_type",
        "routing_key",
        "body",
    ]
    .iter()
    .map(|f| format!("'{f}', {f}"))
    .collect();
    pairs.push(format!("'attempts', {attempts}"));
    backend.json_object(&pairs)
}

fn load_claimed<C: SqlConn + ?Sized>(
    conn: &mut C,
    sql: &str,
    binds: Vec<SqlValue>,
    what: &str,
) -> Result<Vec<Claimed>> {
    let mut rows: Vec<Claimed> = conn
        .load_text(sql, binds)
        .map_err(|e| e.context(what))?
        .iter()
        .map(|j| {
            serde_json::from_str(j)
                .map_err(|e| Error::new(ErrorKind::Database, format!("outbox row: {e}")))
        })
        .collect::<Result<_>>()?;
    rows.sort_by_key(|r| r.id);
    Ok(rows)
}

/// ` = ANY(..)` / ` IN (..)` of outbox ids, placeholders from `first`.
fn id_list(backend: Backend, ids: &[i64], first: usize, sql: &mut String) -> Result<Vec<SqlValue>> {
    let ids: Vec<SqlValue> = ids.iter().map(|i| SqlValue::BigInt(*i)).collect();
    backend.member_of(sql, &mut (first - 1), ColumnType::BigInt, &ids)
}

/// ` = ANY(..)` / ` IN (..)` of the outbox ids among `ids` that no other transaction holds
/// (PostgreSQL skips locked rows), placeholders from `first`. A batch given back by a relay can be
/// taken by another relay's held transaction before this relay deletes or releases its rows: that
/// relay settles them, and waiting for it could stall both relays until one's session times out
/// (each waiting on the other's batch).
fn unlocked_ids(
    backend: Backend,
    ids: &[i64],
    first: usize,
    sql: &mut String,
) -> Result<Vec<SqlValue>> {
    let mut select = String::from("SELECT id FROM cqrs_outbox WHERE id");
    let binds = id_list(backend, ids, first, &mut select)?;
    select.push_str(backend.skip_locked());
    sql.push(' ');
    sql.push_str(&backend.in_subquery("id", &select));
    Ok(binds)
}

/// Delete rows the broker confirmed (or that nobody listens to), but for those another relay
/// holds now (it publishes them again, at least once).
pub fn delete<C: SqlConn + ?Sized>(conn: &mut C, ids: &[i64]) -> Result<usize> {
    let backend = conn.backend();
    let mut deleted = 0;
    for chunk in ids.chunks(backend.bind_limit()) {
        let mut sql = String::from("DELETE FROM cqrs_outbox WHERE");
        let binds = unlocked_ids(backend, chunk, 1, &mut sql)?;
        deleted += conn
            .exec(&sql, binds)
            .map_err(|e| e.context("deleting published outbox rows"))?;
    }
    Ok(deleted)
}

/// Give rows back after a failed publish; they become available again at `retry_at` (rows another
/// relay holds now are its to settle).
pub fn release<C: SqlConn + ?Sized>(
    conn: &mut C,
    ids: &[i64],
    retry_at: DateTime<Utc>,
) -> Result<()> {
    let backend = conn.backend();
    for chunk in ids.chunks(backend.bind_limit() - 1) {
        let mut sql = String::from("UPDATE cqrs_outbox SET leased_until = NULL, available_at = ");
        backend.placeholder(1, &mut sql);
        sql.push_str(" WHERE");
        let mut binds = vec![SqlValue::Timestamptz(retry_at)];
        binds.extend(unlocked_ids(backend, chunk, 2, &mut sql)?);
        conn.exec(&sql, binds)
            .map_err(|e| e.context("releasing outbox rows"))?;
    }
    Ok(())
}

/// Rows waiting in the outbox.
pub fn pending<C: SqlConn + ?Sized>(conn: &mut C) -> Result<usize> {
    let rows = conn.load_text(
        "SELECT CAST(count(*) AS TEXT) AS j FROM cqrs_outbox",
        vec![],
    )?;
    Ok(rows.first().and_then(|n| n.parse().ok()).unwrap_or(0))
}

/// The backlog of one model (`cqrs outbox status`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Backlog {
    /// The model.
    pub cqrs_id: String,
    /// Rows waiting to be published.
    pub pending: u64,
    /// Of those, rows a relay holds a lease on now (being published, or held by a relay that
    /// died until the lease runs out).
    pub leased: u64,
    /// Seconds since the oldest row was written.
    pub oldest_age_seconds: f64,
}

/// The outbox's backlog per model, by `cqrs_id`.
pub fn status<C: SqlConn + ?Sized>(conn: &mut C) -> Result<Vec<Backlog>> {
    let backend = conn.backend();
    let pairs = [
        "'cqrs_id', cqrs_id".to_string(),
        "'pending', count(*)".to_string(),
        format!(
            "'leased', sum(CASE WHEN leased_until IS NOT NULL AND {} < 0 THEN 1 ELSE 0 END)",
            backend.age_seconds("leased_until")
        ),
        format!(
            "'oldest_age_seconds', max({})",
            backend.age_seconds("created_at")
        ),
    ];
    let sql = format!(
        "SELECT {} FROM cqrs_outbox GROUP BY cqrs_id ORDER BY cqrs_id",
        backend.json_object(&pairs)
    );
    conn.load_text(&sql, vec![])?
        .iter()
        .map(|row| {
            serde_json::from_str(row).map_err(|e| {
                Error::new(
                    ErrorKind::Database,
                    format!("reading the outbox status {row}: {e}"),
                )
            })
        })
        .collect()
}

/// Rows among `ids` still in the outbox (not yet confirmed by the broker).
pub fn pending_of<C: SqlConn + ?Sized>(conn: &mut C, ids: &[i64]) -> Result<usize> {
    let backend = conn.backend();
    let mut left = 0;
    for chunk in ids.chunks(backend.bind_limit()) {
        let mut sql = String::from("SELECT CAST(count(*) AS TEXT) AS j FROM cqrs_outbox WHERE id");
        let binds = id_list(backend, chunk, 1, &mut sql)?;
        left += conn
            .load_text(&sql, binds)?
            .first()
            .and_then(|n| n.parse::<usize>().ok())
            .unwrap_or(0);
    }
    Ok(left)
}

/// The channel every insert into the PostgreSQL outbox notifies at commit (a statement trigger,
/// migration `cqrs_outbox_notify`): relays in other processes listen on it.
pub const CHANNEL: &str = "cqrs_outbox";

/// Wakes an in-process relay after a capture transaction committed rows.
///
/// A counter under a mutex: a relay remembers the value it last saw and sleeps until it changes
/// or its poll interval passes, so a wake-up between two polls is never missed.
#[derive(Debug, Default)]
pub struct Wakeup {
    generation: Mutex<u64>,
    cv: Condvar,
}

impl Wakeup {
    /// Signal that rows were committed.
    pub fn notify(&self) {
        *self.generation.lock().unwrap_or_else(|p| p.into_inner()) += 1;
        self.cv.notify_all();
    }

    /// The current generation.
    pub fn generation(&self) -> u64 {
        *self.generation.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Wait until the generation moves past `seen` or `timeout` passes; returns the generation.
    pub fn wait(&self, seen: u64, timeout: Duration) -> u64 {
        let g = self.generation.lock().unwrap_or_else(|p| p.into_inner());
        *self
            .cv
            .wait_timeout_while(g, timeout, |g| *g == seen)
            .unwrap_or_else(|p| p.into_inner())
            .0
    }
}

/// The process-wide wake-up capture signals after commit and an in-process relay waits on.
pub fn wakeup() -> &'static Wakeup {
    static WAKEUP: std::sync::OnceLock<Wakeup> = std::sync::OnceLock::new();
    WAKEUP.get_or_init(Wakeup::default)
}
