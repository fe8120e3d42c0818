//! Arbitrary bytes as an UNMAP parameter list, under limits taken from the input: decoding
//! must not panic; what decodes respects the limits and the capacity, fits in the bytes
//! given and re-encodes to a list that decodes to the same descriptors; errors are
//! ILLEGAL REQUEST pointing inside the list (or LBA OUT OF RANGE).
#![no_main]

use libfuzzer_sys::fuzz_target;
use scsi_proto::scsi::sense::asc;
use scsi_proto::scsi::unmap::{self, UnmapLimits};

#[path = "common.rs"]
mod common;

fn be(b: &[u8]) -> u64 {
    b.iter().fold(0, |v, &x| v << 8 | u64::from(x))
}

fuzz_target!(|data: &[u8]| {
    // 12 bytes of limits (descriptor count, LBA count, capacity), then the list.
    if data.len() < 12 {
        return;
    }
    let (head, param) = data.split_at(12);
    let limits = UnmapLimits {
        max_descriptors: be(&head[0..2]) as u32,
        max_lba_count: be(&head[2..6]) as u32,
        capacity_blocks: be(&head[6..12]),
    };
    match unmap::parse(param, &limits) {
        Ok(ds) => {
            assert!(ds.len() <= limits.max_descriptors as usize);
            assert!(8 + ds.len() * 16 <= param.len().max(8));
            let total: u64 = ds.iter().map(|d| u64::from(d.blocks)).sum();
            assert!(total <= u64::from(limits.max_lba_count));
            for d in &ds {
                assert!(d.lba + u64::from(d.blocks) <= limits.capacity_blocks);
            }
            if !param.is_empty() {
                assert_eq!(unmap::parse(&unmap::encode(&ds), &limits), Ok(ds));
            }
        }
        Err(s) => {
            assert_eq!(s.code == asc::LBA_OUT_OF_RANGE, s.information.is_some());
            common::check_sense(&s, false, param.len());
        }
    }
});
