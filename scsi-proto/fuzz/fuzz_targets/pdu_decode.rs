//! Feed arbitrary bytes to the PDU decoder under every digest setting; decoded PDUs must
//! re-encode and decode to themselves.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use scsi_proto::iscsi::pdu::{decode, CodecConfig};

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let cfg = CodecConfig {
        header_digest: flags & 1 != 0,
        data_digest: flags & 2 != 0,
        max_recv_data_segment_length: 65_536,
        max_send_data_segment_length: 65_536,
    };
    let mut buf = BytesMut::from(rest);
    loop {
        let before = buf.len();
        match decode(&mut buf, &cfg) {
            Ok(Some(pdu)) => {
                let mut out = BytesMut::new();
                if pdu.encode(&cfg, &mut out).is_ok() {
                    let again = decode(&mut out, &cfg).expect("re-encoded PDU decodes");
                    assert_eq!(again.as_ref(), Some(&pdu));
                }
            }
            Ok(None) => break,
            Err(e) if e.is_fatal() => break,
            Err(_) => {}
        }
        assert!(buf.len() < before, "decoder must make progress");
    }
});
