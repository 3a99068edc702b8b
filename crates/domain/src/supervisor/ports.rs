//! Ports handed out to records of this node ([`crate::port`]): a port is
//! held by the live record it was given to.

use super::{CoreError, Supervisor};
use crate::port::{PortAsk, pick};
use crate::{ProcessId, ProcessRecord};

impl Supervisor {
    /// The live record of this node holding `port`, other than `except`.
    fn port_holder(&self, port: u16, except: Option<ProcessId>) -> Option<&ProcessRecord> {
        self.entries.values().map(|e| &e.record).find(|r| {
            r.port() == Some(port)
                && Some(r.id()) != except
                && !r.is_terminal()
                && r.node() == &self.node
        })
    }

    /// The port `ask` is given: the one `replacing` (a live record this
    /// one replaces, which gives its port up when it ends) holds when the
    /// ask admits it, otherwise the first of `free` (the kernel's view; by
    /// default the ports asked for) no live record holds.
    pub(super) fn hand_out_port(
        &self,
        ask: PortAsk,
        free: Option<&[u16]>,
        replacing: Option<ProcessId>,
    ) -> Result<u16, CoreError> {
        if let Some(port) = replacing
            .and_then(|r| self.entries.get(&r))
            .and_then(|e| e.record.port())
            .filter(|p| ask.admits(*p))
        {
            return Ok(port);
        }
        let asked: Vec<u16> = match ask {
            PortAsk::Auto => Vec::new(),
            PortAsk::Range { first, last } => (first..=last).collect(),
            PortAsk::Fixed(p) => vec![p],
        };
        let free = free.unwrap_or(&asked);
        let held_by = |port| {
            self.port_holder(port, replacing)
                .map(|r| match &r.spec().name {
                    Some(name) => format!("{} ({name})", r.id()),
                    None => r.id().to_string(),
                })
        };
        Ok(pick(ask, free, held_by)?)
    }
}
