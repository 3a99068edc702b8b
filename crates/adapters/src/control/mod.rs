//! The control socket: the daemon's side ([`serve`]) and the client's
//! ([`DaemonClient`], a `ProcessManager` that talks to a daemon), over the
//! protocol in [`wire`].

mod client;
mod server;
pub mod wire;

pub use client::DaemonClient;
pub use server::{ConnectionLimits, ServerInfo, serve, serve_with};
