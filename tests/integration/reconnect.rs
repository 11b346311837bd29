//! The relay and its database: a link cut under it (a restart, a network partition) is replaced
//! by a new connection once the database answers again; a commit in another process wakes it
//! through the outbox's notification.

use std::net::SocketAddr;
use std::time::Duration;

use cqrs::transport::memory::MemoryBroker;
use cqrs::{Relay, Settings, Shutdown, atomic};
use cqrs_tests::*;

/// `url` with its host and port replaced by a proxy's; the proxy forwards to the original.
fn through_proxy(url: &str) -> (ChaosProxy, String) {
    let (head, rest) = url.split_once('@').expect("a URL with user@host");
    let (host_port, path) = rest.split_once('/').expect("a URL with a database");
    let target: SocketAddr = host_port
        .replace("localhost", "127.0.0.1")
        .parse()
        .expect("host:port");
    let proxy = ChaosProxy::start(target);
    let via = format!("{head}@127.0.0.1:{}/{path}", proxy.port);
    (proxy, via)
}

/// The relay's database link is cut in the middle of its work: it was left with a dead
/// connection (and Diesel with a broken transaction state) forever; it now reconnects and
/// publishes what was captured after the cut.
#[test]
fn relay_reconnects_after_its_database_link_is_cut() {
    let t = TestDb::new(Kind::Postgres);
    let (proxy, via) = through_proxy(&t.url);
    let broker = MemoryBroker::new();
    broker.declare_replica_queue("q", &["item"]);
    let mut db = t.connect();
    atomic(&mut db, |tx| insert_m_items(tx, 2)).unwrap();
    let shutdown = Shutdown::new();
    std::thread::scope(|s| {
        let _stop = StopOnDrop(&shutdown);
        s.spawn(|| {
            let mut relay = Relay::new(
                cqrs::Db::connect(&via).unwrap(),
                broker.clone(),
                Settings::default(),
            )
            .reconnect_with(&via);
            relay.run(&shutdown).unwrap();
        });
        wait_until(
            Duration::from_secs(20),
            "the first rows to be published",
            || broker.queue_len("q") == 2,
        );
        proxy.cut();
        std::thread::sleep(Duration::from_millis(1500));
        proxy.heal();
        atomic(&mut db, |tx| insert_m_items(tx, 3)).unwrap();
        // A batch whose commit the cut interrupted is published again (at least once): the
        // count may pass 5, the outbox must empty.
        wait_until(
            Duration::from_secs(30),
            "the rows captured after the cut to be published",
            || broker.queue_len("q") >= 5 && cqrs::outbox::pending(&mut db).unwrap() == 0,
        );
    });
}

/// A row queued in the outbox by another connection (another process's capture) notifies the
/// outbox channel at commit, once per transaction, while a relay has said it is idle: what wakes a
/// relay in another process. While none is idle, writers do not notify (a NOTIFY serializes the
/// commits of every notifying writer, and a busy relay claims again without being told).
#[test]
fn an_outbox_insert_notifies_idle_listeners_at_commit_and_nobody_else() {
    use cqrs::db::listen::Listener;
    let t = TestDb::new(Kind::Postgres);
    let mut listener = Listener::listen(&t.url, cqrs::outbox::CHANNEL).unwrap();
    assert!(!listener.notified().unwrap(), "nothing committed yet");
    let mut db = t.connect();
    atomic(&mut db, |tx| insert_m_items(tx, 1)).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        !listener.notified().unwrap(),
        "no relay idle: no notification"
    );

    assert!(listener.announce_idle(Duration::from_secs(5)).unwrap());
    assert_eq!(
        count(&mut db, "SELECT count(*) AS n FROM cqrs_relay_idle"),
        1
    );
    db.write_transaction(|db| {
        atomic(db, |tx| insert_m_items(tx, 3))?;
        std::thread::sleep(Duration::from_millis(200));
        assert!(
            !listener.notified().unwrap(),
            "no notification before the outer transaction commits"
        );
        Ok(())
    })
    .unwrap();
    wait_until(Duration::from_secs(10), "the commit's notification", || {
        listener.notified().unwrap()
    });
    assert!(
        !listener.notified().unwrap(),
        "one transaction, one wake-up"
    );

    listener.announce_busy().unwrap();
    assert_eq!(
        count(&mut db, "SELECT count(*) AS n FROM cqrs_relay_idle"),
        0
    );
    atomic(&mut db, |tx| insert_m_items(tx, 1)).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    assert!(!listener.notified().unwrap(), "busy again: no notification");
}

/// An idle listener waits on its connection's socket: a commit in another process wakes it as
/// the notification arrives, not at the end of its timeout; with nothing to say it sleeps the
/// whole timeout; a connection the server ends is an error, not a wait.
#[test]
fn an_idle_listener_sleeps_until_the_notification_arrives() {
    use cqrs::db::listen::Listener;
    use std::time::Instant;
    let t = TestDb::new(Kind::Postgres);
    let mut listener = Listener::listen(&t.url, cqrs::outbox::CHANNEL).unwrap();
    assert!(listener.announce_idle(Duration::from_secs(5)).unwrap());

    let started = Instant::now();
    assert!(
        !listener.wait(Duration::from_millis(300)).unwrap(),
        "nothing committed"
    );
    assert!(
        started.elapsed() >= Duration::from_millis(290),
        "woke after {:?} with nothing to say",
        started.elapsed()
    );

    let writer = std::thread::spawn({
        let url = t.url.clone();
        move || {
            std::thread::sleep(Duration::from_millis(300));
            let mut db = cqrs::Db::connect(&url).unwrap();
            atomic(&mut db, |tx| insert_m_items(tx, 1)).unwrap();
        }
    });
    let started = Instant::now();
    assert!(listener.wait(Duration::from_secs(60)).unwrap());
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "woke only at its timeout"
    );
    writer.join().unwrap();

    let mut db = t.connect();
    count(
        &mut db,
        "SELECT count(*) AS n FROM (SELECT pg_terminate_backend(pid) FROM cqrs_relay_idle) AS k",
    );
    // The server's last words may come before the end of the stream: a wait or two may read
    // them first.
    let started = Instant::now();
    while listener.wait(Duration::from_secs(60)).is_ok() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "a terminated connection is not an error"
        );
    }
}

/// A writer that queued its outbox rows before the relay said it was idle checked for idle
/// relays too early to notify. Announcing waits for such writers (those writing to the outbox
/// then, and not readers or autovacuum: waiting on autovacuum's lock of the busy outbox held the
/// relay up to the bound at every announcement, commit→apply p99 400 ms in the bench), so a claim
/// right after it finds their rows; one that outlasts the bound is reported (`false`: the
/// relay's poll finds it). A row left by a relay killed while idle is cleared by the
/// next listener.
#[test]
fn announcing_idle_waits_for_the_writers_that_could_not_know() {
    use cqrs::db::listen::Listener;
    use std::time::Instant;
    let t = TestDb::new(Kind::Postgres);
    let mut listener = Listener::listen(&t.url, cqrs::outbox::CHANNEL).unwrap();
    let mut check = t.connect();
    let outbox = "SELECT count(*) AS n FROM cqrs_outbox";
    // Readers and autovacuum (here its lock, held by an open transaction) write nothing to the
    // outbox: the announcement does not wait for them.
    let mut vacuum = t.connect();
    vacuum
        .batch_execute("BEGIN; LOCK TABLE cqrs_outbox IN SHARE UPDATE EXCLUSIVE MODE")
        .unwrap();
    let mut reader = t.connect();
    reader
        .batch_execute("BEGIN; SELECT count(*) FROM cqrs_outbox")
        .unwrap();
    let started = Instant::now();
    assert!(listener.announce_idle(Duration::from_secs(10)).unwrap());
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "waited {:?} for transactions that write nothing",
        started.elapsed()
    );
    listener.announce_busy().unwrap();
    vacuum.batch_execute("COMMIT").unwrap();
    reader.batch_execute("COMMIT").unwrap();
    for (hold, settle, ended) in [(300, 10_000, true), (1_000, 100, false)] {
        let (queued_tx, queued) = std::sync::mpsc::channel();
        std::thread::scope(|s| {
            let writer = s.spawn(|| {
                let mut db = t.connect();
                db.write_transaction(|db| {
                    atomic(db, |tx| insert_m_items(tx, 2))?;
                    queued_tx.send(()).unwrap();
                    std::thread::sleep(Duration::from_millis(hold));
                    Ok(())
                })
                .unwrap();
            });
            queued.recv().unwrap();
            let before = count(&mut check, outbox);
            let started = Instant::now();
            let settled = listener
                .announce_idle(Duration::from_millis(settle))
                .unwrap();
            let waited = started.elapsed();
            assert_eq!(settled, ended, "held {hold} ms, bound {settle} ms");
            if ended {
                assert!(waited >= Duration::from_millis(200), "waited {waited:?}");
                assert_eq!(
                    count(&mut check, outbox),
                    before + 2,
                    "a claim after the announcement sees the writer's rows"
                );
            } else {
                assert!(waited < Duration::from_millis(hold), "waited {waited:?}");
            }
            writer.join().unwrap();
        });
        assert!(
            !listener.notified().unwrap(),
            "the writer checked before the announcement: it did not notify"
        );
        listener.announce_busy().unwrap();
    }

    // A relay killed while idle leaves its row (writers keep notifying); the next one clears it.
    assert!(listener.announce_idle(Duration::from_secs(1)).unwrap());
    drop(listener);
    wait_until(Duration::from_secs(10), "the killed session to end", || {
        count(
            &mut check,
            "SELECT count(*) AS n FROM pg_stat_activity WHERE pid IN (SELECT pid FROM cqrs_relay_idle)",
        ) == 0
    });
    assert_eq!(
        count(&mut check, "SELECT count(*) AS n FROM cqrs_relay_idle"),
        1
    );
    let _next = Listener::listen(&t.url, cqrs::outbox::CHANNEL).unwrap();
    assert_eq!(
        count(&mut check, "SELECT count(*) AS n FROM cqrs_relay_idle"),
        0
    );
}

/// A running relay says it is idle when the outbox is empty and busy while it publishes (its row
/// goes and comes back), and takes its row away when it stops.
#[test]
fn a_relay_announces_itself_idle_and_busy() {
    let t = TestDb::new(Kind::Postgres);
    let broker = MemoryBroker::new();
    broker.declare_replica_queue("q", &["item"]);
    let mut db = t.connect();
    let idle = "SELECT count(*) AS n FROM cqrs_relay_idle";
    let shutdown = Shutdown::new();
    std::thread::scope(|s| {
        let _stop = StopOnDrop(&shutdown);
        let relay = s.spawn(|| {
            let mut relay =
                Relay::new(t.connect(), broker.clone(), Settings::default()).reconnect_with(&t.url);
            relay.run(&shutdown).unwrap();
        });
        let mut check = t.connect();
        wait_until(Duration::from_secs(10), "the relay to be idle", || {
            count(&mut check, idle) == 1
        });
        let since = "SELECT COALESCE(max(CAST(extract(epoch FROM since) * 1000000 AS BIGINT)), 0) AS n \
                     FROM cqrs_relay_idle";
        for n in [1, 50] {
            let (before, idle_since) = (broker.queue_len("q"), count(&mut check, since));
            atomic(&mut db, |tx| insert_m_items(tx, n)).unwrap();
            wait_until(Duration::from_secs(10), "the rows to be published", || {
                broker.queue_len("q") == before + n as usize
            });
            wait_until(
                Duration::from_secs(10),
                "the relay to be idle again",
                || count(&mut check, idle) == 1 && count(&mut check, since) > idle_since,
            );
        }
        shutdown.trigger();
        relay.join().unwrap();
        assert_eq!(
            count(&mut check, idle),
            0,
            "a stopped relay waits for nobody"
        );
    });
}

/// SQLite has no notifications: a listener watches the file's data version, which another
/// connection's commit changes (and only its commit): what wakes a relay in another process.
#[test]
fn a_commit_to_a_sqlite_file_wakes_a_listener() {
    use cqrs::db::listen::Listener;
    let t = TestDb::new(Kind::Sqlite);
    let mut listener = Listener::listen(&t.url, cqrs::outbox::CHANNEL).unwrap();
    assert!(!listener.notified().unwrap(), "nothing committed yet");
    let mut db = t.connect();
    db.write_transaction(|db| {
        atomic(db, |tx| insert_m_items(tx, 3))?;
        assert!(
            !listener.notified().unwrap(),
            "nothing seen before the transaction commits"
        );
        Ok(())
    })
    .unwrap();
    assert!(listener.notified().unwrap(), "the commit is seen");
    assert!(!listener.notified().unwrap(), "one commit, one wake-up");
}

/// Several broker URLs (a cluster's nodes): the first that answers is used, an unreachable one
/// is skipped, each reconnect goes on to the next URL after the one last used, and every
/// password in the list is redacted.
#[test]
fn a_list_of_broker_urls_fails_over_and_goes_round() {
    let b = TestBroker::new();
    let (p1, via1) = through_proxy(&amqp_url());
    let (p2, via2) = through_proxy(&amqp_url());
    let list = format!("amqp://guest:s3cret@127.0.0.1:1/%2f,{via1},{via2}");
    let redacted = cqrs::config::redact(&list);
    assert!(
        !redacted.contains("s3cret") && !redacted.contains("guest:guest"),
        "{redacted}"
    );
    let settings = Settings {
        broker_url: Some(list),
        ..b.settings()
    };
    let broker = cqrs::transport::connect(&settings, "urls").unwrap();
    let declare = || broker.declare_replica(&b.queue, &["item".into()], &b.delays);
    declare().unwrap();
    assert_eq!(
        (p1.open_links(), p2.open_links()),
        (1, 0),
        "the first that answers"
    );
    p1.cut();
    wait_until(
        Duration::from_secs(20),
        "a declare through the second URL",
        || declare().is_ok(),
    );
    assert_eq!((p1.open_links(), p2.open_links()), (0, 1));
    // Round again: after the second, the first (unreachable) then the proxy healed meanwhile.
    p1.heal();
    p2.cut();
    wait_until(
        Duration::from_secs(20),
        "a declare through the first proxy again",
        || declare().is_ok(),
    );
    assert_eq!((p1.open_links(), p2.open_links()), (1, 0));
}

/// The heartbeat a broker URL asks for (`?heartbeat=7`) is the one the connection runs with, as
/// RabbitMQ lists it: what lets a process notice a node lost without a TCP reset within seconds.
#[test]
fn a_broker_urls_heartbeat_is_the_connections() {
    let b = TestBroker::new();
    let settings = Settings {
        broker_url: Some(format!("{}?heartbeat=7", amqp_url())),
        service_name: format!("hb-{}", b.queue),
        ..b.settings()
    };
    let _broker = cqrs::transport::connect(&settings, "relay").unwrap();
    let name = format!("hb-{}-relay", b.queue);
    let listed = rabbitmqctl(&["list_connections", "client_properties", "timeout"]);
    let timeout = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["client_properties"].to_string().contains(&name))
        .map(|c| c["timeout"].clone());
    assert_eq!(timeout, Some(serde_json::json!(7)), "{listed}");
}
