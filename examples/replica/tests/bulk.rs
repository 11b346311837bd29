//! `bulk-dump` on the example master's binary piped or filed into `bulk-load` on the example
//! replica's, on PostgreSQL and SQLite; `sync` through the binary.

mod common;

use std::path::PathBuf;

use common::*;
use cqrs_tests::Kind;

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
        "cqrs: line 1: unknown cqrs id \"ghost\" (replicas: item, typed)"
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
