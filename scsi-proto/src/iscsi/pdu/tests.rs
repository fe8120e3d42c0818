//! Golden vectors (built by hand from the RFC 7143 section 11 layouts) and property tests.

use bytes::{Bytes, BytesMut};
use proptest::prelude::*;

use super::*;
use crate::iscsi::digest;

fn cfg(hd: bool, dd: bool) -> CodecConfig {
    CodecConfig {
        header_digest: hd,
        data_digest: dd,
        max_recv_data_segment_length: 262_144,
        max_send_data_segment_length: 262_144,
    }
}

/// Login Request, leading login, Security -> Operational with T bit, carrying
/// "InitiatorName=iqn.x\0" (20 bytes, no padding needed).
fn login_request_bytes() -> Vec<u8> {
    let text = b"InitiatorName=iqn.x\0";
    let mut b = vec![0u8; 48];
    b[0] = 0x43; // I=1, opcode 0x03
    b[1] = 0x81; // T=1, C=0, CSG=0, NSG=1
    b[2] = 0x00; // Version-max
    b[3] = 0x00; // Version-min
    b[5..8].copy_from_slice(&[0, 0, text.len() as u8]);
    b[8..14].copy_from_slice(&[0x00, 0x02, 0x3d, 0x00, 0x00, 0x01]); // ISID
    b[14..16].copy_from_slice(&[0, 0]); // TSIH
    b[16..20].copy_from_slice(&[0, 0, 0, 7]); // ITT
    b[20..22].copy_from_slice(&[0, 1]); // CID
    b[24..28].copy_from_slice(&[0, 0, 0, 0x55]); // CmdSN
    b[28..32].copy_from_slice(&[0, 0, 0, 0x66]); // ExpStatSN
    b.extend_from_slice(text);
    b
}

#[test]
fn golden_login_request() {
    let mut buf = BytesMut::from(&login_request_bytes()[..]);
    let pdu = decode(&mut buf, &CodecConfig::default())
        .expect("valid")
        .expect("complete");
    assert!(buf.is_empty());
    let Bhs::LoginRequest(h) = &pdu.bhs else {
        panic!("wrong type {:?}", pdu.bhs)
    };
    assert!(h.transit && !h.continue_bit);
    assert_eq!(h.csg, LoginStage::Security);
    assert_eq!(h.nsg, LoginStage::Operational);
    assert_eq!(h.isid, 0x0002_3d00_0001);
    assert_eq!(
        (h.tsih, h.itt, h.cid, h.cmd_sn, h.exp_stat_sn),
        (0, 7, 1, 0x55, 0x66)
    );
    assert_eq!(&pdu.data[..], b"InitiatorName=iqn.x\0");
    // And back to the same bytes.
    let mut out = BytesMut::new();
    pdu.encode(&CodecConfig::default(), &mut out)
        .expect("encodes");
    assert_eq!(&out[..], &login_request_bytes()[..]);
}

#[test]
fn partial_input_needs_more() {
    let bytes = login_request_bytes();
    assert_eq!(frame_len(&bytes[..47], &CodecConfig::default()), Ok(None));
    assert_eq!(
        frame_len(&bytes[..48], &CodecConfig::default()),
        Ok(Some(bytes.len()))
    );
    let digests = CodecConfig {
        header_digest: true,
        data_digest: true,
        ..CodecConfig::default()
    };
    assert_eq!(frame_len(&bytes[..48], &digests), Ok(Some(bytes.len() + 8)));
    for cut in 0..bytes.len() {
        let mut buf = BytesMut::from(&bytes[..cut]);
        assert_eq!(
            decode(&mut buf, &CodecConfig::default()),
            Ok(None),
            "cut {cut}"
        );
        assert_eq!(buf.len(), cut, "nothing consumed");
    }
}

#[test]
fn golden_scsi_command_with_ahs() {
    // WRITE(32)-sized CDB: 32 bytes -> 16 in the BHS, 16 in an extended CDB AHS
    // (AHSLength = 32 - 15 = 17, padded to 20 + 4 = 24... see below), plus bidi AHS.
    let mut b = vec![0u8; 48];
    b[0] = 0x01;
    b[1] = 0x80 | 0x20 | 0x01; // F, W, SIMPLE
    b[8] = 0x00;
    b[9] = 0x03; // LUN 3 (peripheral)
    b[16..20].copy_from_slice(&[0, 0, 0x10, 0x00]);
    b[20..24].copy_from_slice(&[0, 0, 0x20, 0x00]); // EDTL 8192
    b[24..28].copy_from_slice(&[0, 0, 0, 9]);
    b[28..32].copy_from_slice(&[0, 0, 0, 4]);
    for (i, x) in b[32..48].iter_mut().enumerate() {
        *x = i as u8;
    }
    let mut ahs = vec![0x00, 17, 0x01, 0x00];
    ahs.extend(16u8..32);
    // 3 + 17 = 20 bytes -> no padding.
    ahs.extend_from_slice(&[0x00, 0x05, 0x02, 0x00, 0x00, 0x00, 0x02, 0x00]);
    b[4] = (ahs.len() / 4) as u8;
    b.extend_from_slice(&ahs);
    let mut buf = BytesMut::from(&b[..]);
    let pdu = decode(&mut buf, &cfg(false, false))
        .expect("valid")
        .expect("complete");
    let Bhs::ScsiCommand(cmd) = &pdu.bhs else {
        panic!("wrong type")
    };
    assert!(cmd.final_bit && cmd.write && !cmd.read && !cmd.immediate);
    assert_eq!(cmd.attr, TaskAttribute::Simple);
    assert_eq!(lun_from_wire(cmd.lun), Some(3));
    assert_eq!(cmd.expected_data_transfer_length, 8192);
    assert_eq!(cmd.bidi_read_length, Some(512));
    let full = cmd.full_cdb();
    assert_eq!(full.len(), 32);
    assert!(full.iter().enumerate().all(|(i, &x)| x == i as u8));
    let mut out = BytesMut::new();
    pdu.encode(&cfg(false, false), &mut out).expect("encodes");
    assert_eq!(&out[..], &b[..]);
}

#[test]
fn golden_data_in_with_status_and_padding() {
    let pdu = Pdu::new(
        DataIn {
            final_bit: true,
            ack: false,
            overflow: false,
            underflow: true,
            status: Some(0),
            lun: 0,
            itt: 0x1234,
            ttt: RESERVED_TAG,
            stat_sn: 5,
            exp_cmd_sn: 6,
            max_cmd_sn: 37,
            data_sn: 0,
            buffer_offset: 0,
            residual_count: 3,
        },
        Bytes::from_static(b"hello"),
    );
    let mut out = BytesMut::new();
    pdu.encode(&cfg(false, false), &mut out).expect("encodes");
    assert_eq!(out.len(), 48 + 8);
    assert_eq!(out[0], 0x25);
    assert_eq!(out[1], 0x80 | 0x02 | 0x01);
    assert_eq!(out[3], 0);
    assert_eq!(&out[5..8], &[0, 0, 5]);
    assert_eq!(&out[16..20], &[0, 0, 0x12, 0x34]);
    assert_eq!(&out[20..24], &[0xff; 4]);
    assert_eq!(&out[44..48], &[0, 0, 0, 3]);
    assert_eq!(&out[48..], b"hello\0\0\0");
}

#[test]
fn digests_are_appended_and_checked() {
    let pdu = Pdu::new(
        NopOut {
            immediate: true,
            lun: 0,
            itt: 1,
            ttt: RESERVED_TAG,
            cmd_sn: 2,
            exp_stat_sn: 3,
        },
        Bytes::from_static(b"ping!"),
    );
    let c = cfg(true, true);
    let mut out = BytesMut::new();
    pdu.encode(&c, &mut out).expect("encodes");
    assert_eq!(out.len(), 48 + 4 + 8 + 4);
    let hd = digest::crc32c_of(&[&out[..48]]);
    assert_eq!(&out[48..52], &digest::to_wire(hd));
    let dd = digest::crc32c_of(&[&out[52..60]]);
    assert_eq!(&out[60..64], &digest::to_wire(dd));
    let mut ok = out.clone();
    assert_eq!(decode(&mut ok, &c).expect("valid"), Some(pdu.clone()));

    // Corrupt the header: fatal.
    let mut bad = out.clone();
    bad[20] ^= 1;
    let err = decode(&mut bad, &c).expect_err("header digest");
    assert!(matches!(err, PduError::HeaderDigest { .. }));
    assert!(err.is_fatal());
    assert_eq!(err.reject_reason(), None);

    // A corrupted DataSegmentLength is caught by the header digest as soon as the header is
    // in, before waiting for (or refusing) a data segment that does not exist.
    let mut bad = BytesMut::from(&out[..52]);
    bad[6] = 0x40;
    assert!(matches!(
        decode(&mut bad, &c),
        Err(PduError::HeaderDigest { .. })
    ));
    assert_eq!(bad.len(), 52, "fatal errors consume nothing");
    let mut partial = BytesMut::from(&out[..52]);
    assert_eq!(
        decode(&mut partial, &c),
        Ok(None),
        "header fine, data still to come"
    );

    // Corrupt the data, followed by another good PDU: reject 0x02, stream stays in sync.
    let mut bad = out.clone();
    bad[53] ^= 0x80;
    bad.extend_from_slice(&out);
    let err = decode(&mut bad, &c).expect_err("data digest");
    assert!(!err.is_fatal());
    assert_eq!(err.reject_reason(), Some(RejectReason::DataDigestError));
    assert_eq!(err.rejected_header().map(|h| &h[..]), Some(&out[..48]));
    assert_eq!(decode(&mut bad, &c).expect("next is fine"), Some(pdu));
    assert!(bad.is_empty());
}

#[test]
fn oversized_segment_refused_before_buffering() {
    let mut b = login_request_bytes();
    b[5..8].copy_from_slice(&[0xff, 0xff, 0xff]);
    b.truncate(48);
    let mut buf = BytesMut::from(&b[..]);
    let err = decode(&mut buf, &CodecConfig::default()).expect_err("too long");
    assert_eq!(
        err,
        PduError::DataSegmentTooLong {
            length: 0xff_ffff,
            limit: 8192
        }
    );
    assert!(err.is_fatal());
}

#[test]
fn unknown_opcode_and_stray_ahs_are_rejectable() {
    let mut b = [0u8; 48];
    b[0] = 0x1c; // vendor-specific initiator opcode
    let mut buf = BytesMut::from(&b[..]);
    let err = decode(&mut buf, &CodecConfig::default()).expect_err("unsupported");
    assert_eq!(err.reject_reason(), Some(RejectReason::CommandNotSupported));
    assert!(buf.is_empty());

    let mut b = [0u8; 56];
    b[0] = 0x00; // NOP-Out with an AHS
    b[4] = 2;
    let mut buf = BytesMut::from(&b[..]);
    let err = decode(&mut buf, &CodecConfig::default()).expect_err("stray AHS");
    assert_eq!(err.reject_reason(), Some(RejectReason::InvalidPduField));
}

#[test]
fn encode_refuses_oversized_data() {
    let pdu = Pdu::new(
        TextResponse {
            final_bit: true,
            continue_bit: false,
            lun: 0,
            itt: 1,
            ttt: RESERVED_TAG,
            stat_sn: 1,
            exp_cmd_sn: 1,
            max_cmd_sn: 1,
        },
        Bytes::from(vec![b'a'; 8193]),
    );
    let err = pdu
        .encode(&CodecConfig::default(), &mut BytesMut::new())
        .expect_err("too long");
    assert!(matches!(
        err,
        PduError::DataSegmentTooLong { length: 8193, .. }
    ));
}

#[test]
fn lun_and_sense_helpers() {
    assert_eq!(lun_to_wire(5), Some(0x0005_0000_0000_0000));
    assert_eq!(lun_to_wire(300), Some(0x412c_0000_0000_0000));
    assert_eq!(lun_from_wire(0x412c_0000_0000_0000), Some(300));
    assert_eq!(lun_to_wire(0x4000), None);
    assert_eq!(lun_from_wire(0x0105_0000_0000_0000), None); // bus 1
    assert_eq!(lun_from_wire(0x0005_0000_0000_0001), None); // second level
    let seg = sense_segment(&[0x70, 0, 5]).expect("short sense");
    assert_eq!(&seg[..], &[0, 3, 0x70, 0, 5]);
    assert_eq!(
        parse_sense_segment(&seg).as_deref(),
        Some(&[0x70, 0, 5][..])
    );
    assert_eq!(parse_sense_segment(&Bytes::from_static(&[0, 9, 1])), None);
}

/// Any typed header: parse random header bytes with a random valid opcode.
fn arb_pdu() -> impl Strategy<Value = Pdu> {
    const OPS: [u8; 18] = [
        0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x10, 0x20, 0x21, 0x22, 0x23, 0x24, 0x25, 0x26,
        0x31, 0x32, 0x3f,
    ];
    (
        prop::sample::select(&OPS[..]),
        prop::array::uniform32(any::<u8>()),
        prop::array::uniform16(any::<u8>()),
        prop::option::of(prop::collection::vec(any::<u8>(), 1..300)),
        prop::option::of(any::<u32>()),
        prop::collection::vec(any::<u8>(), 0..600),
    )
        .prop_map(|(op, a, b, ext, bidi, data)| {
            let mut raw = [0u8; BHS_LEN];
            raw[..32].copy_from_slice(&a);
            raw[32..].copy_from_slice(&b);
            let opcode = Opcode::from_u8(op).unwrap_or(Opcode::NopOut);
            let mut bhs = Bhs::parse(opcode, &raw);
            if let Bhs::ScsiCommand(cmd) = &mut bhs {
                cmd.extended_cdb = ext.map(Bytes::from);
                cmd.bidi_read_length = bidi;
            }
            Pdu::new(bhs, Bytes::from(data))
        })
}

proptest! {
    #[test]
    fn round_trip(pdu in arb_pdu(), hd: bool, dd: bool) {
        let c = cfg(hd, dd);
        let mut scratch = BytesMut::new();
        let parts = pdu.encode_parts(&c, &mut scratch).expect("encodable");
        let mut buf = BytesMut::new();
        parts.write_to(&mut buf);
        prop_assert_eq!(buf.len() % 4, 0);
        prop_assert_eq!(buf.len(), parts.len());
        // Byte-by-byte arrival must give the same answer as all at once.
        let mut inc = BytesMut::new();
        let mut got = None;
        for (i, byte) in buf.iter().enumerate() {
            inc.extend_from_slice(&[*byte]);
            match decode(&mut inc, &c).expect("valid") {
                Some(p) => { prop_assert_eq!(i + 1, buf.len()); got = Some(p); }
                None => prop_assert!(i + 1 < buf.len()),
            }
        }
        prop_assert_eq!(got.as_ref(), Some(&pdu));
        prop_assert_eq!(decode(&mut buf, &c).expect("valid"), Some(pdu));
    }

    /// Random bytes never panic the decoder, and every call makes progress or stops.
    #[test]
    fn decode_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..2000), hd: bool, dd: bool, limit in 0u32..4096) {
        let c = CodecConfig { max_recv_data_segment_length: limit, ..cfg(hd, dd) };
        let mut buf = BytesMut::from(&bytes[..]);
        loop {
            let before = buf.len();
            match decode(&mut buf, &c) {
                Ok(None) => { prop_assert_eq!(buf.len(), before); break }
                Ok(Some(_)) => prop_assert!(buf.len() < before),
                Err(e) if e.is_fatal() => break,
                Err(_) => prop_assert!(buf.len() < before),
            }
        }
    }

    /// Random bytes behind a valid opcode: same property with realistic headers.
    #[test]
    fn decode_random_headers(op in prop::sample::select(&[0x01u8, 0x03, 0x05][..]), mut bytes in prop::collection::vec(any::<u8>(), 48..1500)) {
        bytes[0] = op;
        bytes[5] = 0;
        let mut buf = BytesMut::from(&bytes[..]);
        let _ = decode(&mut buf, &cfg(false, false));
    }
}

/// Encode `pdu` without digests and return the bytes.
fn wire(pdu: &Pdu) -> Vec<u8> {
    let mut out = BytesMut::new();
    pdu.encode(&cfg(false, false), &mut out).expect("encodes");
    out.to_vec()
}

fn be32(b: &[u8], off: usize) -> u32 {
    u32::from_be_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]])
}

#[test]
fn golden_scsi_response_with_sense() {
    let sense = [
        0x70u8, 0, 0x05, 0, 0, 0, 0, 10, 0, 0, 0, 0, 0x24, 0, 0, 0, 0, 0,
    ];
    let pdu = Pdu::new(
        ScsiResponse {
            bidi_overflow: false,
            bidi_underflow: false,
            overflow: false,
            underflow: true,
            response: 0,
            status: 0x02,
            itt: 0xa1b2_c3d4,
            snack_tag: 0,
            stat_sn: 0x10,
            exp_cmd_sn: 0x20,
            max_cmd_sn: 0x5f,
            exp_data_sn: 2,
            bidi_read_residual_count: 0,
            residual_count: 512,
        },
        sense_segment(&sense).expect("fits"),
    );
    let b = wire(&pdu);
    assert_eq!(b[0], 0x21);
    assert_eq!(b[1], 0x80 | 0x02);
    assert_eq!((b[2], b[3]), (0x00, 0x02));
    assert_eq!(&b[5..8], &[0, 0, 20]);
    assert_eq!(be32(&b, 16), 0xa1b2_c3d4);
    assert_eq!(
        (be32(&b, 24), be32(&b, 28), be32(&b, 32)),
        (0x10, 0x20, 0x5f)
    );
    assert_eq!((be32(&b, 36), be32(&b, 44)), (2, 512));
    assert_eq!(&b[48..50], &[0, 18]);
    assert_eq!(&b[50..68], &sense[..]);
    assert_eq!(b.len(), 48 + 20);
}

#[test]
fn golden_r2t_logout_response_nop_in_reject() {
    let r2t = wire(&Pdu::header_only(R2t {
        lun: 0x0001_0000_0000_0000,
        itt: 7,
        ttt: 0x99,
        stat_sn: 3,
        exp_cmd_sn: 4,
        max_cmd_sn: 5,
        r2t_sn: 1,
        buffer_offset: 65536,
        desired_data_transfer_length: 262_144,
    }));
    assert_eq!((r2t[0], r2t[1]), (0x31, 0x80));
    assert_eq!(&r2t[8..10], &[0, 1]);
    assert_eq!((be32(&r2t, 20), be32(&r2t, 36)), (0x99, 1));
    assert_eq!((be32(&r2t, 40), be32(&r2t, 44)), (65536, 262_144));

    let lo = wire(&Pdu::header_only(LogoutResponse {
        response: LogoutResponseCode::CidNotFound,
        itt: 9,
        stat_sn: 1,
        exp_cmd_sn: 2,
        max_cmd_sn: 3,
        time2wait: 2,
        time2retain: 20,
    }));
    assert_eq!((lo[0], lo[1], lo[2]), (0x26, 0x80, 1));
    assert_eq!(&lo[40..44], &[0, 2, 0, 20]);

    let nop = wire(&Pdu::new(
        NopIn {
            lun: 0,
            itt: RESERVED_TAG,
            ttt: 0x1234,
            stat_sn: 8,
            exp_cmd_sn: 9,
            max_cmd_sn: 10,
        },
        Bytes::from_static(b"ab"),
    ));
    assert_eq!((nop[0], nop[1]), (0x20, 0x80));
    assert_eq!((be32(&nop, 16), be32(&nop, 20)), (RESERVED_TAG, 0x1234));
    assert_eq!(&nop[48..], b"ab\0\0");

    let rejected = Bytes::from(login_request_bytes()[..48].to_vec());
    let rj = wire(&Pdu::reject(
        RejectReason::ProtocolError,
        rejected.clone(),
        1,
        2,
        3,
    ));
    assert_eq!((rj[0], rj[1], rj[2]), (0x3f, 0x80, 0x04));
    assert_eq!(be32(&rj, 16), RESERVED_TAG);
    assert_eq!(&rj[5..8], &[0, 0, 48]);
    assert_eq!(&rj[48..], &rejected[..]);
}

#[test]
fn golden_initiator_pdus_decode() {
    // Data-Out: F, LUN 2, ITT 0x10, TTT 0x20, ExpStatSN 5, DataSN 3, offset 8192, 4 bytes.
    let mut b = vec![0u8; 48];
    b[0] = 0x05;
    b[1] = 0x80;
    b[7] = 4;
    b[9] = 2;
    b[16..20].copy_from_slice(&0x10u32.to_be_bytes());
    b[20..24].copy_from_slice(&0x20u32.to_be_bytes());
    b[28..32].copy_from_slice(&5u32.to_be_bytes());
    b[36..40].copy_from_slice(&3u32.to_be_bytes());
    b[40..44].copy_from_slice(&8192u32.to_be_bytes());
    b.extend_from_slice(b"data");
    let p = decode(&mut BytesMut::from(&b[..]), &cfg(false, false))
        .expect("valid")
        .expect("whole");
    assert_eq!(
        p.bhs,
        Bhs::DataOut(DataOut {
            final_bit: true,
            lun: 0x0002_0000_0000_0000,
            itt: 0x10,
            ttt: 0x20,
            exp_stat_sn: 5,
            data_sn: 3,
            buffer_offset: 8192,
        })
    );
    assert_eq!(&p.data[..], b"data");

    // Task management: immediate ABORT TASK for ITT 0x77 / RefCmdSN 0x66.
    let mut b = [0u8; 48];
    b[0] = 0x42;
    b[1] = 0x81;
    b[16..20].copy_from_slice(&0x11u32.to_be_bytes());
    b[20..24].copy_from_slice(&0x77u32.to_be_bytes());
    b[24..28].copy_from_slice(&0x67u32.to_be_bytes());
    b[32..36].copy_from_slice(&0x66u32.to_be_bytes());
    let p = decode(&mut BytesMut::from(&b[..]), &cfg(false, false))
        .expect("valid")
        .expect("whole");
    let Bhs::TaskMgmtRequest(t) = p.bhs else {
        panic!("wrong type")
    };
    assert!(t.immediate);
    assert_eq!(t.function, TmFunction::AbortTask);
    assert_eq!(
        (t.itt, t.referenced_task_tag, t.cmd_sn, t.ref_cmd_sn),
        (0x11, 0x77, 0x67, 0x66)
    );

    // Logout: close the connection with CID 3.
    let mut b = [0u8; 48];
    b[0] = 0x46;
    b[1] = 0x81;
    b[20..22].copy_from_slice(&3u16.to_be_bytes());
    let p = decode(&mut BytesMut::from(&b[..]), &cfg(false, false))
        .expect("valid")
        .expect("whole");
    let Bhs::LogoutRequest(l) = p.bhs else {
        panic!("wrong type")
    };
    assert_eq!(
        (l.reason, l.cid, l.immediate),
        (LogoutReason::CloseConnection, 3, true)
    );
}
