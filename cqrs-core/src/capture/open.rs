//! The captures open on this thread, by connection: how a nested [`atomic`](super::atomic) finds the
//! capture it joins.

use std::cell::RefCell;
use std::rc::{Rc, Weak};

use super::Capture;

thread_local! {
    /// The captures open on this thread, by connection address: an [`atomic`] on a connection
    /// that already has one joins it instead of starting an empty touched set (which would bump a
    /// row twice and queue two states at one revision).
    static OPEN: RefCell<Vec<(usize, Weak<RefCell<Capture>>)>> = const { RefCell::new(Vec::new()) };
}

/// The capture open on the connection at `addr`, if any.
pub(super) fn open_capture(addr: usize) -> Option<Rc<RefCell<Capture>>> {
    OPEN.with(|open| {
        open.borrow()
            .iter()
            .rev()
            .find(|(a, _)| *a == addr)
            .and_then(|(_, w)| w.upgrade())
    })
}

/// Registers a capture as open for its life (also when the closure panics).
pub(super) struct Opened(usize);

impl Opened {
    pub(super) fn new(addr: usize, cap: &Rc<RefCell<Capture>>) -> Opened {
        OPEN.with(|open| open.borrow_mut().push((addr, Rc::downgrade(cap))));
        Opened(addr)
    }
}

impl Drop for Opened {
    fn drop(&mut self) {
        OPEN.with(|open| {
            let mut open = open.borrow_mut();
            if let Some(i) = open.iter().rposition(|(a, _)| *a == self.0) {
                open.remove(i);
            }
        });
    }
}
