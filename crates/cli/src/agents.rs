//! `bpm agents setup|remove TOOL`: an agent tool's own MCP configuration
//! made to start `bpm mcp` (or no longer to). Each tool's documented file
//! and shape:
//!
//! | tool | user file | with `--project DIR` | servers under |
//! |---|---|---|---|
//! | Claude Code | `~/.claude.json` | `DIR/.mcp.json` | `mcpServers` |
//! | Codex | `$CODEX_HOME/config.toml` (`~/.codex`) | `DIR/.codex/config.toml` | `[mcp_servers]` |
//! | Gemini CLI | `~/.gemini/settings.json` | `DIR/.gemini/settings.json` | `mcpServers` |
//! | VS Code | `$XDG_CONFIG_HOME/Code/User/mcp.json` | `DIR/.vscode/mcp.json` | `servers` |
//!
//! The files are edited in place, not rewritten: every other key, comment
//! and blank line stays as it was (a concrete syntax tree for JSON with
//! comments, `toml_edit` for TOML). Setting up again changes nothing. The
//! first change keeps the file as it was beside it (`FILE.bpm-backup`);
//! `remove` puts that back byte for byte when the file is still as setup
//! left it, and otherwise takes out bpm's entry alone.

use std::fmt;
use std::path::{Path, PathBuf};

use jsonc_parser::cst::{CstInputValue, CstObject, CstRootNode};

/// The name bpm's entry has in every tool's list of servers.
pub const ENTRY: &str = "bpm";

/// What the backup of a file is called, beside it.
const BACKUP_SUFFIX: &str = ".bpm-backup";

/// The agent tools `bpm agents` knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Tool {
    /// Claude Code.
    Claude,
    /// The Codex CLI.
    Codex,
    /// Google's Gemini CLI.
    Gemini,
    /// Visual Studio Code (Copilot's agent mode).
    Vscode,
}

impl fmt::Display for Tool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Tool::Claude => "Claude Code",
            Tool::Codex => "Codex",
            Tool::Gemini => "Gemini CLI",
            Tool::Vscode => "VS Code",
        })
    }
}

/// Where a tool keeps its servers, and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Place {
    /// The file.
    pub file: PathBuf,
    /// The tool.
    pub tool: Tool,
}

impl Place {
    /// The file `tool` reads its servers from: the project's in `project`,
    /// else the user's, under `home` (and `CODEX_HOME`, `XDG_CONFIG_HOME`
    /// as `var` says).
    pub fn of(
        tool: Tool,
        project: Option<&Path>,
        home: &Path,
        var: impl Fn(&str) -> Option<String>,
    ) -> Place {
        let file = match (tool, project) {
            (Tool::Claude, Some(dir)) => dir.join(".mcp.json"),
            (Tool::Claude, None) => home.join(".claude.json"),
            (Tool::Codex, Some(dir)) => dir.join(".codex/config.toml"),
            (Tool::Codex, None) => var("CODEX_HOME")
                .filter(|v| !v.is_empty())
                .map_or_else(|| home.join(".codex"), PathBuf::from)
                .join("config.toml"),
            (Tool::Gemini, Some(dir)) => dir.join(".gemini/settings.json"),
            (Tool::Gemini, None) => home.join(".gemini/settings.json"),
            (Tool::Vscode, Some(dir)) => dir.join(".vscode/mcp.json"),
            (Tool::Vscode, None) => var("XDG_CONFIG_HOME")
                .filter(|v| !v.is_empty())
                .map_or_else(|| home.join(".config"), PathBuf::from)
                .join("Code/User/mcp.json"),
        };
        Place { file, tool }
    }

    /// The backup of the file, beside it.
    pub fn backup(&self) -> PathBuf {
        let mut name = self.file.clone().into_os_string();
        name.push(BACKUP_SUFFIX);
        PathBuf::from(name)
    }
}

/// What the tool is to start: bpm's MCP server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// bpm's executable, by its full path.
    pub command: String,
    /// `mcp`.
    pub args: Vec<String>,
    /// The environment it needs (`BPM_HOME`, when setup ran under one).
    pub env: Vec<(String, String)>,
    /// `--wrap-servers`: the file's other stdio servers run through
    /// `bpm mcp-run`.
    pub wrap_servers: bool,
}

/// The words in front of a hosted server's own command.
const WRAP: [&str; 2] = ["mcp-run", "--"];

/// Whether `server` (one entry of a tool's list) starts a stdio server:
/// it has a `command`, and neither a URL nor another `type`.
fn is_stdio(server: &serde_json::Value) -> bool {
    server
        .get("command")
        .is_some_and(serde_json::Value::is_string)
        && server.get("url").is_none()
        && server.get("httpUrl").is_none()
        && server
            .get("type")
            .is_none_or(|t| t.as_str() == Some("stdio"))
}

/// A server's command and arguments, as words.
fn words_of(server: &serde_json::Value) -> Option<(String, Vec<String>)> {
    let command = server.get("command")?.as_str()?.to_owned();
    let args = match server.get("args") {
        None => Vec::new(),
        Some(a) => a
            .as_array()?
            .iter()
            .map(|w| w.as_str().map(str::to_owned))
            .collect::<Option<Vec<_>>>()?,
    };
    Some((command, args))
}

/// The command and arguments that run `server` through `bpm mcp-run`
/// (`bpm` being `exe`), if it is a stdio server not run so already.
pub fn wrapped(server: &serde_json::Value, exe: &str) -> Option<(String, Vec<String>)> {
    if !is_stdio(server) || unwrapped(server, exe).is_some() {
        return None;
    }
    let (command, args) = words_of(server)?;
    let mut words: Vec<String> = WRAP.iter().map(|w| (*w).to_owned()).collect();
    words.push(command);
    words.extend(args);
    Some((exe.to_owned(), words))
}

/// The server's own command and arguments, if `server` runs through
/// `bpm mcp-run` (this `exe` or another `bpm`).
pub fn unwrapped(server: &serde_json::Value, exe: &str) -> Option<(String, Vec<String>)> {
    let (command, args) = words_of(server)?;
    let is_bpm = command == exe || Path::new(&command).file_name().is_some_and(|n| n == "bpm");
    if !is_bpm || args.len() < 3 || args[..2] != WRAP {
        return None;
    }
    Some((args[2].clone(), args[3..].to_vec()))
}

/// Why a file could not be edited: it names the file and, where it can, the
/// line; the file is left as it was.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EditError(String);

impl fmt::Display for EditError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for EditError {}

/// `text` (the file's content, empty when there is none) with bpm's entry
/// set to `entry`.
///
/// # Errors
/// The text does not parse, or its list of servers is not a table.
pub fn with_entry(place: &Place, text: &str, entry: &Entry) -> Result<String, EditError> {
    match place.tool {
        Tool::Codex => toml_with(place, text, Some(entry)),
        _ => json_with(place, text, Some(entry)),
    }
}

/// `text` without bpm's entry; `None` when it has none.
///
/// # Errors
/// As [`with_entry`].
pub fn without_entry(place: &Place, text: &str) -> Result<Option<String>, EditError> {
    let out = match place.tool {
        Tool::Codex => toml_with(place, text, None)?,
        _ => json_with(place, text, None)?,
    };
    Ok((out != text).then_some(out))
}

/// The key a tool's JSON file lists its servers under.
fn servers_key(tool: Tool) -> &'static str {
    if tool == Tool::Vscode {
        "servers"
    } else {
        "mcpServers"
    }
}

fn json_with(place: &Place, text: &str, entry: Option<&Entry>) -> Result<String, EditError> {
    if text.trim().is_empty() && entry.is_none() {
        return Ok(text.to_owned());
    }
    let file = place.file.display();
    let source = if text.trim().is_empty() { "{}\n" } else { text };
    let root = CstRootNode::parse(source, &jsonc_parser::ParseOptions::default()).map_err(|e| {
        let before = &source[..e.range().start.min(source.len())];
        let line = 1 + before.matches('\n').count();
        let column = 1 + before.len() - before.rfind('\n').map_or(0, |at| at + 1);
        EditError(format!(
            "{file}: not JSON at line {line}, column {column}: {}; nothing was changed",
            e.kind()
        ))
    })?;
    let key = servers_key(place.tool);
    let Some(top) = root.object_value() else {
        return Err(EditError(format!(
            "{file}: expected a JSON object at the top; nothing was changed"
        )));
    };
    let servers: Option<CstObject> = match top.get(key) {
        Some(prop) => Some(prop.object_value().ok_or_else(|| {
            EditError(format!(
                "{file}: key {key:?} is not an object of servers; nothing was changed"
            ))
        })?),
        None => None,
    };
    match entry {
        Some(entry) => {
            let value = json_entry(place.tool, entry);
            let servers = servers.unwrap_or_else(|| top.object_value_or_set(key));
            if entry.wrap_servers {
                json_rewrite(&servers, |s| wrapped(s, &entry.command));
            }
            match servers.get(ENTRY) {
                Some(prop)
                    if prop.value().and_then(|v| v.to_serde_value())
                        == Some(input_to_serde(&value)) => {}
                Some(prop) => prop.set_value(value),
                None => {
                    servers.append(ENTRY, value);
                }
            }
        }
        None => {
            if let Some(servers) = &servers {
                json_rewrite(servers, |s| unwrapped(s, ""));
                if let Some(prop) = servers.get(ENTRY) {
                    prop.remove();
                }
            }
        }
    }
    Ok(root.to_string())
}

/// Gives every server but bpm's the command and arguments `change` says,
/// in place: its other keys and the file's comments stay.
fn json_rewrite(
    servers: &CstObject,
    change: impl Fn(&serde_json::Value) -> Option<(String, Vec<String>)>,
) {
    for prop in servers.properties() {
        if prop.decoded_name().as_deref() == Some(ENTRY) {
            continue;
        }
        let (Some(value), Some(object)) = (
            prop.value().and_then(|v| v.to_serde_value()),
            prop.object_value(),
        ) else {
            continue;
        };
        let Some((command, args)) = change(&value) else {
            continue;
        };
        if let Some(c) = object.get("command") {
            c.set_value(CstInputValue::String(command));
        }
        let args = CstInputValue::Array(args.into_iter().map(CstInputValue::String).collect());
        match object.get("args") {
            Some(a) => a.set_value(args),
            None => {
                object.append("args", args);
            }
        }
    }
}

/// The entry as `tool` documents its stdio servers.
fn json_entry(tool: Tool, entry: &Entry) -> CstInputValue {
    let mut fields = Vec::new();
    if matches!(tool, Tool::Claude | Tool::Vscode) {
        fields.push(("type".to_owned(), CstInputValue::String("stdio".into())));
    }
    fields.push((
        "command".to_owned(),
        CstInputValue::String(entry.command.clone()),
    ));
    fields.push((
        "args".to_owned(),
        CstInputValue::Array(
            entry
                .args
                .iter()
                .map(|a| CstInputValue::String(a.clone()))
                .collect(),
        ),
    ));
    if !entry.env.is_empty() {
        fields.push((
            "env".to_owned(),
            CstInputValue::Object(
                entry
                    .env
                    .iter()
                    .map(|(k, v)| (k.clone(), CstInputValue::String(v.clone())))
                    .collect(),
            ),
        ));
    }
    CstInputValue::Object(fields)
}

/// The value `input` stands for, to compare with what a file holds.
fn input_to_serde(input: &CstInputValue) -> serde_json::Value {
    match input {
        CstInputValue::Null => serde_json::Value::Null,
        CstInputValue::Bool(b) => serde_json::Value::Bool(*b),
        CstInputValue::Number(n) => serde_json::from_str(n).unwrap_or(serde_json::Value::Null),
        CstInputValue::String(s) => serde_json::Value::String(s.clone()),
        CstInputValue::Array(items) => items.iter().map(input_to_serde).collect(),
        CstInputValue::Object(fields) => fields
            .iter()
            .map(|(k, v)| (k.clone(), input_to_serde(v)))
            .collect::<serde_json::Map<_, _>>()
            .into(),
    }
}

fn toml_with(place: &Place, text: &str, entry: Option<&Entry>) -> Result<String, EditError> {
    let file = place.file.display();
    let mut doc: toml_edit::DocumentMut = text.parse().map_err(|e: toml_edit::TomlError| {
        let at = e
            .span()
            .map(|s| 1 + text[..s.start.min(text.len())].matches('\n').count())
            .map_or_else(String::new, |line| format!(" at line {line}"));
        EditError(format!(
            "{file}: not TOML{at}: {}; nothing was changed",
            e.message()
        ))
    })?;
    let servers = match doc.get_mut("mcp_servers") {
        Some(item) => Some(item.as_table_like_mut().ok_or_else(|| {
            EditError(format!(
                "{file}: mcp_servers is not a table of servers; nothing was changed"
            ))
        })?),
        None => None,
    };
    match (entry, servers) {
        (Some(entry), servers) => {
            let mut table = toml_edit::Table::new();
            table.insert("command", toml_edit::value(entry.command.as_str()));
            let mut args = toml_edit::Array::new();
            for a in &entry.args {
                args.push(a.as_str());
            }
            table.insert("args", toml_edit::value(args));
            if !entry.env.is_empty() {
                let mut env = toml_edit::InlineTable::new();
                for (k, v) in &entry.env {
                    env.insert(k, v.as_str().into());
                }
                table.insert("env", toml_edit::value(env));
            }
            let same = servers
                .as_ref()
                .and_then(|s| s.get(ENTRY))
                .and_then(toml_edit::Item::as_table_like)
                .is_some_and(|t| toml_equal(t, &table));
            let had_servers = servers.is_some();
            let rewrote = match (entry.wrap_servers, servers) {
                (true, Some(servers)) => toml_rewrite(servers, |s| wrapped(s, &entry.command)),
                _ => false,
            };
            if same && !rewrote {
                return Ok(text.to_owned());
            }
            if !had_servers {
                let mut parent = toml_edit::Table::new();
                parent.set_implicit(true);
                doc.insert("mcp_servers", toml_edit::Item::Table(parent));
            }
            let servers = doc
                .get_mut("mcp_servers")
                .and_then(toml_edit::Item::as_table_like_mut)
                .expect("just made");
            servers.insert(ENTRY, toml_edit::Item::Table(table));
        }
        (None, Some(servers)) => {
            toml_rewrite(servers, |s| unwrapped(s, ""));
            servers.remove(ENTRY);
            let empty_and_implicit = doc
                .get("mcp_servers")
                .and_then(toml_edit::Item::as_table)
                .is_some_and(|t| t.is_empty() && t.is_implicit());
            if empty_and_implicit {
                doc.remove("mcp_servers");
            }
        }
        (None, None) => return Ok(text.to_owned()),
    }
    Ok(doc.to_string())
}

/// Gives every server but bpm's the command and arguments `change` says,
/// in place; whether any changed.
fn toml_rewrite(
    servers: &mut dyn toml_edit::TableLike,
    change: impl Fn(&serde_json::Value) -> Option<(String, Vec<String>)>,
) -> bool {
    let mut changed = false;
    for (name, item) in servers.iter_mut() {
        if name.get() == ENTRY {
            continue;
        }
        let Some(table) = item.as_table_like_mut() else {
            continue;
        };
        let seen: serde_json::Map<String, serde_json::Value> = table
            .iter()
            .filter_map(|(k, v)| {
                let v = v.as_value()?;
                let json = match v {
                    toml_edit::Value::String(s) => serde_json::Value::String(s.value().clone()),
                    toml_edit::Value::Array(a) => a
                        .iter()
                        .map(|w| {
                            w.as_str()
                                .map_or(serde_json::Value::Null, |s| s.to_owned().into())
                        })
                        .collect(),
                    _ => serde_json::Value::Bool(true),
                };
                Some((k.to_owned(), json))
            })
            .collect();
        let Some((command, args)) = change(&serde_json::Value::Object(seen)) else {
            continue;
        };
        table.insert("command", toml_edit::value(command));
        let mut words = toml_edit::Array::new();
        for w in &args {
            words.push(w.as_str());
        }
        table.insert("args", toml_edit::value(words));
        changed = true;
    }
    changed
}

/// Whether a server's table holds what `want` does.
fn toml_equal(have: &dyn toml_edit::TableLike, want: &toml_edit::Table) -> bool {
    let value = |item: &toml_edit::Item| item.as_value().map(|v| v.to_string().trim().to_owned());
    have.len() == want.len()
        && want
            .iter()
            .all(|(k, v)| have.get(k).map(value) == Some(value(v)))
}

/// What a setup or a removal did, for its one line of output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Done {
    /// The file already says it.
    Unchanged,
    /// The file was written; a backup of what it held kept beside it.
    Written {
        /// The backup, if the file existed.
        backup: Option<PathBuf>,
    },
    /// The file was put back as it was from its backup.
    Restored,
    /// The file, made by setup, was deleted.
    Deleted,
    /// With `--dry-run`: what would change, as a unified diff.
    Diff(String),
}

/// Sets bpm up in `place`'s file (`dry_run`: says what would change).
///
/// # Errors
/// The file cannot be read, parsed or written; it is left as it was.
pub fn setup(place: &Place, entry: &Entry, dry_run: bool) -> Result<Done, EditError> {
    let old = read(&place.file)?;
    let text = old.as_deref().unwrap_or("");
    let new = with_entry(place, text, entry)?;
    if new == text && old.is_some() {
        return Ok(Done::Unchanged);
    }
    if dry_run {
        return Ok(Done::Diff(diff(&place.file, text, &new)));
    }
    let backup = match &old {
        Some(old) => {
            let backup = place.backup();
            // The first setup's backup is the file as it was before bpm.
            if !backup.exists() {
                write(&backup, old, &place.file)?;
            }
            Some(backup)
        }
        None => None,
    };
    write(&place.file, &new, &place.file)?;
    Ok(Done::Written { backup })
}

/// Takes bpm out of `place`'s file: from its backup, byte for byte, when
/// the file is as setup left it; otherwise its entry alone.
///
/// # Errors
/// As [`setup`].
pub fn remove(place: &Place, entry: &Entry, dry_run: bool) -> Result<Done, EditError> {
    let Some(current) = read(&place.file)? else {
        return Ok(Done::Unchanged);
    };
    let backup = place.backup();
    let before = read(&backup)?;
    // Setup may have wrapped the other servers or not.
    let as_setup_left = [false, true].into_iter().any(|wrap_servers| {
        let entry = Entry {
            wrap_servers,
            ..entry.clone()
        };
        with_entry(place, before.as_deref().unwrap_or(""), &entry)
            .ok()
            .as_ref()
            == Some(&current)
    });
    if as_setup_left {
        if dry_run {
            let was = before.as_deref().unwrap_or("");
            return Ok(Done::Diff(diff(&place.file, &current, was)));
        }
        return match before {
            Some(_) => std::fs::rename(&backup, &place.file)
                .map(|()| Done::Restored)
                .map_err(|e| EditError(format!("{}: {e}", place.file.display()))),
            None => std::fs::remove_file(&place.file)
                .map(|()| Done::Deleted)
                .map_err(|e| EditError(format!("{}: {e}", place.file.display()))),
        };
    }
    let Some(new) = without_entry(place, &current)? else {
        return Ok(Done::Unchanged);
    };
    if dry_run {
        return Ok(Done::Diff(diff(&place.file, &current, &new)));
    }
    write(&place.file, &new, &place.file)?;
    // The file changed since setup: its backup would undo those changes.
    let _ = std::fs::remove_file(&backup);
    Ok(Done::Written { backup: None })
}

/// The file's text, `None` when there is no file.
fn read(file: &Path) -> Result<Option<String>, EditError> {
    match std::fs::read(file) {
        Ok(bytes) => String::from_utf8(bytes).map(Some).map_err(|_| {
            EditError(format!(
                "{}: not UTF-8 text; nothing was changed",
                file.display()
            ))
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(EditError(format!("{}: {e}", file.display()))),
    }
}

/// Writes `text` to `file` whole (a new file renamed over it), with the
/// permissions `like` has, if it exists (a tool's file may hold secrets).
fn write(file: &Path, text: &str, like: &Path) -> Result<(), EditError> {
    let failed = |e: std::io::Error| EditError(format!("{}: {e}", file.display()));
    if let Some(dir) = file.parent() {
        std::fs::create_dir_all(dir).map_err(failed)?;
    }
    let mut name = file.as_os_str().to_owned();
    name.push(".bpm-new");
    let fresh = PathBuf::from(name);
    std::fs::write(&fresh, text).map_err(failed)?;
    if let Ok(meta) = std::fs::metadata(like) {
        std::fs::set_permissions(&fresh, meta.permissions()).map_err(failed)?;
    }
    std::fs::rename(&fresh, file).map_err(failed)
}

/// A unified diff of `file` from `old` to `new`.
fn diff(file: &Path, old: &str, new: &str) -> String {
    let name = file.display().to_string();
    similar::TextDiff::from_lines(old, new)
        .unified_diff()
        .context_radius(3)
        .header(&name, &name)
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> Entry {
        Entry {
            command: "/usr/bin/bpm".into(),
            args: vec!["mcp".into()],
            env: vec![("BPM_HOME".into(), "/h".into())],
            wrap_servers: false,
        }
    }

    fn place(tool: Tool) -> Place {
        Place::of(tool, Some(Path::new("/p")), Path::new("/home/u"), |_| None)
    }

    #[test]
    fn each_tool_reads_its_own_documented_file() {
        let user = |t| Place::of(t, None, Path::new("/home/u"), |_| None).file;
        assert_eq!(user(Tool::Claude), Path::new("/home/u/.claude.json"));
        assert_eq!(user(Tool::Codex), Path::new("/home/u/.codex/config.toml"));
        assert_eq!(
            user(Tool::Gemini),
            Path::new("/home/u/.gemini/settings.json")
        );
        assert_eq!(
            user(Tool::Vscode),
            Path::new("/home/u/.config/Code/User/mcp.json")
        );
        let codex_home = Place::of(Tool::Codex, None, Path::new("/home/u"), |v| {
            (v == "CODEX_HOME").then(|| "/c".to_owned())
        });
        assert_eq!(codex_home.file, Path::new("/c/config.toml"));
        assert_eq!(place(Tool::Vscode).file, Path::new("/p/.vscode/mcp.json"));
        assert_eq!(place(Tool::Claude).file, Path::new("/p/.mcp.json"));
    }

    #[test]
    fn json_keeps_comments_and_other_servers_and_comes_back_out() {
        let text = "{\n  // mine\n  \"servers\": {\n    \"other\": { \"type\": \"stdio\", \"command\": \"x\" } // theirs\n  },\n  \"inputs\": []\n}\n";
        let p = place(Tool::Vscode);
        let with = with_entry(&p, text, &entry()).expect("edits");
        assert!(
            with.contains("// mine") && with.contains("// theirs"),
            "{with}"
        );
        assert_eq!(with_entry(&p, &with, &entry()).expect("again"), with);
        assert_eq!(
            without_entry(&p, &with).expect("out").as_deref(),
            Some(text)
        );
    }

    #[test]
    fn toml_keeps_comments_and_other_servers_and_comes_back_out() {
        let text = "# Codex\nmodel = \"o4\"\n\n[mcp_servers.other] # theirs\ncommand = \"x\"\n";
        let p = place(Tool::Codex);
        let with = with_entry(&p, text, &entry()).expect("edits");
        assert!(
            with.contains("# Codex") && with.contains("# theirs"),
            "{with}"
        );
        assert!(with.contains("[mcp_servers.bpm]"), "{with}");
        assert_eq!(with_entry(&p, &with, &entry()).expect("again"), with);
        assert_eq!(
            without_entry(&p, &with).expect("out").as_deref(),
            Some(text)
        );
    }

    #[test]
    fn a_file_that_does_not_parse_is_named_with_its_line() {
        let e = with_entry(
            &place(Tool::Claude),
            "{\n  \"a\": 1,\n  \"b\": ]\n}\n",
            &entry(),
        )
        .expect_err("refused");
        assert!(e.0.starts_with("/p/.mcp.json: not JSON at line 3"), "{e}");
        let e = with_entry(&place(Tool::Codex), "a = 1\nb = \n", &entry()).expect_err("refused");
        assert!(
            e.0.starts_with("/p/.codex/config.toml: not TOML at line 2"),
            "{e}"
        );
        let e = with_entry(&place(Tool::Gemini), "{\"mcpServers\": []}", &entry())
            .expect_err("refused");
        assert!(e.0.contains("key \"mcpServers\" is not an object"), "{e}");
    }
}
