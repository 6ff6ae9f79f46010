//! The import rule (docs/ARCHITECTURE.md): a module of `src/` may use modules of its own layer
//! or of a lower one, never of a higher one.
//!
//!   cli  ←  operations  ←  spool, catalog, store  ←  formats, filesystem, pure logic  ←  foundation
//!
//! This test reads every file of `src/`, finds the `crate::` paths it uses (in `use` items, with
//! their `{…}` groups, and inline), and fails on a use that goes up, naming it.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

/// Layers from the ground up; a module belongs to the layer of its longest matching prefix.
const LAYERS: &[(&str, &[&str])] = &[
    (
        "foundation",
        &[
            "error",
            "types",
            "timefmt",
            "failpoint",
            "progress",
            "fsutil",
            "ahead",
            "record",
            "signal",
            "crypto",
        ],
    ),
    (
        "formats, filesystem, pure logic",
        &[
            "chunk",
            "frame",
            "pack",
            "manifest",
            "tape::bsd",
            "tape::image",
            "dirfd",
            "scan",
            "scan::exclude",
            "dump::read_engine",
            "dump::reuse",
            "tree_writer",
            "level",
            "schedule",
            "diff",
            "settings",
        ],
    ),
    (
        "spool, catalog, store",
        &[
            "spool",
            "keyring",
            "catalog",
            "store",
            "pack_store",
            "frame_packer",
        ],
    ),
    (
        "operations",
        &[
            "dump", "clone", "restore", "tape", "prune", "gc", "recovery", "mount", "nightly",
            "merge", "select", "fuzzing",
        ],
    ),
    ("cli", &["cli", "lib", "main"]),
];

/// The layer index of module `m` (`a::b::c`), by its longest listed prefix.
fn layer_of(m: &str) -> Option<usize> {
    let mut best: Option<(usize, usize)> = None;
    for (i, (_, mods)) in LAYERS.iter().enumerate() {
        for p in mods.iter() {
            let hit = m == *p || m.starts_with(&format!("{p}::"));
            if hit && best.is_none_or(|(len, _)| p.len() > len) {
                best = Some((p.len(), i));
            }
        }
    }
    best.map(|(_, i)| i)
}

/// The module a file of `src/` defines: `src/tape/media.rs` → `tape::media`,
/// `src/tape/mod.rs` → `tape`.
fn module_of(rel: &Path) -> String {
    let s = rel.with_extension("").to_string_lossy().replace('/', "::");
    s.strip_suffix("::mod").map(str::to_string).unwrap_or(s)
}

/// The source without its `#[cfg(test)]` module: tests may reach anywhere.
fn without_tests(src: &str) -> &str {
    match src.find("#[cfg(test)]\nmod tests") {
        Some(i) => &src[..i],
        None => src,
    }
}

/// Drop `//` comments (doc comments name modules in prose).
fn code_only(src: &str) -> String {
    src.lines()
        .map(|l| match l.find("//") {
            Some(i) => &l[..i],
            None => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn is_ident(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// Module paths named after `crate::` in `code`, as deep as the layer table can tell apart
/// (two components: `tape::media`, `catalog::DUMPS` → `catalog::DUMPS`, resolved by prefix).
fn crate_uses(code: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let b = code.as_bytes();
    let mut i = 0;
    while let Some(off) = code[i..].find("crate::") {
        let start = i + off;
        i = start + "crate::".len();
        if start > 0 && (is_ident(b[start - 1]) || b[start - 1] == b':') {
            continue;
        }
        collect_path(code, i, String::new(), &mut out);
    }
    out
}

/// Read a path (or a `{…}` group of paths) at `i`, prefixed by `prefix`, into `out`.
fn collect_path(code: &str, mut i: usize, prefix: String, out: &mut BTreeSet<String>) {
    let b = code.as_bytes();
    while i < b.len() && b[i].is_ascii_whitespace() {
        i += 1;
    }
    if i < b.len() && b[i] == b'{' {
        // A group: split its top level on commas.
        let mut depth = 0;
        let mut item_start = i + 1;
        let mut j = i;
        while j < b.len() {
            match b[j] {
                b'{' => depth += 1,
                b'}' => {
                    depth -= 1;
                    if depth == 0 {
                        collect_path(code, item_start, prefix.clone(), out);
                        return;
                    }
                }
                b',' if depth == 1 => {
                    collect_path(code, item_start, prefix.clone(), out);
                    item_start = j + 1;
                }
                _ => {}
            }
            j += 1;
        }
        return;
    }
    let s = i;
    while i < b.len() && is_ident(b[i]) {
        i += 1;
    }
    if s == i {
        return;
    }
    let name = &code[s..i];
    if name == "self" {
        if !prefix.is_empty() {
            out.insert(prefix);
        }
        return;
    }
    let path = if prefix.is_empty() {
        name.to_string()
    } else {
        format!("{prefix}::{name}")
    };
    if code[i..].starts_with("::") {
        collect_path(code, i + 2, path, out);
    } else {
        out.insert(path);
    }
}

/// Every use in `sources` (module, code) that goes to a higher layer, as (user, used module):
/// the used path cut to the longest prefix that is a module of `sources`.
fn uses_going_up(sources: &[(String, String)]) -> BTreeSet<(String, String)> {
    let modules: BTreeSet<&str> = sources.iter().map(|(m, _)| m.as_str()).collect();
    let mut up = BTreeSet::new();
    for (module, code) in sources {
        let Some(own) = layer_of(module) else {
            continue;
        };
        for used in crate_uses(code) {
            let parts: Vec<&str> = used.split("::").collect();
            let Some(target) = (1..=parts.len())
                .rev()
                .map(|n| parts[..n].join("::"))
                .find(|p| modules.contains(p.as_str()))
            else {
                continue;
            };
            let inside = target == *module || target.starts_with(&format!("{module}::"));
            if !inside && layer_of(&target).is_some_and(|l| l > own) {
                up.insert((module.clone(), target));
            }
        }
    }
    up
}

fn rs_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in fs::read_dir(dir).expect("read src") {
        let p = e.expect("entry").path();
        if p.is_dir() {
            rs_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

#[test]
fn no_module_uses_a_higher_layer() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rs_files(&src, &mut files);
    files.sort();
    let mut sources = Vec::new();
    let mut unplaced = Vec::new();
    for f in &files {
        let module = module_of(f.strip_prefix(&src).expect("under src"));
        if layer_of(&module).is_none() {
            unplaced.push(module.clone());
        }
        let text = fs::read_to_string(f).expect("read source");
        sources.push((module, code_only(without_tests(&text))));
    }
    assert!(
        unplaced.is_empty(),
        "modules with no layer (add them to LAYERS in tests/layers.rs and to \
         docs/ARCHITECTURE.md): {unplaced:?}"
    );
    let up = uses_going_up(&sources);
    assert!(
        up.is_empty(),
        "uses that go up a layer (user, used): {up:?}; move the code to the lower layer or \
         pass what it needs down (docs/ARCHITECTURE.md)"
    );
}

#[test]
fn the_checker_sees_a_deliberate_violation() {
    let mut sources: Vec<(String, String)> = ["error", "catalog", "store", "restore", "tape::bsd"]
        .iter()
        .map(|m| (m.to_string(), String::new()))
        .collect();
    sources.extend([
        // Up, in a group, nested: pack (formats) uses catalog (store).
        (
            "pack".to_string(),
            "use crate::{error::Result, catalog::{self, CHUNKS}};".to_string(),
        ),
        // Up, inline, through a function: manifest (formats) calls into restore (operations).
        (
            "manifest".to_string(),
            "fn f() { crate::restore::selected(a, b); }".to_string(),
        ),
        // Down and sideways: fine.
        (
            "dump".to_string(),
            "use crate::{store::StoreWriter, restore, catalog::DUMPS};".to_string(),
        ),
        // Into its own submodule: fine.
        (
            "tape".to_string(),
            "use crate::tape::bsd::Writer;".to_string(),
        ),
    ]);
    let up = uses_going_up(&sources);
    let want: BTreeSet<(String, String)> = [("pack", "catalog"), ("manifest", "restore")]
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    assert_eq!(up, want);
    // Comments and test modules do not count.
    let code = code_only(without_tests(
        "// see crate::restore\nfn g() {}\n#[cfg(test)]\nmod tests { use crate::cli; }",
    ));
    assert!(crate_uses(&code).is_empty(), "{:?}", crate_uses(&code));
}
