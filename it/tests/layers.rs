//! The connector's layers run one way (docs/ARCHITECTURE.md): every room of `src/` imports only rooms
//! of the layers below it, no two rooms import each other even within a layer, and no two files of a
//! room import each other. This test reads the sources, so a new import that climbs back up fails it
//! with the file, the line and the two rooms named.
//!
//! What counts as an import: every `crate::room::…` path outside comments, `super::…` paths, and in a
//! `mod.rs` the paths that start with one of its child modules. Inline `#[cfg(test)] mod tests { … }`
//! blocks at the end of a file are skipped (their `super` is the file itself). A room's `mod.rs` and
//! its own children may use each other — the children are parts of that module (they see its private
//! items), and `mod.rs` declares and re-exports them — but two children may not, in a circle of any
//! length.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The layers, top to bottom: a room may import rooms of its own layer (if that makes no circle)
/// and of the layers below.
const LAYERS: &[&[&str]] = &[
    &["cli"],
    &["demo", "bench", "verify", "compact", "send"],
    &["ha"],
    &["node"],
    &["receiver", "sink", "wal"],
    &["protocol", "config", "size", "images", "layout"],
];

fn layer_of(room: &str) -> Option<usize> {
    LAYERS.iter().position(|l| l.contains(&room))
}

/// A source file as a module: `src/a/b.rs` is `["a", "b"]`, `src/a/mod.rs` is `["a"]`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct File {
    rel: String,
    module: Vec<String>,
    is_mod_rs: bool,
}

impl File {
    fn room(&self) -> &str {
        self.module.first().map_or("", String::as_str)
    }
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

fn as_file(src: &Path, p: &Path) -> File {
    let rel = p
        .strip_prefix(src)
        .unwrap()
        .to_string_lossy()
        .replace('\\', "/");
    let mut module: Vec<String> = rel
        .trim_end_matches(".rs")
        .split('/')
        .map(str::to_string)
        .collect();
    let is_mod_rs = module.last().is_some_and(|m| m == "mod");
    if is_mod_rs || matches!(rel.as_str(), "lib.rs" | "main.rs") {
        module.pop();
    }
    File {
        rel,
        module,
        is_mod_rs,
    }
}

/// The code lines of a file: comments dropped, and everything from a trailing inline test module on.
fn code_lines(text: &str) -> Vec<(usize, String)> {
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    for (i, l) in lines.iter().enumerate() {
        let t = l.trim_start();
        if t.starts_with("#[cfg(test)]")
            && lines
                .get(i + 1)
                .is_some_and(|n| n.trim_start().starts_with("mod tests {"))
        {
            break;
        }
        if t.starts_with("//") {
            continue;
        }
        out.push((i + 1, l.to_string()));
    }
    out
}

/// The module paths a line refers to, as absolute module paths (`crate::a::b::C` → `[a, b, C]`).
fn paths_in(line: &str, file: &File, children: &BTreeSet<String>) -> Vec<Vec<String>> {
    let ident = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let mut out = Vec::new();
    let bytes: Vec<char> = line.chars().collect();
    let mut i = 0;
    while i < bytes.len() {
        if !ident(bytes[i]) || (i > 0 && (ident(bytes[i - 1]) || bytes[i - 1] == ':')) {
            i += 1;
            continue;
        }
        // A path starting here: segments joined by `::`.
        let mut segs = Vec::new();
        let mut j = i;
        loop {
            let start = j;
            while j < bytes.len() && ident(bytes[j]) {
                j += 1;
            }
            segs.push(bytes[start..j].iter().collect::<String>());
            if j + 2 < bytes.len() && bytes[j] == ':' && bytes[j + 1] == ':' && ident(bytes[j + 2])
            {
                j += 2;
            } else {
                break;
            }
        }
        i = j.max(i + 1);
        if segs.len() < 2 {
            continue;
        }
        let resolved = match segs[0].as_str() {
            "crate" => segs[1..].to_vec(),
            "super" => {
                // Inside a file, `super` is the parent module (for mod.rs, the room's parent).
                let mut base = file.module.clone();
                let mut rest = &segs[..];
                while rest.first().is_some_and(|s| s == "super") {
                    base.pop();
                    rest = &rest[1..];
                }
                base.extend(rest.iter().cloned());
                base
            }
            s if file.is_mod_rs && children.contains(s) => {
                let mut base = file.module.clone();
                base.extend(segs.iter().cloned());
                base
            }
            _ => continue,
        };
        out.push(resolved);
    }
    out
}

/// The file a module path lands in: the longest prefix that is a file.
fn resolve<'a>(path: &[String], by_module: &'a BTreeMap<Vec<String>, File>) -> Option<&'a File> {
    (1..=path.len())
        .rev()
        .find_map(|n| by_module.get(&path[..n].to_vec()))
}

/// One import: from a file, at a line, of another file.
#[derive(Clone, Debug)]
struct Edge {
    from: File,
    line: usize,
    to: File,
}

fn edges(src: &Path) -> Vec<Edge> {
    let mut paths = Vec::new();
    rust_files(src, &mut paths);
    let files: Vec<File> = paths.iter().map(|p| as_file(src, p)).collect();
    let by_module: BTreeMap<Vec<String>, File> = files
        .iter()
        .filter(|f| !f.module.is_empty())
        .map(|f| (f.module.clone(), f.clone()))
        .collect();
    let mut out = Vec::new();
    for (p, f) in paths.iter().zip(&files) {
        let text = std::fs::read_to_string(p).unwrap();
        let children: BTreeSet<String> = by_module
            .keys()
            .filter(|m| m.len() == f.module.len() + 1 && m.starts_with(&f.module))
            .map(|m| m.last().unwrap().clone())
            .collect();
        for (line, l) in code_lines(&text) {
            for path in paths_in(&l, f, &children) {
                if let Some(to) = resolve(&path, &by_module) {
                    if to != f {
                        out.push(Edge {
                            from: f.clone(),
                            line,
                            to: to.clone(),
                        });
                    }
                }
            }
        }
    }
    out
}

/// The crate's `src/`, or the tree `LAYERS_SRC` names (to run the rules over another checkout).
fn src_dir() -> PathBuf {
    std::env::var_os("LAYERS_SRC").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../src"),
        PathBuf::from,
    )
}

/// A circle in a directed graph, if there is one.
fn find_cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        n: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        state: &mut BTreeMap<String, u8>,
        stack: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        state.insert(n.to_string(), 1);
        stack.push(n.to_string());
        for m in graph.get(n).into_iter().flatten() {
            match state.get(m.as_str()).copied().unwrap_or(0) {
                1 => {
                    let at = stack.iter().position(|s| s == m).unwrap();
                    let mut c = stack[at..].to_vec();
                    c.push(m.clone());
                    return Some(c);
                }
                0 => {
                    if let Some(c) = visit(m, graph, state, stack) {
                        return Some(c);
                    }
                }
                _ => {}
            }
        }
        stack.pop();
        state.insert(n.to_string(), 2);
        None
    }
    let mut state = BTreeMap::new();
    for n in graph.keys() {
        if state.get(n.as_str()).copied().unwrap_or(0) == 0 {
            if let Some(c) = visit(n, graph, &mut state, &mut Vec::new()) {
                return Some(c);
            }
        }
    }
    None
}

#[test]
fn every_room_of_the_crate_sits_in_a_layer() {
    let mut rooms = BTreeSet::new();
    for e in std::fs::read_dir(src_dir()).unwrap().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let room = name.trim_end_matches(".rs").to_string();
        if !matches!(room.as_str(), "lib" | "main") {
            rooms.insert(room);
        }
    }
    let unplaced: Vec<_> = rooms.iter().filter(|r| layer_of(r).is_none()).collect();
    assert!(
        unplaced.is_empty(),
        "rooms of src/ in no layer (add them to LAYERS and docs/ARCHITECTURE.md): {unplaced:?}"
    );
}

#[test]
fn no_room_imports_a_room_of_a_layer_above_it() {
    let edges = edges(&src_dir());
    assert!(
        edges
            .iter()
            .any(|e| e.from.room() == "node" && e.to.room() == "wal"),
        "the checker finds no imports at all: it reads nothing"
    );
    let up: Vec<String> = edges
        .iter()
        .filter(|e| e.from.room() != e.to.room() && !e.from.module.is_empty())
        .filter_map(|e| {
            let (from, to) = (layer_of(e.from.room())?, layer_of(e.to.room())?);
            (to < from).then(|| {
                format!(
                    "src/{}:{} imports {} (room `{}` is above `{}`)",
                    e.from.rel,
                    e.line,
                    e.to.rel,
                    e.to.room(),
                    e.from.room()
                )
            })
        })
        .collect();
    assert!(up.is_empty(), "imports that climb up:\n{}", up.join("\n"));
}

#[test]
fn no_two_rooms_import_each_other_even_within_a_layer() {
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for e in edges(&src_dir()) {
        if e.from.room() != e.to.room() && !e.from.module.is_empty() {
            graph
                .entry(e.from.room().to_string())
                .or_default()
                .insert(e.to.room().to_string());
        }
    }
    assert_eq!(find_cycle(&graph), None, "rooms in a circle of imports");
}

#[test]
fn no_two_files_of_a_room_import_each_other() {
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut lines = BTreeMap::new();
    for e in edges(&src_dir()) {
        let parent_of = |child: &File, parent: &File| {
            parent.is_mod_rs
                && child.module.len() == parent.module.len() + 1
                && child.module.starts_with(&parent.module)
        };
        if parent_of(&e.from, &e.to) || parent_of(&e.to, &e.from) {
            continue;
        }
        lines
            .entry((e.from.rel.clone(), e.to.rel.clone()))
            .or_insert(e.line);
        graph.entry(e.from.rel).or_default().insert(e.to.rel);
    }
    if let Some(c) = find_cycle(&graph) {
        let steps: Vec<String> = c
            .windows(2)
            .map(|w| {
                format!(
                    "src/{}:{} → src/{}",
                    w[0],
                    lines[&(w[0].clone(), w[1].clone())],
                    w[1]
                )
            })
            .collect();
        panic!("files in a circle of imports:\n{}", steps.join("\n"));
    }
}

#[test]
fn the_checker_sees_a_climb_and_a_circle_when_there_is_one() {
    // The rules above only mean something if the reader finds the imports they are about.
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path();
    std::fs::create_dir_all(src.join("receiver")).unwrap();
    std::fs::create_dir_all(src.join("node")).unwrap();
    std::fs::write(src.join("lib.rs"), "pub mod node;\npub mod receiver;\n").unwrap();
    std::fs::write(
        src.join("receiver/mod.rs"),
        "//! crate::node in a comment is no import\nuse crate::node::Node;\n",
    )
    .unwrap();
    std::fs::write(src.join("node/mod.rs"), "mod a;\nmod b;\npub use a::X;\n").unwrap();
    std::fs::write(src.join("node/a.rs"), "use super::b::Y;\npub struct X;\n").unwrap();
    std::fs::write(
        src.join("node/b.rs"),
        "use crate::receiver::R;\nuse super::a::X;\npub struct Y;\n#[cfg(test)]\nmod tests {\n    use super::super::c::Z;\n}\n",
    )
    .unwrap();
    let e = edges(src);
    let named: BTreeSet<(String, usize, String)> = e
        .iter()
        .map(|e| (e.from.rel.clone(), e.line, e.to.rel.clone()))
        .collect();
    let expected: BTreeSet<(String, usize, String)> = [
        ("receiver/mod.rs", 2, "node/mod.rs"),
        ("node/mod.rs", 3, "node/a.rs"),
        ("node/a.rs", 1, "node/b.rs"),
        ("node/b.rs", 1, "receiver/mod.rs"),
        ("node/b.rs", 2, "node/a.rs"),
    ]
    .into_iter()
    .map(|(a, l, b)| (a.to_string(), l, b.to_string()))
    .collect();
    assert_eq!(named, expected);
    let graph: BTreeMap<String, BTreeSet<String>> = [
        ("node/a.rs".to_string(), ["node/b.rs".to_string()].into()),
        ("node/b.rs".to_string(), ["node/a.rs".to_string()].into()),
    ]
    .into();
    assert!(find_cycle(&graph).is_some());
}
