//! Wake-ups across processes. PostgreSQL: `LISTEN` on a channel on a connection of its own (a
//! bare libpq one, `libpq.rs`, whose socket can be waited on), and ask whether a `NOTIFY`
//! arrived, without blocking or waiting on the socket up to a timeout. SQLite has no
//! notifications: a connection of its own asks `PRAGMA data_version`, which changes when any
//! other connection commits to the file (so a commit that wrote no outbox row wakes it too: one
//! claim that finds nothing); a caller that wants to wait checks in a short loop.
//!
//! On PostgreSQL the outbox's trigger notifies only while some listener has said it is idle (a row
//! in `cqrs_relay_idle`, migration `cqrs_relay_idle`): a NOTIFY serializes the commits of every
//! notifying writer, and a busy relay claims again without being told. [`Listener::announce_idle`]
//! closes the gap between a writer's check and its commit by waiting for the transactions writing
//! to the outbox when the row appeared.

use std::time::{Duration, Instant};

use super::libpq::RawPg;
use super::{Backend, parse_database_url, redact};
use crate::error::{Error, ErrorKind, Result};

/// A connection listening on one channel (PostgreSQL) or watching the file (SQLite).
pub struct Listener {
    source: Source,
}

enum Source {
    Pg(RawPg),
    Sqlite { db: super::Db, version: Option<i64> },
}

impl std::fmt::Debug for Listener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Listener")
    }
}

impl Listener {
    /// Listen on `channel` (an identifier: letters, digits, `_`) of the database at `url`; on
    /// SQLite, watch the file for other connections' commits (the channel is not used).
    pub fn listen(url: &str, channel: &str) -> Result<Listener> {
        let (backend, target) = parse_database_url(url)?;
        if backend == Backend::Sqlite {
            let mut db = super::Db::connect(url)?;
            let version = db.data_version()?;
            return Ok(Listener {
                source: Source::Sqlite { db, version },
            });
        }
        if channel.is_empty()
            || !channel
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            return Err(Error::config(format!("{channel:?} is not a channel name")));
        }
        let mut conn = RawPg::connect(&target).map_err(|e| {
            Error::new(
                ErrorKind::Transient,
                format!("database {}: {e}", redact(url)),
            )
        })?;
        conn.query(&format!("LISTEN {channel}"), &[])
            .map_err(|e| Error::new(ErrorKind::Database, format!("LISTEN: {e}")))?;
        // Rows of relays whose sessions are gone (killed while idle) would keep writers notifying.
        // Before the migration that made the table, there is nothing to clean.
        let _ = conn.query(
            "DELETE FROM cqrs_relay_idle WHERE pid NOT IN (SELECT pid FROM pg_stat_activity)",
            &[],
        );
        Ok(Listener {
            source: Source::Pg(conn),
        })
    }

    /// Say this listener is idle, so writers notify it: on PostgreSQL a row in `cqrs_relay_idle`
    /// keyed by this session, then a wait (up to `settle`) for the transactions writing to the
    /// outbox once the row is committed. A writer that checked for idle listeners before the row
    /// existed is one of those (a writer at REPEATABLE READ that writes the outbox only later
    /// checks with its older snapshot, and is found by the caller's next poll instead), so once
    /// they have ended a claim finds its rows; later writers see the row and notify. Returns whether they all ended within `settle` (if not, a commit among them
    /// may go unnoticed until the caller's next poll). On SQLite nothing is needed: `Ok(true)`.
    /// An error means the table is missing (an older schema, whose trigger notifies every
    /// commit) or the connection is gone.
    pub fn announce_idle(&mut self, settle: Duration) -> Result<bool> {
        let Source::Pg(conn) = &mut self.source else {
            return Ok(true);
        };
        let q = |e: String| {
            Error::new(
                ErrorKind::Database,
                format!("announcing an idle relay: {e}"),
            )
        };
        conn.query(
            "INSERT INTO cqrs_relay_idle (pid) VALUES (pg_backend_pid()) ON CONFLICT DO NOTHING",
            &[],
        )
        .map_err(q)?;
        // The transactions that could have checked before the row existed: those writing to the
        // outbox (the lock a write takes on its table is held to their end). Not readers, nor
        // autovacuum (which locks the busy outbox often, and for long), nor any other
        // transaction in the cluster, so none of those holds the relay up.
        let writing = conn
            .query(
                "SELECT DISTINCT virtualtransaction FROM pg_locks \
                 WHERE locktype = 'relation' AND relation = CAST('cqrs_outbox' AS regclass) \
                   AND mode = 'RowExclusiveLock' \
                   AND database = (SELECT oid FROM pg_database WHERE datname = current_database()) \
                   AND pid <> pg_backend_pid()",
                &[],
            )
            .map_err(q)?;
        if writing.is_empty() {
            return Ok(true);
        }
        let vxids = writing.into_iter().flatten().collect::<Vec<_>>().join(",");
        let deadline = Instant::now() + settle;
        loop {
            // A transaction holds the lock on its own virtual id until it ends.
            let left = conn
                .query(
                    "SELECT count(*) FROM pg_locks \
                     WHERE locktype = 'virtualxid' AND granted \
                       AND virtualxid = ANY(string_to_array($1, ','))",
                    &[&vxids],
                )
                .map_err(q)?;
            if left.first().is_none_or(|n| n.as_deref() == Some("0")) {
                return Ok(true);
            }
            if Instant::now() >= deadline {
                return Ok(false);
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Say this listener is busy again: writers stop notifying unless another listener is idle.
    pub fn announce_busy(&mut self) -> Result<()> {
        if let Source::Pg(conn) = &mut self.source {
            conn.query(
                "DELETE FROM cqrs_relay_idle WHERE pid = pg_backend_pid()",
                &[],
            )
            .map_err(|e| {
                Error::new(ErrorKind::Database, format!("announcing a busy relay: {e}"))
            })?;
        }
        Ok(())
    }

    /// Whether a notification arrived since the last call; consumes every one waiting. An error
    /// means the connection is gone (listen again).
    pub fn notified(&mut self) -> Result<bool> {
        match &mut self.source {
            Source::Pg(conn) => conn.notified().map_err(lost),
            Source::Sqlite { db, version } => {
                let now = db.data_version()?;
                let changed = now != *version;
                *version = now;
                Ok(changed)
            }
        }
    }

    /// Whether a notification arrives within `timeout` (one waiting already counts); consumes
    /// every one waiting. PostgreSQL waits on the connection's socket, so the answer comes as
    /// the notification does; SQLite checks once, then once more after `timeout`. An error means
    /// the connection is gone (listen again).
    pub fn wait(&mut self, timeout: Duration) -> Result<bool> {
        if self.notified()? {
            return Ok(true);
        }
        match &mut self.source {
            Source::Pg(conn) => conn.wait(timeout).map_err(lost)?,
            Source::Sqlite { .. } => std::thread::sleep(timeout),
        }
        self.notified()
    }
}

/// The listening connection failed: it is gone.
fn lost(e: String) -> Error {
    Error::new(ErrorKind::Transient, format!("reading notifications: {e}"))
}
