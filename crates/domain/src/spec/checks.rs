//! What a process is watched for while it runs: file changes, its
//! health, how far a dependency must get, and what a taken name does.

#[allow(clippy::wildcard_imports)]
use super::*;

/// How long a watch waits after a change for the next before it restarts
/// the process: a burst of saves is one restart.
pub const DEFAULT_WATCH_DEBOUNCE_MS: u64 = 300;

/// Files whose changes restart a process: any change under `paths` (each
/// a file or a directory, watched with everything under it), but those
/// matching one of the `ignore` globs, once `debounce` has passed with no
/// further change. Changes under a `.git` directory are never counted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileWatch {
    /// What is watched (absolute paths).
    #[serde(with = "paths_serde")]
    pub paths: Vec<PathBuf>,
    /// Globs of paths whose changes are not counted (`*.log`,
    /// `target/**`), matched against the path below the watched one and
    /// against its file name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ignore: Vec<String>,
    /// The quiet time after the last change before the restart.
    pub debounce: Span,
    /// Restart the live records that depend on this one too (and theirs),
    /// each depending on the new record of what it depended on.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub restart_dependents: bool,
}

impl FileWatch {
    /// A watch of `paths`, ignoring `ignore`, with `debounce` or
    /// [`DEFAULT_WATCH_DEBOUNCE_MS`], restarting the record alone.
    pub fn new(paths: Vec<PathBuf>, ignore: Vec<String>, debounce: Option<Span>) -> Self {
        FileWatch {
            paths,
            ignore,
            debounce: debounce.unwrap_or_else(|| Span::from_millis(DEFAULT_WATCH_DEBOUNCE_MS)),
            restart_dependents: false,
        }
    }
}

/// How a check that is tried again and again is paced: the first try
/// `initial_delay` after the start, then one every `every`, each cut at
/// `timeout`; `successes` passes in a row make it pass, and `failures`
/// failures in a row (when given) make it fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pace {
    /// How long after the start the first try is made.
    #[serde(default, skip_serializing_if = "no_time")]
    pub initial_delay: Span,
    /// How long after a try the next is made.
    pub every: Span,
    /// How long one try may take.
    pub timeout: Span,
    /// How many passes in a row make it pass (at least 1).
    #[serde(default = "one")]
    pub successes: u32,
    /// How many failures in a row make it fail (at least 1); without it,
    /// it is tried until it passes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failures: Option<u32>,
}

const fn one() -> u32 {
    1
}

#[allow(clippy::trivially_copy_pass_by_ref)]
const fn no_time(s: &Span) -> bool {
    s.is_zero()
}

impl Pace {
    /// How a readiness check is paced unless asked otherwise: tried at
    /// once, then every `every`, each try cut at 5 s, until it passes.
    pub fn until_ready(every: Span) -> Self {
        Pace {
            initial_delay: Span::ZERO,
            every,
            timeout: Span::from_secs(5),
            successes: 1,
            failures: None,
        }
    }

    /// Why this pace cannot be kept, if it cannot.
    ///
    /// # Errors
    /// A try more often than every 100 ms, a try cut under 10 ms, or a
    /// count of 0.
    pub fn check(&self) -> Result<(), String> {
        if self.successes == 0 {
            return Err("successes must be at least 1".into());
        }
        if self.failures == Some(0) {
            return Err("failures must be at least 1".into());
        }
        if self.every.as_duration() < Duration::from_millis(100) {
            return Err(format!("every {} is under 100ms", self.every));
        }
        if self.timeout.as_duration() < Duration::from_millis(10) {
            return Err(format!("a timeout of {} is under 10ms", self.timeout));
        }
        Ok(())
    }
}

/// A liveness check: run every `every` while the process runs; after
/// `failures` failures in a row the record is unhealthy, and it is
/// stopped and started again under its restart policy (failed without
/// one). Each check is cut at `timeout`. The first runs `initial_delay`
/// after the start (or `every`, when none is given); after a failure,
/// `successes` passes in a row make it healthy again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthCheck {
    /// What is checked.
    pub probe: Probe,
    /// How often.
    pub every: Span,
    /// How many failures in a row make it unhealthy (at least 1).
    pub failures: u32,
    /// How long one check may take.
    pub timeout: Span,
    /// How long after the start the first check runs (`every` when none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initial_delay: Option<Span>,
    /// How many passes in a row make it healthy again (at least 1).
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub successes: u32,
}

#[allow(clippy::trivially_copy_pass_by_ref)]
const fn is_one(n: &u32) -> bool {
    *n == 1
}

impl HealthCheck {
    /// A check of `probe` every 2 s, unhealthy after 3 failures in a row,
    /// each cut at 5 s.
    pub fn of(probe: Probe) -> Self {
        HealthCheck {
            probe,
            every: Span::from_secs(2),
            failures: 3,
            timeout: Span::from_secs(5),
            initial_delay: None,
            successes: 1,
        }
    }

    /// The check a front end's options ask for: exactly one of `http`,
    /// `exec` and `port`, the others at their defaults unless given.
    ///
    /// # Errors
    /// Why not, when none or several probes are given.
    pub fn from_options(
        http: Option<String>,
        exec: Option<String>,
        port: Option<u16>,
        every: Option<Span>,
        failures: Option<u32>,
        timeout: Option<Span>,
    ) -> Result<Self, SpecError> {
        let probes = [
            http.map(|target| Probe::Http { target }),
            exec.map(|command| Probe::Exec { command }),
            port.map(|port| Probe::Port { port }),
        ];
        let mut probes = probes.into_iter().flatten();
        let (Some(probe), None) = (probes.next(), probes.next()) else {
            return Err(SpecError::InvalidHealth(
                "give one check: http, exec or port".into(),
            ));
        };
        let mut check = HealthCheck::of(probe);
        if let Some(e) = every {
            check.every = e;
        }
        if let Some(n) = failures {
            check.failures = n;
        }
        if let Some(t) = timeout {
            check.timeout = t;
        }
        Ok(check)
    }
}

/// One check of a process's health.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "by")]
pub enum Probe {
    /// An HTTP GET answers 2xx or 3xx: a whole `http://` or `https://`
    /// URL (its certificate taken as it is), or a path on the port handed
    /// to the process.
    Http {
        /// The URL or the path.
        target: String,
    },
    /// A command (`sh -c`, in the process's directory and environment)
    /// exits 0.
    Exec {
        /// The command line.
        command: String,
    },
    /// A TCP port on the loopback accepts connections.
    Port {
        /// The port.
        port: u16,
    },
}

/// How far a dependency must get before its dependent starts: a project
/// file's `depends_on` conditions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Until {
    /// Its process has started.
    Started,
    /// It is ready (its readiness check passed; at once without one).
    Ready,
    /// It completed (exited 0): the default.
    #[default]
    Completed,
    /// It ended, however.
    Ended,
}

impl Until {
    /// Why a dependent fails when dependency `id` ended (`state`) short of
    /// this condition.
    pub fn missed(self, id: ProcessId, state: crate::StateName) -> String {
        match self {
            Until::Completed => format!("dependency {id} ended {state} instead of completing"),
            other => format!(
                "dependency {id} ended {state} before it was {}",
                other.as_str()
            ),
        }
    }

    /// What a dependent waits for, in words: "completed", "ready".
    pub const fn as_str(self) -> &'static str {
        match self {
            Until::Started => "started",
            Until::Ready => "ready",
            Until::Completed => "completed",
            Until::Ended => "ended",
        }
    }
}

impl FromStr for Until {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "started" => Ok(Until::Started),
            "ready" | "healthy" => Ok(Until::Ready),
            "completed" => Ok(Until::Completed),
            "ended" => Ok(Until::Ended),
            other => Err(format!(
                "unknown condition {other:?}: expected started, ready, completed or ended"
            )),
        }
    }
}

/// What a submission does when a live record already carries its name
/// ([`ProcessSpec::if_name_taken`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NameTaken {
    /// Refuse it, naming the live record.
    #[default]
    Refuse,
    /// Start nothing and answer with the live record, if it runs what was
    /// asked for ([`ProcessSpec::differences`]); refuse it otherwise.
    Ensure,
    /// Stop the live record (its whole tree, its grace) and start this one
    /// once it has ended: never both running.
    Replace,
    /// Start this one beside the live record (on a port of its own) and
    /// stop the live one once this one is ready: no moment without a
    /// copy that answers. If this one ends before it is ready, the live
    /// one runs on. It needs a readiness check, and no fixed port.
    Roll,
}

impl NameTaken {
    /// What a caller's `ensure` and `replace` ask for; `None` for both,
    /// which contradict each other (one keeps the live process, the other
    /// stops it).
    pub const fn asked(ensure: bool, replace: bool) -> Option<NameTaken> {
        match (ensure, replace) {
            (true, true) => None,
            (true, false) => Some(NameTaken::Ensure),
            (false, true) => Some(NameTaken::Replace),
            (false, false) => Some(NameTaken::Refuse),
        }
    }

    /// Whether it is the default.
    pub const fn is_refuse(&self) -> bool {
        matches!(self, NameTaken::Refuse)
    }
}
