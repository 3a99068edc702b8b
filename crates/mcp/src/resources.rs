//! Each process as two resources: `bpm://process/{id}` (its record, JSON) and
//! `bpm://process/{id}/output` (its last 1,000 lines of output, at most 64 KiB, text).

use bpm_domain::{ListFilter, ProcessId};
use bpm_ports::{OutputQuery, StreamSelect};
use rmcp::ErrorData;
use rmcp::model::{
    CacheScope, ListResourcesResult, ReadResourceResult, Resource, ResourceContents,
    ResourceTemplate,
};
use rmcp::service::SubscriptionContext;

use super::McpServer;
use super::policy::redact_text;
use bpm_intake::view::{record_json, record_json_redacted};

const PREFIX: &str = "bpm://process/";
const PAGE: usize = 100;
const OUTPUT_BYTES: usize = 64 * 1024;

/// The two resource URIs of process `id`.
pub(super) fn uris_of(id: ProcessId) -> [String; 2] {
    [format!("{PREFIX}{id}"), format!("{PREFIX}{id}/output")]
}

/// The process a URI names, and whether it names its output.
pub(super) fn parse_uri(uri: &str) -> Result<(ProcessId, bool), ErrorData> {
    let not_found = || {
        ErrorData::resource_not_found(
            format!(
                "unknown resource {uri:?}: expected bpm://process/ID or bpm://process/ID/output"
            ),
            None,
        )
    };
    let rest = uri.strip_prefix(PREFIX).ok_or_else(not_found)?;
    let (id, output) = match rest.strip_suffix("/output") {
        Some(id) => (id, true),
        None => (rest, false),
    };
    let id = id.parse::<ProcessId>().map_err(|_| not_found())?;
    Ok((id, output))
}

pub(super) fn templates() -> Vec<ResourceTemplate> {
    vec![
        ResourceTemplate::new(format!("{PREFIX}{{id}}"), "process")
            .with_description("A background process's record: state, pid, exit code, progress, timestamps.")
            .with_mime_type("application/json"),
        ResourceTemplate::new(format!("{PREFIX}{{id}}/output"), "process output")
            .with_description("The last 1,000 lines (at most 64 KiB) of a background process's stdout and stderr.")
            .with_mime_type("text/plain"),
    ]
}

/// One page of resources: two per process, oldest first; the cursor is the last id of the page.
pub(super) async fn list(
    server: &McpServer,
    cursor: Option<String>,
) -> Result<ListResourcesResult, ErrorData> {
    let after = cursor
        .map(|c| {
            c.parse::<ProcessId>().map_err(|_| {
                ErrorData::invalid_params(format!("invalid resources cursor {c:?}"), None)
            })
        })
        .transpose()?;
    let filter = ListFilter {
        after,
        limit: Some(PAGE),
        ..ListFilter::default()
    };
    let records = server
        .manager()
        .list(filter)
        .await
        .map_err(|e| ErrorData::internal_error(e.to_string(), None))?;
    let mut resources = Vec::with_capacity(records.len() * 2);
    for r in &records {
        let label = r
            .spec()
            .name
            .as_ref()
            .map_or_else(|| r.id().short(), ToString::to_string);
        let command = r
            .spec()
            .command
            .as_ref()
            .map_or_else(|| "tracked operation".to_owned(), ToString::to_string);
        let [record_uri, output_uri] = uris_of(r.id());
        resources.push(
            Resource::new(record_uri, label.clone())
                .with_description(format!("{} · {command}", r.state()))
                .with_mime_type("application/json"),
        );
        resources.push(
            Resource::new(output_uri, format!("{label} output"))
                .with_description(format!("output of {command}"))
                .with_mime_type("text/plain"),
        );
    }
    let mut result = ListResourcesResult::with_all_items(resources)
        .with_ttl_ms(0)
        .with_cache_scope(CacheScope::Private);
    if records.len() == PAGE {
        result.next_cursor = records.last().map(|r| r.id().to_string());
    }
    Ok(result)
}

pub(super) async fn read(server: &McpServer, uri: &str) -> Result<ReadResourceResult, ErrorData> {
    let (id, output) = parse_uri(uri)?;
    let m = server.manager();
    let record = m.get(id).await.map_err(|e| match e {
        bpm_ports::ManagerError::NotFound(_) => {
            ErrorData::resource_not_found(format!("no process with id {id}"), None)
        }
        other => ErrorData::internal_error(other.to_string(), None),
    })?;
    let policy = &server.inner.policy;
    let contents = if output {
        let query = OutputQuery {
            stream: StreamSelect::Both,
            cursor: None,
            max_bytes: OUTPUT_BYTES,
            tail_lines: Some(1000),
        };
        let chunk = m
            .read_output(id, query)
            .await
            .map_err(|e| ErrorData::internal_error(e.to_string(), None))?;
        let text = redact_text(
            &chunk.text(),
            &policy.secrets_of(&record, &*server.inner.defaults.machine),
        );
        ResourceContents::text(text, uri).with_mime_type("text/plain")
    } else {
        let view = if policy.redact_env {
            record_json_redacted(&record)
        } else {
            record_json(&record)
        };
        ResourceContents::text(serde_json::to_string_pretty(&view).unwrap_or_default(), uri)
            .with_mime_type("application/json")
    };
    Ok(ReadResourceResult::new(vec![contents]))
}

/// Forwards changes of the subscribed processes until the subscription ends
/// (protocol 2026-07-28 and later: `subscriptions/listen`).
pub(super) async fn listen(
    server: &McpServer,
    context: SubscriptionContext,
) -> Result<(), ErrorData> {
    let wanted: Vec<String> = context
        .accepted()
        .resource_subscriptions
        .clone()
        .unwrap_or_default();
    let mut events = server.inner.manager.subscribe();
    loop {
        tokio::select! {
            () = context.cancelled() => return Ok(()),
            event = events.recv() => match event {
                Ok(event) => {
                    for uri in uris_of(event.id) {
                        if wanted.contains(&uri) {
                            context
                                .sink()
                                .notify_resource_updated(uri)
                                .await
                                .map_err(|e| ErrorData::internal_error(e.to_string(), None))?;
                        }
                    }
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return Ok(()),
            },
        }
    }
}
