//! A table written by sqlx follows to a replica through trigger capture: creates, an edit in the
//! creating transaction, a bulk `UPDATE`, an upsert and deletes, written by the example's process
//! (sqlx, and the relay in the same process); the replica consumes in this test.

use std::process::Command;
use std::time::Duration;

use cqrs::db::SqlConn;
use cqrs::model::MasterModel;
use cqrs_tests::rows::count;
use cqrs_tests::{Kind, TestBroker, TestDb, amqp_url, wait_until};

const BIN: &str = env!("CARGO_BIN_EXE_example-sqlx-writer");

/// `table`'s notes by id, as `id|title|body|pinned|revision` (both sides have these columns).
fn notes_of(db: &TestDb, table: &str) -> Vec<String> {
    let sql = format!(
        "SELECT concat_ws('|', id, title, body, pinned, cqrs_revision) AS j FROM {table} ORDER BY id"
    );
    db.connect().load_text(&sql, vec![]).unwrap()
}

#[test]
fn rows_written_by_sqlx_replicate_through_the_triggers_deletes_included() {
    let master = TestDb::empty(Kind::Postgres);
    let mut m = master.connect();
    m.migrate().unwrap();
    m.batch_execute(example_sqlx_writer::MASTER_SQL).unwrap();
    cqrs::capture::triggers::install(&mut m, &example_sqlx_writer::Note::master_spec()).unwrap();
    let replica = TestDb::empty(Kind::Postgres);
    let mut r = replica.connect();
    r.migrate().unwrap();
    r.batch_execute(example_sqlx_writer::REPLICA_SQL).unwrap();

    let b = TestBroker::new();
    let shutdown = cqrs::Shutdown::new();
    let settings = cqrs::Settings {
        database_url: Some(replica.url.clone()),
        ..b.settings()
    };
    let workers = cqrs::background::consume(
        example_sqlx_writer::replica_registry(),
        settings,
        1,
        &shutdown,
    );
    wait_until(
        Duration::from_secs(30),
        "the replica's worker to be ready",
        || workers.readiness().check().is_ok(),
    );

    let out = Command::new(BIN)
        .arg("60")
        .env("DATABASE_URL", &master.url)
        .env("CQRS_BROKER_URL", amqp_url())
        .env("CQRS_EXCHANGE", &b.exchange)
        .env("CQRS_SERVICE_NAME", &b.queue)
        .env("CQRS_LOG", "warn")
        .env_remove("CQRS_QUEUE")
        .env_remove("CQRS_CONFIG")
        .current_dir(std::env::temp_dir())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert_eq!(
        count(&mut m, "SELECT count(*) AS n FROM cqrs_outbox"),
        0,
        "all published"
    );

    let want = notes_of(&master, "notes");
    // 60 created, 12 deleted (every fifth id), one more by the upsert.
    assert_eq!(want.len(), 49, "{want:?}");
    assert!(
        want.iter().any(|r| r.ends_with("|upserted|kept|f|1")),
        "{want:?}"
    );
    assert!(want.iter().any(|r| r.ends_with(", edited|f|0")), "{want:?}");
    assert!(want.iter().any(|r| r.ends_with("|t|1")), "{want:?}");
    let mut got = Vec::new();
    let same = (0..300).any(|_| {
        got = notes_of(&replica, "replica_notes");
        got == want || {
            std::thread::sleep(Duration::from_millis(100));
            false
        }
    });
    assert!(
        same,
        "the replica differs:\nmaster {want:?}\nreplica {got:?}"
    );
    assert_eq!(
        count(
            &mut r,
            "SELECT count(*) AS n FROM cqrs_tombstones WHERE cqrs_id = 'note'"
        ),
        12,
        "each delete left a tombstone"
    );
    workers.stop_blocking().unwrap();
}
