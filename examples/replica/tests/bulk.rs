//! `bulk-dump` on the example master's binary piped or filed into `bulk-load` on the example
//! replica's, on PostgreSQL and SQLite.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use cqrs::db::SqlConn;
use cqrs_tests::{Kind, TestDb};

const REPLICA: &str = env!("CARGO_BIN_EXE_example-replica");

fn master_bin() -> PathBuf {
    // Built by cargo before any test runs (example-master has its own integration test).
    let p = PathBuf::from(REPLICA).with_file_name("example-master");
    assert!(
        p.exists(),
        "{} is not built: run the workspace's tests",
        p.display()
    );
    p
}

fn schemas(kind: Kind) -> (&'static str, &'static str) {
    match kind {
        Kind::Postgres => (
            "CREATE TABLE items (id BIGINT PRIMARY KEY, name TEXT NOT NULL, value BIGINT NOT NULL, updated TIMESTAMPTZ NOT NULL,
               cqrs_revision INTEGER NOT NULL DEFAULT 0, cqrs_updated TIMESTAMPTZ NOT NULL);
             INSERT INTO items SELECT i, 'name ' || i || ' ''quoted'' /é', i * 7 - 35000, TIMESTAMPTZ '2026-11-23 12:00:00+00' + i * INTERVAL '1 millisecond',
               i % 5, TIMESTAMPTZ '2026-11-23 12:00:00.000001+00' + i * INTERVAL '1 second' FROM generate_series(1, 10000) AS i;",
            "CREATE TABLE replica_items (id BIGINT PRIMARY KEY, title TEXT NOT NULL, value BIGINT NOT NULL, updated TIMESTAMPTZ NOT NULL,
               cqrs_revision INTEGER NOT NULL, cqrs_updated TIMESTAMPTZ NOT NULL);",
        ),
        Kind::Sqlite => (
            "CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT NOT NULL, value BIGINT NOT NULL, updated TEXT NOT NULL,
               cqrs_revision INTEGER NOT NULL DEFAULT 0, cqrs_updated TEXT NOT NULL);
             WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < 10000)
             INSERT INTO items SELECT i, 'name ' || i || ' ''quoted'' /é', i * 7 - 35000,
               strftime('%Y-%m-%d %H:%M:%f', '2026-11-23 12:00:00', '+' || i || ' seconds') || '+00:00',
               i % 5, strftime('%Y-%m-%d %H:%M:%f', '2026-11-23 12:00:00', '+' || i || ' seconds') || '+00:00' FROM s;",
            "CREATE TABLE replica_items (id INTEGER PRIMARY KEY, title TEXT NOT NULL, value BIGINT NOT NULL, updated TEXT NOT NULL,
               cqrs_revision INTEGER NOT NULL, cqrs_updated TEXT NOT NULL);",
        ),
    }
}

fn setup(kind: Kind) -> (TestDb, TestDb) {
    let (m, r) = schemas(kind);
    let master = TestDb::empty(kind);
    let replica = TestDb::empty(kind);
    master.connect().batch_execute(m).unwrap();
    let mut rc = replica.connect();
    rc.migrate().unwrap();
    rc.batch_execute(r).unwrap();
    (master, replica)
}

fn rows(db: &TestDb, table: &str, name: &str) -> Vec<String> {
    let sql = format!(
        "SELECT CAST(id AS TEXT) || '|' || {name} || '|' || CAST(value AS TEXT) || '|' || CAST(cqrs_revision AS TEXT) AS j FROM {table} ORDER BY id"
    );
    db.connect().load_text(&sql, vec![]).unwrap()
}

fn run(bin: &PathBuf, args: &[&str], db: &TestDb, stdin: Option<&[u8]>) -> Output {
    let mut child = Command::new(bin)
        .args(args)
        .args(["--database-url", &db.url])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    if let Some(data) = stdin {
        input.write_all(data).unwrap();
    }
    drop(input);
    child.wait_with_output().unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).trim().to_string()
}

fn dump_then_load(kind: Kind) {
    let (master, replica) = setup(kind);
    let dir = std::env::temp_dir().join(format!("cqrs-bulk-{}-{kind:?}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("items.dump");
    let file_s = file.to_str().unwrap();

    let out = run(
        &master_bin(),
        &["bulk-dump", "-c", "item", "-o", file_s, "-b", "3000"],
        &master,
        None,
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stderr(&out).contains("10000 rows"), "{}", stderr(&out));
    let text = std::fs::read_to_string(&file).unwrap();
    assert_eq!(text.lines().next(), Some("item"));
    assert_eq!(text.lines().count(), 10_001);

    let out = run(
        &master_bin(),
        &["bulk-dump", "-c", "item", "-o", file_s],
        &master,
        None,
    );
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        stderr(&out),
        format!("cqrs: {file_s} exists: pass --force to overwrite it")
    );

    let out = run(
        &PathBuf::from(REPLICA),
        &["bulk-load", "-i", file_s, "-b", "4000"],
        &replica,
        None,
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        rows(&replica, "replica_items", "title"),
        rows(&master, "items", "name")
    );

    let out = run(
        &PathBuf::from(REPLICA),
        &["bulk-load", "-i", file_s],
        &replica,
        None,
    );
    assert_eq!(out.status.code(), Some(0));
    assert!(
        stderr(&out).contains("10000 rows read, 0 written, 10000 unchanged, 0 failed"),
        "{}",
        stderr(&out)
    );

    // dump to stdout piped into load (--clear first), in Django's form: no trailing newline.
    let dumped = run(&master_bin(), &["bulk-dump", "-c", "item"], &master, None);
    assert_eq!(dumped.status.code(), Some(0));
    let piped = dumped.stdout.strip_suffix(b"\n").unwrap();
    let out = run(
        &PathBuf::from(REPLICA),
        &["bulk-load", "--clear"],
        &replica,
        Some(piped),
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stderr(&out).contains("10000 written"), "{}", stderr(&out));
    assert_eq!(
        rows(&replica, "replica_items", "title"),
        rows(&master, "items", "name")
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn dump_then_load_10000_rows_postgres() {
    dump_then_load(Kind::Postgres);
}

#[test]
fn dump_then_load_10000_rows_sqlite() {
    dump_then_load(Kind::Sqlite);
}

#[test]
fn bad_lines_are_reported_by_number_and_the_rest_loads() {
    let (_master, replica) = setup(Kind::Sqlite);
    let input = b"item\n{\"id\": 1, \"name\": \"a\", \"value\": 1, \"updated\": \"2026-11-23 12:00:00+00:00\", \"cqrs_revision\": 0, \"cqrs_updated\": \"2026-11-23 12:00:00+00:00\"}\nnot json\n{\"id\": 2, \"name\": \"b\"}\n[1]\n{\"id\": 3, \"name\": \"c\", \"value\": 3, \"updated\": \"2026-11-23 12:00:00+00:00\", \"cqrs_revision\": 0, \"cqrs_updated\": \"2026-11-23 12:00:00+00:00\"}";
    let out = run(
        &PathBuf::from(REPLICA),
        &["bulk-load", "-b", "2"],
        &replica,
        Some(input),
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("line 3: not JSON"), "{err}");
    assert!(
        err.contains("line 4: item pk 2: instance_data has no `cqrs_revision`"),
        "{err}"
    );
    assert!(err.contains("line 5: not a JSON object"), "{err}");
    assert_eq!(
        rows(&replica, "replica_items", "title"),
        ["1|a|1|0", "3|c|3|0"]
    );
}

#[test]
fn usage_errors_exit_2_with_one_line() {
    let (master, replica) = setup(Kind::Sqlite);
    let out = run(&master_bin(), &["bulk-dump", "-c", "nope"], &master, None);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        stderr(&out),
        "cqrs: unknown cqrs id \"nope\" (masters: item, typed)"
    );
    let out = run(&PathBuf::from(REPLICA), &["bulk-load"], &replica, Some(b""));
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        stderr(&out),
        "cqrs: empty input: a dump starts with its cqrs_id on line 1"
    );
    let out = run(
        &PathBuf::from(REPLICA),
        &["bulk-load"],
        &replica,
        Some(b"ghost\n{}"),
    );
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        stderr(&out),
        "cqrs: line 1: unknown cqrs id \"ghost\" (no replica registered for it)"
    );
}

/// `sync`: a directed sync reaches only the named queue, a broadcast one every bound queue; bad
/// filters exit 2 and change nothing.
#[test]
fn sync_directed_and_broadcast_through_the_binary() {
    let (master, _replica) = setup(Kind::Postgres);
    master.connect().migrate().unwrap();
    let a = cqrs_tests::TestBroker::new();
    let b = a.another_queue();
    for q in [&a, &b] {
        q.transport
            .declare_replica(&q.queue, &["item".into()], &q.delays)
            .unwrap();
    }
    let broker = [
        "--broker-url".to_string(),
        cqrs_tests::amqp_url(),
        "--exchange".into(),
        a.exchange.clone(),
    ];
    let args = |extra: &[&str]| -> Vec<String> {
        extra
            .iter()
            .map(|s| s.to_string())
            .chain(broker.iter().cloned())
            .collect()
    };
    let run_s = |v: Vec<String>| {
        run(
            &master_bin(),
            &v.iter().map(String::as_str).collect::<Vec<_>>(),
            &master,
            None,
        )
    };

    let out = run_s(args(&[
        "sync",
        "-c",
        "item",
        "--filter",
        r#"{"id__in": [1, 2, 3]}"#,
        "--queue",
        &a.queue,
    ]));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stderr(&out).contains("3 rows to queue"), "{}", stderr(&out));
    std::thread::sleep(std::time::Duration::from_millis(300));
    let got = a.drain(&a.queue);
    assert_eq!(
        got.iter().map(|m| m.0.clone()).collect::<Vec<_>>(),
        vec![format!("cqrs.{}.item", a.queue); 3]
    );
    assert_eq!(b.count(&b.queue), 0);

    let out = run_s(args(&[
        "sync",
        "-c",
        "item",
        "--filter",
        r#"{"id__lte": 2}"#,
    ]));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert_eq!((a.count(&a.queue), b.count(&b.queue)), (2, 2));

    for (filter, msg) in [
        (r#"{"nope": 1}"#, "cqrs: unknown column `nope` in filter"),
        ("[1]", "cqrs: filter must be a JSON object"),
        ("{", "cqrs: filter is not valid JSON"),
        (
            r#"{"name__like": "x"}"#,
            "cqrs: unknown lookup in `name__like`",
        ),
    ] {
        let out = run_s(args(&["sync", "-c", "item", "--filter", filter]));
        assert_eq!(out.status.code(), Some(2), "{filter}");
        assert!(
            stderr(&out).starts_with(msg) && stderr(&out).lines().count() == 1,
            "{filter}: {}",
            stderr(&out)
        );
    }
    assert_eq!(cqrs::outbox::pending(&mut master.connect()).unwrap(), 0);
}
