//! `bpm run`: its arguments as an `Asked`, one process or a batch from
//! a file, submitted so that a daemon's death cannot leave it half known.

#[allow(clippy::wildcard_imports)]
use super::*;

pub(super) fn parse_metadata(
    text: &str,
) -> Result<serde_json::Map<String, serde_json::Value>, CliError> {
    let value: serde_json::Value = serde_json::from_str(text)
        .map_err(|e| CliError::invalid(format!("invalid --metadata JSON: {e}")))?;
    metadata_from_json(value).map_err(|e| CliError::invalid(e.to_string()))
}

/// What `bpm run`'s arguments ask for, as every front end writes it.
///
/// # Errors
/// An `--env`, `--label`, `--node-label` or `--metadata` that does not
/// read, naming the flag.
pub fn asked_of(a: RunArgs) -> Result<Asked, String> {
    asked_of_run(a).map_err(|e| e.message)
}

pub(super) fn asked_of_run(a: RunArgs) -> Result<Asked, CliError> {
    let words = a.command.into_iter().map(OsText::from);
    let (command, argv) = if a.shell {
        (Some(shell_line(words)), None)
    } else {
        (None, Some(words.collect()))
    };
    let mut env = std::collections::BTreeMap::new();
    for kv in &a.env {
        let (k, v) = env_var(kv)?;
        env.insert(k, v);
    }
    let pairs = |list: &[String], flag| -> Result<std::collections::BTreeMap<_, _>, CliError> {
        list.iter().map(|kv| key_value(kv, flag)).collect()
    };
    let health = (a.health_http.is_some()
        || a.health_exec.is_some()
        || a.health_port.is_some()
        || a.health_every.is_some()
        || a.health_failures.is_some()
        || a.health_timeout.is_some()
        || a.health_initial_delay.is_some()
        || a.health_successes.is_some())
    .then(|| HealthAsked {
        http: a.health_http,
        exec: a.health_exec,
        port: a.health_port,
        every: a.health_every.as_deref().map(bpm_intake::Duration::from),
        failures: a.health_failures,
        timeout: a.health_timeout.as_deref().map(bpm_intake::Duration::from),
        initial_delay: a
            .health_initial_delay
            .as_deref()
            .map(bpm_intake::Duration::from),
        successes: a.health_successes,
    });
    let text = |t: Option<String>| t.as_deref().map(bpm_intake::Duration::from);
    let amount = |t: Option<String>| t.as_deref().map(Amount::from);
    let yes = |b: bool| b.then_some(true);
    Ok(Asked {
        command,
        argv,
        name: a.name,
        kind: a.kind,
        cwd: a.cwd,
        env,
        clean_env: yes(a.clean_env),
        env_file: a.env_file,
        session: a.session,
        parent: a.parent,
        after: a.after,
        group: a.group,
        priority: a.priority,
        delay: text(a.delay),
        at: a.at,
        timeout: text(a.timeout),
        grace: text(a.grace),
        stop_signal: a.stop_signal,
        stop_command: a.stop_command,
        stop_command_timeout: text(a.stop_command_timeout),
        restart: a.restart,
        max_restarts: a.max_restarts,
        backoff: text(a.backoff),
        ready_pattern: a.ready_pattern,
        ready_port: a.ready_port,
        ready_http: a.ready_http,
        ready_exec: a.ready_exec,
        ready_notify: yes(a.ready_notify),
        ready_timeout: text(a.ready_timeout),
        ready_initial_delay: text(a.ready_initial_delay),
        ready_every: text(a.ready_every),
        ready_check_timeout: text(a.ready_check_timeout),
        ready_successes: a.ready_successes,
        ready_failures: a.ready_failures,
        health,
        idle_after: text(a.idle_after),
        log_archive: a.log_archive,
        success_codes: (!a.success_codes.is_empty()).then_some(a.success_codes),
        labels: pairs(&a.label, "--label")?,
        metadata: a.metadata.as_deref().map(parse_metadata).transpose()?,
        on_exit: a.on_exit,
        node: a.node,
        node_labels: pairs(&a.node_label, "--node-label")?,
        failover: yes(a.failover),
        leader_only: yes(a.leader_only),
        ensure: yes(a.ensure),
        replace: yes(a.replace),
        port: amount(a.port),
        owner: a.owner,
        owner_grace: text(a.owner_grace),
        persistent: yes(a.persist),
        watch: a.watch,
        watch_ignore: a.watch_ignore,
        watch_debounce: text(a.watch_debounce),
        restart_dependents: yes(a.restart_dependents),
        stdin: yes(a.stdin),
        tty: yes(a.tty),
        tty_size: a.tty_size,
        every: a.every,
        cron: a.cron,
        tz: a.tz,
        overlap: a.overlap,
        jitter: a.jitter,
        run_now: yes(a.run_now),
        catch_up: yes(a.catch_up),
        memory_max: amount(a.memory_max),
        cpu_max: amount(a.cpu_max),
        pids_max: amount(a.pids_max),
        nofile: amount(a.nofile),
    })
}

/// The spec `bpm run`'s arguments ask for, relative to this shell: its
/// directory, its environment, its terminal's size.
pub(super) async fn spec_from(m: &Manager, a: RunArgs) -> Result<ProcessSpec, CliError> {
    let asked = asked_of_run(a)?;
    let here = std::env::current_dir()
        .map_err(|e| CliError::invalid(format!("the current directory: {e}")))?;
    let env = bpm_adapters::os::inherited_env();
    let machine = bpm_adapters::os::ThisMachine;
    let mut ctx = Context::new(&here, &env, &machine);
    ctx.spelling = Spelling::Flags;
    ctx.now = Some(now());
    if asked.tty == Some(true) && asked.tty_size.is_none() {
        ctx.terminal = crate::cli::attach::this_terminal_size().unwrap_or_default();
    }
    for r in asked.references() {
        ctx.ids.insert(r.to_owned(), resolve(m, r).await?);
    }
    asked
        .into_spec(&ctx)
        .map_err(|e| CliError::invalid(e.to_string()))
}

pub(super) async fn run(home: &Home, m: &Manager, mut args: RunArgs) -> Outcome {
    if let Some(from) = args.from.take() {
        return run_many(home, m, args, &from).await;
    }
    let (wait_for_it, as_json) = (args.wait, args.json);
    if wait_for_it && (args.every.is_some() || args.cron.is_some()) {
        return Err(CliError::invalid(
            "--wait waits for one process to end, and a schedule runs until it is stopped: wait for a run (bpm wait ID) instead",
        ));
    }
    let spec = spec_from(m, args).await?;
    let request = uuid::Uuid::now_v7();
    // The manager that answered: a new daemon's, if the first died meanwhile.
    let (m, mut results) = submit(home, m, vec![spec], Wanted::One, request).await?;
    let m = &m;
    let record = match results.pop() {
        Some(Ok(Submitted::Record(record))) => record,
        Some(Err(e)) => return Err(e.into()),
        _ => {
            return Err(CliError::failed(
                "the daemon gave no answer for the process",
            ));
        }
    };
    if as_json {
        let mut v = record_json(&record);
        // --ensure answered with the live record of its name.
        let reused = record.spec().request.is_none_or(|r| r.id != request);
        if let (true, Some(obj)) = (reused, v.as_object_mut()) {
            obj.insert("reused".into(), serde_json::Value::Bool(true));
        }
        out!("{}", json(&v));
    } else if !wait_for_it {
        out!("{}", record.id());
    }
    if !wait_for_it {
        return Ok(ExitCode::SUCCESS);
    }
    copy_output(m, record.id(), Cursor(0), StreamSelect::Both, true, true, 0).await?;
    let end = m.wait(record.id(), None).await?;
    Ok(exit_code_of(&end))
}

/// Submits `specs` as one request a daemon's death cannot leave half known
/// (`bpm_intake::request`): after a broken connection, the next daemon (one
/// is started if none answers) is asked which of them exist, and only the
/// rest are submitted again.
pub(super) async fn submit(
    home: &Home,
    m: &Manager,
    specs: Vec<ProcessSpec>,
    answer: Wanted,
    request: uuid::Uuid,
) -> Result<(Manager, Vec<Result<Submitted, ManagerError>>), CliError> {
    let reconnect = |why: String| async move {
        eprintln!("bpm: {why}; asking the next daemon which of this request's processes exist");
        let next: Manager = Arc::new(daemon::connect_or_start(home).await?);
        Ok(next)
    };
    Ok(request::submit(m.clone(), reconnect, request, specs, answer).await?)
}

/// `bpm run --from FILE`: one process per line, all submitted in one request.
pub(super) async fn run_many(home: &Home, m: &Manager, mut args: RunArgs, from: &Path) -> Outcome {
    // Bytes, not text: a line may name a file whose name is not UTF-8.
    let text = if from == Path::new("-") {
        let mut text = Vec::new();
        std::io::stdin()
            .read_to_end(&mut text)
            .map_err(|e| CliError::invalid(format!("cannot read stdin: {e}")))?;
        text
    } else {
        std::fs::read(from)
            .map_err(|e| CliError::invalid(format!("cannot read {}: {e}", from.display())))?
    };
    let (shell, as_json) = (args.shell, args.json);
    let prefix: Vec<OsText> = std::mem::take(&mut args.command)
        .into_iter()
        .map(OsText::from)
        .collect();
    let mut lines = Vec::new();
    for (n, line) in text.split(|b| *b == b'\n').enumerate() {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let command = if shell {
            let mut words = prefix.clone();
            words.push(OsText::from_bytes(line));
            words
        } else {
            let words = split_words(line)
                .map_err(|e| CliError::invalid(format!("{}:{}: {e}", from.display(), n + 1)))?;
            prefix
                .iter()
                .cloned()
                .chain(words.into_iter().map(OsText::from_bytes))
                .collect()
        };
        lines.push((n + 1, command));
    }
    if lines.is_empty() {
        return Err(CliError::invalid(format!(
            "{}: no commands (one per line)",
            from.display()
        )));
    }
    // Every line shares the options; only the command differs.
    args.command = lines[0].1.iter().cloned().map(Into::into).collect();
    let template = spec_from(m, args).await?;
    let specs = lines
        .iter()
        .map(|(_, command)| {
            let mut spec = template.clone();
            spec.command = Some(if shell {
                Cmd::Shell(shell_line(command.iter().cloned()))
            } else {
                Cmd::Argv(command.clone())
            });
            spec
        })
        .collect();
    // Lines refused for the same reason one after another are named as
    // one range (a batch refused part way names thousands of lines).
    let mut failed: Vec<(usize, usize, ManagerError)> = Vec::new();
    let mut refused = |n: usize, e: ManagerError| match failed.last_mut() {
        Some((_, last, same)) if *same == e && *last + 1 == n => *last = n,
        _ => failed.push((n, n, e)),
    };
    let answer = if as_json {
        Wanted::Records
    } else {
        Wanted::Ids
    };
    let (_, results) = submit(home, m, specs, answer, uuid::Uuid::now_v7()).await?;
    let mut started = Vec::new();
    // Only the ids are printed without --json, so only the ids are asked for.
    let mut out = String::new();
    for ((n, _), result) in lines.iter().zip(results) {
        match result {
            Ok(Submitted::Record(record)) => started.push(record_json(&record)),
            Ok(Submitted::Id(id)) => {
                out.push_str(&id.to_string());
                out.push('\n');
            }
            Err(e) => refused(*n, e),
        }
    }
    if as_json {
        out!("{}", json(&serde_json::Value::Array(started)));
    } else {
        enough_if_gone(std::io::Write::write_all(
            &mut std::io::stdout().lock(),
            out.as_bytes(),
        ));
    }
    let not_started: usize = failed.iter().map(|(a, b, _)| b - a + 1).sum();
    for (first, last, e) in &failed {
        let lines = if first == last {
            first.to_string()
        } else {
            format!("{first}-{last}")
        };
        eprintln!("bpm: {}:{lines}: not started: {e}", from.display());
    }
    match failed.into_iter().next() {
        None => Ok(ExitCode::SUCCESS),
        Some((.., e)) => {
            let first = CliError::from(e);
            Err(CliError {
                code: first.code,
                message: format!(
                    "{not_started} of {} lines were not started (the first: {}); the ids printed are of those that were",
                    lines.len(),
                    first.message
                ),
            })
        }
    }
}

/// The words of a `--shell` command joined by spaces, as one line for `sh -c`.
pub(super) fn shell_line(words: impl Iterator<Item = OsText>) -> OsText {
    let mut line = Vec::new();
    for (i, w) in words.enumerate() {
        if i > 0 {
            line.push(b' ');
        }
        line.extend_from_slice(w.as_bytes());
    }
    OsText::from_bytes(line)
}

/// Splits a line into words as a POSIX shell would, without expanding
/// anything: blanks separate words, quotes group them, a backslash escapes.
/// It works on bytes: every byte it looks for is ASCII, which no byte of a
/// multi-byte UTF-8 character is, so a line need not be UTF-8.
pub(super) fn split_words(line: &[u8]) -> Result<Vec<Vec<u8>>, String> {
    let mut words = Vec::new();
    let mut word: Option<Vec<u8>> = None;
    let mut bytes = line.iter().copied();
    while let Some(c) = bytes.next() {
        match c {
            b' ' | b'\t' => {
                if let Some(w) = word.take() {
                    words.push(w);
                }
            }
            b'\'' => {
                let w = word.get_or_insert_with(Vec::new);
                loop {
                    match bytes.next() {
                        Some(b'\'') => break,
                        Some(c) => w.push(c),
                        None => return Err("unterminated single quote".into()),
                    }
                }
            }
            b'"' => {
                let w = word.get_or_insert_with(Vec::new);
                loop {
                    match bytes.next() {
                        Some(b'"') => break,
                        Some(b'\\') => match bytes.next() {
                            Some(c @ (b'"' | b'\\' | b'$' | b'`')) => w.push(c),
                            Some(c) => {
                                w.push(b'\\');
                                w.push(c);
                            }
                            None => return Err("unterminated double quote".into()),
                        },
                        Some(c) => w.push(c),
                        None => return Err("unterminated double quote".into()),
                    }
                }
            }
            b'\\' => match bytes.next() {
                Some(c) => word.get_or_insert_with(Vec::new).push(c),
                None => return Err("a backslash ends the line".into()),
            },
            c => word.get_or_insert_with(Vec::new).push(c),
        }
    }
    if let Some(w) = word {
        words.push(w);
    }
    Ok(words)
}
