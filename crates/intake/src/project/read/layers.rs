//! Several `bpm.toml` files read as one (`bpm up -f a.toml -f b.toml`, a
//! `bpm.override.toml` beside a `bpm.toml`). Each file is checked on its
//! own first, so that a wrong key is named with its file and line; then
//! their tables are merged in order, the later winning key by key: a
//! table (`[project]`, a service, its `env`, `ready`, `health`,
//! `depends_on`) is merged the same way, anything else (a text, a number,
//! a list) is replaced.

use std::path::{Path, PathBuf};

use bpm_domain::project::Project;

use super::{File, Reading, count_services, expand_replicas, line_of, parse_toml, resolve};

/// The project the files make, and their merged document (as `bpm up
/// --dry-run` prints it).
///
/// # Errors
/// What is wrong, naming the file (and line) the wrong key came from.
pub(super) fn read(
    files: &[(PathBuf, String)],
    default_name: &str,
    dir: &Path,
    from: &Reading<'_>,
) -> Result<(Project, String), String> {
    let mut shapes: Vec<File> = Vec::with_capacity(files.len());
    let mut tables: Vec<toml::Table> = Vec::with_capacity(files.len());
    for (file, text) in files {
        let named = |e: String| format!("{}:{e}", file.display());
        shapes.push(parse_toml(text).map_err(named)?);
        tables.push(toml::from_str(text).map_err(|e| named(format!(" {e}")))?);
    }
    let mut doc = toml::Table::new();
    for t in &tables {
        merge(&mut doc, t);
    }
    let text = toml::to_string(&doc).map_err(|e| format!(" the merged files: {e}"))?;
    let first = files[0].0.display();
    let merged = parse_toml(&text).map_err(|e| format!("{first}: once merged:{e}"))?;
    count_services(&merged).map_err(|e| format!("{first}:{e}"))?;
    let name = merged
        .project
        .name
        .clone()
        .unwrap_or_else(|| default_name.to_owned());
    let mut services = Vec::new();
    for (service, table) in merged.services {
        let table = table.into_inner();
        let found = resolve(&service, &table, dir, from);
        services.extend(found.map_err(|e| {
            let at = origin(&tables, &shapes, &service, &e);
            let (file, text) = &files[at];
            let line = shapes[at]
                .services
                .get(&service)
                .map(|t| line_of(text, t.span().start));
            match line {
                Some(line) => format!("{}:{line}: services.{service}.{e}", file.display()),
                None => format!("{}: services.{service}.{e}", file.display()),
            }
        })?);
    }
    expand_replicas(&mut services);
    Ok((Project { name, services }, text))
}

/// Which file an error about `service` comes from: the last that sets the
/// key it names, else the last that has the service.
fn origin(tables: &[toml::Table], shapes: &[File], service: &str, error: &str) -> usize {
    let key = error.split(['.', ':']).next().unwrap_or_default();
    let sets = |t: &toml::Table| {
        t.get("services")
            .and_then(|s| s.get(service))
            .and_then(|s| s.get(key))
            .is_some()
    };
    (0..tables.len())
        .rev()
        .find(|&i| sets(&tables[i]))
        .or_else(|| {
            (0..shapes.len())
                .rev()
                .find(|&i| shapes[i].services.contains_key(service))
        })
        .unwrap_or(0)
}

/// `over` merged into `base`: tables key by key, the rest replaced.
fn merge(base: &mut toml::Table, over: &toml::Table) {
    for (key, value) in over {
        match (base.get_mut(key), value) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge(b, o),
            _ => {
                base.insert(key.clone(), value.clone());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::merge;

    #[test]
    fn tables_merge_key_by_key_and_the_rest_is_replaced() {
        let mut base: toml::Table = toml::from_str(
            "[services.web]\ncommand = \"a\"\nenv = { A = \"1\", B = \"2\" }\nwatch = [\"x\"]\n",
        )
        .expect("base");
        let over: toml::Table = toml::from_str(
            "[services.web]\nenv = { B = \"3\" }\nwatch = [\"y\"]\n[services.db]\ncommand = \"d\"\n",
        )
        .expect("over");
        merge(&mut base, &over);
        let web = &base["services"]["web"];
        assert_eq!(web["command"].as_str(), Some("a"));
        assert_eq!(web["env"]["A"].as_str(), Some("1"));
        assert_eq!(web["env"]["B"].as_str(), Some("3"));
        assert_eq!(web["watch"].as_array().map(Vec::len), Some(1));
        assert_eq!(web["watch"][0].as_str(), Some("y"));
        assert_eq!(base["services"]["db"]["command"].as_str(), Some("d"));
    }
}
