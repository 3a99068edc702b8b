//! [`Asked::into_spec`]: one reading of a request, for every front end.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bpm_domain::{
    Command, Environment, FileWatch, HealthCheck, LimitsAsked, LogPattern, NameTaken, Owner, Pace,
    PortAsk, ProcessId, ProcessKind, ProcessName, ProcessSpec, ReadinessCheck, RestartMode,
    ScheduleAsked, Signal, Span, StdinMode, StopCommand, TtySize,
};

use crate::asked::{Amount, Asked, Duration, HealthAsked};
use crate::context::{AskError, Context};

/// The fields whose value a [`Duration`] gives.
type Field = &'static str;

/// How long a stop command may take unless asked otherwise, as in
/// process-compose.
const DEFAULT_STOP_COMMAND_SECS: u64 = 10;

impl Asked {
    /// The spec this request asks for, every field read and checked: a
    /// value that does not read, two settings that contradict each
    /// other, a directory that is not there, an env file that does not
    /// read, a watch or a limit this machine cannot set up, are refused
    /// naming the field as the front end spells it.
    ///
    /// # Errors
    /// The first field at fault ([`AskError`]).
    pub fn into_spec(self, ctx: &Context<'_>) -> Result<ProcessSpec, AskError> {
        self.into_parts(ctx).map(|(spec, _)| spec)
    }

    /// [`Asked::into_spec`], with the variables its env files hold now
    /// (a project's digest covers them).
    ///
    /// # Errors
    /// Those of [`Asked::into_spec`].
    pub fn into_parts(self, ctx: &Context<'_>) -> Result<(ProcessSpec, Environment), AskError> {
        let r = Reader { ctx };
        let mut spec = r.command(&self)?;
        let from_files = r.places(&self, &mut spec)?;
        r.identity(&self, &mut spec)?;
        r.lifecycle(&self, &mut spec)?;
        r.readiness(&self, &mut spec)?;
        r.resources(&self, &mut spec)?;
        r.ownership(&self, &mut spec)?;
        spec.validate()
            .map_err(|e| AskError::new("request", e.to_string()))?;
        Ok((spec, from_files))
    }
}

struct Reader<'c, 'a> {
    ctx: &'c Context<'a>,
}

impl Reader<'_, '_> {
    fn name(&self, field: &str) -> String {
        self.ctx.spelling.of(field)
    }

    fn fail(&self, field: &str, why: impl std::fmt::Display) -> AskError {
        AskError::of(field, self.name(field), why.to_string())
    }

    /// A message of the domain's readers, which name the field themselves
    /// (with [`Spelling::flag`](crate::Spelling) before it): the field is
    /// the first of `fields` the message starts with.
    fn named_by(&self, fields: &[&str], message: String) -> AskError {
        let field = fields
            .iter()
            .find(|f| message.starts_with(&self.name(f)))
            .or(fields.first())
            .copied()
            .unwrap_or("request");
        AskError::new(field, message)
    }

    fn span(&self, field: Field, d: Option<&Duration>) -> Result<Option<Span>, AskError> {
        let Some(d) = d else { return Ok(None) };
        match d {
            Duration::Seconds(secs) => std::time::Duration::try_from_secs_f64(*secs)
                .map_err(|_| {
                    self.fail(
                        field,
                        format!("{secs} seconds: expected a number of seconds, 0 or more"),
                    )
                })
                .and_then(|d| Span::new(d).map_err(|e| self.fail(field, e)))
                .map(Some),
            Duration::Text(text) => text
                .parse::<Span>()
                .map(Some)
                .map_err(|e| self.fail(field, e)),
        }
    }

    fn command(&self, a: &Asked) -> Result<ProcessSpec, AskError> {
        let missing = |why: &str| {
            let message = if self.ctx.spelling == crate::Spelling::Flags {
                "missing command: give it after --".to_owned()
            } else {
                format!("missing command: {why}")
            };
            AskError::new("command", message)
        };
        match (&a.command, &a.argv) {
            (Some(_), Some(_)) => Err(AskError::new(
                "command",
                format!(
                    "give either {} or {}, not both",
                    self.name("command"),
                    self.name("argv")
                ),
            )),
            (None, None) => Err(missing(&format!(
                "give {} (a shell line) or {}",
                self.name("command"),
                self.name("argv")
            ))),
            (Some(line), None) => {
                if line.to_string_lossy().trim().is_empty() {
                    return Err(missing(&format!("{} is empty", self.name("command"))));
                }
                Ok(ProcessSpec::shell(line.clone()))
            }
            (None, Some(argv)) => {
                if argv
                    .first()
                    .is_none_or(|p| p.to_string_lossy().trim().is_empty())
                {
                    return Err(missing(&format!("{} is empty", self.name("argv"))));
                }
                Ok(ProcessSpec::argv(argv.clone()))
            }
        }
    }

    /// The working directory, the environment, the env files and the
    /// watched paths; returns the env files' variables.
    fn places(&self, a: &Asked, spec: &mut ProcessSpec) -> Result<Environment, AskError> {
        let ctx = self.ctx;
        let cwd = match &a.cwd {
            Some(dir) => ctx.base.join(dir),
            None => ctx.base.to_path_buf(),
        };
        (ctx.may_read)("working directory", &cwd).map_err(|e| self.fail("cwd", e))?;
        ctx.machine
            .usable_dir(&cwd)
            .map_err(|e| self.fail("cwd", e))?;
        let files_base: &Path = if ctx.files_from_cwd { &cwd } else { ctx.base };
        let mut env = if a.clean_env == Some(true) {
            Environment::new()
        } else {
            ctx.env.clone()
        };
        spec.env_files = a.env_file.iter().map(|f| files_base.join(f)).collect();
        for f in &spec.env_files {
            (ctx.may_read)("env file", f).map_err(|e| self.fail("env_file", e))?;
        }
        let from_files = if spec.env_files.is_empty() {
            Environment::new()
        } else {
            ctx.machine
                .read_env_files(&spec.env_files)
                .map_err(|e| self.fail("env_file", e))?
        };
        // The files go over the inherited environment when the process
        // starts: what it inherited must not hide them.
        for name in from_files.keys() {
            env.remove(name);
        }
        env.extend(a.env.iter().map(|(k, v)| (k.clone(), v.clone())));
        spec.env = Arc::new(env);
        spec.watch = self.watch(a, files_base)?.map(Box::new);
        spec.cwd = Some(cwd);
        Ok(from_files)
    }

    fn watch(&self, a: &Asked, base: &Path) -> Result<Option<FileWatch>, AskError> {
        if a.watch.is_empty() {
            let companion = [
                ("watch_ignore", !a.watch_ignore.is_empty()),
                ("watch_debounce", a.watch_debounce.is_some()),
                ("restart_dependents", a.restart_dependents.is_some()),
            ]
            .into_iter()
            .find(|(_, given)| *given);
            return match companion {
                Some((field, _)) => Err(self.fail(
                    field,
                    format!("needs {} (the paths to watch)", self.name("watch")),
                )),
                None => Ok(None),
            };
        }
        let paths: Vec<PathBuf> = a.watch.iter().map(|p| base.join(p)).collect();
        for p in &paths {
            (self.ctx.may_read)("watched path", p).map_err(|e| self.fail("watch", e))?;
        }
        let mut watch = FileWatch::new(
            paths,
            a.watch_ignore.clone(),
            self.span("watch_debounce", a.watch_debounce.as_ref())?,
        );
        watch.restart_dependents = a.restart_dependents == Some(true);
        self.ctx
            .machine
            .check_watch(&watch)
            .map_err(|e| self.fail("watch", e))?;
        Ok(Some(watch))
    }

    /// Name, kind, session, group, node and labels, parent and `after`.
    fn identity(&self, a: &Asked, spec: &mut ProcessSpec) -> Result<(), AskError> {
        spec.name = a
            .name
            .clone()
            .map(ProcessName::new)
            .transpose()
            .map_err(|e| self.fail("name", e))?;
        if let Some(k) = &a.kind {
            spec.kind = k.parse::<ProcessKind>().map_err(|e| self.fail("kind", e))?;
        }
        spec.session = a
            .session
            .as_deref()
            .map(str::parse)
            .transpose()
            .map_err(|e: bpm_domain::NameError| self.fail("session", e))?;
        spec.group = a
            .group
            .as_deref()
            .map(str::parse)
            .transpose()
            .map_err(|e: bpm_domain::NameError| self.fail("group", e))?;
        spec.node = a
            .node
            .as_deref()
            .map(|n| {
                n.parse::<bpm_domain::NodeId>()
                    .map_err(|e| self.fail("node", format!("{n:?}: {e}")))
            })
            .transpose()?;
        for (field, from, to) in [
            ("labels", &a.labels, &mut spec.labels),
            ("node_labels", &a.node_labels, &mut spec.node_labels),
        ] {
            for (k, v) in from {
                let key = k
                    .parse()
                    .map_err(|e: bpm_domain::NameError| self.fail(field, e))?;
                let value = v
                    .parse()
                    .map_err(|e: bpm_domain::NameError| self.fail(field, e))?;
                to.insert(key, value);
            }
        }
        if let Some(p) = &a.parent {
            spec.parent = Some(self.id("parent", p)?);
        }
        for after in &a.after {
            let id = self.id("after", after)?;
            if !spec.dependencies.contains(&id) {
                spec.dependencies.push(id);
            }
        }
        spec.metadata = a.metadata.clone().unwrap_or_default();
        spec.on_exit.clone_from(&a.on_exit);
        Ok(())
    }

    fn id(&self, field: &str, text: &str) -> Result<ProcessId, AskError> {
        if let Some(id) = self.ctx.ids.get(text) {
            return Ok(*id);
        }
        text.parse::<ProcessId>()
            .map_err(|_| self.fail(field, format!("no process matches {text:?}")))
    }

    /// Timeout, delay, priority, stopping and restarting.
    fn lifecycle(&self, a: &Asked, spec: &mut ProcessSpec) -> Result<(), AskError> {
        spec.timeout = self.span("timeout", a.timeout.as_ref())?;
        spec.delay = self.span("delay", a.delay.as_ref())?;
        if let Some(at) = &a.at {
            if spec.delay.is_some() {
                return Err(self.fail("at", "give delay or at, not both"));
            }
            let now = self
                .ctx
                .now
                .ok_or_else(|| self.fail("at", "this front end does not know the time now"))?;
            let zone =
                a.tz.clone()
                    .or_else(|| self.ctx.time_zone.map(str::to_owned))
                    .unwrap_or_else(|| self.ctx.machine.time_zone());
            let wait =
                bpm_domain::until_time(at, now, Some(&zone)).map_err(|e| self.fail("at", e))?;
            spec.delay = Some(wait);
        }
        spec.priority = a.priority.unwrap_or(0);
        if let Some(g) = self.span("grace", a.grace.as_ref())? {
            spec.stop.grace = g;
        }
        if let Some(s) = &a.stop_signal {
            spec.stop.signal = s
                .parse::<Signal>()
                .map_err(|e| self.fail("stop_signal", e))?;
        }
        let stop_timeout = self.span("stop_command_timeout", a.stop_command_timeout.as_ref())?;
        match (&a.stop_command, stop_timeout) {
            (Some(command), timeout) => {
                if command.trim().is_empty() {
                    return Err(self.fail("stop_command", "is empty".to_owned()));
                }
                spec.stop_command = Some(Box::new(StopCommand {
                    command: command.clone(),
                    timeout: timeout.unwrap_or(Span::from_secs(DEFAULT_STOP_COMMAND_SECS)),
                }));
            }
            (None, Some(_)) => {
                return Err(self.fail(
                    "stop_command_timeout",
                    format!("times a stop command: give {}", self.name("stop_command")),
                ));
            }
            (None, None) => {}
        }
        if let Some(r) = &a.restart {
            spec.restart.mode = r
                .parse::<RestartMode>()
                .map_err(|e| self.fail("restart", e))?;
        }
        spec.restart.max_restarts = a.max_restarts;
        if let Some(b) = self.span("backoff", a.backoff.as_ref())? {
            spec.restart.backoff.initial = b;
            // A first delay longer than the usual longest is its own
            // longest: nothing needs restarts to come sooner than asked.
            spec.restart.backoff.max = spec.restart.backoff.max.max(b);
        }
        spec.idle_after = self.span("idle_after", a.idle_after.as_ref())?;
        spec.success_codes = a.success_codes.clone().unwrap_or_default();
        if let Some(n) = a.log_archive {
            if !(1..=bpm_domain::MAX_LOG_ARCHIVES).contains(&n) {
                return Err(self.fail(
                    "log_archive",
                    format!(
                        "{n}: keep from 1 to {} archives of old output",
                        bpm_domain::MAX_LOG_ARCHIVES
                    ),
                ));
            }
            spec.log_archive = Some(n);
        }
        spec.failover = a.failover == Some(true);
        spec.leader_only = a.leader_only == Some(true);
        spec.if_name_taken = NameTaken::asked(a.ensure == Some(true), a.replace == Some(true))
            .ok_or_else(|| {
                let (e, r) = (self.name("ensure"), self.name("replace"));
                AskError::new(
                    "replace",
                    format!(
                        "{e} and {r} contradict each other: {e} keeps the live process, {r} stops it"
                    ),
                )
            })?;
        Ok(())
    }

    /// The readiness check, its timeout, and the health check.
    fn readiness(&self, a: &Asked, spec: &mut ProcessSpec) -> Result<(), AskError> {
        let given: Vec<&str> = [
            ("ready_pattern", a.ready_pattern.is_some()),
            ("ready_port", a.ready_port.is_some()),
            ("ready_http", a.ready_http.is_some()),
            ("ready_exec", a.ready_exec.is_some()),
            ("ready_notify", a.ready_notify == Some(true)),
        ]
        .into_iter()
        .filter_map(|(f, g)| g.then_some(f))
        .collect();
        if let [_, second, ..] = given.as_slice() {
            return Err(self.fail(
                second,
                format!(
                    "give one readiness check: {}, {}, {}, {} or {}",
                    self.name("ready_pattern"),
                    self.name("ready_port"),
                    self.name("ready_http"),
                    self.name("ready_exec"),
                    self.name("ready_notify")
                ),
            ));
        }
        if let Some(p) = &a.ready_pattern {
            let pattern = LogPattern::new(p).map_err(|e| self.fail("ready_pattern", e))?;
            spec.readiness.check = ReadinessCheck::LogPattern { pattern };
        } else if let Some(port) = a.ready_port {
            spec.readiness.check = ReadinessCheck::Port { port };
        } else if let Some(target) = &a.ready_http {
            spec.readiness.check = ReadinessCheck::Http {
                target: target.clone(),
            };
        } else if let Some(command) = &a.ready_exec {
            spec.readiness.check = ReadinessCheck::Exec {
                command: command.clone(),
            };
        } else if a.ready_notify == Some(true) {
            spec.readiness.check = ReadinessCheck::Notify;
        }
        spec.readiness.timeout = self.span("ready_timeout", a.ready_timeout.as_ref())?;
        spec.readiness.pace = self.pace(a)?;
        if let Some(h) = &a.health {
            spec.health = Some(Box::new(self.health(h)?));
        }
        Ok(())
    }

    /// How an HTTP, command or port readiness check is tried, when any
    /// of its timings is asked for.
    fn pace(&self, a: &Asked) -> Result<Option<Pace>, AskError> {
        let given = [
            ("ready_initial_delay", a.ready_initial_delay.is_some()),
            ("ready_every", a.ready_every.is_some()),
            ("ready_check_timeout", a.ready_check_timeout.is_some()),
            ("ready_successes", a.ready_successes.is_some()),
            ("ready_failures", a.ready_failures.is_some()),
        ];
        let Some((first, _)) = given.iter().find(|(_, g)| *g) else {
            return Ok(None);
        };
        if a.ready_http.is_none() && a.ready_exec.is_none() && a.ready_port.is_none() {
            return Err(self.fail(
                first,
                format!(
                    "paces an HTTP, command or port readiness check: give {}, {} or {}",
                    self.name("ready_http"),
                    self.name("ready_exec"),
                    self.name("ready_port")
                ),
            ));
        }
        let mut pace = Pace::until_ready(Span::from_millis(250));
        if let Some(d) = self.span("ready_initial_delay", a.ready_initial_delay.as_ref())? {
            pace.initial_delay = d;
        }
        if let Some(d) = self.span("ready_every", a.ready_every.as_ref())? {
            pace.every = d;
        }
        if let Some(d) = self.span("ready_check_timeout", a.ready_check_timeout.as_ref())? {
            pace.timeout = d;
        }
        if let Some(n) = a.ready_successes {
            pace.successes = n;
        }
        pace.failures = a.ready_failures;
        let field = if pace.successes == 0 {
            "ready_successes"
        } else if pace.failures == Some(0) {
            "ready_failures"
        } else if pace.every.as_duration() < std::time::Duration::from_millis(100) {
            "ready_every"
        } else {
            "ready_check_timeout"
        };
        pace.check().map_err(|e| self.fail(field, e))?;
        Ok(Some(pace))
    }

    fn health(&self, h: &HealthAsked) -> Result<HealthCheck, AskError> {
        let checks = [h.http.is_some(), h.exec.is_some(), h.port.is_some()];
        let named = |f: &str| self.name(&format!("health.{f}"));
        match checks.into_iter().filter(|c| *c).count() {
            0 => {
                return Err(self.fail(
                    "health",
                    format!(
                        "{}, {} and {} need a check: {}, {} or {}",
                        named("every"),
                        named("failures"),
                        named("timeout"),
                        named("http"),
                        named("exec"),
                        named("port")
                    ),
                ));
            }
            1 => {}
            _ => {
                return Err(self.fail(
                    "health",
                    format!(
                        "give one health check: {}, {} or {}",
                        named("http"),
                        named("exec"),
                        named("port")
                    ),
                ));
            }
        }
        HealthCheck::from_options(
            h.http.clone(),
            h.exec.clone(),
            h.port,
            self.span("health.every", h.every.as_ref())?,
            h.failures,
            self.span("health.timeout", h.timeout.as_ref())?,
        )
        .map_err(|e| self.fail("health", e))
        .and_then(|mut check| {
            check.initial_delay = self.span("health.initial_delay", h.initial_delay.as_ref())?;
            if let Some(n) = h.successes {
                if n == 0 {
                    return Err(self.fail("health.successes", "must be at least 1".to_owned()));
                }
                check.successes = n;
            }
            Ok(check)
        })
    }

    /// Port, schedule, limits, terminal and stdin.
    fn resources(&self, a: &Asked, spec: &mut ProcessSpec) -> Result<(), AskError> {
        let flag = self.ctx.spelling.flag();
        spec.port = a
            .port
            .as_ref()
            .map(|p| p.text().parse::<PortAsk>())
            .transpose()
            .map_err(|e| self.fail("port", e))?;
        let zone = || {
            self.ctx
                .time_zone
                .map_or_else(|| self.ctx.machine.time_zone(), str::to_owned)
        };
        spec.schedule = ScheduleAsked {
            every: a.every.as_deref(),
            cron: a.cron.as_deref(),
            tz: a.tz.as_deref(),
            overlap: a.overlap.as_deref(),
            jitter: a.jitter.as_deref(),
            run_now: a.run_now == Some(true),
            catch_up: a.catch_up == Some(true),
        }
        .schedule(zone, flag)
        .map_err(|e| {
            self.named_by(
                &[
                    "every", "cron", "tz", "overlap", "jitter", "run_now", "catch_up",
                ],
                e,
            )
        })?
        .map(Box::new);
        let text = |v: &Option<Amount>| v.as_ref().map(Amount::text);
        let (memory, cpu, pids, files) = (
            text(&a.memory_max),
            text(&a.cpu_max),
            text(&a.pids_max),
            text(&a.nofile),
        );
        let limits = LimitsAsked {
            memory_max: memory.as_deref(),
            cpu_max: cpu.as_deref(),
            pids_max: pids.as_deref(),
            nofile: files.as_deref(),
        }
        .limits(flag)
        .map_err(|e| self.named_by(&["memory_max", "cpu_max", "pids_max", "nofile"], e))?;
        if let Some(l) = &limits {
            self.ctx
                .machine
                .check_limits(l)
                .map_err(|(option, why)| self.fail(option, why))?;
        }
        spec.limits = limits.map(Box::new);
        let terminal = self.ctx.terminal;
        spec.tty = TtySize::asked(a.tty, a.tty_size.as_deref(), || terminal, flag)
            .map_err(|e| self.named_by(&["tty", "tty_size"], e))?;
        if a.stdin == Some(true) {
            spec.stdin = StdinMode::Pipe;
        }
        Ok(())
    }

    /// Its owners: those asked for, else the caller's own unless it is
    /// to persist.
    fn ownership(&self, a: &Asked, spec: &mut ProcessSpec) -> Result<(), AskError> {
        for text in &a.owner {
            let owner = text.parse::<Owner>().map_err(|e| self.fail("owner", e))?;
            if !spec.owners.contains(&owner) {
                spec.owners.push(owner);
            }
        }
        spec.owner_grace = self.span("owner_grace", a.owner_grace.as_ref())?;
        if spec.owners.is_empty()
            && a.persistent != Some(true)
            && let Some((owner, grace)) = &self.ctx.owner
        {
            spec.owners.push(owner.clone());
            spec.owner_grace = spec.owner_grace.or(Some(*grace));
        }
        Ok(())
    }
}

/// The command a spec runs, as the policy of a front end sees it before
/// anything else is read.
pub fn command_of(a: &Asked) -> Option<Command> {
    match (&a.command, &a.argv) {
        (Some(line), None) => Some(Command::Shell(line.clone())),
        (None, Some(argv)) if !argv.is_empty() => Some(Command::Argv(argv.clone())),
        _ => None,
    }
}
