//! The layers of the crate point one way: a module only uses modules of its own layer or of
//! the layers below it, and the module graph has no cycle. Read from the source: every
//! `crate::…` path and `super::…` path outside test modules is an edge.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Layers, bottom first; a module's layer is that of the longest prefix listed here.
const LAYERS: &[(&str, usize)] = &[
    ("error", 0),
    ("digest", 0),
    ("descriptor", 0),
    ("json", 0),
    ("mediatype", 0),
    ("platform", 0),
    ("reference", 0),
    ("time", 0),
    ("text", 0),
    ("progress", 0),
    ("fsutil", 0),
    ("graph", 0),
    ("runtime", 0),
    ("transport", 1),
    ("options", 1),
    ("archive", 2),
    ("store", 3),
    ("source", 4),
    ("engine", 5),
    ("packfile", 6),
    ("assemble", 6),
    ("pack", 6),
    ("copy", 6),
    ("list", 6),
    ("verify", 6),
    ("delete", 6),
    ("extract", 6),
    ("mount", 6),
    ("proxy", 6),
    ("crate", 7),
    ("cli", 8),
];

fn layer(module: &str) -> usize {
    let top = module.split("::").next().unwrap_or(module);
    LAYERS
        .iter()
        .find(|(m, _)| *m == top)
        .map(|(_, l)| *l)
        .unwrap_or_else(|| panic!("module {module} has no layer: add it to LAYERS"))
}

/// Every module of `src` (`store::registry::client`, `crate` for lib.rs) with its source,
/// test modules cut off.
fn modules(src: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut todo = vec![src.to_path_buf()];
    while let Some(dir) = todo.pop() {
        for e in std::fs::read_dir(&dir).expect("read src").flatten() {
            let p = e.path();
            if p.is_dir() {
                todo.push(p);
                continue;
            }
            if p.extension().and_then(|x| x.to_str()) != Some("rs") {
                continue;
            }
            let rel = p.strip_prefix(src).expect("prefix").with_extension("");
            let mut name = rel.to_string_lossy().replace('/', "::");
            if let Some(stripped) = name.strip_suffix("::mod") {
                name = stripped.to_string();
            }
            if name == "lib" {
                name = "crate".into();
            }
            if name == "main" {
                continue;
            }
            let text = std::fs::read_to_string(&p).expect("read");
            let text = match text.find("#[cfg(test)]\nmod tests") {
                Some(i) => text[..i].to_string(),
                None => text,
            };
            out.insert(name, text);
        }
    }
    out
}

/// The module a path like `store::layout::Layout` names: its longest known prefix.
fn resolve(mods: &BTreeMap<String, String>, path: &str) -> Option<String> {
    let parts: Vec<&str> = path.split("::").collect();
    (1..=parts.len())
        .rev()
        .map(|i| parts[..i].join("::"))
        .find(|c| mods.contains_key(c))
}

fn edges(mods: &BTreeMap<String, String>) -> BTreeMap<String, BTreeSet<String>> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (m, text) in mods {
        let parent = m.rsplit_once("::").map(|(p, _)| p.to_string());
        for (prefix, base) in [("crate::", None), ("super::", parent.clone())] {
            for (i, _) in text.match_indices(prefix) {
                let rest: String = text[i + prefix.len()..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == ':')
                    .collect();
                let path = match &base {
                    Some(b) => format!("{b}::{rest}"),
                    None if prefix == "super::" => continue,
                    None => rest.clone(),
                };
                let target = resolve(mods, path.trim_end_matches(':')).or_else(|| {
                    // `crate::Options` and other façade items.
                    (prefix == "crate::" && rest.starts_with(|c: char| c.is_ascii_uppercase()))
                        .then(|| "crate".to_string())
                });
                if let Some(t) = target {
                    // A module may use its own submodules and its parents' items freely.
                    if t != *m
                        && !t.starts_with(&format!("{m}::"))
                        && !m.starts_with(&format!("{t}::"))
                    {
                        out.entry(m.clone()).or_default().insert(t);
                    }
                }
            }
        }
    }
    out
}

#[test]
fn layers_point_down_and_modules_have_no_cycle() {
    let mods = modules(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"));
    assert!(mods.len() > 20, "found the modules: {:?}", mods.keys());
    let graph = edges(&mods);
    let mut upward = Vec::new();
    for (from, tos) in &graph {
        for to in tos {
            if layer(to) > layer(from) {
                upward.push(format!("{from} -> {to}"));
            }
        }
    }
    assert!(upward.is_empty(), "arrows pointing up: {upward:#?}");
    // Depth-first search for a cycle among the modules.
    fn visit(
        m: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        state: &mut BTreeMap<String, u8>,
        stack: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        match state.get(m) {
            Some(2) => return None,
            Some(1) => {
                let start = stack.iter().position(|s| s == m).unwrap_or(0);
                let mut cycle = stack[start..].to_vec();
                cycle.push(m.to_string());
                return Some(cycle);
            }
            _ => {}
        }
        state.insert(m.to_string(), 1);
        stack.push(m.to_string());
        for next in graph.get(m).into_iter().flatten() {
            if let Some(c) = visit(next, graph, state, stack) {
                return Some(c);
            }
        }
        stack.pop();
        state.insert(m.to_string(), 2);
        None
    }
    let mut state = BTreeMap::new();
    for m in mods.keys() {
        let cycle = visit(m, &graph, &mut state, &mut Vec::new());
        assert!(
            cycle.is_none(),
            "import cycle: {}",
            cycle.unwrap_or_default().join(" -> ")
        );
    }
}
