//! Helpers shared by Lunar's tests: `target-daemon`'s own tests (a dev-dependency) and the
//! end-to-end crate `lunar-e2e`. What used to be copied from test file to test file lives
//! here once (issue 15, item 6), in the spirit of rustls's test utilities.
//!
//! - [`initiator`]: a small raw iSCSI initiator on tokio, built on scsi-proto's codec (login
//!   with or without CHAP, SCSI commands with immediate data, R2Ts and Data-In, TMFs);
//! - [`cdb`]: READ/WRITE-style CDB builders (6, 10, 12 and 16 bytes);
//! - [`pattern`]: the one deterministic test data pattern;
//! - [`lunard`]: starting a `lunard` process and reading its readiness line, and the name
//!   of the "demo" target many tests log in to;
//! - [`markdown`]: the fenced code blocks of a doc, for the tests that run the docs.
//!
//! It never depends on `target-daemon`, so both that crate's tests and the end-to-end tests
//! can use it. The end-to-end suite's byte-by-byte initiator (`lunar_e2e::raw`) stays apart
//! on purpose: it shares no code with scsi-proto's codec, so a codec bug cannot hide by being
//! on both ends of a hostile test.

pub mod cdb;
pub mod initiator;
pub mod lunard;
pub mod markdown;

/// Deterministic test data: `len` bytes derived from `seed`.
///
/// Byte `i` is `i * 31 + seed`, XORed with the index of its 512-byte block, so neighbouring
/// bytes differ, two seeds give different data, and every 512-byte block differs from the
/// next (a block written to the wrong LBA, or a block of another seed, never compares
/// equal). The same `(len, seed)` always gives the same bytes, on every machine and run.
pub fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ ((i >> 9) as u8))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::pattern;

    #[test]
    fn pattern_is_deterministic_and_blocks_differ() {
        assert_eq!(pattern(4096, 7), pattern(4096, 7));
        assert_ne!(pattern(4096, 7), pattern(4096, 8));
        let p = pattern(2048, 1);
        for b in 1..4 {
            assert_ne!(p[..512], p[b * 512..(b + 1) * 512], "block {b}");
        }
    }
}
