//! A PostgreSQL cluster of the test's own (initdb and pg_ctl in a temporary directory), for tests
//! that stop and kill the database server: the machine's PostgreSQL is shared and must never be
//! restarted. The server refuses to run as root, so the cluster belongs to the `postgres` user.

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::rabbit::{free_port, give_to};

/// A private cluster on 127.0.0.1; stopped and removed on drop.
pub struct PrivatePostgres {
    /// TCP port on 127.0.0.1.
    pub port: u16,
    bin: PathBuf,
    dir: PathBuf,
    running: bool,
}

/// The server's binaries (`pg_config --bindir`).
fn bindir() -> PathBuf {
    let out = Command::new("pg_config")
        .arg("--bindir")
        .output()
        .expect("pg_config (PostgreSQL) is installed");
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

impl PrivatePostgres {
    /// initdb a fresh cluster and start it (fsync off: a crash test kills the server, not the
    /// machine). Panics (the test fails) when PostgreSQL is not installed or does not come up.
    pub fn start() -> PrivatePostgres {
        let dir = std::env::temp_dir().join(crate::db::unique("cqrs_pg"));
        std::fs::create_dir_all(&dir).unwrap();
        give_to(&dir, "postgres");
        let mut pg = PrivatePostgres {
            port: free_port(),
            bin: bindir(),
            dir,
            running: false,
        };
        let out = pg.as_postgres(
            "initdb",
            &[
                "-D",
                &pg.data(),
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
            ],
        );
        assert!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        pg.boot();
        pg
    }

    fn data(&self) -> String {
        self.dir.join("data").display().to_string()
    }

    /// Run one of the server's programs as the `postgres` user.
    fn as_postgres(&self, program: &str, args: &[&str]) -> Output {
        let mut cmd = if nix_is_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(self.bin.join(program));
            c
        } else {
            Command::new(self.bin.join(program))
        };
        cmd.args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("{program} runs: {e}"))
    }

    /// URL of database `name` on this cluster.
    pub fn url(&self, name: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{name}", self.port)
    }

    /// Start the server (again, after a stop or a crash: it recovers from its WAL) and wait until
    /// it answers.
    pub fn boot(&mut self) {
        assert!(!self.running, "the cluster is already running");
        let options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -c unix_socket_directories='' -c fsync=off -c max_connections=100",
            self.port
        );
        let log = self.dir.join("server.log").display().to_string();
        let out = self.as_postgres(
            "pg_ctl",
            &[
                "-D",
                &self.data(),
                "-o",
                &options,
                "-l",
                &log,
                "-w",
                "-t",
                "60",
                "start",
            ],
        );
        assert!(
            out.status.success(),
            "private PostgreSQL did not start: {}; see {log}",
            String::from_utf8_lossy(&out.stderr)
        );
        self.running = true;
    }

    /// A streaming standby of this cluster (`pg_basebackup -R`), started on a port of its own and
    /// read-only until [`promote`](Self::promote)d. Its WAL arrives as the primary writes it; for
    /// commits to wait for it, set `synchronous_standby_names` on the primary.
    pub fn standby(&self) -> PrivatePostgres {
        let dir = std::env::temp_dir().join(crate::db::unique("cqrs_pg_standby"));
        std::fs::create_dir_all(&dir).unwrap();
        give_to(&dir, "postgres");
        let mut standby = PrivatePostgres {
            port: free_port(),
            bin: self.bin.clone(),
            dir,
            running: false,
        };
        let port = self.port.to_string();
        let out = standby.as_postgres(
            "pg_basebackup",
            &[
                "-h",
                "127.0.0.1",
                "-p",
                &port,
                "-U",
                "postgres",
                "-D",
                &standby.data(),
                "-R",
                "-X",
                "stream",
                // An immediate checkpoint: the default spreads it over minutes.
                "-c",
                "fast",
            ],
        );
        assert!(
            out.status.success(),
            "pg_basebackup failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        standby.boot();
        standby
    }

    /// Make a standby the primary (`pg_ctl promote`, waiting until it accepts writes).
    pub fn promote(&mut self) {
        let out = self.as_postgres("pg_ctl", &["-D", &self.data(), "-w", "-t", "60", "promote"]);
        assert!(
            out.status.success(),
            "pg_ctl promote failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Stop the server the way an administrator does (`pg_ctl stop -m fast`: clients are
    /// disconnected, a checkpoint is written).
    pub fn stop(&mut self) {
        if self.running {
            let out = self.as_postgres("pg_ctl", &["-D", &self.data(), "-m", "fast", "-w", "stop"]);
            assert!(
                out.status.success(),
                "pg_ctl stop failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            self.running = false;
        }
    }

    /// SIGKILL to the postmaster and every backend (no checkpoint, no goodbye to clients): what
    /// an OOM kill of the whole server does. The next [`boot`](Self::boot) replays the WAL.
    pub fn crash(&mut self) {
        let pidfile = self.dir.join("data").join("postmaster.pid");
        let pid = std::fs::read_to_string(&pidfile)
            .ok()
            .and_then(|s| s.lines().next().map(str::to_string))
            .expect("a running cluster has postmaster.pid");
        let children = Command::new("pgrep")
            .args(["-P", &pid])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).to_string())
            .unwrap_or_default();
        let mut pids = vec![pid.clone()];
        pids.extend(children.split_whitespace().map(str::to_string));
        Command::new("kill")
            .arg("-9")
            .args(&pids)
            .stderr(Stdio::null())
            .status()
            .expect("kill runs");
        // The port and the shared memory are free only once every process is gone.
        let deadline = Instant::now() + Duration::from_secs(30);
        while pids.iter().any(|p| alive(p)) {
            assert!(
                Instant::now() < deadline,
                "killed postgres processes linger"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        // A killed postmaster stays a zombie until init reaps it, and the next start refuses to
        // run while the PID in postmaster.pid exists. Every server process is dead: the lock
        // file is stale.
        let deadline = Instant::now() + Duration::from_secs(5);
        while std::path::Path::new(&format!("/proc/{pid}")).exists() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        if std::path::Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_file(&pidfile);
        }
        self.running = false;
    }
}

/// A process that exists and is not a zombie (a container's init may never reap it).
fn alive(pid: &str) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|stat| {
            // The state follows the parenthesised command name.
            stat.rsplit_once(')')
                .map(|(_, rest)| !rest.trim_start().starts_with('Z'))
                .unwrap_or(false)
        })
        .unwrap_or(false)
}

/// Whether this process runs as root (the server then runs as `postgres`).
fn nix_is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        if self.running {
            let _ = self.as_postgres(
                "pg_ctl",
                &["-D", &self.data(), "-m", "immediate", "-w", "stop"],
            );
        }
        if std::thread::panicking() {
            eprintln!("private PostgreSQL's files kept in {}", self.dir.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}
