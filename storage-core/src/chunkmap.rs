//! The hash map type of layer maps (logical chunk index -> physical chunk).
//!
//! A read probes one layer map per layer on its path, so the probe is on the per-I/O hot
//! path, and at clone depth 32 it runs 32 times per read. std's default SipHash-1-3 costs
//! about 20 ns per `u64` key; this hasher is one 64x64->128 multiply folded to 64 bits
//! (the construction of foldhash and wyhash), a few nanoseconds.
//!
//! Keys come from initiators (LBAs), so the multiplier's input is xored with a per-process
//! random seed: an initiator cannot precompute indices that collide into one bucket chain
//! the way it could against a fixed multiplicative hash.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::sync::OnceLock;

/// Layer map: logical chunk index -> physical chunk (or `HOLE`).
pub(crate) type ChunkMap = HashMap<u64, u64, ChunkHash>;

/// Builds [`ChunkHasher`]s with the process's random seed.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ChunkHash {
    seed: u64,
}

impl Default for ChunkHash {
    fn default() -> Self {
        static SEED: OnceLock<u64> = OnceLock::new();
        let seed = *SEED.get_or_init(|| {
            // RandomState is seeded from the OS's random source once per process.
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_u64(0x6c75_6e61_7221);
            h.finish() | 1
        });
        ChunkHash { seed }
    }
}

impl BuildHasher for ChunkHash {
    type Hasher = ChunkHasher;
    fn build_hasher(&self) -> ChunkHasher {
        ChunkHasher {
            seed: self.seed,
            h: 0,
        }
    }
}

/// Folded-multiply hasher for `u64` keys.
pub(crate) struct ChunkHasher {
    seed: u64,
    h: u64,
}

/// An odd constant with well-spread bits (the 64-bit golden ratio).
const K: u64 = 0x9e37_79b9_7f4a_7c15;

#[inline]
fn fold(a: u64, b: u64) -> u64 {
    let m = u128::from(a).wrapping_mul(u128::from(b));
    (m as u64) ^ ((m >> 64) as u64)
}

impl Hasher for ChunkHasher {
    #[inline]
    fn write_u64(&mut self, x: u64) {
        self.h = fold(x ^ self.seed ^ self.h, K);
    }
    /// Only `u64` keys use this hasher; other input is still hashed correctly, 8 bytes at a
    /// time, so a future key type cannot silently break the map.
    fn write(&mut self, bytes: &[u8]) {
        for c in bytes.chunks(8) {
            let mut w = [0u8; 8];
            w[..c.len()].copy_from_slice(c);
            self.write_u64(u64::from_le_bytes(w));
        }
    }
    #[inline]
    fn finish(&self) -> u64 {
        // A second fold spreads the entropy to the top 7 bits hashbrown uses as tags.
        fold(self.h, self.seed ^ K)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn behaves_as_a_map() {
        let mut m = ChunkMap::default();
        for i in 0..100_000u64 {
            m.insert(i * 16, i);
        }
        for i in 0..100_000u64 {
            assert_eq!(m.get(&(i * 16)), Some(&i));
            assert_eq!(m.get(&(i * 16 + 1)), None);
        }
    }

    /// Sequential and strided indices (what LBAs produce) spread over buckets and tags.
    #[test]
    fn spreads_strided_keys() {
        let b = ChunkHash::default();
        for stride in [1u64, 2, 16, 1 << 10, 1 << 20, 1 << 32] {
            let mut low = std::collections::HashSet::new();
            let mut top = std::collections::HashSet::new();
            for i in 0..4096u64 {
                let h = b.hash_one(i * stride);
                low.insert(h & 0xfff);
                top.insert(h >> 57);
            }
            // 4096 keys into 4096 buckets: a random function fills about 63 %.
            assert!(low.len() > 2300, "stride {stride}: {} buckets", low.len());
            assert_eq!(top.len(), 128, "stride {stride}: tags not spread");
        }
    }
}
