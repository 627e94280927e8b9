//! The layering `docs/architecture.md` draws, checked on the sources: the leaves (identity,
//! messages, envelopes, errors, deliveries, the remote seam) import nothing from the
//! runtime, and the transport imports nothing from the bureau or contexts. A second
//! transport (the simulated network) plugs into the same seam.

use std::path::{Path, PathBuf};

const RUNTIME: &[&str] = &["bureau", "context", "router", "runtime", "agent", "handler", "protocol"];

fn sources(path: &Path) -> Vec<PathBuf> {
    if path.is_file() {
        return vec![path.to_owned()];
    }
    let mut files = Vec::new();
    for entry in std::fs::read_dir(path).unwrap() {
        files.extend(sources(&entry.unwrap().path()));
    }
    files
}

/// Every `crate::<module>` a file refers to, in `use` lines or paths, including each
/// module of a `crate::{a, b::c}` group.
fn imports(file: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(file).unwrap();
    let word = |rest: &str| -> String { rest.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect() };
    let mut found = Vec::new();
    for (at, _) in text.match_indices("crate::") {
        let rest = &text[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            // Top-level items of the group: after `{` and after each comma at depth 0.
            let mut depth = 0;
            let mut start = true;
            for (i, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => start = true,
                    c if start && !c.is_whitespace() => {
                        found.push(word(&group[i..]));
                        start = false;
                    }
                    _ => {}
                }
            }
        } else {
            found.push(word(rest));
        }
    }
    found
}

fn src(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src").join(relative)
}

fn assert_no_imports(files: &[&str], forbidden: &[&str]) {
    for relative in files {
        for file in sources(&src(relative)) {
            for module in imports(&file) {
                assert!(!forbidden.contains(&module.as_str()), "{} imports crate::{module}", file.display());
            }
        }
    }
}

#[test]
fn identity_messages_and_envelopes_are_leaves() {
    assert_no_imports(
        &["identity.rs", "message.rs", "envelope.rs", "envelope", "error.rs", "delivery.rs", "remote.rs"],
        RUNTIME,
    );
}

#[test]
fn the_transport_knows_nothing_of_bureaus_contexts_or_the_router() {
    assert_no_imports(&["transport"], &["bureau", "context", "router", "runtime", "agent", "handler"]);
}

#[test]
fn the_check_sees_imports() {
    // The check itself can fail: the router does import the delivery leaf, and the
    // library root names every module in groups and paths.
    assert!(imports(&src("router.rs")).contains(&"delivery".to_owned()));
    let dir = std::env::temp_dir().join(format!("layering-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("sample.rs");
    std::fs::write(&file, "use crate::{bureau::Shared, router::{Blocked, Delivery}};\nuse crate::context::Context;")
        .unwrap();
    assert_eq!(imports(&file), vec!["bureau", "router", "context"]);
    std::fs::remove_dir_all(&dir).unwrap();
}
