//! The guide's `Cargo.toml` block asks for the versions the workspace itself uses (its Rust
//! blocks are doc-tests of this crate, built with the workspace's versions), and its path
//! dependencies name crates of this repository.

use std::collections::BTreeMap;
use std::path::Path;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("agent-examples is inside the workspace")
}

/// `name = "req"` or `name = { version = "req", ... }` or `name = { path = "...", ... }`:
/// the name, and the version requirement or path.
fn dependency(line: &str) -> Option<(String, String)> {
    let (name, value) = line.split_once('=')?;
    let (name, value) = (name.trim(), value.trim());
    let quoted = |s: &str| s.split('"').nth(1).map(str::to_owned);
    let value = match value.strip_prefix('{') {
        None => quoted(value)?,
        Some(table) => {
            let field = table.split(',').find(|f| {
                let key = f.split('=').next().unwrap_or("").trim();
                key == "version" || key == "path"
            })?;
            quoted(field.split_once('=')?.1)?
        }
    };
    Some((name.to_owned(), value))
}

/// The dependencies listed in the `toml` blocks of `markdown`.
fn guide_dependencies(markdown: &str) -> BTreeMap<String, String> {
    let mut found = BTreeMap::new();
    let mut in_toml = false;
    for line in markdown.lines() {
        match line.trim() {
            "```toml" => in_toml = true,
            "```" => in_toml = false,
            l if in_toml && !l.starts_with('[') && !l.is_empty() => {
                let (name, value) = dependency(l).unwrap_or_else(|| panic!("unreadable dependency line: {l}"));
                found.insert(name, value);
            }
            _ => {}
        }
    }
    found
}

/// The `[workspace.dependencies]` of the root manifest.
fn workspace_dependencies(manifest: &str) -> BTreeMap<String, String> {
    let section = manifest.split("[workspace.dependencies]").nth(1).expect("a [workspace.dependencies] table");
    section
        .lines()
        .take_while(|l| !l.trim_start().starts_with('['))
        .filter(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
        .filter_map(dependency)
        .collect()
}

#[test]
fn the_guide_asks_for_the_workspace_versions() {
    let guide = std::fs::read_to_string(root().join("docs/guide.md")).expect("docs/guide.md");
    let manifest = std::fs::read_to_string(root().join("Cargo.toml")).expect("the root Cargo.toml");
    let asked = guide_dependencies(&guide);
    let workspace = workspace_dependencies(&manifest);
    assert!(asked.len() >= 8, "the guide's Cargo.toml block lists its dependencies: {asked:?}");
    for (name, wanted) in &asked {
        let ours = workspace.get(name).unwrap_or_else(|| panic!("{name} is not a workspace dependency"));
        match wanted.strip_prefix("../agora/") {
            Some(path) => {
                assert_eq!(ours, path, "{name}: the guide's path names the crate's directory");
                assert!(root().join(path).join("Cargo.toml").exists(), "{name}: {path} is a crate of this repository");
            }
            None => assert_eq!(ours, wanted, "{name}: the guide asks for the workspace's version"),
        }
    }
}
