//! The library's layers import downward only, and no source file imports a file
//! that imports it back: read from the `crate::` paths (and child `mod`
//! declarations) of every file under `src/`, comments left out.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The top-level modules, lowest first: each may import only those before it.
const LAYERS: &[&str] = &[
    "error",
    "keyword",
    "onnx",
    "ldam",
    "npz",
    "ops",
    "autodiff",
    "counts",
    "patch",
    "compile",
    "adjust",
    "inspect",
    "runtime",
    "distributed",
    "backend",
    "train",
    "cli",
];

/// Every `.rs` file under `dir`, by module path (`ops::nn::window`).
fn modules(dir: &Path, root: &Path, out: &mut BTreeMap<String, String>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path: PathBuf = entry.unwrap().path();
        if path.is_dir() {
            modules(&path, root, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            let relative = path.strip_prefix(root).unwrap().with_extension("");
            let mut parts: Vec<String> = relative
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            if parts.last().is_some_and(|p| p == "mod") {
                parts.pop();
            }
            if parts == ["lib"] || parts == ["main"] {
                parts.clear();
            }
            // Comments and the unit-test module at the end of a file are not the
            // file's imports.
            let code: String = std::fs::read_to_string(&path)
                .unwrap()
                .lines()
                .take_while(|l| l.trim() != "#[cfg(test)]")
                .map(|l| l.split("//").next().unwrap_or(""))
                .collect::<Vec<_>>()
                .join("\n");
            out.insert(parts.join("::"), code);
        }
    }
}

/// The longest module that `path` (after `crate::`) names.
fn resolve<'m>(path: &str, modules: &'m BTreeMap<String, String>) -> Option<&'m str> {
    let segments: Vec<&str> = path.split("::").collect();
    (1..=segments.len())
        .rev()
        .map(|n| segments[..n].join("::"))
        .find_map(|m| modules.get_key_value(&m).map(|(k, _)| k.as_str()))
}

fn edges(modules: &BTreeMap<String, String>) -> BTreeMap<&str, BTreeSet<&str>> {
    let mut edges: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for (module, code) in modules {
        let from = module.as_str();
        let mut add = |to: &'_ str| {
            let to: &str = modules.get_key_value(to).map_or("", |(k, _)| k.as_str());
            if to != from {
                edges.entry(from).or_default().insert(to);
            }
        };
        for (at, _) in code.match_indices("crate::") {
            let path: String = code[at + 7..]
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':')
                .collect();
            if let Some(to) = resolve(path.trim_end_matches(':'), modules) {
                add(to);
            }
        }
        // `super::x` names a sibling (or the parent itself).
        for (at, _) in code.match_indices("super::") {
            if at > 0 && code[..at].ends_with("super::") {
                continue; // counted from the first `super::` of a chain
            }
            let mut rest = &code[at..];
            let mut base: Vec<&str> = from.split("::").filter(|s| !s.is_empty()).collect();
            while let Some(tail) = rest.strip_prefix("super::") {
                base.pop();
                rest = tail;
            }
            let path: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':')
                .collect();
            let mut full = base.join("::");
            for segment in path
                .trim_end_matches(':')
                .split("::")
                .filter(|s| !s.is_empty())
            {
                if !full.is_empty() {
                    full.push_str("::");
                }
                full.push_str(segment);
            }
            if let Some(to) = resolve(&full, modules) {
                add(to);
            }
        }
        // A child module the file declares and then names (`rules::x`).
        for line in code.lines() {
            let line = line
                .trim()
                .trim_start_matches("pub ")
                .trim_start_matches("pub(crate) ");
            if let Some(child) = line.strip_prefix("mod ").and_then(|l| l.strip_suffix(';')) {
                let full = if from.is_empty() {
                    child.to_string()
                } else {
                    format!("{from}::{child}")
                };
                let used = code.match_indices(&format!("{child}::")).any(|(i, _)| {
                    i == 0
                        || !code[..i]
                            .ends_with(|c: char| c.is_alphanumeric() || c == ':' || c == '_')
                });
                if let (true, Some((key, _))) = (used, modules.get_key_value(&full)) {
                    add(key.as_str());
                }
            }
        }
    }
    edges
}

fn source_modules() -> BTreeMap<String, String> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut out = BTreeMap::new();
    modules(&root, &root, &mut out);
    out
}

#[test]
fn layers_import_downward_only() {
    let modules = source_modules();
    let rank = |m: &str| {
        let top = m.split("::").next().unwrap_or("");
        LAYERS.iter().position(|l| *l == top)
    };
    let mut upward = Vec::new();
    for (from, tos) in edges(&modules) {
        let Some(from_rank) = rank(from) else {
            assert!(
                from.is_empty(),
                "module '{from}' is in no layer: add it to LAYERS"
            );
            continue;
        };
        for to in tos {
            let to_rank = rank(to).unwrap_or_else(|| panic!("'{to}' is in no layer"));
            if to_rank > from_rank {
                upward.push(format!("{from} -> {to}"));
            }
        }
    }
    assert!(upward.is_empty(), "imports that go up a layer: {upward:#?}");
}

#[test]
fn no_file_imports_a_file_that_imports_it_back() {
    let modules = source_modules();
    let edges = edges(&modules);
    // Tarjan's strongly connected components; any of more than one file is a cycle.
    struct State<'a> {
        edges: &'a BTreeMap<&'a str, BTreeSet<&'a str>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        cycles: Vec<Vec<&'a str>>,
    }
    fn visit<'a>(v: &'a str, s: &mut State<'a>) {
        let i = s.index.len();
        s.index.insert(v, i);
        s.low.insert(v, i);
        s.stack.push(v);
        let next: Vec<&str> = s
            .edges
            .get(v)
            .map(|e| e.iter().copied().collect())
            .unwrap_or_default();
        for w in next {
            if !s.index.contains_key(w) {
                visit(w, s);
                let low = s.low[v].min(s.low[w]);
                s.low.insert(v, low);
            } else if s.stack.contains(&w) {
                let low = s.low[v].min(s.index[w]);
                s.low.insert(v, low);
            }
        }
        if s.low[v] == s.index[v] {
            let mut component = Vec::new();
            while let Some(w) = s.stack.pop() {
                component.push(w);
                if w == v {
                    break;
                }
            }
            if component.len() > 1 {
                s.cycles.push(component);
            }
        }
    }
    let mut state = State {
        edges: &edges,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        cycles: Vec::new(),
    };
    for module in modules.keys() {
        if !state.index.contains_key(module.as_str()) {
            visit(module.as_str(), &mut state);
        }
    }
    assert!(
        state.cycles.is_empty(),
        "import cycles: {:#?}",
        state.cycles
    );
    assert!(modules.len() > 50, "read {} files", modules.len());
}
