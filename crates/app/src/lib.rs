//! bpm's application layer: the engine that drives the domain's supervisor
//! core through the ports, and the wiring that picks adapters.

pub mod cli;
pub mod config;
pub mod daemon;
pub mod engine;
pub mod keeper;
pub mod mcp;
pub mod web;
pub mod wiring;

pub use engine::{Engine, EngineConfig, Ports};
