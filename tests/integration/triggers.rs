//! Trigger capture on PostgreSQL (`#[cqrs(capture = "trigger")]`, `cqrs::capture::triggers`):
//! writes from plain SQL (as psql, `COPY` or another service make them) are captured with the
//! rules `atomic` keeps, into the same bodies `atomic` writes, and replicate.

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::Duration;

use bigdecimal::BigDecimal;
use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use cqrs::capture::triggers;
use cqrs::model::MasterModel;
use cqrs::transport::memory::MemoryBroker;
use cqrs::{Consumer, Db, Message, Registry, Relay, Settings, SignalType, atomic};
use cqrs_tests::*;
use serde_json::{Value, json};

macro_rules! items_table {
    ($name:ident) => {
        diesel::table! {
            $name (id) {
                id -> BigInt,
                name -> Text,
                value -> BigInt,
                price -> Nullable<Numeric>,
                ratio -> Nullable<Double>,
                flag -> Bool,
                day -> Nullable<Date>,
                at -> Nullable<Timestamptz>,
                naive -> Nullable<Timestamp>,
                uid -> Nullable<Uuid>,
                tags -> Nullable<Jsonb>,
                owner_id -> Nullable<BigInt>,
                secret -> Text,
                cqrs_revision -> Integer,
                cqrs_updated -> Timestamptz,
            }
        }
    };
}
items_table!(t_items);
items_table!(a_items);

macro_rules! item_model {
    ($model:ident, $table:ident, $($capture:tt)*) => {
        #[allow(dead_code)]
        #[derive(cqrs::Master)]
        #[diesel(table_name = $table)]
        #[cqrs(id = "t_item" $($capture)*)]
        pub(super) struct $model {
            id: i64,
            name: String,
            #[cqrs(track)]
            value: i64,
            #[cqrs(track)]
            price: Option<BigDecimal>,
            ratio: Option<f64>,
            flag: bool,
            day: Option<NaiveDate>,
            at: Option<DateTime<Utc>>,
            naive: Option<NaiveDateTime>,
            uid: Option<uuid::Uuid>,
            tags: Option<Value>,
            #[cqrs(rename = "owner")]
            owner_id: Option<i64>,
            #[cqrs(skip)]
            secret: String,
            cqrs_revision: i32,
            cqrs_updated: DateTime<Utc>,
        }
    };
}
item_model!(TItem, t_items, , capture = "trigger");
item_model!(AItem, a_items,);

/// The replica of `t_item`.
#[allow(dead_code)]
#[derive(cqrs::Replica)]
#[diesel(table_name = r_items)]
#[cqrs(id = "t_item")]
pub(super) struct RItem {
    id: i64,
    name: String,
    value: i64,
    price: Option<BigDecimal>,
    ratio: Option<f64>,
    flag: bool,
    day: Option<NaiveDate>,
    at: Option<DateTime<Utc>>,
    naive: Option<NaiveDateTime>,
    uid: Option<uuid::Uuid>,
    tags: Option<Value>,
    #[cqrs(rename = "owner")]
    owner_id: Option<i64>,
    cqrs_revision: i32,
    cqrs_updated: DateTime<Utc>,
}

pub(super) fn create_table(db: &mut Db, table: &str, secret: bool) {
    let secret = if secret {
        "secret TEXT NOT NULL DEFAULT '',"
    } else {
        ""
    };
    db.batch_execute(&format!(
        "CREATE TABLE {table} (
            id BIGSERIAL PRIMARY KEY, name TEXT NOT NULL, value BIGINT NOT NULL DEFAULT 0,
            price NUMERIC(12,2), ratio DOUBLE PRECISION, flag BOOLEAN NOT NULL DEFAULT false,
            day DATE, at TIMESTAMPTZ, naive TIMESTAMP, uid UUID, tags JSONB, owner_id BIGINT,
            {secret}
            cqrs_revision INTEGER NOT NULL DEFAULT 0,
            cqrs_updated TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp())"
    ))
    .unwrap();
}

/// A master database with `t_items` captured by its triggers and `a_items` by atomic.
pub(super) fn master_db() -> TestDb {
    let t = TestDb::new(Kind::Postgres);
    let mut db = t.connect();
    create_table(&mut db, "t_items", true);
    create_table(&mut db, "a_items", true);
    triggers::install(&mut db, &TItem::master_spec()).unwrap();
    t
}

/// Rows with every value form: decimals, floats (fractional, integral, tiny, huge), timestamps
/// with and without microseconds, NULLs, quotes and non-ASCII text, nested JSON.
const ROWS: &str = "(id, name, value, price, ratio, flag, day, at, naive, uid, tags, owner_id, secret) VALUES
    (1, 'plain', 1, 12.50, 0.1, true, '2024-02-29', '2024-02-29 10:00:00.123456+01', '2024-02-29 10:00:00', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '{\"b\": [1, 2.5, \"x\"], \"a\": null}', NULL, 's1'),
    (2, 'quote '' \"and\" ünïcode', 2, 0.00, 12.0, false, '0999-01-02', '2024-01-01 00:00:00+00', '2024-01-01 00:00:00.5', NULL, '[]', 1, 's2'),
    (3, 'nulls', 3, NULL, -1.5e-7, false, NULL, NULL, NULL, NULL, NULL, NULL, 's3')";

/// The outbox's messages, decoded.
pub(super) fn sent(db: &mut Db) -> Vec<Message> {
    outbox_messages(db)
}

/// (pk, signal, revision, instance_data without cqrs_updated, previous_data) of each message,
/// sorted: what must not depend on who captured.
type Shape = (String, String, i32, Value, Value);
fn shapes(msgs: &[Message]) -> Vec<Shape> {
    let mut out: Vec<Shape> = msgs
        .iter()
        .map(|m| {
            let mut data = m.instance_data.clone();
            assert!(data.remove("cqrs_updated").is_some(), "{m:?}");
            (
                m.instance_pk.to_string(),
                m.signal_type.as_str().to_string(),
                m.revision().unwrap(),
                Value::Object(data),
                json!(m.previous_data),
            )
        })
        .collect();
    out.sort_by(|a, b| (&a.0, a.2, &a.1).cmp(&(&b.0, b.2, &b.1)));
    out
}

pub(super) fn revisions(db: &mut Db, table: &str) -> BTreeMap<i64, i32> {
    cqrs::db::SqlConn::load_text(
        db,
        &format!("SELECT CAST(id AS TEXT) || ':' || CAST(cqrs_revision AS TEXT) AS j FROM {table}"),
        vec![],
    )
    .unwrap()
    .iter()
    .map(|r| {
        let (id, rev) = r.split_once(':').unwrap();
        (id.parse().unwrap(), rev.parse().unwrap())
    })
    .collect()
}

#[test]
fn plain_sql_writes_are_captured_with_the_rules_of_atomic() {
    let t = master_db();
    let mut db = t.connect();
    db.batch_execute(&format!("INSERT INTO t_items {ROWS}"))
        .unwrap();
    let msgs = sent(&mut db);
    assert_eq!(msgs.len(), 3);
    for m in &msgs {
        assert_eq!(
            (m.signal_type, m.revision().unwrap()),
            (SignalType::Save, 0)
        );
    }
    assert_eq!(
        msgs[2].previous_data,
        Some(serde_json::from_value(json!({"value": null})).unwrap()),
        "on create, the tracked fields that are set"
    );
    assert_eq!(msgs[0].instance_data["owner"], json!(null), "renamed");
    assert!(!msgs[0].instance_data.contains_key("secret"), "skipped");
    db.execute("DELETE FROM cqrs_outbox", vec![]).unwrap();

    // Two statements on one row, a client's own revision: one SAVE at revision 1, final state,
    // previous_data from before the transaction.
    db.batch_execute(
        "BEGIN;
         UPDATE t_items SET price = 13.75, cqrs_revision = 99 WHERE id = 1;
         UPDATE t_items SET value = 10, name = 'renamed' WHERE id = 1;
         COMMIT;",
    )
    .unwrap();
    let msgs = sent(&mut db);
    assert_eq!(msgs.len(), 1, "{msgs:?}");
    assert_eq!(msgs[0].revision().unwrap(), 1);
    assert_eq!(msgs[0].instance_data["name"], json!("renamed"));
    assert_eq!(
        json!(msgs[0].previous_data),
        json!({"value": 1, "price": 12.5})
    );
    // A no-op update sends nothing and keeps the revision.
    db.batch_execute("UPDATE t_items SET name = name").unwrap();
    assert_eq!(sent(&mut db).len(), 1);
    assert_eq!(revisions(&mut db, "t_items")[&1], 1);
    db.execute("DELETE FROM cqrs_outbox", vec![]).unwrap();

    // Created then deleted: nothing. Updated then deleted: one DELETE at the bumped revision.
    // Deleted untouched: revision + 1.
    db.batch_execute(
        "BEGIN;
         INSERT INTO t_items (id, name) VALUES (4, 'brief');
         UPDATE t_items SET value = 4 WHERE id = 4;
         DELETE FROM t_items WHERE id = 4;
         UPDATE t_items SET value = 20 WHERE id = 2;
         DELETE FROM t_items WHERE id IN (2, 3);
         COMMIT;",
    )
    .unwrap();
    let msgs = sent(&mut db);
    let got: Vec<_> = msgs
        .iter()
        .map(|m| {
            (
                m.signal_type,
                m.instance_pk.clone(),
                m.revision().unwrap(),
                m.instance_data.len(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            (SignalType::Delete, json!(2), 1, 3),
            (SignalType::Delete, json!(3), 1, 3)
        ]
    );
    db.execute("DELETE FROM cqrs_outbox", vec![]).unwrap();

    // A savepoint rolled back takes its captured changes with it.
    db.batch_execute(
        "BEGIN;
         UPDATE t_items SET value = 30 WHERE id = 1;
         SAVEPOINT s;
         UPDATE t_items SET value = 31 WHERE id = 1;
         INSERT INTO t_items (id, name) VALUES (5, 'gone');
         ROLLBACK TO SAVEPOINT s;
         COMMIT;",
    )
    .unwrap();
    let msgs = sent(&mut db);
    assert_eq!(msgs.len(), 1);
    assert_eq!(
        (
            msgs[0].revision().unwrap(),
            msgs[0].instance_data["value"].clone()
        ),
        (2, json!(30))
    );

    // The application's own BEFORE trigger changes a row the client's update left as it was: the
    // stamp fires after it, so the change is captured with a new revision.
    db.execute("DELETE FROM cqrs_outbox", vec![]).unwrap();
    db.batch_execute(
        "CREATE FUNCTION t_items_touch() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN NEW.name := NEW.name || '!'; RETURN NEW; END $$;
         CREATE TRIGGER t_items_touch BEFORE UPDATE ON t_items FOR EACH ROW EXECUTE FUNCTION t_items_touch();",
    )
    .unwrap();
    db.batch_execute("UPDATE t_items SET value = value WHERE id = 1")
        .unwrap();
    db.batch_execute("DROP TRIGGER t_items_touch ON t_items")
        .unwrap();
    let msgs = sent(&mut db);
    assert_eq!(msgs.len(), 1, "{msgs:?}");
    assert_eq!(
        (
            msgs[0].revision().unwrap(),
            msgs[0].instance_data["name"].clone()
        ),
        (3, json!("renamed!"))
    );

    // What cannot be captured is refused, and says so.
    for (sql, says) in [
        ("TRUNCATE t_items", "TRUNCATE of t_items is not captured"),
        (
            "UPDATE t_items SET id = 9 WHERE id = 1",
            "changing the primary key",
        ),
    ] {
        let err = db.batch_execute(sql).unwrap_err();
        assert!(err.to_string().contains(says), "{sql}: {err}");
        let _ = db.batch_execute("ROLLBACK");
    }
    assert_eq!(revisions(&mut db, "t_items").len(), 1);
}

/// A write: SQL with `{t}` for the table, the keys it touches first, creates, and deletes by key.
type Step = (&'static str, &'static [i64], &'static [i64], &'static [i64]);

/// The same writes, captured by triggers on `t_items` and by `atomic` on `a_items`: the same
/// messages (all but the capture time).
#[test]
fn triggers_and_atomic_send_the_same_bodies() {
    let t = master_db();
    let mut db = t.connect();
    let steps: [Step; 5] = [
        ("INSERT INTO {t} {ROWS}", &[], &[1, 2, 3], &[]),
        (
            "UPDATE {t} SET price = 1.25, ratio = 2.0 WHERE id = 1; UPDATE {t} SET value = 11 WHERE id = 1",
            &[1],
            &[],
            &[],
        ),
        (
            "UPDATE {t} SET flag = NOT flag, value = value + 1 WHERE id IN (2, 3)",
            &[2, 3],
            &[],
            &[],
        ),
        ("UPDATE {t} SET value = 0 WHERE id = 2", &[2], &[], &[2]),
        (
            "INSERT INTO {t} (id, name, value, price) VALUES (4, 'four', 4, 4.00)",
            &[],
            &[4],
            &[4, 3],
        ),
    ];
    for (sql, touched, created, deleted) in steps {
        let trig = sql.replace("{ROWS}", ROWS).replace("{t}", "t_items");
        let mut trig_sql = format!("BEGIN; {trig};");
        for id in deleted {
            trig_sql.push_str(&format!(" DELETE FROM t_items WHERE id = {id};"));
        }
        trig_sql.push_str(" COMMIT;");
        db.batch_execute(&trig_sql).unwrap();
        let plain = sql.replace("{ROWS}", ROWS).replace("{t}", "a_items");
        atomic(&mut db, |tx| {
            tx.touch_many::<AItem>(touched)?;
            tx.conn().batch_execute(&plain)?;
            tx.created_many::<AItem>(created)?;
            tx.delete_many::<AItem>(deleted)?;
            Ok(())
        })
        .unwrap();
    }
    let (by_trigger, by_atomic): (Vec<_>, Vec<_>) = cqrs::db::SqlConn::load_text(
        &mut db,
        "SELECT CASE WHEN capture_tx IS NULL THEN 'a' ELSE 't' END || body AS j FROM cqrs_outbox ORDER BY id",
        vec![],
    )
    .unwrap()
    .into_iter()
    .partition(|b| b.starts_with('t'));
    let decode = |bodies: Vec<String>| -> Vec<Message> {
        bodies
            .iter()
            .map(|b| Message::decode(&b.as_bytes()[1..]).unwrap())
            .collect()
    };
    let (by_trigger, by_atomic) = (decode(by_trigger), decode(by_atomic));
    assert_eq!((by_trigger.len(), by_atomic.len()), (8, 8));
    assert_eq!(shapes(&by_trigger), shapes(&by_atomic));
    assert_eq!(revisions(&mut db, "t_items"), revisions(&mut db, "a_items"));
}

/// psql's own writes (insert, bulk update, delete, COPY) reach a replica, and the tables compare
/// equal.
#[test]
fn psql_writes_replicate() {
    let t = master_db();
    let psql = |sql: &str, stdin: &str| {
        let mut child = Command::new("psql")
            .args([t.url.as_str(), "-v", "ON_ERROR_STOP=1", "-q", "-c", sql])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("psql (PostgreSQL's client) is required");
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stdin.as_bytes())
            .unwrap();
        assert!(child.wait().unwrap().success(), "psql -c {sql}");
    };
    psql(&format!("INSERT INTO t_items {ROWS}"), "");
    psql(
        "COPY t_items (id, name, value, price, at, tags) FROM STDIN WITH (FORMAT csv)",
        "10,copied,100,1.10,2024-05-01 12:00:00+00,\"{\"\"k\"\": 1}\"\n11,copied too,101,,,\n",
    );
    psql(
        "UPDATE t_items SET value = value * 2, ratio = 0.5 WHERE value > 1",
        "",
    );
    psql("DELETE FROM t_items WHERE id = 2", "");
    psql(
        "BEGIN; UPDATE t_items SET name = 'last' WHERE id = 10; DELETE FROM t_items WHERE id = 11; COMMIT;",
        "",
    );

    let replica = Replica::new();
    replica.follow(&t);
    let (master, copy) = (replica.read(&t, "t_items"), replica.read_copy());
    assert_eq!(copy, master);
    assert!(master[0].contains("\"last\""), "{master:?}");
    assert_eq!(tombstones(&mut replica.db.connect(), "t_item").len(), 2);
}

/// A replica database of `t_item` (`r_items`) fed through a memory broker.
pub(super) struct Replica {
    pub(super) db: TestDb,
    broker: MemoryBroker,
}

/// The columns a replica keeps, in the order `Replica::read` lists them.
const COLUMNS: &str = "id, name, value, price, ratio, flag, day, at, naive, uid, tags, owner_id, cqrs_revision, cqrs_updated";

impl Replica {
    pub(super) fn new() -> Replica {
        let db = TestDb::new(Kind::Postgres);
        create_table(&mut db.connect(), "r_items", false);
        let broker = MemoryBroker::new();
        broker.declare_replica_queue("r", &["t_item"]);
        Replica { db, broker }
    }

    /// Relay what the master's outbox holds and apply it.
    pub(super) fn follow(&self, master: &TestDb) {
        let mut relay = Relay::new(master.connect(), self.broker.clone(), Settings::default());
        while relay.run_once().unwrap() > 0 {}
        let registry = Registry::new().replica::<RItem>();
        let settings = Settings::default();
        let mut consumer = Consumer::new(
            &registry,
            &settings,
            self.db.connect(),
            self.broker.inbox("r"),
        );
        consumer.drain(Duration::from_millis(50)).unwrap();
    }

    /// A table's rows as one JSON array, by key: what a replica must equal.
    pub(super) fn read(&self, db: &TestDb, table: &str) -> Vec<String> {
        cqrs::db::SqlConn::load_text(
            &mut db.connect(),
            &format!("SELECT CAST(COALESCE(json_agg(r ORDER BY id), '[]') AS TEXT) AS j FROM (SELECT {COLUMNS} FROM {table}) r"),
            vec![],
        )
        .unwrap()
    }

    pub(super) fn read_copy(&self) -> Vec<String> {
        self.read(&self.db, "r_items")
    }
}

#[test]
fn atomic_leaves_a_trigger_captured_model_to_its_triggers() {
    let t = master_db();
    let Db::Pg(mut conn) = t.connect() else {
        unreachable!()
    };
    use diesel::prelude::*;
    atomic(&mut conn, |tx| {
        tx.insert_into(t_items::table)
            .values((
                t_items::id.eq(1),
                t_items::name.eq("a"),
                t_items::secret.eq(""),
            ))
            .execute()?;
        tx.update(t_items::table.find(1))
            .set(t_items::value.eq(5))
            .execute()?;
        tx.touch::<TItem>(&1)?;
        Ok(())
    })
    .unwrap();
    atomic(&mut conn, |tx| {
        tx.update(t_items::table.find(1))
            .set(t_items::value.eq(6))
            .execute()?;
        tx.sync::<TItem>(&1, Some("replica_a"))
    })
    .unwrap();
    let mut db = t.connect();
    let msgs = sent(&mut db);
    let got: Vec<_> = msgs
        .iter()
        .map(|m| {
            (
                m.signal_type,
                m.revision().unwrap(),
                m.instance_data["value"].clone(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            (SignalType::Save, 0, json!(5)),
            (SignalType::Save, 1, json!(6)),
            (SignalType::Sync, 1, json!(6)),
        ],
        "one message per change, none twice"
    );
    // Without its triggers, a trigger-captured model refuses to be written through atomic.
    db.batch_execute("DROP TRIGGER cqrs_t_items_updated ON t_items")
        .unwrap();
    let err = atomic(&mut conn, |tx| tx.touch::<TItem>(&1)).unwrap_err();
    assert!(
        err.to_string().contains("run `cqrs triggers install`"),
        "{err}"
    );
}

#[test]
fn check_reports_triggers_that_differ_from_the_model() {
    let t = master_db();
    let mut db = t.connect();
    let spec = TItem::master_spec();
    assert_eq!(
        triggers::check(&mut db, &spec).unwrap(),
        Vec::<String>::new()
    );
    // The model gained a tracked column since the triggers were installed.
    let changed = spec.clone().track("ratio").unwrap();
    let problems = triggers::check(&mut db, &changed).unwrap();
    assert!(
        problems
            .iter()
            .any(|p| p.contains("cqrs_t_items_inserted() differs from the model")),
        "{problems:?}"
    );
    db.batch_execute("ALTER TABLE t_items DISABLE TRIGGER cqrs_t_items_updated")
        .unwrap();
    let problems = triggers::check(&mut db, &spec).unwrap();
    assert_eq!(
        problems,
        ["trigger cqrs_t_items_updated on table t_items is disabled (tgenabled = D)"]
    );
    // The command: exit 1 with the problem on stdout, 0 after `install`.
    let registry = || Registry::new().master::<TItem>();
    let cli = |action: &str| {
        cqrs_cli::run_from(
            registry(),
            ["cqrs", "--database-url", t.url.as_str(), "triggers", action],
        )
    };
    assert_eq!(cli("check"), std::process::ExitCode::from(1));
    assert_eq!(cli("install"), std::process::ExitCode::SUCCESS);
    assert_eq!(cli("check"), std::process::ExitCode::SUCCESS);
    assert!(triggers::check(&mut db, &spec).unwrap().is_empty());
    assert_eq!(cli("uninstall"), std::process::ExitCode::SUCCESS);
    assert_eq!(
        triggers::check(&mut db, &spec).unwrap().len(),
        8,
        "4 functions, 4 triggers"
    );
    db.batch_execute("INSERT INTO t_items (id, name) VALUES (1, 'a')")
        .unwrap();
    assert!(
        sent(&mut db).is_empty(),
        "nothing captures plain SQL any more"
    );
}

/// A table wider than one `jsonb_build_object` call (50 pairs): its body is built by several,
/// joined, and equals what `atomic` reads for the same row.
#[test]
fn a_64_column_master_is_captured_by_its_triggers() {
    use cqrs::value::{ColumnType, SqlValue};
    let t = TestDb::new(Kind::Postgres);
    let mut db = t.connect();
    let cols: Vec<String> = (0..61).map(|i| format!("c{i}")).collect();
    db.batch_execute(&format!(
        "CREATE TABLE wide64 (id BIGINT PRIMARY KEY, {}, cqrs_revision INTEGER NOT NULL DEFAULT 0, \
         cqrs_updated TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp())",
        cols.iter()
            .map(|c| format!("{c} BIGINT"))
            .collect::<Vec<_>>()
            .join(", ")
    ))
    .unwrap();
    let mut table = cqrs::TableSpec::new("wide64", "wide64").key("id", ColumnType::BigInt);
    for c in &cols {
        table = table.column(cqrs::ColumnSpec::new(c.as_str(), ColumnType::BigInt));
    }
    let spec = cqrs::MasterSpec::new(table.build().unwrap())
        .track("c60")
        .unwrap()
        .capture(cqrs::model::CaptureMode::Trigger)
        .unwrap();
    triggers::install(&mut db, &spec).unwrap();
    let values: Vec<String> = (0..61).map(|i| i.to_string()).collect();
    db.batch_execute(&format!(
        "INSERT INTO wide64 (id, {}) VALUES (1, {})",
        cols.join(", "),
        values.join(", ")
    ))
    .unwrap();
    db.batch_execute("UPDATE wide64 SET c60 = 600 WHERE id = 1")
        .unwrap();
    let spec = std::sync::Arc::new(spec);
    atomic(&mut db, |tx| {
        tx.sync_rows(&spec, &[SqlValue::BigInt(1)], None);
        Ok(())
    })
    .unwrap();
    let msgs = sent(&mut db);
    assert_eq!(msgs.len(), 3, "SAVE, SAVE, SYNC");
    assert_eq!(msgs[1].instance_data.len(), 64);
    assert_eq!(
        (
            msgs[1].instance_data["c0"].clone(),
            msgs[1].instance_data["c60"].clone()
        ),
        (json!(0), json!(600))
    );
    assert_eq!(json!(msgs[1].previous_data), json!({"c60": 60}));
    assert_eq!(
        msgs[1].instance_data, msgs[2].instance_data,
        "as atomic reads it"
    );
}

/// `cqrs generate-migration`'s migration for a model captured by triggers, applied to a table
/// that already holds rows: the rows read as revision 0 and nothing is sent for them; from then
/// on a plain SQL write is captured; reverting drops the triggers and the columns.
#[test]
fn the_adoption_migration_adds_the_columns_and_the_triggers_to_a_table_with_rows() {
    let t = TestDb::new(Kind::Postgres);
    let mut db = t.connect();
    db.batch_execute(
        "CREATE TABLE t_items (
            id BIGSERIAL PRIMARY KEY, name TEXT NOT NULL, value BIGINT NOT NULL DEFAULT 0,
            price NUMERIC(12,2), ratio DOUBLE PRECISION, flag BOOLEAN NOT NULL DEFAULT false,
            day DATE, at TIMESTAMPTZ, naive TIMESTAMP, uid UUID, tags JSONB, owner_id BIGINT,
            secret TEXT NOT NULL DEFAULT '');
         INSERT INTO t_items (name, value) SELECT 'n' || i, i FROM generate_series(1, 1000) AS i;",
    )
    .unwrap();
    let m =
        cqrs::ops::adopt::for_master(cqrs::db::Backend::Postgres, &TItem::master_spec()).unwrap();
    // As Diesel runs a migration: in a transaction of its own.
    db.batch_execute(&format!("BEGIN;\n{}COMMIT;", m.up))
        .unwrap();
    let n = |db: &mut Db, sql: &str| count(db, sql);
    assert_eq!(
        n(
            &mut db,
            "SELECT count(*) AS n FROM t_items WHERE cqrs_revision = 0 AND cqrs_updated IS NOT NULL"
        ),
        1000
    );
    assert_eq!(n(&mut db, "SELECT count(*) AS n FROM cqrs_outbox"), 0);
    assert!(
        triggers::check(&mut db, &TItem::master_spec())
            .unwrap()
            .is_empty()
    );

    db.batch_execute("UPDATE t_items SET value = -value WHERE id <= 10; INSERT INTO t_items (name) VALUES ('new');")
        .unwrap();
    let msgs = sent(&mut db);
    assert_eq!(msgs.len(), 11);
    assert!(
        msgs[..10]
            .iter()
            .all(|m| m.instance_data["cqrs_revision"] == json!(1)),
        "{msgs:?}"
    );
    assert_eq!(msgs[10].instance_data["name"], json!("new"));
    assert_eq!(msgs[10].instance_data["cqrs_revision"], json!(0));

    db.batch_execute(&format!("BEGIN;\n{}COMMIT;", m.down))
        .unwrap();
    assert_eq!(
        n(
            &mut db,
            "SELECT count(*) AS n FROM information_schema.columns WHERE table_name = 't_items' AND column_name LIKE 'cqrs%'"
        ),
        0
    );
    db.batch_execute("UPDATE t_items SET value = 0").unwrap();
    assert_eq!(sent(&mut db).len(), 11, "no triggers left");
}
