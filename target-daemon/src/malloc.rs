//! The allocator settings for I/O buffers.
//!
//! Every large command allocates its buffers afresh: a 1 MiB READ its Data-In, a 1 MiB
//! WRITE the receive buffers its Data-Out lands in. With glibc's defaults such a buffer is
//! either its own `mmap` (below the dynamic threshold's first move) or carved from a
//! thread's arena, which `free` trims back to the kernel with `madvise` as soon as the top
//! of the heap is free. Either way the next command's buffer faults its pages in again and
//! the kernel zeroes them: in a 1 MiB sequential read or write on tmpfs, page faults and
//! `madvise` were 10-12% of the daemon's CPU time (docs/performance.md, issue 17).
//!
//! [`keep_io_buffers`] raises both thresholds once at start-up, so buffers up to the largest
//! command (`config::MAX_COMMAND_DATA`) come from the arenas and freed ones stay there for
//! the next command. What this costs is memory kept after a burst: at most what was in use
//! at the peak, which the read and write buffer budgets bound, and no more than
//! [`TRIM_THRESHOLD`] of free space at the top of each arena.

/// Allocations up to this size come from the arenas (glibc's largest allowed value on 64-bit
/// systems is 32 MiB, above `config::MAX_COMMAND_DATA`).
const MMAP_THRESHOLD: i32 = 32 * 1024 * 1024;

/// Free space at the top of an arena is returned to the kernel only beyond this.
const TRIM_THRESHOLD: i32 = 64 * 1024 * 1024;

/// Applies the settings; call before any thread is started. Returns false when the C library
/// refused them (the daemon runs as before) or is not glibc.
pub fn keep_io_buffers() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallopt only changes allocator parameters; it is called at start-up,
        // before the daemon starts threads, with values glibc documents as valid.
        let mmap = unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD) };
        // SAFETY: as above.
        let trim = unsafe { libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD) };
        mmap == 1 && trim == 1
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

#[cfg(test)]
mod tests {
    /// glibc accepts the values (mallopt returns 1 on success): a value out of its range
    /// would silently leave the defaults in place.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn glibc_accepts_the_thresholds() {
        assert!(super::keep_io_buffers());
    }
}
