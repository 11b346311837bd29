//! A TCP proxy a test can break: put it between a client and PostgreSQL or RabbitMQ, then cut
//! every connection (and refuse new ones until healed) or slow every chunk down. What a network
//! partition or a congested link does, without touching the shared services.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A proxy from a local port to `target`; stops on drop.
pub struct ChaosProxy {
    /// The port clients connect to on 127.0.0.1.
    pub port: u16,
    state: Arc<State>,
}

struct State {
    target: SocketAddr,
    /// While set, accepted connections are closed at once.
    refusing: AtomicBool,
    /// Pause before forwarding each chunk, in milliseconds.
    delay_ms: AtomicU64,
    /// Both ends of every open link, to cut them.
    links: Mutex<HashMap<u64, (TcpStream, TcpStream)>>,
    next_link: AtomicU64,
    stopped: AtomicBool,
}

impl ChaosProxy {
    /// Listen on a free local port and forward to `target`.
    pub fn start(target: SocketAddr) -> ChaosProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("a local port for the proxy");
        let port = listener.local_addr().unwrap().port();
        let state = Arc::new(State {
            target,
            refusing: AtomicBool::new(false),
            delay_ms: AtomicU64::new(0),
            links: Mutex::new(HashMap::new()),
            next_link: AtomicU64::new(0),
            stopped: AtomicBool::new(false),
        });
        let s = state.clone();
        std::thread::spawn(move || accept(listener, s));
        ChaosProxy { port, state }
    }

    /// Close every open connection and refuse new ones until [`heal`](Self::heal).
    pub fn cut(&self) {
        self.state.refusing.store(true, Ordering::SeqCst);
        self.state.close_all();
    }

    /// Accept connections again and forward without delay.
    pub fn heal(&self) {
        self.state.delay_ms.store(0, Ordering::SeqCst);
        self.state.refusing.store(false, Ordering::SeqCst);
    }

    /// Hold every chunk `delay` before forwarding it, both ways, until [`heal`](Self::heal).
    pub fn slow(&self, delay: Duration) {
        self.state
            .delay_ms
            .store(delay.as_millis() as u64, Ordering::SeqCst);
    }

    /// Links open now.
    pub fn open_links(&self) -> usize {
        self.state.links.lock().unwrap().len()
    }
}

impl State {
    fn close_all(&self) {
        for (_, (a, b)) in self.links.lock().unwrap().drain() {
            let _ = a.shutdown(Shutdown::Both);
            let _ = b.shutdown(Shutdown::Both);
        }
    }
}

impl Drop for ChaosProxy {
    fn drop(&mut self) {
        self.state.stopped.store(true, Ordering::SeqCst);
        self.state.close_all();
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

fn accept(listener: TcpListener, state: Arc<State>) {
    for client in listener.incoming() {
        if state.stopped.load(Ordering::SeqCst) {
            return;
        }
        let Ok(client) = client else { continue };
        if state.refusing.load(Ordering::SeqCst) {
            let _ = client.shutdown(Shutdown::Both);
            continue;
        }
        let Ok(server) = TcpStream::connect_timeout(&state.target, Duration::from_secs(5)) else {
            let _ = client.shutdown(Shutdown::Both);
            continue;
        };
        let _ = client.set_nodelay(true);
        let _ = server.set_nodelay(true);
        let (Ok(c2), Ok(s2)) = (client.try_clone(), server.try_clone()) else {
            continue;
        };
        let id = state.next_link.fetch_add(1, Ordering::Relaxed);
        if let (Ok(c3), Ok(s3)) = (client.try_clone(), server.try_clone()) {
            state.links.lock().unwrap().insert(id, (c3, s3));
        }
        let (s_up, s_down) = (state.clone(), state.clone());
        std::thread::spawn(move || pump(client, server, &s_up, id));
        std::thread::spawn(move || pump(s2, c2, &s_down, id));
    }
}

/// Copy `from` to `to` until either side ends, pausing before each chunk while slowed.
fn pump(mut from: TcpStream, mut to: TcpStream, state: &State, id: u64) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let delay = state.delay_ms.load(Ordering::SeqCst);
        if delay > 0 {
            std::thread::sleep(Duration::from_millis(delay));
        }
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
    state.links.lock().unwrap().remove(&id);
}
