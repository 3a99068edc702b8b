//! The control socket: the daemon's side ([`serve`]) and the client's
//! ([`DaemonClient`], a `ProcessManager` that talks to a daemon, and
//! [`ReconnectingManager`], one that outlives the daemon), over the
//! protocol in [`wire`].

mod client;
mod reconnecting;
mod server;
pub mod wire;

pub use client::{Connector, DaemonClient};
pub use reconnecting::{Reconnecting, ReconnectingManager};
pub use server::{ConnectionLimits, ServerInfo, serve, serve_with};
