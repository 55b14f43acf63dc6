//! The module graph and the invariants ARCHITECTURE.md states, checked on the source text.
//!
//! Each top-level module of `src/` may import (`crate::x`, `super::..::x` reaching the crate
//! root) only the modules `ALLOWED` lists for it; `EXCEPTIONS` lists the edges that break the
//! intended shape today, each with its reason, so a new one fails here instead of slipping in.
//! The graph without test code must have no cycle. Test code (`#[cfg(test)]` items) is not
//! checked: tests may use `testkit` and anything else.
//!
//! The sans-IO core (`CORE_FILES`) reads no clock and does no I/O, and only the modules that
//! own a wire format know JSON; the few places that do otherwise are listed with their reasons.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Who may import whom (non-test code). Lower layers first; nothing imports upward.
const ALLOWED: &[(&str, &[&str])] = &[
    // Leaves: import nothing from the crate.
    ("frame", &[]),
    ("reasons", &[]),
    ("events", &[]),
    ("latency", &[]),
    // The sans-IO core: policy on frames and samples, fed `Instant`s by its caller.
    ("analysis", &["frame", "reasons"]),
    ("liveness", &["analysis", "frame", "reasons"]),
    ("document", &["analysis", "frame", "reasons"]),
    (
        "verdict",
        &["liveness", "document", "analysis", "frame", "reasons"],
    ),
    // Plumbing.
    ("config", &["liveness"]),
    ("store", &["events", "frame", "reasons"]),
    ("notify", &["store", "events", "reasons", "latency"]),
    // Shells: the media path, the call lifecycle, the HTTP surface, start-up.
    (
        "media",
        &[
            "analysis", "liveness", "document", "verdict", "frame", "reasons", "events", "latency",
        ],
    ),
    (
        "session",
        &[
            "media", "notify", "store", "config", "events", "reasons", "analysis", "liveness",
            "document", "verdict", "frame",
        ],
    ),
    ("metrics", &["session", "media", "latency"]),
    (
        "api",
        &[
            "session", "metrics", "notify", "store", "config", "events", "reasons", "media",
            "analysis", "liveness", "document", "verdict", "frame",
        ],
    ),
    (
        "server",
        &[
            "api", "session", "metrics", "notify", "store", "config", "events", "reasons", "media",
            "analysis", "liveness", "document", "verdict", "frame",
        ],
    ),
    // Test support (cargo feature `testkit`): never imported by non-test code.
    (
        "testkit",
        &[
            "media", "analysis", "liveness", "document", "frame", "reasons", "events",
        ],
    ),
];

/// Edges that exist today against the intended shape, with the reason each is tolerated.
const EXCEPTIONS: &[(&str, &str, &str)] = &[];

/// Files of the sans-IO core: no clock, no I/O, no JSON.
const CORE_FILES: &[&str] = &[
    "frame.rs",
    "analysis/",
    "liveness/",
    "document/",
    "verdict/",
    "media/call.rs",
    "media/netstats.rs",
    "media/wire.rs",
    "media/sdp.rs",
    "media/decode.rs",
];

const CLOCK: &[&str] = &["Instant::now", "SystemTime::now", "unix_ms_now"];
const IO: &[&str] = &[
    "std::fs",
    "File::",
    "std::net",
    "std::env",
    "std::process",
    "std::thread",
    "tokio",
    "reqwest",
    "sqlx",
    "commit_from_file",
    "println!",
    "eprintln!",
];
const JSON: &[&str] = &["serde_json", "json!"];

/// (file under src/, token, reason): known clock reads, I/O and JSON in core files.
const CORE_EXCEPTIONS: &[(&str, &str, &str)] = &[
    (
        "analysis/face/models.rs",
        "std::env",
        "the model loader finds ONNX Runtime by $ORT_DYLIB_PATH at start-up",
    ),
    (
        "analysis/face/models.rs",
        "commit_from_file",
        "the model loader reads the ONNX files once at start-up; calls get the sessions injected",
    ),
    (
        "analysis/face/models.rs",
        "std::thread",
        "the session pool is sized by available_parallelism at start-up",
    ),
    (
        "document/card.rs",
        "std::env",
        "CARD_DEBUG prints the Hough peaks while tuning the card finder",
    ),
    (
        "document/card.rs",
        "eprintln!",
        "CARD_DEBUG prints the Hough peaks while tuning the card finder",
    ),
    (
        "document/mod.rs",
        "SystemTime::now",
        "today_utc(): the date a birth date is checked against (callers may pass their own)",
    ),
    (
        "document/mod.rs",
        "serde_json",
        "DocumentRead::summary renders the read fields as the JSON stored with the verdict",
    ),
    (
        "document/mod.rs",
        "json!",
        "DocumentRead::summary renders the read fields as the JSON stored with the verdict",
    ),
    (
        "verdict/mod.rs",
        "serde_json",
        "each verdict reason carries its evidence as a JSON value (part of the API's shape)",
    ),
    (
        "verdict/mod.rs",
        "json!",
        "each verdict reason carries its evidence as a JSON value (part of the API's shape)",
    ),
];

fn src_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The source with comments, string and char literals blanked (newlines kept).
fn strip_literals(src: &str) -> String {
    let b = src.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    let blank = |out: &mut Vec<u8>, s: &[u8]| {
        out.extend(s.iter().map(|&c| if c == b'\n' { b'\n' } else { b' ' }))
    };
    while i < b.len() {
        let rest = &b[i..];
        let end = if rest.starts_with(b"//") {
            i + rest.iter().position(|&c| c == b'\n').unwrap_or(rest.len())
        } else if rest.starts_with(b"/*") {
            let (mut depth, mut j) = (0, i);
            loop {
                if b[j..].starts_with(b"/*") {
                    depth += 1;
                    j += 2;
                } else if b[j..].starts_with(b"*/") {
                    depth -= 1;
                    j += 2;
                    if depth == 0 {
                        break j;
                    }
                } else {
                    j += 1;
                }
            }
        } else if rest[0] == b'r'
            && (rest.starts_with(b"r\"") || rest.starts_with(b"r#"))
            && (i == 0 || !(b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'_'))
        {
            let hashes = rest[1..].iter().take_while(|&&c| c == b'#').count();
            if rest.get(1 + hashes) != Some(&b'"') {
                out.push(b[i]);
                i += 1;
                continue;
            }
            let close: Vec<u8> = std::iter::once(b'"')
                .chain(std::iter::repeat_n(b'#', hashes))
                .collect();
            let body = i + 2 + hashes;
            body + b[body..]
                .windows(close.len())
                .position(|w| w == close.as_slice())
                .unwrap()
                + close.len()
        } else if rest[0] == b'"' {
            let mut j = i + 1;
            while b[j] != b'"' {
                j += if b[j] == b'\\' { 2 } else { 1 };
            }
            j + 1
        } else if rest[0] == b'\'' {
            if rest.get(1) == Some(&b'\\') {
                i + 2 + rest[2..].iter().position(|&c| c == b'\'').unwrap() + 1
            } else if rest.get(2) == Some(&b'\'') {
                i + 3
            } else {
                i + 1 // a lifetime
            }
        } else {
            out.push(b[i]);
            i += 1;
            continue;
        };
        blank(&mut out, &b[i..end]);
        i = end;
    }
    String::from_utf8(out).unwrap()
}

/// Blanks every `#[cfg(test)]` item (a `mod { .. }` block or a single item up to `;`).
pub(crate) fn strip_test_items(src: &str) -> String {
    let mut s = src.as_bytes().to_vec();
    let mut from = 0;
    while let Some(at) = find(&s, b"#[cfg(test)]", from) {
        let mut j = at + b"#[cfg(test)]".len();
        let mut depth = 0usize;
        while j < s.len() {
            match s[j] {
                b'{' => depth += 1,
                b'}' => {
                    depth -= 1;
                    if depth == 0 {
                        j += 1;
                        break;
                    }
                }
                b';' if depth == 0 => {
                    j += 1;
                    break;
                }
                _ => {}
            }
            j += 1;
        }
        for c in &mut s[at..j] {
            if *c != b'\n' {
                *c = b' ';
            }
        }
        from = j;
    }
    String::from_utf8(s).unwrap()
}

fn find(hay: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    hay.get(from..)?
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|p| p + from)
}

/// The first `token` in `code` that does not continue an identifier (`println!` is not found in
/// `eprintln!`).
fn find_word(code: &str, token: &str) -> Option<usize> {
    code.match_indices(token)
        .map(|(at, _)| at)
        .find(|&at| at == 0 || !is_ident(code.as_bytes()[at - 1]))
}

fn is_ident(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_'
}

/// The top-level modules a file's (stripped) code names, each with the first line naming it.
/// `module_depth` is how many modules deep the file is (`api/mod.rs` 1, `api/whip.rs` 2).
fn imported_modules(code: &str, module_depth: usize) -> BTreeMap<String, usize> {
    let b = code.as_bytes();
    let mut found = BTreeMap::new();
    let line_of = |at: usize| code[..at].matches('\n').count() + 1;
    let mut i = 0;
    while i < b.len() {
        let at_word = i == 0 || !(is_ident(b[i - 1]) || b[i - 1] == b'$' || b[i - 1] == b':');
        let mut j = i;
        let rooted = if at_word && b[i..].starts_with(b"crate::") {
            j += b"crate::".len();
            true
        } else if at_word && b[i..].starts_with(b"super::") {
            let mut ups = 0;
            while b[j..].starts_with(b"super::") {
                ups += 1;
                j += b"super::".len();
            }
            ups >= module_depth
        } else {
            false
        };
        if !rooted {
            i += 1;
            continue;
        }
        while b[j].is_ascii_whitespace() {
            j += 1;
        }
        if b[j] == b'{' {
            // `crate::{a::x, b}`: the first name of each top-level entry.
            let (mut depth, mut k, mut entry_start) = (0, j + 1, true);
            while depth > 0 || b[k] != b'}' {
                match b[k] {
                    b'{' => depth += 1,
                    b'}' => depth -= 1,
                    b',' if depth == 0 => entry_start = true,
                    c if entry_start && is_ident(c) => {
                        let e = k + b[k..].iter().position(|&c| !is_ident(c)).unwrap();
                        found.entry(code[k..e].to_string()).or_insert(line_of(k));
                        entry_start = false;
                        k = e;
                        continue;
                    }
                    _ => {}
                }
                k += 1;
            }
            i = k;
        } else {
            let e = j + b[j..].iter().position(|&c| !is_ident(c)).unwrap();
            found.entry(code[j..e].to_string()).or_insert(line_of(j));
            i = e;
        }
    }
    found.retain(|m, _| m != "self" && m != "super");
    found
}

/// (path under src/, text) of every Rust file of the crate.
pub(crate) fn rust_sources() -> Vec<(String, String)> {
    let root = src_dir();
    let mut files = Vec::new();
    rust_files(&root, &mut files);
    files.sort();
    files
        .into_iter()
        .map(|path| {
            let rel = path
                .strip_prefix(&root)
                .unwrap()
                .to_string_lossy()
                .replace('\\', "/");
            (rel, std::fs::read_to_string(&path).unwrap())
        })
        .collect()
}

struct Source {
    /// Path under src/, with `/` separators.
    rel: String,
    /// The top-level module (`media` for media/peer.rs).
    module: String,
    /// Code without comments, literals and test items.
    code: String,
}

fn sources() -> Vec<Source> {
    rust_sources()
        .into_iter()
        .filter_map(|(rel, text)| {
            let module = rel
                .split('/')
                .next()
                .unwrap()
                .trim_end_matches(".rs")
                .to_string();
            // The crate root and the binaries import everything by design.
            if module == "lib" || module == "main" || module == "bin" {
                return None;
            }
            Some(Source {
                code: strip_test_items(&strip_literals(&text)),
                rel,
                module,
            })
        })
        .collect()
}

fn module_depth(rel: &str) -> usize {
    let parts: Vec<&str> = rel.split('/').collect();
    let last = parts[parts.len() - 1];
    if last == "mod.rs" {
        parts.len() - 1
    } else {
        parts.len()
    }
}

/// module -> imported module -> (file, line) of the first import.
type Graph = BTreeMap<String, BTreeMap<String, (String, usize)>>;

fn import_graph(sources: &[Source]) -> Graph {
    let mut graph = Graph::new();
    for s in sources {
        let edges = graph.entry(s.module.clone()).or_default();
        for (target, line) in imported_modules(&s.code, module_depth(&s.rel)) {
            if target != s.module {
                edges.entry(target).or_insert((s.rel.clone(), line));
            }
        }
    }
    graph
}

/// Edges not in `ALLOWED` nor `EXCEPTIONS`, as readable lines.
fn forbidden_edges(graph: &Graph) -> Vec<String> {
    let allowed: BTreeMap<&str, &[&str]> = ALLOWED.iter().copied().collect();
    let mut bad = Vec::new();
    for (from, edges) in graph {
        let Some(ok) = allowed.get(from.as_str()) else {
            bad.push(format!(
                "module `{from}` is not in ALLOWED: add it with the modules it may import"
            ));
            continue;
        };
        for (to, (file, line)) in edges {
            let excepted = EXCEPTIONS.iter().any(|(f, t, _)| f == from && t == to);
            if !ok.contains(&to.as_str()) && !excepted {
                bad.push(format!(
                    "src/{file}:{line}: `{from}` imports `{to}`, which ARCHITECTURE.md does not allow"
                ));
            }
        }
    }
    bad
}

/// A cycle in the graph, if any, as `a -> b -> a`.
fn find_cycle(graph: &Graph) -> Option<String> {
    fn visit<'a>(
        node: &'a str,
        graph: &'a Graph,
        path: &mut Vec<&'a str>,
        done: &mut BTreeSet<&'a str>,
    ) -> Option<String> {
        if let Some(at) = path.iter().position(|n| *n == node) {
            let mut cycle = path[at..].to_vec();
            cycle.push(node);
            return Some(cycle.join(" -> "));
        }
        if !done.insert(node) {
            return None;
        }
        path.push(node);
        for next in graph.get(node).into_iter().flat_map(|e| e.keys()) {
            if let Some(c) = visit(next, graph, path, done) {
                return Some(c);
            }
        }
        path.pop();
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|n| visit(n, graph, &mut Vec::new(), &mut done))
}

#[test]
fn modules_import_only_what_the_architecture_allows() {
    let graph = import_graph(&sources());
    let bad = forbidden_edges(&graph);
    assert!(bad.is_empty(), "forbidden imports:\n{}", bad.join("\n"));
    // Every exception still exists; a fixed one must leave the list.
    for (from, to, why) in EXCEPTIONS {
        assert!(
            graph.get(*from).is_some_and(|e| e.contains_key(*to)),
            "`{from}` no longer imports `{to}`: remove the exception ({why})"
        );
    }
}

#[test]
fn the_module_import_graph_has_no_cycle() {
    let graph = import_graph(&sources());
    assert_eq!(find_cycle(&graph), None);
}

#[test]
fn the_core_reads_no_clock_does_no_io_and_knows_no_json() {
    let mut bad = Vec::new();
    let mut seen = BTreeSet::new();
    for s in sources() {
        if !CORE_FILES.iter().any(|c| s.rel.starts_with(c)) {
            continue;
        }
        for (kind, tokens) in [
            ("reads the clock", CLOCK),
            ("does I/O", IO),
            ("knows JSON", JSON),
        ] {
            for token in tokens {
                let Some(at) = find_word(&s.code, token) else {
                    continue;
                };
                if CORE_EXCEPTIONS
                    .iter()
                    .any(|(f, t, _)| *f == s.rel && t == token)
                {
                    seen.insert((s.rel.clone(), token.to_string()));
                    continue;
                }
                let line = s.code[..at].matches('\n').count() + 1;
                bad.push(format!("src/{}:{line}: {kind} (`{token}`)", s.rel));
            }
        }
    }
    assert!(bad.is_empty(), "the sans-IO core:\n{}", bad.join("\n"));
    for (file, token, why) in CORE_EXCEPTIONS {
        assert!(
            seen.contains(&(file.to_string(), token.to_string())),
            "src/{file} no longer uses `{token}`: remove the exception ({why})"
        );
    }
}

#[test]
fn the_checker_sees_grouped_nested_and_super_imports() {
    let code = strip_literals(
        "use crate::{a::X, b::{c, d}, e};\nuse super::super::f::G;\n// crate::g\nlet s = \"crate::h\";\n$crate::i\nfn x<'a>(c: char) { let _ = '\"'; crate::j::k(); }\n",
    );
    let found: Vec<String> = imported_modules(&code, 2).into_keys().collect();
    assert_eq!(found, ["a", "b", "e", "f", "j"]);
    let tests = strip_test_items("use crate::a;\n#[cfg(test)]\nmod tests { use crate::b; }\n");
    assert_eq!(
        imported_modules(&tests, 1).into_keys().collect::<Vec<_>>(),
        ["a"]
    );
}
