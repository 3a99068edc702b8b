use bpm_domain::ProcessId;

/// Where new process ids come from.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
pub trait IdGenerator: Send + Sync + 'static {
    /// A new id, never returned before. Production ids are UUID v7, so that
    /// ids sort by creation; within one generator they MUST be strictly increasing.
    fn next_id(&self) -> ProcessId;
}
