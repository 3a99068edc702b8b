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
    let doc: Value = serde_norway::from_str(text).map_err(|e| {
        let line = e.location().map_or(0, |l| l.line());
        format!("{line}: {}", super::quoted(&e.to_string()))
    })?;
    let Value::Mapping(top) = doc else {
        return Err(" the file is not a mapping of keys".into());
    };
    let mut ignored = Vec::new();
    let mut global: BTreeMap<String, String> = BTreeMap::new();
    let mut processes = None;
    for (k, v) in &top {
        match k.as_str().unwrap_or_default() {
            "version" | "log_level" | "log_location" | "is_strict" => {
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
    let mut services = Vec::new();
    for (name, p) in processes {
        let name = name.as_str().unwrap_or_default().to_owned();
        let Value::Mapping(p) = p else {
            return Err(format!(" processes.{name}: expected a mapping"));
        };
        let line = place(line_of_key(text, &["processes", &name]));
        let at = |e: String| format!("{line}processes.{name}.{e}");
        let mut table = ServiceTable {
            env: global.clone(),
            ..ServiceTable::default()
        };
        for (k, v) in p {
            let key = k.as_str().unwrap_or_default();
            let set = (|| -> Result<(), String> {
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
                        table.depends_on = depends_on(v).map_err(|e| format!("depends_on: {e}"))?;
                    }
                    "readiness_probe" => {
                        table.ready = Some(
                            probe(v, &mut ignored, &name)
                                .map_err(|e| format!("readiness_probe: {e}"))?,
                        );
                    }
                    "liveness_probe" => {
                        table.health = Some(
                            liveness(v, &mut ignored, &name)
                                .map_err(|e| format!("liveness_probe: {e}"))?,
                        );
                    }
                    "availability" => availability(v, &mut table, &mut ignored, &name)
                        .map_err(|e| format!("availability.{e}"))?,
                    "replicas" => {
                        let most = u64::from(super::MAX_REPLICAS);
                        let n = whole(v, 1..=most).map_err(|e| format!("replicas: {e}"))?;
                        table.replicas = u32::try_from(n).ok();
                    }
                    "disabled" => {
                        table.disabled = Some(v.as_bool().ok_or_else(|| {
                            format!("disabled: {}: expected true or false", shown(v))
                        })?);
                    }
                    "description" => {}
                    "shutdown" => shutdown(v, &mut table, &mut ignored, &name)
                        .map_err(|e| format!("shutdown.{e}"))?,
                    "log_location" => ignored.push(format!(
                        "processes.{name}.log_location (bpm keeps the output: `bpm logs {name}`)"
                    )),
                    other => ignored.push(format!("processes.{name}.{other}")),
                }
                Ok(())
            })();
            if let Err(e) = set {
                let line = place(line_of_key(text, &["processes", &name, key]));
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

/// A readiness probe: `exec.command` or `http_get`.
fn probe(v: &Value, ignored: &mut Vec<String>, name: &str) -> Result<ReadyTable, String> {
    let (exec, http) = probe_target(v)?;
    let ready = ReadyTable {
        http,
        exec,
        ..ReadyTable::default()
    };
    for key in [
        "initial_delay_seconds",
        "period_seconds",
        "success_threshold",
        "failure_threshold",
        "timeout_seconds",
    ] {
        if v.get(key).is_some() {
            ignored.push(format!(
                "processes.{name}.readiness_probe.{key} (bpm probes every 250 ms until ready)"
            ));
        }
    }
    Ok(ready)
}

/// A liveness probe: `exec.command` or `http_get`, with
/// `period_seconds`, `failure_threshold` and `timeout_seconds`.
fn liveness(v: &Value, ignored: &mut Vec<String>, name: &str) -> Result<HealthTable, String> {
    let (exec, http) = probe_target(v)?;
    let mut health = HealthTable {
        http,
        exec,
        ..HealthTable::default()
    };
    let seconds = |key: &str| -> Result<Option<String>, String> {
        v.get(key)
            .map(|s| {
                whole(s, 0..=SECONDS_MAX)
                    .map(|n| format!("{n}s"))
                    .map_err(|e| format!("{key}: {e}"))
            })
            .transpose()
    };
    health.every = seconds("period_seconds")?;
    health.timeout = seconds("timeout_seconds")?;
    health.failures = v
        .get("failure_threshold")
        .map(|n| whole(n, 1..=u64::from(u32::MAX)).map_err(|e| format!("failure_threshold: {e}")))
        .transpose()?
        .and_then(|n| u32::try_from(n).ok());
    for key in ["initial_delay_seconds", "success_threshold"] {
        if v.get(key).is_some() {
            ignored.push(format!("processes.{name}.liveness_probe.{key}"));
        }
    }
    Ok(health)
}

/// `http_get`'s `scheme`, `host`, `port` and `path` as a URL.
fn http_url(h: &Value) -> Result<String, String> {
    let field = |key: &str, default: &str| -> Result<String, String> {
        h.get(key)
            .map_or_else(|| Ok(default.to_owned()), scalar)
            .map_err(|e| format!("http_get.{key}: {e}"))
    };
    let scheme = field("scheme", "http")?;
    if !scheme.eq_ignore_ascii_case("http") {
        return Err(format!("http_get.scheme {scheme:?}: only http is checked"));
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
    Ok(format!("http://{host}:{port}{path}"))
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

/// `shutdown`: `signal` and `timeout_seconds`.
fn shutdown(
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
                table.grace = Some(format!("{n}s"));
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

/// The line (1-based) of the key at `path` (`processes`, a process's
/// name, one of its keys), found by indentation: process-compose files are
/// read into values without places, and an error names its line all the
/// same.
fn line_of_key(text: &str, path: &[&str]) -> Option<usize> {
    let mut want = path.iter();
    let mut next = *want.next()?;
    let mut deeper_than: Option<usize> = None;
    for (i, raw) in text.lines().enumerate() {
        let trimmed = raw.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let indent = raw.len() - trimmed.len();
        if deeper_than.is_some_and(|d| indent <= d) {
            // Left the block the last key opened without the next one.
            return None;
        }
        let key = trimmed
            .split_once(':')
            .map(|(k, _)| k.trim().trim_matches(|c| c == '"' || c == '\''));
        if key == Some(next) {
            match want.next() {
                Some(more) => {
                    next = more;
                    deeper_than = Some(indent);
                }
                None => return Some(i + 1),
            }
        }
    }
    None
}
