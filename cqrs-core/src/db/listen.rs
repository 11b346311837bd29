//! Wake-ups across processes. PostgreSQL: `LISTEN` on a channel on a connection of its own, and
//! ask without blocking whether a `NOTIFY` arrived; Diesel reads notifications with libpq's
//! non-blocking input, so a caller that wants to wait checks in a short loop; each check is one
//! non-blocking read of the socket. SQLite has no notifications: a connection of its own asks
//! `PRAGMA data_version`, which changes when any other connection commits to the file (so a
//! commit that wrote no outbox row wakes it too: one claim that finds nothing).

use diesel::pg::PgConnection;
use diesel::{Connection, RunQueryDsl};

use super::{Backend, parse_database_url, redact};
use crate::error::{Error, Result};

/// A connection listening on one channel (PostgreSQL) or watching the file (SQLite).
pub struct Listener {
    source: Source,
}

enum Source {
    Pg(PgConnection),
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
        let mut conn = PgConnection::establish(&target)
            .map_err(|e| Error::from(e).context(format!("database {}", redact(url))))?;
        diesel::sql_query(format!("LISTEN {channel}"))
            .execute(&mut conn)
            .map_err(|e| Error::from_diesel(e, "LISTEN"))?;
        Ok(Listener {
            source: Source::Pg(conn),
        })
    }

    /// Whether a notification arrived since the last call; consumes every one waiting. An error
    /// means the connection is gone (listen again).
    pub fn notified(&mut self) -> Result<bool> {
        match &mut self.source {
            Source::Pg(conn) => {
                let mut any = false;
                for n in conn.notifications_iter() {
                    n.map_err(|e| Error::from_diesel(e, "reading notifications"))?;
                    any = true;
                }
                Ok(any)
            }
            Source::Sqlite { db, version } => {
                let now = db.data_version()?;
                let changed = now != *version;
                *version = now;
                Ok(changed)
            }
        }
    }
}
