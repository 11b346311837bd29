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
