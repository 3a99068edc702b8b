//! What each tool does. A failure is a message for the agent (the tool result
//! has `isError: true`), never a protocol error.

use std::fmt::Write as _;
use std::str::FromStr;
use std::sync::PoisonError;
use std::time::{Duration, Instant};

use bpm_domain::{
    EventKind, ExitStatus, ListFilter, Percent, ProcessId, ProcessName, ProcessRecord, ProcessSpec,
    Span,
};
use bpm_ports::{Cursor, ManagerError, OutputChunk, OutputQuery, StopOptions, StreamSelect};
use regex::Regex;
use rmcp::RoleServer;
use rmcp::model::ProgressNotificationParam;
use rmcp::service::RequestContext;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::inputs::{
    ChangedArgs, CompleteArgs, FailArgs, IdArgs, InputArgs, ListArgs, OutputArgs, ProgressArgs,
    StopArgs, StreamArg, TrackArgs, UntilArg, WaitArgs,
};
use super::policy::redact_text;
use super::{McpServer, Reply, schemas};
use bpm_intake::view::{record_json, record_json_redacted};
use bpm_intake::{Asked, Context, ResolveError, resolve_id};

type ToolResult = Result<Reply, String>;

const DEFAULT_OUTPUT_BYTES: usize = 16 * 1024;
const TAIL_LINES: usize = 20;
const TAIL_BYTES: usize = 4 * 1024;
const DEFAULT_WAIT: Duration = Duration::from_mins(1);
const MAX_WAIT: Duration = Duration::from_hours(1);
const DEFAULT_LIST: usize = 100;
const MAX_LIST: usize = 500;
/// How many changes `what_changed` returns by default, and at most.
const CHANGES_DEFAULT: usize = 20;
const CHANGES_MAX: usize = 100;

fn parse<T: DeserializeOwned>(tool: &str, args: Value) -> Result<T, String> {
    serde_json::from_value(args).map_err(|e| format!("invalid arguments for {tool}: {e}"))
}

/// A `node` argument: a node's name, or an error that says what is wrong with it.
fn node_arg(node: Option<String>) -> Result<Option<bpm_domain::NodeId>, String> {
    node.map(|n| n.parse())
        .transpose()
        .map_err(|e: bpm_domain::NameError| format!("node: {e}"))
}

#[allow(clippy::needless_pass_by_value)] // shaped for map_err
fn manager_error(e: ManagerError) -> String {
    e.to_string()
}

fn seconds(value: f64, what: &str) -> Result<Duration, String> {
    Duration::try_from_secs_f64(value)
        .map_err(|_| format!("invalid {what} {value}: expected a non-negative number of seconds"))
}

fn span(value: f64, what: &str) -> Result<Span, String> {
    Span::new(seconds(value, what)?).map_err(|e| format!("invalid {what} {value}: {e}"))
}

/// The domain value an argument names: the argument enums mirror the domain's
/// (for their JSON schemas) and spell every variant as the domain parses it.
fn named<A: Serialize, B: FromStr<Err = String>>(arg: A) -> Result<B, String> {
    match serde_json::to_value(arg) {
        Ok(Value::String(name)) => name.parse(),
        other => Err(format!("not a name: {other:?}")),
    }
}

fn select_of(s: StreamArg) -> StreamSelect {
    match s {
        StreamArg::Stdout => StreamSelect::Stdout,
        StreamArg::Stderr => StreamSelect::Stderr,
        StreamArg::Both => StreamSelect::Both,
    }
}

/// `text` cut to its last `max` bytes (at a character boundary).
fn last_bytes(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut start = text.len() - max;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    &text[start..]
}

impl McpServer {
    pub(super) async fn call(
        &self,
        name: &str,
        args: Value,
        ctx: &RequestContext<RoleServer>,
    ) -> ToolResult {
        let Some(info) = schemas::TOOLS.iter().find(|t| t.tool.name == name) else {
            return Err(format!("unknown tool {name:?}"));
        };
        if info.mutating && self.inner.policy.read_only {
            return Err(format!(
                "{name} is disabled: this bpm mcp server is read-only (it may list, read and wait, not start, stop or send input)"
            ));
        }
        match name {
            "start_background_process" => self.start(parse(name, args)?).await,
            "get_background_process_status" => {
                let a: IdArgs = parse(name, args)?;
                let r = self.manager().get(self.id(&a.process_id).await?).await;
                let r = r.map_err(manager_error)?;
                let mut v = self.view(&r);
                let usage = if r.state().is_active() {
                    self.manager().resource_usage().await.unwrap_or_default()
                } else {
                    Vec::new()
                };
                bpm_intake::view::add_usage(&mut v, usage.iter().find(|u| u.id == r.id()));
                Ok(Reply::json(v))
            }
            "list_background_processes" => self.list(parse(name, args)?).await,
            "get_process_output" => self.output(parse(name, args)?).await,
            "wait_for_process" => self.wait(parse(name, args)?, ctx).await,
            "what_changed" => self.what_changed(parse(name, args)?).await,
            "project_up" => self.project_up(parse(name, args)?).await,
            "project_down" => self.project_down(parse(name, args)?).await,
            "project_scale" => self.project_scale(parse(name, args)?).await,
            "project_status" => self.project_status(parse(name, args)?).await,
            "stop_background_process" => self.stop(parse(name, args)?).await,
            "pause_background_process" => {
                let a: IdArgs = parse(name, args)?;
                let r = self.manager().pause(self.id(&a.process_id).await?).await;
                Ok(Reply::json(self.view(&r.map_err(manager_error)?)))
            }
            "resume_background_process" => {
                let a: IdArgs = parse(name, args)?;
                let r = self.manager().resume(self.id(&a.process_id).await?).await;
                Ok(Reply::json(self.view(&r.map_err(manager_error)?)))
            }
            "restart_background_process" => {
                let a: IdArgs = parse(name, args)?;
                let id = self.id(&a.process_id).await?;
                let old = self.manager().get(id).await.map_err(manager_error)?;
                // A restart runs the record's spec again: it passes the
                // policy as a start would, whoever started it first.
                self.inner
                    .policy
                    .check_spec(old.spec(), &self.inner.defaults.env)?;
                let r = self.manager().restart(id).await;
                Ok(Reply::json(self.view(&r.map_err(manager_error)?)))
            }
            "send_process_input" => self.input(parse(name, args)?).await,
            "track_operation" => self.track(parse(name, args)?).await,
            "update_operation_progress" => {
                let a: ProgressArgs = parse(name, args)?;
                let percent = Percent::from_f64(a.progress)
                    .map_err(|e| format!("invalid progress {}: {e}", a.progress))?;
                let id = self.id(&a.process_id).await?;
                let r = self.manager().progress(id, percent, a.message).await;
                Ok(Reply::json(self.view(&r.map_err(manager_error)?)))
            }
            "complete_operation" => {
                let a: CompleteArgs = parse(name, args)?;
                let id = self.id(&a.process_id).await?;
                let c = self
                    .manager()
                    .complete(id, a.result)
                    .await
                    .map_err(manager_error)?;
                Ok(Reply::json(
                    json!({ "process": self.view(&c.record), "no_op": c.no_op }),
                ))
            }
            "fail_operation" => {
                let a: FailArgs = parse(name, args)?;
                let id = self.id(&a.process_id).await?;
                let c = self
                    .manager()
                    .fail(id, a.error)
                    .await
                    .map_err(manager_error)?;
                Ok(Reply::json(
                    json!({ "process": self.view(&c.record), "no_op": c.no_op }),
                ))
            }
            other => Err(format!("unknown tool {other:?}")),
        }
    }

    pub(crate) async fn id(&self, text: &str) -> Result<ProcessId, String> {
        resolve_id(self.manager(), text).await.map_err(|e| match e {
            ResolveError::NotFound(text) => {
                format!("unknown process id {text:?}: no process has this id, prefix or name")
            }
            other => other.to_string(),
        })
    }

    fn view(&self, record: &ProcessRecord) -> Value {
        if self.inner.policy.redact_env {
            record_json_redacted(record)
        } else {
            record_json(record)
        }
    }

    /// The last lines of a process's output, redacted, for answers that end a wait or a stop.
    pub(super) async fn tail(&self, record: &ProcessRecord) -> String {
        let query = OutputQuery {
            stream: StreamSelect::Both,
            cursor: None,
            max_bytes: TAIL_BYTES,
            tail_lines: Some(TAIL_LINES),
        };
        match self.manager().read_output(record.id(), query).await {
            Ok(chunk) => redact_text(
                &chunk.text(),
                &self
                    .inner
                    .policy
                    .secrets_of(record, &*self.inner.defaults.machine),
            ),
            Err(e) => format!("(output unavailable: {e})"),
        }
    }

    /// What ended, became ready, left its node's reach, or had its leader
    /// exit since this client's last call, with each one's exit, reason
    /// and (for ends) the last lines of its output.
    async fn what_changed(&self, a: ChangedArgs) -> ToolResult {
        let session = a
            .session
            .map(|s| s.parse())
            .transpose()
            .map_err(|e: bpm_domain::NameError| format!("invalid session: {e}"))?;
        let limit = a.limit.unwrap_or(CHANGES_DEFAULT);
        if !(1..=CHANGES_MAX).contains(&limit) {
            return Err(format!("invalid limit {limit}: from 1 to {CHANGES_MAX}"));
        }
        let taken = self.inner.changes.take(limit, session.as_ref());
        let mut changes = Vec::with_capacity(taken.changes.len());
        for e in &taken.changes {
            let mut change = json!({
                "process_id": e.id,
                "name": e.name,
                "change": e.kind,
                "state": e.state,
                "at": e.at,
                "exit_code": e.exit.and_then(ExitStatus::code),
                "signal": e.exit.and_then(ExitStatus::signal),
                "reason": e.error,
            });
            if (e.kind.ends_record() || e.kind == EventKind::LeaderExited)
                && let Ok(record) = self.manager().get(e.id).await
            {
                change["output_tail"] = json!(self.tail(&record).await);
                if let Some(x) = record.leader_exit() {
                    change["leader_exit"] = json!(x.to_string());
                }
            }
            changes.push(change);
        }
        Ok(Reply::json(json!({
            "count": changes.len(),
            "changes": changes,
            "left_out": taken.left_out,
            "overflowed": taken.overflowed,
        })))
    }

    async fn start(&self, a: Asked) -> ToolResult {
        let policy = &self.inner.policy;
        if let Some(command) = bpm_intake::command_of(&a) {
            policy.check_command(&command)?;
        }
        let mut ids = std::collections::BTreeMap::new();
        for r in a.references() {
            ids.insert(r.to_owned(), self.id(r).await?);
        }
        let defaults = &self.inner.defaults;
        let mut spec = {
            let may_read = |what: &str, path: &std::path::Path| policy.check_path(what, path);
            let mut ctx = Context::new(&defaults.cwd, &defaults.env, &*defaults.machine);
            ctx.ids = ids;
            ctx.files_from_cwd = true;
            ctx.may_read = &may_read;
            ctx.time_zone = Some(&defaults.time_zone);
            ctx.now = Some(now());
            ctx.owner = defaults
                .owner
                .as_ref()
                .map(|o| (bpm_domain::Owner::Session(o.session.clone()), o.grace));
            a.into_spec(&ctx).map_err(|e| e.to_string())?
        };
        // A request of its own, to tell a new record from the live one
        // `ensure` answers with.
        let request = uuid::Uuid::now_v7();
        spec.request = Some(bpm_domain::RequestRef {
            id: request,
            index: 0,
        });
        // Everything the spec would run or read, as a whole: the fields
        // above each add something the policy must see.
        policy.fold_env_files(&mut spec, &*defaults.machine)?;
        policy.check_spec(&spec, &defaults.env)?;
        let record = self.manager().start(spec).await.map_err(manager_error)?;
        let mut v = self.view(&record);
        if record.spec().request.is_none_or(|r| r.id != request)
            && let Some(obj) = v.as_object_mut()
        {
            obj.insert("reused".into(), serde_json::Value::Bool(true));
        }
        Ok(Reply::json(v))
    }

    async fn list(&self, a: ListArgs) -> ToolResult {
        let mut filter = ListFilter::default();
        if let Some(s) = a.state {
            filter.states.push(named(s)?);
        }
        filter.session = a
            .session
            .map(|s| s.parse())
            .transpose()
            .map_err(|e: bpm_domain::NameError| e.to_string())?;
        filter.kind = a.kind.map(named).transpose()?;
        if let Some(label) = a.label {
            let (k, v) = label
                .split_once('=')
                .ok_or_else(|| format!("invalid label {label:?}: expected KEY=VALUE"))?;
            filter.labels.push((
                k.parse()
                    .map_err(|e: bpm_domain::NameError| e.to_string())?,
                v.parse()
                    .map_err(|e: bpm_domain::NameError| e.to_string())?,
            ));
        }
        if let Some(p) = a.parent {
            filter.parent = Some(self.id(&p).await?);
        }
        filter.node = node_arg(a.node)?;
        let limit = a.limit.unwrap_or(DEFAULT_LIST);
        if limit == 0 || limit > MAX_LIST {
            return Err(format!("invalid limit {limit}: expected 1 to {MAX_LIST}"));
        }
        let mut records = self.manager().list(filter).await.map_err(manager_error)?;
        let more = records.len() > limit;
        // Newest first: ids are time-ordered.
        records.reverse();
        records.truncate(limit);
        let mut text = String::new();
        if records.is_empty() {
            text.push_str("no processes match\n");
        }
        for r in &records {
            let status = match r.lifecycle().exit() {
                Some(exit) => format!("{} ({exit})", r.state()),
                None => r.state().to_string(),
            };
            let progress = r
                .progress()
                .map(|p| format!(" {}%", p.percent.get()))
                .unwrap_or_default();
            let command = r
                .spec()
                .command
                .as_ref()
                .map_or_else(|| "(tracked)".to_owned(), ToString::to_string);
            let _ = writeln!(
                text,
                "{}  {:<16} {:<20} pid {:<8} {}{}",
                r.id(),
                r.spec().name.as_ref().map_or("-", |n| n.as_str()),
                status,
                r.pid().map_or_else(|| "-".to_owned(), |p| p.to_string()),
                last_bytes(&command, 60),
                progress
            );
        }
        if more {
            let _ = writeln!(text, "(more match; raise limit or filter)");
        }
        let views: Vec<Value> = records.iter().map(|r| self.view(r)).collect();
        Ok(Reply {
            structured: json!({ "processes": views, "count": records.len(), "more": more }),
            text: Some(text),
        })
    }

    async fn output(&self, a: OutputArgs) -> ToolResult {
        if a.cursor.is_some() && a.tail_lines.is_some() {
            return Err("give cursor or tail_lines, not both".into());
        }
        let id = self.id(&a.process_id).await?;
        let record = self.manager().get(id).await.map_err(manager_error)?;
        let cap = self.inner.policy.max_output_bytes;
        let max_bytes = a.max_bytes.unwrap_or(DEFAULT_OUTPUT_BYTES.min(cap));
        if max_bytes == 0 {
            return Err("invalid max_bytes 0: expected at least 1".into());
        }
        let max_bytes = max_bytes.min(cap);
        let grep = a
            .grep
            .as_deref()
            .map(Regex::new)
            .transpose()
            .map_err(|e| format!("invalid grep regex: {e}"))?;
        let stream = select_of(a.stream);
        let key = (id, stream);
        let remembered = self
            .inner
            .cursors
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&key)
            .copied();
        let start = if a.tail_lines.is_some() {
            None
        } else {
            Some(a.cursor.map_or(remembered.unwrap_or(Cursor(0)), Cursor))
        };
        let query = OutputQuery {
            stream,
            cursor: start,
            max_bytes,
            tail_lines: a.tail_lines,
        };
        let chunk = self
            .manager()
            .read_output(id, query)
            .await
            .map_err(manager_error)?;
        {
            let mut cursors = self
                .inner
                .cursors
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let seen = cursors.entry(key).or_insert(chunk.next);
            *seen = (*seen).max(chunk.next);
        }
        let from = start.unwrap_or_else(|| {
            chunk
                .pieces
                .first()
                .map_or(chunk.next, |p| Cursor(p.offset))
        });
        Ok(Reply::json(self.output_view(
            &record,
            &chunk,
            from,
            grep.as_ref(),
        )))
    }

    fn output_view(
        &self,
        record: &ProcessRecord,
        chunk: &OutputChunk,
        from: Cursor,
        grep: Option<&Regex>,
    ) -> Value {
        let bytes: usize = chunk.pieces.iter().map(|p| p.data.len()).sum();
        let raw = redact_text(
            &chunk.text(),
            &self
                .inner
                .policy
                .secrets_of(record, &*self.inner.defaults.machine),
        );
        let (text, matched) = match grep {
            Some(re) => {
                let lines: Vec<&str> = raw.lines().filter(|l| re.is_match(l)).collect();
                let mut t = lines.join("\n");
                if !lines.is_empty() {
                    t.push('\n');
                }
                (t, Some(lines.len()))
            }
            None => (raw, None),
        };
        let mut notices = Vec::new();
        if chunk.skipped > 0 {
            notices.push(format!(
                "{} bytes before this were dropped before they could be read (by the output cap, or to make room on a full disk)",
                chunk.skipped
            ));
        }
        if chunk.dropped > 0 {
            notices.push(format!(
                "{} bytes of this process's output were dropped because bpm could not store them (a full disk, or its store out of reach)",
                chunk.dropped
            ));
        }
        if chunk.truncated {
            notices.push(format!(
                "[truncated] more output waits: read again (without a cursor, or from cursor {})",
                chunk.next.0
            ));
        }
        json!({
            "process_id": record.id(),
            "state": record.state(),
            "text": text,
            "cursor": from.0,
            "next_cursor": chunk.next.0,
            "bytes": bytes,
            "skipped_bytes": chunk.skipped,
            "dropped_bytes": chunk.dropped,
            "truncated": chunk.truncated,
            "matched_lines": matched,
            "notice": if notices.is_empty() { None } else { Some(notices.join("; ")) },
        })
    }

    async fn stop(&self, a: StopArgs) -> ToolResult {
        let id = self.id(&a.process_id).await?;
        let options = StopOptions {
            force: a.force.unwrap_or(false),
            grace: a.grace_secs.map(|g| span(g, "grace_secs")).transpose()?,
        };
        let record = self
            .manager()
            .stop(id, options)
            .await
            .map_err(manager_error)?;
        let exit = record.lifecycle().exit();
        Ok(Reply::json(json!({
            "process": self.view(&record),
            "exit_code": exit.and_then(bpm_domain::ExitStatus::code),
            "signal": exit.and_then(bpm_domain::ExitStatus::signal),
            "output_tail": self.tail(&record).await,
        })))
    }

    async fn input(&self, a: InputArgs) -> ToolResult {
        let id = self.id(&a.process_id).await?;
        let mut data = a.text.into_bytes();
        if a.newline.unwrap_or(true) {
            data.push(b'\n');
        }
        let n = data.len();
        self.manager()
            .send_input(id, data)
            .await
            .map_err(manager_error)?;
        Ok(Reply::json(json!({ "process_id": id, "bytes_written": n })))
    }

    async fn track(&self, a: TrackArgs) -> ToolResult {
        let name = ProcessName::new(a.name).map_err(|e| e.to_string())?;
        let mut spec = ProcessSpec::tracked(name);
        spec.session = a
            .session
            .map(|s| s.parse())
            .transpose()
            .map_err(|e: bpm_domain::NameError| e.to_string())?;
        if let Some(k) = a.kind {
            spec.kind = named(k)?;
        }
        if let Some(p) = a.parent {
            spec.parent = Some(self.id(&p).await?);
        }
        spec.metadata = a.metadata.unwrap_or_default();
        let record = self.manager().track(spec).await.map_err(manager_error)?;
        Ok(Reply::json(self.view(&record)))
    }

    async fn wait(&self, a: WaitArgs, ctx: &RequestContext<RoleServer>) -> ToolResult {
        let id = self.id(&a.process_id).await?;
        let timeout = a
            .timeout_secs
            .map(|t| seconds(t, "timeout_secs"))
            .transpose()?
            .unwrap_or(DEFAULT_WAIT);
        if timeout > MAX_WAIT {
            return Err(format!(
                "invalid timeout_secs {}: at most {} seconds",
                timeout.as_secs_f64(),
                MAX_WAIT.as_secs()
            ));
        }
        let mut watch = match a.until {
            UntilArg::Pattern => {
                let text = a
                    .pattern
                    .ok_or("until: pattern needs a pattern (a regular expression)")?;
                Watch::Pattern(PatternScan::new(
                    Regex::new(&text).map_err(|e| format!("invalid pattern regex: {e}"))?,
                ))
            }
            UntilArg::Idle => Watch::Idle(IdleWatch::new(
                a.idle_secs
                    .map(|s| seconds(s, "idle_secs"))
                    .transpose()?
                    .unwrap_or(Duration::from_secs(5)),
            )),
            UntilArg::Exit => Watch::Exit,
            UntilArg::Ready => Watch::Ready,
        };
        let until = match a.until {
            UntilArg::Exit => "exit",
            UntilArg::Ready => "ready",
            UntilArg::Pattern => "pattern",
            UntilArg::Idle => "idle",
        };
        let events = self.inner.manager.subscribe();
        let started = Instant::now();
        let deadline = started + timeout;
        let token = ctx.meta.get_progress_token();
        let mut last_progress: Option<Instant> = None;
        // Wake for this process's events (others' do not change the
        // answer), for its output when that is what is watched (the daemon
        // answers a wait when it writes), at the next look (progress is
        // told then), or at the deadline.
        let poll = Duration::from_millis(500);
        let ids = [id];
        let how = bpm_intake::Looking {
            ids: &ids,
            deadline: Some(deadline.into()),
            every: Some(poll),
        };
        let mut waiter = bpm_intake::Waiter::new(self.manager(), events, how);
        let (record, met, reason) = loop {
            let record = self.manager().get(id).await.map_err(manager_error)?;
            if let Some((met, reason)) = self.check(&mut watch, &record).await? {
                break (record, met, reason);
            }
            let now = Instant::now();
            if now >= deadline {
                let reason = format!(
                    "timed out after {:.1} s; the process is still {}",
                    timeout.as_secs_f64(),
                    record.state()
                );
                break (record, false, reason);
            }
            if let Some(token) = &token
                && last_progress.is_none_or(|t| now.duration_since(t) >= Duration::from_secs(1))
            {
                last_progress = Some(now);
                let elapsed = now.duration_since(started).as_secs_f64();
                let mut message = format!(
                    "waiting for {until}: {} after {elapsed:.0} s",
                    record.state()
                );
                if let Some(p) = record.progress() {
                    let _ = write!(message, ", {}%", p.percent.get());
                    if let Some(m) = &p.message {
                        let _ = write!(message, " {m}");
                    }
                }
                let param = ProgressNotificationParam::new(token.clone(), elapsed)
                    .with_total(timeout.as_secs_f64())
                    .with_message(message);
                let _ = ctx.peer.notify_progress(param).await;
            }
            let output = more_output(self.manager(), id, &watch, poll);
            tokio::select! {
                () = ctx.ct.cancelled() => return Err("the wait was cancelled".into()),
                _ = waiter.next() => {}
                () = output => {}
            }
        };
        let exit = record.lifecycle().exit();
        Ok(Reply::json(json!({
            "process_id": id,
            "until": until,
            "condition_met": met,
            "reason": reason,
            "state": record.state(),
            "exit_code": exit.and_then(bpm_domain::ExitStatus::code),
            "signal": exit.and_then(bpm_domain::ExitStatus::signal),
            "error": record.lifecycle().error(),
            "waited_ms": u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
            "output_tail": self.tail(&record).await,
        })))
    }

    /// Whether the wait is over: `Some((met, reason))`.
    async fn check(
        &self,
        watch: &mut Watch,
        record: &ProcessRecord,
    ) -> Result<Option<(bool, String)>, String> {
        let ended = record.is_terminal();
        let ended_reason = || format!("the process ended ({}) first", record.state());
        Ok(match watch {
            Watch::Exit => ended.then(|| (true, format!("the process ended: {}", record.state()))),
            Watch::Ready => {
                if record.lifecycle().ready_at().is_some() {
                    Some((true, "the process is ready".to_owned()))
                } else {
                    ended.then(|| (false, ended_reason()))
                }
            }
            Watch::Pattern(scan) => {
                let chunk = self.read_from(record.id(), scan.cursor).await?;
                scan.cursor = chunk.next;
                if let Some(line) = scan.feed(&chunk.text()) {
                    let line = redact_text(
                        &line,
                        &self
                            .inner
                            .policy
                            .secrets_of(record, &*self.inner.defaults.machine),
                    );
                    Some((true, format!("output matched: {}", last_bytes(&line, 500))))
                } else if ended && !chunk.truncated {
                    Some((false, ended_reason()))
                } else {
                    None
                }
            }
            Watch::Idle(idle) => {
                let chunk = self.read_from(record.id(), idle.cursor).await?;
                if chunk.next != idle.cursor {
                    idle.cursor = chunk.next;
                    idle.since = Instant::now();
                }
                if ended {
                    Some((false, ended_reason()))
                } else if idle.since.elapsed() >= idle.quiet {
                    Some((
                        true,
                        format!("no output for {:.1} s", idle.quiet.as_secs_f64()),
                    ))
                } else {
                    None
                }
            }
        })
    }

    async fn read_from(&self, id: ProcessId, cursor: Cursor) -> Result<OutputChunk, String> {
        let query = OutputQuery {
            stream: StreamSelect::Both,
            cursor: Some(cursor),
            max_bytes: 1 << 20,
            tail_lines: None,
        };
        self.manager()
            .read_output(id, query)
            .await
            .map_err(manager_error)
    }
}

/// Returns once what `watch` looks at in record `id`'s output may have
/// changed: more was written past its cursor, or (for idleness) its quiet
/// time came; never for a watch that reads no output. Each wait lasts at
/// most `within`, so one left behind by an earlier wake ends soon.
async fn more_output(
    m: &dyn bpm_ports::ProcessManager,
    id: ProcessId,
    watch: &Watch,
    within: Duration,
) {
    let (cursor, quiet_at) = match watch {
        Watch::Pattern(scan) => (scan.cursor, None),
        Watch::Idle(idle) => (idle.cursor, Some(idle.since + idle.quiet)),
        Watch::Exit | Watch::Ready => return std::future::pending().await,
    };
    let written = bpm_intake::more_output(m, id, cursor, within);
    match quiet_at {
        Some(at) => {
            tokio::select! {
                () = written => {}
                () = tokio::time::sleep_until(at.into()) => {}
            }
        }
        None => written.await,
    }
}

enum Watch {
    Exit,
    Ready,
    Pattern(PatternScan),
    Idle(IdleWatch),
}

/// Looks for a line matching a pattern in output that arrives in pieces.
struct PatternScan {
    re: Regex,
    cursor: Cursor,
    /// The unfinished last line so far.
    partial: String,
}

impl PatternScan {
    fn new(re: Regex) -> Self {
        PatternScan {
            re,
            cursor: Cursor(0),
            partial: String::new(),
        }
    }

    /// Feeds new text; returns the first matching line. The unfinished last
    /// line is tried too (a prompt may never end its line).
    fn feed(&mut self, text: &str) -> Option<String> {
        self.partial.push_str(text);
        let mut rest = std::mem::take(&mut self.partial);
        while let Some(nl) = rest.find('\n') {
            let line: String = rest.drain(..=nl).collect();
            let line = line.trim_end_matches(['\n', '\r']);
            if self.re.is_match(line) {
                return Some(line.to_owned());
            }
        }
        if !rest.is_empty() && self.re.is_match(&rest) {
            return Some(rest);
        }
        self.partial = rest;
        None
    }
}

struct IdleWatch {
    quiet: Duration,
    cursor: Cursor,
    since: Instant,
}

impl IdleWatch {
    fn new(quiet: Duration) -> Self {
        IdleWatch {
            quiet,
            cursor: Cursor(0),
            since: Instant::now(),
        }
    }
}

/// The time now, as the domain counts it: what a request's `at` is
/// counted from.
fn now() -> bpm_domain::Timestamp {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    bpm_domain::Timestamp::from_millis(ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pattern_is_found_across_pieces_and_in_an_unfinished_line() {
        let mut scan = PatternScan::new(Regex::new("^listening on \\d+$").expect("re"));
        assert_eq!(scan.feed("boot\nlisten"), None);
        assert_eq!(
            scan.feed("ing on 80\nmore\n").as_deref(),
            Some("listening on 80")
        );
        let mut prompt = PatternScan::new(Regex::new("> $").expect("re"));
        assert_eq!(prompt.feed("welcome\n> ").as_deref(), Some("> "));
    }

    #[test]
    fn every_argument_enum_names_its_domain_twin() {
        use super::super::inputs::{KindArg, StateArg};
        use bpm_domain::{ProcessKind, StateName};
        for state in StateName::ALL {
            let arg: StateArg = serde_json::from_value(json!(state.as_str())).expect("mirrored");
            assert_eq!(named::<_, StateName>(arg), Ok(state));
        }
        for kind in [
            "agent_session",
            "test_suite",
            "build",
            "server",
            "analysis",
            "mcp",
            "custom",
        ] {
            let arg: KindArg = serde_json::from_value(json!(kind)).expect("mirrored");
            let domain: ProcessKind = kind.parse().expect("a kind");
            assert_eq!(named::<_, ProcessKind>(arg), Ok(domain));
        }
    }

    #[test]
    fn last_bytes_cuts_at_a_character_boundary() {
        assert_eq!(last_bytes("héllo", 4), "llo");
        assert_eq!(last_bytes("abc", 10), "abc");
    }
}
