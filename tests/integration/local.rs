//! The embedded SQLite-file transport: fan-out, competing consumers, retries, dead letters.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use cqrs::transport::local::LocalTransport;
use cqrs::transport::{Headers, Outgoing, Publisher, dead_letter_queue};
use cqrs::{BatchReport, Change, Consumer, Db, Outcome, Registry, Replica, Settings, TableReplica};
use cqrs_tests::*;

fn queue_file() -> (TestDb, String) {
    let t = TestDb::empty(Kind::Sqlite);
    let url = t.url.replace("replica.db", "queue.db");
    (t, url)
}

fn outgoing(m: &cqrs::Message) -> Outgoing {
    Outgoing {
        routing_key: m.cqrs_id.clone(),
        body: m.encode(),
        headers: Headers::new(),
        message_id: uuid::Uuid::new_v4().to_string(),
    }
}

#[test]
fn messages_fan_out_to_every_bound_queue() {
    let (_dir, url) = queue_file();
    let t = LocalTransport::open(&url, Duration::from_secs(30)).unwrap();
    t.declare_replica("a", &["item".into()]).unwrap();
    t.declare_replica("b", &["item".into()]).unwrap();
    let msgs: Vec<Outgoing> = (0..10)
        .map(|i| outgoing(&ItemState::new(i, 0, at(i)).save()))
        .collect();
    let confirms = t.publisher().unwrap().publish(&msgs).unwrap();
    assert!(
        confirms
            .iter()
            .all(|c| *c == cqrs::transport::Confirm::Delivered)
    );
    assert_eq!((t.count("a").unwrap(), t.count("b").unwrap()), (10, 10));
    let unbound = t
        .publisher()
        .unwrap()
        .publish(&[Outgoing {
            routing_key: "nobody".into(),
            ..msgs[0].clone()
        }])
        .unwrap();
    assert_eq!(unbound, [cqrs::transport::Confirm::Unroutable]);
}

/// Counts every change it is given (revisions would hide a double apply).
#[derive(Default)]
struct Recording(Mutex<BTreeMap<(String, i32), usize>>);

impl Replica for &'static Recording {
    fn cqrs_id(&self) -> &str {
        "item"
    }
    fn apply(&self, _db: &mut Db, changes: &[&Change]) -> cqrs::Result<BatchReport> {
        let mut seen = self.0.lock().unwrap();
        let mut report = BatchReport::default();
        for c in changes {
            *seen
                .entry((c.message.instance_pk.to_string(), c.message.revision()?))
                .or_default() += 1;
            report.outcomes.push(Outcome::Applied);
        }
        Ok(report)
    }
}

#[test]
fn two_competing_consumers_apply_each_message_exactly_once() {
    let (dir, url) = queue_file();
    let t = LocalTransport::open(&url, Duration::from_secs(30)).unwrap();
    t.declare_replica("q", &["item".into()]).unwrap();
    let msgs: Vec<Outgoing> = (0..500)
        .map(|i| outgoing(&ItemState::new(i % 50, (i / 50) as i32, at(i)).save()))
        .collect();
    t.publisher().unwrap().publish(&msgs).unwrap();
    let recording: &'static Recording = Box::leak(Box::default());
    let registry = Registry::new().with_replica(recording);
    let settings = Settings {
        batch_size: 7,
        ..Settings::default()
    };
    // Both start together: one that was still connecting could find the queue already empty.
    let ready = std::sync::Barrier::new(2);
    let received: Vec<usize> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..2)
            .map(|_| {
                let (registry, settings, t, dir, ready) = (&registry, &settings, &t, &dir, &ready);
                s.spawn(move || {
                    let mut c =
                        Consumer::new(registry, settings, dir.connect(), t.inbox("q").unwrap());
                    ready.wait();
                    c.drain(Duration::from_millis(300)).unwrap();
                    c.stats().received
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(
        received.iter().all(|n| *n > 0),
        "both consumers worked: {received:?}"
    );
    let seen = recording.0.lock().unwrap();
    assert_eq!(seen.len(), 500);
    assert!(
        seen.values().all(|n| *n == 1),
        "every message applied exactly once"
    );
    assert_eq!(t.count("q").unwrap(), 0);
}

#[test]
fn a_failing_message_is_retried_then_dead_lettered() {
    let (dir, url) = queue_file();
    let replica = TestDb::new(Kind::Sqlite);
    let t = LocalTransport::open(&url, Duration::from_secs(30)).unwrap();
    t.declare_replica("q", &["item".into()]).unwrap();
    let mut bad = ItemState::new(2, 0, at(0)).save();
    bad.instance_data.remove("name");
    let bad = outgoing(&bad);
    t.publisher()
        .unwrap()
        .publish(&[outgoing(&ItemState::new(1, 0, at(0)).save()), bad.clone()])
        .unwrap();
    let registry = Registry::new().with_replica(TableReplica::new(item_spec()));
    let settings = Settings {
        max_retries: 2,
        retry_delays: vec![Duration::from_millis(50)],
        ..Settings::default()
    };
    let mut c = Consumer::new(
        &registry,
        &settings,
        replica.connect(),
        t.inbox("q").unwrap(),
    );
    c.drain(Duration::from_millis(400)).unwrap();
    assert_eq!((c.stats().retried, c.stats().dead_lettered), (2, 1));
    assert_eq!(items(c.db()).keys().copied().collect::<Vec<_>>(), [1]);
    assert_eq!(t.count(&dead_letter_queue("q")).unwrap(), 1);
    let kinds = dir.connect_queue(&url).load_kinds();
    assert_eq!(kinds, ["apply"]);
    let ids = cqrs::db::SqlConn::load_text(
        &mut dir.connect_queue(&url),
        "SELECT message_id AS j FROM cqrs_local_messages WHERE queue LIKE 'dead_letter_%'",
        vec![],
    )
    .unwrap();
    assert_eq!(
        ids,
        [bad.message_id],
        "its retry copies kept the message id"
    );
}

trait QueueDb {
    fn connect_queue(&self, url: &str) -> Db;
}
impl QueueDb for TestDb {
    fn connect_queue(&self, url: &str) -> Db {
        Db::connect(url).unwrap()
    }
}
trait Kinds {
    fn load_kinds(self) -> Vec<String>;
}
impl Kinds for Db {
    fn load_kinds(mut self) -> Vec<String> {
        use cqrs::db::SqlConn;
        self.load_text("SELECT json_extract(headers, '$.\"cqrs-error-kind\"') AS j FROM cqrs_local_messages WHERE queue LIKE 'dead_letter_%'", vec![]).unwrap()
    }
}

#[test]
fn dead_letters_dump_retry_purge_on_the_local_transport() {
    use cqrs::ops::dead_letters::{Action, Filter, run};
    let (_dir, url) = queue_file();
    let replica = TestDb::new(Kind::Sqlite);
    let t = LocalTransport::open(&url, Duration::from_secs(30)).unwrap();
    t.declare_replica("q", &["item".into()]).unwrap();
    let mut expired = ItemState::new(7, 0, at(0)).save();
    expired.expires = cqrs::message::Expires::At(at(0));
    let first = outgoing(&expired);
    let expired_id = first.message_id.clone();
    t.publisher().unwrap().publish(&[first]).unwrap();
    let registry = Registry::new().with_replica(TableReplica::new(item_spec()));
    let settings = Settings::default();
    let consume = || {
        let mut c = Consumer::new(
            &registry,
            &settings,
            replica.connect(),
            t.inbox("q").unwrap(),
        );
        c.drain(Duration::from_millis(200)).unwrap();
        c.stats()
    };
    assert_eq!(consume().dead_lettered, 1);
    let dlq = dead_letter_queue("q");

    let mut out = Vec::new();
    let r = run(
        &mut t.letters("q").unwrap(),
        "q",
        Action::Dump,
        &Filter::default(),
        &mut out,
    )
    .unwrap();
    assert_eq!((r.total, r.done), (1, 1));
    assert_eq!(
        cqrs::Message::decode(String::from_utf8(out).unwrap().trim().as_bytes())
            .unwrap()
            .instance_pk,
        serde_json::json!(7)
    );
    assert_eq!(t.count(&dlq).unwrap(), 1, "dump keeps the letter");

    let (r, lines) = capture_json_logs(|| {
        run(
            &mut t.letters("q").unwrap(),
            "q",
            Action::Retry,
            &Filter::default(),
            &mut Vec::new(),
        )
        .unwrap()
    });
    assert_eq!(r.done, 1);
    assert_eq!(t.count(&dlq).unwrap(), 0);
    // The re-drive's log line names the message, its id the original's.
    let line = log_line(&lines, "retrying 1/1").expect("a line about the re-driven letter");
    assert_eq!(
        (
            &line["fields"]["cqrs_id"],
            &line["fields"]["pk"],
            &line["fields"]["revision"],
            &line["fields"]["message_id"]
        ),
        (
            &serde_json::json!("item"),
            &serde_json::json!("7"),
            &serde_json::json!(0),
            &serde_json::json!(expired_id)
        )
    );
    consume();
    assert_eq!(
        items(&mut replica.connect())
            .keys()
            .copied()
            .collect::<Vec<_>>(),
        [7],
        "the retried letter applies"
    );

    t.publisher()
        .unwrap()
        .publish(&[outgoing(&expired)])
        .unwrap();
    consume();
    assert_eq!(t.count(&dlq).unwrap(), 1);
    let r = run(
        &mut t.letters("q").unwrap(),
        "q",
        Action::Purge,
        &Filter::default(),
        &mut Vec::new(),
    )
    .unwrap();
    assert_eq!(r.done, 1);
    assert_eq!(t.count(&dlq).unwrap(), 0);
}

/// `consume` prunes the replica's tombstones past their retention when it starts (and hourly),
/// and keeps the others.
#[test]
fn consume_prunes_tombstones_past_their_retention() {
    use cqrs::value::SqlValue;
    let (_dir, queue_url) = queue_file();
    let replica = TestDb::new(Kind::Sqlite);
    let mut db = replica.connect();
    for (pk, days) in [("1", 15), ("2", 1)] {
        db.execute(
            "INSERT INTO cqrs_tombstones (cqrs_id, pk, revision, cqrs_updated, deleted_at) VALUES ('item', ?, 1, ?, ?)",
            vec![
                SqlValue::Text(pk.into()),
                SqlValue::Timestamptz(chrono::Utc::now()),
                SqlValue::Timestamptz(chrono::Utc::now() - chrono::Duration::days(days)),
            ],
        )
        .unwrap();
    }
    let registry = Registry::new().with_replica(TableReplica::new(item_spec()));
    let settings = Settings {
        database_url: Some(replica.url.clone()),
        broker_url: Some(queue_url),
        queue: Some("q".into()),
        ..Settings::default()
    };
    let shutdown = cqrs::Shutdown::new();
    let left = std::thread::scope(|s| {
        let _stop = StopOnDrop(&shutdown);
        let consume = s.spawn(|| cqrs::service::consume(&registry, &settings, 1, &[], &shutdown));
        wait_until(
            Duration::from_secs(20),
            "consume to prune the old tombstone",
            || !tombstones(&mut replica.connect(), "item").contains_key("1"),
        );
        shutdown.trigger();
        consume.join().unwrap().unwrap();
        tombstones(&mut replica.connect(), "item")
    });
    assert_eq!(left.keys().collect::<Vec<_>>(), ["2"]);
}
