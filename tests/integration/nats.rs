//! What only NATS JetStream does or needs: the server drops a re-published message id, names must
//! be subject tokens, servers older than 2.10 are refused, and a server restart under a running
//! consumer loses nothing. The behaviour every transport shares is in `transports.rs`.

use std::time::Duration;

use cqrs::error::ErrorKind;
use cqrs::transport::{Confirm, Headers, Outgoing};
use cqrs::{Settings, Shutdown};
use cqrs_tests::*;

/// A relay that publishes a batch again after a crash (its rows not yet deleted) sends the same
/// outbox ids: the server stores each once, and the replica gets each once.
#[test]
fn a_republished_outbox_id_is_stored_once() {
    let t = TestTransport::new(Engine::Nats);
    t.declare(&["item"]);
    let batch: Vec<Outgoing> = (0..3)
        .map(|i| Outgoing {
            routing_key: "item".into(),
            body: ItemState::new(i, 0, at(i)).save().encode(),
            headers: Headers::new(),
            message_id: format!("outbox-{i}"),
        })
        .collect();
    let broker = t.broker();
    let mut publisher = broker.publisher().unwrap();
    for _ in 0..2 {
        assert_eq!(
            publisher.publish(&batch).unwrap(),
            vec![Confirm::Delivered; 3]
        );
    }
    let mut inbox = broker.inbox(t.queue(), 100, &[]).unwrap();
    let mut ids = Vec::new();
    while let Some(last) = {
        let got = inbox.receive(100, Duration::from_millis(500)).unwrap();
        ids.extend(got.iter().map(|d| d.message_id.clone().unwrap()));
        got.last().map(|d| d.tag)
    } {
        inbox.ack_up_to(last).unwrap();
    }
    assert_eq!(ids, ["outbox-0", "outbox-1", "outbox-2"]);
}

/// A queue, exchange or model name that is not a subject token is a usage error naming it, not
/// a consumer on the wrong subjects.
#[test]
fn names_that_are_not_subject_tokens_are_usage_errors() {
    let t = TestTransport::new(Engine::Nats);
    let broker = t.broker();
    for (queue, id, named) in [
        ("billing.items", "item", "billing.items"),
        ("billing", "it*em", "it*em"),
        ("bill ing", "item", "bill ing"),
    ] {
        let err = broker
            .declare_replica(queue, &[id.to_string()], &[])
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config, "{err}");
        assert!(err.to_string().contains(named), "{err}");
    }
    let settings = Settings {
        exchange: "cqrs.main".into(),
        ..t.settings.clone()
    };
    let err = cqrs::transport::connect(&settings, "test")
        .err()
        .expect("a dotted exchange is refused");
    assert_eq!(err.kind(), ErrorKind::Config, "{err}");
    assert!(err.to_string().contains("cqrs.main"), "{err}");
}

/// Debian's nats-server 2.9 has no consumers with several filter subjects: connecting says so
/// and which version it found, instead of failing at the first declare.
#[test]
fn a_server_older_than_2_10_is_refused_with_its_version() {
    let old = PrivateNats::start_binary(std::path::Path::new("/usr/sbin/nats-server"), Vec::new());
    let settings = Settings {
        broker_url: Some(old.url()),
        ..Settings::default()
    };
    let err = cqrs::transport::connect(&settings, "test")
        .err()
        .expect("2.9 is refused");
    assert_eq!(err.kind(), ErrorKind::Config, "{err}");
    assert!(
        err.to_string().contains("2.9.") && err.to_string().contains("2.10"),
        "{err}"
    );
}

/// The server killed and started again on its store while `consume` runs and messages keep
/// coming: every message published before and after applies once the worker is back.
#[test]
fn a_server_restart_under_a_running_consumer_loses_nothing() {
    let mut t = TestTransport::new(Engine::Nats);
    t.declare(&["item"]);
    let replica = TestDb::new(Kind::Postgres);
    let registry = item_registry();
    let settings = Settings {
        database_url: Some(replica.url.clone()),
        ..t.settings.clone()
    };
    let shutdown = Shutdown::new();
    let stats = std::thread::scope(|s| {
        let stop = StopOnDrop(&shutdown);
        let consumer = s.spawn(|| cqrs::service::consume(&registry, &settings, 2, &[], &shutdown));
        for id in 0..100 {
            t.publish(
                "item",
                &ItemState::new(id, 0, at(id)).save().encode(),
                &format!("a{id}"),
            );
        }
        let nats = t.nats().unwrap();
        nats.kill();
        std::thread::sleep(Duration::from_millis(500));
        nats.boot();
        for id in 100..200 {
            t.publish(
                "item",
                &ItemState::new(id, 0, at(id)).save().encode(),
                &format!("b{id}"),
            );
        }
        wait_until(
            Duration::from_secs(60),
            "all 200 rows after the restart",
            || items(&mut replica.connect()).len() == 200,
        );
        drop(stop);
        consumer.join().unwrap().unwrap()
    });
    assert_eq!((stats.retried, stats.dead_lettered), (0, 0), "{stats:?}");
}

fn body(id: i64) -> Vec<u8> {
    ItemState::new(id, 0, at(id)).save().encode()
}

/// Every delivery that arrives until none has for 500 ms, acked: (routing key, message id).
fn take_all(inbox: &mut dyn cqrs::transport::Inbox) -> Vec<(String, String)> {
    let mut out = Vec::new();
    loop {
        let got = inbox.receive(100, Duration::from_millis(500)).unwrap();
        let Some(last) = got.last() else {
            return out;
        };
        inbox.ack_up_to(last.tag).unwrap();
        out.extend(
            got.into_iter()
                .map(|d| (d.routing_key, d.message_id.unwrap_or_default())),
        );
    }
}

/// Declaring a replica again with other models adds them, as RabbitMQ bindings add: a worker of
/// an older deploy reconnecting with fewer models takes none away.
#[test]
fn declaring_again_adds_models_and_takes_none_away() {
    let t = TestTransport::new(Engine::Nats);
    t.declare(&["item", "typed"]);
    t.declare(&["item"]);
    assert_eq!(t.publish("typed", &body(1), "t1"), Confirm::Delivered);
    assert_eq!(t.publish("item", &body(2), "i2"), Confirm::Delivered);
    let broker = t.broker();
    let mut inbox = broker.inbox(t.queue(), 100, &[]).unwrap();
    let mut got = take_all(&mut *inbox);
    got.sort();
    assert_eq!(
        got,
        [
            ("item".to_string(), "i2".to_string()),
            ("typed".into(), "t1".into())
        ]
    );
}

/// A message no replica's consumer takes is unroutable, as on RabbitMQ (an interest stream would
/// ack it and drop it), so `keep_unroutable` keeps it; a replica declared later gets only what is
/// published from then on, as a new RabbitMQ queue does.
#[test]
fn a_message_nobody_takes_is_unroutable_and_a_new_replica_starts_from_now() {
    let t = TestTransport::new(Engine::Nats);
    t.declare(&["item"]);
    assert_eq!(t.publish("typed", &body(1), "t1"), Confirm::Unroutable);
    assert_eq!(t.publish("item", &body(2), "i2"), Confirm::Delivered);
    let broker = t.broker();
    broker
        .declare_replica("late", &["item".to_string(), "typed".to_string()], &[])
        .unwrap();
    assert_eq!(
        t.publish("typed", &body(3), "t3"),
        Confirm::Delivered,
        "the new replica's model routes at once"
    );
    let mut late = broker.inbox("late", 100, &[]).unwrap();
    assert_eq!(
        take_all(&mut *late),
        [("typed".to_string(), "t3".to_string())]
    );
    let mut first = broker.inbox(t.queue(), 100, &[]).unwrap();
    assert_eq!(
        take_all(&mut *first),
        [("item".to_string(), "i2".to_string())]
    );
}

/// A header value with a line break (a multi-line error text) is sent with spaces, not a panic.
#[test]
fn a_header_with_a_line_break_is_sent() {
    let t = TestTransport::new(Engine::Nats);
    t.declare(&["item"]);
    let mut headers = Headers::new();
    headers.insert("cqrs-error".into(), "CHECK (value >= 0)\nfailed".into());
    let broker = t.broker();
    let out = Outgoing {
        routing_key: "item".into(),
        body: body(1),
        headers,
        message_id: "m1".into(),
    };
    assert_eq!(
        broker.publisher().unwrap().publish(&[out]).unwrap(),
        [Confirm::Delivered]
    );
    let mut inbox = broker.inbox(t.queue(), 100, &[]).unwrap();
    let got = inbox.receive(10, Duration::from_secs(2)).unwrap();
    assert_eq!(got[0].headers["cqrs-error"], "CHECK (value >= 0) failed");
}

/// Purging a replica's queue drops what waits for it and nothing published after, and does not
/// bring back what the stream keeps for another replica.
#[test]
fn purge_drops_what_waits_and_keeps_what_comes_after() {
    let t = TestTransport::new(Engine::Nats);
    t.declare(&["item"]);
    let broker = t.broker();
    broker
        .declare_replica("other", &["item".to_string()], &[])
        .unwrap();
    for i in 0..5 {
        t.publish("item", &body(i), &format!("old{i}"));
    }
    assert_eq!(broker.purge(t.queue()).unwrap(), 5);
    t.publish("item", &body(9), "new9");
    let mut inbox = broker.inbox(t.queue(), 100, &[]).unwrap();
    assert_eq!(
        take_all(&mut *inbox),
        [("item".to_string(), "new9".to_string())]
    );
    let mut other = broker.inbox("other", 100, &[]).unwrap();
    assert_eq!(
        take_all(&mut *other).len(),
        6,
        "the other replica keeps its messages"
    );
}

/// `tls://`: the server's certificate checked against a private CA (`--tls-ca-file`), then
/// publish and consume through TLS; another CA is refused at connect.
#[test]
fn tls_publishes_and_consumes_trusting_a_private_ca() {
    let dir = std::env::temp_dir().join(unique("cqrs_nats_tls"));
    std::fs::create_dir_all(&dir).unwrap();
    let write_cert = |name: &str| {
        let c = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
        let (cert, key) = (
            dir.join(format!("{name}.pem")),
            dir.join(format!("{name}.key")),
        );
        std::fs::write(&cert, c.cert.pem()).unwrap();
        std::fs::write(&key, c.signing_key.serialize_pem()).unwrap();
        (cert, key)
    };
    let (cert, key) = write_cert("server");
    let (other, _) = write_cert("other");
    let path = |p: &std::path::Path| p.to_str().unwrap().to_string();
    let nats = PrivateNats::start_with(vec![
        "--tls".into(),
        "--tlscert".into(),
        path(&cert),
        "--tlskey".into(),
        path(&key),
    ]);
    let settings = Settings {
        broker_url: Some(format!("tls://localhost:{}", nats.port)),
        tls_ca_file: Some(cert.clone()),
        ..Settings::default()
    };
    let broker = cqrs::transport::connect(&settings, "tls").unwrap();
    broker
        .declare_replica("tq", &["item".to_string()], &[])
        .unwrap();
    let out = Outgoing {
        routing_key: "item".into(),
        body: body(1),
        headers: Headers::new(),
        message_id: "m1".into(),
    };
    assert_eq!(
        broker.publisher().unwrap().publish(&[out]).unwrap(),
        [Confirm::Delivered]
    );
    let mut inbox = broker.inbox("tq", 10, &[]).unwrap();
    let got = inbox.receive(10, Duration::from_secs(5)).unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].body, body(1));
    inbox.ack_up_to(got[0].tag).unwrap();
    drop(inbox);
    let wrong = Settings {
        tls_ca_file: Some(other),
        ..settings
    };
    let err = cqrs::transport::connect(&wrong, "tls")
        .err()
        .expect("an untrusted certificate is refused");
    assert!(err.to_string().contains("connecting to NATS"), "{err}");
    drop(nats);
    let _ = std::fs::remove_dir_all(&dir);
}
