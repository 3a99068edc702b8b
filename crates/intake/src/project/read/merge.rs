//! Several process-compose files read as one, as process-compose merges
//! them: the files in order (`-f a -f b`, a `process-compose.override.yaml`
//! beside the main file, a file's top-level `extends: OTHER_FILE` read
//! before it), then each process's `extends: OTHER_PROCESS`.
//!
//! A process defined twice is merged key by key, the later winning: a
//! single value (`command`, `working_dir`, `disabled`) is replaced,
//! `environment` and `depends_on` are merged entry by entry, `entrypoint`
//! and `args` are appended to, and a mapping (a probe, `availability`,
//! `shutdown`) is merged the same way, key by key. Where each process's
//! key came from is kept, so that an error names the file it is in.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use serde_norway::{Mapping, Value};

/// One file of the set: its path and its text.
#[derive(Debug, Clone)]
pub(crate) struct Source {
    /// The file (absolute).
    pub(crate) file: PathBuf,
    /// Its text.
    pub(crate) text: String,
    /// Whether another file's `extends` named it: its processes then run
    /// in its own directory unless they say otherwise.
    pub(crate) extended: bool,
}

/// The files as one document.
#[derive(Debug, Clone)]
pub(crate) struct Merged {
    /// The document.
    pub(crate) doc: Mapping,
    /// The files, in the order they were merged.
    pub(crate) sources: Vec<Source>,
    /// Which file last set each process's key (`(process, key)`), or the
    /// process itself (`(process, "")`).
    origin: HashMap<(String, String), usize>,
}

/// The most files one set may chain through `extends`.
const MOST_FILES: usize = 16;

impl Merged {
    /// `path` (a process, then a key) as an error begins it: `FILE:LINE: `
    /// of the file that set it, or `FILE: ` when the line is not found.
    pub(crate) fn locate(&self, path: &[&str]) -> String {
        let key = |k: &str| {
            (
                path.get(1).copied().unwrap_or_default().to_owned(),
                k.to_owned(),
            )
        };
        let at = path
            .get(2)
            .and_then(|k| self.origin.get(&key(k)))
            .or_else(|| self.origin.get(&key("")))
            .copied()
            .unwrap_or(0);
        let source = &self.sources[at];
        match line_of_key(&source.text, path) {
            Some(line) => format!("{}:{line}: ", source.file.display()),
            None => format!("{}: ", source.file.display()),
        }
    }
}

/// Parses one file's text into its top mapping.
///
/// # Errors
/// The YAML's own error, with its line, or a top that is no mapping.
pub(crate) fn parse(text: &str) -> Result<Mapping, String> {
    let doc: Value = serde_norway::from_str(text).map_err(|e| {
        let line = e.location().map_or(0, |l| l.line());
        format!("{line}: {}", super::quoted(&e.to_string()))
    })?;
    match doc {
        Value::Mapping(top) => Ok(top),
        _ => Err(" the file is not a mapping of keys".into()),
    }
}

/// The files `files` are read as, in order: each preceded by the files
/// its top-level `extends` names (relative to it), recursively, but for
/// those read already.
///
/// # Errors
/// A file that cannot be read (named), a chain of `extends` that comes
/// back to a file, or one longer than [`MOST_FILES`].
pub(crate) fn sources(
    files: &[PathBuf],
    read: &dyn Fn(&Path) -> Result<String, String>,
) -> Result<Vec<Source>, String> {
    let mut out: Vec<Source> = Vec::new();
    for file in files {
        let mut chain: Vec<Source> = Vec::new();
        let mut next = Some(std::fs::canonicalize(file).unwrap_or_else(|_| file.clone()));
        while let Some(file) = next.take() {
            // A file an earlier `-f` read already is not read again, as
            // in process-compose.
            if out.iter().any(|s| s.file == file) {
                if chain.is_empty() {
                    return Err(format!(
                        "{}: read already (given twice, or named by an earlier file's extends)",
                        file.display()
                    ));
                }
                break;
            }
            if chain.iter().chain(&out).any(|s| s.file == file) {
                return Err(format!(
                    "{}: extends a file already read ({}): extends may not come back to a file",
                    chain
                        .last()
                        .map_or(file.as_path(), |s| s.file.as_path())
                        .display(),
                    file.display()
                ));
            }
            if chain.len() + out.len() >= MOST_FILES {
                return Err(format!(
                    "{}: more than {MOST_FILES} files through extends",
                    file.display()
                ));
            }
            let text = read(&file)?;
            let top = parse(&text).map_err(|e| format!("{}:{e}", file.display()))?;
            if let Some(parent) = top.get("extends") {
                let Some(parent) = parent.as_str() else {
                    return Err(format!(
                        "{}: extends: expected the path of another process-compose file",
                        file.display()
                    ));
                };
                let dir = file.parent().unwrap_or(Path::new("/"));
                let joined = dir.join(parent);
                next = Some(std::fs::canonicalize(&joined).unwrap_or(joined));
            }
            let extended = !chain.is_empty();
            chain.push(Source {
                file,
                text,
                extended,
            });
        }
        chain.reverse();
        out.extend(chain);
    }
    Ok(out)
}

/// The sources merged in order, each process's `extends` resolved.
///
/// # Errors
/// A file that does not parse (named, with its line), a process that
/// extends an unknown process, itself, or a chain back to itself.
pub(crate) fn merge(sources: Vec<Source>) -> Result<Merged, String> {
    let mut doc = Mapping::new();
    let mut origin = HashMap::new();
    for (i, source) in sources.iter().enumerate() {
        let top = parse(&source.text).map_err(|e| format!("{}:{e}", source.file.display()))?;
        for (k, v) in top {
            match (k.as_str().unwrap_or_default(), v) {
                ("extends", _) => {}
                ("processes", Value::Mapping(procs)) => {
                    let into = doc
                        .entry(Value::from("processes"))
                        .or_insert_with(|| Value::Mapping(Mapping::new()));
                    let Value::Mapping(into) = into else { continue };
                    for (name, p) in procs {
                        let pname = name.as_str().unwrap_or_default().to_owned();
                        let mut p = p;
                        if source.extended
                            && let Value::Mapping(m) = &mut p
                            && !m.contains_key("working_dir")
                            && let Some(dir) = source.file.parent()
                        {
                            // What another file's extends brings runs in its
                            // own file's directory, as process-compose runs it.
                            m.insert(
                                Value::from("working_dir"),
                                Value::from(dir.display().to_string()),
                            );
                        }
                        note_origin(&mut origin, &pname, &p, i);
                        match into.get_mut(&name) {
                            Some(Value::Mapping(base)) => {
                                if let Value::Mapping(over) = &p {
                                    merge_process(base, over);
                                }
                            }
                            _ => {
                                into.insert(name, p);
                            }
                        }
                    }
                }
                ("environment", v) => {
                    let merged = match doc.get("environment") {
                        Some(base) => merge_env(base, &v),
                        None => v,
                    };
                    doc.insert(Value::from("environment"), merged);
                }
                (_, v) => {
                    doc.insert(k, v);
                }
            }
        }
    }
    if let Some(Value::Mapping(procs)) = doc.get_mut("processes") {
        resolve_extends(procs)?;
    }
    Ok(Merged {
        doc,
        sources,
        origin,
    })
}

/// Notes that file `i` set process `name` and each of its keys.
fn note_origin(origin: &mut HashMap<(String, String), usize>, name: &str, p: &Value, i: usize) {
    origin.entry((name.to_owned(), String::new())).or_insert(i);
    if let Value::Mapping(m) = p {
        for k in m.keys() {
            origin.insert(
                (name.to_owned(), k.as_str().unwrap_or_default().to_owned()),
                i,
            );
        }
    }
}

/// `over` merged into `base`, as process-compose merges a process.
pub(crate) fn merge_process(base: &mut Mapping, over: &Mapping) {
    for (k, v) in over {
        let key = k.as_str().unwrap_or_default();
        let merged = match (key, base.get(k)) {
            ("environment", Some(b)) => merge_env(b, v),
            ("depends_on" | "depends", Some(Value::Mapping(b))) => {
                let mut b = b.clone();
                if let Value::Mapping(o) = v {
                    for (dk, dv) in o {
                        b.insert(dk.clone(), dv.clone());
                    }
                }
                Value::Mapping(b)
            }
            ("entrypoint" | "args", Some(Value::Sequence(b))) => {
                let mut b = b.clone();
                if let Value::Sequence(o) = v {
                    b.extend(o.iter().cloned());
                }
                Value::Sequence(b)
            }
            (_, Some(Value::Mapping(b))) if matches!(v, Value::Mapping(_)) => {
                let mut b = b.clone();
                if let Value::Mapping(o) = v {
                    merge_process(&mut b, o);
                }
                Value::Mapping(b)
            }
            _ => v.clone(),
        };
        base.insert(k.clone(), merged);
    }
}

/// Two `environment`s (`["K=V"]` or `{K: V}`) merged by name, `over`
/// winning, as a list of `K=V` in name order.
fn merge_env(base: &Value, over: &Value) -> Value {
    fn entries(v: &Value) -> Vec<(String, String)> {
        match v {
            Value::Sequence(items) => items
                .iter()
                .filter_map(Value::as_str)
                .map(|i| match i.split_once('=') {
                    Some((k, v)) => (k.to_owned(), v.to_owned()),
                    None => (i.to_owned(), String::new()),
                })
                .collect(),
            Value::Mapping(m) => m
                .iter()
                .map(|(k, v)| {
                    let v = match v {
                        Value::String(s) => s.clone(),
                        other => serde_norway::to_string(other)
                            .unwrap_or_default()
                            .trim()
                            .to_owned(),
                    };
                    (k.as_str().unwrap_or_default().to_owned(), v)
                })
                .collect(),
            _ => Vec::new(),
        }
    }
    let mut all: BTreeMap<String, String> = entries(base).into_iter().collect();
    all.extend(entries(over));
    Value::Sequence(
        all.into_iter()
            .map(|(k, v)| Value::from(format!("{k}={v}")))
            .collect(),
    )
}

/// Each process's `extends: OTHER` resolved: the other's keys first (its
/// own extends resolved before), the process's own merged on top.
///
/// # Errors
/// An unknown process, a process extending itself, or a chain back to
/// itself, each named.
pub(crate) fn resolve_extends(procs: &mut Mapping) -> Result<(), String> {
    let names: Vec<String> = procs
        .keys()
        .filter_map(|k| k.as_str().map(str::to_owned))
        .collect();
    let mut done: Vec<String> = Vec::new();
    for name in &names {
        resolve_one(procs, name, &mut Vec::new(), &mut done)?;
    }
    Ok(())
}

fn resolve_one(
    procs: &mut Mapping,
    name: &str,
    visiting: &mut Vec<String>,
    done: &mut Vec<String>,
) -> Result<(), String> {
    if done.iter().any(|d| d == name) {
        return Ok(());
    }
    if visiting.iter().any(|v| v == name) {
        visiting.push(name.to_owned());
        return Err(format!(
            " processes.{name}.extends: the chain {} comes back to itself",
            visiting.join(" → ")
        ));
    }
    let parent = match procs.get(name) {
        Some(Value::Mapping(p)) => p.get("extends").and_then(Value::as_str).map(str::to_owned),
        _ => None,
    };
    if let Some(parent) = parent {
        if parent == name {
            return Err(format!(
                " processes.{name}.extends: a process cannot extend itself"
            ));
        }
        if !procs.contains_key(parent.as_str()) {
            return Err(format!(
                " processes.{name}.extends: {parent:?} is not a process of this file"
            ));
        }
        visiting.push(name.to_owned());
        resolve_one(procs, &parent, visiting, done)?;
        visiting.pop();
        let Some(Value::Mapping(mut base)) = procs.get(parent.as_str()).cloned() else {
            return Err(format!(
                " processes.{name}.extends: {parent:?} is not a mapping"
            ));
        };
        base.remove("extends");
        if let Some(Value::Mapping(own)) = procs.get(name).cloned() {
            let mut own = own;
            own.remove("extends");
            merge_process(&mut base, &own);
        }
        procs.insert(Value::from(name), Value::Mapping(base));
    }
    done.push(name.to_owned());
    Ok(())
}

/// The line (1-based) of the key at `path` (`processes`, a process's
/// name, one of its keys), found by indentation: process-compose files are
/// read into values without places, and an error names its line all the
/// same.
pub(crate) fn line_of_key(text: &str, path: &[&str]) -> Option<usize> {
    let mut want = path.iter();
    let mut next = *want.next()?;
    let mut deeper_than: Option<usize> = None;
    // The indentation of the open block's own keys (its first line's):
    // a key further in belongs to one of them, not to the block.
    let mut child: Option<usize> = None;
    for (i, raw) in text.lines().enumerate() {
        let trimmed = raw.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let indent = raw.len() - trimmed.len();
        if deeper_than.is_some_and(|d| indent <= d) {
            // Left the block the last key opened without the next one.
            return None;
        }
        let own = *child.get_or_insert(indent);
        if indent != own {
            continue;
        }
        let key = trimmed
            .split_once(':')
            .map(|(k, _)| k.trim().trim_matches(|c| c == '"' || c == '\''));
        if key == Some(next) {
            match want.next() {
                Some(more) => {
                    next = more;
                    deeper_than = Some(indent);
                    child = None;
                }
                None => return Some(i + 1),
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn yaml(text: &str) -> Mapping {
        parse(text).expect("yaml")
    }

    #[test]
    fn a_process_extends_another_its_own_keys_winning_and_chains_resolve() {
        let mut doc = yaml(
            "processes:\n  base:\n    command: echo base\n    working_dir: /tmp\n    environment: [FOO=bar, SHARED=base]\n    availability:\n      restart: always\n  derived:\n    extends: base\n    environment: [FOO=override, EXTRA=2]\n  chain_top:\n    extends: derived\n    command: echo top\n",
        );
        let Some(Value::Mapping(procs)) = doc.get_mut("processes") else {
            panic!()
        };
        resolve_extends(procs).expect("resolved");
        let derived = &procs["derived"];
        assert_eq!(derived["command"], Value::from("echo base"));
        assert_eq!(
            derived["environment"],
            serde_norway::from_str::<Value>("[EXTRA=2, FOO=override, SHARED=base]").unwrap()
        );
        assert_eq!(derived["availability"]["restart"], Value::from("always"));
        assert!(derived.get("extends").is_none());
        let top = &procs["chain_top"];
        assert_eq!(top["command"], Value::from("echo top"));
        assert_eq!(top["environment"], derived["environment"]);
    }

    #[test]
    fn an_unknown_a_self_and_a_circular_extends_are_refused_by_name() {
        for (text, says) in [
            (
                "processes:\n  a:\n    extends: nope\n",
                "\"nope\" is not a process",
            ),
            ("processes:\n  a:\n    extends: a\n", "cannot extend itself"),
            (
                "processes:\n  a:\n    extends: b\n  b:\n    extends: a\n",
                "comes back to itself",
            ),
        ] {
            let mut doc = yaml(text);
            let Some(Value::Mapping(procs)) = doc.get_mut("processes") else {
                panic!()
            };
            let e = resolve_extends(procs).unwrap_err();
            assert!(e.contains(says) && e.contains("processes.a.extends"), "{e}");
        }
    }

    #[test]
    fn files_merge_in_order_and_errors_name_the_file_a_key_came_from() {
        let sources = vec![
            Source {
                file: "/p/process-compose.yaml".into(),
                extended: false,
                text: "processes:\n  web:\n    command: npm start\n    depends_on:\n      db:\n        condition: process_started\n    environment: [A=3, C=8]\n  db:\n    command: pg\n".into(),
            },
            Source {
                file: "/p/process-compose.override.yaml".into(),
                extended: false,
                text: "processes:\n  web:\n    environment: [A=4, B=5]\n    depends_on:\n      cache:\n        condition: process_started\n  cache:\n    command: redis\n".into(),
            },
        ];
        let merged = merge(sources).expect("merged");
        let web = &merged.doc["processes"]["web"];
        assert_eq!(web["command"], Value::from("npm start"));
        assert_eq!(
            web["environment"],
            serde_norway::from_str::<Value>("[A=4, B=5, C=8]").unwrap()
        );
        assert!(web["depends_on"].get("db").is_some() && web["depends_on"].get("cache").is_some());
        assert_eq!(
            merged.locate(&["processes", "web", "environment"]),
            "/p/process-compose.override.yaml:3: "
        );
        assert_eq!(
            merged.locate(&["processes", "web", "command"]),
            "/p/process-compose.yaml:3: "
        );
        assert_eq!(
            merged.locate(&["processes", "cache"]),
            "/p/process-compose.override.yaml:7: "
        );
    }
}
