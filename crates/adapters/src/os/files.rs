//! File watches ([`bpm_ports::Host::watch_files`]) through inotify, by the
//! `notify` crate: changes under the watched paths, less those under
//! `.git`, under bpm's state, or matching the watch's ignore globs.

use std::path::{Path, PathBuf};

use bpm_domain::FileWatch;
use bpm_ports::WatchError;
use globset::{Glob, GlobSet, GlobSetBuilder};
use notify::{EventKind, RecursiveMode, Watcher as _};
use tokio::sync::mpsc;

/// Which changed paths count.
struct Filter {
    roots: Vec<PathBuf>,
    ignore: GlobSet,
    unwatched: Vec<PathBuf>,
}

impl Filter {
    fn counts(&self, path: &Path) -> bool {
        if path.components().any(|c| c.as_os_str() == ".git") {
            return false;
        }
        if self.unwatched.iter().any(|u| path.starts_with(u)) {
            return false;
        }
        if self.ignore.is_empty() {
            return true;
        }
        if path.file_name().is_some_and(|n| self.ignore.is_match(n)) {
            return false;
        }
        let below = self.roots.iter().find_map(|r| path.strip_prefix(r).ok());
        !below.is_some_and(|b| self.ignore.is_match(b))
    }
}

/// Whether `spec` can be watched now: each path exists and each ignore
/// glob is one. Front ends ask before they submit, to refuse a typo by
/// name rather than start a process whose watch cannot work.
///
/// # Errors
/// What is wrong, naming the path or the glob.
pub fn check_watch(spec: &FileWatch) -> Result<(), String> {
    ignore_set(spec)?;
    match spec.paths.iter().find(|p| !p.exists()) {
        Some(missing) => Err(WatchError::NotFound(missing.clone()).to_string()),
        None => Ok(()),
    }
}

fn ignore_set(spec: &FileWatch) -> Result<GlobSet, String> {
    let mut ignore = GlobSetBuilder::new();
    for pattern in &spec.ignore {
        let glob =
            Glob::new(pattern).map_err(|e| format!("invalid ignore glob {pattern:?}: {e}"))?;
        ignore.add(glob);
    }
    ignore.build().map_err(|e| e.to_string())
}

/// Starts watching; see [`bpm_ports::Host::watch_files`]. `unwatched`:
/// directories whose changes never count (bpm's own state).
pub(super) fn watch(
    spec: &FileWatch,
    unwatched: &[PathBuf],
) -> Result<mpsc::Receiver<()>, WatchError> {
    let filter = Filter {
        roots: spec.paths.clone(),
        ignore: ignore_set(spec).map_err(|reason| WatchError::Os {
            path: spec.paths.first().cloned().unwrap_or_default(),
            reason,
        })?,
        unwatched: unwatched.to_vec(),
    };
    // One slot: changes while one message waits unread are that message.
    let (tx, rx) = mpsc::channel(1);
    let notify_tx = tx.clone();
    let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        let Ok(event) = res else { return };
        if matches!(event.kind, EventKind::Access(_)) {
            return;
        }
        if event.paths.iter().any(|p| filter.counts(p)) {
            let _ = notify_tx.try_send(());
        }
    })
    .map_err(|e| WatchError::Os {
        path: spec.paths.first().cloned().unwrap_or_default(),
        reason: e.to_string(),
    })?;
    for path in &spec.paths {
        if !path.exists() {
            return Err(WatchError::NotFound(path.clone()));
        }
        watcher
            .watch(path, RecursiveMode::Recursive)
            .map_err(|e| WatchError::Os {
                path: path.clone(),
                reason: e.to_string(),
            })?;
    }
    // The watch lasts as long as its receiver.
    tokio::spawn(async move {
        tx.closed().await;
        drop(watcher);
    });
    Ok(rx)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn git_state_and_ignored_globs_do_not_count() {
        let mut b = GlobSetBuilder::new();
        b.add(Glob::new("*.log").expect("glob"));
        b.add(Glob::new("target/**").expect("glob"));
        let f = Filter {
            roots: vec!["/p".into()],
            ignore: b.build().expect("set"),
            unwatched: vec!["/p/.bpm".into()],
        };
        assert!(f.counts(Path::new("/p/src/main.rs")));
        assert!(!f.counts(Path::new("/p/.git/index.lock")));
        assert!(!f.counts(Path::new("/p/.bpm/records/x")));
        assert!(!f.counts(Path::new("/p/logs/app.log")));
        assert!(!f.counts(Path::new("/p/target/debug/x")));
        assert!(f.counts(Path::new("/p/src/target.rs")));
    }
}
