//! Wake-ups across processes on PostgreSQL: `LISTEN` on a channel on a connection of its own, and
//! ask without blocking whether a `NOTIFY` arrived. Diesel reads notifications with libpq's
//! non-blocking input, so a caller that wants to wait checks in a short loop; each check is one
//! non-blocking read of the socket.

use diesel::pg::PgConnection;
use diesel::{Connection, RunQueryDsl};

use super::{Backend, parse_database_url, redact};
use crate::error::{Error, Result};

/// A connection listening on one channel.
pub struct Listener {
    conn: PgConnection,
}

impl std::fmt::Debug for Listener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Listener")
    }
}

impl Listener {
    /// Listen on `channel` (an identifier: letters, digits, `_`) of the database at `url`; `None`
    /// for SQLite, which has no notifications.
    pub fn listen(url: &str, channel: &str) -> Result<Option<Listener>> {
        let (backend, target) = parse_database_url(url)?;
        if backend == Backend::Sqlite {
            return Ok(None);
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
        Ok(Some(Listener { conn }))
    }

    /// Whether a notification arrived since the last call; consumes every one waiting. An error
    /// means the connection is gone (listen again).
    pub fn notified(&mut self) -> Result<bool> {
        let mut any = false;
        for n in self.conn.notifications_iter() {
            n.map_err(|e| Error::from_diesel(e, "reading notifications"))?;
            any = true;
        }
        Ok(any)
    }
}
