//! File watches in a build without the `watch` feature: each is refused by
//! name, after the same check for a missing path as a build with them.
// Also compiled beside the watching module in test builds, for its tests.
#![cfg_attr(
    all(test, feature = "watch"),
    allow(dead_code, unreachable_pub, clippy::redundant_pub_crate)
)]

use std::path::PathBuf;

use bpm_domain::FileWatch;
use bpm_ports::WatchError;
use tokio::sync::mpsc;

const WHY: &str =
    "this build of bpm has no file watches (bpm-adapters' `watch` feature, bpm-embed's `watch`)";

/// Refuses `spec`: a missing path by name, any other because this build
/// cannot watch.
///
/// # Errors
/// Always.
pub fn check_watch(spec: &FileWatch) -> Result<(), String> {
    Err(refuse(spec).to_string())
}

fn refuse(spec: &FileWatch) -> WatchError {
    match spec.paths.iter().find(|p| !p.exists()) {
        Some(missing) => WatchError::NotFound(missing.clone()),
        None => WatchError::Os {
            path: spec.paths.first().cloned().unwrap_or_default(),
            reason: WHY.into(),
        },
    }
}

/// No watches: each is refused.
#[derive(Debug, Default)]
pub(super) struct Watches;

impl Watches {
    /// Refuses `spec` (see [`check_watch`]).
    #[allow(clippy::unused_self)] // The same call as the build with watches.
    pub(super) fn watch(
        self: &std::sync::Arc<Self>,
        spec: &FileWatch,
        _unwatched: &[PathBuf],
    ) -> Result<mpsc::Receiver<()>, WatchError> {
        Err(refuse(spec))
    }
}

#[cfg(test)]
mod tests {
    use super::{Watches, check_watch};
    use bpm_domain::FileWatch;
    use bpm_ports::WatchError;
    use std::sync::Arc;

    #[test]
    fn a_watch_is_refused_by_name_and_a_missing_path_named_first() {
        let dir = tempfile::tempdir().expect("dir");
        let there = FileWatch::new(vec![dir.path().to_path_buf()], Vec::new(), None);
        let e = check_watch(&there).expect_err("a build without watches refuses it");
        assert!(
            e.contains("no file watches") && e.contains("`watch`"),
            "{e}"
        );
        match Arc::new(Watches).watch(&there, &[]) {
            Err(WatchError::Os { path, reason }) => {
                assert_eq!(path, dir.path());
                assert!(reason.contains("bpm-embed's `watch`"), "{reason}");
            }
            other => panic!("expected a refusal, got {:?}", other.map(drop)),
        }
        let gone = FileWatch::new(vec![dir.path().join("gone")], Vec::new(), None);
        let e = check_watch(&gone).expect_err("missing");
        assert!(e.contains("gone") && e.contains("no such file"), "{e}");
    }
}
