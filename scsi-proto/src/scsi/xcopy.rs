//! EXTENDED COPY (LID1) parameter lists and RECEIVE COPY RESULTS data (SPC-4 6.4 and 6.18,
//! the LID1 forms that SPC-3 called EXTENDED COPY and RECEIVE COPY RESULTS).
//!
//! This is VMware's "full copy" offload (VAAI XCOPY): the host names a source and a
//! destination logical unit by their identification designators and asks the copy manager
//! to move block ranges between them, so cloning a VMDK never crosses the network.
//!
//! Only what a block-device copy manager needs is accepted: identification-descriptor CSCD
//! (target) descriptors (E4h) and block-to-block segment descriptors (02h). Everything else
//! is refused with the sense SPC-4 names for it, and every length and count is checked
//! against the advertised limits *before* any descriptor is interpreted, so a hostile list
//! costs nothing but a parse.

use super::descriptor;
use super::sense::{asc, AdditionalSense, Sense, SenseKey};

/// Identification descriptor CSCD descriptor type code.
pub const IDENTIFICATION_DESCRIPTOR: u8 = 0xE4;
/// Block device to block device segment descriptor type code.
pub const BLOCK_TO_BLOCK: u8 = 0x02;
/// Length of the parameter list header.
pub const HEADER_LEN: usize = 16;
/// Length of an identification CSCD descriptor (and every E0h-E9h descriptor).
pub const TARGET_DESCRIPTOR_LEN: usize = 32;
/// Length of a block-to-block segment descriptor.
pub const SEGMENT_DESCRIPTOR_LEN: usize = 28;

/// TOO MANY TARGET DESCRIPTORS.
pub const TOO_MANY_TARGET_DESCRIPTORS: AdditionalSense = AdditionalSense::new(0x26, 0x06);
/// UNSUPPORTED TARGET DESCRIPTOR TYPE CODE.
pub const UNSUPPORTED_TARGET_DESCRIPTOR_TYPE: AdditionalSense = AdditionalSense::new(0x26, 0x07);
/// TOO MANY SEGMENT DESCRIPTORS.
pub const TOO_MANY_SEGMENT_DESCRIPTORS: AdditionalSense = AdditionalSense::new(0x26, 0x08);
/// UNSUPPORTED SEGMENT DESCRIPTOR TYPE CODE.
pub const UNSUPPORTED_SEGMENT_DESCRIPTOR_TYPE: AdditionalSense = AdditionalSense::new(0x26, 0x09);
/// UNREACHABLE COPY TARGET.
pub const UNREACHABLE_COPY_TARGET: AdditionalSense = AdditionalSense::new(0x08, 0x04);
/// COPY TARGET DEVICE NOT REACHABLE.
pub const COPY_TARGET_DEVICE_NOT_REACHABLE: AdditionalSense = AdditionalSense::new(0x0D, 0x02);
/// OPERATION IN PROGRESS (a list identifier still in use by this initiator).
pub const OPERATION_IN_PROGRESS: AdditionalSense = AdditionalSense::new(0x00, 0x16);

/// What the copy manager accepts; reported by RECEIVE COPY RESULTS (OPERATING PARAMETERS).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CopyLimits {
    /// MAXIMUM CSCD (target) DESCRIPTOR COUNT.
    pub max_target_descriptors: u16,
    /// MAXIMUM SEGMENT DESCRIPTOR COUNT.
    pub max_segment_descriptors: u16,
    /// MAXIMUM DESCRIPTOR LIST LENGTH: target plus segment descriptor bytes.
    pub max_descriptor_list_len: u32,
    /// MAXIMUM SEGMENT LENGTH in bytes.
    pub max_segment_len: u32,
    /// MAXIMUM CONCURRENT COPIES (per copy manager).
    pub max_concurrent_copies: u8,
}

impl CopyLimits {
    /// Limits for a logical unit with `block_size`-byte blocks: 32 targets and 256 segments
    /// (LIO accepts 2 and 1), which exactly fill an 8 KiB descriptor list; a segment may be
    /// as long as its 16-bit block count allows.
    pub fn for_block_size(block_size: u32) -> Self {
        let max_target_descriptors = 32u16;
        let max_segment_descriptors = 256u16;
        Self {
            max_target_descriptors,
            max_segment_descriptors,
            max_descriptor_list_len: u32::from(max_target_descriptors)
                * TARGET_DESCRIPTOR_LEN as u32
                + u32::from(max_segment_descriptors) * SEGMENT_DESCRIPTOR_LEN as u32,
            max_segment_len: u32::from(u16::MAX).saturating_mul(block_size),
            max_concurrent_copies: 16,
        }
    }
}

/// LIST ID USAGE (SPC-4 table 115): whether the copy manager keeps the list identifier
/// and the copy's status for RECEIVE COPY RESULTS afterwards.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ListIdUsage {
    /// 00b/01b: the list identifier is unique among this initiator's copies and the
    /// status is retained.
    Retain,
    /// 10b: the list identifier is unique while the copy runs; nothing is retained.
    Discard,
    /// 11b: no list identifier (LIST IDENTIFIER is ignored), nothing retained.
    None,
}

/// An identification descriptor CSCD descriptor: which logical unit, by designator.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TargetDescriptor {
    /// PERIPHERAL DEVICE TYPE (0 = block device).
    pub peripheral_type: u8,
    /// CODE SET of the designator (1 = binary).
    pub code_set: u8,
    /// ASSOCIATION of the designator (0 = logical unit).
    pub association: u8,
    /// DESIGNATOR TYPE (3 = NAA).
    pub designator_type: u8,
    /// The designator itself (at most 20 bytes).
    pub designator: Vec<u8>,
    /// DISK BLOCK LENGTH from the block device type-specific parameters.
    pub block_size: u32,
}

impl TargetDescriptor {
    /// The 16-byte NAA designator this descriptor names, if it names one of a logical unit
    /// (the form VMware and libiscsi use, and the only designator Lunar's LUNs carry that
    /// identifies a volume uniquely).
    pub fn naa(&self) -> Option<[u8; 16]> {
        if self.designator_type != 3 || self.association != 0 {
            return None;
        }
        self.designator.as_slice().try_into().ok()
    }
}

/// A block device to block device segment descriptor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockSegment {
    /// Index of the source in the target descriptor list.
    pub source: u16,
    /// Index of the destination in the target descriptor list.
    pub destination: u16,
    /// DC: BLOCK DEVICE NUMBER OF BLOCKS counts destination blocks (else source blocks).
    pub dc: bool,
    /// BLOCK DEVICE NUMBER OF BLOCKS.
    pub blocks: u16,
    /// SOURCE BLOCK DEVICE LOGICAL BLOCK ADDRESS.
    pub source_lba: u64,
    /// DESTINATION BLOCK DEVICE LOGICAL BLOCK ADDRESS.
    pub destination_lba: u64,
}

/// A decoded EXTENDED COPY (LID1) parameter list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CopyList {
    /// LIST IDENTIFIER.
    pub list_id: u8,
    /// LIST ID USAGE.
    pub usage: ListIdUsage,
    /// Target (CSCD) descriptors, in list order (segments refer to them by index).
    pub targets: Vec<TargetDescriptor>,
    /// Segment descriptors, processed in order.
    pub segments: Vec<BlockSegment>,
}

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn be64(b: &[u8], at: usize) -> u64 {
    let mut v = [0u8; 8];
    v.copy_from_slice(&b[at..at + 8]);
    u64::from_be_bytes(v)
}

fn illegal(code: AdditionalSense) -> Sense {
    Sense::new(SenseKey::IllegalRequest, code)
}

/// Length of a CSCD descriptor from its type code, `None` for codes SPC-4 does not define.
fn target_descriptor_len(code: u8) -> Option<usize> {
    match code {
        0xE0..=0xE9 => Some(TARGET_DESCRIPTOR_LEN),
        0xEA..=0xEB => Some(64),
        _ => None,
    }
}

/// Decode an EXTENDED COPY (LID1) parameter list. `param` holds exactly the PARAMETER LIST
/// LENGTH bytes of the CDB (the caller refuses shorter Data-Out); an empty list is `None`
/// (SPC-4: a length of zero is not an error and copies nothing).
pub fn parse(param: &[u8], limits: &CopyLimits) -> Result<Option<CopyList>, Sense> {
    if param.is_empty() {
        return Ok(None);
    }
    if param.len() < HEADER_LEN {
        return Err(Sense::parameter_list_length_error());
    }
    let list_id = param[0];
    // Byte 1: STR (a stream-device hint, ignored), LIST ID USAGE, PRIORITY (all copies
    // run at once); the top two bits are reserved.
    if param[1] & 0xC0 != 0 {
        return Err(Sense::invalid_field_in_param(1, Some(7)));
    }
    let usage = match (param[1] >> 3) & 0x03 {
        0 | 1 => ListIdUsage::Retain,
        2 => ListIdUsage::Discard,
        _ => ListIdUsage::None,
    };
    let targets_len = usize::from(be16(param, 2));
    let segments_len = be32(param, 8) as usize;
    let inline_len = be32(param, 12) as usize;
    let total = HEADER_LEN
        .checked_add(targets_len)
        .and_then(|n| n.checked_add(segments_len))
        .and_then(|n| n.checked_add(inline_len));
    match total {
        Some(t) if t <= param.len() => {}
        _ => return Err(Sense::parameter_list_length_error()),
    }
    if targets_len as u64 + segments_len as u64 > u64::from(limits.max_descriptor_list_len) {
        return Err(Sense::parameter_list_length_error());
    }
    if inline_len != 0 {
        // MAXIMUM INLINE DATA LENGTH is 0: block-to-block copies carry no inline data.
        return Err(Sense::invalid_field_in_param(12, Some(7)));
    }

    let tlist = &param[HEADER_LEN..HEADER_LEN + targets_len];
    let mut targets = Vec::new();
    let mut at = 0usize;
    while at < tlist.len() {
        let offset = (HEADER_LEN + at) as u16;
        let code = tlist[at];
        let Some(len) = target_descriptor_len(code) else {
            return Err(illegal(UNSUPPORTED_TARGET_DESCRIPTOR_TYPE).with_field_param(offset, None));
        };
        if at + len > tlist.len() {
            return Err(Sense::parameter_list_length_error());
        }
        if targets.len() == usize::from(limits.max_target_descriptors) {
            return Err(illegal(TOO_MANY_TARGET_DESCRIPTORS));
        }
        if code != IDENTIFICATION_DESCRIPTOR {
            return Err(illegal(UNSUPPORTED_TARGET_DESCRIPTOR_TYPE).with_field_param(offset, None));
        }
        targets.push(identification_descriptor(&tlist[at..at + len], offset)?);
        at += len;
    }

    let slist = &param[HEADER_LEN + targets_len..HEADER_LEN + targets_len + segments_len];
    let mut segments = Vec::new();
    let segments_at = HEADER_LEN + targets_len;
    for d in descriptor::split(slist, descriptor::length16) {
        let (at, seg) = d.map_err(|_| Sense::parameter_list_length_error())?;
        let offset = (segments_at + at) as u16;
        if segments.len() == usize::from(limits.max_segment_descriptors) {
            return Err(illegal(TOO_MANY_SEGMENT_DESCRIPTORS));
        }
        if seg[0] != BLOCK_TO_BLOCK {
            return Err(illegal(UNSUPPORTED_SEGMENT_DESCRIPTOR_TYPE).with_field_param(offset, None));
        }
        if seg.len() != SEGMENT_DESCRIPTOR_LEN {
            return Err(Sense::invalid_field_in_param(offset + 2, None));
        }
        segments.push(block_segment(seg));
    }
    Ok(Some(CopyList {
        list_id,
        usage,
        targets,
        segments,
    }))
}

fn identification_descriptor(d: &[u8], offset: u16) -> Result<TargetDescriptor, Sense> {
    // Byte 1: LU ID TYPE (7:6) and NUL (5) are obsolete in SPC-4 and ignored, as the
    // standard says; PERIPHERAL DEVICE TYPE (4:0) selects the type-specific parameters.
    let peripheral_type = d[1] & 0x1F;
    if peripheral_type != 0 {
        return Err(Sense::invalid_field_in_param(offset + 1, Some(4)));
    }
    let designator_len = usize::from(d[7]);
    if designator_len > 20 {
        return Err(Sense::invalid_field_in_param(offset + 7, Some(7)));
    }
    let block_size = u32::from_be_bytes([0, d[29], d[30], d[31]]);
    Ok(TargetDescriptor {
        peripheral_type,
        code_set: d[4] & 0x0F,
        association: (d[5] >> 4) & 0x03,
        designator_type: d[5] & 0x0F,
        designator: d[8..8 + designator_len].to_vec(),
        block_size,
    })
}

fn block_segment(d: &[u8]) -> BlockSegment {
    BlockSegment {
        source: be16(d, 4),
        destination: be16(d, 6),
        dc: d[1] & 0x02 != 0,
        blocks: be16(d, 10),
        source_lba: be64(d, 12),
        destination_lba: be64(d, 20),
    }
}

trait WithParamField {
    fn with_field_param(self, byte: u16, bit: Option<u8>) -> Self;
}

impl WithParamField for Sense {
    fn with_field_param(mut self, byte: u16, bit: Option<u8>) -> Self {
        self.field = Some(super::sense::FieldPointer::param(byte, bit));
        self
    }
}

/// RECEIVE COPY RESULTS service actions (LID1).
pub mod rcr {
    /// COPY STATUS.
    pub const COPY_STATUS: u16 = 0x00;
    /// RECEIVE DATA.
    pub const RECEIVE_DATA: u16 = 0x01;
    /// OPERATING PARAMETERS.
    pub const OPERATING_PARAMETERS: u16 = 0x03;
    /// FAILED SEGMENT DETAILS.
    pub const FAILED_SEGMENT_DETAILS: u16 = 0x04;
}

/// RECEIVE COPY RESULTS (OPERATING PARAMETERS) data: the limits, no inline or held data,
/// and the two descriptor types implemented.
pub fn operating_parameters(limits: &CopyLimits) -> Vec<u8> {
    let codes = [BLOCK_TO_BLOCK, IDENTIFICATION_DESCRIPTOR];
    let mut b = vec![0u8; 44 + codes.len()];
    let available = (b.len() - 4) as u32;
    b[0..4].copy_from_slice(&available.to_be_bytes());
    // SNLID: copies without a list identifier (LIST ID USAGE 11b) are supported.
    b[4] = 0x01;
    b[8..10].copy_from_slice(&limits.max_target_descriptors.to_be_bytes());
    b[10..12].copy_from_slice(&limits.max_segment_descriptors.to_be_bytes());
    b[12..16].copy_from_slice(&limits.max_descriptor_list_len.to_be_bytes());
    b[16..20].copy_from_slice(&limits.max_segment_len.to_be_bytes());
    // MAXIMUM INLINE DATA LENGTH, HELD DATA LIMIT, MAXIMUM STREAM DEVICE TRANSFER SIZE: 0.
    b[34] = limits.max_concurrent_copies;
    b[35] = limits.max_concurrent_copies;
    // DATA SEGMENT GRANULARITY (log2 bytes): one byte is enough; copies are block based.
    b[36] = 0;
    b[43] = codes.len() as u8;
    b[44..].copy_from_slice(&codes);
    b
}

/// COPY MANAGER STATUS of a copy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CopyState {
    /// Still running.
    InProgress,
    /// Completed without errors.
    Completed,
    /// Completed with errors (FAILED SEGMENT DETAILS has the sense).
    Failed,
}

/// What COPY STATUS reports about one copy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CopyStatus {
    /// State.
    pub state: CopyState,
    /// SEGMENTS PROCESSED.
    pub segments_processed: u16,
    /// Bytes moved so far.
    pub bytes: u64,
}

impl CopyStatus {
    /// RECEIVE COPY RESULTS (COPY STATUS) data, 12 bytes. The TRANSFER COUNT is in the
    /// smallest power-of-1024 unit that fits in 32 bits.
    pub fn encode(&self) -> Vec<u8> {
        let mut b = vec![0u8; 12];
        b[0..4].copy_from_slice(&8u32.to_be_bytes());
        b[4] = match self.state {
            CopyState::InProgress => 0x00,
            CopyState::Completed => 0x01,
            CopyState::Failed => 0x02,
        };
        b[5..7].copy_from_slice(&self.segments_processed.to_be_bytes());
        let mut units = 0u8;
        let mut count = self.bytes;
        while count > u64::from(u32::MAX) {
            count >>= 10;
            units += 1;
        }
        b[7] = units;
        b[8..12].copy_from_slice(&(count as u32).to_be_bytes());
        b
    }
}

/// RECEIVE COPY RESULTS (FAILED SEGMENT DETAILS) data: for a copy that failed, the status
/// it ended with and its sense data; for one that succeeded, no details (AVAILABLE DATA 0).
pub fn failed_segment_details(failure: Option<(u8, &[u8])>) -> Vec<u8> {
    let Some((status, sense)) = failure else {
        return vec![0u8; 4];
    };
    let mut b = vec![0u8; 60 + sense.len()];
    let available = (b.len() - 4) as u32;
    b[0..4].copy_from_slice(&available.to_be_bytes());
    b[56] = status;
    b[58..60].copy_from_slice(&(sense.len() as u16).to_be_bytes());
    b[60..].copy_from_slice(sense);
    b
}

/// RECEIVE COPY RESULTS (RECEIVE DATA) data: the copy manager holds no data (HELD DATA
/// LIMIT 0), so the list is empty.
pub fn receive_data() -> Vec<u8> {
    vec![0u8; 4]
}

/// COPY ABORTED sense for a segment that failed: the copy manager could not reach a copy
/// target (`COPY_TARGET_DEVICE_NOT_REACHABLE`, `UNREACHABLE_COPY_TARGET`) or the range
/// lies outside it (`asc::NO_ADDITIONAL_SENSE`, as initiators such as libiscsi expect).
pub fn copy_aborted(code: AdditionalSense) -> Sense {
    Sense::new(SenseKey::CopyAborted, code)
}

/// COPY ABORTED for a segment whose range does not fit the source or destination.
pub fn segment_out_of_range() -> Sense {
    copy_aborted(asc::NO_ADDITIONAL_SENSE)
}

#[cfg(test)]
mod tests;
