//! bpm's application layer: the configuration, the wiring that picks
//! adapters and starts an engine, and the front ends' entry points (the
//! command line, the daemon, the keeper, MCP and the web page).

pub mod agents;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod daemon;
pub mod home;
pub mod keeper;
pub mod mcp;
pub mod mcp_hub;
pub mod mcp_run;
pub use bpm_intake::project;
pub mod web;
pub mod wiring;
