//! `bpm mcp --http`: the same server over MCP's Streamable HTTP transport,
//! for many clients at once.
//!
//! A client that opens a session (the `initialize` handshake of the
//! revisions before 2026-07-28) gets a server of its own, [`HttpSession`],
//! whose session owns what it starts: held while the HTTP session lasts,
//! let go of when the client ends it (or it sits idle past rmcp's keep
//! alive), after which the owner's grace runs, as for a client on stdio. A
//! 2026-07-28 client has no session (SEP-2567): its requests are served by
//! the endpoint's own server, whose session the endpoint holds while it
//! runs.
//!
//! Every request passes [`HttpEndpoint::refusal`] first: the `Host` must
//! name this machine's loopback or the address listened on (DNS
//! rebinding), an `Origin`, when a browser sends one, must be this
//! endpoint's, and the bearer token must be given. A refusal is logged
//! with its reason and the peer, never with a token.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CancelTaskParams, GetTaskParams, GetTaskResult,
    InitializeRequestParams, InitializeResult, ListResourceTemplatesResult, ListResourcesResult,
    ListToolsResult, PaginatedRequestParams, ReadResourceRequestParams, ReadResourceResponse,
    ServerConfig, SubscribeRequestParams, SubscriptionFilter, Tool, UnsubscribeRequestParams,
    UpdateTaskParams,
};
use rmcp::service::{RequestContext, SubscriptionContext};
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::{ErrorData, RoleServer, ServerHandler};
use tokio_util::sync::CancellationToken;

use crate::McpServer;

/// The path the endpoint serves MCP on.
pub const MCP_PATH: &str = "/mcp";

/// Where and to whom the endpoint answers.
#[derive(Clone)]
pub struct HttpEndpoint {
    /// The address listened on.
    pub addr: SocketAddr,
    /// The bearer token every request must carry.
    pub token: String,
}

impl std::fmt::Debug for HttpEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpEndpoint")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

/// Why a request was turned away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// No `Authorization: Bearer` header.
    NoToken,
    /// A token that is not the endpoint's.
    WrongToken,
    /// A `Host` that is not this machine's loopback or the address listened on.
    WrongHost,
    /// An `Origin` that is not this endpoint's.
    WrongOrigin,
}

impl Refusal {
    /// The reason, as logged and answered.
    pub fn reason(self) -> &'static str {
        match self {
            Refusal::NoToken => {
                "no bearer token (send Authorization: Bearer, from $BPM_HOME/mcp-token)"
            }
            Refusal::WrongToken => "the bearer token is not this endpoint's",
            Refusal::WrongHost => "the Host header names another host",
            Refusal::WrongOrigin => "the Origin is not this endpoint's",
        }
    }

    fn status(self) -> StatusCode {
        match self {
            Refusal::NoToken | Refusal::WrongToken => StatusCode::UNAUTHORIZED,
            Refusal::WrongHost | Refusal::WrongOrigin => StatusCode::FORBIDDEN,
        }
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let mut response = (self.status(), format!("{}\n", self.reason())).into_response();
        if self.status() == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer realm=\"bpm\""),
            );
        }
        response
    }
}

impl HttpEndpoint {
    /// The host names a request may address: loopback's, and the address
    /// listened on.
    fn hosts(&self) -> Vec<String> {
        let mut hosts = vec!["localhost".to_owned(), "127.0.0.1".into(), "[::1]".into()];
        let ip = match self.addr.ip() {
            std::net::IpAddr::V6(v6) => format!("[{v6}]"),
            std::net::IpAddr::V4(v4) => v4.to_string(),
        };
        if !self.addr.ip().is_unspecified() && !hosts.contains(&ip) {
            hosts.push(ip);
        }
        hosts
    }

    /// The origins a browser page may call from: this endpoint's own.
    fn origins(&self) -> Vec<String> {
        let port = self.addr.port();
        self.hosts()
            .into_iter()
            .map(|h| format!("http://{h}:{port}"))
            .collect()
    }

    /// Why a request with `headers` is refused, if it is.
    pub fn refusal(&self, headers: &HeaderMap) -> Option<Refusal> {
        let text = |name| headers.get(name).and_then(|v| v.to_str().ok());
        let host_ok = text(header::HOST).is_some_and(|host| {
            let name = host_name(host);
            self.hosts().iter().any(|h| h.eq_ignore_ascii_case(name))
        });
        if !host_ok {
            return Some(Refusal::WrongHost);
        }
        if let Some(origin) = text(header::ORIGIN)
            && !self
                .origins()
                .iter()
                .any(|o| o.eq_ignore_ascii_case(origin))
        {
            return Some(Refusal::WrongOrigin);
        }
        let given = text(header::AUTHORIZATION).and_then(|v| {
            let (scheme, token) = v.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
        });
        match given {
            None => Some(Refusal::NoToken),
            Some(token) if !same_secret(token.as_bytes(), self.token.as_bytes()) => {
                Some(Refusal::WrongToken)
            }
            Some(_) => None,
        }
    }
}

/// `host` without its port (`[::1]:80` → `[::1]`, `localhost:80` → `localhost`).
fn host_name(host: &str) -> &str {
    if host.starts_with('[') {
        return host.find(']').map_or(host, |end| &host[..=end]);
    }
    host.rsplit_once(':').map_or(host, |(name, _)| name)
}

/// Whether two secrets are equal, in time that does not depend on where
/// they differ.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Serves `server`'s tools over Streamable HTTP on `listener` at
/// [`MCP_PATH`] until `stop` is cancelled.
///
/// # Errors
/// When the listener fails.
pub async fn serve_http(
    server: McpServer,
    endpoint: HttpEndpoint,
    listener: tokio::net::TcpListener,
    stop: CancellationToken,
) -> std::io::Result<()> {
    let config = StreamableHttpServerConfig::default()
        .with_allowed_hosts(endpoint.hosts())
        .with_allowed_origins(endpoint.origins())
        .enforce_origin_validation()
        .with_cancellation_token(stop.child_token());
    let shared = server;
    let service = StreamableHttpService::new(
        move || Ok(HttpSession::new(shared.clone())),
        Arc::new(LocalSessionManager::default()),
        config,
    );
    let endpoint = Arc::new(endpoint);
    let router = axum::Router::new()
        .nest_service(MCP_PATH, service)
        .layer(axum::middleware::from_fn_with_state(endpoint, guard));
    // Without TCP_NODELAY, a request whose body follows its headers in a
    // second segment waits out the peer's delayed ACK (40 ms a call).
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(
        listener,
        router.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async move { stop.cancelled().await })
    .await
}

/// Turns away what [`HttpEndpoint::refusal`] refuses, logging why.
async fn guard(
    State(endpoint): State<Arc<HttpEndpoint>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request,
    next: Next,
) -> Response {
    match endpoint.refusal(request.headers()) {
        Some(refusal) => {
            tracing::warn!(%peer, reason = refusal.reason(), method = %request.method(), "bpm mcp refused an HTTP request");
            refusal.into_response()
        }
        None => next.run(request).await,
    }
}

/// One HTTP client's server: the endpoint's own until the client opens a
/// session with `initialize`, then a server of its own whose session owns
/// what the client starts ([`McpServer::for_session`]).
#[derive(Clone)]
pub struct HttpSession {
    shared: McpServer,
    own: Arc<OnceLock<McpServer>>,
}

impl HttpSession {
    /// A client's server, serving from `shared` until it opens a session.
    pub fn new(shared: McpServer) -> Self {
        HttpSession {
            shared,
            own: Arc::new(OnceLock::new()),
        }
    }

    fn server(&self) -> &McpServer {
        self.own.get().unwrap_or(&self.shared)
    }
}

impl ServerHandler for HttpSession {
    fn get_info(&self) -> ServerConfig {
        self.server().get_info()
    }

    async fn initialize(
        &self,
        request: InitializeRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<InitializeResult, ErrorData> {
        if self.own.get().is_none() {
            let name = format!("mcp-http-{}", uuid::Uuid::now_v7().simple());
            let session = name
                .parse()
                .map_err(|e| ErrorData::internal_error(format!("{name}: {e}"), None))?;
            let own = self.shared.for_session(session).await.map_err(|e| {
                ErrorData::internal_error(format!("cannot hold the session: {e}"), None)
            })?;
            // A second `initialize` on the same session keeps the first's.
            let _ = self.own.set(own);
        }
        self.server().initialize(request, context).await
    }

    async fn list_tools(
        &self,
        request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        self.server().list_tools(request, context).await
    }

    fn get_tool(&self, name: &str) -> Option<Tool> {
        self.server().get_tool(name)
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        self.server().call_tool(request, context).await
    }

    async fn list_resources(
        &self,
        request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, ErrorData> {
        self.server().list_resources(request, context).await
    }

    async fn list_resource_templates(
        &self,
        request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListResourceTemplatesResult, ErrorData> {
        self.server()
            .list_resource_templates(request, context)
            .await
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, ErrorData> {
        self.server().read_resource(request, context).await
    }

    #[allow(deprecated)]
    async fn subscribe(
        &self,
        request: SubscribeRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        self.server().subscribe(request, context).await
    }

    #[allow(deprecated)]
    async fn unsubscribe(
        &self,
        request: UnsubscribeRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        self.server().unsubscribe(request, context).await
    }

    fn accepted_subscription_filter(
        &self,
        requested: &SubscriptionFilter,
    ) -> Option<SubscriptionFilter> {
        self.server().accepted_subscription_filter(requested)
    }

    async fn listen(&self, context: SubscriptionContext) -> Result<(), ErrorData> {
        self.server().listen(context).await
    }

    async fn get_task(
        &self,
        request: GetTaskParams,
        context: RequestContext<RoleServer>,
    ) -> Result<GetTaskResult, ErrorData> {
        self.server().get_task(request, context).await
    }

    async fn cancel_task(
        &self,
        request: CancelTaskParams,
        context: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        self.server().cancel_task(request, context).await
    }

    async fn update_task(
        &self,
        request: UpdateTaskParams,
        context: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        self.server().update_task(request, context).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint() -> HttpEndpoint {
        HttpEndpoint {
            addr: "127.0.0.1:4100".parse().unwrap(),
            token: "s3cret".into(),
        }
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn a_request_needs_a_loopback_host_its_own_origin_and_the_token() {
        let e = endpoint();
        let ok = [
            ("host", "127.0.0.1:4100"),
            ("authorization", "Bearer s3cret"),
        ];
        assert_eq!(e.refusal(&headers(&ok)), None);
        let with = |extra: &[(&'static str, &str)]| {
            let mut all: Vec<(&'static str, &str)> = ok.to_vec();
            all.retain(|(k, _)| !extra.iter().any(|(x, _)| x == k));
            all.extend_from_slice(extra);
            e.refusal(&headers(&all))
        };
        assert_eq!(with(&[("host", "localhost:4100")]), None);
        assert_eq!(with(&[("host", "[::1]:4100")]), None);
        assert_eq!(with(&[("origin", "http://localhost:4100")]), None);
        assert_eq!(with(&[("authorization", "bearer s3cret")]), None);
        assert_eq!(
            with(&[("host", "evil.example:4100")]),
            Some(Refusal::WrongHost)
        );
        assert_eq!(
            with(&[("origin", "http://evil.example")]),
            Some(Refusal::WrongOrigin)
        );
        assert_eq!(
            with(&[("origin", "http://localhost:9999")]),
            Some(Refusal::WrongOrigin)
        );
        assert_eq!(
            with(&[("authorization", "Bearer s3creT")]),
            Some(Refusal::WrongToken)
        );
        assert_eq!(
            with(&[("authorization", "Basic s3cret")]),
            Some(Refusal::NoToken)
        );
        assert_eq!(
            e.refusal(&headers(&[("host", "127.0.0.1:4100")])),
            Some(Refusal::NoToken)
        );
        assert_eq!(e.refusal(&headers(&[])), Some(Refusal::WrongHost));
    }

    #[test]
    fn hosts_lose_their_ports_and_secrets_compare_whole() {
        assert_eq!(host_name("[::1]:80"), "[::1]");
        assert_eq!(host_name("localhost"), "localhost");
        assert!(same_secret(b"abc", b"abc") && !same_secret(b"abc", b"abd"));
        assert!(!same_secret(b"abc", b"abcd"));
    }
}
