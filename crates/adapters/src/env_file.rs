//! Environment files (dotenv format, through `dotenvy`), read where a
//! process starts and where its secrets are hidden.

use std::path::{Path, PathBuf};

use bpm_domain::{Environment, OsText};
use bpm_ports::SpawnError;

/// The variables of `files`, a later file's over an earlier's.
///
/// # Errors
/// [`SpawnError::EnvFile`] for the first file that cannot be read or
/// parsed, naming it and the line at fault.
pub fn read(files: &[PathBuf]) -> Result<Environment, SpawnError> {
    let mut vars = Environment::new();
    for path in files {
        for (k, v) in read_one(path)? {
            vars.insert(OsText::from(k), OsText::from(v));
        }
    }
    Ok(vars)
}

/// Checks that `files` read now, and removes from `inherited` each
/// variable they set: a spec's environment goes over its files when the
/// process starts ([`bpm_domain::ProcessSpec::env_files`]), and what a
/// front end inherited from its caller's shell must not hide them. (A
/// variable added to a file later that the shell set too keeps the
/// shell's value.) Returns the files' variables as they read now.
///
/// # Errors
/// Those of [`read`].
pub fn make_room(
    inherited: &mut Environment,
    files: &[PathBuf],
) -> Result<Environment, SpawnError> {
    let vars = read(files)?;
    for name in vars.keys() {
        inherited.remove(name);
    }
    Ok(vars)
}

fn read_one(path: &Path) -> Result<Vec<(String, String)>, SpawnError> {
    let failed = |reason: String| SpawnError::EnvFile {
        path: path.to_path_buf(),
        reason,
    };
    let lines = dotenvy::from_path_iter(path).map_err(|e| failed(reason_of(path, &e)))?;
    lines
        .map(|line| line.map_err(|e| failed(reason_of(path, &e))))
        .collect()
}

/// What went wrong, naming the line and column at fault but never quoting
/// the file: an env file holds secrets, and a file named by mistake (or
/// by someone probing) may hold anything.
fn reason_of(path: &Path, e: &dotenvy::Error) -> String {
    match e {
        dotenvy::Error::Io(io) if io.kind() == std::io::ErrorKind::NotFound => {
            "no such file".into()
        }
        dotenvy::Error::Io(io) => io.to_string(),
        dotenvy::Error::LineParse(line, at) => {
            let (row, column) = position_of(path, line, *at);
            format!(
                "line {row}, column {column}: not NAME=value (a variable per line: NAME=value, # for comments)"
            )
        }
        // dotenvy's other errors quote the text they met (an unknown
        // substitution's name among them): name the fault only.
        dotenvy::Error::EnvVar(_) => "a variable it refers to is not Unicode".into(),
        _ => "it cannot be read as NAME=value lines".into(),
    }
}

/// Where the bad `line` (as dotenvy gives it, possibly several physical
/// lines) begins in the file, 1-based, and the column of its byte `at`.
/// The file is read again only to count: nothing of it is kept.
fn position_of(path: &Path, line: &str, at: usize) -> (usize, usize) {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let start = text.find(line).unwrap_or(0);
    let upto = &text[..start.min(text.len())];
    let mut row = upto.matches('\n').count() + 1;
    let within = &line[..at.min(line.len())];
    let newlines = within.matches('\n').count();
    row += newlines;
    let column = match within.rfind('\n') {
        Some(i) => within[i + 1..].chars().count() + 1,
        None => within.chars().count() + 1,
    };
    (row, column)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn later_files_win_and_errors_name_the_file_and_line() {
        let dir = tempfile::tempdir().expect("dir");
        let a = dir.path().join("a.env");
        let b = dir.path().join("b.env");
        std::fs::write(&a, "# base\nA=1\nB=from-a\n").expect("write");
        std::fs::write(&b, "B=\"from b\"\nexport C=3\n").expect("write");
        let env = read(&[a.clone(), b]).expect("read");
        let get = |k: &str| env.get(&OsText::from(k)).map(OsText::to_string_lossy);
        assert_eq!(get("A").as_deref(), Some("1"));
        assert_eq!(get("B").as_deref(), Some("from b"));
        assert_eq!(get("C").as_deref(), Some("3"));

        let missing = dir.path().join("missing.env");
        let err = read(&[a.clone(), missing.clone()]).expect_err("missing");
        assert_eq!(
            err,
            SpawnError::EnvFile {
                path: missing,
                reason: "no such file".into()
            }
        );
        let bad = dir.path().join("bad.env");
        std::fs::write(&bad, "GOOD=1\n# note\nthis is not a variable\n").expect("write");
        let err = read(&[bad]).expect_err("bad").to_string();
        assert!(
            err.contains("bad.env") && err.contains("line 3, column 6"),
            "{err}"
        );
        assert!(!err.contains("this is"), "no error quotes the file: {err}");
        // A file that is not an env file at all (a password file, say)
        // is named, and nothing of it is shown.
        let shadow = dir.path().join("shadow");
        std::fs::write(&shadow, "root:$6$salt$hash:19000:0:99999:7:::\n").expect("write");
        let err = read(&[shadow]).expect_err("shadow").to_string();
        assert!(err.contains("line 1, column 5"), "{err}");
        assert!(!err.contains("root") && !err.contains("salt"), "{err}");
    }
}
