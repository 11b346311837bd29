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
