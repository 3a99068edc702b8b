//! What an MCP client may do: which commands may start and where, whether it
//! may change anything at all, and what it may see of environments.

use std::path::{Path, PathBuf};

use bpm_domain::{Command, Environment, OsText, Probe, ProcessRecord, ProcessSpec, ReadinessCheck};

/// The safety settings of one `bpm mcp` server.
#[derive(Debug, Clone)]
pub struct Policy {
    /// When not empty, a command may start only if its command line starts
    /// with one of these prefixes, ending at a word boundary (`"npm test"`
    /// allows `npm test -- --watch`, not `npm testx`).
    pub allow_commands: Vec<String>,
    /// When not empty, a process may start only in one of these directories
    /// or below them.
    pub allow_dirs: Vec<PathBuf>,
    /// Variables that change what runs ([`RUNNER_VARS`]) that a request
    /// may set all the same under a command allowlist, by name
    /// (case-insensitive; a trailing `*` matches any end).
    pub allow_env: Vec<String>,
    /// No start, stop, pause, resume, restart, input or tracked operations:
    /// only reading.
    pub read_only: bool,
    /// Replace environment values in every record shown, and the values of
    /// secret variables in output text, with `[redacted]` (see
    /// [`secrets_of`](Self::secrets_of) for exactly which).
    pub redact_env: bool,
    /// More variables whose values are secret, by name (case-insensitive;
    /// a trailing `*` matches any end: `"DATABASE_URL"`, `"STRIPE_*"`).
    pub redact_vars: Vec<String>,
    /// The shortest value hidden in output text (at least 1): a shorter
    /// value of a secret variable would hide ordinary words and digits.
    pub redact_min_len: usize,
    /// The most output bytes one answer carries.
    pub max_output_bytes: usize,
    /// Whether every session may read and cancel every task (MCP Tasks);
    /// otherwise a session sees only its own.
    pub share_tasks: bool,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            allow_commands: Vec::new(),
            allow_dirs: Vec::new(),
            allow_env: Vec::new(),
            read_only: false,
            redact_env: true,
            redact_vars: Vec::new(),
            redact_min_len: DEFAULT_REDACT_MIN_LEN,
            max_output_bytes: 64 * 1024,
            share_tasks: false,
        }
    }
}

/// The shortest value hidden in output text unless configured otherwise.
pub const DEFAULT_REDACT_MIN_LEN: usize = 4;

/// The words that make a variable's name secret, wherever they appear in it
/// (case-insensitive).
pub const SECRET_WORDS: &[&str] = &[
    "TOKEN",
    "SECRET",
    "PASSWORD",
    "PASSWD",
    "PASSPHRASE",
    "KEY",
    "CREDENTIAL",
    "AUTH",
    "PRIVATE",
    "COOKIE",
    "DSN",
    "DATABASE_URL",
];

/// Variables that change which program runs or what it loads, whatever the
/// command line says: under a command allowlist a request may not set
/// them (to a value other than the server's own) unless `allow_env` names
/// them. A trailing `*` matches any end; names are compared ignoring case.
pub const RUNNER_VARS: &[&str] = &[
    "PATH",
    "LD_*",
    "DYLD_*",
    "BASH_ENV",
    "ENV",
    "BASH_FUNC_*",
    "SHELLOPTS",
    "BASHOPTS",
    "IFS",
    "PS4",
    "PROMPT_COMMAND",
    "SHELL",
    "PYTHON*",
    "NODE_OPTIONS",
    "NODE_PATH",
    "NPM_CONFIG_*",
    "PERL5*",
    "PERLLIB",
    "RUBYOPT",
    "RUBYLIB",
    "JAVA_TOOL_OPTIONS",
    "_JAVA_OPTIONS",
    "JDK_JAVA_OPTIONS",
    "CARGO_*",
    "RUSTC*",
    "RUSTDOC*",
    "GIT_*",
    "GCONV_PATH",
    "EDITOR",
    "VISUAL",
    "PAGER",
    "SSH_ASKPASS",
    "SUDO_ASKPASS",
    "MAKEFLAGS",
    "MAKE",
    "CC",
    "CXX",
];

/// Whether `name` matches one of `patterns` (case-insensitive; a trailing
/// `*` matches any end).
fn matches_any<S: AsRef<str>>(patterns: &[S], name: &str) -> bool {
    let upper = name.to_ascii_uppercase();
    patterns.iter().any(|pattern| {
        let pattern = pattern.as_ref().to_ascii_uppercase();
        match pattern.strip_suffix('*') {
            Some(prefix) => upper.starts_with(prefix),
            None => upper == pattern,
        }
    })
}

/// Characters with which one shell line can run more than the command it starts with.
const SHELL_OPERATORS: &[char] = &[';', '&', '|', '`', '$', '<', '>', '\n', '(', ')'];

impl Policy {
    /// Whether `command` may start.
    ///
    /// # Errors
    /// A message naming the command and the rule it broke.
    pub fn check_command(&self, command: &Command) -> Result<(), String> {
        if self.allow_commands.is_empty() {
            return Ok(());
        }
        let not_utf8 = || {
            format!(
                "command {:?} is refused: it is not UTF-8, which the command allowlist cannot vet",
                command.to_string()
            )
        };
        let line = match command {
            Command::Argv(argv) => argv
                .iter()
                .map(|a| a.to_str().ok_or_else(not_utf8))
                .collect::<Result<Vec<_>, _>>()?
                .join(" "),
            Command::Shell(line) => {
                let line = line.to_str().ok_or_else(not_utf8)?;
                if let Some(op) = line.chars().find(|c| SHELL_OPERATORS.contains(c)) {
                    return Err(format!(
                        "command {line:?} is refused: it contains the shell operator {op:?}, which the command allowlist cannot vet; give argv instead"
                    ));
                }
                line.trim().to_owned()
            }
        };
        let allowed = self.allow_commands.iter().any(|prefix| {
            let prefix = prefix.trim();
            line.strip_prefix(prefix)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with(' '))
        });
        if allowed {
            Ok(())
        } else {
            Err(format!(
                "command {line:?} is not allowed: this server only starts commands beginning with {}",
                self.allow_commands
                    .iter()
                    .map(|p| format!("{p:?}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        }
    }

    /// Whether `spec` may start: everything in it that bpm would run passes
    /// the command allowlist (its command, a readiness or health `exec`
    /// probe, an `on_exit` hook), it sets none of the [`RUNNER_VARS`] to a
    /// value other than `base`'s (the server's own environment) unless
    /// `allow_env` names it, and every path it names (its directory, env
    /// files and watched paths) is under an allowed directory. The same
    /// check serves a start, a restart and every service of a project.
    ///
    /// # Errors
    /// A message naming the field and the rule it broke.
    pub fn check_spec(&self, spec: &ProcessSpec, base: &Environment) -> Result<(), String> {
        if let Some(command) = &spec.command {
            self.check_command(command)?;
        }
        let mut others: Vec<(&str, &str)> = Vec::new();
        if let ReadinessCheck::Exec { command } = &spec.readiness.check {
            others.push(("the readiness check (ready_exec)", command));
        }
        if let Some(health) = &spec.health
            && let Probe::Exec { command } = &health.probe
        {
            others.push(("the health check (health.exec)", command));
        }
        if let Some(hook) = &spec.on_exit {
            others.push(("the on_exit hook", hook));
        }
        for (what, line) in others {
            self.check_command(&Command::Shell(line.into()))
                .map_err(|e| format!("{what}: {e}"))?;
        }
        if !self.allow_commands.is_empty() {
            for (k, v) in spec.env.iter() {
                let name = k.to_string_lossy();
                if base.get(k) != Some(v)
                    && matches_any(RUNNER_VARS, &name)
                    && !matches_any(&self.allow_env, &name)
                {
                    return Err(format!(
                        "env {name} is refused: under a command allowlist a request may not set a variable that changes what runs (the server's policy can allow it with allow_env)"
                    ));
                }
            }
        }
        if let Some(dir) = &spec.cwd {
            self.check_dir(dir)?;
        }
        for file in &spec.env_files {
            self.check_path("env file", file)?;
        }
        if let Some(watch) = &spec.watch {
            for p in &watch.paths {
                self.check_path("watched path", p)?;
            }
        }
        Ok(())
    }

    /// Under a command allowlist, `spec`'s env files read now and folded
    /// into its environment (its own variables over theirs), for
    /// [`check_spec`](Self::check_spec) to check with the rest: a file
    /// edited later cannot slip a variable past the policy at a restart.
    /// Without an allowlist, `spec` is left as it is (the files are read
    /// at each start).
    ///
    /// # Errors
    /// A file outside the allowed directories, or one that cannot be read
    /// (named, with the line; never its text).
    pub fn fold_env_files(
        &self,
        spec: &mut ProcessSpec,
        machine: &dyn bpm_ports::Machine,
    ) -> Result<(), String> {
        if self.allow_commands.is_empty() || spec.env_files.is_empty() {
            return Ok(());
        }
        for file in &spec.env_files {
            self.check_path("env file", file)?;
        }
        let mut env = machine.read_env_files(&spec.env_files)?;
        for (k, v) in spec.env.iter() {
            env.insert(k.clone(), v.clone());
        }
        spec.env = std::sync::Arc::new(env);
        spec.env_files.clear();
        Ok(())
    }

    /// Whether a process may start in `dir` (already absolute).
    ///
    /// # Errors
    /// A message naming the directory.
    pub fn check_dir(&self, dir: &Path) -> Result<(), String> {
        self.check_under("working directory", dir)
    }

    /// Whether a file the call names (an env file, a watched path) may be
    /// reached: one under an allowed directory (or any, when none is
    /// set), symbolic links followed.
    ///
    /// # Errors
    /// A message naming it as `what`.
    pub fn check_path(&self, what: &str, path: &Path) -> Result<(), String> {
        self.check_under(what, path)
    }

    fn check_under(&self, what: &str, path: &Path) -> Result<(), String> {
        if self.allow_dirs.is_empty() {
            return Ok(());
        }
        let real = path
            .canonicalize()
            .map_err(|e| format!("{what} {}: {e}", path.display()))?;
        let allowed = self.allow_dirs.iter().any(|allowed| {
            allowed
                .canonicalize()
                .is_ok_and(|allowed| real.starts_with(allowed))
        });
        if allowed {
            Ok(())
        } else {
            Err(format!(
                "{what} {} is not allowed: this server only reaches under {}",
                real.display(),
                self.allow_dirs
                    .iter()
                    .map(|d| d.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        }
    }

    /// The values to hide in `record`'s output text, longest first. With
    /// `redact_env` on, a variable is secret when its name contains one of
    /// [`SECRET_WORDS`] (so `GITHUB_TOKEN`, `AWS_SECRET_ACCESS_KEY`,
    /// `PGPASSWORD`, `OLDPWD`...) or matches one of `redact_vars`; every
    /// occurrence of a secret variable's value that is at least
    /// `redact_min_len` characters long is replaced in output text. Records
    /// shown hide every variable's value, secret or not.
    pub fn secrets_of(
        &self,
        record: &ProcessRecord,
        machine: &dyn bpm_ports::Machine,
    ) -> Vec<String> {
        if !self.redact_env {
            return Vec::new();
        }
        let min = self.redact_min_len.max(1);
        // The env files as they read now: a restart would read them so.
        // (Each on its own: one gone since hides nothing of the others.)
        let from_files: Vec<(OsText, OsText)> = record
            .spec()
            .env_files
            .iter()
            .flat_map(|f| {
                machine
                    .read_env_files(std::slice::from_ref(f))
                    .unwrap_or_default()
            })
            .collect();
        let mut secrets: Vec<String> = record
            .spec()
            .env
            .iter()
            .chain(from_files.iter().map(|(k, v)| (k, v)))
            .map(|(k, v)| (k.to_string_lossy(), v.to_string_lossy()))
            .filter(|(k, v)| v.chars().count() >= min && self.is_secret(k))
            .map(|(_, v)| v.into_owned())
            .collect();
        // Longest first, so a secret containing another is replaced whole.
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        secrets.dedup();
        secrets
    }

    /// Whether variable `name`'s value is secret (see [`secrets_of`](Self::secrets_of)).
    pub fn is_secret(&self, name: &str) -> bool {
        let upper = name.to_ascii_uppercase();
        SECRET_WORDS.iter().any(|word| upper.contains(word)) || matches_any(&self.redact_vars, name)
    }
}

/// `text` with every one of `secrets` replaced by `[redacted]`.
pub(super) fn redact_text(text: &str, secrets: &[String]) -> String {
    let mut out = text.to_owned();
    for s in secrets {
        if out.contains(s.as_str()) {
            out = out.replace(s.as_str(), bpm_intake::view::REDACTED);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allow(prefixes: &[&str]) -> Policy {
        Policy {
            allow_commands: prefixes.iter().map(|p| (*p).to_owned()).collect(),
            ..Policy::default()
        }
    }

    #[test]
    fn prefixes_end_at_a_word_boundary() {
        let p = allow(&["npm test", "cargo"]);
        let argv = |a: &[&str]| Command::Argv(a.iter().map(|s| (*s).into()).collect());
        assert!(p.check_command(&argv(&["npm", "test", "--", "-w"])).is_ok());
        assert!(p.check_command(&argv(&["cargo"])).is_ok());
        let err = p
            .check_command(&argv(&["npm", "testx"]))
            .expect_err("testx");
        assert!(
            err.contains("npm testx") && err.contains("\"npm test\""),
            "{err}"
        );
        assert!(p.check_command(&argv(&["rm", "-rf", "/"])).is_err());
        assert!(
            p.check_command(&Command::Shell("cargo build".into()))
                .is_ok()
        );
    }

    #[test]
    fn shell_lines_that_chain_commands_are_refused_under_an_allowlist() {
        let p = allow(&["cargo"]);
        for line in [
            "cargo build; rm -rf ~",
            "cargo $(rm x)",
            "cargo build && curl x",
            "cargo > /etc/x",
        ] {
            let err = p
                .check_command(&Command::Shell(line.into()))
                .expect_err(line);
            assert!(err.contains("shell operator"), "{err}");
        }
        assert!(
            Policy::default()
                .check_command(&Command::Shell("a; b".into()))
                .is_ok()
        );
    }

    #[test]
    fn directories_must_be_under_an_allowed_one() {
        let dir = tempfile::tempdir().expect("dir");
        let inside = dir.path().join("a");
        std::fs::create_dir(&inside).expect("mkdir");
        let p = Policy {
            allow_dirs: vec![dir.path().to_path_buf()],
            ..Policy::default()
        };
        assert!(p.check_dir(&inside).is_ok());
        assert!(p.check_dir(&inside.join("..")).is_ok());
        let err = p.check_dir(Path::new("/")).expect_err("root");
        assert!(err.contains("not allowed"), "{err}");
        assert!(p.check_dir(&dir.path().join("missing")).is_err());
    }

    #[test]
    fn secret_values_are_replaced_longest_first() {
        let secrets = vec!["abcdef123".to_owned(), "abcdef".to_owned()];
        assert_eq!(
            redact_text("x abcdef123 y abcdef", &secrets),
            "x [redacted] y [redacted]"
        );
        let p = Policy {
            redact_vars: vec!["DATABASE_HOST".into(), "stripe_*".into()],
            ..Policy::default()
        };
        assert!(p.is_secret("GITHUB_TOKEN") && p.is_secret("api_key") && !p.is_secret("HOME"));
        assert!(
            p.is_secret("database_host")
                && p.is_secret("STRIPE_LIVE")
                && !p.is_secret("DATABASE_HOSTS")
        );
    }

    #[test]
    fn short_secrets_and_configured_names_are_hidden_and_the_rule_is_the_documented_one() {
        let mut spec = bpm_domain::ProcessSpec::argv(["true"]);
        let env = std::sync::Arc::make_mut(&mut spec.env);
        for (k, v) in [
            ("API_TOKEN", "abcde"),
            ("DB_PASSWORD", "pw1"),
            ("DATABASE_HOST", "db.internal"),
            ("EDITOR", "vim-editor"),
        ] {
            env.insert(k.into(), v.into());
        }
        let record = ProcessRecord::new(
            bpm_domain::ProcessId::from_uuid(uuid::Uuid::from_u128(1)),
            bpm_domain::NodeId::local(),
            spec,
            bpm_domain::Timestamp::from_millis(1),
        );
        let mut p = Policy::default();
        assert_eq!(
            p.secrets_of(&record, &bpm_adapters::os::ThisMachine),
            ["abcde"],
            "5 characters are hidden, 3 are not"
        );
        p.redact_vars = vec!["DATABASE_HOST".into()];
        p.redact_min_len = 3;
        assert_eq!(
            p.secrets_of(&record, &bpm_adapters::os::ThisMachine),
            ["db.internal", "abcde", "pw1"]
        );
        p.redact_env = false;
        assert!(
            p.secrets_of(&record, &bpm_adapters::os::ThisMachine)
                .is_empty()
        );
    }
}
