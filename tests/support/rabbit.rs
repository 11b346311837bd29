//! A RabbitMQ node of the test's own, for tests that stop and start a broker: the machine's broker
//! is shared with other programs and must never be restarted. The recipe (DEPENDENCIES.md): a
//! directory owned by `rabbitmq` (the server drops to that user) with its own `rabbitmq.conf`
//! listener (the machine's config pins 5672), and every `RABBITMQ_*` path pointed into it.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A private RabbitMQ node; stopped and removed on drop.
pub struct PrivateRabbit {
    /// Erlang node name, `<name>@localhost`.
    pub node: String,
    /// AMQP port on 127.0.0.1.
    pub port: u16,
    dist_port: u16,
    dir: PathBuf,
    server: Option<Child>,
}

/// Hand `dir` (and what is in it) to `user`: a server that drops root privileges must own its files.
pub(crate) fn give_to(dir: &std::path::Path, user: &str) {
    let chown = Command::new("chown")
        .arg("-R")
        .arg(format!("{user}:{user}"))
        .arg(dir)
        .status()
        .expect("chown runs");
    assert!(chown.success(), "chown {} to {user} failed", dir.display());
}

/// A free port below Linux's ephemeral range (32768+): while the node is down, a client's
/// reconnect from an ephemeral port could otherwise take the node's port (a TCP self-connect).
pub(crate) fn free_port() -> u16 {
    // Never the same port twice in one process: two tests starting servers at once would both
    // see it free before either binds it.
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut given = GIVEN.lock().unwrap_or_else(|p| p.into_inner());
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos()
        ^ std::process::id();
    let port = (0..1000u32)
        .map(|i| 20_000 + ((seed.wrapping_add(i.wrapping_mul(7919))) % 12_000) as u16)
        .find(|p| !given.contains(p) && TcpListener::bind(("127.0.0.1", *p)).is_ok())
        .expect("a free local port in 20000..32000");
    given.push(port);
    port
}

impl PrivateRabbit {
    /// Start a fresh node and wait until it accepts connections. Panics (the test fails) when
    /// RabbitMQ is not installed or does not come up within a minute.
    pub fn start() -> PrivateRabbit {
        let name = crate::db::unique("cqrs_rabbit");
        let dir = std::env::temp_dir().join(&name);
        std::fs::create_dir_all(&dir).unwrap();
        let port = free_port();
        std::fs::write(
            dir.join("rabbitmq.conf"),
            format!("listeners.tcp.local = 127.0.0.1:{port}\n"),
        )
        .unwrap();
        std::fs::write(dir.join("enabled_plugins"), "[].\n").unwrap();
        give_to(&dir, "rabbitmq");
        let mut rabbit = PrivateRabbit {
            node: format!("{name}@localhost"),
            port,
            dist_port: free_port(),
            dir,
            server: None,
        };
        rabbit.boot();
        rabbit
    }

    /// `amqp://` URL of this node.
    pub fn url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.port)
    }

    /// Start the node (again) on the same data directory and wait until it is up.
    pub fn boot(&mut self) {
        assert!(self.server.is_none(), "the node is already running");
        let d = |f: &str| self.dir.join(f);
        let log = std::fs::File::create(d("server.log")).unwrap();
        let server = Command::new("rabbitmq-server")
            .current_dir(&self.dir)
            .env("RABBITMQ_NODENAME", &self.node)
            .env("RABBITMQ_CONFIG_FILE", d("rabbitmq.conf"))
            .env("RABBITMQ_DIST_PORT", self.dist_port.to_string())
            .env("RABBITMQ_MNESIA_BASE", d("mnesia"))
            .env("RABBITMQ_LOG_BASE", d("log"))
            .env("RABBITMQ_PID_FILE", d("pid"))
            .env("RABBITMQ_ENABLED_PLUGINS_FILE", d("enabled_plugins"))
            .env("RABBITMQ_FEATURE_FLAGS_FILE", d("feature_flags"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("rabbitmq-server (RabbitMQ) is installed");
        self.server = Some(server);
        let deadline = Instant::now() + Duration::from_secs(60);
        // await_startup fails at once until the node has registered with epmd: poll it.
        loop {
            let up = self
                .ctl(&["await_startup", "--timeout", "30"])
                .map(|o| o.status.success())
                .unwrap_or(false);
            if up {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "private RabbitMQ node {} did not start; see {}",
                self.node,
                d("server.log").display()
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// Stop the node (durable queues and persistent messages stay on disk). If it does not stop
    /// cleanly within 30 s it is killed: the server is a wrapper script (`su` forks), so the node's
    /// own pid from its pid file is what must go.
    pub fn stop(&mut self) {
        let _ = self.ctl(&["stop"]);
        if let Some(mut server) = self.server.take() {
            let deadline = Instant::now() + Duration::from_secs(30);
            while server.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(100));
            }
            if server.try_wait().ok().flatten().is_none() {
                self.kill_node();
            }
            let _ = server.kill();
            let _ = server.wait();
        }
    }

    /// SIGKILL to the node's pid, if it wrote one; the pid file goes too, so a later call cannot
    /// hit a reused pid.
    fn kill_node(&self) -> bool {
        let file = self.dir.join("pid");
        let Ok(pid) = std::fs::read_to_string(&file) else {
            return false;
        };
        let _ = std::fs::remove_file(&file);
        Command::new("kill")
            .args(["-9", pid.trim()])
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    }

    /// Kill the node with SIGKILL (no clean shutdown): what a crash or an OOM kill does. RabbitMQ
    /// confirms a persistent message only once it is on disk, so confirmed messages survive.
    pub fn crash(&mut self) {
        assert!(self.kill_node(), "kill -9 of node {} failed", self.node);
        if let Some(mut server) = self.server.take() {
            let _ = server.kill();
            let _ = server.wait();
        }
        // The node's name stays registered with epmd until the node is gone.
        let deadline = Instant::now() + Duration::from_secs(30);
        while self
            .ctl(&["ping"])
            .map(|o| o.status.success())
            .unwrap_or(false)
        {
            assert!(Instant::now() < deadline, "the killed node still answers");
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Whether the node was started and not stopped or killed since.
    pub fn is_running(&self) -> bool {
        self.server.is_some()
    }

    /// `rabbitmqctl -n <node> args...`.
    pub fn ctl(&self, args: &[&str]) -> std::io::Result<std::process::Output> {
        Command::new("rabbitmqctl")
            .args(["-q", "-n", &self.node])
            .args(args)
            .output()
    }
}

impl Drop for PrivateRabbit {
    fn drop(&mut self) {
        self.stop();
        if std::thread::panicking() {
            eprintln!(
                "private RabbitMQ node's files kept in {}",
                self.dir.display()
            );
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// A private RabbitMQ cluster: [`PrivateRabbit`] nodes, the second and later joined to the first
/// (`rabbitmqctl join_cluster`; they share the `rabbitmq` user's Erlang cookie). Nodes are killed,
/// stopped and started again through [`PrivateCluster::nodes`]; a restarted node rejoins on its own.
pub struct PrivateCluster {
    /// The nodes, the first being the one the others joined.
    pub nodes: Vec<PrivateRabbit>,
}

impl PrivateCluster {
    /// Start `n` nodes and join them. Panics (the test fails) if a node does not start or join.
    pub fn start(n: usize) -> PrivateCluster {
        assert!(n >= 1);
        let nodes: Vec<PrivateRabbit> = (0..n).map(|_| PrivateRabbit::start()).collect();
        for node in &nodes[1..] {
            for args in [
                &["stop_app"][..],
                &["join_cluster", &nodes[0].node],
                &["start_app"],
            ] {
                let out = node.ctl(args).expect("rabbitmqctl runs");
                assert!(
                    out.status.success(),
                    "rabbitmqctl -n {} {args:?}: {}",
                    node.node,
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }
        PrivateCluster { nodes }
    }

    /// The nodes' URLs in the order `order` gives (indexes into `nodes`), comma-separated, as
    /// `--broker-url` takes a cluster: a process connects to the first that answers.
    pub fn urls(&self, order: &[usize]) -> String {
        order
            .iter()
            .map(|&i| self.nodes[i].url())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Two orders of the nodes' URLs: node `leader` first (then the others), and node `leader`
    /// last; a publisher given the first and a consumer the second are on different nodes.
    pub fn urls_leader_first(&self, leader: usize) -> (String, String) {
        let n = self.nodes.len();
        let others: Vec<usize> = (1..n).map(|k| (leader + k) % n).collect();
        (
            self.urls(&[&[leader][..], &others].concat()),
            self.urls(&[&others[..], &[leader]].concat()),
        )
    }

    /// A node that is up, to ask the cluster something.
    fn running(&self) -> &PrivateRabbit {
        self.nodes
            .iter()
            .find(|n| n.is_running())
            .expect("a node of the cluster is up")
    }

    /// `rabbitmqctl <args> --formatter json` on a running node.
    pub fn ctl_json(&self, args: &[&str]) -> serde_json::Value {
        let node = self.running();
        let mut all = args.to_vec();
        all.extend(["--formatter", "json"]);
        let out = node.ctl(&all).expect("rabbitmqctl runs");
        assert!(
            out.status.success(),
            "rabbitmqctl -n {} {args:?}: {}",
            node.node,
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "rabbitmqctl {args:?} JSON: {e}: {}",
                String::from_utf8_lossy(&out.stdout)
            )
        })
    }

    /// The index of the node leading quorum queue `queue` (where its node name is the leader).
    pub fn leader_of(&self, queue: &str) -> usize {
        let listed = self.ctl_json(&["list_queues", "name", "leader"]);
        let leader = listed
            .as_array()
            .unwrap()
            .iter()
            .find(|q| q["name"] == queue)
            .and_then(|q| q["leader"].as_str().map(str::to_string))
            .unwrap_or_else(|| panic!("queue {queue} has no leader listed: {listed}"));
        self.nodes
            .iter()
            .position(|n| n.node == leader)
            .unwrap_or_else(|| panic!("leader {leader} is not a node of the cluster"))
    }

    /// Messages waiting in `queue` (0 if it does not exist).
    pub fn count(&self, queue: &str) -> u64 {
        self.ctl_json(&["list_queues", "name", "messages"])
            .as_array()
            .unwrap()
            .iter()
            .find(|q| q["name"] == queue)
            .and_then(|q| q["messages"].as_u64())
            .unwrap_or(0)
    }

    /// Wait until node `i` can be stopped without a quorum queue losing its majority (its members
    /// elsewhere are back and caught up): what an operator checks before the next node of a
    /// rolling restart.
    pub fn await_not_quorum_critical(&self, i: usize) {
        let node = &self.nodes[i];
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let out = Command::new("rabbitmq-queues")
                .args(["-q", "-n", &node.node, "check_if_node_is_quorum_critical"])
                .output()
                .expect("rabbitmq-queues runs");
            if out.status.success() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "node {} stayed quorum critical: {}",
                node.node,
                String::from_utf8_lossy(&out.stdout)
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}
