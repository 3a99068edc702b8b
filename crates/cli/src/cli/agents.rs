//! `bpm agents setup|remove TOOL`: the command's side of
//! [`crate::agents`], which edits the files.

use std::path::PathBuf;
use std::process::ExitCode;

use super::error::CliError;
use super::{AgentsAction, AgentsArgs};
use crate::agents::{Done, Entry, Place, Tool};

/// Carries out `action`, saying in one line what it did (or the diff).
pub(super) fn agents(action: &AgentsAction) -> Result<ExitCode, CliError> {
    let (args, setting_up) = match action {
        AgentsAction::Setup(args) => (args, true),
        AgentsAction::Remove(args) => (args, false),
    };
    let place = place(args)?;
    let mut entry = entry()?;
    entry.wrap_servers = args.wrap_servers;
    let done = if setting_up {
        crate::agents::setup(&place, &entry, args.dry_run)
    } else {
        crate::agents::remove(&place, &entry, args.dry_run)
    }
    .map_err(|e| CliError::invalid(e.to_string()))?;
    println!("{}", said(args.tool, &place, setting_up, &done));
    Ok(ExitCode::SUCCESS)
}

/// The file `args` names: the project's, else the user's.
fn place(args: &AgentsArgs) -> Result<Place, CliError> {
    let home = std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(PathBuf::from);
    let project = match &args.project {
        Some(dir) if !dir.is_dir() => {
            return Err(CliError::invalid(format!(
                "--project {}: no such directory",
                dir.display()
            )));
        }
        Some(dir) => Some(std::path::absolute(dir).unwrap_or_else(|_| dir.clone())),
        None => None,
    };
    let home = match (&project, home) {
        (_, Some(home)) => home,
        (Some(_), None) => PathBuf::new(),
        (None, None) => {
            return Err(CliError::invalid(
                "HOME is not set: give --project DIR for a project's configuration",
            ));
        }
    };
    Ok(Place::of(args.tool, project.as_deref(), &home, |v| {
        std::env::var(v).ok()
    }))
}

/// What the tool is to start: this very bpm, by its full path (an agent
/// tool may not share the shell's PATH), under this `BPM_HOME` if one is
/// set.
fn entry() -> Result<Entry, CliError> {
    let exe = std::env::current_exe()
        .and_then(std::fs::canonicalize)
        .map_err(|e| CliError::failed(format!("cannot tell where bpm is installed: {e}")))?;
    let command = exe
        .to_str()
        .ok_or_else(|| CliError::failed("bpm's path is not UTF-8"))?
        .to_owned();
    let env = std::env::var("BPM_HOME")
        .ok()
        .filter(|h| !h.is_empty())
        .map(|h| {
            let h = std::path::absolute(&h).map_or(h, |p| p.display().to_string());
            vec![("BPM_HOME".to_owned(), h)]
        })
        .unwrap_or_default();
    Ok(Entry {
        command,
        args: vec!["mcp".to_owned()],
        env,
        wrap_servers: false,
    })
}

/// The line that says what was done.
fn said(tool: Tool, place: &Place, setting_up: bool, done: &Done) -> String {
    let file = place.file.display();
    match (done, setting_up) {
        (Done::Diff(diff), _) if diff.is_empty() => format!("{file}: nothing would change"),
        (Done::Diff(diff), _) => diff.trim_end().to_owned(),
        (Done::Unchanged, true) => format!("bpm is set up for {tool} already, in {file}"),
        (Done::Unchanged, false) => format!("bpm is not set up for {tool} in {file}"),
        (Done::Written { backup: Some(b) }, true) => format!(
            "set up bpm for {tool} in {file} (the file as it was: {}); restart {tool} to load it",
            b.display()
        ),
        (Done::Written { backup: None }, true) => {
            format!("set up bpm for {tool} in {file} (a new file); restart {tool} to load it")
        }
        (Done::Written { .. }, false) => format!("took bpm's entry out of {file}"),
        (Done::Restored, _) => {
            format!("took bpm out of {file}: it is back as it was before setup")
        }
        (Done::Deleted, _) => format!("took bpm out: deleted {file}, which setup had made"),
    }
}
