//! Messages that must not stop a replica: whatever is wrong with one message (its routing, its
//! bytes, its values) dead-letters that message with its kind and reason, and the consumer goes
//! on with the next one (issue 13's rule).

use std::time::{Duration, Instant};

use cqrs::transport::memory::MemoryBroker;
use cqrs::transport::{HEADER_ERROR, HEADER_ERROR_KIND, Headers, dead_letter_queue};
use cqrs::{Consumer, Message, Registry, Settings, TableReplica};
use cqrs_tests::*;

fn registry() -> Registry {
    item_and_typed_registry(Kind::Postgres)
}

fn header(props: &lapin::BasicProperties, k: &str) -> Option<String> {
    props
        .headers()
        .as_ref()?
        .inner()
        .get(k)
        .and_then(|v| v.as_long_string())
        .map(|s| s.to_string())
}

/// A SAVE for a model the replica does not know, published with a key the queue is bound to
/// (`item`), and one whose cqrs_id would make a routing key over 255 bytes: each lands in the
/// dead-letter queue as `unknown-model` (by the default exchange: nothing is bound for its key),
/// and the good message behind them applies.
#[test]
fn unknown_models_on_a_bound_key_are_dead_lettered_and_the_consumer_goes_on() {
    let b = TestBroker::new();
    let replica = TestReplica::new(&b, registry());
    let mut ghost = ItemState::new(1, 0, at(0)).save();
    ghost.cqrs_id = "ghost".into();
    let mut long = ItemState::new(2, 0, at(0)).save();
    long.cqrs_id = "x".repeat(300);
    b.publish_raw("item", &ghost.encode());
    b.publish_raw("item", &long.encode());
    b.publish_raw("item", &ItemState::new(3, 0, at(0)).save().encode());
    let mut c = replica.consumer();
    wait_until(
        Duration::from_secs(20),
        "two dead letters and the good row",
        || {
            c.poll(Duration::from_millis(200))
                .expect("a message for an unknown model must not stop the consumer");
            c.stats().dead_lettered >= 2 && !items(c.db()).is_empty()
        },
    );
    assert_eq!(items(c.db()).keys().copied().collect::<Vec<_>>(), [3]);
    drop(c);
    let dead = b.drain(&dead_letter_queue(&b.queue));
    let mut got: Vec<(String, Option<String>)> = dead
        .iter()
        .map(|(_, props, body)| {
            let m = Message::decode(body).unwrap();
            (m.cqrs_id, header(props, HEADER_ERROR_KIND))
        })
        .collect();
    got.sort();
    assert_eq!(
        got,
        [
            ("ghost".to_string(), Some("unknown-model".to_string())),
            ("x".repeat(300), Some("unknown-model".to_string())),
        ]
    );
    assert_eq!(b.count(&b.queue), 0, "nothing left in the replica queue");
}

fn memory_settings() -> Settings {
    Settings {
        max_retries: 1,
        retry_delays: vec![Duration::from_millis(20)],
        ..Settings::default()
    }
}

/// Values PostgreSQL refuses whatever the column allows (a NUL byte in text, `\u0000` in
/// jsonb) are that message's fault: it is retried, then dead-lettered as `apply`, and the rest of
/// its batch applies; the consumer never exits on them.
#[test]
fn values_postgres_refuses_are_dead_lettered_and_the_rest_applies() {
    let t = TestDb::new(Kind::Postgres);
    let broker = MemoryBroker::new();
    broker.declare_replica_queue("rq", &["item", "typed"]);
    let mut nul = ItemState::new(1, 0, at(0));
    nul.name = "a\u{0}b".into();
    broker.publish("item", nul.save().encode(), Headers::new());
    broker.publish(
        "item",
        ItemState::new(2, 0, at(0)).save().encode(),
        Headers::new(),
    );
    let (_, body) = capture("30_typed_create.json").remove(0);
    let mut bad_json = Message::decode(&body).unwrap();
    bad_json.expires = cqrs::message::Expires::Never; // captured long ago
    bad_json
        .instance_data
        .insert("tags".into(), serde_json::json!({"k": "a\u{0}b"}));
    broker.publish("typed", bad_json.encode(), Headers::new());

    let registry = registry();
    let settings = memory_settings();
    let mut c = Consumer::new(&registry, &settings, t.connect(), broker.inbox("rq"));
    wait_until(Duration::from_secs(20), "two dead letters", || {
        c.poll(Duration::from_millis(50))
            .expect("a value the database refuses must not stop the consumer");
        c.stats().dead_lettered >= 2
    });
    assert_eq!(items(c.db()).keys().copied().collect::<Vec<_>>(), [2]);
    let kinds: Vec<(String, String)> = broker
        .peek(&dead_letter_queue("rq"))
        .into_iter()
        .map(|m| {
            let id = Message::decode(&m.body).unwrap().cqrs_id;
            (id, m.headers[HEADER_ERROR_KIND].clone())
        })
        .collect();
    assert_eq!(
        kinds,
        [
            ("item".to_string(), "apply".to_string()),
            ("typed".to_string(), "apply".to_string())
        ]
    );
}

/// Text the replica database's encoding cannot hold (Japanese into a LATIN1 database) is that
/// message's fault like a NUL byte: retried, dead-lettered as `apply`, and the rest applies
/// (including text LATIN1 does hold).
#[test]
fn text_the_database_encoding_cannot_hold_is_dead_lettered() {
    let t = TestDb::postgres_encoded("LATIN1");
    let broker = MemoryBroker::new();
    broker.declare_replica_queue("rq", &["item"]);
    let mut foreign = ItemState::new(1, 0, at(0));
    foreign.name = "日本".into();
    broker.publish("item", foreign.save().encode(), Headers::new());
    let mut latin = ItemState::new(2, 0, at(0));
    latin.name = "café".into();
    broker.publish("item", latin.save().encode(), Headers::new());

    let registry = registry();
    let settings = memory_settings();
    let mut c = Consumer::new(&registry, &settings, t.connect(), broker.inbox("rq"));
    wait_until(Duration::from_secs(20), "a dead letter", || {
        c.poll(Duration::from_millis(50))
            .expect("text the database cannot hold must not stop the consumer");
        c.stats().dead_lettered >= 1
    });
    let rows = items(c.db());
    assert_eq!(rows.keys().copied().collect::<Vec<_>>(), [2]);
    assert_eq!(rows[&2].name, "café");
    let letters = broker.peek(&dead_letter_queue("rq"));
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].headers[HEADER_ERROR_KIND], "apply");
    assert!(
        letters[0].headers[HEADER_ERROR].contains("LATIN1"),
        "{:?}",
        letters[0].headers
    );
}

/// A directed SYNC to a queue name so long its routing key cannot exist (over 255 bytes) is
/// unroutable, like one to a queue nobody declared: the relay counts it and goes on with the
/// rest of its batch instead of panicking in the AMQP client.
#[test]
fn a_routing_key_over_255_bytes_is_unroutable_not_a_crash() {
    let b = TestBroker::new();
    b.transport
        .declare_replica(&b.queue, &["item".into()], &b.delays)
        .unwrap();
    let t = TestDb::new(Kind::Postgres);
    let mut db = t.connect();
    let row = |routing_key: String, id: i64| cqrs::outbox::NewRow {
        message_id: uuid::Uuid::new_v4(),
        cqrs_id: "item".into(),
        signal_type: cqrs::SignalType::Sync,
        pk: id.to_string(),
        routing_key,
        body: String::from_utf8(ItemState::new(id, 0, at(0)).sync().encode()).unwrap(),
    };
    let long = cqrs::transport::directed_key(&"q".repeat(300), "item");
    cqrs::outbox::enqueue(&mut db, &[row(long, 1), row("item".into(), 2)]).unwrap();
    let settings = b.settings();
    let mut relay = cqrs::Relay::new(db, b.transport.publisher().unwrap(), settings);
    assert_eq!(relay.run_once().unwrap(), 2);
    let stats = relay.stats();
    assert_eq!((stats.published, stats.unroutable, stats.failed), (1, 1, 0));
    assert_eq!(cqrs::outbox::pending(&mut t.connect()).unwrap(), 0);
    let got: Vec<i64> = b
        .drain(&b.queue)
        .iter()
        .map(|(_, _, body)| Message::decode(body).unwrap().instance_pk.as_i64().unwrap())
        .collect();
    assert_eq!(got, [2]);
}

/// Fails its first batch with a fatal error (neither the data's fault nor a lost connection:
/// what a bug or a broken deploy gives), then applies normally: the worker that met the error
/// stops, another worker would carry on alone.
struct FailsOnce {
    inner: TableReplica,
    failed: std::sync::atomic::AtomicBool,
}

impl cqrs::Replica for FailsOnce {
    fn cqrs_id(&self) -> &str {
        self.inner.cqrs_id()
    }
    fn apply(
        &self,
        db: &mut cqrs::Db,
        changes: &[&cqrs::Change],
    ) -> cqrs::Result<cqrs::BatchReport> {
        if !self.failed.swap(true, std::sync::atomic::Ordering::SeqCst) {
            return Err(cqrs::Error::new(cqrs::ErrorKind::Database, "a fatal fault"));
        }
        self.inner.apply(db, changes)
    }
}

/// `consume -w 2` where one worker stops on a fatal error: the process does not run on degraded
/// with one worker — every worker stops and `consume` returns the error (the CLI exits 1 for a
/// supervisor to restart it), its metrics listener included.
#[test]
fn a_worker_that_fails_stops_consume_instead_of_running_degraded() {
    let b = TestBroker::new();
    let t = TestDb::new(Kind::Postgres);
    let registry = Registry::new().with_replica(FailsOnce {
        inner: TableReplica::new(item_spec()),
        failed: Default::default(),
    });
    let settings = Settings {
        database_url: Some(t.url.clone()),
        metrics_addr: Some("127.0.0.1:0".into()),
        ..b.settings()
    };
    // Bound before anything is published (consume declares the same again).
    b.transport
        .declare_replica(&b.queue, &["item".into()], &b.delays)
        .unwrap();
    let shutdown = cqrs::Shutdown::new();
    let _stop = StopOnDrop(&shutdown);
    std::thread::scope(|s| {
        let consume = s.spawn(|| cqrs::service::consume(&registry, &settings, 2, &[], &shutdown));
        b.publish_raw("item", &ItemState::new(1, 0, at(0)).save().encode());
        let deadline = Instant::now() + Duration::from_secs(30);
        while !consume.is_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        if !consume.is_finished() {
            shutdown.trigger(); // let the scope end, then fail
            let _ = consume.join();
            panic!("consume ran on with a failed worker (30 s after the failure)");
        }
        let err = consume
            .join()
            .unwrap()
            .expect_err("consume reports the failure");
        assert!(err.to_string().contains("a fatal fault"), "{err}");
    });
}

/// A replica on SQLite consuming queue `q` of a fresh queue file (bound for `item`).
struct QueueFile {
    _dir: TestDb,
    replica: TestDb,
    transport: std::sync::Arc<cqrs::transport::local::LocalTransport>,
    registry: Registry,
    settings: Settings,
}

impl QueueFile {
    fn new() -> QueueFile {
        let dir = TestDb::empty(Kind::Sqlite);
        let url = dir.url.replace("replica.db", "queue.db");
        let transport =
            cqrs::transport::local::LocalTransport::open(&url, Duration::from_secs(30)).unwrap();
        transport.declare_replica("q", &["item".into()]).unwrap();
        QueueFile {
            _dir: dir,
            replica: TestDb::new(Kind::Sqlite),
            transport,
            registry: registry(),
            settings: Settings::default(),
        }
    }

    /// Publish `m` as a master would, on `routing_key`.
    fn send(&self, routing_key: &str, m: &Message) {
        use cqrs::transport::{Outgoing, Publisher};
        let out = Outgoing {
            routing_key: routing_key.into(),
            body: m.encode(),
            headers: Headers::new(),
            message_id: uuid::Uuid::new_v4().to_string(),
        };
        self.transport.publisher().unwrap().publish(&[out]).unwrap();
    }

    /// Consume until the queue is idle.
    fn consume(&self) -> cqrs::consumer::ConsumerStats {
        let inbox = self.transport.inbox("q").unwrap();
        let mut c = Consumer::new(
            &self.registry,
            &self.settings,
            self.replica.connect(),
            inbox,
        );
        c.drain(Duration::from_millis(200)).unwrap();
        c.stats()
    }
}

/// A broadcast SYNC that was dead-lettered (here: expired) and brought back by `dead-letters
/// retry` arrives on `cqrs.<queue>.<id>` with `retries` 0, which is what a directed SYNC looks
/// like; the judgement made on first receipt travels with the letter, so it is still applied as a
/// broadcast SYNC and cannot overwrite the replica's newer row with an older state.
#[test]
fn a_retried_broadcast_sync_stays_broadcast() {
    use cqrs::ops::dead_letters::{Action, Filter, run};
    use cqrs::transport::HEADER_DIRECTED;
    let q = QueueFile::new();
    let (t, send) = (&q.transport, |m: &Message| q.send("item", m));
    let mut newer = ItemState::new(7, 5, at(5_000));
    newer.name = "newer".into();
    send(&newer.save());
    let mut old_sync = ItemState::new(7, 3, at(3_000));
    old_sync.name = "older".into();
    let mut old_sync = old_sync.sync();
    old_sync.expires = cqrs::message::Expires::At(at(0));
    send(&old_sync);

    let consume = || q.consume();
    assert_eq!(consume().dead_lettered, 1);
    let mut letters = t.letters("q").unwrap();
    let letter = cqrs::transport::Letters::next_letter(&mut letters)
        .unwrap()
        .unwrap();
    assert_eq!(
        letter.headers.get(HEADER_DIRECTED).map(String::as_str),
        Some("false"),
        "the dead letter says how the SYNC was judged"
    );
    drop(letters);

    let r = run(
        &mut t.letters("q").unwrap(),
        "q",
        Action::Retry,
        &Filter::default(),
        &mut Vec::new(),
    )
    .unwrap();
    assert_eq!(r.done, 1);
    consume();
    let row = &items(&mut q.replica.connect())[&7];
    assert_eq!((row.rev, row.name.as_str()), (5, "newer"));
}

both!(
    /// The deleted-rows pipeline's tombstone carries the row's own `cqrs_updated` (the master's
    /// clock), not the replica's: when the master re-creates the pk, its SAVE (revision 0, later
    /// by the master's clock) applies even though the replica's clock is far ahead of it.
    fn a_pk_recreated_after_the_deleted_pipeline_applies(kind: Kind) {
        let t = TestDb::new(kind);
        let mut db = t.connect();
        let registry = item_registry();
        apply_items(&mut db, vec![ItemState::new(5, 2, at(1_000)).save()]);
        let input = format!(
            "item,{}\n[5]\n",
            cqrs::message::format_datetime(&chrono::Utc::now())
        );
        let n = cqrs::ops::diff::deleted_sync_replica(&mut db, &registry, &mut input.as_bytes())
            .unwrap();
        assert_eq!(n, 1);
        assert!(items(&mut db).is_empty());
        assert_eq!(tombstones(&mut db, "item")["5"], (3, at(1_000)));
        // Re-created on the master a second later by its clock (the replica's is years ahead).
        let mut again = ItemState::new(5, 0, at(2_000));
        again.name = "again".into();
        apply_items(&mut db, vec![again.save()]);
        let rows = items(&mut db);
        assert_eq!((rows[&5].rev, rows[&5].name.as_str()), (0, "again"));
    }
);

both!(
    /// Keys dense enough to be read as one index range (1, 3 of rows 1-3) still mean only those
    /// keys: the deleted-rows pipeline removes rows 1 and 3 and leaves row 2, which lies between
    /// them; diff-replica reports only the listed pk whose revision differs.
    fn a_key_range_read_touches_only_the_keys_listed(kind: Kind) {
        let t = TestDb::new(kind);
        let mut db = t.connect();
        let registry = item_registry();
        apply_items(
            &mut db,
            (1..=3)
                .map(|id| ItemState::new(id, 1, at(1_000)).save())
                .collect(),
        );
        let header = format!(
            "item,{}",
            cqrs::message::format_datetime(&chrono::Utc::now())
        );
        let mut out = Vec::new();
        let input = format!("{header}\n[[1, 1], [3, 2]]\n");
        let n = cqrs::ops::diff::diff_replica(
            &mut db,
            &registry,
            "rq",
            &mut input.as_bytes(),
            &mut out,
        )
        .unwrap();
        assert_eq!(n, 1);
        assert_eq!(String::from_utf8(out).unwrap().lines().nth(1), Some("[3]"));
        let input = format!("{header}\n[1, 3]\n");
        let n = cqrs::ops::diff::deleted_sync_replica(&mut db, &registry, &mut input.as_bytes())
            .unwrap();
        assert_eq!(n, 2);
        assert_eq!(items(&mut db).keys().copied().collect::<Vec<_>>(), [2]);
    }
);

both!(
    /// A replica row at the largest revision a column holds: the deleted-rows pipeline's DELETE
    /// (revision + 1) saturates instead of overflowing (a panic in a debug build, a wrap to a
    /// negative revision in a release build). A DELETE at the row's own revision is not newer, so
    /// the row stays: no revision beyond it exists to say the master deleted it.
    fn the_deleted_pipeline_at_the_largest_revision_does_not_overflow(kind: Kind) {
        let t = TestDb::new(kind);
        let mut db = t.connect();
        let registry = item_registry();
        apply_items(&mut db, vec![ItemState::new(5, i32::MAX, at(1_000)).save()]);
        let input = format!(
            "item,{}\n[5]\n",
            cqrs::message::format_datetime(&chrono::Utc::now())
        );
        let n = cqrs::ops::diff::deleted_sync_replica(&mut db, &registry, &mut input.as_bytes())
            .unwrap();
        assert_eq!(n, 0);
        assert_eq!(items(&mut db)[&5].rev, i32::MAX);
        assert!(tombstones(&mut db, "item").is_empty());
    }
);

fn always_retry(_: &Message, _: &cqrs::Error) -> cqrs::Retry {
    cqrs::Retry::After(Duration::from_millis(10))
}

/// A failing message whose `retries` is already `u32::MAX`, under a retry hook that always
/// retries: its retry copy saturates instead of overflowing (a panic in a debug build, a wrap to
/// 0 that would make it look new in a release build).
#[test]
fn a_retry_count_at_its_maximum_does_not_overflow() {
    let t = TestDb::new(Kind::Sqlite);
    let broker = MemoryBroker::new();
    broker.declare_replica_queue("rq", &["item"]);
    let mut bad = ItemState::new(1, 0, at(0)).save();
    bad.instance_data.remove("name");
    bad.retries = u32::MAX;
    broker.publish("item", bad.encode(), Headers::new());
    let registry = Registry::new().with_replica(TableReplica::new(item_spec()).with_hooks(
        cqrs::ReplicaHooks {
            retry: Some(always_retry),
            ..Default::default()
        },
    ));
    let settings = memory_settings();
    let mut c = Consumer::new(&registry, &settings, t.connect(), broker.inbox("rq"));
    c.poll(Duration::from_millis(50)).unwrap();
    assert_eq!(c.stats().retried, 1);
    wait_until(Duration::from_secs(5), "the retry copy", || {
        broker.queue_len("rq") == 1
    });
    let copy = Message::decode(&broker.peek("rq")[0].body).unwrap();
    assert_eq!(copy.retries, u32::MAX);
}

fn outbox_row(id: i64) -> cqrs::outbox::NewRow {
    cqrs::outbox::NewRow {
        message_id: uuid::Uuid::new_v4(),
        cqrs_id: "item".into(),
        signal_type: cqrs::SignalType::Save,
        pk: id.to_string(),
        routing_key: "item".into(),
        body: String::from_utf8(ItemState::new(id, 0, at(0)).save().encode()).unwrap(),
    }
}

both!(
    /// A relay that starts before any replica declared its queue: by default the messages are
    /// dropped as django-cqrs drops them, but counted per model; with `keep_unroutable` they
    /// stay in the outbox and go out once a queue binds.
    fn unroutable_messages_are_counted_and_kept_on_request(kind: Kind) {
        let t = TestDb::new(kind);
        let broker = MemoryBroker::new();
        let mut db = t.connect();
        cqrs::outbox::enqueue(&mut db, &[outbox_row(1), outbox_row(2)]).unwrap();
        let mut relay = cqrs::Relay::new(db, broker.clone(), Settings::default());
        assert_eq!(relay.run_once().unwrap(), 2);
        assert_eq!(relay.stats().unroutable, 2);
        assert_eq!(relay.unroutable_by_model()["item"], 2);
        assert_eq!(
            cqrs::outbox::pending(&mut t.connect()).unwrap(),
            0,
            "dropped"
        );

        let mut db = t.connect();
        cqrs::outbox::enqueue(&mut db, &[outbox_row(3)]).unwrap();
        let keep = Settings {
            keep_unroutable: true,
            ..Settings::default()
        };
        let mut relay = cqrs::Relay::new(db, broker.clone(), keep);
        assert_eq!(relay.run_once().unwrap(), 1);
        assert_eq!(relay.unroutable_by_model()["item"], 1);
        assert_eq!(cqrs::outbox::pending(&mut t.connect()).unwrap(), 1, "kept");
        broker.declare_replica_queue("rq", &["item"]);
        wait_until(
            Duration::from_secs(10),
            "the kept message to go out",
            || {
                relay.run_once().unwrap();
                broker.queue_len("rq") == 1
            },
        );
        assert_eq!(cqrs::outbox::pending(&mut t.connect()).unwrap(), 0);
    }
);

both!(
    /// A master as wide as a table spec allows (64 columns: more than one PostgreSQL
    /// `json_build_object` call takes): a SYNC captures its whole row and bulk-dump writes it.
    fn a_64_column_master_captures_and_dumps(kind: Kind) {
        use cqrs::value::{ColumnType, SqlValue};
        let t = TestDb::new(kind);
        let mut db = t.connect();
        let cols: Vec<String> = (0..61).map(|i| format!("c{i}")).collect();
        let ts = if kind == Kind::Postgres {
            "TIMESTAMPTZ"
        } else {
            "TEXT"
        };
        db.batch_execute(&format!(
            "CREATE TABLE wide64 (id BIGINT PRIMARY KEY, {}, cqrs_revision INTEGER NOT NULL DEFAULT 0, \
             cqrs_updated {ts} NOT NULL DEFAULT '2000-01-01 00:00:00+00:00')",
            cols.iter().map(|c| format!("{c} BIGINT")).collect::<Vec<_>>().join(", ")
        ))
        .unwrap();
        db.batch_execute(&format!(
            "INSERT INTO wide64 (id, {}) VALUES (1, {})",
            cols.join(", "),
            (0..61)
                .map(|i| i.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ))
        .unwrap();
        let mut spec = cqrs::TableSpec::new("wide64", "wide64").key("id", ColumnType::BigInt);
        for c in &cols {
            spec = spec.column(cqrs::ColumnSpec::new(c.as_str(), ColumnType::BigInt));
        }
        let spec = std::sync::Arc::new(cqrs::MasterSpec::new(spec.build().unwrap()));
        cqrs::atomic(&mut db, |tx| {
            tx.sync_rows(&spec, &[SqlValue::BigInt(1)], None);
            Ok(())
        })
        .unwrap();
        let msgs = outbox_messages(&mut db);
        assert_eq!(msgs.len(), 1);
        assert_eq!(msgs[0].instance_data.len(), 64);
        assert_eq!(msgs[0].instance_data["c60"], serde_json::json!(60));
        let mut out = Vec::new();
        let report = cqrs::ops::bulk::dump(&mut db, &spec, 10, &mut out, &mut |_| {}).unwrap();
        assert_eq!(report.rows, 1);
        let line = String::from_utf8(out)
            .unwrap()
            .lines()
            .nth(1)
            .unwrap()
            .to_string();
        let row: serde_json::Map<String, serde_json::Value> = serde_json::from_str(&line).unwrap();
        assert_eq!((row.len(), &row["c0"]), (64, &serde_json::json!(0)));
    }
);

both!(
    /// An outbox row whose body is not a message (written by hand or by another writer) does not
    /// hold up the rows behind it: it goes out unchanged (a replica dead-letters it as
    /// malformed) and the next row is published too.
    fn a_corrupt_outbox_row_does_not_stop_the_relay(kind: Kind) {
        let t = TestDb::new(kind);
        let broker = MemoryBroker::new();
        broker.declare_replica_queue("rq", &["item"]);
        let mut db = t.connect();
        let mut corrupt = outbox_row(1);
        corrupt.body = "{not a message".into();
        cqrs::outbox::enqueue(&mut db, &[corrupt, outbox_row(2)]).unwrap();
        let mut relay = cqrs::Relay::new(db, broker.clone(), Settings::default());
        assert_eq!(relay.run_once().unwrap(), 2);
        assert_eq!(relay.stats().published, 2);
        assert_eq!(cqrs::outbox::pending(&mut t.connect()).unwrap(), 0);
        let bodies: Vec<Vec<u8>> = broker.peek("rq").into_iter().map(|m| m.body).collect();
        assert_eq!(bodies[0], b"{not a message");
        assert_eq!(
            Message::decode(&bodies[1]).unwrap().instance_pk,
            serde_json::json!(2)
        );
    }
);

both!(
    /// Every hostile body is dead-lettered with its kind, none stops the consumer or writes a
    /// row, and the good message behind them applies.
    fn hostile_bodies_are_dead_lettered_and_the_next_good_message_applies(kind: Kind) {
        let t = TestDb::new(kind);
        let broker = MemoryBroker::new();
        broker.declare_replica_queue("rq", &["item"]);
        let registry = item_registry();
        let settings = Settings {
            max_retries: 0,
            max_body_bytes: 100_000,
            ..memory_settings()
        };
        let mut c = Consumer::new(&registry, &settings, t.connect(), broker.inbox("rq"));
        let mut wrong = Vec::new();
        for (i, (name, body, want)) in hostile_bodies().into_iter().enumerate() {
            broker.publish("item", body, Headers::new());
            c.drain(Duration::from_millis(50))
                .unwrap_or_else(|e| panic!("{name} stopped the consumer: {e}"));
            let dead = broker.peek(&dead_letter_queue("rq"));
            let got = dead.get(i).map(|m| m.headers[HEADER_ERROR_KIND].as_str());
            if got != Some(want) || dead.len() != i + 1 || !items(c.db()).is_empty() {
                wrong.push(format!(
                    "{name}: dead-lettered as {got:?} (want {want}), {} letters, rows {:?}",
                    dead.len(),
                    items(c.db()).keys().collect::<Vec<_>>()
                ));
                break;
            }
        }
        assert!(wrong.is_empty(), "{wrong:?}");
        broker.publish(
            "item",
            ItemState::new(1, 0, at(0)).save().encode(),
            Headers::new(),
        );
        c.drain(Duration::from_millis(50)).unwrap();
        assert_eq!(items(c.db()).keys().copied().collect::<Vec<_>>(), [1]);
        assert_eq!(broker.queue_len("rq"), 0);
    }
);

/// `dead-letters retry` over a letter of a model this queue does not consume (nothing is bound
/// for its `cqrs.<queue>.<id>`): that letter stays in the dead-letter queue, counted as left, and
/// the pass goes on to retry the others.
#[test]
fn retry_leaves_a_letter_nobody_consumes_and_retries_the_rest() {
    use cqrs::ops::dead_letters::{Action, Filter, run};
    let q = QueueFile::new();
    let t = &q.transport;
    let mut ghost = ItemState::new(1, 0, at(0)).save();
    ghost.cqrs_id = "ghost".into();
    let mut expired = ItemState::new(2, 0, at(0)).save();
    expired.expires = cqrs::message::Expires::At(at(0));
    for m in [&ghost, &expired] {
        q.send("item", m);
    }
    let consume = || q.consume();
    assert_eq!(consume().dead_lettered, 2);
    let r = run(
        &mut t.letters("q").unwrap(),
        "q",
        Action::Retry,
        &Filter::default(),
        &mut Vec::new(),
    )
    .expect("one letter nobody consumes does not stop the pass");
    assert_eq!((r.total, r.done, r.left), (2, 1, 1));
    assert_eq!(t.count(&dead_letter_queue("q")).unwrap(), 1);
    consume();
    assert_eq!(
        items(&mut q.replica.connect())
            .keys()
            .copied()
            .collect::<Vec<_>>(),
        [2]
    );
}
