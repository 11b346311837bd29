//! A nested [`atomic`](super::atomic) inside a savepoint the capture did not open: the
//! application's own `conn.transaction(..)` (a Diesel savepoint) inside an outer `atomic`.
//! Capture cannot see that savepoint end, so when the nested call returns it leaves a *mark* in
//! it (see [`Backend::set_mark`](crate::db::Backend)) and, before its next step, checks the
//! mark: gone means the savepoint rolled back, taking the nested call's writes with it, and the
//! capture returns to what it was before that call (a row it bumped there is bumped again by its
//! next change; a DELETE it recorded there is not sent).

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};

use super::Capture;
use crate::db::{Backend, SqlConn};
use crate::error::Result;
use crate::value::SqlValue;

/// Marks are unique for the process's life: SQLite's marks table outlives transactions.
static MARKS: AtomicU64 = AtomicU64::new(0);

/// A nested call that returned inside a savepoint capture did not open.
#[derive(Debug, Clone)]
pub(super) struct Watch {
    mark: String,
    /// The capture as it was before the nested call.
    before: Box<Capture>,
}

/// True when the connection is inside savepoints that the capture did not open.
pub(super) fn inside_foreign<C: SqlConn + ?Sized>(
    conn: &mut C,
    cap: &Rc<RefCell<Capture>>,
) -> Result<bool> {
    let depth = conn.transaction_depth()?;
    Ok(cap.borrow().own.last().is_some_and(|own| depth > *own))
}

/// Leave a mark in the innermost savepoint and watch it, with the capture as it was before.
pub(super) fn watch<C: SqlConn + ?Sized>(
    conn: &mut C,
    cap: &Rc<RefCell<Capture>>,
    before: Capture,
) -> Result<()> {
    let mark = format!(
        "{}_{}",
        std::process::id(),
        MARKS.fetch_add(1, Ordering::Relaxed)
    );
    let statements = conn.backend().set_mark();
    for (i, sql) in statements.iter().enumerate() {
        let binds = if i + 1 == statements.len() {
            vec![SqlValue::Text(mark.clone())]
        } else {
            Vec::new()
        };
        conn.exec(sql, binds)?;
    }
    cap.borrow_mut().watches.push(Watch {
        mark,
        before: Box::new(before),
    });
    Ok(())
}

/// Check the watched marks, newest first: a mark gone restores the capture from before its
/// nested call; one that holds while the connection is back at the capture's own level is kept
/// for good. Cheap when nothing is watched (the usual case).
pub(super) fn settle<C: SqlConn + ?Sized>(conn: &mut C, cap: &Rc<RefCell<Capture>>) -> Result<()> {
    if cap.borrow().watches.is_empty() {
        return Ok(());
    }
    let depth = conn.transaction_depth()?;
    loop {
        let (mark, own) = {
            let c = cap.borrow();
            match c.watches.last() {
                None => return Ok(()),
                Some(w) => (w.mark.clone(), c.own.last().copied().unwrap_or(0)),
            }
        };
        if !holds(conn, &mark)? {
            let before = cap.borrow_mut().watches.pop().expect("checked").before;
            *cap.borrow_mut() = *before;
            continue;
        }
        // An older mark holds if this one does (PostgreSQL keeps only the newest to ask).
        if depth <= own {
            cap.borrow_mut().watches.clear();
        }
        return Ok(());
    }
}

fn holds<C: SqlConn + ?Sized>(conn: &mut C, mark: &str) -> Result<bool> {
    let backend = conn.backend();
    match conn.load_text(backend.probe_mark(), vec![SqlValue::Text(mark.to_string())]) {
        Ok(rows) => Ok(rows.first().map(String::as_str) == Some("on")),
        // The rollback took SQLite's marks table with it.
        Err(e) if backend == Backend::Sqlite && e.to_string().contains("no such table") => {
            Ok(false)
        }
        Err(e) => Err(e),
    }
}
