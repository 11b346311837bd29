//! README's dependency block, checked: it resolves with this workspace's lock file (every crate,
//! version and feature exists; a misspelt feature fails here), and it lists every crate and
//! Diesel feature README's own Rust code needs. (README's code blocks themselves compile as doc
//! tests of this crate. Compiling them against exactly this block takes a cold build of every
//! dependency, about 8 minutes here: too long for every CI run.)

use std::process::Command;

const README: &str = include_str!("../README.md");

/// The body of the first fenced block of `lang` whose text starts with `starts`.
fn block<'a>(lang: &str, starts: &str) -> &'a str {
    let fence = format!("```{lang}\n");
    README
        .split(fence.as_str())
        .skip(1)
        .map(|rest| rest.split("```").next().unwrap())
        .find(|body| body.starts_with(starts))
        .unwrap_or_else(|| panic!("no ```{lang} block starting with {starts:?} in README.md"))
}

/// Every Rust block of README.md, joined.
fn rust_code() -> String {
    README
        .split("```rust")
        .skip(1)
        .map(|rest| {
            rest.split_once('\n')
                .unwrap()
                .1
                .split("```")
                .next()
                .unwrap()
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn readmes_dependency_block_resolves_and_covers_its_code() {
    let deps = block("toml", "[dependencies]");
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let parsed: toml::Table = toml::from_str(deps).expect("README's dependency block is TOML");
    let table = parsed["dependencies"].as_table().unwrap();

    // What README's code uses: crates by path, and the Diesel features its types need.
    let code = rust_code();
    for (krate, dep) in [
        ("diesel::", "diesel"),
        ("cqrs::", "diesel-cqrs"),
        ("cqrs_cli::", "diesel-cqrs-cli"),
        ("chrono::", "chrono"),
        ("bigdecimal::", "bigdecimal"),
        ("serde_json::", "serde_json"),
        ("uuid::", "uuid"),
    ] {
        if code.contains(krate) {
            assert!(
                table.contains_key(dep),
                "README's code uses {krate} but the block has no {dep}"
            );
        }
    }
    let features: Vec<&str> = table["diesel"]["features"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap())
        .collect();
    for (uses, feature) in [
        ("PgConnection", "postgres"),
        ("Timestamptz", "chrono"),
        ("BigDecimal", "numeric"),
        ("SqliteConnection", "sqlite"),
        ("Uuid", "uuid"),
    ] {
        if code.contains(uses) {
            assert!(
                features.contains(&feature),
                "README's code uses {uses}, which needs Diesel's {feature:?} feature: {features:?}"
            );
        }
    }

    // It resolves: a crate made of it, with the workspace's lock file and these crates by path.
    let dir = std::env::temp_dir().join(format!("cqrs-readme-deps-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("src")).unwrap();
    let manifest = deps
        .replacen(
            r#"git = "<this repository>""#,
            &format!(r#"path = "{root}/cqrs-core""#),
            1,
        )
        .replacen(
            r#"git = "<this repository>""#,
            &format!(r#"path = "{root}/cqrs-cli""#),
            1,
        );
    assert!(!manifest.contains("<this repository>"), "{manifest}");
    std::fs::write(
        dir.join("Cargo.toml"),
        format!("[package]\nname = \"readme-deps\"\nversion = \"0.0.0\"\nedition = \"2024\"\n\n{manifest}\n[workspace]\n"),
    )
    .unwrap();
    std::fs::write(dir.join("src/main.rs"), "fn main() {}\n").unwrap();
    std::fs::copy(format!("{root}/Cargo.lock"), dir.join("Cargo.lock")).unwrap();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let host = String::from_utf8(Command::new("rustc").arg("-vV").output().unwrap().stdout)
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("host: ").map(str::to_string))
        .expect("rustc -vV names the host");
    let out = Command::new(cargo)
        .args([
            "metadata",
            "--offline",
            "--format-version",
            "1",
            "--filter-platform",
        ])
        .arg(&host)
        .current_dir(&dir)
        .output()
        .expect("cargo runs");
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        out.status.success(),
        "README's dependency block does not resolve:\n{manifest}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
