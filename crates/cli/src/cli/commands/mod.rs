//! What each command does.

use std::fmt::Write as _;
use std::io::{IsTerminal, Read, Write};
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use super::enough_if_gone;
use bpm_domain::{
    Command as Cmd, ListFilter, OsText, Percent, ProcessId, ProcessKind, ProcessName,
    ProcessRecord, ProcessSpec, Span, StateName, Timestamp, metadata_from_json,
};
use bpm_intake::request::{self, Submitted, Wanted};
use bpm_intake::view::record_json;
use bpm_intake::{Amount, Asked, Context, HealthAsked, Spelling};
use bpm_ports::{Cursor, ManagerError, OutputQuery, StopOptions, Stream, StreamSelect};
use clap::CommandFactory;

use super::error::{CliError, Outcome, exit_code_of};
use super::resolve::{resolve, resolve_to_record};
use super::table::{color_on, now};
use super::{
    Cli, Command, DaemonAction, DaemonArgs, FenceAction, LogsArgs, Manager, PsArgs, RunArgs,
    StopArgs, table,
};
use crate::daemon;
use crate::home::Home;
use crate::wiring::{StoreChoice, state_dir};

mod logs;
mod run;
mod serve;
mod show;

#[allow(clippy::wildcard_imports)]
use logs::*;
pub use run::asked_of;
#[allow(clippy::wildcard_imports)]
use run::*;
#[allow(clippy::wildcard_imports)]
use show::*;

fn json<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string_pretty(value).unwrap_or_default()
}

fn span(text: &str, what: &str) -> Result<Span, CliError> {
    text.parse()
        .map_err(|e| CliError::invalid(format!("{what}: {e}")))
}

fn secs(value: f64, what: &str) -> Result<Span, CliError> {
    if !value.is_finite() || value < 0.0 {
        return Err(CliError::invalid(format!(
            "{what}: invalid duration {value}: expected a number of seconds"
        )));
    }
    span(&value.to_string(), what)
}

/// `--env K=V` as bytes: a name, then anything.
fn env_var(text: &std::ffi::OsStr) -> Result<(OsText, OsText), CliError> {
    use std::os::unix::ffi::OsStrExt as _;
    let bytes = text.as_bytes();
    match bytes.iter().position(|b| *b == b'=') {
        Some(at) => Ok((
            OsText::from_bytes(&bytes[..at]),
            OsText::from_bytes(&bytes[at + 1..]),
        )),
        None => Err(CliError::invalid(format!(
            "invalid --env {:?}: expected K=V",
            OsText::from(text)
        ))),
    }
}

fn key_value(text: &str, what: &str) -> Result<(String, String), CliError> {
    text.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| CliError::invalid(format!("invalid {what} {text:?}: expected K=V")))
}

/// Runs one parsed command line.
pub async fn dispatch(cli: Cli) -> ExitCode {
    let home = Home::new(cli.home.clone().unwrap_or_else(state_dir));
    let result = match cli.command {
        Command::Daemon(args) => daemon_command(&home, args).await,
        Command::Nodes { json } => super::nodes::print_nodes(&home, json)
            .await
            .map(|()| ExitCode::SUCCESS)
            .map_err(|e| CliError::failed(format!("{e:#}"))),
        Command::Keeper { store } => match store.map(|s| s.parse::<StoreChoice>()).transpose() {
            Ok(choice) => crate::keeper::run(&home, choice)
                .await
                .map(|()| ExitCode::SUCCESS)
                .map_err(|e| CliError::failed(format!("{e:#}"))),
            Err(e) => Err(CliError::invalid(e)),
        },
        c @ (Command::Mcp { .. } | Command::McpRun { .. } | Command::McpHub { .. }) => {
            serve::mcp_command(&home, c).await
        }
        Command::Web {
            listen,
            read_only,
            open,
        } => {
            let flags = crate::web::WebFlags {
                listen,
                read_only,
                open,
            };
            crate::web::run(&home, flags)
                .await
                .map(|()| ExitCode::SUCCESS)
                .map_err(|e| CliError::failed(format!("{e:#}")))
        }
        Command::Ready { status } => bpm_adapters::os::notify_ready(status.as_deref())
            .map(|()| ExitCode::SUCCESS)
            .map_err(CliError::invalid),
        Command::Completions { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "bpm", &mut std::io::stdout());
            Ok(ExitCode::SUCCESS)
        }
        Command::Agents { action } => super::agents::agents(&action),
        Command::Man => {
            let mut page = Vec::new();
            clap_mangen::Man::new(Cli::command())
                .render(&mut page)
                .map(|()| {
                    enough_if_gone(std::io::Write::write_all(
                        &mut std::io::stdout().lock(),
                        &page,
                    ));
                    ExitCode::SUCCESS
                })
                .map_err(|e| CliError::failed(format!("cannot render the man page: {e}")))
        }
        other => match daemon::connect_or_start(&home).await {
            Ok(client) => command(&home, &(Arc::new(client) as Manager), other).await,
            Err(e) => Err(CliError::from(e)),
        },
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            let color = color_on(std::io::stderr().is_terminal());
            let prefix = if color { "\x1b[31mbpm:\x1b[0m" } else { "bpm:" };
            eprintln!("{prefix} {}", e.message);
            ExitCode::from(e.code)
        }
    }
}

async fn daemon_command(home: &Home, args: DaemonArgs) -> Outcome {
    match args.action {
        None => {
            let store = args
                .store
                .map(|s| s.parse::<StoreChoice>())
                .transpose()
                .map_err(CliError::invalid)?;
            daemon::run(home, store, Some(crate::mcp::beside_the_daemon(home)))
                .await
                .map_err(|e| CliError::failed(format!("{e:#}")))?;
            Ok(ExitCode::SUCCESS)
        }
        Some(DaemonAction::Status) => {
            let s = daemon::status(home).await?;
            out!(
                "pid      {}\nversion  {}\nstore    {}\nnode     {}\nhome     {}",
                s.pid,
                s.version,
                s.store,
                s.node,
                s.home
            );
            if let Some(keeper) = &s.keeper {
                out!("keeper   {keeper}");
            }
            if let Some(cluster) = &s.cluster {
                out!("cluster  {cluster}");
            }
            let counts: Vec<String> = s.counts.iter().map(|(k, v)| format!("{k} {v}")).collect();
            out!(
                "records  {}",
                if counts.is_empty() {
                    "none".into()
                } else {
                    counts.join(", ")
                }
            );
            for warning in &s.warnings {
                out!("warning  {warning}");
            }
            Ok(ExitCode::SUCCESS)
        }
        Some(DaemonAction::Stop { kill_all }) => {
            let pid = daemon::stop(home, kill_all).await?;
            if kill_all {
                out!("stopped bpm's daemon (pid {pid}) and every process it ran");
            } else {
                out!(
                    "stopped bpm's daemon (pid {pid}); its processes run on, and the next daemon takes them back"
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Some(DaemonAction::Install) => super::unit::install(home),
        Some(DaemonAction::Uninstall) => super::unit::uninstall(),
    }
}

/// `bpm fence check`: exit 0 while the token is current, 1 (saying why)
/// once it is stale.
async fn fence_check(m: &Manager, token: Option<u64>, id: Option<String>) -> Outcome {
    let from_env = |name: &str| {
        std::env::var(name).map_err(|_| CliError {
            code: 2,
            message: format!(
                "no {name} in the environment: give it (bpm sets it for the processes it runs)"
            ),
        })
    };
    let token = match token {
        Some(t) => t,
        None => from_env("BPM_FENCE")?
            .parse()
            .map_err(|e| CliError::invalid(format!("BPM_FENCE: {e}")))?,
    };
    let id = match id {
        Some(id) => resolve(m, &id).await?,
        None => from_env("BPM_PROCESS_ID")?
            .parse()
            .map_err(|e| CliError::invalid(format!("BPM_PROCESS_ID: {e}")))?,
    };
    match m.check_fence(id, token).await? {
        None => Ok(ExitCode::SUCCESS),
        Some(why) => {
            eprintln!("bpm: fence {token} is stale: {why}");
            Ok(ExitCode::from(1))
        }
    }
}

/// What `record`, pending on its node, waits for: its dependencies, its
/// delay or backoff, or a slot (by the limits in `home`'s config.toml);
/// `None` when it is not pending or only its turn holds it.
async fn why_pending(home: &Home, m: &Manager, record: &ProcessRecord) -> Option<String> {
    if !record.state().is_queued() {
        return None;
    }
    let limits = crate::config::Config::load(&home.dir).ok()?.limits;
    let mut others = m
        .list(ListFilter {
            node: Some(record.node().clone()),
            states: StateName::LIVE.to_vec(),
            ..ListFilter::default()
        })
        .await
        .ok()?;
    for dependency in &record.spec().dependencies {
        if !others.iter().any(|o| o.id() == *dependency)
            && let Ok(d) = m.get(*dependency).await
        {
            others.push(d);
        }
    }
    limits.why_pending(record, &others, now())
}

async fn command(home: &Home, m: &Manager, command: Command) -> Outcome {
    match command {
        Command::Run(args) => run(home, m, *args).await,
        Command::Ps(args) => ps(m, args).await,
        Command::Show { id, json: as_json } => show_command(home, m, &id, as_json).await,
        Command::Logs(args) if args.archived => archived(home, m, &args).await,
        Command::Logs(args) => logs(m, args).await,
        Command::Up(args) => super::project::up(home, m, args).await,
        Command::Down(args) => super::project::down(home, m, args).await,
        Command::Scale(args) => super::project::scale(home, m, args).await,
        Command::Stop(args) => stop(m, args).await,
        Command::Pause { id } => {
            let r = m.pause(resolve(m, &id).await?).await?;
            out!("{} {}", r.id(), r.state());
            Ok(ExitCode::SUCCESS)
        }
        Command::Resume { id } => {
            let r = m.resume(resolve(m, &id).await?).await?;
            out!("{} {}", r.id(), r.state());
            Ok(ExitCode::SUCCESS)
        }
        Command::Attach { id, detach_key } => {
            super::attach::attach(m, &id, detach_key.as_deref()).await
        }
        Command::Input {
            id,
            text,
            no_newline,
        } => input(m, &id, text.as_deref(), no_newline).await,
        Command::Restart {
            id,
            with_dependents,
            rolling,
        } => restart(home, m, &id, with_dependents, rolling).await,
        Command::Wait {
            ids,
            mut label,
            session,
            project,
            timeout,
            any,
        } => {
            let mut ids = resolve_all(m, &ids).await?;
            if let Some(p) = project.map(super::project::named_or_here).transpose()? {
                label.push(format!("{}={p}", bpm_domain::project::PROJECT_LABEL));
            }
            if !label.is_empty() || session.is_some() {
                ids.extend(live_matching(m, &label, session.as_deref()).await?);
            }
            wait(m, &ids, timeout, any).await
        }
        Command::Rm { ids } => {
            for text in ids {
                m.remove(resolve(m, &text).await?).await?;
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Clean { state, older_than } => clean(m, &state, older_than.as_deref()).await,
        Command::Events { follow } => events(m, follow).await,
        Command::Track {
            name,
            session,
            parent,
            metadata,
        } => track(m, name, session, parent, metadata).await,
        Command::Fence {
            action: FenceAction::Check { token, id },
        } => fence_check(m, token, id).await,
        Command::Progress {
            id,
            percent,
            message,
        } => {
            let pct = Percent::from_f64(percent).map_err(|e| CliError::invalid(e.to_string()))?;
            m.progress(resolve(m, &id).await?, pct, message).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Complete { id, result } => {
            let result = result
                .map(|r| {
                    serde_json::from_str(&r)
                        .map_err(|e| CliError::invalid(format!("invalid --result JSON: {e}")))
                })
                .transpose()?;
            let c = m.complete(resolve(m, &id).await?, result).await?;
            Ok(report_completion(&c))
        }
        Command::Fail { id, message } => {
            let c = m.fail(resolve(m, &id).await?, message).await?;
            Ok(report_completion(&c))
        }
        Command::Top {
            interval,
            iterations,
        } => super::top::top(m, interval, iterations).await,
        Command::Tui { read_only } => super::tui::tui(m, read_only).await,
        Command::Daemon(_)
        | Command::Ready { .. }
        | Command::Completions { .. }
        | Command::Agents { .. }
        | Command::Man
        | Command::Keeper { .. }
        | Command::Nodes { .. }
        | Command::Mcp { .. }
        | Command::McpRun { .. }
        | Command::McpHub { .. }
        | Command::Web { .. } => {
            unreachable!("handled before connecting")
        }
    }
}

/// `bpm show ID`: the record in full, what it waits for, and its earlier
/// runs; as JSON with `--json`.
async fn show_command(home: &Home, m: &Manager, id: &str, as_json: bool) -> Outcome {
    let r = resolve_to_record(m, id).await?;
    let usage = usage_of(m, std::slice::from_ref(&r)).await;
    let usage = usage.get(&r.id());
    let waiting = match super::nodes::why_waiting(home, &r).await {
        Some(why) => Some(why),
        None => why_pending(home, m, &r).await,
    };
    let earlier = earlier_runs(m, &r).await;
    if as_json {
        let mut v = record_json(&r);
        bpm_intake::view::add_usage(&mut v, usage);
        if let Some(why) = waiting {
            v["waiting"] = why.into();
        }
        if !earlier.is_empty() {
            v["earlier_runs"] = earlier.iter().map(earlier_json).collect();
        }
        out!("{}", json(&v));
    } else {
        let mut text = show(&r, usage);
        if let Some(why) = waiting {
            let _ = writeln!(text, "{:<14}{why}", "waiting");
        }
        for (i, e) in earlier.iter().enumerate() {
            let label = if i == 0 { "earlier runs" } else { "" };
            let _ = writeln!(text, "{label:<14}{}", earlier_line(e));
        }
        print_text(&text);
    }
    Ok(ExitCode::SUCCESS)
}

/// `bpm input ID [TEXT]`: types into a process (standard input when no
/// text, or `-`).
async fn input(m: &Manager, id: &str, text: Option<&str>, no_newline: bool) -> Outcome {
    let data = match text {
        None | Some("-") => {
            let mut all = Vec::new();
            std::io::stdin()
                .read_to_end(&mut all)
                .map_err(|e| CliError::failed(format!("cannot read standard input: {e}")))?;
            all
        }
        Some(t) if no_newline => t.as_bytes().to_vec(),
        Some(t) => format!("{t}\n").into_bytes(),
    };
    m.send_input(resolve(m, id).await?, data).await?;
    Ok(ExitCode::SUCCESS)
}

/// `bpm restart ID`: a new record; a project's service through its project.
async fn restart(
    home: &Home,
    m: &Manager,
    id: &str,
    with_dependents: bool,
    rolling: bool,
) -> Outcome {
    let record = resolve_to_record(m, id).await?;
    // A project's service goes through its project, so that what
    // depends on it follows the new record.
    if let Some(done) = super::project::restart(home, m, &record, with_dependents, rolling).await {
        return done;
    }
    if rolling {
        return super::project::roll(m, &record).await;
    }
    if with_dependents {
        return Err(CliError::invalid(format!(
            "{id} is no project's service: --with-dependents restarts a service of a project (bpm up) and what depends on it"
        )));
    }
    let r = m.restart(record.id()).await?;
    out!("{}", r.id());
    Ok(ExitCode::SUCCESS)
}

/// `bpm track NAME`: a record with no process, for work reported by hand.
async fn track(
    m: &Manager,
    name: String,
    session: Option<String>,
    parent: Option<String>,
    metadata: Option<String>,
) -> Outcome {
    let mut spec =
        ProcessSpec::tracked(ProcessName::new(name).map_err(|e| CliError::invalid(e.to_string()))?);
    spec.session = session
        .map(|s| s.parse())
        .transpose()
        .map_err(|e: bpm_domain::NameError| CliError::invalid(e.to_string()))?;
    if let Some(p) = parent {
        spec.parent = Some(resolve(m, &p).await?);
    }
    if let Some(text) = metadata {
        spec.metadata = parse_metadata(&text)?;
    }
    out!("{}", m.track(spec).await?.id());
    Ok(ExitCode::SUCCESS)
}

/// Completing or failing a finished record changes nothing; say so on stderr.
fn report_completion(c: &bpm_ports::Completion) -> ExitCode {
    if c.no_op {
        eprintln!(
            "bpm: {} had already ended {}; nothing changed",
            c.record.id(),
            c.record.state()
        );
    }
    ExitCode::SUCCESS
}

/// Says on stderr how many bytes bpm had to drop, once each time the count
/// grows past `told`.
fn tell_dropped(told: &mut u64, dropped: u64) {
    if dropped > *told {
        let _ = writeln!(
            std::io::stderr(),
            "bpm: [{dropped} bytes of output were dropped: bpm could not store them (a full disk, or its store out of reach)]"
        );
        *told = dropped;
    }
}

/// Copies output from `cursor` on: to stdout (and stderr, when `split`), until
/// the process ends when `follow`, else until what is there now is printed.
/// Drops past `told` bytes are reported. While following, the daemon says
/// when more was written, and the record's end wakes the copy at once:
/// `run --wait` returns as soon as the end is known.
async fn copy_output(
    m: &Manager,
    id: ProcessId,
    mut cursor: Cursor,
    stream: StreamSelect,
    follow: bool,
    split: bool,
    mut told: u64,
) -> Result<(), CliError> {
    let mut out = std::io::stdout();
    let mut err = std::io::stderr();
    // Made before the first look, so that no end falls between a look and the wait.
    let mut events = follow.then(|| m.subscribe());
    loop {
        let finished = !follow || m.get(id).await?.is_terminal();
        let query = OutputQuery {
            stream,
            cursor: Some(cursor),
            max_bytes: 1 << 20,
            tail_lines: None,
        };
        let chunk = m.read_output(id, query).await?;
        if chunk.skipped > 0 {
            let _ = writeln!(
                err,
                "bpm: [{} bytes skipped: dropped before they could be read]",
                chunk.skipped
            );
        }
        tell_dropped(&mut told, chunk.dropped);
        for piece in &chunk.pieces {
            match piece.stream {
                Stream::Stderr if split => {
                    let _ = err.write_all(&piece.data);
                }
                _ => {
                    enough_if_gone(out.write_all(&piece.data));
                }
            }
        }
        enough_if_gone(out.flush());
        cursor = chunk.next;
        if chunk.truncated {
            continue;
        }
        if finished {
            return Ok(());
        }
        let more = bpm_intake::more_output(m.as_ref(), id, cursor, bpm_intake::FOLLOW_WITHIN);
        match events.as_mut() {
            Some(events) => {
                tokio::select! {
                    () = more => {}
                    () = end_of(events, id) => {}
                }
            }
            None => more.await,
        }
    }
}

/// Returns when an event says record `id` ended, or when events were missed
/// (then the caller looks for itself); never once events can no longer come.
async fn end_of(events: &mut tokio::sync::broadcast::Receiver<bpm_domain::Event>, id: ProcessId) {
    use tokio::sync::broadcast::error::RecvError;
    loop {
        match events.recv().await {
            Ok(e) if e.id == id && e.kind.ends_record() => return,
            Ok(_) => {}
            Err(RecvError::Lagged(_)) => return,
            Err(RecvError::Closed) => std::future::pending().await,
        }
    }
}

async fn filter_from(m: &Manager, args: &PsArgs) -> Result<ListFilter, CliError> {
    let mut filter = ListFilter::default();
    for s in &args.state {
        filter.states.push(s.parse().map_err(CliError::invalid)?);
    }
    if filter.states.is_empty() && !args.all {
        filter.states = StateName::LIVE.to_vec();
    }
    filter.session = args
        .session
        .as_deref()
        .map(str::parse)
        .transpose()
        .map_err(|e: bpm_domain::NameError| CliError::invalid(e.to_string()))?;
    filter.node = args
        .node
        .as_deref()
        .map(str::parse)
        .transpose()
        .map_err(|e: bpm_domain::NameError| CliError::invalid(e.to_string()))?;
    if let Some(p) = &args.parent {
        filter.parent = Some(resolve(m, p).await?);
    }
    filter.labels = label_filters(&args.label)?;
    if let Some(given) = &args.project {
        let project = super::project::named_or_here(given.clone())?;
        filter
            .labels
            .extend(bpm_intake::project::of_project(&project).labels);
    }
    filter.kind = args
        .kind
        .as_deref()
        .map(str::parse::<ProcessKind>)
        .transpose()
        .map_err(CliError::invalid)?;
    Ok(filter)
}

async fn ps(m: &Manager, a: PsArgs) -> Outcome {
    let filter = filter_from(m, &a).await?;
    // The table's usage is asked for beside the list (one connection
    // carries both), so its /proc scan adds to the wait only what it
    // takes beyond the list.
    let (listed, usage) = if a.json {
        (m.list(filter).await, Ok(Vec::new()))
    } else {
        tokio::join!(m.list(filter), m.resource_usage())
    };
    let mut records = listed?;
    // A daemon from before `usage` cannot say: the table shows dashes.
    let usage: table::Usage = usage
        .unwrap_or_default()
        .into_iter()
        .map(|u| (u.id, u))
        .collect();
    if let Some(level) = a.level {
        let all = m.list(ListFilter::default()).await?;
        let depths = table::depths(&all);
        records.retain(|r| depths.get(&r.id()) == Some(&level));
    }
    if a.json {
        print_records(&records)?;
        return Ok(ExitCode::SUCCESS);
    }
    let color = color_on(std::io::stdout().is_terminal());
    let cols = table::Columns::for_records(&records);
    let mut text = table::header(cols);
    text.push('\n');
    let now = now();
    let rows = if a.tree {
        table::tree(&records, &usage, now, color, cols)
    } else {
        records
            .iter()
            .map(|r| table::row(r, usage.get(&r.id()), now, "", color, cols))
            .collect()
    };
    for line in rows {
        text.push_str(&line);
        text.push('\n');
    }
    print_text(&text);
    if records.is_empty() && !a.all {
        // On standard error: a script that reads the table sees the same.
        eprintln!("nothing live; bpm ps --all lists the ended as well");
    }
    Ok(ExitCode::SUCCESS)
}

/// Writes `text` to standard output with one call (standard output
/// flushes at every newline, so `out!` costs a write a line).
fn print_text(text: &str) {
    enough_if_gone(std::io::Write::write_all(
        &mut std::io::stdout().lock(),
        text.as_bytes(),
    ));
}

/// What the running trees among `records` use; empty when none runs or
/// the daemon cannot say (a daemon from before `usage`).
async fn usage_of(m: &Manager, records: &[ProcessRecord]) -> table::Usage {
    if !records
        .iter()
        .any(|r| r.state().is_active() && r.pid().is_some())
    {
        return table::Usage::new();
    }
    m.resource_usage()
        .await
        .map(|all| all.into_iter().map(|u| (u.id, u)).collect())
        .unwrap_or_default()
}

/// Prints `records` as one JSON array, each record made JSON as it is
/// written (10,000 records make tens of megabytes of text).
fn print_records(records: &[ProcessRecord]) -> Result<(), CliError> {
    use std::io::Write as _;
    struct Each<'a>(&'a [ProcessRecord]);
    impl serde::Serialize for Each<'_> {
        fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            s.collect_seq(self.0.iter().map(record_json))
        }
    }
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    match serde_json::to_writer_pretty(&mut out, &Each(records))
        .map_err(std::io::Error::from)
        .and_then(|()| writeln!(out))
        .and_then(|()| out.flush())
    {
        // A reader that has seen enough (`| head`) is not a failure.
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(CliError::failed(format!("cannot write the list: {e}")))
        }
        _ => Ok(()),
    }
}

async fn logs(m: &Manager, a: LogsArgs) -> Outcome {
    let Some(text) = &a.id else {
        let name = super::project::here(
            "bpm logs without an id shows this directory's project",
            "name a process or a project (bpm logs ID)",
        )?;
        let none = CliError::not_found(format!(
            "project {name} has no processes: bring it up (bpm up)"
        ));
        return project_logs(m, &name, &a, none).await;
    };
    let id = match resolve(m, text).await {
        Ok(id) => id,
        // A project's name: every service's output, prefixed.
        Err(e) if e.code == 3 => return project_logs(m, text, &a, e).await,
        Err(e) => return Err(e),
    };
    let stream = stream_of(&a.stream)?;
    if let Some(grep) = grep_of(&a)? {
        let how = super::project::LinesAsked {
            follow: a.follow,
            lines: a.lines,
            stream,
            grep: Some(&grep),
        };
        return super::project::grep_one(m, id, &how).await;
    }
    let mut told = 0;
    let start = if let Some(n) = a.lines {
        let chunk = m
            .read_output(
                id,
                OutputQuery {
                    stream,
                    cursor: None,
                    max_bytes: 16 << 20,
                    tail_lines: Some(n),
                },
            )
            .await?;
        let mut out = std::io::stdout();
        for piece in &chunk.pieces {
            enough_if_gone(out.write_all(&piece.data));
        }
        enough_if_gone(out.flush());
        tell_dropped(&mut told, chunk.dropped);
        chunk.next
    } else {
        Cursor(a.since.unwrap_or(0))
    };
    if a.follow || a.lines.is_none() {
        copy_output(m, id, start, stream, a.follow, false, told).await?;
    }
    Ok(ExitCode::SUCCESS)
}

async fn stop(m: &Manager, a: StopArgs) -> Outcome {
    let options = StopOptions {
        force: a.force,
        grace: a.grace.map(|g| secs(g, "--grace")).transpose()?,
    };
    if let Some(level) = a.level {
        for r in m.stop_level(level, options).await? {
            out!("{} {}", r.id(), r.state());
        }
        return Ok(ExitCode::SUCCESS);
    }
    let live = StateName::LIVE.to_vec();
    let mut ids = Vec::new();
    if a.all || a.session.is_some() {
        let session = a
            .session
            .as_deref()
            .map(str::parse)
            .transpose()
            .map_err(|e: bpm_domain::NameError| CliError::invalid(e.to_string()))?;
        ids.extend(
            m.list(ListFilter {
                states: live.clone(),
                session,
                ..ListFilter::default()
            })
            .await?
            .iter()
            .map(ProcessRecord::id),
        );
    }
    for text in &a.ids {
        ids.push(resolve(m, text).await?);
    }
    if ids.is_empty() && !a.all && a.session.is_none() {
        ids.push(pick(m, live.clone()).await?);
    }
    if a.all_runs {
        // The schedules first, so that none starts a run meanwhile.
        let mut runs = Vec::new();
        let records = m
            .list(ListFilter {
                states: live,
                ..ListFilter::default()
            })
            .await?;
        for id in &ids {
            let r = m.stop(*id, options).await?;
            out!("{} {}", r.id(), r.state());
            runs.extend(
                records
                    .iter()
                    .filter(|run| run.scheduled_from() == Some(*id))
                    .map(ProcessRecord::id),
            );
        }
        ids = runs;
    }
    let mut tasks = Vec::new();
    for id in ids {
        let m = m.clone();
        tasks.push(tokio::spawn(async move { m.stop(id, options).await }));
    }
    for t in tasks {
        let r = t.await.map_err(|e| CliError::failed(e.to_string()))??;
        out!("{} {}", r.id(), r.state());
    }
    Ok(ExitCode::SUCCESS)
}

/// Offers the live processes on a terminal and reads a choice.
async fn pick(m: &Manager, live: Vec<StateName>) -> Result<ProcessId, CliError> {
    if !std::io::stdin().is_terminal() || !std::io::stderr().is_terminal() {
        return Err(CliError::invalid(
            "no process given: name one (bpm stop ID), or use --all or --session",
        ));
    }
    let records = m
        .list(ListFilter {
            states: live,
            ..ListFilter::default()
        })
        .await?;
    if records.is_empty() {
        return Err(CliError::not_found("no process is running"));
    }
    let now = now();
    let cols = table::Columns::for_records(&records);
    eprintln!("    {}", table::header(cols));
    for (i, r) in records.iter().enumerate() {
        eprintln!(
            "{:>3} {}",
            i + 1,
            table::row(r, None, now, "", color_on(true), cols)
        );
    }
    eprint!("stop which? [1-{}] ", records.len());
    let mut line = String::new();
    std::io::stdin()
        .read_line(&mut line)
        .map_err(|e| CliError::failed(e.to_string()))?;
    let n: usize = line
        .trim()
        .parse()
        .map_err(|_| CliError::invalid(format!("not a number from the list: {:?}", line.trim())))?;
    records
        .get(n.wrapping_sub(1))
        .map(ProcessRecord::id)
        .ok_or_else(|| CliError::invalid(format!("{n} is not in the list")))
}

/// The records `texts` name (ids or names).
async fn resolve_all(m: &Manager, texts: &[String]) -> Result<Vec<ProcessId>, CliError> {
    let mut ids = Vec::new();
    for t in texts {
        ids.push(resolve(m, t).await?);
    }
    Ok(ids)
}

/// The live records carrying every label of `labels` (`K=V`) and of
/// `session`; refused when none is live (nothing to wait for).
async fn live_matching(
    m: &Manager,
    labels: &[String],
    session: Option<&str>,
) -> Result<Vec<ProcessId>, CliError> {
    let filter = ListFilter {
        states: StateName::LIVE.to_vec(),
        session: session
            .map(str::parse)
            .transpose()
            .map_err(|e: bpm_domain::NameError| CliError::invalid(e.to_string()))?,
        labels: label_filters(labels)?,
        ..ListFilter::default()
    };
    let ids: Vec<ProcessId> = m
        .list(filter)
        .await?
        .iter()
        .map(ProcessRecord::id)
        .collect();
    if ids.is_empty() {
        let mut what: Vec<String> = labels.iter().map(|l| format!("--label {l}")).collect();
        what.extend(session.map(|s| format!("--session {s}")));
        return Err(CliError::invalid(format!(
            "no live process matches {}: nothing to wait for",
            what.join(" ")
        )));
    }
    Ok(ids)
}

/// `--label K=V` filters, parsed.
fn label_filters(
    labels: &[String],
) -> Result<Vec<(bpm_domain::LabelKey, bpm_domain::LabelValue)>, CliError> {
    let invalid = |e: bpm_domain::NameError| CliError::invalid(e.to_string());
    let mut out = Vec::new();
    for kv in labels {
        let (k, v) = key_value(kv, "--label")?;
        out.push((k.parse().map_err(invalid)?, v.parse().map_err(invalid)?));
    }
    Ok(out)
}

async fn wait(m: &Manager, ids: &[ProcessId], timeout: Option<f64>, any: bool) -> Outcome {
    let timeout = timeout
        .map(|t| secs(t, "--timeout"))
        .transpose()?
        .map(Span::as_duration);
    let mut ids = ids.to_vec();
    ids.sort_unstable();
    ids.dedup();
    if any {
        return wait_any(m, &ids, timeout).await;
    }
    let timed_out = |e: ManagerError| match e {
        ManagerError::WaitTimeout { id, state } => CliError {
            code: 124,
            message: format!("timed out waiting for {id}: it is still {state}"),
        },
        e => e.into(),
    };
    if let [id] = ids[..] {
        let waiting = m.wait(id, timeout);
        let r = if std::io::stderr().is_terminal() {
            with_progress_bar(m, id, waiting).await
        } else {
            waiting.await
        };
        return r.map(|r| exit_code_of(&r)).map_err(timed_out);
    }
    // Several: one call for all of them, which need not send records back.
    m.wait_many(&ids, timeout).await.map_err(timed_out)?;
    Ok(ExitCode::SUCCESS)
}

/// `bpm wait --any`: returns when the first of `ids` ends (at once if one
/// has), printing its id, with its exit code. Woken by the records' events,
/// never by polling: the subscription is made before the first look, so
/// no end falls between a look and the wait.
async fn wait_any(m: &Manager, ids: &[ProcessId], timeout: Option<Duration>) -> Outcome {
    let how = bpm_intake::Looking {
        ids,
        deadline: timeout.map(|t| tokio::time::Instant::now() + t),
        every: None,
    };
    let ended = bpm_intake::until(m.as_ref(), m.subscribe(), how, async || {
        for id in ids {
            let r = m.get(*id).await?;
            if r.is_terminal() {
                return Ok::<_, ManagerError>(Some(r));
            }
        }
        Ok(None)
    })
    .await?;
    match ended {
        Some(r) => {
            out!("{}", r.id());
            Ok(exit_code_of(&r))
        }
        None => Err(CliError {
            code: 124,
            message: format!(
                "timed out waiting for any of {} records: none has ended",
                ids.len()
            ),
        }),
    }
}

/// Draws the record's progress on stderr while `waiting` runs.
async fn with_progress_bar(
    m: &Manager,
    id: ProcessId,
    waiting: impl std::future::Future<Output = Result<ProcessRecord, ManagerError>>,
) -> Result<ProcessRecord, ManagerError> {
    let draw = async {
        loop {
            if let Ok(r) = m.get(id).await
                && let Some(p) = r.progress()
            {
                let done = usize::from(p.percent.get()) / 5;
                let eta = p
                    .eta
                    .map(|e| format!(" eta {}", table::short_duration(e.saturating_since(now()))))
                    .unwrap_or_default();
                eprint!(
                    "\r[{}{}] {:>3}% {}{eta}\x1b[K",
                    "#".repeat(done),
                    ".".repeat(20 - done),
                    p.percent.get(),
                    p.message.clone().unwrap_or_default()
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    let result = tokio::select! {
        r = waiting => r,
        () = draw => unreachable!("the drawing loop never ends"),
    };
    eprint!("\r\x1b[K");
    result
}

async fn clean(m: &Manager, states: &[String], older_than: Option<&str>) -> Outcome {
    let mut filter = ListFilter::default();
    for s in states {
        let state: StateName = s.parse().map_err(CliError::invalid)?;
        if !state.is_terminal() {
            return Err(CliError::invalid(format!(
                "--state {state}: only finished records can be cleaned"
            )));
        }
        filter.states.push(state);
    }
    if filter.states.is_empty() {
        filter.states = ListFilter::finished().states;
    }
    let cutoff = older_than
        .map(|t| span(t, "--older-than"))
        .transpose()?
        .map(|s| Timestamp::from_millis(now().as_millis().saturating_sub(s.as_millis())));
    let mut removed = 0;
    for r in m.list(filter).await? {
        if cutoff.is_some_and(|c| r.lifecycle().ended_at().is_some_and(|e| e > c)) {
            continue;
        }
        m.remove(r.id()).await?;
        removed += 1;
    }
    eprintln!("removed {removed} finished record(s)");
    Ok(ExitCode::SUCCESS)
}

async fn events(m: &Manager, follow: bool) -> Outcome {
    // Subscribe before reading the past, so nothing falls between the two.
    let mut rx = follow.then(|| m.subscribe());
    let mut out = std::io::stdout();
    let mut seen = std::collections::HashSet::new();
    for event in m.recent_events().await? {
        seen.insert((event.id, event.version, event.kind));
        enough_if_gone(writeln!(
            out,
            "{}",
            serde_json::to_string(&event).unwrap_or_default()
        ));
    }
    enough_if_gone(out.flush());
    let Some(rx) = rx.as_mut() else {
        return Ok(ExitCode::SUCCESS);
    };
    loop {
        match rx.recv().await {
            Ok(event) => {
                if seen.remove(&(event.id, event.version, event.kind)) {
                    continue;
                }
                enough_if_gone(writeln!(
                    out,
                    "{}",
                    serde_json::to_string(&event).unwrap_or_default()
                ));
                enough_if_gone(out.flush());
            }
            Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                eprintln!("bpm: {n} events missed");
            }
            Err(tokio::sync::broadcast::error::RecvError::Closed) => {
                return Err(CliError {
                    code: 5,
                    message: "the daemon closed the connection".into(),
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::split_words;

    #[test]
    fn words_split_as_a_shell_would_without_expansion() {
        let ok = |line: &str| -> Vec<String> {
            split_words(line.as_bytes())
                .expect("valid")
                .into_iter()
                .map(|w| String::from_utf8(w).expect("UTF-8 in, UTF-8 out"))
                .collect()
        };
        assert_eq!(ok("  a  b\tc "), ["a", "b", "c"]);
        assert_eq!(
            ok(r#"echo 'one two' "three $HOME" four\ five"#),
            ["echo", "one two", "three $HOME", "four five"]
        );
        assert_eq!(ok(r#"a"b"'c' "" x"#), ["abc", "", "x"]);
        assert_eq!(ok(r#""q\"uote\\ \n""#), [r#"q"uote\ \n"#]);
        assert!(ok("").is_empty());
        assert_eq!(
            split_words(b"echo 'open").expect_err("unterminated"),
            "unterminated single quote"
        );
        assert_eq!(
            split_words(b"echo \"open").expect_err("unterminated"),
            "unterminated double quote"
        );
        assert_eq!(
            split_words(b"echo \\").expect_err("dangling"),
            "a backslash ends the line"
        );
    }
}
