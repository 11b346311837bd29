//! `--metrics-addr` of `relay` and `consume` (`cqrs::telemetry`), scraped during a real sync over
//! PostgreSQL and a broker: the counters say what happened to every message, and readiness
//! follows the broker link. One test binary per broker (`metrics`, `metrics_nats`): the metrics
//! recorder is one per process.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

use cqrs::value::SqlValue;
use cqrs::{MasterSpec, Registry, Settings, Shutdown, TableReplica, atomic};
use cqrs_tests::transports::{Engine, TestTransport};
use cqrs_tests::*;

/// A port nobody listens on now.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `GET path` on the listener: (status code, body).
fn get(port: u16, path: &str) -> (u16, String) {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return (0, String::new());
    };
    write!(s, "GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let code = out
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = out.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    (code, body.to_string())
}

/// The value of the sample `name{labels}` (or `name` without labels) in a scrape, 0 if absent.
fn sample(scrape: &str, series: &str) -> f64 {
    scrape
        .lines()
        .find_map(|l| l.strip_prefix(series).and_then(|v| v.strip_prefix(' ')))
        .map_or(0.0, |v| v.trim().parse().unwrap())
}

/// The broker URL's `host:port`.
fn host_port(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let rest = rest.rsplit_once('@').map_or(rest, |(_, r)| r);
    rest.split(['/', '?']).next().unwrap_or(rest)
}

/// Counters and readiness of a relay and a consumer on `engine` during a real sync, the broker
/// link cut and healed.
pub fn counters_and_readiness_during_a_real_sync(engine: Engine) {
    let t = TestTransport::new(engine);
    let (master, replica) = (TestDb::new(Kind::Postgres), TestDb::new(Kind::Postgres));
    // The master keeps any value; the replica's CHECK refuses three of them (poison).
    let mut db = master.connect();
    db.batch_execute("ALTER TABLE items DROP CONSTRAINT items_value_check")
        .unwrap();
    db.batch_execute(
        "INSERT INTO items (id, name, value, updated, cqrs_revision, cqrs_updated)
         SELECT i, 'item ' || i, CASE WHEN i % 33 = 0 THEN -4611686018427387905 ELSE i END,
                now(), 0, now()
         FROM generate_series(1, 100) AS i",
    )
    .unwrap();

    // The consumer and the relay reach the broker through a proxy the test can cut.
    let url = t.settings.broker_url.clone().unwrap();
    let host = host_port(&url);
    let proxy = ChaosProxy::start(host.parse().unwrap());
    let (consume_port, relay_port) = (free_port(), free_port());
    let proxied = url.replacen(host, &format!("127.0.0.1:{}", proxy.port), 1);
    let consume_settings = Settings {
        database_url: Some(replica.url.clone()),
        broker_url: Some(proxied.clone()),
        metrics_addr: Some(format!("127.0.0.1:{consume_port}")),
        max_retries: 0,
        ..t.settings.clone()
    };
    let relay_settings = Settings {
        database_url: Some(master.url.clone()),
        broker_url: Some(proxied),
        metrics_addr: Some(format!("127.0.0.1:{relay_port}")),
        queue: None,
        ..t.settings.clone()
    };
    let registry = Registry::new().with_replica(TableReplica::new(item_spec()));
    let shutdown = Shutdown::new();
    std::thread::scope(|s| {
        let _stop = StopOnDrop(&shutdown);
        let consume =
            s.spawn(|| cqrs::service::consume(&registry, &consume_settings, 2, &[], &shutdown));
        wait_until(Duration::from_secs(30), "consume to be ready", || {
            get(consume_port, "/readyz").0 == 200
        });
        assert_eq!(get(consume_port, "/healthz"), (200, "ok\n".into()));
        // A real sync: 100 rows, 3 of them poison, queued before the relay starts (its backlog
        // gauge is read once as it starts, then every 5 s).
        let spec = std::sync::Arc::new(MasterSpec::new(item_spec()));
        let keys: Vec<SqlValue> = (1..=100).map(SqlValue::BigInt).collect();
        atomic(&mut db, |tx| {
            tx.sync_rows(&spec, &keys, None);
            Ok(())
        })
        .unwrap();
        let relay = s.spawn(|| cqrs::service::relay(&relay_settings, &shutdown));
        wait_until(Duration::from_secs(15), "the relay's listener", || {
            get(relay_port, "/healthz").0 == 200
        });
        let early = get(relay_port, "/metrics").1;
        assert_eq!(
            sample(&early, "cqrs_outbox_pending{cqrs_id=\"item\"}"),
            100.0,
            "{early}"
        );
        wait_until(
            Duration::from_secs(60),
            "97 applied and 3 dead letters",
            || t.broker().letters(t.queue()).unwrap().total() == 3 && count_rows(&replica) == 97,
        );
        let relayed = get(relay_port, "/metrics").1;
        assert_eq!(
            sample(&relayed, "cqrs_relay_messages_total{outcome=\"confirmed\"}"),
            100.0,
            "{relayed}"
        );
        assert_eq!(sample(&relayed, "cqrs_relay_published_total"), 100.0);
        // Read again within 5 s: nothing waits any more.
        wait_until(
            Duration::from_secs(15),
            "the backlog gauge to drop to 0",
            || {
                let relayed = get(relay_port, "/metrics").1;
                relayed.contains("cqrs_outbox_pending{cqrs_id=\"item\"} 0")
            },
        );
        let consumed = get(consume_port, "/metrics").1;
        for (outcome, n) in [("applied", 97.0), ("dead_lettered", 3.0)] {
            assert_eq!(
                sample(
                    &consumed,
                    &format!("cqrs_consumer_messages_total{{outcome=\"{outcome}\"}}")
                ),
                n,
                "{consumed}"
            );
        }
        // A SYNC re-sends an old change: no lag is taken from it. Captured changes have one.
        assert_eq!(
            sample(&consumed, "cqrs_consumer_lag_seconds_count"),
            0.0,
            "{consumed}"
        );
        let applied = || {
            let consumed = get(consume_port, "/metrics").1;
            sample(
                &consumed,
                "cqrs_consumer_messages_total{outcome=\"applied\"}",
            )
        };
        rename(&mut db, &[1, 2, 4, 5, 7]);
        wait_until(Duration::from_secs(30), "the five captured changes", || {
            applied() == 102.0
        });
        let consumed = get(consume_port, "/metrics").1;
        assert_eq!(
            sample(&consumed, "cqrs_consumer_lag_seconds_count"),
            5.0,
            "{consumed}"
        );
        assert!(
            sample(&consumed, "cqrs_consumer_lag_seconds_sum") < 60.0,
            "{consumed}"
        );
        assert!(sample(&consumed, "cqrs_consumer_batch_size_count") >= 1.0);
        assert!(
            consumed.contains("# HELP cqrs_consumer_lag_seconds "),
            "{consumed}"
        );
        assert_eq!(sample(&consumed, "cqrs_up"), 1.0);
        assert_eq!(get(relay_port, "/readyz").0, 200);

        // The broker link cut: not ready while it is down, ready again when it is back; the
        // relay too, idle (nothing to publish) when the link goes.
        proxy.cut();
        wait_until(Duration::from_secs(30), "readiness to turn false", || {
            get(consume_port, "/readyz").0 == 503
        });
        wait_until(
            Duration::from_secs(30),
            "the idle relay's readiness to turn false",
            || get(relay_port, "/readyz").0 == 503,
        );
        let (_, why) = get(relay_port, "/readyz");
        assert!(why.contains("relay: broker"), "{why}");
        proxy.heal();
        wait_until(
            Duration::from_secs(60),
            "readiness to turn true again",
            || get(consume_port, "/readyz").0 == 200 && get(relay_port, "/readyz").0 == 200,
        );
        // Back for real: a change committed now is relayed and applied.
        rename(&mut db, &[8]);
        wait_until(Duration::from_secs(30), "the change after the cut", || {
            applied() == 103.0
        });
        let relayed = get(relay_port, "/metrics").1;
        assert!(
            sample(&relayed, "cqrs_reconnects_total{role=\"relay\"}") >= 1.0,
            "{relayed}"
        );
        let consumed = get(consume_port, "/metrics").1;
        assert!(
            sample(&consumed, "cqrs_reconnects_total{role=\"consumer\"}") >= 1.0,
            "{consumed}"
        );
        assert_eq!(get(consume_port, "/nowhere").0, 404);
        shutdown.trigger();
        consume.join().unwrap().unwrap();
        relay.join().unwrap().unwrap();
    });
    // The listeners closed with their processes' shutdown.
    assert_eq!(get(consume_port, "/healthz").0, 0);
}

/// Rename the master's rows `ids`, captured: one SAVE each.
fn rename(db: &mut cqrs::Db, ids: &[i64]) {
    atomic(db, |tx| {
        tx.touch_many::<ItemMaster>(ids)?;
        for id in ids {
            tx.conn().execute(
                "UPDATE items SET name = name || '+' WHERE id = $1",
                vec![SqlValue::BigInt(*id)],
            )?;
        }
        Ok(())
    })
    .unwrap();
}

/// The master side of `items`, for capture.
struct ItemMaster;

impl cqrs::MasterModel for ItemMaster {
    const CQRS_ID: &'static str = "item";
    fn master_spec() -> MasterSpec {
        MasterSpec::new(item_spec())
    }
}

fn count_rows(db: &TestDb) -> usize {
    cqrs::db::SqlConn::load_text(
        &mut db.connect(),
        "SELECT CAST(count(*) AS TEXT) AS j FROM items",
        vec![],
    )
    .unwrap()[0]
        .parse()
        .unwrap()
}
