//! The example services as processes over the real RabbitMQ and PostgreSQL: crash points, restart,
//! SIGTERM. The relay is run from this binary too (`relay` needs no models).

mod common;

use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::terminate;
use cqrs::Db;
use cqrs_tests::{Kind, TestBroker, TestDb, amqp_url, wait_until};

const BIN: &str = env!("CARGO_BIN_EXE_example-replica");

struct Setup {
    master: TestDb,
    replica: TestDb,
    broker: TestBroker,
    dir: PathBuf,
}

impl Setup {
    fn new() -> Setup {
        Setup::with("", cqrs::Settings::default().retry_delays)
    }

    /// `toml` is added to the processes' cqrs.toml; `delays` are the retry levels it configures.
    fn with(toml: &str, delays: Vec<Duration>) -> Setup {
        let master = TestDb::empty(Kind::Postgres);
        let replica = TestDb::empty(Kind::Postgres);
        for (db, sql) in [
            (&master, example_master::SCHEMA_SQL),
            (&replica, example_replica::SCHEMA_SQL),
        ] {
            let mut c = db.connect();
            c.migrate().unwrap();
            c.batch_execute(sql).unwrap();
        }
        let mut broker = TestBroker::new();
        broker.delays = delays;
        let dir = std::env::temp_dir().join(format!("cqrs-proc-{}", broker.queue));
        std::fs::create_dir_all(&dir).unwrap();
        // A short lease so a killed relay's rows come back within the test.
        let config = format!("relay_lease_ms = 500\nbatch_size = 100\n{toml}");
        std::fs::write(dir.join("cqrs.toml"), config).unwrap();
        Setup {
            master,
            replica,
            broker,
            dir,
        }
    }

    fn command(&self, args: &[&str], db: &TestDb, crash: Option<&str>) -> Command {
        let mut cmd = Command::new(BIN);
        cmd.args(args)
            .args([
                "--database-url",
                &db.url,
                "--broker-url",
                &amqp_url(),
                "--exchange",
                &self.broker.exchange,
            ])
            .args([
                "--queue",
                &self.broker.queue,
                "--service-name",
                &self.broker.queue,
            ])
            .current_dir(&self.dir)
            .env_remove("CQRS_CRASH_POINT")
            .env("CQRS_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if let Some(point) = crash {
            cmd.env("CQRS_CRASH_POINT", point);
        }
        cmd
    }

    fn pending(&self) -> usize {
        cqrs::outbox::pending(&mut self.master.connect()).unwrap()
    }
}

impl Drop for Setup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Both sides' rows as comparable lines.
fn tables(master: &TestDb, replica: &TestDb) -> (Vec<String>, Vec<String>) {
    let (Db::Pg(mut m), Db::Pg(mut r)) = (master.connect(), replica.connect()) else {
        unreachable!()
    };
    let mut want: Vec<String> = example_master::all_items(&mut m)
        .unwrap()
        .into_iter()
        .map(|i| {
            format!(
                "{}|{}|{}|{}|{}",
                i.id, i.name, i.value, i.cqrs_revision, i.cqrs_updated
            )
        })
        .collect();
    let mut got: Vec<String> = example_replica::all_items(&mut r)
        .unwrap()
        .into_iter()
        .map(|i| {
            format!(
                "{}|{}|{}|{}|{}",
                i.id, i.title, i.value, i.cqrs_revision, i.cqrs_updated
            )
        })
        .collect();
    want.extend(
        example_master::all_typed(&mut m)
            .unwrap()
            .into_iter()
            .map(|t| format!("{}|{}|{:?}|{}", t.id, t.price, t.owner_id, t.cqrs_revision)),
    );
    got.extend(
        example_replica::all_typed(&mut r)
            .unwrap()
            .into_iter()
            .map(|t| format!("{}|{}|{:?}|{}", t.id, t.price, t.owner_ref, t.cqrs_revision)),
    );
    (want, got)
}

/// Relay killed after publishing (before confirms), consumer killed after committing (before
/// acking): restarted, nothing is lost, the replica converges, SIGTERM exits 0.
#[test]
fn crash_points_then_restart_lose_nothing() {
    let s = Setup::new();
    s.broker
        .transport
        .declare_replica(
            &s.broker.queue,
            &["item".into(), "typed".into()],
            &s.broker.delays,
        )
        .unwrap();
    let Db::Pg(mut pg) = s.master.connect() else {
        unreachable!()
    };
    for i in 0..150 {
        let (id, _) = example_master::create_pair(&mut pg, &format!("p{i}"), i, "1.25").unwrap();
        example_master::set_value(&mut pg, id, i * 2).unwrap();
    }
    let total = s.pending();
    assert_eq!(total, 450);

    let out = s
        .command(&["relay"], &s.master, Some("relay.after_publish"))
        .output()
        .unwrap();
    assert_eq!(
        out.status.signal(),
        Some(6),
        "aborted at the crash point: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(s.pending(), total, "nothing deleted before confirms");

    let relay = s.command(&["relay"], &s.master, None).spawn().unwrap();
    wait_until(Duration::from_secs(60), "the outbox to drain", || {
        s.pending() == 0
    });
    assert!(terminate(relay).success());

    let out = s
        .command(
            &["consume", "-w", "2"],
            &s.replica,
            Some("consumer.after_commit"),
        )
        .output()
        .unwrap();
    assert_eq!(
        out.status.signal(),
        Some(6),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The committed batch was not acked: once the broker notices the dead connection, all is queued again.
    wait_until(
        Duration::from_secs(15),
        "unacked deliveries to return",
        || s.broker.count(&s.broker.queue) as usize >= total,
    );

    let consume = s
        .command(&["consume", "-w", "2"], &s.replica, None)
        .spawn()
        .unwrap();
    wait_until(Duration::from_secs(90), "the replica to converge", || {
        let (want, got) = tables(&s.master, &s.replica);
        want == got
    });
    let status = terminate(consume);
    assert_eq!(
        status.code(),
        Some(0),
        "SIGTERM finishes the batch in flight and exits 0"
    );
    wait_until(Duration::from_secs(10), "the queue to empty", || {
        s.broker.count(&s.broker.queue) == 0
    });
}

/// kill -9 of the consumer while a failed message waits in a delay queue: the broker holds it, it
/// comes back after the restart and applies once its cause is fixed.
#[test]
fn kill_9_while_a_retry_waits_in_a_delay_queue_loses_nothing() {
    let s = Setup::with(
        "max_retries = 20\nretry_delays_ms = [1500]\n",
        vec![Duration::from_millis(1500)],
    );
    s.broker
        .transport
        .declare_replica(
            &s.broker.queue,
            &["item".into(), "typed".into()],
            &s.broker.delays,
        )
        .unwrap();
    s.replica
        .connect()
        .batch_execute("ALTER TABLE replica_items ADD CONSTRAINT positive CHECK (value >= 0)")
        .unwrap();
    let Db::Pg(mut pg) = s.master.connect() else {
        unreachable!()
    };
    example_master::create_pair(&mut pg, "negative", -1, "2.00").unwrap();
    let mut relay = cqrs::Relay::new(
        s.master.connect(),
        s.broker.transport.publisher().unwrap(),
        cqrs::Settings::default(),
    );
    assert_eq!(relay.run_once().unwrap(), 2);

    let mut consumer = s.command(&["consume"], &s.replica, None).spawn().unwrap();
    let delay_queue =
        cqrs::transport::amqp::retry_queue(&s.broker.queue, Duration::from_millis(1500));
    wait_until(
        Duration::from_secs(20),
        "the failed message to wait in its delay queue",
        || s.broker.count(&delay_queue) == 1,
    );
    consumer.kill().unwrap(); // SIGKILL
    consumer.wait().unwrap();

    s.replica
        .connect()
        .batch_execute("ALTER TABLE replica_items DROP CONSTRAINT positive")
        .unwrap();
    let consumer = s.command(&["consume"], &s.replica, None).spawn().unwrap();
    wait_until(Duration::from_secs(30), "the replica to converge", || {
        let (want, got) = tables(&s.master, &s.replica);
        want == got
    });
    assert_eq!(terminate(consumer).code(), Some(0));
    assert_eq!(
        s.broker
            .count(&cqrs::transport::dead_letter_queue(&s.broker.queue)),
        0
    );
}

/// The embedded transport: a consumer killed after committing a batch (before acking) is
/// restarted; its leased messages come back and the replica converges.
#[test]
fn local_transport_consumer_killed_mid_stream_then_restarted_converges() {
    use cqrs::transport::local::LocalTransport;
    use cqrs::transport::{Headers, Outgoing, Publisher};
    let replica = TestDb::empty(Kind::Sqlite);
    let mut r = replica.connect();
    r.migrate().unwrap();
    r.batch_execute(
        "CREATE TABLE replica_items (id INTEGER PRIMARY KEY, title TEXT NOT NULL, value BIGINT NOT NULL, updated TEXT NOT NULL,
           cqrs_revision INTEGER NOT NULL, cqrs_updated TEXT NOT NULL)",
    )
    .unwrap();
    let dir = PathBuf::from(replica.url.trim_start_matches("sqlite://"))
        .parent()
        .unwrap()
        .to_path_buf();
    std::fs::write(
        dir.join("cqrs.toml"),
        "local_lease_ms = 500\nbatch_size = 50\n",
    )
    .unwrap();
    let queue_url = format!("sqlite://{}", dir.join("queue.db").display());
    let t = LocalTransport::open(&queue_url, Duration::from_secs(30)).unwrap();
    t.declare_replica("local_q", &["item".into(), "typed".into()])
        .unwrap();
    let messages: Vec<Outgoing> = (1..=300)
        .map(|i: i64| {
            let data = serde_json::json!({"id": i, "name": format!("n{i}"), "value": i, "updated": "2026-11-23 12:00:00+00:00",
                "cqrs_revision": 0, "cqrs_updated": "2026-11-23 12:00:00.000001+00:00"});
            let m = cqrs::Message::new(cqrs::SignalType::Save, "item", serde_json::json!(i), data.as_object().unwrap().clone());
            Outgoing { routing_key: "item".into(), body: m.encode(), headers: Headers::new(), message_id: i.to_string() }
        })
        .collect();
    t.publisher().unwrap().publish(&messages).unwrap();

    let command = |crash: Option<&str>| {
        let mut cmd = Command::new(BIN);
        cmd.args([
            "consume",
            "-c",
            "item",
            "-w",
            "2",
            "--queue",
            "local_q",
            "--broker-url",
            &queue_url,
            "--database-url",
            &replica.url,
        ])
        .current_dir(&dir)
        .env_remove("CQRS_CRASH_POINT")
        .env("CQRS_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
        if let Some(p) = crash {
            cmd.env("CQRS_CRASH_POINT", p);
        }
        cmd
    };
    let out = command(Some("consumer.after_commit")).output().unwrap();
    assert_eq!(
        out.status.signal(),
        Some(6),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(t.count("local_q").unwrap(), 300, "nothing was acked");

    let consumer = command(None).spawn().unwrap();
    let count = || {
        use cqrs::db::SqlConn;
        replica
            .connect()
            .load_text(
                "SELECT CAST(count(*) AS TEXT) AS j FROM replica_items",
                vec![],
            )
            .unwrap()[0]
            .parse::<usize>()
            .unwrap()
    };
    wait_until(Duration::from_secs(60), "the replica to converge", || {
        count() == 300 && t.count("local_q").unwrap() == 0
    });
    assert_eq!(terminate(consumer).code(), Some(0));
}
