//! Arbitrary bytes as an EXTENDED COPY (LID1) parameter list under the limits a LUN
//! advertises: decoding must not panic; a decoded list respects every advertised limit and
//! cannot describe more descriptors than the bytes hold; errors are ILLEGAL REQUEST
//! pointing inside the list.
#![no_main]

use libfuzzer_sys::fuzz_target;
use scsi_proto::scsi::xcopy::{self, CopyLimits};

#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    // The first byte picks the logical block size the limits are derived from.
    let Some((&bs, param)) = data.split_first() else {
        return;
    };
    let limits = CopyLimits::for_block_size(512 << (bs % 8));
    match xcopy::parse(param, &limits) {
        Ok(None) => assert!(param.is_empty()),
        Ok(Some(list)) => {
            assert!(list.targets.len() <= usize::from(limits.max_target_descriptors));
            assert!(list.segments.len() <= usize::from(limits.max_segment_descriptors));
            let described = xcopy::HEADER_LEN
                + list.targets.len() * xcopy::TARGET_DESCRIPTOR_LEN
                + list.segments.len() * xcopy::SEGMENT_DESCRIPTOR_LEN;
            assert!(described <= param.len());
            assert!(described - xcopy::HEADER_LEN <= limits.max_descriptor_list_len as usize);
            for t in &list.targets {
                assert!(t.designator.len() <= 20);
                assert_eq!(t.peripheral_type, 0);
                assert!(t.block_size < 1 << 24);
            }
        }
        Err(s) => common::check_sense(&s, false, param.len()),
    }
});
