//! process-compose files (`process-compose.yaml`), run as they are: each
//! process becomes a service of a `bpm.toml` ([`crate::project`]). Keys bpm
//! does not act on are listed by name (a warning `bpm up` prints), never
//! dropped silently.

use std::collections::BTreeMap;
use std::path::Path;

use bpm_domain::Environment;
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
    env: &Environment,
    may_read: &super::MayRead<'_>,
) -> Result<(Project, Vec<String>), String> {
    let doc: Value = serde_norway::from_str(text).map_err(|e| {
        let line = e.location().map_or(0, |l| l.line());
        format!("{line}: {e}")
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
    let mut services = Vec::new();
    for (name, p) in processes {
        let name = name.as_str().unwrap_or_default().to_owned();
        let Value::Mapping(p) = p else {
            return Err(format!(" processes.{name}: expected a mapping"));
        };
        let at = |e: String| format!(" processes.{name}.{e}");
        let mut table = ServiceTable {
            env: global.clone(),
            ..ServiceTable::default()
        };
        for (k, v) in p {
            let key = k.as_str().unwrap_or_default();
            match key {
                "command" => table.command = v.as_str().map(str::to_owned),
                "working_dir" => table.cwd = v.as_str().map(str::to_owned),
                "environment" => table
                    .env
                    .extend(environment(v).map_err(|e| at(format!("environment: {e}")))?),
                "depends_on" => {
                    table.depends_on = depends_on(v).map_err(|e| at(format!("depends_on: {e}")))?;
                }
                "readiness_probe" => {
                    table.ready = Some(
                        probe(v, &mut ignored, &name)
                            .map_err(|e| at(format!("readiness_probe: {e}")))?,
                    );
                }
                "liveness_probe" => {
                    table.health = Some(
                        liveness(v, &mut ignored, &name)
                            .map_err(|e| at(format!("liveness_probe: {e}")))?,
                    );
                }
                "availability" => availability(v, &mut table, &mut ignored, &name),
                "replicas" => table.replicas = v.as_u64().and_then(|r| u32::try_from(r).ok()),
                "disabled" => table.disabled = v.as_bool(),
                "description" => {}
                "shutdown" => shutdown(v, &mut table, &mut ignored, &name),
                "log_location" => ignored.push(format!(
                    "processes.{name}.log_location (bpm keeps the output: `bpm logs {name}`)"
                )),
                other => ignored.push(format!("processes.{name}.{other}")),
            }
        }
        services.extend(resolve(&name, &table, dir, env, may_read).map_err(at)?);
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
        Value::Mapping(m) => Ok(m
            .iter()
            .map(|(k, v)| {
                let text = match v {
                    Value::String(s) => s.clone(),
                    other => serde_norway::to_string(other)
                        .unwrap_or_default()
                        .trim()
                        .to_owned(),
                };
                (k.as_str().unwrap_or_default().to_owned(), text)
            })
            .collect()),
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
    if let Some(cmd) = v
        .get("exec")
        .and_then(|e| e.get("command"))
        .and_then(Value::as_str)
    {
        Ok((Some(cmd.to_owned()), None))
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
    health.every = v
        .get("period_seconds")
        .and_then(Value::as_u64)
        .map(|s| format!("{s}s"));
    health.failures = v
        .get("failure_threshold")
        .and_then(Value::as_u64)
        .and_then(|n| u32::try_from(n).ok());
    health.timeout = v
        .get("timeout_seconds")
        .and_then(Value::as_u64)
        .map(|s| format!("{s}s"));
    for key in ["initial_delay_seconds", "success_threshold"] {
        if v.get(key).is_some() {
            ignored.push(format!("processes.{name}.liveness_probe.{key}"));
        }
    }
    Ok(health)
}

/// `http_get`'s `scheme`, `host`, `port` and `path` as a URL.
fn http_url(h: &Value) -> Result<String, String> {
    let scheme = h.get("scheme").and_then(Value::as_str).unwrap_or("http");
    if !scheme.eq_ignore_ascii_case("http") {
        return Err(format!("http_get.scheme {scheme:?}: only http is checked"));
    }
    let host = h.get("host").and_then(Value::as_str).unwrap_or("127.0.0.1");
    let port = h
        .get("port")
        .and_then(Value::as_u64)
        .ok_or("http_get.port: missing")?;
    let path = h.get("path").and_then(Value::as_str).unwrap_or("/");
    Ok(format!("http://{host}:{port}{path}"))
}

/// `availability`: `restart`, `backoff_seconds`, `max_restarts`.
fn availability(v: &Value, table: &mut ServiceTable, ignored: &mut Vec<String>, name: &str) {
    if let Value::Mapping(m) = v {
        for (k, v) in m {
            match k.as_str().unwrap_or_default() {
                "restart" => {
                    table.restart = v.as_str().map(|r| {
                        match r {
                            "always" => "always",
                            "on_failure" | "exit_on_failure" => "on-failure",
                            _ => "never",
                        }
                        .to_owned()
                    });
                    if v.as_str() == Some("exit_on_failure") {
                        ignored.push(format!(
                            "processes.{name}.availability.restart exit_on_failure (bpm restarts on failure; it never stops the others)"
                        ));
                    }
                }
                "backoff_seconds" => {
                    table.backoff = v.as_u64().map(|s| format!("{s}s"));
                }
                "max_restarts" => {
                    table.max_restarts = v.as_u64().and_then(|m| u32::try_from(m).ok());
                }
                other => ignored.push(format!("processes.{name}.availability.{other}")),
            }
        }
    }
}

/// `shutdown`: `signal` and `timeout_seconds`.
fn shutdown(v: &Value, table: &mut ServiceTable, ignored: &mut Vec<String>, name: &str) {
    if let Value::Mapping(m) = v {
        for (k, v) in m {
            match k.as_str().unwrap_or_default() {
                "signal" => {
                    table.stop_signal = v.as_u64().and_then(|n| match n {
                        1 => Some("HUP".into()),
                        2 => Some("INT".into()),
                        3 => Some("QUIT".into()),
                        9 => Some("KILL".into()),
                        10 => Some("USR1".into()),
                        12 => Some("USR2".into()),
                        15 => Some("TERM".into()),
                        _ => None,
                    });
                }
                "timeout_seconds" => table.grace = v.as_u64().map(|s| format!("{s}s")),
                other => ignored.push(format!("processes.{name}.shutdown.{other}")),
            }
        }
    }
}
