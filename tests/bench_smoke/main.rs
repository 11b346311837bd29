//! The performance harness in its smoke mode, django-cqrs's peer figures included: every figure
//! can be taken and the replica equals the master after each drain and after the latency run (the
//! harness exits 1 otherwise), and no run failed. No figure is asserted: speed is measured by
//! running `cqrs-bench` itself (BENCHMARKS.md).

use std::process::Command;

const BENCH: &str = env!("CARGO_BIN_EXE_cqrs-bench");

#[test]
fn bench_smoke_takes_every_figure_and_the_replica_equals_the_master() {
    let json = std::env::temp_dir().join(format!("cqrs-bench-smoke-{}.json", std::process::id()));
    let out = Command::new(BENCH)
        .arg("--smoke")
        .args(["--peer", "django"])
        .arg("--json")
        .arg(&json)
        .output()
        .expect("cqrs-bench runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let figures: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let _ = std::fs::remove_file(&json);
    let names: Vec<&str> = figures
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["figure"].as_str().unwrap())
        .collect();
    for wanted in [
        "capture, 1 row/txn, 1 writer",
        "capture, 100 rows/txn, 4 writers",
        "capture by triggers, 1 row/txn, 1 writer",
        "capture by triggers, 100 rows/txn, 4 writers",
        "relay alone",
        "consume -w 1",
        "consume -w 2",
        "commit→apply p99",
        "end to end, 4 writers, 100 row(s)/txn, relay + consume -w 2 [SQLite + queue file]",
        "against bare bodies",
        "against a raw upsert",
        "bulk-dump, fresh",
        "bulk-dump, analysed",
        "bulk-load",
        "an adopted table's first sync",
        "diff pipeline",
        "3-node cluster, classic queues",
        "relay fans out 125 messages to 10 queues, 3-node cluster, quorum queues",
        "replica drains 500 messages, consume -w 2, 3-node cluster, quorum queues",
        "CPU per row, end to end, 4 writers, 1 row(s)/txn, relay + consume -w 1: PostgreSQL",
        "commit→apply p99.9 (100 changes/s offered)",
        "of which due→master stamp p50 (100 changes/s offered)",
        "of which master stamp→apply p99 (100 changes/s offered)",
        "of which master stamp→relay claim p50 (100 changes/s offered)",
        "of which relay claim→apply p99 (100 changes/s offered)",
        "changes/s achieved (100 changes/s offered)",
        "highest offered rate with commit→apply p99 < 50 ms",
        "replica drains 200 messages, consume -w 1, beside django-cqrs",
        "relay + consume -w 2, beside django-cqrs",
        "bulk-load, 2000 rows, beside django-cqrs",
        "1 row/txn updates, relay + consume -w 1, beside django-cqrs",
        "diff pipeline, 2000 rows, 1% drift, beside django-cqrs",
    ] {
        assert!(
            names.iter().any(|n| n.contains(wanted)),
            "no figure {wanted:?} in {names:?}"
        );
    }
    assert!(
        names
            .iter()
            .any(|n| n.starts_with("commit→apply p99") && n.ends_with("[SQLite + queue file]")),
        "no latency figure on SQLite + the queue file in {names:?}"
    );
    for f in figures.as_array().unwrap() {
        assert!(f["value"].as_f64().unwrap() >= 0.0, "{f}");
        assert_eq!(f["failed"], 0, "{f}");
        let name = f["figure"].as_str().unwrap();
        if name.contains("beside django-cqrs") {
            // django-cqrs's own figure from the same run, beside ours.
            assert!(f["ceiling"]["median"].as_f64().unwrap() > 0.0, "{f}");
        }
    }
}
