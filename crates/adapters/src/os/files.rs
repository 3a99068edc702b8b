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
        if !self.roots.iter().any(|r| path.starts_with(r)) {
            return false;
        }
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

/// One watch's subscriber: what counts for it, and where to say so.
struct Sub {
    key: u64,
    filter: Filter,
    tx: mpsc::Sender<()>,
}

/// Every watch of a host on one inotify instance (one thread, one file
/// descriptor, however many processes are watched): each watched path is
/// added once, with a count of the watches naming it, and each event goes
/// to the watches it counts for.
#[derive(Default)]
pub(super) struct Watches {
    inner: std::sync::Mutex<Shared>,
    subs: std::sync::Arc<std::sync::Mutex<Vec<Sub>>>,
}

#[derive(Default)]
struct Shared {
    watcher: Option<notify::RecommendedWatcher>,
    roots: std::collections::HashMap<PathBuf, usize>,
    next_key: u64,
}

impl std::fmt::Debug for Watches {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watches").finish_non_exhaustive()
    }
}

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Watches {
    /// Starts watching; see [`bpm_ports::Host::watch_files`]. `unwatched`:
    /// directories whose changes never count (bpm's own state).
    pub(super) fn watch(
        self: &std::sync::Arc<Self>,
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
        if let Some(missing) = spec.paths.iter().find(|p| !p.exists()) {
            return Err(WatchError::NotFound(missing.clone()));
        }
        let mut shared = lock(&self.inner);
        if shared.watcher.is_none() {
            let subs = std::sync::Arc::clone(&self.subs);
            let watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
                let Ok(event) = res else { return };
                if matches!(event.kind, EventKind::Access(_)) {
                    return;
                }
                for sub in lock(&subs).iter() {
                    if event.paths.iter().any(|p| sub.filter.counts(p)) {
                        // One slot: changes while one message waits unread are that message.
                        let _ = sub.tx.try_send(());
                    }
                }
            })
            .map_err(|e| WatchError::Os {
                path: spec.paths.first().cloned().unwrap_or_default(),
                reason: e.to_string(),
            })?;
            shared.watcher = Some(watcher);
        }
        let mut added = Vec::new();
        for path in &spec.paths {
            let count = shared.roots.get(path).copied().unwrap_or(0);
            if count == 0 {
                let watched = shared
                    .watcher
                    .as_mut()
                    .map(|w| w.watch(path, RecursiveMode::Recursive));
                if let Some(Err(e)) = watched {
                    Self::release(&mut shared, &added);
                    return Err(WatchError::Os {
                        path: path.clone(),
                        reason: e.to_string(),
                    });
                }
            }
            shared.roots.insert(path.clone(), count + 1);
            added.push(path.clone());
        }
        let key = shared.next_key;
        shared.next_key += 1;
        drop(shared);
        let (tx, rx) = mpsc::channel(1);
        lock(&self.subs).push(Sub {
            key,
            filter,
            tx: tx.clone(),
        });
        // The watch lasts as long as its receiver.
        let this = std::sync::Arc::clone(self);
        tokio::spawn(async move {
            tx.closed().await;
            lock(&this.subs).retain(|s| s.key != key);
            Self::release(&mut lock(&this.inner), &added);
        });
        Ok(rx)
    }

    /// One watch fewer names each of `paths`: those no watch names any
    /// more are no longer watched.
    fn release(shared: &mut Shared, paths: &[PathBuf]) {
        for path in paths {
            let left = shared.roots.get(path).copied().unwrap_or(1) - 1;
            if left == 0 {
                shared.roots.remove(path);
                if let Some(w) = shared.watcher.as_mut() {
                    let _ = w.unwatch(path);
                }
            } else {
                shared.roots.insert(path.clone(), left);
            }
        }
    }
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
