//! `docs/SPEC.md` is the contract, and it is worth something only while it says what the code does.
//! These checks keep the two in step where a drift would go unnoticed: every reason code the engine
//! can emit, every reason an input can be dead-lettered for, every event type and every DLQ header
//! is in the contract; and the documentation links only inside the repository, to files that exist.

use std::path::{Path, PathBuf};

use vigil::core::event::{InputType, OUTPUT_TYPES, Reason};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn spec() -> String {
    std::fs::read_to_string(root().join("docs/SPEC.md")).expect("docs/SPEC.md")
}

#[test]
fn every_reason_code_is_in_the_contract() {
    let spec = spec();
    let missing: Vec<_> =
        Reason::ALL.iter().map(|r| r.as_str()).filter(|c| !spec.contains(&format!("| `{c}` |"))).collect();
    assert!(missing.is_empty(), "reason codes docs/SPEC.md §2.2 does not describe: {missing:?}");
}

#[test]
fn every_dlq_reason_and_header_is_in_the_contract() {
    let spec = spec();
    let missing: Vec<_> =
        vigil::bus::intake::REASONS.iter().filter(|c| !spec.contains(&format!("| `{c}` |"))).collect();
    assert!(missing.is_empty(), "DLQ reasons docs/SPEC.md §5.3 does not describe: {missing:?}");
    let missing: Vec<_> = vigil::bus::dlq::HEADERS.iter().filter(|h| !spec.contains(&format!("| `{h}` |"))).collect();
    assert!(missing.is_empty(), "DLQ headers docs/SPEC.md §5.3 does not describe: {missing:?}");
}

#[test]
fn every_event_type_is_in_the_contract() {
    let spec = spec();
    for t in InputType::ALL.iter().map(|t| t.as_str()).chain(OUTPUT_TYPES.iter().copied()) {
        assert!(spec.contains(&format!("`{t}`")), "docs/SPEC.md never names `{t}`");
    }
}

/// The repository's own text files (what `git ls-files` would list, without needing git).
fn text_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if name.starts_with('.') || name == "target" {
            continue;
        }
        if path.is_dir() {
            text_files(&path, out);
        } else if ["md", "rs", "toml", "json", "yaml", "sh", "conf"].iter().any(|e| name.ends_with(&format!(".{e}")))
            || name == "Makefile"
        {
            out.push(path);
        }
    }
}

#[test]
fn nothing_refers_outside_the_repository_and_every_doc_link_resolves() {
    let mut files = Vec::new();
    text_files(root(), &mut files);
    assert!(files.len() > 50, "only {} files found", files.len());
    let outside = "../".to_string() + "shared";
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap_or_default();
        assert!(!text.contains(&outside), "{} refers to {outside}", file.display());
        if file.extension().is_some_and(|e| e == "md") {
            for link in markdown_links(&text) {
                if link.contains("://") || link.starts_with('#') {
                    continue;
                }
                let target = file.parent().unwrap().join(link.split('#').next().unwrap());
                assert!(target.exists(), "{} links to {link}, which does not exist", file.display());
            }
        }
    }
}

/// The targets of `[text](target)` links.
fn markdown_links(text: &str) -> Vec<&str> {
    text.match_indices("](").filter_map(|(i, _)| text[i + 2..].split(')').next()).collect()
}

/// The files ARCHITECTURE.md's code map names, as paths: a list item's first `name` is its path
/// (joined to its parent's when the parent is a directory, `name/`); the other `*.rs` names on a
/// directory's line are files in it.
fn code_map() -> Vec<String> {
    let text = std::fs::read_to_string(root().join("ARCHITECTURE.md")).unwrap();
    let map = text.split("## Code map").nth(1).unwrap().split("\n## ").next().unwrap();
    // Each item with its continuation lines.
    let mut items: Vec<(usize, String)> = Vec::new();
    for line in map.lines() {
        let indent = line.len() - line.trim_start().len();
        match (line.trim_start().strip_prefix("- "), items.last_mut()) {
            (Some(item), _) => items.push((indent, item.to_string())),
            (None, Some((i, item))) if indent > *i && !line.trim().is_empty() => {
                item.push(' ');
                item.push_str(line.trim());
            }
            _ => {}
        }
    }
    let mut parents: Vec<(usize, String)> = Vec::new();
    let mut named = Vec::new();
    for (indent, item) in &items {
        let indent = *indent;
        let names: Vec<&str> = item.split('`').skip(1).step_by(2).collect();
        let Some(first) = names.first() else { continue };
        parents.retain(|(i, _)| *i < indent);
        let base = parents.last().map(|(_, p)| p.clone()).unwrap_or_default();
        let path = format!("{base}{first}");
        if path.ends_with('/') {
            named.extend(names[1..].iter().filter(|n| n.ends_with(".rs")).map(|n| format!("{path}{n}")));
            parents.push((indent, path));
        } else {
            named.push(path);
        }
    }
    named
}

#[test]
fn the_code_map_lists_every_source_file() {
    // Given every Rust file of the repository,
    let mut files = Vec::new();
    text_files(root(), &mut files);
    let sources: Vec<String> = files
        .iter()
        .filter(|f| f.extension().is_some_and(|e| e == "rs"))
        .map(|f| f.strip_prefix(root()).unwrap().to_string_lossy().into_owned())
        .collect();
    assert!(sources.len() > 80, "only {} Rust files found", sources.len());
    // when ARCHITECTURE.md's code map is read, then it names each one, and nothing that is gone.
    let named = code_map();
    for source in &sources {
        assert!(named.contains(source), "ARCHITECTURE.md's code map does not list {source}");
    }
    for name in &named {
        assert!(root().join(name).exists(), "ARCHITECTURE.md's code map lists {name}, which does not exist");
    }
}
