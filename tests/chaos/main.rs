//! The short chaos soak, seeded, as a test: its own binary so it runs alone (it starts and kills a
//! private PostgreSQL cluster, private RabbitMQ nodes and a private nats-server, never the
//! machine's).

use std::process::Command;

const SOAK: &str = env!("CARGO_BIN_EXE_cqrs-soak");

/// Every setup converges under every fault kind, with no row differing and no dead letter; the
/// soak exits 1 otherwise, and its JSON report is checked here too.
#[test]
fn short_soak_converges_under_every_fault_kind() {
    let json = std::env::temp_dir().join(format!("cqrs-soak-report-{}.json", std::process::id()));
    let out = Command::new(SOAK)
        .args([
            "--seed",
            "20261203",
            "--duration",
            "20",
            "--converge-timeout",
            "180",
            "--json",
        ])
        .arg(&json)
        .output()
        .expect("cqrs-soak runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "soak failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    let reports: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).expect("the JSON report")).unwrap();
    let _ = std::fs::remove_file(&json);
    let reports = reports.as_array().expect("one report per setup");
    assert_eq!(reports.len(), 4, "{stdout}");
    for r in reports {
        let setup = r["setup"].as_str().unwrap();
        assert_eq!(r["rows_differing"], 0, "{setup}: {stdout}");
        assert_eq!(r["dead_letters"], 0, "{setup}: {stdout}");
        assert!(r["changes"].as_u64().unwrap() > 100, "{setup}: {stdout}");
        assert_eq!(r["master_rows"], r["replica_rows"], "{setup}: {stdout}");
        let faults = r["faults"].as_object().unwrap();
        let kinds = match setup {
            "pg" => 9,
            "cluster" => 6,
            "nats" => 5,
            _ => 2,
        };
        assert_eq!(faults.len(), kinds, "{setup}: {stdout}");
        assert!(
            faults.values().all(|n| n.as_u64().unwrap() >= 1),
            "{setup}: {stdout}"
        );
        assert!(
            r["duplicated_deliveries"].as_u64().unwrap() >= 1,
            "{setup}: {stdout}"
        );
        assert!(
            r["delayed_deliveries"].as_u64().unwrap() >= 1,
            "{setup}: {stdout}"
        );
    }
}
