//! `bpm web`: the dashboard, served from the daemon (started when needed)
//! through a client that reconnects when the daemon restarts.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use bpm_adapters::control::{Reconnecting, ReconnectingManager};
use bpm_web::WebConfig;

use crate::home::Home;

/// What `bpm web`'s flags add to the configuration.
#[derive(Debug, Clone, Default)]
pub struct WebFlags {
    /// `--listen`.
    pub listen: Option<SocketAddr>,
    /// `--read-only`.
    pub read_only: bool,
    /// `--open`: open a browser on the page.
    pub open: bool,
}

/// How often an open page gets resource usage.
const USAGE_EVERY: Duration = Duration::from_secs(2);

/// Serves the page until interrupted; prints its URL (with the token) first.
///
/// # Errors
/// When the configuration is invalid, no daemon can be reached, the token
/// cannot be kept, or the address cannot be listened on.
pub async fn run(home: &Home, flags: WebFlags) -> anyhow::Result<()> {
    let config = crate::config::Config::load(&home.dir).map_err(anyhow::Error::msg)?;
    let listen = flags
        .listen
        .or(config.web.listen)
        .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0)));
    let reconnecting = Reconnecting::connect(crate::daemon::connector(home.clone())).await?;
    let manager = ReconnectingManager(reconnecting);
    let token = bpm_adapters::private::token_in(&home.dir.join(bpm_web::auth::TOKEN_FILE))
        .map(|(token, _)| token)
        .with_context(|| {
            format!(
                "cannot keep the page's token in {}",
                home.dir.join(bpm_web::auth::TOKEN_FILE).display()
            )
        })?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let local = listener.local_addr()?;
    let read_only = flags.read_only || config.web.read_only;
    let url = format!("http://{local}/?token={token}");
    if !bpm_web::is_loopback(&local) {
        eprintln!(
            "bpm web: warning: listening on {local}, which other machines may reach; the token is still required, but it crosses the network unencrypted (prefer 127.0.0.1 and an SSH tunnel: ssh -L {port}:127.0.0.1:{port} HOST)",
            port = local.port()
        );
    }
    println!("{url}");
    eprintln!(
        "bpm web: serving the dashboard{} on {local}; Ctrl-C stops it",
        if read_only { " (read-only)" } else { "" }
    );
    if flags.open {
        open_browser(&url);
    }
    let env = bpm_adapters::os::inherited_env();
    let settings = WebConfig {
        token,
        read_only,
        show_env: config.web.show_env,
        usage_every: USAGE_EVERY,
        cwd: std::env::current_dir().unwrap_or_else(|_| "/".into()),
        env,
        machine: Arc::new(bpm_adapters::os::ThisMachine),
    };
    let manager = Arc::new(manager);
    let status = Arc::new(Status(manager.clone()));
    let served = bpm_web::serve(listener, manager, status, settings);
    tokio::select! {
        r = served => r.context("the web server failed")?,
        _ = tokio::signal::ctrl_c() => {}
    }
    Ok(())
}

fn open_browser(url: &str) {
    match std::process::Command::new("xdg-open")
        .arg(url)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
    {
        Ok(_) => {}
        Err(e) => eprintln!("bpm web: cannot open a browser (xdg-open: {e}); open the URL above"),
    }
}

/// The daemon's own status for the page's top strip, asked over the
/// client `bpm web` holds (on a new connection if the daemon went away).
struct Status(Arc<bpm_adapters::control::ReconnectingManager>);

#[async_trait::async_trait]
impl bpm_web::DaemonView for Status {
    async fn status(&self) -> Result<bpm_ports::DaemonStatus, bpm_ports::ManagerError> {
        self.0.0.status().await
    }
}
