//! One model's own settings (`[models.<cqrs_id>]`) as the relay and the consumer honour them:
//! retries, retry delays, message TTL, apply batch size and statement timeout, each for that
//! model's messages only.

use std::time::Duration;

use chrono::Utc;
use cqrs::config::ModelLayer;
use cqrs::db::SqlConn;
use cqrs::message::Expires;
use cqrs::outbox::{NewRow, enqueue};
use cqrs::transport::memory::MemoryBroker;
use cqrs::transport::{HEADER_ERROR, Headers, dead_letter_queue};
use cqrs::value::SqlValue;
use cqrs::{Consumer, Message, Registry, Relay, Settings, SignalType, TableReplica};
use cqrs_tests::*;
use serde_json::json;

fn registry() -> Registry {
    Registry::new()
        .with_replica(TableReplica::new(item_spec()))
        .with_replica(TableReplica::new(wide_spec()))
}

/// Global settings (2 retries, 20 ms apart) plus `models`.
fn settings(models: &[(&str, ModelLayer)]) -> Settings {
    Settings {
        max_retries: 2,
        retry_delays: vec![Duration::from_millis(20)],
        models: models
            .iter()
            .map(|(id, m)| (id.to_string(), m.clone()))
            .collect(),
        ..Settings::default()
    }
}

fn wide(id: i64, c: Option<&str>) -> Message {
    let mut data = json!({"id": id, "a": id, "b": -id, "d": "d", "e": 7, "f": "f",
        "cqrs_revision": 0, "cqrs_updated": "2026-11-23 12:00:00.000001+00:00"});
    if let Some(c) = c {
        data["c"] = json!(c);
    }
    Message::new(
        SignalType::Save,
        "wide",
        json!(id),
        data.as_object().unwrap().clone(),
    )
}

fn publish(broker: &MemoryBroker, m: &Message) {
    broker.publish(&m.cqrs_id, m.encode(), Headers::new());
}

/// The dead letters of queue `rq` as (cqrs_id, pk, retries, reason).
fn dead_letters(broker: &MemoryBroker) -> Vec<(String, i64, u32, String)> {
    broker
        .peek(&dead_letter_queue("rq"))
        .iter()
        .map(|d| {
            let m = Message::decode(&d.body).unwrap();
            let pk = m.instance_pk.as_i64().unwrap();
            (m.cqrs_id, pk, m.retries, d.headers[HEADER_ERROR].clone())
        })
        .collect()
}

both!(
    /// `wide` is dead-lettered after its own 0 retries, `item` waits out its own 10-minute delay
    /// (the global 20 ms would have brought it back within the drain), and `item`'s batch size of
    /// 10 makes `sync` write its 35 rows in 4 transactions where the global 500 takes one.
    fn a_models_retries_delays_and_batch_size_are_its_own(kind: Kind) {
        let t = TestDb::new(kind);
        let broker = MemoryBroker::new();
        broker.declare_replica_queue("rq", &["item", "wide"]);
        for id in 0..35i64 {
            let mut s = ItemState::new(id, 0, at(id));
            if id == 7 {
                s.value = i64::MIN; // the replica's CHECK refuses it
            }
            publish(&broker, &s.save());
        }
        for id in 0..5i64 {
            publish(&broker, &wide(id, (id != 3).then_some("c")));
        }
        let settings = settings(&[
            (
                "item",
                ModelLayer {
                    retry_delays_ms: Some(vec![600_000]),
                    batch_size: Some(10),
                    ..ModelLayer::default()
                },
            ),
            (
                "wide",
                ModelLayer {
                    max_retries: Some(0),
                    ..ModelLayer::default()
                },
            ),
        ]);
        let registry = registry();
        let mut c = Consumer::new(&registry, &settings, t.connect(), broker.inbox("rq"));
        c.drain(Duration::from_millis(300)).unwrap();
        let stats = c.stats();
        assert_eq!(stats.apply.applied, 34 + 4);
        assert_eq!((stats.retried, stats.dead_lettered), (1, 1), "{stats:?}");
        assert_eq!(
            broker.delayed_len(),
            1,
            "item 7 waits its own 10 minutes, not the global 20 ms"
        );
        let dead = dead_letters(&broker);
        assert_eq!(dead.len(), 1, "{dead:?}");
        assert_eq!((dead[0].0.as_str(), dead[0].1, dead[0].2), ("wide", 3, 0));
        assert!(dead[0].3.contains("no `c`"), "{}", dead[0].3);
        assert_eq!(items(c.db()).len(), 34);
        assert_eq!(count(c.db(), "SELECT count(*) AS n FROM wide"), 4);

        // item's batch size of 10 is its rows per `sync` transaction (the global one is 500).
        let master = TestDb::new(kind);
        let mut db = master.connect();
        for id in 0..35i64 {
            let sql = sql_for(
                &db,
                "INSERT INTO items (id, name, value, updated, cqrs_revision, cqrs_updated) \
                 VALUES ($1, 'n', $2, $3, 0, $4)",
            );
            db.execute(
                &sql,
                vec![
                    SqlValue::BigInt(id),
                    SqlValue::BigInt(id),
                    SqlValue::Timestamptz(at(id)),
                    SqlValue::Timestamptz(at(id)),
                ],
            )
            .unwrap();
        }
        let settings = Settings {
            database_url: Some(master.url.clone()),
            ..settings
        };
        let spec = std::sync::Arc::new(cqrs::MasterSpec::new(item_spec()));
        let mut steps = Vec::new();
        let synced =
            cqrs::ops::sync::run(&settings, None, &spec, "{}", &mut |n| steps.push(n)).unwrap();
        assert_eq!(synced, (35, 35));
        assert_eq!(steps, [10, 20, 30, 35]);
    }
);

/// PostgreSQL's statement timeout per model, as django-cqrs's `CQRS_QUERY_TIMEOUT`: 300 ms cancels
/// item's slow row (a trigger sleeps 0.6 s for it), which is dead-lettered with the reason while
/// the other items apply; wide turns any timeout off (`query_timeout_ms = 0`) and its slow row
/// (0.4 s) applies, after item's (in the same transaction first, which times out on item's row,
/// then alone). The 300 ms is ours (`query_timeout_ms`),
/// then the database's own (`ALTER DATABASE … SET statement_timeout`, which an unset
/// `query_timeout_ms` leaves in force and wide's 0 overrides).
#[test]
fn a_query_timeout_cancels_only_its_models_slow_statements() {
    for server_side in [false, true] {
        query_timeouts(server_side);
    }
}

fn query_timeouts(server_side: bool) {
    let t = TestDb::new(Kind::Postgres);
    let mut db = t.connect();
    db.exec_script(
        "CREATE FUNCTION slow_item() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN IF NEW.name = 'slow' THEN PERFORM pg_sleep(0.6); END IF; RETURN NEW; END $$;
         CREATE FUNCTION slow_wide() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN IF NEW.c = 'slow' THEN PERFORM pg_sleep(0.4); END IF; RETURN NEW; END $$;
         CREATE TRIGGER slow BEFORE INSERT OR UPDATE ON items FOR EACH ROW EXECUTE FUNCTION slow_item();
         CREATE TRIGGER slow BEFORE INSERT OR UPDATE ON wide FOR EACH ROW EXECUTE FUNCTION slow_wide();",
    )
    .unwrap();
    let mut settings = settings(&[(
        "wide",
        ModelLayer {
            query_timeout_ms: Some(0),
            ..ModelLayer::default()
        },
    )]);
    settings.max_retries = 0;
    let session_default = if server_side {
        let name = t.url.rsplit('/').next().unwrap();
        db.batch_execute(&format!(
            "ALTER DATABASE {name} SET statement_timeout = 300"
        ))
        .unwrap();
        "300ms"
    } else {
        settings.query_timeout = Some(Duration::from_millis(300));
        "0"
    };
    let broker = MemoryBroker::new();
    broker.declare_replica_queue("rq", &["item", "wide"]);
    for id in 0..10i64 {
        let mut s = ItemState::new(id, 0, at(id));
        if id == 4 {
            s.name = "slow".into();
        }
        publish(&broker, &s.save());
    }
    publish(&broker, &wide(1, Some("slow")));
    let registry = registry();
    let mut c = Consumer::new(&registry, &settings, t.connect(), broker.inbox("rq"));
    c.drain(Duration::from_millis(300)).unwrap();
    assert_eq!(
        c.stats().splits,
        1,
        "a timed-out batch is applied one message per transaction, not halved"
    );
    let dead = dead_letters(&broker);
    assert_eq!(dead.len(), 1, "server side {server_side}: {dead:?}");
    assert_eq!((dead[0].0.as_str(), dead[0].1), ("item", 4));
    assert!(dead[0].3.contains("statement timeout"), "{}", dead[0].3);
    let got = items(&mut db);
    assert_eq!(got.len(), 9);
    assert!(!got.contains_key(&4));
    assert_eq!(
        count(&mut db, "SELECT count(*) AS n FROM wide WHERE c = 'slow'"),
        1,
        "server side {server_side}"
    );
    // The setting lasted only as long as its transaction.
    let mut c_db = c.into_db();
    assert_eq!(
        c_db.load_text("SELECT current_setting('statement_timeout') AS j", vec![])
            .unwrap(),
        [session_default]
    );
}

both!(
    /// The relay stamps each message with its model's TTL: `item` 60 s, `wide` the global day.
    fn the_relay_gives_each_model_its_own_ttl(kind: Kind) {
        let t = TestDb::new(kind);
        let mut db = t.connect();
        let row = |m: Message| NewRow {
            message_id: uuid::Uuid::new_v4(),
            cqrs_id: m.cqrs_id.clone(),
            signal_type: m.signal_type,
            pk: m.instance_pk.to_string(),
            routing_key: m.cqrs_id.clone(),
            body: String::from_utf8(m.encode()).unwrap(),
        };
        enqueue(
            &mut db,
            &[
                row(ItemState::new(1, 0, at(0)).save()),
                row(wide(1, Some("c"))),
            ],
        )
        .unwrap();
        let broker = MemoryBroker::new();
        broker.declare_replica_queue("rq", &["item", "wide"]);
        let settings = settings(&[(
            "item",
            ModelLayer {
                message_ttl_seconds: Some(60),
                ..ModelLayer::default()
            },
        )]);
        let before = Utc::now();
        let mut relay = Relay::new(t.connect(), broker.clone(), settings);
        assert_eq!(relay.run_once().unwrap(), 2);
        let after = Utc::now();
        let ttl = |cqrs_id: &str| {
            let got = broker.peek("rq");
            let m = got
                .iter()
                .map(|d| Message::decode(&d.body).unwrap())
                .find(|m| m.cqrs_id == cqrs_id)
                .unwrap();
            let Expires::At(at) = m.expires else {
                panic!("{cqrs_id}: no expiry: {:?}", m.expires)
            };
            (at - before, at - after)
        };
        let (most, least) = ttl("item");
        assert!(
            least <= chrono::Duration::seconds(60) && most >= chrono::Duration::seconds(59),
            "{most:?} {least:?}"
        );
        let (most, least) = ttl("wide");
        assert!(
            least <= chrono::Duration::days(1)
                && most >= chrono::Duration::days(1) - chrono::Duration::seconds(1),
            "{most:?} {least:?}"
        );
    }
);

/// An application's `cqrs config` prints a model's own settings as a line the file takes back,
/// and refuses (exit 2, one line naming it) a `[models.<cqrs_id>]` the application does not have.
#[test]
fn config_shows_model_settings_and_refuses_unknown_models() {
    let dir = std::env::temp_dir().join(unique("cqrs_config"));
    std::fs::create_dir_all(&dir).unwrap();
    let config = |text: &str| {
        std::fs::write(dir.join("cqrs.toml"), text).unwrap();
        std::process::Command::new(env!("CARGO_BIN_EXE_cqrs-interop"))
            .arg("config")
            .env_clear()
            .current_dir(&dir)
            .output()
            .unwrap()
    };
    let o = config(
        "query_timeout_ms = 1500\n[models.interop_item]\nmax_retries = 3\nretry_delays_ms = [100, 900]\n",
    );
    let (out, err) = (
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr),
    );
    assert_eq!(o.status.code(), Some(0), "{err}");
    let line = |key: &str| {
        out.lines()
            .find(|l| l.starts_with(&format!("{key} ")))
            .unwrap_or_else(|| panic!("no {key} in {out}"))
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
    };
    assert_eq!(
        line("models"),
        "models = { \"interop_item\" = { max_retries = 3, retry_delays_ms = [100, 900] } } # file cqrs.toml"
    );
    assert_eq!(
        line("query_timeout_ms"),
        "query_timeout_ms = 1500 # file cqrs.toml"
    );

    // The printed line, pasted into a file, reads back the same.
    let models_line = out.lines().find(|l| l.starts_with("models ")).unwrap();
    let pasted = models_line.split(" # ").next().unwrap().trim();
    let o = config(&format!("{pasted}\n"));
    assert_eq!(o.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&o.stdout).contains("\"interop_item\" = { max_retries = 3"));

    let o = config("[models.interop_itme]\nmax_retries = 3\n");
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        err.contains("\"interop_itme\"") && err.contains("interop_item"),
        "{err}"
    );
    let o = config("[models.interop_item]\nmax_retrys = 3\n");
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("max_retrys"));
    std::fs::remove_dir_all(&dir).unwrap();
}
