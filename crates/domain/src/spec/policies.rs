//! How a process is stopped, restarted, and found ready.

#[allow(clippy::wildcard_imports)]
use super::*;

/// A POSIX signal bpm can send, with its Linux number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Signal {
    /// SIGHUP (1).
    Hup,
    /// SIGINT (2).
    Int,
    /// SIGQUIT (3).
    Quit,
    /// SIGKILL (9).
    Kill,
    /// SIGUSR1 (10).
    Usr1,
    /// SIGUSR2 (12).
    Usr2,
    /// SIGTERM (15).
    Term,
    /// SIGCONT (18).
    Cont,
    /// SIGSTOP (19).
    Stop,
}

impl Signal {
    /// The signal number on Linux.
    pub const fn number(self) -> i32 {
        match self {
            Signal::Hup => 1,
            Signal::Int => 2,
            Signal::Quit => 3,
            Signal::Kill => 9,
            Signal::Usr1 => 10,
            Signal::Usr2 => 12,
            Signal::Term => 15,
            Signal::Cont => 18,
            Signal::Stop => 19,
        }
    }
}

impl FromStr for Signal {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let upper = s.trim().to_ascii_uppercase();
        let name = upper.strip_prefix("SIG").unwrap_or(&upper);
        serde_json::from_value(serde_json::Value::String(name.to_owned())).map_err(|_| {
            format!("invalid signal {s:?}: expected TERM, INT, HUP, QUIT, KILL, USR1 or USR2")
        })
    }
}

/// How a process is stopped: `signal` to its process group, then KILL after `grace`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct StopPolicy {
    /// The first signal (TERM by default).
    pub signal: Signal,
    /// How long to wait after it before KILL (5 s by default).
    pub grace: Span,
}

impl Default for StopPolicy {
    fn default() -> Self {
        StopPolicy {
            signal: Signal::Term,
            grace: Span::from_secs(5),
        }
    }
}

/// A command that asks a process to stop, run before its signal
/// (process-compose's `shutdown.command`): `sh -c`, in the process's
/// directory and environment, cut at `timeout`; what it writes goes to
/// the process's output. The signal follows once it has ended (or was
/// cut), and KILL the stop's grace after that.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StopCommand {
    /// The command line.
    pub command: String,
    /// How long it may take.
    pub timeout: Span,
}

/// When an exited process is started again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RestartMode {
    /// Never (the default).
    #[default]
    Never,
    /// Only after a non-zero exit or a death by signal.
    OnFailure,
    /// After every exit.
    Always,
}

impl FromStr for RestartMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "never" => Ok(RestartMode::Never),
            "on-failure" | "on_failure" => Ok(RestartMode::OnFailure),
            "always" => Ok(RestartMode::Always),
            _ => Err(format!(
                "invalid restart policy {s:?}: expected never, on-failure or always"
            )),
        }
    }
}

/// Exponential backoff between automatic restarts: `initial * factor^n`, at most `max`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Backoff {
    /// The delay before the first restart.
    pub initial: Span,
    /// The growth factor per restart (at least 1).
    pub factor: f64,
    /// The longest delay.
    pub max: Span,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            initial: Span::from_millis(500),
            factor: 2.0,
            max: Span::from_secs(60),
        }
    }
}

impl Backoff {
    /// The delay before restart number `restart` (0 for the first).
    pub fn delay(&self, restart: u32) -> Duration {
        let exp = i32::try_from(restart.min(64)).unwrap_or(64);
        let secs = self.initial.as_duration().as_secs_f64() * self.factor.powi(exp);
        let max = self.max.as_duration();
        if !secs.is_finite() || secs >= max.as_secs_f64() {
            max
        } else {
            Duration::from_secs_f64(secs)
        }
    }
}

/// The restart policy: a mode, a retry budget, and the backoff between tries.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct RestartPolicy {
    /// When to restart.
    pub mode: RestartMode,
    /// How many automatic restarts at most; `None` for no limit.
    pub max_restarts: Option<u32>,
    /// The delay between restarts.
    pub backoff: Backoff,
}

/// A regular expression that a line of output must match, validated when built.
#[derive(Debug, Clone)]
pub struct LogPattern(regex::Regex);

impl LogPattern {
    /// Compiles `pattern`.
    ///
    /// # Errors
    /// A message naming the pattern and the regex error.
    pub fn new(pattern: &str) -> Result<Self, SpecError> {
        regex::Regex::new(pattern)
            .map(LogPattern)
            .map_err(|e| SpecError::InvalidPattern {
                pattern: pattern.to_owned(),
                reason: e.to_string(),
            })
    }

    /// The pattern that matches a line containing `text` as it is (no
    /// character of it special): process-compose's `ready_log_line`.
    pub fn escape(text: &str) -> String {
        regex::escape(text)
    }

    /// The pattern's source text.
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }

    /// Whether `line` matches.
    pub fn is_match(&self, line: &str) -> bool {
        self.0.is_match(line)
    }
}

impl PartialEq for LogPattern {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Serialize for LogPattern {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for LogPattern {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        LogPattern::new(&String::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

/// How bpm knows a started process is ready for use.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "by")]
pub enum ReadinessCheck {
    /// Ready as soon as it runs.
    #[default]
    None,
    /// Ready when a line of output matches.
    LogPattern {
        /// The pattern.
        pattern: LogPattern,
    },
    /// Ready when a TCP port on the loopback accepts connections.
    Port {
        /// The port.
        port: u16,
    },
    /// Ready when an HTTP GET answers 2xx or 3xx: `target` is a whole
    /// `http://` or `https://` URL (its certificate taken as it is), or a path
    /// on the port handed to the process.
    Http {
        /// The URL or the path.
        target: String,
    },
    /// Ready when a command (`sh -c`, in the process's directory and
    /// environment) exits 0; it runs again every 250 ms until then.
    Exec {
        /// The command line.
        command: String,
    },
    /// Ready as soon as it runs, even with a port handed to it (which is
    /// otherwise what it is ready by): a Procfile's processes.
    Running,
    /// Ready when the process says so itself: `READY=1` on the socket in
    /// `NOTIFY_SOCKET`, as systemd's `sd_notify` sends it (`bpm ready`
    /// does from a shell).
    Notify,
}

/// A readiness check and how long to wait for it.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Readiness {
    /// The check.
    pub check: ReadinessCheck,
    /// A process not ready this long after it started is stopped and fails.
    pub timeout: Option<Span>,
    /// How an HTTP, command or port check is tried ([`Pace::until_ready`]
    /// when not given): its `failures` in a row make the process
    /// unhealthy, and it is stopped and started again under its restart
    /// policy, as a failed health check does.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pace: Option<super::Pace>,
}
