//! `bpm web`: a live dashboard for people, served over HTTP by axum from any
//! [`ProcessManager`] (in the binary, the daemon's client).
//!
//! The page is three embedded files (no build step, no network). It loads
//! the records once, then follows one server-sent-event stream: every event
//! of the daemon arrives with the record as it is after it, and, every
//! `usage_every` while at least one page is open, what each running tree
//! uses. With no page open the server holds nothing but its listening
//! socket: it subscribes to events and samples usage only for open streams.
//!
//! Access needs the token (see [`auth`]); every change also needs the
//! page's own `Origin`, and none is accepted in read-only mode.

mod api;
pub use api::form_asks;
pub mod auth;
mod live;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use axum::Router;
use axum::http::{HeaderValue, header};
use axum::routing::{get, post};
use bpm_ports::{ManagerError, ProcessManager};
use tower_http::set_header::SetResponseHeaderLayer;

use bpm_ports::DaemonStatus;

/// What the daemon says about itself, beyond [`ProcessManager`]: for the
/// page's top strip.
#[async_trait]
pub trait DaemonView: Send + Sync + 'static {
    /// The daemon's version, store, node, start time, limits and counts.
    ///
    /// # Errors
    /// When the daemon cannot be reached.
    async fn status(&self) -> Result<DaemonStatus, ManagerError>;
}

/// How the page is served.
#[derive(Clone)]
pub struct WebConfig {
    /// The secret a browser must present.
    pub token: String,
    /// Show, never change.
    pub read_only: bool,
    /// Show environment values instead of `[redacted]`.
    pub show_env: bool,
    /// How often open pages get resource usage.
    pub usage_every: Duration,
    /// The working directory a process started from the page gets unless the form names one.
    pub cwd: PathBuf,
    /// The environment it starts from (the form's variables go on top).
    pub env: bpm_domain::Environment,
    /// What a start's directory is checked against.
    pub machine: Arc<dyn bpm_ports::Machine>,
}

struct WebState {
    manager: Arc<dyn ProcessManager>,
    daemon: Arc<dyn DaemonView>,
    config: WebConfig,
    port: u16,
}

type Shared = Arc<WebState>;

const INDEX_HTML: &str = include_str!("assets/index.html");
const APP_JS: &str = include_str!("assets/app.js");
const APP_CSS: &str = include_str!("assets/app.css");

fn asset(
    kind: &'static str,
    body: &'static str,
) -> impl Fn() -> std::future::Ready<axum::response::Response> + Clone {
    move || {
        std::future::ready(axum::response::IntoResponse::into_response((
            [(header::CONTENT_TYPE, kind)],
            body,
        )))
    }
}

/// The page and its API for a server reached at `port`.
pub fn router(
    manager: Arc<dyn ProcessManager>,
    daemon: Arc<dyn DaemonView>,
    config: WebConfig,
    port: u16,
) -> Router {
    let shared: Shared = Arc::new(WebState {
        manager,
        daemon,
        config,
        port,
    });
    let header = |name, value: &'static str| {
        SetResponseHeaderLayer::if_not_present(name, HeaderValue::from_static(value))
    };
    Router::new()
        .route("/", get(asset("text/html; charset=utf-8", INDEX_HTML)))
        .route("/assets/app.js", get(asset("text/javascript; charset=utf-8", APP_JS)))
        .route("/assets/app.css", get(asset("text/css; charset=utf-8", APP_CSS)))
        .route("/api/status", get(api::status))
        .route("/api/processes", get(api::list).post(api::start))
        .route("/api/processes/{id}", get(api::detail).delete(api::remove))
        .route("/api/processes/{id}/output", get(api::output))
        .route("/api/processes/{id}/output.txt", get(api::download))
        .route("/api/processes/{id}/output/live", get(live::output))
        .route("/api/processes/{id}/{action}", post(api::action))
        .route(
            "/api/projects/{project}/services/{service}/scale",
            post(api::scale),
        )
        .route("/api/usage", get(api::usage))
        .route("/api/live", get(live::events))
        .layer(axum::middleware::from_fn_with_state(
            shared.clone(),
            auth::guard,
        ))
        .layer(header(
            header::CONTENT_SECURITY_POLICY,
            "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
        ))
        .layer(header(header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .layer(header(header::REFERRER_POLICY, "no-referrer"))
        .layer(header(header::X_FRAME_OPTIONS, "DENY"))
        .layer(header(header::CACHE_CONTROL, "no-store"))
        .with_state(shared)
}

/// Serves the page on `listener` until the process ends.
///
/// # Errors
/// When the listener fails.
pub async fn serve(
    listener: tokio::net::TcpListener,
    manager: Arc<dyn ProcessManager>,
    daemon: Arc<dyn DaemonView>,
    config: WebConfig,
) -> std::io::Result<()> {
    use axum::serve::ListenerExt as _;
    let port = listener.local_addr()?.port();
    // Events are small writes in quick succession (a start is three or
    // four): with Nagle's algorithm each waited for the browser's delayed
    // acknowledgement of the one before, up to 200 ms.
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, router(manager, daemon, config, port)).await
}

/// Whether serving on `addr` reaches only this machine.
pub fn is_loopback(addr: &SocketAddr) -> bool {
    addr.ip().is_loopback()
}
