//! How front ends show a record as JSON: the record as it is stored, plus the
//! flat fields scripts and agents want (`bpm ps --json`, `bpm show --json`,
//! and every MCP tool that returns a record).

use bpm_domain::{ExitStatus, ProcessRecord};
use serde_json::{Value, json};

/// The record, with `name`, `kind`, `session`, `parent`, `group`, `labels`,
/// `metadata`, `pid`, `exit_code`, `signal`, `started_at`, `ended_at` and
/// `error` lifted to the top level.
pub fn record_json(r: &ProcessRecord) -> Value {
    let mut v = serde_json::to_value(r).unwrap_or_default();
    if let Some(obj) = v.as_object_mut() {
        let spec = r.spec();
        let l = r.lifecycle();
        obj.insert("name".into(), json!(spec.name));
        obj.insert("kind".into(), json!(spec.kind));
        obj.insert("session".into(), json!(spec.session));
        obj.insert("parent".into(), json!(spec.parent));
        obj.insert("group".into(), json!(spec.group));
        obj.insert("labels".into(), json!(spec.labels));
        obj.insert("metadata".into(), json!(spec.metadata));
        obj.insert("pid".into(), json!(r.pid()));
        obj.insert(
            "exit_code".into(),
            json!(l.exit().and_then(ExitStatus::code)),
        );
        obj.insert(
            "signal".into(),
            json!(l.exit().and_then(ExitStatus::signal)),
        );
        obj.insert("started_at".into(), json!(l.started_at()));
        obj.insert("ended_at".into(), json!(l.ended_at()));
        obj.insert("error".into(), json!(l.error()));
    }
    v
}

/// The placeholder that replaces a redacted value.
pub const REDACTED: &str = "[redacted]";

/// [`record_json`] with every environment value replaced by [`REDACTED`].
pub fn record_json_redacted(r: &ProcessRecord) -> Value {
    let mut v = record_json(r);
    if let Some(env) = v
        .get_mut("spec")
        .and_then(|s| s.get_mut("env"))
        .and_then(Value::as_object_mut)
    {
        for value in env.values_mut() {
            *value = Value::String(REDACTED.into());
        }
    }
    v
}

/// Adds what the record's process tree uses (`cpu_percent`, `rss_bytes`,
/// `listening_ports`) to its JSON; each is `null` when nothing of it runs.
pub fn add_usage(v: &mut Value, usage: Option<&bpm_ports::ResourceUsage>) {
    if let Some(obj) = v.as_object_mut() {
        obj.insert("cpu_percent".into(), json!(usage.map(|u| u.cpu_percent)));
        obj.insert("rss_bytes".into(), json!(usage.map(|u| u.rss_bytes)));
        obj.insert(
            "listening_ports".into(),
            json!(usage.map(|u| &u.listening_ports)),
        );
    }
}
