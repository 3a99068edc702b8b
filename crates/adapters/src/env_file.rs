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
    let lines = dotenvy::from_path_iter(path).map_err(|e| failed(reason_of(&e)))?;
    lines
        .map(|line| line.map_err(|e| failed(reason_of(&e))))
        .collect()
}

fn reason_of(e: &dotenvy::Error) -> String {
    match e {
        dotenvy::Error::Io(io) if io.kind() == std::io::ErrorKind::NotFound => {
            "no such file".into()
        }
        dotenvy::Error::Io(io) => io.to_string(),
        dotenvy::Error::LineParse(line, at) => {
            format!("not NAME=value at character {} of {line:?}", at + 1)
        }
        other => other.to_string(),
    }
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
        std::fs::write(&bad, "GOOD=1\nthis is not a variable\n").expect("write");
        let err = read(&[bad]).expect_err("bad").to_string();
        assert!(
            err.contains("bad.env") && err.contains("this is not"),
            "{err}"
        );
    }
}
