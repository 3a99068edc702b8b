//! Giving the heap's free pages back to the OS.

/// Returns the free pages of the process's heap to the OS, so that memory
/// used for a while and freed (the files and journal a store reads when it
/// opens, say) stops counting as the process's own.
///
/// The allocator keeps freed memory for reuse; after a one-off burst, such
/// as a daemon reading back its records, that memory would stay resident
/// for the daemon's life. On glibc this is `malloc_trim(0)`, which also
/// releases whole free pages within the heap; elsewhere it does nothing.
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: malloc_trim takes no pointer and only changes the
        // allocator's own state, under its own lock.
        #[allow(unsafe_code)]
        unsafe {
            libc::malloc_trim(0);
        }
    }
}
