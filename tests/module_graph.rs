//! The crates' modules import each other one way: among the modules of each
//! parent (the crate root's, `call`'s, `connection`'s, …) no two reach each
//! other through `use crate::…` and `super::…` paths. Read from the source
//! files themselves, outside comments and unit-test modules.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// A module's path inside its crate: `["call", "handle"]`.
type Module = Vec<String>;

/// Every module of the crate whose root directory is `src`, with its file.
fn modules(src: &Path) -> BTreeMap<Module, PathBuf> {
    let mut found = BTreeMap::new();
    let mut dirs = vec![src.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        for entry in entries {
            let path = entry.expect("a directory entry").path();
            if path.is_dir() {
                dirs.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let relative = path
                .strip_prefix(src)
                .expect("under src")
                .with_extension("");
            let mut module: Module = relative
                .iter()
                .map(|s| s.to_string_lossy().into_owned())
                .collect();
            if matches!(
                module.last().map(String::as_str),
                Some("mod" | "lib" | "main")
            ) {
                module.pop();
            }
            if module.last().is_some_and(|m| m == "tests") {
                continue;
            }
            found.insert(module, path);
        }
    }
    found
}

/// The text of `file` that is compiled outside tests, without comments.
fn code(file: &Path) -> String {
    let text = std::fs::read_to_string(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    let text = match text.find("#[cfg(test)]\nmod tests") {
        Some(end) => &text[..end],
        None => &text[..],
    };
    text.lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The identifiers of the path that starts at `text`: `a::b::{c, d::e}`
/// gives `[a, b]`, and every name in braces as a path of its own.
fn paths(text: &str) -> Vec<Vec<String>> {
    let mut path = Vec::new();
    let mut rest = text;
    loop {
        let name: String = rest
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        if name.is_empty() {
            break;
        }
        rest = &rest[name.len()..];
        path.push(name);
        match rest.strip_prefix("::") {
            Some(next) => rest = next,
            None => return vec![path],
        }
    }
    let Some(group) = rest.strip_prefix('{') else {
        return vec![path];
    };
    let inner = &group[..group.find('}').unwrap_or(group.len())];
    let mut all = Vec::new();
    for item in inner.split(',') {
        for mut tail in paths(item.trim()) {
            let mut full = path.clone();
            full.append(&mut tail);
            all.push(full);
        }
    }
    all
}

/// The modules `module` (in `file`) refers to.
fn refers_to(module: &Module, file: &Path, known: &BTreeMap<Module, PathBuf>) -> BTreeSet<Module> {
    let code = code(file);
    let mut targets = BTreeSet::new();
    for (prefix, base) in [
        ("crate::", Vec::new()),
        ("super::", module[..module.len().saturating_sub(1)].to_vec()),
    ] {
        for (at, _) in code.match_indices(prefix) {
            let before = code[..at].chars().next_back();
            if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':') {
                continue;
            }
            for path in paths(&code[at + prefix.len()..]) {
                let mut target = base.clone();
                let mut longest = None;
                for name in path {
                    target.push(name);
                    if known.contains_key(&target) {
                        longest = Some(target.clone());
                    }
                }
                targets.extend(longest);
            }
        }
    }
    targets
}

/// A cycle among the children of one parent, if any: the modules on it.
fn cycle(edges: &BTreeMap<Module, BTreeSet<Module>>) -> Option<Vec<Module>> {
    fn visit(
        at: &Module,
        edges: &BTreeMap<Module, BTreeSet<Module>>,
        done: &mut BTreeSet<Module>,
        stack: &mut Vec<Module>,
    ) -> Option<Vec<Module>> {
        if let Some(i) = stack.iter().position(|m| m == at) {
            return Some(stack[i..].to_vec());
        }
        if !done.insert(at.clone()) {
            return None;
        }
        stack.push(at.clone());
        for next in edges.get(at).into_iter().flatten() {
            if let Some(found) = visit(next, edges, done, stack) {
                return Some(found);
            }
        }
        stack.pop();
        None
    }
    let mut done = BTreeSet::new();
    for start in edges.keys() {
        if let Some(found) = visit(start, edges, &mut done, &mut Vec::new()) {
            return Some(found);
        }
    }
    None
}

/// The import cycles among sibling modules of the crate in `src`.
fn cycles(src: &Path) -> Vec<String> {
    let known = modules(src);
    // Per parent: an edge from the child holding a module to the child
    // holding what it refers to.
    let mut levels: BTreeMap<Module, BTreeMap<Module, BTreeSet<Module>>> = BTreeMap::new();
    for (module, file) in &known {
        for target in refers_to(module, file, &known) {
            let common = module
                .iter()
                .zip(&target)
                .take_while(|(a, b)| a == b)
                .count();
            if common >= module.len() || common >= target.len() {
                continue;
            }
            let (from, to) = (module[..=common].to_vec(), target[..=common].to_vec());
            levels
                .entry(module[..common].to_vec())
                .or_default()
                .entry(from)
                .or_default()
                .insert(to);
        }
    }
    levels
        .values()
        .filter_map(cycle)
        .map(|c| {
            c.iter()
                .map(|m| m.join("::"))
                .collect::<Vec<_>>()
                .join(" -> ")
        })
        .collect()
}

fn crate_src(dir: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(dir).join("src")
}

#[test]
fn no_crate_has_an_import_cycle_among_sibling_modules() {
    for dir in [".", "client", "registry-actor", "server-kit"] {
        let src = crate_src(dir);
        assert!(modules(&src).len() > 1, "{} has modules", src.display());
        let found = cycles(&src);
        assert!(
            found.is_empty(),
            "{}: import cycles {found:?}",
            src.display()
        );
    }
}

#[test]
fn a_cycle_through_super_and_crate_paths_is_found() {
    let dir = std::env::temp_dir().join(format!("module-graph-{}", std::process::id()));
    let call = dir.join("call");
    std::fs::create_dir_all(&call).expect("temp dir");
    let files = [
        ("lib.rs", "mod call;\nuse crate::call::Handle;\n"),
        ("call/mod.rs", "mod actor;\nmod handle;\nmod spawn;\n"),
        ("call/handle.rs", "use super::spawn::SystemThread;\n"),
        (
            "call/spawn.rs",
            "use super::{actor::ClusterClient, handle::Handle};\n",
        ),
        (
            "call/actor.rs",
            "// super::nothing here counts\nfn f() { crate::call::handle::make(); }\n",
        ),
    ];
    for (name, text) in files {
        std::fs::write(dir.join(name), text).expect("a file");
    }
    let found = cycles(&dir);
    std::fs::remove_dir_all(&dir).expect("removed");
    assert_eq!(
        found,
        ["call::actor -> call::handle -> call::spawn"],
        "the cycle, once"
    );
}
