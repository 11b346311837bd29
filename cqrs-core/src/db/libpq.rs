//! A bare libpq connection, for the outbox listener only. Diesel's `PgConnection` reads
//! notifications without blocking but does not expose its socket, so a listener on it can only
//! check in a loop (an idle relay woke every millisecond to look, about 2% of a core, and saw a
//! `NOTIFY` half a millisecond late on average). This one waits on the socket itself: an idle
//! relay sleeps until the server sends something or its timeout passes.
//!
//! libpq is the library Diesel's PostgreSQL backend already links (`pq-sys`); the same URLs and
//! environment (`PGSSLMODE`, ...) apply. The one module allowed `unsafe` (the workspace denies it).
#![allow(unsafe_code)]

use std::ffi::{CStr, CString};
use std::os::raw::{c_char, c_int};
use std::ptr;
use std::time::Duration;

use pq_sys as pq;

/// One libpq connection. Every call takes `&mut self` or `&self` on its owner: never used by two
/// threads at once.
pub(crate) struct RawPg {
    conn: *mut pq::PGconn,
}

// SAFETY: a libpq connection may be used from any thread, one thread at a time (libpq's
// thread-safety rules); `RawPg` is not `Sync` and every use goes through its owner.
unsafe impl Send for RawPg {}

impl RawPg {
    /// Connect to `target` (a `postgres://` URL or a libpq connection string).
    pub(crate) fn connect(target: &str) -> Result<RawPg, String> {
        let target =
            CString::new(target).map_err(|_| "the database URL holds a NUL byte".to_string())?;
        // SAFETY: a valid C string; libpq returns a connection object even on failure (or NULL
        // when out of memory), which `Drop` finishes.
        let conn = unsafe { pq::PQconnectdb(target.as_ptr()) };
        if conn.is_null() {
            return Err("libpq could not allocate a connection".to_string());
        }
        let raw = RawPg { conn };
        // SAFETY: `conn` is a live connection object.
        if unsafe { pq::PQstatus(conn) } != pq::ConnStatusType::CONNECTION_OK {
            return Err(raw.error());
        }
        Ok(raw)
    }

    /// libpq's last error on this connection.
    fn error(&self) -> String {
        // SAFETY: libpq returns a C string owned by the connection, valid until the next call.
        unsafe { text(pq::PQerrorMessage(self.conn)) }
            .trim()
            .to_string()
    }

    /// Run one statement with text parameters (`$1`, ...); the first column of each row it
    /// returns (`None` for NULL), nothing for a command.
    pub(crate) fn query(
        &mut self,
        sql: &str,
        params: &[&str],
    ) -> Result<Vec<Option<String>>, String> {
        let sql = CString::new(sql).map_err(|_| "a statement holds a NUL byte".to_string())?;
        let params = params
            .iter()
            .map(|p| CString::new(*p).map_err(|_| "a parameter holds a NUL byte".to_string()))
            .collect::<Result<Vec<_>, _>>()?;
        let values: Vec<*const c_char> = params.iter().map(|p| p.as_ptr()).collect();
        // SAFETY: the statement and every parameter are C strings that outlive the call; NULL
        // types, lengths and formats mean "infer, text".
        let res = unsafe {
            pq::PQexecParams(
                self.conn,
                sql.as_ptr(),
                values.len() as c_int,
                ptr::null(),
                values.as_ptr(),
                ptr::null(),
                ptr::null(),
                0,
            )
        };
        if res.is_null() {
            return Err(self.error());
        }
        // SAFETY: `res` is a live result until `PQclear` below; row and column indexes are
        // within `PQntuples` and the one column read.
        let out = unsafe {
            match pq::PQresultStatus(res) {
                pq::ExecStatusType::PGRES_COMMAND_OK => Ok(Vec::new()),
                pq::ExecStatusType::PGRES_TUPLES_OK => Ok((0..pq::PQntuples(res))
                    .map(|row| {
                        (pq::PQgetisnull(res, row, 0) == 0)
                            .then(|| text(pq::PQgetvalue(res, row, 0)))
                    })
                    .collect()),
                _ => Err(text(pq::PQresultErrorMessage(res)).trim().to_string()),
            }
        };
        // SAFETY: `res` came from libpq and is not used after this.
        unsafe { pq::PQclear(res) };
        out
    }

    /// Read what the server has sent, without blocking; whether it held a notification (every
    /// one waiting is consumed). An error means the connection is gone.
    pub(crate) fn notified(&mut self) -> Result<bool, String> {
        // SAFETY: a live connection; each notification libpq hands over is freed once.
        unsafe {
            if pq::PQconsumeInput(self.conn) == 0 {
                return Err(self.error());
            }
            let mut any = false;
            loop {
                let n = pq::PQnotifies(self.conn);
                if n.is_null() {
                    return Ok(any);
                }
                pq::PQfreemem(n.cast());
                any = true;
            }
        }
    }

    /// Block until the server sends something or `timeout` passes (rounded up to a millisecond).
    /// Call [`RawPg::notified`] first: what libpq has already read does not wake this.
    pub(crate) fn wait(&self, timeout: Duration) -> Result<(), String> {
        // SAFETY: a live connection.
        let fd = unsafe { pq::PQsocket(self.conn) };
        if fd < 0 {
            return Err("the connection has no socket".to_string());
        }
        wait_readable(fd, timeout)
    }
}

impl Drop for RawPg {
    fn drop(&mut self) {
        // SAFETY: the connection object is finished once, here.
        unsafe { pq::PQfinish(self.conn) }
    }
}

/// A C string from libpq as Rust text.
///
/// # Safety
/// `s` is NULL or a NUL-terminated string valid for the call.
unsafe fn text(s: *const c_char) -> String {
    if s.is_null() {
        return String::new();
    }
    // SAFETY: per this function's contract.
    unsafe { CStr::from_ptr(s) }.to_string_lossy().into_owned()
}

#[cfg(unix)]
fn wait_readable(fd: c_int, timeout: Duration) -> Result<(), String> {
    let ms = timeout.as_micros().div_ceil(1000).min(c_int::MAX as u128) as c_int;
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    if unsafe { libc::poll(&mut p, 1, ms) } < 0 {
        let e = std::io::Error::last_os_error();
        // A signal: the caller looks and waits again.
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(format!("waiting on the database socket: {e}"));
        }
    }
    Ok(())
}

/// Elsewhere the socket is not waited on: the caller checks every millisecond, as before.
#[cfg(not(unix))]
fn wait_readable(_fd: c_int, timeout: Duration) -> Result<(), String> {
    std::thread::sleep(timeout.min(Duration::from_millis(1)));
    Ok(())
}
