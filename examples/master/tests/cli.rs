//! The example master's own binary.

#[test]
fn lists_its_master_models() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_example-master"))
        .arg("models")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "master item\nmaster typed\n"
    );
}
