//! CPU time by component, read from `/proc`: on a 2-core machine every stage shares the cores, so
//! CPU seconds per replicated row say where the cost is, and carry to bigger machines where rates
//! do not.
//!
//! PostgreSQL is the postmaster and all its children (backends, WAL writer, checkpointer, …) plus
//! what its exited children used (the postmaster's `cutime`/`cstime`: a writer's connection that
//! closed before the end of the window still counts). RabbitMQ is its Erlang VM (`beam.smp`, found
//! with `rabbitmqctl eval 'os:getpid().'`), or the private nats-server the `nats` group starts.
//! The first two are the machine's shared servers: anything else using them during a window counts
//! too.

use std::process::Command;

/// Clock ticks per second of `/proc`'s CPU fields.
fn ticks_per_second() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// The fields of a `/proc/…/stat` line after the command name (field 3 onwards).
fn stat_fields(path: &str) -> Option<Vec<u64>> {
    let text = std::fs::read_to_string(path).ok()?;
    // The command name is in parentheses and may hold spaces: the fields start after the last ')'.
    let rest = &text[text.rfind(')')? + 2..];
    Some(
        rest.split_whitespace()
            .map(|f| f.parse::<i64>().map_or(0, |v| v.max(0) as u64))
            .collect(),
    )
}

/// utime + stime of `path`'s task, and cutime + cstime (its waited-for children), in seconds.
fn cpu_of(path: &str) -> Option<(f64, f64)> {
    // Fields 14-17 (utime, stime, cutime, cstime) are at 11-14 counting from field 3.
    let f = stat_fields(path)?;
    let t = ticks_per_second();
    Some(((f[11] + f[12]) as f64 / t, (f[13] + f[14]) as f64 / t))
}

/// CPU seconds of process `pid` so far (0 if it is gone).
pub fn process(pid: u32) -> f64 {
    cpu_of(&format!("/proc/{pid}/stat")).map_or(0.0, |c| c.0)
}

/// CPU seconds of the calling thread so far.
pub fn this_thread() -> f64 {
    cpu_of("/proc/thread-self/stat").map_or(0.0, |c| c.0)
}

/// CPU seconds of this process so far (every thread: lapin's I/O threads included).
pub fn this_process() -> f64 {
    cpu_of("/proc/self/stat").map_or(0.0, |c| c.0)
}

/// The PostgreSQL server a backend belongs to: its postmaster's pid.
pub fn postmaster_of(backend_pid: u32) -> Option<u32> {
    // Field 4 (ppid) is at index 1 counting from field 3.
    stat_fields(&format!("/proc/{backend_pid}/stat")).map(|f| f[1] as u32)
}

/// Whether `pid` has exited and waits to be reaped (its `/proc` CPU fields then read 0 until its
/// parent reaps it and adds them to its own `cutime`/`cstime`).
fn zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|t| {
            t.rfind(')')
                .and_then(|i| t.get(i + 2..i + 3))
                .map(|s| s == "Z")
        })
        .unwrap_or(false)
}

/// CPU seconds the PostgreSQL server of `postmaster` has used so far: itself, its live children
/// and the children it has reaped. A backend that has just exited (a writer that closed its
/// connection) reads 0 until the postmaster reaps it, so the reading waits (up to 200 ms) for
/// that.
pub fn postgres(postmaster: u32) -> f64 {
    let children = || -> Vec<u32> {
        std::fs::read_dir("/proc")
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
            .filter(|pid| {
                stat_fields(&format!("/proc/{pid}/stat")).is_some_and(|f| f[1] as u32 == postmaster)
            })
            .collect()
    };
    for _ in 0..100 {
        if !children().into_iter().any(zombie) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    let Some((own, reaped)) = cpu_of(&format!("/proc/{postmaster}/stat")) else {
        return 0.0;
    };
    own + reaped + children().into_iter().map(process).sum::<f64>()
}

/// The pid of the RabbitMQ node `rabbitmqctl` talks to by default.
pub fn rabbitmq_pid() -> Option<u32> {
    let out = Command::new("rabbitmqctl")
        .args(["eval", "list_to_integer(os:getpid())."])
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout).trim().parse().ok()
}

/// CPU seconds by component over a window, divided by the rows it replicated.
#[derive(Debug, Clone, Copy, Default)]
pub struct Window {
    pub writers: f64,
    pub postgres: f64,
    /// RabbitMQ or nats-server.
    pub broker: f64,
    pub relay: f64,
    pub consumer: f64,
    /// The harness process outside its writer threads (lapin's I/O threads, a relay in process).
    pub harness: f64,
}

impl Window {
    /// Each component in µs per row of `rows`.
    pub fn per_row(&self, rows: usize) -> Window {
        let k = 1e6 / rows.max(1) as f64;
        Window {
            writers: self.writers * k,
            postgres: self.postgres * k,
            broker: self.broker * k,
            relay: self.relay * k,
            consumer: self.consumer * k,
            harness: self.harness * k,
        }
    }

    pub fn total(&self) -> f64 {
        self.writers + self.postgres + self.broker + self.relay + self.consumer + self.harness
    }

    /// The components by name, the total last.
    pub fn parts(&self) -> [(&'static str, f64); 7] {
        [
            ("writers", self.writers),
            ("PostgreSQL", self.postgres),
            ("broker", self.broker),
            ("relay", self.relay),
            ("consumer", self.consumer),
            ("harness process", self.harness),
            ("all", self.total()),
        ]
    }
}

/// Readings of the servers' and some processes' CPU at one moment.
#[derive(Debug, Clone, Copy)]
pub struct Reading {
    postgres: f64,
    broker: f64,
    relay: f64,
    consumer: f64,
    harness: f64,
}

/// What to read: the PostgreSQL server, the broker and the relay and consumer processes.
#[derive(Debug, Clone, Copy, Default)]
pub struct Meter {
    pub postmaster: Option<u32>,
    pub broker: Option<u32>,
    pub relay: Option<u32>,
    pub consumer: Option<u32>,
}

impl Meter {
    pub fn read(&self) -> Reading {
        Reading {
            postgres: self.postmaster.map_or(0.0, postgres),
            broker: self.broker.map_or(0.0, process),
            relay: self.relay.map_or(0.0, process),
            consumer: self.consumer.map_or(0.0, process),
            harness: this_process(),
        }
    }

    /// The window from `start` to now; `writers` is the writer threads' own CPU over it, taken
    /// out of the harness process's.
    pub fn since(&self, start: &Reading, writers: f64) -> Window {
        let now = self.read();
        Window {
            writers,
            postgres: now.postgres - start.postgres,
            broker: now.broker - start.broker,
            relay: now.relay - start.relay,
            consumer: now.consumer - start.consumer,
            harness: (now.harness - start.harness - writers).max(0.0),
        }
    }
}
