//! The page's JSON API: reads, the start form, and the actions on a record.

use std::path::PathBuf;
use std::str::FromStr as _;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use bpm_domain::{ListFilter, ProcessId, ProcessRecord, ProcessSpec};
use bpm_ports::{ManagerError, OutputChunk, OutputQuery, StopOptions, StreamSelect};
use serde::Deserialize;
use serde_json::{Value, json};

use super::Shared;
use bpm_intake::view::{record_json, record_json_redacted};
use bpm_intake::{Asked, Context};

/// A failed call, as the page reads it: a status and `{"error": "..."}`.
#[derive(Debug)]
pub(super) struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "error": self.1 }))).into_response()
    }
}

impl From<ManagerError> for ApiError {
    fn from(e: ManagerError) -> Self {
        let status = match &e {
            ManagerError::NotFound(_) => StatusCode::NOT_FOUND,
            ManagerError::InvalidSpec(_) | ManagerError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ManagerError::InvalidTransition(_)
            | ManagerError::Refused(_)
            | ManagerError::Routing(_) => StatusCode::CONFLICT,
            ManagerError::Connection(_) | ManagerError::ShutDown => StatusCode::SERVICE_UNAVAILABLE,
            ManagerError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError(status, e.to_string())
    }
}

fn bad(message: impl Into<String>) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, message.into())
}

pub(super) fn parse_id(text: &str) -> Result<ProcessId, ApiError> {
    ProcessId::from_str(text).map_err(|e| bad(format!("invalid process id {text:?}: {e}")))
}

/// The command as a person would type it.
fn command_line(r: &ProcessRecord) -> String {
    match &r.spec().command {
        Some(bpm_domain::Command::Shell(line)) => line.to_string(),
        Some(bpm_domain::Command::Argv(argv)) => {
            shell_words::join(argv.iter().map(ToString::to_string))
        }
        None => String::new(),
    }
}

/// A record as a row of the table: everything but the environment, which
/// is large and only the detail pane shows.
pub(super) fn row(r: &ProcessRecord) -> Value {
    let mut v = record_json(r);
    if let Some(spec) = v.get_mut("spec").and_then(Value::as_object_mut) {
        spec.remove("env");
    }
    v["command_line"] = json!(command_line(r));
    v
}

fn full(shared: &Shared, r: &ProcessRecord) -> Value {
    let mut v = if shared.config.show_env {
        record_json(r)
    } else {
        record_json_redacted(r)
    };
    v["command_line"] = json!(command_line(r));
    v
}

pub(super) async fn status(State(s): State<Shared>) -> Result<Json<Value>, ApiError> {
    let daemon = s.daemon.status().await?;
    Ok(Json(json!({
        "daemon": daemon,
        "read_only": s.config.read_only,
        "usage_every_ms": u64::try_from(s.config.usage_every.as_millis()).unwrap_or(u64::MAX),
    })))
}

pub(super) async fn list(State(s): State<Shared>) -> Result<Json<Vec<Value>>, ApiError> {
    let records = s.manager.list(ListFilter::default()).await?;
    Ok(Json(records.iter().map(row).collect()))
}

pub(super) async fn usage(State(s): State<Shared>) -> Result<Json<Value>, ApiError> {
    Ok(Json(json!(s.manager.resource_usage().await?)))
}

pub(super) async fn detail(
    State(s): State<Shared>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id = parse_id(&id)?;
    let record = s.manager.get(id).await?;
    let events: Vec<_> = s
        .manager
        .recent_events()
        .await
        .unwrap_or_default()
        .into_iter()
        .filter(|e| e.id == id)
        .collect();
    Ok(Json(
        json!({ "record": full(&s, &record), "events": events }),
    ))
}

#[derive(Debug, Deserialize)]
pub(super) struct OutputParams {
    cursor: Option<u64>,
    #[serde(default)]
    stream: Option<String>,
    tail_lines: Option<usize>,
    max_bytes: Option<usize>,
}

pub(super) fn stream_of(name: Option<&str>) -> Result<StreamSelect, ApiError> {
    match name.unwrap_or("both") {
        "both" => Ok(StreamSelect::Both),
        "stdout" => Ok(StreamSelect::Stdout),
        "stderr" => Ok(StreamSelect::Stderr),
        other => Err(bad(format!(
            "invalid stream {other:?}: expected stdout, stderr or both"
        ))),
    }
}

/// Output as the page reads it: text (invalid UTF-8 replaced), with the cursor to go on from.
pub(super) fn chunk_json(chunk: &OutputChunk) -> Value {
    json!({
        "pieces": chunk.pieces.iter().map(|p| json!({
            "stream": p.stream,
            "offset": p.offset,
            "text": String::from_utf8_lossy(&p.data),
        })).collect::<Vec<_>>(),
        "next": chunk.next,
        "skipped": chunk.skipped,
        "truncated": chunk.truncated,
    })
}

/// The most one read of the page asks for.
const PAGE_READ: usize = 1 << 20;

pub(super) async fn output(
    State(s): State<Shared>,
    Path(id): Path<String>,
    Query(q): Query<OutputParams>,
) -> Result<Json<Value>, ApiError> {
    let id = parse_id(&id)?;
    let query = OutputQuery {
        stream: stream_of(q.stream.as_deref())?,
        cursor: q.cursor.map(bpm_ports::Cursor),
        max_bytes: q.max_bytes.unwrap_or(PAGE_READ).clamp(1, PAGE_READ),
        tail_lines: q.tail_lines,
    };
    Ok(Json(chunk_json(&s.manager.read_output(id, query).await?)))
}

pub(super) async fn download(
    State(s): State<Shared>,
    Path(id): Path<String>,
    Query(q): Query<OutputParams>,
) -> Result<Response, ApiError> {
    let id = parse_id(&id)?;
    let record = s.manager.get(id).await?;
    let stream = stream_of(q.stream.as_deref())?;
    let mut bytes = Vec::new();
    let mut cursor = None;
    // Bounded by the output cap per process; each read is at most 4 MiB.
    loop {
        let chunk = s
            .manager
            .read_output(
                id,
                OutputQuery {
                    stream,
                    cursor,
                    max_bytes: 4 << 20,
                    tail_lines: None,
                },
            )
            .await?;
        for p in &chunk.pieces {
            bytes.extend_from_slice(&p.data);
        }
        if !chunk.truncated || Some(chunk.next) == cursor {
            break;
        }
        cursor = Some(chunk.next);
    }
    let file = record
        .spec()
        .name
        .as_ref()
        .map_or_else(|| id.to_string(), ToString::to_string)
        .replace(
            |c: char| !(c.is_ascii_alphanumeric() || "-_.".contains(c)),
            "_",
        );
    Ok((
        [
            (header::CONTENT_TYPE, "text/plain; charset=utf-8".to_owned()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{file}.log\""),
            ),
        ],
        bytes,
    )
        .into_response())
}

/// The start form: every field but `command` optional; blank means unset.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct StartForm {
    command: String,
    #[serde(default)]
    shell: bool,
    #[serde(default)]
    cwd: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    group: String,
    /// `K=V`, one a line.
    #[serde(default)]
    env: String,
    #[serde(default)]
    timeout: String,
    #[serde(default)]
    restart: String,
    #[serde(default)]
    ready_pattern: String,
    #[serde(default)]
    ready_port: Option<u16>,
}

fn set(text: &str) -> Option<&str> {
    Some(text.trim()).filter(|t| !t.is_empty())
}

/// What the form asks for. The page's form is short on purpose: it
/// offers a command, its directory and environment, a name, a group, a
/// timeout, a restart policy and a log or port readiness check; the rest
/// of [`Asked`] is left to the CLI, MCP and project files
/// (`web_form_leaves_out` in the request test names each field).
fn asked_of(form: &StartForm) -> Result<Asked, ApiError> {
    asked_of_form(form).map_err(bad)
}

/// The start form, as the page sends it, as every front end writes a
/// request ([`Asked`]).
///
/// # Errors
/// A form that does not read, naming the field.
pub fn form_asks(form: serde_json::Value) -> Result<Asked, String> {
    let form: StartForm = serde_json::from_value(form).map_err(|e| e.to_string())?;
    asked_of_form(&form)
}

fn asked_of_form(form: &StartForm) -> Result<Asked, String> {
    let command =
        set(&form.command).ok_or_else(|| "command: give the command to run".to_owned())?;
    let (command, argv) = if form.shell {
        (Some(command.into()), None)
    } else {
        let argv = shell_words::split(command).map_err(|e| format!("command: {e}"))?;
        (None, Some(argv.into_iter().map(Into::into).collect()))
    };
    let mut env = std::collections::BTreeMap::new();
    for (n, line) in form.env.lines().enumerate() {
        let Some(line) = set(line) else { continue };
        let (k, v) = line
            .split_once('=')
            .filter(|(k, _)| !k.is_empty())
            .ok_or_else(|| format!("env line {}: expected KEY=VALUE, got {line:?}", n + 1))?;
        env.insert(k.into(), v.into());
    }
    Ok(Asked {
        command,
        argv,
        cwd: set(&form.cwd).map(PathBuf::from),
        env,
        name: set(&form.name).map(str::to_owned),
        group: set(&form.group).map(str::to_owned),
        timeout: set(&form.timeout).map(bpm_intake::Duration::from),
        restart: set(&form.restart).map(str::to_owned),
        ready_pattern: set(&form.ready_pattern).map(str::to_owned),
        ready_port: form.ready_port,
        ..Asked::default()
    })
}

fn spec_of(s: &Shared, form: &StartForm) -> Result<ProcessSpec, ApiError> {
    let asked = asked_of(form)?;
    let ctx = Context::new(&s.config.cwd, &s.config.env, &*s.config.machine);
    asked.into_spec(&ctx).map_err(|e| bad(e.to_string()))
}

pub(super) async fn start(
    State(s): State<Shared>,
    Json(form): Json<StartForm>,
) -> Result<Json<Value>, ApiError> {
    let spec = spec_of(&s, &form)?;
    Ok(Json(row(&s.manager.start(spec).await?)))
}

/// The body of an action; only `stop` reads it.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ActionBody {
    #[serde(default)]
    force: bool,
}

pub(super) async fn action(
    State(s): State<Shared>,
    Path((id, action)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    let id = parse_id(&id)?;
    // The body is optional: none, or `{"force": true}` for a stop.
    let body: ActionBody = if body.iter().all(u8::is_ascii_whitespace) {
        ActionBody::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| bad(format!("invalid body: {e}")))?
    };
    let m = &s.manager;
    let record = match action.as_str() {
        "stop" => {
            m.stop(
                id,
                StopOptions {
                    force: body.force,
                    grace: None,
                },
            )
            .await?
        }
        "pause" => m.pause(id).await?,
        "resume" => m.resume(id).await?,
        "restart" => m.restart(id).await?,
        other => {
            return Err(ApiError(
                StatusCode::NOT_FOUND,
                format!("unknown action {other:?}: expected stop, pause, resume or restart"),
            ));
        }
    };
    Ok(Json(row(&record)))
}

/// `POST /api/projects/{project}/services/{service}/scale` with
/// `{"replicas": N}`: the service made to run N copies, as `bpm scale`
/// does; the steps done, each `{service, action, process_id}`.
pub(super) async fn scale(
    State(s): State<Shared>,
    Path((project, service)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Body {
        replicas: i64,
    }
    let body: Body = serde_json::from_slice(&body).map_err(|e| {
        bad(format!(
            "invalid body: {e}: expected {{\"replicas\": N}}, N from 1 to 1000"
        ))
    })?;
    let steps = bpm_intake::project::scale(&*s.manager, &project, &service, body.replicas, |_| {})
        .await
        .map_err(|(who, e)| match e {
            bpm_intake::project::ScaleError::Refused(why) => bad(format!("{who}: {why}")),
            bpm_intake::project::ScaleError::Manager(e) => {
                let ApiError(status, text) = ApiError::from(e);
                ApiError(status, format!("{who}: {text}"))
            }
        })?;
    let steps: Vec<Value> = steps
        .iter()
        .map(|st| json!({ "service": st.service, "action": st.done.to_string(), "process_id": st.id }))
        .collect();
    Ok(Json(json!({
        "project": project,
        "service": service,
        "replicas": body.replicas,
        "steps": steps,
    })))
}

pub(super) async fn remove(
    State(s): State<Shared>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id = parse_id(&id)?;
    s.manager.remove(id).await?;
    Ok(Json(json!({ "removed": id })))
}
