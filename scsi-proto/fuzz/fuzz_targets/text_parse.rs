//! Arbitrary bytes as key=value text: parsing must not panic, and whatever parses must
//! encode back to text that parses to the same pairs.
#![no_main]

use libfuzzer_sys::fuzz_target;
use scsi_proto::iscsi::text;

fuzz_target!(|data: &[u8]| {
    if let Ok(pairs) = text::parse(data) {
        let again = text::encode(pairs.iter().map(|kv| (kv.key.as_str(), kv.value.as_str())));
        assert_eq!(text::parse(&again).as_ref(), Ok(&pairs));
    }
});
