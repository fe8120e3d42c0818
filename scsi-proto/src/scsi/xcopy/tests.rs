use super::*;

const NAA: [u8; 16] = [
    0x60, 0x01, 0x40, 0x5a, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12,
];

fn target(naa: &[u8; 16], block_size: u32) -> Vec<u8> {
    let mut d = vec![0u8; TARGET_DESCRIPTOR_LEN];
    d[0] = IDENTIFICATION_DESCRIPTOR;
    d[4] = 0x01; // binary
    d[5] = 0x03; // association LU, type NAA
    d[7] = 16;
    d[8..24].copy_from_slice(naa);
    d[29..32].copy_from_slice(&block_size.to_be_bytes()[1..]);
    d
}

fn segment(src: u16, dst: u16, blocks: u16, src_lba: u64, dst_lba: u64) -> Vec<u8> {
    let mut d = vec![0u8; SEGMENT_DESCRIPTOR_LEN];
    d[0] = BLOCK_TO_BLOCK;
    d[2..4].copy_from_slice(&24u16.to_be_bytes());
    d[4..6].copy_from_slice(&src.to_be_bytes());
    d[6..8].copy_from_slice(&dst.to_be_bytes());
    d[10..12].copy_from_slice(&blocks.to_be_bytes());
    d[12..20].copy_from_slice(&src_lba.to_be_bytes());
    d[20..28].copy_from_slice(&dst_lba.to_be_bytes());
    d
}

fn list(id: u8, usage: u8, targets: &[Vec<u8>], segments: &[Vec<u8>]) -> Vec<u8> {
    let t: Vec<u8> = targets.concat();
    let s: Vec<u8> = segments.concat();
    let mut b = vec![0u8; HEADER_LEN];
    b[0] = id;
    b[1] = usage << 3;
    b[2..4].copy_from_slice(&(t.len() as u16).to_be_bytes());
    b[8..12].copy_from_slice(&(s.len() as u32).to_be_bytes());
    b.extend_from_slice(&t);
    b.extend_from_slice(&s);
    b
}

fn limits() -> CopyLimits {
    CopyLimits::for_block_size(512)
}

#[test]
fn decodes_vmware_style_two_target_list() {
    let other = [0x60u8; 16];
    let p = list(
        7,
        0,
        &[target(&NAA, 512), target(&other, 512)],
        &[segment(0, 1, 2048, 10, 20), segment(1, 0, 8, 1 << 40, 3)],
    );
    let l = parse(&p, &limits()).unwrap().unwrap();
    assert_eq!(l.list_id, 7);
    assert_eq!(l.usage, ListIdUsage::Retain);
    assert_eq!(l.targets.len(), 2);
    assert_eq!(l.targets[0].naa(), Some(NAA));
    assert_eq!(l.targets[1].naa(), Some(other));
    assert_eq!(l.targets[0].block_size, 512);
    assert_eq!(
        l.segments,
        vec![
            BlockSegment {
                source: 0,
                destination: 1,
                dc: false,
                blocks: 2048,
                source_lba: 10,
                destination_lba: 20,
            },
            BlockSegment {
                source: 1,
                destination: 0,
                dc: false,
                blocks: 8,
                source_lba: 1 << 40,
                destination_lba: 3,
            },
        ]
    );
}

#[test]
fn empty_list_is_a_no_op_and_a_short_header_is_a_length_error() {
    assert_eq!(parse(&[], &limits()), Ok(None));
    assert_eq!(
        parse(&[0u8; 15], &limits()),
        Err(Sense::parameter_list_length_error())
    );
}

#[test]
fn list_id_usage_values() {
    for (bits, want) in [
        (0, ListIdUsage::Retain),
        (1, ListIdUsage::Retain),
        (2, ListIdUsage::Discard),
        (3, ListIdUsage::None),
    ] {
        let p = list(1, bits, &[target(&NAA, 512)], &[]);
        assert_eq!(parse(&p, &limits()).unwrap().unwrap().usage, want);
    }
}

#[test]
fn truncated_descriptors_are_parameter_list_length_errors() {
    let full = list(1, 0, &[target(&NAA, 512)], &[segment(0, 0, 1, 0, 1)]);
    // Cut inside the target descriptor and inside the segment descriptor (libiscsi's
    // ExtendedCopy.ParamHdr does both).
    for cut in [HEADER_LEN + 31, HEADER_LEN + 32 + 27] {
        assert_eq!(
            parse(&full[..cut], &limits()),
            Err(Sense::parameter_list_length_error()),
            "cut at {cut}"
        );
    }
    // A segment descriptor whose own length runs past the segment list.
    let mut p = full.clone();
    p[HEADER_LEN + 32 + 3] = 0x30;
    assert_eq!(
        parse(&p, &limits()),
        Err(Sense::parameter_list_length_error())
    );
}

#[test]
fn counts_above_the_limits_are_too_many_descriptors() {
    let l = limits();
    let targets: Vec<Vec<u8>> = (0..=l.max_target_descriptors)
        .map(|_| target(&NAA, 512))
        .collect();
    let p = list(1, 0, &targets, &[segment(0, 0, 1, 0, 1)]);
    let e = parse(&p, &l).unwrap_err();
    assert_eq!(e.code, TOO_MANY_TARGET_DESCRIPTORS);

    let segments: Vec<Vec<u8>> = (0..=l.max_segment_descriptors)
        .map(|_| segment(0, 0, 1, 0, 1))
        .collect();
    let p = list(1, 0, &[target(&NAA, 512)], &segments);
    let e = parse(&p, &l).unwrap_err();
    assert_eq!(e.code, TOO_MANY_SEGMENT_DESCRIPTORS);
}

#[test]
fn a_list_longer_than_the_maximum_is_a_length_error_before_counts() {
    let l = limits();
    let targets: Vec<Vec<u8>> = (0..=l.max_target_descriptors)
        .map(|_| target(&NAA, 512))
        .collect();
    let segments: Vec<Vec<u8>> = (0..=l.max_segment_descriptors)
        .map(|_| segment(0, 0, 1, 0, 1))
        .collect();
    let p = list(1, 0, &targets, &segments);
    assert_eq!(parse(&p, &l), Err(Sense::parameter_list_length_error()));
}

#[test]
fn the_advertised_limits_leave_room_for_one_extra_descriptor_of_each_kind() {
    // libiscsi's DescrLimits sends max+1 of one kind inside the descriptor list maximum
    // and expects TOO MANY ... rather than a length error: the maximum must allow it.
    let l = limits();
    let extra_targets = (u32::from(l.max_target_descriptors) + 1) * 32 + 28;
    let extra_segments = 32 + (u32::from(l.max_segment_descriptors) + 1) * 28;
    assert!(extra_targets <= l.max_descriptor_list_len);
    assert!(extra_segments <= l.max_descriptor_list_len);
}

#[test]
fn unsupported_descriptor_types() {
    let mut fc = target(&NAA, 512);
    fc[0] = 0xE0; // Fibre Channel N_Port_Name
    let p = list(1, 0, &[fc], &[segment(0, 0, 1, 0, 1)]);
    assert_eq!(
        parse(&p, &limits()).unwrap_err().code,
        UNSUPPORTED_TARGET_DESCRIPTOR_TYPE
    );
    let mut bogus = target(&NAA, 512);
    bogus[0] = 0x10;
    let p = list(1, 0, &[bogus], &[]);
    assert_eq!(
        parse(&p, &limits()).unwrap_err().code,
        UNSUPPORTED_TARGET_DESCRIPTOR_TYPE
    );
    // Stream-to-stream segment (03h, 20 bytes).
    let mut s2s = vec![0u8; 20];
    s2s[0] = 0x03;
    s2s[2..4].copy_from_slice(&16u16.to_be_bytes());
    let p = list(1, 0, &[target(&NAA, 512)], &[s2s]);
    assert_eq!(
        parse(&p, &limits()).unwrap_err().code,
        UNSUPPORTED_SEGMENT_DESCRIPTOR_TYPE
    );
}

#[test]
fn obsolete_lu_id_type_and_nul_bits_are_ignored() {
    let mut t = target(&NAA, 512);
    t[1] = 0xC0 | 0x20;
    let p = list(1, 0, &[t], &[segment(0, 0, 1, 0, 1)]);
    assert!(parse(&p, &limits()).unwrap().is_some());
}

#[test]
fn inline_data_and_reserved_header_bits_are_refused() {
    let mut p = list(1, 0, &[target(&NAA, 512)], &[]);
    p[1] |= 0x80;
    assert_eq!(
        parse(&p, &limits()).unwrap_err().code,
        asc::INVALID_FIELD_IN_PARAMETER_LIST
    );
    let mut p = list(1, 0, &[target(&NAA, 512)], &[]);
    p[15] = 4;
    p.extend_from_slice(&[0; 4]);
    assert_eq!(
        parse(&p, &limits()).unwrap_err().code,
        asc::INVALID_FIELD_IN_PARAMETER_LIST
    );
}

#[test]
fn non_block_targets_and_long_designators_are_refused() {
    let mut t = target(&NAA, 512);
    t[1] = 0x01; // sequential-access device
    let p = list(1, 0, &[t], &[]);
    assert_eq!(
        parse(&p, &limits()).unwrap_err().code,
        asc::INVALID_FIELD_IN_PARAMETER_LIST
    );
    let mut t = target(&NAA, 512);
    t[7] = 21;
    let p = list(1, 0, &[t], &[]);
    assert_eq!(
        parse(&p, &limits()).unwrap_err().code,
        asc::INVALID_FIELD_IN_PARAMETER_LIST
    );
}

#[test]
fn naa_needs_a_16_byte_logical_unit_naa_designator() {
    let p = list(1, 0, &[target(&NAA, 512)], &[]);
    let mut t = parse(&p, &limits()).unwrap().unwrap().targets.remove(0);
    assert_eq!(t.naa(), Some(NAA));
    t.association = 1;
    assert_eq!(t.naa(), None);
    t.association = 0;
    t.designator_type = 1;
    assert_eq!(t.naa(), None);
    t.designator_type = 3;
    t.designator.truncate(8);
    assert_eq!(t.naa(), None);
}

#[test]
fn operating_parameters_golden() {
    let b = operating_parameters(&limits());
    assert_eq!(b.len(), 46);
    assert_eq!(&b[0..4], &42u32.to_be_bytes());
    assert_eq!(&b[8..10], &32u16.to_be_bytes());
    assert_eq!(&b[10..12], &256u16.to_be_bytes());
    assert_eq!(&b[12..16], &8192u32.to_be_bytes());
    assert_eq!(&b[16..20], &(65535u32 * 512).to_be_bytes());
    assert_eq!(&b[20..24], &[0; 4], "no inline data");
    assert_eq!(b[43], 2);
    assert_eq!(&b[44..], &[0x02, 0xE4]);
}

#[test]
fn copy_status_golden_and_units() {
    let s = CopyStatus {
        state: CopyState::Completed,
        segments_processed: 3,
        bytes: 1 << 20,
    };
    assert_eq!(
        s.encode(),
        vec![0, 0, 0, 8, 0x01, 0, 3, 0x00, 0, 0x10, 0, 0]
    );
    let big = CopyStatus {
        state: CopyState::Failed,
        segments_processed: 1,
        bytes: 8 << 30,
    };
    let b = big.encode();
    assert_eq!(b[4], 0x02);
    assert_eq!(b[7], 0x01, "kibibytes");
    assert_eq!(&b[8..12], &(8u32 << 20).to_be_bytes());
}

#[test]
fn failed_segment_details_carry_status_and_sense() {
    assert_eq!(failed_segment_details(None), vec![0; 4]);
    let sense = segment_out_of_range().encode_fixed();
    let b = failed_segment_details(Some((0x02, &sense)));
    assert_eq!(b.len(), 60 + 18);
    assert_eq!(&b[0..4], &(56u32 + 18).to_be_bytes());
    assert_eq!(b[56], 0x02);
    assert_eq!(&b[58..60], &18u16.to_be_bytes());
    assert_eq!(b[60 + 2], SenseKey::CopyAborted as u8);
}

#[test]
fn random_lists_never_panic() {
    // A cheap deterministic fuzz: every prefix and many bit flips of a valid list.
    let base = list(
        9,
        0,
        &[target(&NAA, 512), target(&[0x61; 16], 4096)],
        &[segment(0, 1, 5, 6, 7), segment(1, 0, 1, 2, 3)],
    );
    for cut in 0..=base.len() {
        let _ = parse(&base[..cut], &limits());
    }
    let mut x = 0x1234_5678u32;
    for _ in 0..20_000 {
        let mut p = base.clone();
        for _ in 0..3 {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            let i = (x as usize) % p.len();
            p[i] ^= (x >> 24) as u8;
        }
        let _ = parse(&p, &limits());
    }
}
