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
        self.roots.iter().any(|r| path.starts_with(r))
            && !path.components().any(|c| c.as_os_str() == ".git")
            && self.may_count_below(path)
    }
}

/// The most directories one watch may cover: a larger tree (`/`, a home
/// with every cache in it) is refused by name rather than left half
/// watched or exhausting the user's inotify watches.
const MAX_WATCHED_DIRS: usize = 10_000;

/// Whether `spec` can be watched now: each path exists, each ignore glob
/// is one, and every directory of each tree can be read, within
/// 10,000 directories in all. Front ends ask before they submit, to refuse a
/// typo (or a tree a watch cannot cover) by name rather than start a
/// process whose watch cannot work.
///
/// # Errors
/// What is wrong, naming the path or the glob.
pub fn check_watch(spec: &FileWatch) -> Result<(), String> {
    let filter = Filter {
        roots: spec.paths.clone(),
        ignore: ignore_set(spec)?,
        unwatched: Vec::new(),
    };
    if let Some(missing) = spec.paths.iter().find(|p| !p.exists()) {
        return Err(WatchError::NotFound(missing.clone()).to_string());
    }
    let mut count = 0;
    for root in &spec.paths {
        walk(root, &filter, &mut |_| {
            count += 1;
            Ok(())
        })
        .map_err(|e| e.to_string())?;
    }
    Ok(())
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

/// Calls `each` for `root` and every directory below it whose changes can
/// count (not `.git`, bpm's state, or an ignored one), parents first; a
/// file root is itself. Stops at the first directory that cannot be read,
/// or past [`MAX_WATCHED_DIRS`], naming it.
fn walk(
    root: &Path,
    filter: &Filter,
    each: &mut dyn FnMut(&Path) -> Result<(), WatchError>,
) -> Result<(), WatchError> {
    let mut seen = 0usize;
    let mut todo = vec![root.to_path_buf()];
    while let Some(dir) = todo.pop() {
        seen += 1;
        if seen > MAX_WATCHED_DIRS {
            return Err(WatchError::Os {
                path: root.to_path_buf(),
                reason: format!(
                    "its tree has more than {MAX_WATCHED_DIRS} directories: watch a smaller one, or ignore some (--watch-ignore)"
                ),
            });
        }
        each(&dir)?;
        let meta = std::fs::symlink_metadata(&dir).map_err(|e| os(&dir, &e))?;
        if !meta.is_dir() {
            continue;
        }
        let entries = std::fs::read_dir(&dir).map_err(|e| os(&dir, &e))?;
        for entry in entries {
            let entry = entry.map_err(|e| os(&dir, &e))?;
            // Links are not followed: a link out of the tree, or a loop,
            // would watch what was not asked for.
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                let path = entry.path();
                if filter.may_count_below(&path) {
                    todo.push(path);
                }
            }
        }
    }
    Ok(())
}

fn os(path: &Path, e: &std::io::Error) -> WatchError {
    WatchError::Os {
        path: path.to_path_buf(),
        reason: format!("{e} (a watch covers every directory of its tree)"),
    }
}

/// One watch's subscriber, as events are dispatched: what counts for it,
/// and where to say so.
struct Sub {
    key: u64,
    filter: std::sync::Arc<Filter>,
    tx: mpsc::Sender<()>,
}

/// What one watch holds watched.
struct Held {
    filter: std::sync::Arc<Filter>,
    paths: std::collections::HashSet<PathBuf>,
}

/// Every watch of a host on one inotify instance (one thread, one file
/// descriptor, however many processes are watched). Each directory of a
/// watched tree is watched on its own (not recursively by the crate, which
/// left the directories it had added when it failed part way, and went on
/// adding new ones for good): counted by the watches that hold it, given
/// up when the last lets go, and a watch that cannot cover its tree gives
/// back all it took. A directory made under a tree later is watched then;
/// a watched directory removed and made again too (its parent is watched
/// for that).
///
/// Two locks: `subs`, all the event handler takes, and `shared`, held
/// while watches are added or removed. The handler runs on the crate's
/// thread, which adding a watch waits on, so it must never wait for
/// `shared`.
#[derive(Default)]
pub(super) struct Watches {
    subs: std::sync::Arc<std::sync::Mutex<Vec<Sub>>>,
    shared: std::sync::Arc<std::sync::Mutex<Shared>>,
}

#[derive(Default)]
struct Shared {
    watcher: Option<notify::RecommendedWatcher>,
    /// Each path watched, with how many watches hold it.
    paths: std::collections::HashMap<PathBuf, usize>,
    /// What each watch holds, by its key.
    held: std::collections::HashMap<u64, Held>,
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

impl Filter {
    /// Whether changes under directory `path` may count: it is not `.git`,
    /// bpm's state, or a directory an ignore glob names.
    fn may_count_below(&self, path: &Path) -> bool {
        if path.file_name().is_some_and(|n| n == ".git") {
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

impl Shared {
    /// One hold more of `path`, watched when it is the first.
    fn hold(&mut self, path: &Path) -> Result<(), WatchError> {
        let count = self.paths.get(path).copied().unwrap_or(0);
        if count == 0
            && let Some(w) = self.watcher.as_mut()
        {
            w.watch(path, RecursiveMode::NonRecursive)
                .map_err(|e| WatchError::Os {
                    path: path.to_path_buf(),
                    reason: e.to_string(),
                })?;
        }
        self.paths.insert(path.to_path_buf(), count + 1);
        Ok(())
    }

    /// One hold fewer of each of `paths`: those no watch holds any more
    /// are no longer watched.
    fn release(&mut self, paths: impl IntoIterator<Item = PathBuf>) {
        for path in paths {
            let left = self
                .paths
                .get(&path)
                .copied()
                .unwrap_or(1)
                .saturating_sub(1);
            if left == 0 {
                self.paths.remove(&path);
                if let Some(w) = self.watcher.as_mut() {
                    let _ = w.unwatch(&path);
                }
            } else {
                self.paths.insert(path, left);
            }
        }
    }

    /// Watch `key` holds `root`'s tree; on a failure it gives back what
    /// this call took.
    fn hold_tree(&mut self, key: u64, root: &Path) -> Result<(), WatchError> {
        let Some(held) = self.held.get(&key) else {
            return Ok(());
        };
        let filter = std::sync::Arc::clone(&held.filter);
        let already = held.paths.clone();
        let mut took: Vec<PathBuf> = Vec::new();
        let result = walk(root, &filter, &mut |dir| {
            if already.contains(dir) || took.iter().any(|t| t == dir) {
                return Ok(());
            }
            self.hold(dir)?;
            took.push(dir.to_path_buf());
            Ok(())
        });
        match result {
            Ok(()) => {
                if let Some(held) = self.held.get_mut(&key) {
                    held.paths.extend(took);
                }
                Ok(())
            }
            Err(e) => {
                self.release(took);
                Err(e)
            }
        }
    }

    /// The paths at or under `gone` (removed: the kernel dropped their
    /// watches) are no longer held; a watch's root's parent stays held.
    fn forget_under(&mut self, gone: &Path) {
        let mut dropped = Vec::new();
        for held in self.held.values_mut() {
            let parents: Vec<&Path> = held
                .filter
                .roots
                .iter()
                .filter_map(|r| r.parent())
                .collect();
            let under: Vec<PathBuf> = held
                .paths
                .iter()
                .filter(|p| p.starts_with(gone) && !parents.contains(&p.as_path()))
                .cloned()
                .collect();
            for p in under {
                held.paths.remove(&p);
                dropped.push(p);
            }
        }
        self.release(dropped);
    }

    /// A directory made (or made again) at `path`: what was watched there
    /// is watched again (the kernel dropped the watch of the directory that
    /// was removed; the news of its removal may come after the new one's),
    /// and each watch whose tree it is in holds it, and what is below it.
    fn made(&mut self, path: &Path) {
        let under: Vec<PathBuf> = self
            .paths
            .keys()
            .filter(|p| p.starts_with(path))
            .cloned()
            .collect();
        let mut gone = Vec::new();
        if let Some(w) = self.watcher.as_mut() {
            for p in under {
                // Watching a watched inode again changes nothing.
                if w.watch(&p, RecursiveMode::NonRecursive).is_err() {
                    gone.push(p);
                }
            }
        }
        for p in gone {
            self.forget_under(&p);
        }
        let keys: Vec<u64> = self
            .held
            .iter()
            .filter(|(_, h)| {
                h.filter.roots.iter().any(|r| path.starts_with(r))
                    && h.filter.may_count_below(path)
                    && !h.paths.contains(path)
            })
            .map(|(k, _)| *k)
            .collect();
        for key in keys {
            // A tree that grew past what may be watched keeps what it had.
            if let Err(e) = self.hold_tree(key, path) {
                tracing::warn!(error = %e, "a new directory under a watch is not watched");
            }
        }
    }
}

impl Watches {
    /// Starts watching; see [`bpm_ports::Host::watch_files`]. `unwatched`:
    /// directories whose changes never count (bpm's own state).
    pub(super) fn watch(
        self: &std::sync::Arc<Self>,
        spec: &FileWatch,
        unwatched: &[PathBuf],
    ) -> Result<mpsc::Receiver<()>, WatchError> {
        let filter = std::sync::Arc::new(Filter {
            roots: spec.paths.clone(),
            ignore: ignore_set(spec).map_err(|reason| WatchError::Os {
                path: spec.paths.first().cloned().unwrap_or_default(),
                reason,
            })?,
            unwatched: unwatched.to_vec(),
        });
        if let Some(missing) = spec.paths.iter().find(|p| !p.exists()) {
            return Err(WatchError::NotFound(missing.clone()));
        }
        let mut shared = lock(&self.shared);
        if shared.watcher.is_none() {
            shared.watcher = Some(self.start(spec)?);
        }
        let key = shared.next_key;
        shared.next_key += 1;
        shared.held.insert(
            key,
            Held {
                filter: std::sync::Arc::clone(&filter),
                paths: std::collections::HashSet::new(),
            },
        );
        let mut set_up = Ok(());
        for root in &spec.paths {
            if let Some(parent) = root.parent()
                && !shared.held[&key].paths.contains(parent)
            {
                set_up = shared.hold(parent);
                if set_up.is_err() {
                    break;
                }
                if let Some(h) = shared.held.get_mut(&key) {
                    h.paths.insert(parent.to_path_buf());
                }
            }
            set_up = shared.hold_tree(key, root);
            if set_up.is_err() {
                break;
            }
        }
        if let Err(e) = set_up {
            if let Some(h) = shared.held.remove(&key) {
                shared.release(h.paths);
            }
            return Err(e);
        }
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
            let mut shared = lock(&this.shared);
            if let Some(h) = shared.held.remove(&key) {
                shared.release(h.paths);
            }
        });
        Ok(rx)
    }

    /// The inotify watcher, and the thread that watches the directories
    /// made under a tree (a watch added from the event handler itself
    /// would wait on the thread that runs the handler).
    fn start(&self, spec: &FileWatch) -> Result<notify::RecommendedWatcher, WatchError> {
        let (made_tx, made_rx) = std::sync::mpsc::channel::<PathBuf>();
        let subs = std::sync::Arc::downgrade(&self.subs);
        let watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
            let Ok(event) = res else { return };
            if matches!(event.kind, EventKind::Access(_)) {
                return;
            }
            if let Some(subs) = subs.upgrade() {
                for sub in lock(&subs).iter() {
                    if event.paths.iter().any(|p| sub.filter.counts(p)) {
                        // One slot: changes while one message waits unread are that message.
                        let _ = sub.tx.try_send(());
                    }
                }
            }
            if matches!(
                event.kind,
                EventKind::Create(_)
                    | EventKind::Remove(_)
                    | EventKind::Modify(notify::event::ModifyKind::Name(_))
            ) {
                for p in event.paths {
                    let _ = made_tx.send(p);
                }
            }
        })
        .map_err(|e| WatchError::Os {
            path: spec.paths.first().cloned().unwrap_or_default(),
            reason: e.to_string(),
        })?;
        let shared = std::sync::Arc::downgrade(&self.shared);
        std::thread::Builder::new()
            .name("bpm-watch".into())
            .spawn(move || {
                // Ends when the watcher (and with it the handler's sender)
                // is dropped with the last `Watches`.
                while let Ok(path) = made_rx.recv() {
                    let Some(shared) = shared.upgrade() else {
                        return;
                    };
                    let mut shared = lock(&shared);
                    if !path.exists() {
                        shared.forget_under(&path);
                    } else if path.is_dir() {
                        shared.made(&path);
                    }
                }
            })
            .map_err(|e| WatchError::Os {
                path: spec.paths.first().cloned().unwrap_or_default(),
                reason: e.to_string(),
            })?;
        Ok(watcher)
    }

    /// How many paths are watched now (for tests: equal before and after).
    #[cfg(test)]
    pub(super) fn watched(&self) -> usize {
        lock(&self.shared).paths.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(path: &Path) -> FileWatch {
        FileWatch::new(vec![path.to_path_buf()], Vec::new(), None)
    }

    async fn reported(rx: &mut mpsc::Receiver<()>) -> bool {
        tokio::time::timeout(std::time::Duration::from_secs(2), rx.recv())
            .await
            .is_ok_and(|m| m.is_some())
    }

    /// Issue 60, item 13: a watch that cannot cover its tree is refused
    /// and gives back every watch it took; a watch that ends gives back
    /// all it held; directories made later, and a watched directory
    /// removed and made again, are watched.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn watches_cover_their_tree_or_nothing_and_give_everything_back() {
        let watches = std::sync::Arc::new(Watches::default());
        let dir = tempfile::tempdir().expect("dir");
        let root = dir.path().join("w");
        std::fs::create_dir_all(root.join("a/b")).expect("mkdir");
        let before = watches.watched();
        let mut rx = watches.watch(&spec(&root), &[]).expect("watch");
        assert_eq!(watches.watched(), before + 4, "the parent, w, a and b");
        // A directory made later is watched, and what changes in it counts.
        std::fs::create_dir_all(root.join("a/new/deeper")).expect("mkdir");
        assert!(reported(&mut rx).await, "the new directory");
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        while rx.try_recv().is_ok() {}
        std::fs::write(root.join("a/new/deeper/f"), "x").expect("write");
        assert!(
            reported(&mut rx).await,
            "a change in a directory made later"
        );
        // Removed and made again, it is watched again.
        std::fs::remove_dir_all(&root).expect("rm");
        assert!(reported(&mut rx).await, "the removal");
        std::fs::create_dir(&root).expect("mkdir again");
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        while rx.try_recv().is_ok() {}
        std::fs::write(root.join("f"), "x").expect("write");
        assert!(
            reported(&mut rx).await,
            "a change in the directory made again"
        );
        drop(rx);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while watches.watched() != before {
            assert!(
                std::time::Instant::now() < deadline,
                "{} left watched",
                watches.watched() - before
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        // `/` is more than a watch may cover: refused, nothing kept.
        let e = watches.watch(&spec(Path::new("/")), &[]).expect_err("/");
        assert!(e.to_string().contains("directories"), "{e}");
        assert!(check_watch(&spec(Path::new("/"))).is_err());
        assert_eq!(
            watches.watched(),
            before,
            "a refused watch gave everything back"
        );
    }

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
