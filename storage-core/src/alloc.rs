//! Physical chunk allocator: one bit per chunk, derived from the layer maps on open.
//!
//! A chunk freed by a metadata change is not returned to the bitmap at once: it waits in the
//! pending list of the transaction that freed it and is released only when that transaction's
//! commit is durable (the previous committed metadata may still reference it).

/// Bitmap allocator with a rotating search cursor.
#[derive(Clone, Debug)]
pub(crate) struct Alloc {
    bits: Vec<u64>,
    total: u64,
    used: u64,
    cursor: u64,
}

impl Alloc {
    pub(crate) fn new(total: u64) -> Alloc {
        Alloc {
            bits: vec![0; total.div_ceil(64) as usize],
            total,
            used: 0,
            cursor: 0,
        }
    }
    pub(crate) fn total(&self) -> u64 {
        self.total
    }
    /// Chunks whose bit is set (owned, in flight or pending free).
    pub(crate) fn used(&self) -> u64 {
        self.used
    }
    pub(crate) fn is_set(&self, c: u64) -> bool {
        c < self.total && self.bits[(c / 64) as usize] & (1 << (c % 64)) != 0
    }
    /// Mark a chunk used (loading). Returns false if it already was.
    pub(crate) fn set(&mut self, c: u64) -> bool {
        if c >= self.total || self.is_set(c) {
            return false;
        }
        self.bits[(c / 64) as usize] |= 1 << (c % 64);
        self.used += 1;
        true
    }
    pub(crate) fn clear(&mut self, c: u64) {
        if self.is_set(c) {
            self.bits[(c / 64) as usize] &= !(1 << (c % 64));
            self.used -= 1;
        }
    }
    /// Find and mark a free chunk.
    pub(crate) fn allocate(&mut self) -> Option<u64> {
        if self.used >= self.total {
            return None;
        }
        let words = self.bits.len() as u64;
        let start = self.cursor / 64;
        for k in 0..=words {
            let w = (start + k) % words;
            let word = self.bits[w as usize];
            if word != u64::MAX {
                let bit = (!word).trailing_zeros() as u64;
                let c = w * 64 + bit;
                if c < self.total {
                    self.set(c);
                    self.cursor = c + 1;
                    return Some(c);
                }
            }
        }
        None
    }
}
