//! Sense data (SPC-4 4.5): what a device server says when a command ends in CHECK CONDITION.
//!
//! A [`Sense`] is the typed value; [`Sense::encode`] renders it in fixed format (response code
//! 70h) or descriptor format (72h), chosen per logical unit by the D_SENSE bit of the Control
//! mode page. The sense-key-specific *field pointer* tells the initiator which CDB or
//! parameter-list byte (and bit) was rejected, which is what makes "invalid field" errors
//! debuggable from the initiator side.

use std::fmt;

/// Sense key (SPC-4 table 27): the coarse class of the condition.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum SenseKey {
    /// No specific sense key information.
    NoSense = 0x0,
    /// Command succeeded after recovery action.
    RecoveredError = 0x1,
    /// The logical unit is not accessible.
    NotReady = 0x2,
    /// Unrecovered error on the medium.
    MediumError = 0x3,
    /// Non-recoverable hardware (or internal) failure.
    HardwareError = 0x4,
    /// Illegal value in the CDB or parameter list.
    IllegalRequest = 0x5,
    /// Unit attention condition (reset, capacity change...).
    UnitAttention = 0x6,
    /// Write attempted on a protected block.
    DataProtect = 0x7,
    /// Blank or non-blank medium encountered (not used by disks).
    BlankCheck = 0x8,
    /// Vendor specific.
    VendorSpecific = 0x9,
    /// EXTENDED COPY aborted.
    CopyAborted = 0xA,
    /// Command aborted by the device server.
    AbortedCommand = 0xB,
    /// Buffered peripheral reached end of partition.
    VolumeOverflow = 0xD,
    /// Source data did not match the medium (VERIFY, COMPARE AND WRITE).
    Miscompare = 0xE,
    /// Command completed (sense for informational purposes).
    Completed = 0xF,
}

impl SenseKey {
    /// Decode the low nibble of a sense key byte; 0xC (obsolete) and 0x... map to `None`.
    pub fn from_u8(v: u8) -> Option<Self> {
        Some(match v & 0x0F {
            0x0 => Self::NoSense,
            0x1 => Self::RecoveredError,
            0x2 => Self::NotReady,
            0x3 => Self::MediumError,
            0x4 => Self::HardwareError,
            0x5 => Self::IllegalRequest,
            0x6 => Self::UnitAttention,
            0x7 => Self::DataProtect,
            0x8 => Self::BlankCheck,
            0x9 => Self::VendorSpecific,
            0xA => Self::CopyAborted,
            0xB => Self::AbortedCommand,
            0xD => Self::VolumeOverflow,
            0xE => Self::Miscompare,
            0xF => Self::Completed,
            _ => return None,
        })
    }
}

/// Additional sense code and qualifier (ASC/ASCQ), SPC-4 table D.1.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct AdditionalSense {
    /// Additional sense code.
    pub asc: u8,
    /// Additional sense code qualifier.
    pub ascq: u8,
}

impl AdditionalSense {
    /// Build from raw ASC and ASCQ.
    pub const fn new(asc: u8, ascq: u8) -> Self {
        Self { asc, ascq }
    }
}

impl fmt::Debug for AdditionalSense {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:02X}/{:02X}", self.asc, self.ascq)
    }
}

/// The ASC/ASCQ values Lunar reports (names as in SPC-4 annex D).
pub mod asc {
    use super::AdditionalSense as A;

    /// 00h/00h NO ADDITIONAL SENSE INFORMATION: nothing to report (REQUEST SENSE with none
    /// pending).
    pub const NO_ADDITIONAL_SENSE: A = A::new(0x00, 0x00);
    /// 04h/00h LOGICAL UNIT NOT READY, CAUSE NOT REPORTABLE: NOT READY, medium access is not
    /// possible now.
    pub const LOGICAL_UNIT_NOT_READY_CAUSE_NOT_REPORTABLE: A = A::new(0x04, 0x00);
    /// 04h/0Ah LOGICAL UNIT NOT ACCESSIBLE, ASYMMETRIC ACCESS STATE TRANSITION: NOT READY, the
    /// target port group is changing state (SPC-4 5.16.2.5); initiators retry.
    pub const LOGICAL_UNIT_NOT_ACCESSIBLE_ASYMMETRIC_ACCESS_STATE_TRANSITION: A =
        A::new(0x04, 0x0A);
    /// 04h/0Bh LOGICAL UNIT NOT ACCESSIBLE, TARGET PORT IN STANDBY STATE: NOT READY, the
    /// target port group is standby (SPC-4 5.16.2.4.4); multipath uses another path.
    pub const LOGICAL_UNIT_NOT_ACCESSIBLE_TARGET_PORT_IN_STANDBY_STATE: A = A::new(0x04, 0x0B);
    /// 04h/0Ch LOGICAL UNIT NOT ACCESSIBLE, TARGET PORT IN UNAVAILABLE STATE: NOT READY, the
    /// target port group is unavailable (SPC-4 5.16.2.4.5).
    pub const LOGICAL_UNIT_NOT_ACCESSIBLE_TARGET_PORT_IN_UNAVAILABLE_STATE: A = A::new(0x04, 0x0C);
    /// 0Ch/00h WRITE ERROR: MEDIUM ERROR, the blocks could not be written.
    pub const WRITE_ERROR: A = A::new(0x0C, 0x00);
    /// 0Ch/0Ch WRITE ERROR - UNEXPECTED UNSOLICITED DATA: unsolicited Data-Out arrived that the
    /// negotiated parameters did not allow.
    pub const WRITE_ERROR_UNEXPECTED_UNSOLICITED_DATA: A = A::new(0x0C, 0x0C);
    /// 0Ch/0Dh WRITE ERROR - NOT ENOUGH UNSOLICITED DATA: the unsolicited Data-Out ended before the
    /// negotiated first burst.
    pub const WRITE_ERROR_NOT_ENOUGH_UNSOLICITED_DATA: A = A::new(0x0C, 0x0D);
    /// 0Eh/03h INVALID FIELD IN COMMAND INFORMATION UNIT: the transport's command PDU (not the CDB)
    /// is wrong.
    pub const INVALID_FIELD_IN_COMMAND_INFORMATION_UNIT: A = A::new(0x0E, 0x03);
    /// 11h/00h UNRECOVERED READ ERROR: MEDIUM ERROR, the blocks could not be read.
    pub const UNRECOVERED_READ_ERROR: A = A::new(0x11, 0x00);
    /// 1Dh/00h MISCOMPARE DURING VERIFY OPERATION: VERIFY or COMPARE AND WRITE found different
    /// data.
    pub const MISCOMPARE_DURING_VERIFY_OPERATION: A = A::new(0x1D, 0x00);
    /// 1Ah/00h PARAMETER LIST LENGTH ERROR: the Data-Out parameter list is shorter or longer than
    /// its format.
    pub const PARAMETER_LIST_LENGTH_ERROR: A = A::new(0x1A, 0x00);
    /// 20h/00h INVALID COMMAND OPERATION CODE: an opcode or service action we do not implement.
    pub const INVALID_COMMAND_OPERATION_CODE: A = A::new(0x20, 0x00);
    /// 21h/00h LOGICAL BLOCK ADDRESS OUT OF RANGE: the range runs past the last LBA.
    pub const LBA_OUT_OF_RANGE: A = A::new(0x21, 0x00);
    /// 24h/00h INVALID FIELD IN CDB: sent with a field pointer to the offending byte and bit.
    pub const INVALID_FIELD_IN_CDB: A = A::new(0x24, 0x00);
    /// 25h/00h LOGICAL UNIT NOT SUPPORTED: no LUN at that address.
    pub const LOGICAL_UNIT_NOT_SUPPORTED: A = A::new(0x25, 0x00);
    /// 26h/00h INVALID FIELD IN PARAMETER LIST: sent with a field pointer into the Data-Out.
    pub const INVALID_FIELD_IN_PARAMETER_LIST: A = A::new(0x26, 0x00);
    /// 26h/01h PARAMETER NOT SUPPORTED: a well-formed parameter we do not implement.
    pub const PARAMETER_NOT_SUPPORTED: A = A::new(0x26, 0x01);
    /// 26h/02h PARAMETER VALUE INVALID: a parameter whose value is out of its allowed set.
    pub const PARAMETER_VALUE_INVALID: A = A::new(0x26, 0x02);
    /// 26h/04h INVALID RELEASE OF PERSISTENT RESERVATION: RELEASE with a scope or type other than
    /// the reservation's.
    pub const INVALID_RELEASE_OF_PERSISTENT_RESERVATION: A = A::new(0x26, 0x04);
    /// 27h/00h WRITE PROTECTED: a write to a read-only LUN.
    pub const WRITE_PROTECTED: A = A::new(0x27, 0x00);
    /// 27h/02h LOGICAL UNIT SOFTWARE WRITE PROTECTED: DATA PROTECT, the logical unit was made
    /// read-only by software rather than by its medium.
    pub const LOGICAL_UNIT_SOFTWARE_WRITE_PROTECTED: A = A::new(0x27, 0x02);
    /// 27h/07h SPACE ALLOCATION FAILED WRITE PROTECT: the thin pool is out of space (SBC-4 thin
    /// provisioning).
    pub const SPACE_ALLOCATION_FAILED_WRITE_PROTECT: A = A::new(0x27, 0x07);
    /// 28h/00h NOT READY TO READY CHANGE, MEDIUM MAY HAVE CHANGED: unit attention, the logical unit
    /// became ready and its contents may differ from before.
    pub const NOT_READY_TO_READY_CHANGE: A = A::new(0x28, 0x00);
    /// 29h/00h POWER ON, RESET, OR BUS DEVICE RESET OCCURRED: the first unit attention of a new
    /// nexus.
    pub const POWER_ON_RESET_OR_BUS_DEVICE_RESET_OCCURRED: A = A::new(0x29, 0x00);
    /// 29h/01h POWER ON OCCURRED: unit attention, the device server started since the nexus last
    /// saw it.
    pub const POWER_ON_OCCURRED: A = A::new(0x29, 0x01);
    /// 29h/03h BUS DEVICE RESET FUNCTION OCCURRED: unit attention after a LUN or target reset.
    pub const BUS_DEVICE_RESET_FUNCTION_OCCURRED: A = A::new(0x29, 0x03);
    /// 29h/07h I_T NEXUS LOSS OCCURRED: unit attention, an I_T nexus was lost (state tied to it is
    /// gone).
    pub const I_T_NEXUS_LOSS_OCCURRED: A = A::new(0x29, 0x07);
    /// 2Ah/01h MODE PARAMETERS CHANGED: unit attention for other nexuses after a MODE SELECT.
    pub const MODE_PARAMETERS_CHANGED: A = A::new(0x2A, 0x01);
    /// 2Ah/03h RESERVATIONS PREEMPTED: unit attention for the holder of a preempted reservation.
    pub const RESERVATIONS_PREEMPTED: A = A::new(0x2A, 0x03);
    /// 2Ah/04h RESERVATIONS RELEASED: unit attention for registrants when a shared reservation is
    /// released.
    pub const RESERVATIONS_RELEASED: A = A::new(0x2A, 0x04);
    /// 2Ah/05h REGISTRATIONS PREEMPTED: unit attention for a nexus whose registration was removed.
    pub const REGISTRATIONS_PREEMPTED: A = A::new(0x2A, 0x05);
    /// 2Ah/06h ASYMMETRIC ACCESS STATE CHANGED: unit attention on every I_T nexus when a
    /// target port group's access state changed (SPC-4 5.16.2.5).
    pub const ASYMMETRIC_ACCESS_STATE_CHANGED: A = A::new(0x2A, 0x06);
    /// 2Ah/09h CAPACITY DATA HAS CHANGED: unit attention after the LUN was resized.
    pub const CAPACITY_DATA_HAS_CHANGED: A = A::new(0x2A, 0x09);
    /// 2Ch/00h COMMAND SEQUENCE ERROR: ILLEGAL REQUEST, the command is not valid in the current
    /// sequence of commands.
    pub const COMMAND_SEQUENCE_ERROR: A = A::new(0x2C, 0x00);
    /// 38h/07h THIN PROVISIONING SOFT THRESHOLD REACHED: unit attention when the pool crosses its
    /// warning level.
    pub const THIN_PROVISIONING_SOFT_THRESHOLD_REACHED: A = A::new(0x38, 0x07);
    /// 39h/00h SAVING PARAMETERS NOT SUPPORTED: SP set or saved pages asked for; nothing is
    /// saveable.
    pub const SAVING_PARAMETERS_NOT_SUPPORTED: A = A::new(0x39, 0x00);
    /// 3Ah/00h MEDIUM NOT PRESENT: NOT READY, there is no medium behind the logical unit.
    pub const MEDIUM_NOT_PRESENT: A = A::new(0x3A, 0x00);
    /// 3Fh/03h INQUIRY DATA HAS CHANGED: unit attention, re-read the standard INQUIRY data and VPD
    /// pages.
    pub const INQUIRY_DATA_HAS_CHANGED: A = A::new(0x3F, 0x03);
    /// 3Fh/0Eh REPORTED LUNS DATA HAS CHANGED: unit attention after a LUN was added to or removed
    /// from the target.
    pub const REPORTED_LUNS_DATA_HAS_CHANGED: A = A::new(0x3F, 0x0E);
    /// 44h/00h INTERNAL TARGET FAILURE: an unexpected error in the target itself.
    pub const INTERNAL_TARGET_FAILURE: A = A::new(0x44, 0x00);
    /// 4Bh/00h DATA PHASE ERROR: ABORTED COMMAND, the data transfer failed in the transport.
    pub const DATA_PHASE_ERROR: A = A::new(0x4B, 0x00);
    /// 4Bh/01h INVALID TARGET PORT TRANSFER TAG RECEIVED: a Data-Out with a Target Transfer Tag we
    /// never issued.
    pub const INVALID_TARGET_PORT_TRANSFER_TAG_RECEIVED: A = A::new(0x4B, 0x01);
    /// 4Bh/02h TOO MUCH WRITE DATA: more Data-Out than the command's expected length.
    pub const TOO_MUCH_WRITE_DATA: A = A::new(0x4B, 0x02);
    /// 4Bh/05h DATA OFFSET ERROR: a Data-Out whose Buffer Offset is not the one expected.
    pub const DATA_OFFSET_ERROR: A = A::new(0x4B, 0x05);
    /// 4Bh/06h INITIATOR RESPONSE TIMEOUT: ABORTED COMMAND, solicited Data-Out did not arrive in
    /// time.
    pub const INITIATOR_RESPONSE_TIMEOUT: A = A::new(0x4B, 0x06);
    /// 53h/02h MEDIUM REMOVAL PREVENTED: ILLEGAL REQUEST, an eject (START STOP UNIT with LOEJ)
    /// while PREVENT ALLOW MEDIUM REMOVAL holds the medium.
    pub const MEDIUM_REMOVAL_PREVENTED: A = A::new(0x53, 0x02);
    /// 55h/03h INSUFFICIENT RESOURCES: ILLEGAL REQUEST, the device server lacks the resources this
    /// command needs.
    pub const INSUFFICIENT_RESOURCES: A = A::new(0x55, 0x03);
    /// 55h/04h INSUFFICIENT REGISTRATION RESOURCES: no room for another persistent reservation
    /// registration.
    pub const INSUFFICIENT_REGISTRATION_RESOURCES: A = A::new(0x55, 0x04);
}

/// Sense-key-specific field pointer (SPC-4 4.5.2.4.2): which byte (and optionally bit) of the
/// CDB or of the parameter data was invalid.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FieldPointer {
    /// C/D bit: `true` when the error is in the CDB, `false` when in the parameter data.
    pub in_cdb: bool,
    /// Byte offset of the (most significant byte of the) invalid field.
    pub byte: u16,
    /// Most significant bit of the invalid field within that byte (BPV=1), if meaningful.
    pub bit: Option<u8>,
}

impl FieldPointer {
    /// Field in the CDB.
    pub const fn cdb(byte: u16, bit: Option<u8>) -> Self {
        Self {
            in_cdb: true,
            byte,
            bit,
        }
    }

    /// Field in the parameter list (Data-Out).
    pub const fn param(byte: u16, bit: Option<u8>) -> Self {
        Self {
            in_cdb: false,
            byte,
            bit,
        }
    }

    /// The three sense-key-specific bytes (SKSV set).
    pub fn encode(&self) -> [u8; 3] {
        let mut b0 = 0x80; // SKSV
        if self.in_cdb {
            b0 |= 0x40;
        }
        if let Some(bit) = self.bit {
            b0 |= 0x08 | (bit & 0x07);
        }
        let [hi, lo] = self.byte.to_be_bytes();
        [b0, hi, lo]
    }

    /// Parse the three sense-key-specific bytes; `None` if SKSV is clear.
    pub fn decode(b: [u8; 3]) -> Option<Self> {
        if b[0] & 0x80 == 0 {
            return None;
        }
        Some(Self {
            in_cdb: b[0] & 0x40 != 0,
            byte: u16::from_be_bytes([b[1], b[2]]),
            bit: (b[0] & 0x08 != 0).then_some(b[0] & 0x07),
        })
    }
}

/// Sense data format, selected by the D_SENSE bit of the Control mode page.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum SenseFormat {
    /// Fixed format, response code 70h (current errors).
    #[default]
    Fixed,
    /// Descriptor format, response code 72h.
    Descriptor,
}

/// Length of fixed-format sense data as Lunar produces it.
pub const FIXED_SENSE_LEN: usize = 18;

/// Typed sense data. Also used as the error type of CDB and parameter-list decoding: every
/// rejected field knows its exact sense.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{key:?} {code:?}{}", self.field.map(|f| format!(" at {} byte {}{}", if f.in_cdb {"CDB"} else {"parameter"}, f.byte, f.bit.map(|b| format!(" bit {b}")).unwrap_or_default())).unwrap_or_default())]
pub struct Sense {
    /// Sense key.
    pub key: SenseKey,
    /// ASC/ASCQ.
    pub code: AdditionalSense,
    /// INFORMATION field (e.g. first miscomparing offset, or the bad LBA), if valid.
    pub information: Option<u64>,
    /// Sense-key-specific field pointer, for ILLEGAL REQUEST.
    pub field: Option<FieldPointer>,
}

impl Sense {
    /// Sense with just key and ASC/ASCQ.
    pub const fn new(key: SenseKey, code: AdditionalSense) -> Self {
        Self {
            key,
            code,
            information: None,
            field: None,
        }
    }

    /// ILLEGAL REQUEST, INVALID FIELD IN CDB with a field pointer.
    pub const fn invalid_field_in_cdb(byte: u16, bit: Option<u8>) -> Self {
        Self {
            key: SenseKey::IllegalRequest,
            code: asc::INVALID_FIELD_IN_CDB,
            information: None,
            field: Some(FieldPointer::cdb(byte, bit)),
        }
    }

    /// ILLEGAL REQUEST, INVALID FIELD IN PARAMETER LIST with a field pointer.
    pub const fn invalid_field_in_param(byte: u16, bit: Option<u8>) -> Self {
        Self {
            key: SenseKey::IllegalRequest,
            code: asc::INVALID_FIELD_IN_PARAMETER_LIST,
            information: None,
            field: Some(FieldPointer::param(byte, bit)),
        }
    }

    /// ILLEGAL REQUEST, PARAMETER LIST LENGTH ERROR.
    pub const fn parameter_list_length_error() -> Self {
        Self::new(SenseKey::IllegalRequest, asc::PARAMETER_LIST_LENGTH_ERROR)
    }

    /// ILLEGAL REQUEST, INVALID COMMAND OPERATION CODE (pointer at the opcode byte).
    pub const fn invalid_opcode() -> Self {
        Self {
            key: SenseKey::IllegalRequest,
            code: asc::INVALID_COMMAND_OPERATION_CODE,
            information: None,
            field: Some(FieldPointer::cdb(0, None)),
        }
    }

    /// ILLEGAL REQUEST, LOGICAL BLOCK ADDRESS OUT OF RANGE.
    pub const fn lba_out_of_range() -> Self {
        Self::new(SenseKey::IllegalRequest, asc::LBA_OUT_OF_RANGE)
    }

    /// ILLEGAL REQUEST, LOGICAL UNIT NOT SUPPORTED.
    pub const fn lun_not_supported() -> Self {
        Self::new(SenseKey::IllegalRequest, asc::LOGICAL_UNIT_NOT_SUPPORTED)
    }

    /// UNIT ATTENTION with the given ASC/ASCQ.
    pub const fn unit_attention(code: AdditionalSense) -> Self {
        Self::new(SenseKey::UnitAttention, code)
    }

    /// Set the INFORMATION field.
    pub const fn with_information(mut self, information: u64) -> Self {
        self.information = Some(information);
        self
    }

    /// Encode in the requested format.
    pub fn encode(&self, format: SenseFormat) -> Vec<u8> {
        match format {
            SenseFormat::Fixed => self.encode_fixed().to_vec(),
            SenseFormat::Descriptor => self.encode_descriptor(),
        }
    }

    /// Fixed format (SPC-4 4.5.3), 18 bytes. An INFORMATION value that does not fit in
    /// 32 bits is omitted (VALID=0), as the standard requires.
    pub fn encode_fixed(&self) -> [u8; FIXED_SENSE_LEN] {
        let mut b = [0u8; FIXED_SENSE_LEN];
        b[0] = 0x70;
        if let Some(info) = self.information.and_then(|i| u32::try_from(i).ok()) {
            b[0] |= 0x80;
            b[3..7].copy_from_slice(&info.to_be_bytes());
        }
        b[2] = self.key as u8;
        b[7] = (FIXED_SENSE_LEN - 8) as u8;
        b[12] = self.code.asc;
        b[13] = self.code.ascq;
        if let Some(fp) = self.field {
            b[15..18].copy_from_slice(&fp.encode());
        }
        b
    }

    /// Descriptor format (SPC-4 4.5.2) with an Information descriptor and a
    /// sense-key-specific descriptor when present.
    pub fn encode_descriptor(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(8 + 12 + 8);
        b.extend_from_slice(&[
            0x72,
            self.key as u8,
            self.code.asc,
            self.code.ascq,
            0,
            0,
            0,
            0,
        ]);
        if let Some(info) = self.information {
            b.extend_from_slice(&[0x00, 0x0A, 0x80, 0x00]);
            b.extend_from_slice(&info.to_be_bytes());
        }
        if let Some(fp) = self.field {
            b.extend_from_slice(&[0x02, 0x06, 0x00, 0x00]);
            b.extend_from_slice(&fp.encode());
            b.push(0);
        }
        b[7] = (b.len() - 8) as u8;
        b
    }

    /// Parse fixed (70h/71h) or descriptor (72h/73h) sense data, as produced by this module.
    /// Useful to tests and to anything relaying sense from elsewhere.
    pub fn decode(b: &[u8]) -> Option<Self> {
        let code = b.first()? & 0x7F;
        match code {
            0x70 | 0x71 => {
                if b.len() < 14 {
                    return None;
                }
                let key = SenseKey::from_u8(b[2])?;
                let information = (b[0] & 0x80 != 0)
                    .then(|| u64::from(u32::from_be_bytes([b[3], b[4], b[5], b[6]])));
                let field = if b.len() >= 18 {
                    FieldPointer::decode([b[15], b[16], b[17]])
                } else {
                    None
                };
                Some(Self {
                    key,
                    code: AdditionalSense::new(b[12], b[13]),
                    information,
                    field,
                })
            }
            0x72 | 0x73 => {
                if b.len() < 8 {
                    return None;
                }
                let key = SenseKey::from_u8(b[1])?;
                let mut s = Self::new(key, AdditionalSense::new(b[2], b[3]));
                let end = (8 + usize::from(b[7])).min(b.len());
                let mut off = 8;
                while off + 2 <= end {
                    let len = usize::from(b[off + 1]);
                    let d = b.get(off..off + 2 + len)?;
                    match d[0] {
                        0x00 if len >= 0x0A && d[2] & 0x80 != 0 => {
                            let mut v = [0u8; 8];
                            v.copy_from_slice(&d[4..12]);
                            s.information = Some(u64::from_be_bytes(v));
                        }
                        0x02 if len >= 6 => s.field = FieldPointer::decode([d[4], d[5], d[6]]),
                        _ => {}
                    }
                    off += 2 + len;
                }
                Some(s)
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_invalid_field_golden() {
        let s = Sense::invalid_field_in_cdb(1, Some(7));
        let b = s.encode_fixed();
        assert_eq!(
            b,
            [
                0x70,
                0,
                0x05,
                0,
                0,
                0,
                0,
                10,
                0,
                0,
                0,
                0,
                0x24,
                0x00,
                0,
                0xC8 | 7,
                0x00,
                0x01
            ]
        );
        assert_eq!(Sense::decode(&b), Some(s));
    }

    #[test]
    fn fixed_information_valid_bit() {
        let s = Sense::new(
            SenseKey::Miscompare,
            asc::MISCOMPARE_DURING_VERIFY_OPERATION,
        )
        .with_information(0x1234);
        let b = s.encode_fixed();
        assert_eq!(b[0], 0xF0);
        assert_eq!(&b[3..7], &[0, 0, 0x12, 0x34]);
        assert_eq!(b[2], 0x0E);
        assert_eq!((b[12], b[13]), (0x1D, 0x00));
        // Too large for the fixed-format INFORMATION field: VALID stays clear.
        let big = s.clone().with_information(1 << 40).encode_fixed();
        assert_eq!(big[0], 0x70);
        assert_eq!(&big[3..7], &[0, 0, 0, 0]);
    }

    #[test]
    fn descriptor_golden() {
        let s = Sense::invalid_field_in_param(0x102, None).with_information(0x0102_0304_0506_0708);
        let b = s.encode_descriptor();
        assert_eq!(
            b,
            vec![
                0x72, 0x05, 0x26, 0x00, 0, 0, 0, 20, // header
                0x00, 0x0A, 0x80, 0x00, 1, 2, 3, 4, 5, 6, 7, 8, // information
                0x02, 0x06, 0x00, 0x00, 0x80, 0x01, 0x02, 0x00, // sense key specific
            ]
        );
        assert_eq!(Sense::decode(&b), Some(s));
    }

    #[test]
    fn descriptor_minimal() {
        let s = Sense::unit_attention(asc::POWER_ON_RESET_OR_BUS_DEVICE_RESET_OCCURRED);
        assert_eq!(
            s.encode(SenseFormat::Descriptor),
            vec![0x72, 0x06, 0x29, 0x00, 0, 0, 0, 0]
        );
        assert_eq!(s.encode(SenseFormat::Fixed).len(), FIXED_SENSE_LEN);
    }

    #[test]
    fn decode_rejects_garbage() {
        assert_eq!(Sense::decode(&[]), None);
        assert_eq!(Sense::decode(&[0x70, 0, 5]), None);
        assert_eq!(Sense::decode(&[0x55; 20]), None);
        // Descriptor with a length running past the end must not panic.
        assert!(Sense::decode(&[0x72, 5, 0x24, 0, 0, 0, 0, 40, 0x02, 0x30]).is_none());
    }

    #[test]
    fn display_mentions_field() {
        let s = Sense::invalid_field_in_cdb(2, Some(3));
        let text = s.to_string();
        assert!(text.contains("CDB byte 2 bit 3"), "{text}");
    }
}
