//! `cqrs::background`: the relay and consume on threads inside an application's process.

use std::time::Duration;

use cqrs::atomic;
use cqrs::background;
use cqrs_tests::*;

/// A relay stopped before it could publish (its shutdown fired as it started) still publishes
/// what the outbox holds before it returns: what a web service's last requests committed.
#[test]
fn a_stopped_background_relay_publishes_what_is_left_in_the_outbox() {
    let b = TestBroker::new();
    b.declare(&["item"]);
    let t = TestDb::new(Kind::Postgres);
    let mut db = t.connect();
    atomic(&mut db, |tx| insert_m_items(tx, 30)).unwrap();
    let settings = cqrs::Settings {
        database_url: Some(t.url.clone()),
        batch_size: 7,
        ..b.settings()
    };
    let shutdown = cqrs::Shutdown::new();
    shutdown.trigger();
    let relay = background::relay(settings, &shutdown);
    let stats = relay.stop_blocking().unwrap();
    assert_eq!(stats.published, 30);
    assert_eq!(cqrs::outbox::pending(&mut db).unwrap(), 0);
    assert_eq!(b.drain(&b.queue).len(), 30);
}

/// A service that renders the metrics on its own route (no `metrics_addr`, so no listener of
/// the library's) still gets the outbox backlog gauges: the background relay refreshes them once
/// the recorder is installed, before it has a broker.
#[test]
fn a_background_relay_keeps_the_outbox_gauges_for_a_service_that_renders_them() {
    let t = TestDb::new(Kind::Postgres);
    let mut db = t.connect();
    // A cqrs_id of this test's own: the gauges are the process's, shared with other tests.
    let rows: Vec<cqrs::outbox::NewRow> = (0..3)
        .map(|pk| cqrs::outbox::NewRow {
            message_id: uuid::Uuid::new_v4(),
            cqrs_id: "background_gauged".into(),
            signal_type: cqrs::SignalType::Save,
            pk: pk.to_string(),
            routing_key: "background_gauged".into(),
            body: "{}".into(),
        })
        .collect();
    cqrs::outbox::enqueue(&mut db, &rows).unwrap();
    cqrs::telemetry::install().unwrap();
    let unreachable_broker = cqrs::Settings {
        database_url: Some(t.url.clone()),
        broker_url: Some("amqp://guest:guest@127.0.0.1:1/%2f".into()),
        metrics_addr: None,
        ..cqrs::Settings::default()
    };
    let shutdown = cqrs::Shutdown::new();
    let relay = background::relay(unreachable_broker, &shutdown);
    let wanted = r#"cqrs_outbox_pending{cqrs_id="background_gauged"} 3"#;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let mut text = String::new();
    while std::time::Instant::now() < deadline {
        text = cqrs::telemetry::render().unwrap();
        if text.lines().any(|l| l == wanted) {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = relay.stop_blocking();
    assert!(
        text.lines().any(|l| l == wanted),
        "no {wanted:?} in:\n{text}"
    );
    assert_eq!(
        cqrs::outbox::pending(&mut db).unwrap(),
        3,
        "nothing could be published"
    );
}

/// Awaiting a background part resolves when it ends on its own: only a fatal error does, and
/// the error is handed back (a service must not serve on without its relay or workers).
#[test]
fn a_background_part_that_fails_is_seen_by_whoever_awaits_it() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let shutdown = cqrs::Shutdown::new();
    let t = TestDb::new(Kind::Postgres);
    let no_broker = cqrs::Settings {
        database_url: Some(t.url.clone()),
        broker_url: None,
        ..cqrs::Settings::default()
    };
    let mut relay = background::relay(no_broker, &shutdown);
    let ended =
        rt.block_on(async { tokio::time::timeout(Duration::from_secs(30), &mut relay).await });
    let err = ended.expect("the relay ended").unwrap_err();
    assert!(err.to_string().contains("needs a broker"), "{err}");
    assert!(
        relay.readiness().check().unwrap_err()[0].contains("needs a broker"),
        "{:?}",
        relay.readiness().check()
    );
    let workers = background::consume(
        cqrs::Registry::new(),
        cqrs::Settings::default(),
        2,
        &shutdown,
    );
    let err = rt.block_on(workers).unwrap_err();
    assert!(err.to_string().contains("no replica models"), "{err}");
    assert!(
        !shutdown.is_triggered(),
        "a part's failure does not fire the caller's shutdown"
    );
}

/// `Shutdown::wait` wakes an async waiter on a trigger from another thread, and a child's.
#[test]
fn shutdown_wait_wakes_async_waiters() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let parent = cqrs::Shutdown::new();
    let child = parent.child();
    let (p, c) = (parent.clone(), child.clone());
    let waiters = rt.spawn(async move {
        tokio::join!(p.wait(), c.wait());
    });
    std::thread::sleep(Duration::from_millis(50));
    assert!(!waiters.is_finished());
    parent.trigger();
    rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(5), waiters)
            .await
            .expect("both waiters woke")
            .unwrap()
    });
}
