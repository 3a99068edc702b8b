//! Files and folders that only their owner can read: everything bpm keeps
//! under a state directory (records hold the caller's whole environment,
//! secrets included, and output may too).
//!
//! Files are made `0600` and folders `0700` whatever the umask, which bpm
//! never changes: the processes it starts inherit it.

use std::fs::{DirBuilder, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt as _, MetadataExt as _, OpenOptionsExt as _};
use std::path::Path;

/// Open options that create a file readable and writable by its owner only.
#[must_use]
pub fn options() -> OpenOptions {
    let mut options = OpenOptions::new();
    options.mode(0o600);
    options
}

/// Creates `dir` and its missing parents, each readable by its owner only.
/// A folder that exists keeps its mode.
///
/// # Errors
/// A folder cannot be made.
pub fn create_dir_all(dir: &Path) -> io::Result<()> {
    DirBuilder::new().recursive(true).mode(0o700).create(dir)
}

/// Refuses a state directory that this user does not own, as ssh refuses a
/// key file that others can change: whoever owns it could read every
/// record's environment or plant records that bpm would run.
///
/// # Errors
/// [`io::ErrorKind::PermissionDenied`], naming the folder, its owner and
/// what to do, if another user owns `dir`; the error of `stat` otherwise.
pub fn check_owner(dir: &Path) -> io::Result<()> {
    let owner = std::fs::metadata(dir)?.uid();
    let me = rustix::process::geteuid().as_raw();
    if owner == me {
        return Ok(());
    }
    Err(io::Error::new(
        io::ErrorKind::PermissionDenied,
        format!(
            "{} belongs to user {owner}, not to this user ({me}); bpm keeps secrets there, \
             so it uses only a state directory of its own: choose another with BPM_HOME \
             or give this one to this user",
            dir.display()
        ),
    ))
}

/// The secret token kept in the file `path` (mode 0600), made (32 random
/// bytes, hex) when the file is missing or holds no such token; and
/// whether it was made now, so that a front end prints it only then.
///
/// # Errors
/// When the file cannot be read or written, or the system gives no
/// randomness.
pub fn token_in(path: &Path) -> io::Result<(String, bool)> {
    use std::io::{Read as _, Write as _};
    if let Ok(text) = std::fs::read_to_string(path) {
        let token = text.trim();
        if token.len() >= 32 && token.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Ok((token.to_owned(), false));
        }
    }
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    let token = bytes.iter().fold(String::with_capacity(64), |mut t, b| {
        use std::fmt::Write as _;
        let _ = write!(t, "{b:02x}");
        t
    });
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = std::path::PathBuf::from(tmp);
    let _ = std::fs::remove_file(&tmp);
    let mut file = options().write(true).create_new(true).open(&tmp)?;
    file.write_all(token.as_bytes())?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)?;
    Ok((token, true))
}

#[cfg(test)]
mod token_tests {
    use super::*;

    #[test]
    fn tokens_are_kept_private_and_reused() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("a-token");
        let (first, made) = token_in(&path).expect("made");
        assert!(made);
        assert_eq!(first.len(), 64);
        let mode = std::fs::metadata(&path).expect("file").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(token_in(&path).expect("read"), (first, false));
        std::fs::write(&path, "short").expect("spoilt");
        let (again, made) = token_in(&path).expect("made again");
        assert!(made && again.len() == 64);
    }
}
