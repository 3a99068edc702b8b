//! File watches in a build without the `watch` feature: each is refused by
//! name, after the same check for a missing path as a build with them.

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
