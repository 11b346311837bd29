//! The two example web services as processes on the real PostgreSQL and RabbitMQ, driven over
//! HTTP by a real client: creates, changes and deletes (concurrent), the replica read back over
//! its own API and equal to the master's, then SIGTERM: both exit 0 and the master's outbox is
//! empty, the last burst of writes included.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};
use std::time::Duration;

use cqrs_tests::rows::count;
use cqrs_tests::{Kind, TestBroker, TestDb, amqp_url, wait_until};
use serde_json::{Value, json};

const MASTER: &str = env!("CARGO_BIN_EXE_example-master-service");
const REPLICA: &str = env!("CARGO_BIN_EXE_example-replica-service");

/// A service process and the base URL it printed.
struct Service {
    child: Child,
    base: String,
    // Kept open: the service's stdout must not become a broken pipe.
    _stdout: BufReader<ChildStdout>,
}

impl Service {
    fn start(bin: &str, db: &TestDb, broker: &TestBroker, dir: &PathBuf) -> Service {
        let mut child = Command::new(bin)
            .args(["--listen", "127.0.0.1:0"])
            .env("DATABASE_URL", &db.url)
            .env("CQRS_BROKER_URL", amqp_url())
            .env("CQRS_EXCHANGE", &broker.exchange)
            .env("CQRS_QUEUE", &broker.queue)
            .env("CQRS_SERVICE_NAME", &broker.queue)
            .env("CQRS_LOG", "warn")
            .env_remove("CQRS_CONFIG")
            .current_dir(dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("{bin}: {e}"));
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        let base = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("{bin} printed {line:?}, not its address"))
            .to_string();
        let service = Service {
            child,
            base,
            _stdout: stdout,
        };
        wait_until(Duration::from_secs(60), "the service to be ready", || {
            service.get("/readyz").0 == 200
        });
        service
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn get(&self, path: &str) -> (u16, String) {
        answer(agent().get(&self.url(path)).call())
    }

    fn items(&self) -> Vec<Value> {
        let (status, body) = self.get("/items");
        assert_eq!(status, 200, "{body}");
        serde_json::from_str(&body).unwrap()
    }

    /// SIGTERM, then the exit status (within 30 s).
    fn terminate(mut self) -> ExitStatus {
        let pid = self.child.id().to_string();
        assert!(
            Command::new("kill")
                .args(["-TERM", &pid])
                .status()
                .unwrap()
                .success()
        );
        let mut status = None;
        wait_until(
            Duration::from_secs(30),
            "the service to stop on SIGTERM",
            || {
                status = self.child.try_wait().unwrap();
                status.is_some()
            },
        );
        status.unwrap()
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A client that hands back every status rather than failing on 4xx and 5xx.
fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into()
}

fn answer(r: Result<ureq::http::Response<ureq::Body>, ureq::Error>) -> (u16, String) {
    let mut r = r.expect("the service answers");
    let status = r.status().as_u16();
    (status, r.body_mut().read_to_string().unwrap())
}

fn create(master: &Service, name: &str, value: i64) -> i64 {
    let (status, body) = answer(
        agent()
            .post(&master.url("/items"))
            .send_json(json!({ "name": name, "value": value })),
    );
    assert_eq!(status, 201, "{body}");
    serde_json::from_str::<Value>(&body).unwrap()["id"]
        .as_i64()
        .unwrap()
}

fn patch(master: &Service, id: i64, change: Value) -> (u16, String) {
    answer(
        agent()
            .patch(&master.url(&format!("/items/{id}")))
            .send_json(change),
    )
}

fn delete(master: &Service, id: i64) -> u16 {
    answer(agent().delete(&master.url(&format!("/items/{id}"))).call()).0
}

/// The master's items and the replica's, by id, once they are equal (within 60 s).
fn converged(master: &Service, replica: &Service) -> BTreeMap<i64, Value> {
    let by_id = |items: Vec<Value>| -> BTreeMap<i64, Value> {
        items
            .into_iter()
            .map(|i| (i["id"].as_i64().unwrap(), i))
            .collect()
    };
    let want = by_id(master.items());
    let mut got = BTreeMap::new();
    let equal = (0..600).any(|_| {
        got = by_id(replica.items());
        got == want || {
            std::thread::sleep(Duration::from_millis(100));
            false
        }
    });
    assert!(
        equal,
        "the replica's items differ from the master's:\nmaster {want:?}\nreplica {got:?}"
    );
    want
}

#[test]
fn the_example_services_replicate_over_http_and_stop_cleanly_on_sigterm() {
    let master_db = TestDb::empty(Kind::Postgres);
    let replica_db = TestDb::empty(Kind::Postgres);
    for (db, sql) in [
        (&master_db, example_master::SCHEMA_SQL),
        (&replica_db, example_replica::SCHEMA_SQL),
    ] {
        let mut c = db.connect();
        c.migrate().unwrap();
        c.batch_execute(sql).unwrap();
    }
    let broker = TestBroker::new();
    let dir = std::env::temp_dir().join(format!("cqrs-services-{}", broker.queue));
    std::fs::create_dir_all(&dir).unwrap();
    // The replica first: its consume declares the queue the master's messages are routed to.
    let replica = Service::start(REPLICA, &replica_db, &broker, &dir);
    let master = Service::start(MASTER, &master_db, &broker, &dir);

    // Concurrent requests: 8 clients create 10 items each, then change and delete some.
    let ids: Vec<i64> = std::thread::scope(|s| {
        let clients: Vec<_> = (0..8)
            .map(|c| {
                let master = &master;
                s.spawn(move || {
                    let mut mine = Vec::new();
                    for i in 0..10 {
                        let id = create(master, &format!("item {c}-{i}"), c * 100 + i);
                        mine.push(id);
                        if i % 3 == 0 {
                            let (status, body) = patch(master, id, json!({ "value": -id }));
                            assert_eq!(status, 200, "{body}");
                        }
                        if i % 4 == 1 {
                            let change = json!({ "name": format!("renamed {id}"), "value": 7 });
                            assert_eq!(patch(master, id, change).0, 200);
                        }
                        if i % 5 == 2 {
                            assert_eq!(delete(master, id), 204);
                        }
                    }
                    mine
                })
            })
            .collect();
        clients
            .into_iter()
            .flat_map(|c| c.join().unwrap())
            .collect()
    });
    assert_eq!(ids.len(), 80);
    // A request that cannot be done changes nothing and says why.
    assert_eq!(delete(&master, -1), 404);
    assert_eq!(patch(&master, -1, json!({ "value": 1 })).0, 404);
    assert_eq!(patch(&master, ids[0], json!({})).0, 400);

    let items = converged(&master, &replica);
    assert_eq!(items.len(), 80 - 16, "8 clients deleted 2 items each");
    let changed_twice = items
        .values()
        .filter(|i| i["name"].as_str().unwrap().starts_with("renamed"))
        .count();
    assert!(changed_twice > 0);
    assert!(items.values().any(|i| i["revision"] == 2), "{items:?}");
    let (status, one) = replica.get(&format!("/items/{}", ids[1]));
    assert_eq!((status, one.contains("renamed")), (200, true), "{one}");
    assert_eq!(replica.get(&format!("/items/{}", ids[2])).0, 404);

    // Operations routes on the services' own routers.
    let (status, metrics) = master.get("/metrics");
    assert_eq!(status, 200);
    assert!(
        metrics.contains("cqrs_relay_messages_total{outcome=\"confirmed\"}"),
        "{metrics}"
    );
    let (status, metrics) = replica.get("/metrics");
    assert_eq!(status, 200);
    assert!(
        metrics.contains("cqrs_consumer_messages_total{outcome=\"applied\"}"),
        "{metrics}"
    );
    assert_eq!(master.get("/healthz").0, 200);

    // A last burst, and SIGTERM at once: the relay publishes it before the process exits.
    let last: Vec<i64> = (0..20).map(|i| create(&master, "last", i)).collect();
    let master_status = master.terminate();
    assert!(master_status.success(), "master service: {master_status}");
    let mut mc = master_db.connect();
    assert_eq!(count(&mut mc, "SELECT count(*) AS n FROM cqrs_outbox"), 0);
    let mut rc = replica_db.connect();
    wait_until(
        Duration::from_secs(60),
        "the last burst to reach the replica",
        || {
            count(
                &mut rc,
                "SELECT count(*) AS n FROM replica_items WHERE title = 'last'",
            ) == last.len() as i64
        },
    );
    let replica_status = replica.terminate();
    assert!(
        replica_status.success(),
        "replica service: {replica_status}"
    );
    assert_eq!(
        broker.count(&broker.queue),
        0,
        "the replica acked everything"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
