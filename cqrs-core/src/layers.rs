//! The crate's import order, written once and checked: each module may use only the modules
//! listed before it in [`ORDER`], so no stage reaches into a later one and there is no cycle.
//!
//! Data flows through the pipeline as numbered in the crate docs (1 capture -> 6 apply); imports
//! follow this order, which differs where a stage needs a lower-level piece: capture writes
//! outbox rows, the relay reads them and publishes through a transport, the consumer reads a
//! transport and applies through the [`Replica`](crate::Replica) trait, and the registry, which
//! turns table models into the apply engine's replicas, sits above apply.
//!
//! The check reads the source: every `crate::…`, `super::…` and `self::…` path outside
//! comments, resolved to the longest unit of [`ORDER`] it names.

/// Units from the bottom up. A unit is a module (with its submodules) unless a submodule is
/// listed by itself (`transport::routing`, pure naming shared by the settings' checks, capture and
/// the transports).
pub(crate) const ORDER: &[&str] = &[
    // shared foundation
    "error",
    "crash",
    "shutdown",
    "backoff",
    "telemetry",
    "message",
    "value",
    "turns",
    "transport::routing",
    "config",
    "db",
    "model",
    "rows",
    // the pipeline's stages as they depend on each other
    "outbox",
    "capture",
    "transport",
    "relay",
    "apply",
    "registry",
    "consumer",
    // on top: what the CLI calls
    "service",
    "background",
    "ops",
];

#[cfg(test)]
mod tests {
    use super::ORDER;
    use std::path::{Path, PathBuf};

    /// Every `.rs` file under `dir`.
    fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).expect("reading src") {
            let path = entry.expect("a directory entry").path();
            if path.is_dir() {
                sources(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }

    /// `src/transport/amqp.rs` -> `["transport", "amqp"]`; `mod.rs` names its folder.
    fn module_path(src: &Path, file: &Path) -> Vec<String> {
        let rel = file.strip_prefix(src).expect("under src");
        let mut parts: Vec<String> = rel
            .iter()
            .map(|p| p.to_string_lossy().trim_end_matches(".rs").to_string())
            .collect();
        if parts.last().is_some_and(|p| p == "mod" || p == "lib") {
            parts.pop();
        }
        parts
    }

    /// The position in [`ORDER`] of the longest unit `path` starts with.
    fn unit(path: &[String]) -> Option<usize> {
        (1..=path.len().min(2)).rev().find_map(|n| {
            let name = path[..n].join("::");
            ORDER.iter().position(|u| *u == name)
        })
    }

    /// Paths a line of code names: `crate::a::b`, `super::x`, `self::y`, and each item of a
    /// `{..}` group right after them, resolved against the file's module path `here`.
    fn named_paths(line: &str, here: &[String]) -> Vec<Vec<String>> {
        let code = line.split("//").next().unwrap_or("");
        let mut found = Vec::new();
        for (root, base) in [
            ("crate::", Vec::new()),
            ("super::", here[..here.len().saturating_sub(1)].to_vec()),
            ("self::", here.to_vec()),
        ] {
            let mut rest = code;
            while let Some(i) = rest.find(root) {
                let preceded_by_ident = rest[..i]
                    .chars()
                    .last()
                    .is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':');
                let tail = &rest[i + root.len()..];
                rest = tail;
                if preceded_by_ident {
                    continue;
                }
                let ident = |s: &str| -> Vec<String> {
                    s.split("::")
                        .map(|seg| {
                            seg.chars()
                                .take_while(|c| c.is_alphanumeric() || *c == '_')
                                .collect::<String>()
                        })
                        .take_while(|seg| !seg.is_empty())
                        .take(2)
                        .collect()
                };
                if let Some(group) = tail.strip_prefix('{') {
                    let inner = group.split('}').next().unwrap_or("");
                    for item in inner.split(',') {
                        let mut p = base.clone();
                        p.extend(ident(item.trim()));
                        found.push(p);
                    }
                } else {
                    let mut p = base.clone();
                    p.extend(ident(tail));
                    found.push(p);
                }
            }
        }
        found
    }

    /// The code lines of a file with their 0-based numbers, comment lines left out and a `use`
    /// that spans lines (a rustfmt'd `{..}` group) joined into one.
    fn statements(text: &str) -> Vec<(usize, String)> {
        let mut out: Vec<(usize, String)> = Vec::new();
        let mut open_use = false;
        for (n, line) in text.lines().enumerate() {
            let code = line.trim_start();
            if code.starts_with("//") {
                continue;
            }
            if open_use {
                let last = out.last_mut().expect("a use statement is open");
                last.1.push(' ');
                last.1.push_str(code);
            } else {
                out.push((n, code.to_string()));
            }
            let is_use = open_use
                || code.starts_with("use ")
                || code.starts_with("pub use ")
                || code.starts_with("pub(crate) use ");
            open_use = is_use && !code.contains(';');
        }
        out
    }

    /// Every import that goes up the order or names no unit, as `file: line: reason`.
    fn violations(src: &Path) -> Vec<String> {
        let mut files = Vec::new();
        sources(src, &mut files);
        files.sort();
        let mut bad = Vec::new();
        for file in files {
            let here = module_path(src, &file);
            if here.is_empty() || here == ["layers"] {
                // lib.rs re-exports and declares everything; this file's fixtures are text.
                continue;
            }
            let Some(own) = unit(&here) else {
                bad.push(format!(
                    "{}: module {} is not in layers::ORDER",
                    file.display(),
                    here.join("::")
                ));
                continue;
            };
            let text = std::fs::read_to_string(&file).expect("reading a source file");
            for (n, line) in statements(&text) {
                for path in named_paths(&line, &here) {
                    if path.is_empty() {
                        continue;
                    }
                    match unit(&path) {
                        Some(u) if u <= own => {}
                        Some(u) => bad.push(format!(
                            "{}:{}: {} imports {}, which comes later in layers::ORDER",
                            file.display(),
                            n + 1,
                            ORDER[own],
                            ORDER[u]
                        )),
                        None if path.len() == 1 && here.len() > 1 => {} // a sibling item via super/self
                        None => bad.push(format!(
                            "{}:{}: `{}` names no unit of layers::ORDER (use the defining module's path)",
                            file.display(),
                            n + 1,
                            path.join("::")
                        )),
                    }
                }
            }
        }
        bad
    }

    #[test]
    fn no_module_imports_from_a_later_layer() {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let bad = violations(&src);
        assert!(
            bad.is_empty(),
            "imports against the layer order:\n{}",
            bad.join("\n")
        );
    }

    #[test]
    fn the_check_catches_a_backward_import_and_a_cycle() {
        let dir = std::env::temp_dir().join(format!("cqrs-layers-{}", std::process::id()));
        let src = dir.join("src");
        std::fs::create_dir_all(src.join("transport")).unwrap();
        std::fs::write(src.join("lib.rs"), "pub mod capture;\n").unwrap();
        // capture (stage 1) reaching into the consumer (stage 5).
        std::fs::write(src.join("capture.rs"), "use crate::consumer::Consumer;\n").unwrap();
        // a cycle: the outbox and capture importing each other.
        std::fs::write(src.join("outbox.rs"), "use crate::capture::Tx;\n").unwrap();
        std::fs::write(src.join("transport/routing.rs"), "use super::Inbox;\n").unwrap();
        std::fs::write(src.join("stray.rs"), "").unwrap();
        // a group rustfmt spread over lines, its backward item on a line of its own.
        std::fs::write(
            src.join("message.rs"),
            "use crate::{\n    error::Error,\n    relay::Relay,\n};\n",
        )
        .unwrap();
        let bad = violations(&src);
        std::fs::remove_dir_all(&dir).unwrap();
        let has = |needle: &str| bad.iter().any(|b| b.contains(needle));
        assert!(has("capture imports consumer"), "{bad:?}");
        assert!(has("outbox imports capture"), "{bad:?}");
        assert!(has("transport::routing imports transport"), "{bad:?}");
        assert!(has("module stray is not in layers::ORDER"), "{bad:?}");
        assert!(has("message.rs:1: message imports relay"), "{bad:?}");
        assert_eq!(bad.len(), 5, "{bad:?}");
    }
}
