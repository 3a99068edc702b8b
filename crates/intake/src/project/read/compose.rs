//! process-compose files (`process-compose.yaml`), run as they are: each
//! process becomes a service of a `bpm.toml` ([`crate::project`]). Keys bpm
//! does not act on are listed by name (a warning `bpm up` prints), never
//! dropped silently.

use std::collections::BTreeMap;
use std::path::Path;

use bpm_domain::project::Project;
use serde_norway::Value;

use super::{DependsOn, HealthTable, ReadyTable, ServiceTable, expand_replicas, resolve};

/// Reads a process-compose file: the project, and the keys not acted on.
///
/// # Errors
/// What is wrong, naming the process and the key.
pub(crate) fn read(
    text: &str,
    default_name: &str,
    dir: &Path,
    from: &super::Reading<'_>,
) -> Result<(Project, Vec<String>), String> {
    let mut top = super::merge::parse(text)?;
    if let Some(Value::Mapping(procs)) = top.get_mut("processes") {
        super::merge::resolve_extends(procs).map_err(|e| {
            let name = e.split('.').nth(1).unwrap_or_default();
            format!(
                "{}{}",
                place(super::merge::line_of_key(
                    text,
                    &["processes", name, "extends"]
                )),
                e.trim_start()
            )
        })?;
    }
    read_doc(
        &top,
        &|path| place(super::merge::line_of_key(text, path)),
        default_name,
        dir,
        from,
    )
}

/// Reads several files merged as one ([`super::merge`]); each error
/// begins with the file (and line) its key came from.
///
/// # Errors
/// What is wrong, naming the file, the process and the key.
pub(crate) fn read_merged(
    merged: &super::merge::Merged,
    default_name: &str,
    dir: &Path,
    from: &super::Reading<'_>,
) -> Result<(Project, Vec<String>), String> {
    read_doc(
        &merged.doc,
        &|path| merged.locate(path),
        default_name,
        dir,
        from,
    )
}

/// Reads a document; `locate` begins an error about the key at a path.
fn read_doc(
    top: &serde_norway::Mapping,
    locate: &dyn Fn(&[&str]) -> String,
    default_name: &str,
    dir: &Path,
    from: &super::Reading<'_>,
) -> Result<(Project, Vec<String>), String> {
    let mut ignored = Vec::new();
    let mut global: BTreeMap<String, String> = BTreeMap::new();
    let mut processes = None;
    for (k, v) in top {
        match k.as_str().unwrap_or_default() {
            "version" | "log_level" | "log_location" | "is_strict" | "extends" => {
                if k.as_str() == Some("log_location") {
                    ignored.push("log_location (the combined log: bpm keeps each process's output; `bpm logs` interleaves them)".into());
                }
            }
            "environment" => global = environment(v).map_err(|e| format!(" environment: {e}"))?,
            "processes" => processes = Some(v),
            other => ignored.push(other.to_owned()),
        }
    }
    let Some(Value::Mapping(processes)) = processes else {
        return Err(" no processes: a process-compose file needs `processes`".into());
    };
    if processes.len() > super::MAX_SERVICES {
        return Err(format!(
            " {} processes: a project may have at most {}",
            processes.len(),
            super::MAX_SERVICES
        ));
    }
    let disabled = disabled_processes(processes);
    let mut services = Vec::new();
    for (name, p) in processes {
        let name = name.as_str().unwrap_or_default().to_owned();
        let Value::Mapping(p) = p else {
            return Err(format!(" processes.{name}: expected a mapping"));
        };
        let line = locate(&["processes", &name]);
        let at = |e: String| format!("{line}processes.{name}.{e}");
        let mut table = ServiceTable {
            env: global.clone(),
            ..ServiceTable::default()
        };
        for (k, v) in p {
            let key = k.as_str().unwrap_or_default();
            let set = set_key(&mut table, (&name, key, v), &disabled, &mut ignored);
            if let Err(e) = set {
                let line = locate(&["processes", &name, key]);
                return Err(format!("{line}processes.{name}.{e}"));
            }
        }
        services.extend(resolve(&name, &table, dir, from).map_err(at)?);
    }
    expand_replicas(&mut services);
    Ok((
        Project {
            name: default_name.to_owned(),
            services,
        },
        ignored,
    ))
}

/// Sets process `name`'s `key` to `v` in `table`, noting keys not acted on
/// in `ignored`; the error names the key.
fn set_key(
    table: &mut ServiceTable,
    (name, key, v): (&str, &str, &Value),
    disabled: &[String],
    ignored: &mut Vec<String>,
) -> Result<(), String> {
    match key {
        "command" => {
            table.command = Some(scalar(v).map_err(|e| format!("command: {e}"))?);
        }
        "working_dir" => {
            table.cwd = Some(scalar(v).map_err(|e| format!("working_dir: {e}"))?);
        }
        "environment" => table
            .env
            .extend(environment(v).map_err(|e| format!("environment: {e}"))?),
        "depends_on" => {
            let mut on = depends_on(v).map_err(|e| format!("depends_on: {e}"))?;
            // process-compose starts a process without waiting
            // for a disabled one, which never runs.
            if let DependsOn::Conditions(c) = &mut on {
                c.retain(|dep, _| {
                        let keep = !disabled.contains(dep);
                        if !keep {
                            ignored.push(format!(
                                "processes.{name}.depends_on.{dep} ({dep} is disabled, so {name} does not wait for it, as in process-compose)"
                            ));
                        }
                        keep
                    });
            }
            table.depends_on = on;
        }
        "readiness_probe" => {
            if table.ready.as_ref().is_some_and(|r| r.log.is_some()) {
                return Err(BOTH_READY.into());
            }
            table.ready = Some(probe(v).map_err(|e| format!("readiness_probe: {e}"))?);
        }
        "ready_log_line" => {
            let line = scalar(v).map_err(|e| format!("ready_log_line: {e}"))?;
            if table.ready.as_ref().is_some_and(|r| r.log.is_none()) {
                return Err(BOTH_READY.into());
            }
            // process-compose looks for the text in a line, as it is.
            table.ready = Some(ReadyTable {
                log: Some(bpm_domain::LogPattern::escape(&line)),
                ..ReadyTable::default()
            });
        }
        "liveness_probe" => {
            table.health = Some(liveness(v).map_err(|e| format!("liveness_probe: {e}"))?);
        }
        "availability" => {
            availability(v, table, ignored, name).map_err(|e| format!("availability.{e}"))?;
        }
        "replicas" => {
            let most = u64::from(super::MAX_REPLICAS);
            let n = whole(v, 1..=most).map_err(|e| format!("replicas: {e}"))?;
            table.replicas = u32::try_from(n).ok();
        }
        "disabled" => {
            let said = v
                .as_bool()
                .ok_or_else(|| format!("disabled: {}: expected true or false", shown(v)))?;
            // `is_disabled`, when set, is what counts.
            table.disabled = table.disabled.or(Some(said));
        }
        "is_disabled" => {
            table.disabled = Some(match v.as_str() {
                Some("true") => true,
                Some("false") => false,
                _ => {
                    return Err(format!(
                        "is_disabled: {}: expected \"true\" or \"false\"",
                        shown(v)
                    ));
                }
            });
        }
        "description" => {}
        "success_exit_codes" => {
            let Value::Sequence(codes) = v else {
                return Err(format!(
                    "success_exit_codes: {}: expected a list of exit codes",
                    shown(v)
                ));
            };
            let codes = codes
                .iter()
                .map(|c| {
                    c.as_i64()
                        .and_then(|c| i32::try_from(c).ok())
                        .ok_or_else(|| {
                            format!("success_exit_codes: {}: expected an exit code", shown(c))
                        })
                })
                .collect::<Result<Vec<i32>, String>>()?;
            table.success_codes = Some(codes);
        }
        "shutdown" => shutdown(v, table, ignored, name).map_err(|e| format!("shutdown.{e}"))?,
        "log_location" => ignored.push(format!(
            "processes.{name}.log_location (bpm keeps the output: `bpm logs {name}`)"
        )),
        other => ignored.push(format!("processes.{name}.{other}")),
    }
    Ok(())
}

/// Both ways to say when a process is ready, which process-compose
/// refuses together.
const BOTH_READY: &str = "ready_log_line: a readiness_probe is given too, and process-compose refuses the two together: keep one";

/// The processes that are disabled (`is_disabled: "true"`, else
/// `disabled: true`).
fn disabled_processes(processes: &serde_norway::Mapping) -> Vec<String> {
    processes
        .iter()
        .filter(|(_, p)| {
            let is = p.get("is_disabled").and_then(Value::as_str);
            match is {
                Some(text) => text == "true",
                None => p.get("disabled").and_then(Value::as_bool) == Some(true),
            }
        })
        .filter_map(|(n, _)| n.as_str().map(str::to_owned))
        .collect()
}

/// `["K=V", ...]` or `{K: V}`.
fn environment(v: &Value) -> Result<BTreeMap<String, String>, String> {
    match v {
        Value::Sequence(items) => items
            .iter()
            .map(|i| {
                let text = i.as_str().ok_or("expected K=V strings")?;
                text.split_once('=')
                    .map(|(k, v)| (k.to_owned(), v.to_owned()))
                    .ok_or_else(|| format!("{text:?}: expected K=V"))
            })
            .collect(),
        Value::Mapping(m) => m
            .iter()
            .map(|(k, v)| {
                let k = k.as_str().unwrap_or_default().to_owned();
                let value = match v {
                    Value::Null => String::new(),
                    other => scalar(other).map_err(|e| format!("{k}: {e}"))?,
                };
                Ok((k, value))
            })
            .collect(),
        Value::Null => Ok(BTreeMap::new()),
        _ => Err("expected a list of K=V".into()),
    }
}

/// `{other: {condition: process_...}}` as bpm's conditions.
fn depends_on(v: &Value) -> Result<DependsOn, String> {
    let Value::Mapping(m) = v else {
        return Err("expected a mapping of process names".into());
    };
    let mut out = BTreeMap::new();
    for (name, c) in m {
        let name = name.as_str().unwrap_or_default().to_owned();
        let condition = c
            .get("condition")
            .and_then(Value::as_str)
            .unwrap_or("process_started");
        let until = match condition {
            "process_started" => "started",
            "process_healthy" | "process_log_ready" => "ready",
            "process_completed_successfully" => "completed",
            "process_completed" => "ended",
            other => return Err(format!("{name}: unknown condition {other:?}")),
        };
        out.insert(name, until.to_owned());
    }
    Ok(DependsOn::Conditions(out))
}

/// What a probe runs: `exec.command` (first) or `http_get`'s URL.
fn probe_target(v: &Value) -> Result<(Option<String>, Option<String>), String> {
    if let Some(cmd) = v.get("exec").and_then(|e| e.get("command")) {
        Ok((
            Some(scalar(cmd).map_err(|e| format!("exec.command: {e}"))?),
            None,
        ))
    } else if let Some(h) = v.get("http_get") {
        Ok((None, Some(http_url(h)?)))
    } else {
        Err("expected exec or http_get".into())
    }
}

/// A readiness probe: `exec.command` or `http_get`, tried as
/// process-compose tries it: after `initial_delay_seconds` (0), every
/// `period_seconds` (10), each try cut at `timeout_seconds` (1),
/// `success_threshold` passes (1) make it ready and `failure_threshold`
/// failures (3) in a row stop it.
fn probe(v: &Value) -> Result<ReadyTable, String> {
    let (exec, http) = probe_target(v)?;
    let timing = Timing::of(v)?;
    Ok(ReadyTable {
        http,
        exec,
        initial_delay: Some(format!("{}s", timing.initial_delay.unwrap_or(0))),
        every: Some(format!("{}s", timing.period.unwrap_or(10))),
        timeout: Some(format!("{}s", timing.timeout.unwrap_or(1))),
        successes: Some(timing.successes.unwrap_or(1)),
        failures: Some(timing.failures.unwrap_or(3)),
        ..ReadyTable::default()
    })
}

/// A liveness probe: `exec.command` or `http_get`, with its timings, at
/// process-compose's defaults where it gives none.
fn liveness(v: &Value) -> Result<HealthTable, String> {
    let (exec, http) = probe_target(v)?;
    let timing = Timing::of(v)?;
    Ok(HealthTable {
        http,
        exec,
        initial_delay: Some(format!("{}s", timing.initial_delay.unwrap_or(0))),
        every: Some(format!("{}s", timing.period.unwrap_or(10))),
        timeout: Some(format!("{}s", timing.timeout.unwrap_or(1))),
        successes: Some(timing.successes.unwrap_or(1)),
        failures: Some(timing.failures.unwrap_or(3)),
        ..HealthTable::default()
    })
}

/// A probe's timings as its file gives them. process-compose reads a
/// period, timeout or threshold under 1 (and a delay under 0) as its
/// default; so does bpm.
struct Timing {
    initial_delay: Option<u64>,
    period: Option<u64>,
    timeout: Option<u64>,
    successes: Option<u32>,
    failures: Option<u32>,
}

impl Timing {
    fn of(v: &Value) -> Result<Self, String> {
        let number = |key: &str, most: u64| -> Result<Option<u64>, String> {
            let Some(n) = v.get(key) else { return Ok(None) };
            // A negative number is process-compose's "unset".
            if n.as_i64().is_some_and(|n| n < 0) {
                return Ok(None);
            }
            whole(n, 0..=most)
                .map(|n| Some(n).filter(|n| *n > 0 || key == "initial_delay_seconds"))
                .map_err(|e| format!("{key}: {e}"))
        };
        let count = |key: &str| -> Result<Option<u32>, String> {
            Ok(number(key, u64::from(u32::MAX))?.and_then(|n| u32::try_from(n).ok()))
        };
        Ok(Timing {
            initial_delay: number("initial_delay_seconds", SECONDS_MAX)?,
            period: number("period_seconds", SECONDS_MAX)?,
            timeout: number("timeout_seconds", SECONDS_MAX)?,
            successes: count("success_threshold")?,
            failures: count("failure_threshold")?,
        })
    }
}

/// `http_get`'s `scheme`, `host`, `port` and `path` as a URL.
fn http_url(h: &Value) -> Result<String, String> {
    let field = |key: &str, default: &str| -> Result<String, String> {
        h.get(key)
            .map_or_else(|| Ok(default.to_owned()), scalar)
            .map_err(|e| format!("http_get.{key}: {e}"))
    };
    let scheme = field("scheme", "http")?.to_ascii_lowercase();
    if scheme != "http" && scheme != "https" {
        return Err(format!(
            "http_get.scheme {scheme:?}: expected http or https"
        ));
    }
    let host = field("host", "127.0.0.1")?;
    let port = h.get("port").ok_or("http_get.port: missing")?;
    // process-compose takes the port as a number or as its text.
    let port = match port {
        Value::String(t) => t.trim().parse::<u64>().ok(),
        other => other.as_u64(),
    }
    .filter(|p| (1..=65_535).contains(p))
    .ok_or_else(|| {
        format!(
            "http_get.port: {}: expected a port from 1 to 65535",
            shown(port)
        )
    })?;
    let path = field("path", "/")?;
    Ok(format!("{scheme}://{host}:{port}{path}"))
}

/// `availability`: `restart`, `backoff_seconds`, `max_restarts`.
fn availability(
    v: &Value,
    table: &mut ServiceTable,
    ignored: &mut Vec<String>,
    name: &str,
) -> Result<(), String> {
    let Value::Mapping(m) = v else {
        return Err(format!(" {}: expected a mapping", shown(v)));
    };
    for (k, v) in m {
        match k.as_str().unwrap_or_default() {
            "restart" => {
                let mode = match v.as_str() {
                    Some("always") => "always",
                    Some("on_failure" | "exit_on_failure") => "on-failure",
                    Some("no") => "never",
                    _ => {
                        return Err(format!(
                            "restart: {}: expected always, on_failure, exit_on_failure or no",
                            shown(v)
                        ));
                    }
                };
                table.restart = Some(mode.to_owned());
                if v.as_str() == Some("exit_on_failure") {
                    ignored.push(format!(
                        "processes.{name}.availability.restart exit_on_failure (bpm restarts on failure; it never stops the others)"
                    ));
                }
            }
            "backoff_seconds" => {
                let n = whole(v, 0..=SECONDS_MAX).map_err(|e| format!("backoff_seconds: {e}"))?;
                table.backoff = Some(format!("{n}s"));
            }
            "max_restarts" => {
                let n =
                    whole(v, 0..=u64::from(u32::MAX)).map_err(|e| format!("max_restarts: {e}"))?;
                table.max_restarts = u32::try_from(n).ok();
            }
            other => ignored.push(format!("processes.{name}.availability.{other}")),
        }
    }
    Ok(())
}

/// `shutdown`: `command`, `signal` and `timeout_seconds`. With a command,
/// the timeout is the command's (10 s by default), as in process-compose;
/// without one, it is the time between the signal and KILL.
fn shutdown(
    v: &Value,
    table: &mut ServiceTable,
    ignored: &mut Vec<String>,
    name: &str,
) -> Result<(), String> {
    let Value::Mapping(m) = v else {
        return Err(format!(" {}: expected a mapping", shown(v)));
    };
    let has_command = m.get("command").is_some_and(|c| !c.is_null());
    for (k, v) in m {
        match k.as_str().unwrap_or_default() {
            "command" if v.is_null() => {}
            "command" => {
                table.stop_command = Some(scalar(v).map_err(|e| format!("command: {e}"))?);
            }
            "signal" => {
                let signal = match v.as_u64() {
                    Some(1) => "HUP",
                    Some(2) => "INT",
                    Some(3) => "QUIT",
                    Some(9) => "KILL",
                    Some(10) => "USR1",
                    Some(12) => "USR2",
                    Some(15) => "TERM",
                    _ => {
                        return Err(format!(
                            "signal: {}: expected a signal's number: 1, 2, 3, 9, 10, 12 or 15",
                            shown(v)
                        ));
                    }
                };
                table.stop_signal = Some(signal.into());
            }
            "timeout_seconds" => {
                let n = whole(v, 0..=SECONDS_MAX).map_err(|e| format!("timeout_seconds: {e}"))?;
                if has_command {
                    table.stop_command_timeout = Some(format!("{n}s"));
                } else {
                    table.grace = Some(format!("{n}s"));
                }
            }
            other => ignored.push(format!("processes.{name}.shutdown.{other}")),
        }
    }
    Ok(())
}

/// The most seconds a duration of a process-compose file may give (a year).
const SECONDS_MAX: u64 = 366 * 24 * 3600;

/// A scalar as process-compose reads it: text as it is, a number or a
/// boolean as its text (`command: false` runs `false`).
fn scalar(v: &Value) -> Result<String, String> {
    match v {
        Value::String(s) => Ok(s.clone()),
        Value::Bool(b) => Ok(b.to_string()),
        Value::Number(n) => Ok(n.to_string()),
        other => Err(format!(
            "{}: expected a text, a number or a boolean",
            shown(other)
        )),
    }
}

/// A whole number within `range`, or why not.
fn whole(v: &Value, range: std::ops::RangeInclusive<u64>) -> Result<u64, String> {
    v.as_u64().filter(|n| range.contains(n)).ok_or_else(|| {
        format!(
            "{}: expected a whole number from {} to {}",
            shown(v),
            range.start(),
            range.end()
        )
    })
}

/// A value as an error shows it: short, on one line.
fn shown(v: &Value) -> String {
    let text = serde_norway::to_string(v).unwrap_or_default();
    let text = text.trim().replace('\n', " ");
    super::quoted_value(&text)
}

/// Where an error begins after the file's name: `LINE: `, or a space
/// when the line is not known.
fn place(line: Option<usize>) -> String {
    line.map_or_else(|| " ".to_owned(), |l| format!("{l}: "))
}
