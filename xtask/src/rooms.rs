//! The `wsgi-server` house rule, checked by `cargo xtask ci` (tidy step)
//! and by `cargo test`: its modules, grouped into rooms, import each other
//! without cycles (arrows point down). A room is a set of modules that may
//! lean on each other; everything else is a room of its own.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::Path;

use crate::util::{self, Result};

/// Rooms of more than one module: (room, its modules).
const ROOMS: &[(&str, &[&str])] = &[
    // One connection: HTTP and uwsgi framing, the request/response path,
    // body buffering, direct writes and the exchange with its thread.
    (
        "conn",
        &[
            "connection",
            "uwsgi",
            "request",
            "buffering",
            "direct",
            "exchange",
            "lend",
        ],
    ),
    // Dispatch to the application threads, and connections lent to them.
    ("pool", &["pool", "linger"]),
    // The process model: master, workers, signals, daemon chores.
    ("process", &["master", "worker", "process", "signals"]),
    // The runtime contract and its implementations.
    ("runtime", &["runtime", "python_runtime"]),
];

fn room_of(module: &str) -> &str {
    ROOMS
        .iter()
        .find(|(_, modules)| modules.contains(&module))
        .map_or(module, |(room, _)| room)
}

/// Every `crate::NAME` a source uses outside its unit tests.
fn uses(text: &str) -> BTreeSet<String> {
    let code = match text.find("#[cfg(test)]") {
        Some(at) => &text[..at],
        None => text,
    };
    let mut found = BTreeSet::new();
    let mut rest = code;
    while let Some(at) = rest.find("crate::") {
        rest = &rest[at + "crate::".len()..];
        let name: String = rest
            .chars()
            .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')
            .collect();
        if !name.is_empty() {
            found.insert(name);
        }
    }
    found
}

/// The room graph of the modules under `src`.
fn graph(src: &Path) -> Result<BTreeMap<String, BTreeSet<String>>> {
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut stack = vec![src.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let entries =
            fs::read_dir(&dir).map_err(|error| format!("rooms: {}: {error}", dir.display()))?;
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.extension().and_then(|ext| ext.to_str()) != Some("rs") {
                continue;
            }
            let relative = path.strip_prefix(src).unwrap_or(&path);
            let top = relative
                .components()
                .next()
                .and_then(|part| part.as_os_str().to_str())
                .unwrap_or("")
                .trim_end_matches(".rs")
                .to_owned();
            if top == "main" || top == "lib" || top.is_empty() {
                continue;
            }
            let text = fs::read_to_string(&path)
                .map_err(|error| format!("rooms: {}: {error}", path.display()))?;
            let from = room_of(&top).to_owned();
            let targets = edges.entry(from.clone()).or_default();
            for used in uses(&text) {
                let to = room_of(&used).to_owned();
                if to != from {
                    targets.insert(to);
                }
            }
        }
    }
    Ok(edges)
}

/// A cycle in `edges`, as the rooms along it, if there is one.
fn find_cycle(edges: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        edges: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|seen| seen == node) {
            let mut cycle = path[at..].to_vec();
            cycle.push(node.to_owned());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_owned());
        for next in edges.get(node).into_iter().flatten() {
            if let Some(cycle) = visit(next, edges, path, done) {
                return Some(cycle);
            }
        }
        path.pop();
        done.insert(node.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    for node in edges.keys() {
        if let Some(cycle) = visit(node, edges, &mut Vec::new(), &mut done) {
            return Some(cycle);
        }
    }
    None
}

/// Fails with the cycle if `wsgi-server`'s rooms import in a circle.
pub fn run() -> Result {
    let edges = graph(&util::root().join("wsgi-server").join("src"))?;
    match find_cycle(&edges) {
        None => {
            println!("rooms: {} rooms of wsgi-server import without cycles", edges.len());
            Ok(())
        }
        Some(cycle) => Err(format!(
            "rooms: wsgi-server's modules import in a circle: {} (see xtask/src/rooms.rs and ARCHITECTURE.md)",
            cycle.join(" -> ")
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wsgi_server_rooms_are_acyclic() {
        run().unwrap();
    }

    #[test]
    fn cycles_are_found() {
        let mut edges = BTreeMap::new();
        edges.insert("a".to_owned(), BTreeSet::from(["b".to_owned()]));
        edges.insert("b".to_owned(), BTreeSet::from(["c".to_owned()]));
        edges.insert("c".to_owned(), BTreeSet::from(["a".to_owned()]));
        assert_eq!(
            find_cycle(&edges),
            Some(vec!["a".into(), "b".into(), "c".into(), "a".into()])
        );
        edges.insert("c".to_owned(), BTreeSet::new());
        assert_eq!(find_cycle(&edges), None);
        assert!(uses("use crate::config::X;\n#[cfg(test)]\nuse crate::server;").contains("config"));
        assert!(
            !uses("use crate::config::X;\n#[cfg(test)]\nuse crate::server;").contains("server")
        );
    }
}
