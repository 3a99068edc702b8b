//! bpm's one way in. Every front end (the command line, the MCP server,
//! project files, the page) turns what its user asks for into an
//! [`Asked`], and [`Asked::into_spec`] turns that into the
//! [`ProcessSpec`](bpm_domain::ProcessSpec) a
//! [`ProcessManager`](bpm_ports::ProcessManager) runs: one reading, one
//! set of checks, one wording of each mistake, so a field added to
//! [`Asked`] reaches every front end at once.
//!
//! What the machine must answer (is this a directory, can this be
//! watched, what does this env file hold) is asked through
//! [`bpm_ports::Machine`], which the OS adapter implements and the wiring
//! hands in with the [`Context`].
#![warn(missing_docs)]

mod asked;
mod context;
pub mod project;
pub mod request;
mod resolve;
mod spec;
pub mod view;
mod wait;

pub use asked::{Amount, Asked, Duration, HealthAsked};
pub use context::{AskError, Context, MayRead, Spelling, may_read_anything};
pub use resolve::{ResolveError, resolve_id, resolve_record};
pub use spec::command_of;
pub use wait::{FOLLOW_WITHIN, Looking, Waiter, more_output, until};
