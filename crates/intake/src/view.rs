//! How front ends show a record as JSON: the record as it is stored, plus the
//! flat fields scripts and agents want (`bpm ps --json`, `bpm show --json`,
//! and every MCP tool that returns a record).

use bpm_domain::{ExitStatus, ProcessRecord};
use serde_json::{Value, json};

/// The record, with `name`, `kind`, `session`, `parent`, `group`, `labels`,
/// `metadata`, `pid`, `port`, `exit_code`, `signal`, `started_at`, `ended_at` and
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
        obj.insert("port".into(), json!(r.port()));
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
        if !r.is_tracked() {
            obj.insert("fence_token".into(), json!(r.fence_token()));
        }
    }
    v
}

/// The placeholder that replaces a redacted value.
pub const REDACTED: &str = "[redacted]";

/// [`record_json`] with every environment value replaced by [`REDACTED`].
pub fn record_json_redacted(r: &ProcessRecord) -> Value {
    let mut v = record_json(r);
    match v.get_mut("spec").and_then(|s| s.get_mut("env")) {
        Some(Value::Object(env)) => {
            for value in env.values_mut() {
                *value = Value::String(REDACTED.into());
            }
        }
        // A name that is not UTF-8 makes it a list of [name, value] pairs.
        Some(Value::Array(pairs)) => {
            for pair in pairs {
                if let Some(value) = pair.get_mut(1) {
                    *value = Value::String(REDACTED.into());
                }
            }
        }
        _ => {}
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

#[cfg(test)]
mod tests {
    use super::*;
    use bpm_domain::{NodeId, OsText, ProcessId, ProcessSpec, Timestamp};

    #[test]
    fn every_value_is_redacted_whatever_the_names() {
        for name in [
            OsText::from("TOKEN"),
            OsText::from_bytes(b"T\xffK".to_vec()),
        ] {
            let mut spec = ProcessSpec::argv(["x"]);
            std::sync::Arc::make_mut(&mut spec.env)
                .insert(name, OsText::from_bytes(b"s3cret\xfe".to_vec()));
            let r = ProcessRecord::new(
                ProcessId::from_uuid(uuid::Uuid::from_u128(1)),
                NodeId::local(),
                spec,
                Timestamp::from_millis(1),
            );
            let shown = record_json_redacted(&r).to_string();
            assert!(
                !shown.contains("s3cret") && !shown.contains("733363726574"),
                "{shown}"
            );
            assert!(shown.contains(REDACTED), "{shown}");
        }
    }
}
