//! Persistent reservations (SPC-4 5.13, 6.14, 6.15): PERSISTENT RESERVE IN/OUT CDBs,
//! the PERSISTENT RESERVE OUT parameter lists, the PERSISTENT RESERVE IN response formats
//! and iSCSI TransportIDs (SPC-4 7.6.4.6).
//!
//! Pure data: the device server in `target-daemon` owns the reservation state machine.

use super::descriptor;
use super::sense::Sense;

/// PERSISTENT RESERVE IN service actions.
pub mod in_sa {
    /// READ KEYS: the PRGENERATION and every registered reservation key.
    pub const READ_KEYS: u8 = 0x00;
    /// READ RESERVATION: the PRGENERATION and the reservation, if any (key, scope, type).
    pub const READ_RESERVATION: u8 = 0x01;
    /// REPORT CAPABILITIES: the supported reservation types
    /// ([`TYPE_MASK_ALL`](super::TYPE_MASK_ALL)) and options (ATP_C, SIP_C, PTPL_C...).
    pub const REPORT_CAPABILITIES: u8 = 0x02;
    /// READ FULL STATUS: every registration with its TransportID, relative target port and
    /// whether it holds the reservation.
    pub const READ_FULL_STATUS: u8 = 0x03;
}

/// PERSISTENT RESERVE OUT service actions.
pub mod out_sa {
    /// REGISTER: registers the I_T nexus with SERVICE ACTION RESERVATION KEY, changes its key,
    /// or (with a zero new key) unregisters it; RESERVATION KEY must match the current one.
    pub const REGISTER: u8 = 0x00;
    /// RESERVE: a registered I_T nexus takes the reservation of the CDB's TYPE.
    pub const RESERVE: u8 = 0x01;
    /// RELEASE: the holder drops the reservation (SCOPE and TYPE must match it).
    pub const RELEASE: u8 = 0x02;
    /// CLEAR: removes every registration and the reservation, and bumps PRGENERATION.
    pub const CLEAR: u8 = 0x03;
    /// PREEMPT: removes the registrations holding SERVICE ACTION RESERVATION KEY and, if one
    /// held the reservation, takes it over.
    pub const PREEMPT: u8 = 0x04;
    /// PREEMPT AND ABORT: PREEMPT, and also aborts the tasks of the preempted I_T nexuses.
    pub const PREEMPT_AND_ABORT: u8 = 0x05;
    /// REGISTER AND IGNORE EXISTING KEY: REGISTER without checking RESERVATION KEY (an
    /// initiator that lost track of its key can still re-register).
    pub const REGISTER_AND_IGNORE_EXISTING_KEY: u8 = 0x06;
    /// REGISTER AND MOVE: the holder registers another I_T nexus (named by a TransportID in the
    /// parameter list) and moves the reservation to it.
    pub const REGISTER_AND_MOVE: u8 = 0x07;
}

/// The only scope SPC-4 still defines: the whole logical unit.
pub const LU_SCOPE: u8 = 0;

/// SCSI protocol identifier of iSCSI in TransportIDs.
const PROTOCOL_ISCSI: u8 = 0x5;

/// Longest iSCSI name (RFC 7143 4.2.7.1: 223 bytes of UTF-8).
pub const MAX_ISCSI_NAME_LEN: usize = 223;

/// Longest iSCSI TransportID accepted (SPC-4 7.6.4.6): the 4-byte header and a format 01b
/// body of the longest name, ",i,0x", 12 ISID digits and the NUL, padded to a multiple of
/// four (244 bytes). Anything longer cannot name a valid initiator port; bounding it is
/// what lets a device server bound a TransportID list by the number of entries it accepts.
pub const MAX_TRANSPORT_ID_LEN: usize = 4 + (MAX_ISCSI_NAME_LEN + 5 + 12 + 1).next_multiple_of(4);

/// Persistent reservation type (SPC-4 table 169).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PrType {
    /// Write Exclusive: only the holder writes; everybody reads.
    WriteExclusive,
    /// Exclusive Access: only the holder reads or writes.
    ExclusiveAccess,
    /// Write Exclusive – Registrants Only.
    WriteExclusiveRegistrantsOnly,
    /// Exclusive Access – Registrants Only.
    ExclusiveAccessRegistrantsOnly,
    /// Write Exclusive – All Registrants.
    WriteExclusiveAllRegistrants,
    /// Exclusive Access – All Registrants.
    ExclusiveAccessAllRegistrants,
}

impl PrType {
    /// Decode the TYPE field; `None` for reserved values.
    pub fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            1 => Self::WriteExclusive,
            3 => Self::ExclusiveAccess,
            5 => Self::WriteExclusiveRegistrantsOnly,
            6 => Self::ExclusiveAccessRegistrantsOnly,
            7 => Self::WriteExclusiveAllRegistrants,
            8 => Self::ExclusiveAccessAllRegistrants,
            _ => return None,
        })
    }

    /// The TYPE field value.
    pub fn code(self) -> u8 {
        match self {
            Self::WriteExclusive => 1,
            Self::ExclusiveAccess => 3,
            Self::WriteExclusiveRegistrantsOnly => 5,
            Self::ExclusiveAccessRegistrantsOnly => 6,
            Self::WriteExclusiveAllRegistrants => 7,
            Self::ExclusiveAccessAllRegistrants => 8,
        }
    }

    /// Every registrant is a reservation holder.
    pub fn all_registrants(self) -> bool {
        matches!(
            self,
            Self::WriteExclusiveAllRegistrants | Self::ExclusiveAccessAllRegistrants
        )
    }

    /// Registrants get the holder's access (registrants-only and all-registrants types).
    pub fn registrants_have_access(self) -> bool {
        !matches!(self, Self::WriteExclusive | Self::ExclusiveAccess)
    }

    /// Non-holders may not even read (the Exclusive Access family).
    pub fn exclusive_access(self) -> bool {
        matches!(
            self,
            Self::ExclusiveAccess
                | Self::ExclusiveAccessRegistrantsOnly
                | Self::ExclusiveAccessAllRegistrants
        )
    }
}

/// PERSISTENT RESERVATION TYPE MASK of REPORT CAPABILITIES: every type is supported.
pub const TYPE_MASK_ALL: u16 = 0xEA01;

/// A decoded PERSISTENT RESERVE IN CDB.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PrInCdb {
    /// Service action.
    pub sa: u8,
    /// Allocation length.
    pub alloc_len: u16,
}

impl PrInCdb {
    /// Decode a 10-byte PERSISTENT RESERVE IN CDB.
    pub fn parse(cdb: &[u8]) -> Result<Self, Sense> {
        if cdb.len() < 10 {
            return Err(Sense::invalid_field_in_cdb(0, None));
        }
        let sa = cdb[1] & 0x1F;
        if sa > in_sa::READ_FULL_STATUS {
            return Err(Sense::invalid_field_in_cdb(1, Some(4)));
        }
        Ok(Self {
            sa,
            alloc_len: u16::from_be_bytes([cdb[7], cdb[8]]),
        })
    }
}

/// A decoded PERSISTENT RESERVE OUT CDB.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PrOutCdb {
    /// Service action.
    pub sa: u8,
    /// SCOPE field.
    pub scope: u8,
    /// Raw TYPE field (validated by the service actions that use it).
    pub type_code: u8,
    /// Parameter list length.
    pub param_len: u32,
}

impl PrOutCdb {
    /// Decode a 10-byte PERSISTENT RESERVE OUT CDB.
    pub fn parse(cdb: &[u8]) -> Result<Self, Sense> {
        if cdb.len() < 10 {
            return Err(Sense::invalid_field_in_cdb(0, None));
        }
        let sa = cdb[1] & 0x1F;
        if sa > out_sa::REGISTER_AND_MOVE {
            return Err(Sense::invalid_field_in_cdb(1, Some(4)));
        }
        Ok(Self {
            sa,
            scope: cdb[2] >> 4,
            type_code: cdb[2] & 0x0F,
            param_len: u32::from_be_bytes([cdb[5], cdb[6], cdb[7], cdb[8]]),
        })
    }

    /// The reservation type, checked (INVALID FIELD IN CDB otherwise) along with the scope.
    pub fn reservation_type(&self) -> Result<PrType, Sense> {
        if self.scope != LU_SCOPE {
            return Err(Sense::invalid_field_in_cdb(2, Some(7)));
        }
        PrType::from_u8(self.type_code).ok_or(Sense::invalid_field_in_cdb(2, Some(3)))
    }
}

/// The basic PERSISTENT RESERVE OUT parameter list (SPC-4 6.15.3), 24 bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProutParams {
    /// RESERVATION KEY.
    pub key: u64,
    /// SERVICE ACTION RESERVATION KEY.
    pub sa_key: u64,
    /// SPEC_I_PT bit.
    pub spec_i_pt: bool,
    /// ALL_TG_PT bit.
    pub all_tg_pt: bool,
    /// APTPL bit.
    pub aptpl: bool,
}

/// Length of the basic parameter list.
pub const BASIC_PARAM_LEN: usize = 24;

impl ProutParams {
    /// Decode the basic parameter list; PARAMETER LIST LENGTH ERROR unless it is 24 bytes, or,
    /// with SPEC_I_PT set, 24 bytes followed by a TransportID list ([`spec_i_pt_ids`]).
    pub fn parse(data: &[u8]) -> Result<Self, Sense> {
        let spec = data.len() > 20 && data[20] & 0x08 != 0;
        if data.len() < BASIC_PARAM_LEN || (!spec && data.len() != BASIC_PARAM_LEN) {
            return Err(Sense::parameter_list_length_error());
        }
        let flags = data[20];
        Ok(Self {
            key: be64(&data[0..8]),
            sa_key: be64(&data[8..16]),
            spec_i_pt: flags & 0x08 != 0,
            all_tg_pt: flags & 0x04 != 0,
            aptpl: flags & 0x01 != 0,
        })
    }
}

/// The TransportIDs that follow a REGISTER parameter list with SPEC_I_PT set (SPC-4 6.15.3:
/// bytes 24-27 TRANSPORTID PARAMETER DATA LENGTH, then TransportIDs back to back, each 4 bytes
/// plus its ADDITIONAL LENGTH). Errors point at the offending byte of the parameter list.
pub fn spec_i_pt_ids(data: &[u8]) -> Result<Vec<TransportId>, Sense> {
    const LIST_AT: usize = 28;
    let list = data
        .get(24..)
        .and_then(descriptor::exact_list32)
        .ok_or_else(Sense::parameter_list_length_error)?;
    descriptor::split(list, descriptor::length16)
        .map(|d| {
            let (at, one) = d.map_err(|_| Sense::parameter_list_length_error())?;
            let off = u16::try_from(LIST_AT + at).unwrap_or(u16::MAX);
            TransportId::parse(one)
                .map_err(|o| Sense::invalid_field_in_param(off.saturating_add(o), None))
        })
        .collect()
}

/// The REGISTER AND MOVE parameter list (SPC-4 6.15.4).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegisterMoveParams {
    /// RESERVATION KEY.
    pub key: u64,
    /// SERVICE ACTION RESERVATION KEY: the destination's key.
    pub sa_key: u64,
    /// UNREG: unregister the issuing I_T nexus after the move.
    pub unreg: bool,
    /// APTPL bit.
    pub aptpl: bool,
    /// RELATIVE TARGET PORT IDENTIFIER of the destination.
    pub relative_port: u16,
    /// The destination initiator port.
    pub transport_id: TransportId,
}

impl RegisterMoveParams {
    /// Decode the parameter list.
    pub fn parse(data: &[u8]) -> Result<Self, Sense> {
        if data.len() < BASIC_PARAM_LEN {
            return Err(Sense::parameter_list_length_error());
        }
        let tid_len = u32::from_be_bytes([data[20], data[21], data[22], data[23]]) as usize;
        let Some(tid) = data.get(BASIC_PARAM_LEN..BASIC_PARAM_LEN.saturating_add(tid_len)) else {
            return Err(Sense::parameter_list_length_error());
        };
        if tid.len() < 4 {
            // Not even a TransportID header: TRANSPORTID PARAMETER DATA LENGTH is wrong.
            return Err(Sense::invalid_field_in_param(20, Some(7)));
        }
        let transport_id = TransportId::parse(tid)
            .map_err(|off| Sense::invalid_field_in_param(24u16.saturating_add(off), None))?;
        Ok(Self {
            key: be64(&data[0..8]),
            sa_key: be64(&data[8..16]),
            unreg: data[17] & 0x02 != 0,
            aptpl: data[17] & 0x01 != 0,
            relative_port: u16::from_be_bytes([data[18], data[19]]),
            transport_id,
        })
    }
}

/// An iSCSI initiator port TransportID (SPC-4 7.6.4.6).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TransportId {
    /// iSCSI initiator name.
    pub name: String,
    /// ISID when the TransportID names an initiator port (format 01b), `None` for a device.
    pub isid: Option<u64>,
}

impl TransportId {
    /// Decode; the error is the byte offset of the offending field.
    pub fn parse(b: &[u8]) -> Result<Self, u16> {
        if b.len() < 4 {
            return Err(0);
        }
        if b[0] & 0x0F != PROTOCOL_ISCSI {
            return Err(0);
        }
        let format = b[0] >> 6;
        let len = usize::from(u16::from_be_bytes([b[2], b[3]]));
        if 4 + len > MAX_TRANSPORT_ID_LEN {
            return Err(2);
        }
        let Some(body) = b.get(4..4 + len) else {
            return Err(2);
        };
        let end = body.iter().position(|&c| c == 0).unwrap_or(body.len());
        let text = std::str::from_utf8(&body[..end]).map_err(|_| 4u16)?;
        // A missing name is ADDITIONAL LENGTH's fault when there are no name bytes at all:
        // byte 4 would then lie past this TransportID, and maybe past the parameter list.
        let bad_name: u16 = if body.is_empty() { 2 } else { 4 };
        let id = Self::parse_text(format, text, bad_name)?;
        if id.name.len() > MAX_ISCSI_NAME_LEN {
            return Err(4);
        }
        Ok(id)
    }

    /// The name (and ISID) a TransportID body of `format` carries; a missing name is
    /// blamed at `bad_name`.
    fn parse_text(format: u8, text: &str, bad_name: u16) -> Result<Self, u16> {
        match format {
            0 => {
                if text.is_empty() {
                    return Err(bad_name);
                }
                Ok(Self {
                    name: text.to_string(),
                    isid: None,
                })
            }
            1 => {
                // "<name>,i,0x<ISID in 12 hex digits>" (the separator is case-insensitive).
                let lower = text.to_ascii_lowercase();
                let Some(sep) = lower.rfind(",i,0x") else {
                    return Err(bad_name);
                };
                let isid = u64::from_str_radix(&text[sep + 5..], 16).map_err(|_| 4u16)?;
                if sep == 0 || isid >> 48 != 0 {
                    return Err(4);
                }
                Ok(Self {
                    name: text[..sep].to_string(),
                    isid: Some(isid),
                })
            }
            _ => Err(0),
        }
    }

    /// Encode as format 01b (initiator port) when an ISID is known, 00b otherwise; the
    /// name is NUL-terminated and padded to a multiple of four bytes.
    pub fn encode(&self) -> Vec<u8> {
        let text = match self.isid {
            Some(isid) => format!("{},i,0x{:012x}", self.name, isid & 0xFFFF_FFFF_FFFF),
            None => self.name.clone(),
        };
        let body_len = (text.len() + 1).next_multiple_of(4).max(20);
        let mut out = Vec::with_capacity(4 + body_len);
        out.push(if self.isid.is_some() { 0x40 } else { 0 } | PROTOCOL_ISCSI);
        out.push(0);
        out.extend_from_slice(&(u16::try_from(body_len).unwrap_or(u16::MAX)).to_be_bytes());
        out.extend_from_slice(text.as_bytes());
        out.resize(4 + body_len, 0);
        out
    }
}

/// READ KEYS response.
pub fn encode_read_keys(generation: u32, keys: &[u64]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + keys.len() * 8);
    out.extend_from_slice(&generation.to_be_bytes());
    out.extend_from_slice(&(u32::try_from(keys.len() * 8).unwrap_or(u32::MAX)).to_be_bytes());
    for k in keys {
        out.extend_from_slice(&k.to_be_bytes());
    }
    out
}

/// READ RESERVATION response; `reservation` = (key, type) of the current reservation
/// (key 0 for the all-registrants types).
pub fn encode_read_reservation(generation: u32, reservation: Option<(u64, PrType)>) -> Vec<u8> {
    let mut out = Vec::with_capacity(24);
    out.extend_from_slice(&generation.to_be_bytes());
    match reservation {
        None => out.extend_from_slice(&0u32.to_be_bytes()),
        Some((key, t)) => {
            out.extend_from_slice(&16u32.to_be_bytes());
            out.extend_from_slice(&key.to_be_bytes());
            out.extend_from_slice(&[0; 5]);
            out.push((LU_SCOPE << 4) | t.code());
            out.extend_from_slice(&[0; 2]);
        }
    }
    out
}

/// What REPORT CAPABILITIES advertises.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Capabilities {
    /// SPEC_I_PT supported (SIP_C).
    pub spec_i_pt: bool,
    /// ALL_TG_PT supported (ATP_C).
    pub all_tg_pt: bool,
    /// Persist through power loss supported (PTPL_C).
    pub ptpl_capable: bool,
    /// Persist through power loss currently activated (PTPL_A).
    pub ptpl_active: bool,
}

/// REPORT CAPABILITIES response (8 bytes). CRH=1: SCSI-2 RESERVE/RELEASE follow SPC-4
/// 5.13.3 in the presence of persistent reservations; ALLOW COMMANDS = 001b (TEST UNIT
/// READY is allowed under Write/Exclusive Access reservations); TMV=1 with every type.
pub fn encode_report_capabilities(c: Capabilities) -> Vec<u8> {
    let mut out = vec![0u8; 8];
    out[1] = 8;
    out[2] = 0x10
        | if c.spec_i_pt { 0x08 } else { 0 }
        | if c.all_tg_pt { 0x04 } else { 0 }
        | if c.ptpl_capable { 0x01 } else { 0 };
    out[3] = 0x80 | (1 << 4) | if c.ptpl_active { 0x01 } else { 0 };
    out[4..6].copy_from_slice(&TYPE_MASK_ALL.to_be_bytes());
    out
}

/// One registration as READ FULL STATUS reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FullStatusEntry {
    /// The registrant's key.
    pub key: u64,
    /// Registered through every target port.
    pub all_tg_pt: bool,
    /// Reservation held through this registration (and its type).
    pub holder: Option<PrType>,
    /// Relative target port identifier (0 with ALL_TG_PT).
    pub relative_port: u16,
    /// The initiator port.
    pub transport_id: TransportId,
}

/// READ FULL STATUS response.
pub fn encode_read_full_status(generation: u32, entries: &[FullStatusEntry]) -> Vec<u8> {
    let mut body = Vec::new();
    for e in entries {
        let tid = e.transport_id.encode();
        body.extend_from_slice(&e.key.to_be_bytes());
        body.extend_from_slice(&[0; 4]);
        body.push(if e.all_tg_pt { 0x02 } else { 0 } | if e.holder.is_some() { 1 } else { 0 });
        body.push(e.holder.map_or(0, |t| (LU_SCOPE << 4) | t.code()));
        body.extend_from_slice(&[0; 4]);
        body.extend_from_slice(&e.relative_port.to_be_bytes());
        body.extend_from_slice(&(u32::try_from(tid.len()).unwrap_or(u32::MAX)).to_be_bytes());
        body.extend_from_slice(&tid);
    }
    let mut out = Vec::with_capacity(8 + body.len());
    out.extend_from_slice(&generation.to_be_bytes());
    out.extend_from_slice(&(u32::try_from(body.len()).unwrap_or(u32::MAX)).to_be_bytes());
    out.extend_from_slice(&body);
    out
}

fn be64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_be_bytes(a)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scsi::sense::FieldPointer;

    #[test]
    fn types_round_trip_and_reserved_values_rejected() {
        for code in 0..16u8 {
            match PrType::from_u8(code) {
                Some(t) => assert_eq!(t.code(), code),
                None => assert!(![1, 3, 5, 6, 7, 8].contains(&code)),
            }
        }
        assert!(PrType::WriteExclusiveAllRegistrants.all_registrants());
        assert!(!PrType::WriteExclusiveRegistrantsOnly.all_registrants());
        assert!(PrType::ExclusiveAccessRegistrantsOnly.exclusive_access());
    }

    #[test]
    fn out_cdb_and_params() {
        let cdb = [0x5F, 0x01, 0x05, 0, 0, 0, 0, 0, 24, 0];
        let c = PrOutCdb::parse(&cdb).unwrap();
        assert_eq!((c.sa, c.param_len), (out_sa::RESERVE, 24));
        assert_eq!(
            c.reservation_type().unwrap(),
            PrType::WriteExclusiveRegistrantsOnly
        );
        let bad_scope = PrOutCdb::parse(&[0x5F, 0x01, 0x15, 0, 0, 0, 0, 0, 24, 0]).unwrap();
        assert!(bad_scope.reservation_type().is_err());
        assert!(PrOutCdb::parse(&[0x5F, 0x08, 0, 0, 0, 0, 0, 0, 24, 0]).is_err());

        let mut p = [0u8; 24];
        p[0..8].copy_from_slice(&7u64.to_be_bytes());
        p[8..16].copy_from_slice(&9u64.to_be_bytes());
        p[20] = 0x05;
        let pp = ProutParams::parse(&p).unwrap();
        assert_eq!(
            (pp.key, pp.sa_key, pp.all_tg_pt, pp.aptpl),
            (7, 9, true, true)
        );
        assert!(!pp.spec_i_pt);
        assert!(ProutParams::parse(&p[..23]).is_err());
    }

    #[test]
    fn transport_id_round_trip() {
        let t = TransportId {
            name: "iqn.2026-11.io.lunar:init".into(),
            isid: Some(0x23d0_0000_0001),
        };
        let b = t.encode();
        assert_eq!(b.len() % 4, 0);
        assert_eq!(b[0], 0x45);
        assert_eq!(TransportId::parse(&b).unwrap(), t);
        let dev = TransportId {
            name: "iqn.x".into(),
            isid: None,
        };
        assert_eq!(TransportId::parse(&dev.encode()).unwrap(), dev);
        assert!(TransportId::parse(&[0x41, 0, 0, 8, b'a', 0, 0, 0]).is_err());
        assert!(TransportId::parse(&[0x45, 0, 0, 200, b'a']).is_err());
    }

    /// Found by the pr_out fuzz target: a TransportID with no name bytes at all was
    /// blamed at byte 4, the first byte after it, so a SPEC_I_PT list ending in one got a
    /// field pointer past the end of the parameter list. ADDITIONAL LENGTH is at fault.
    #[test]
    fn empty_transport_id_blames_its_length() {
        assert_eq!(TransportId::parse(&[0x05, 0, 0, 0]), Err(2));
        assert_eq!(TransportId::parse(&[0x45, 0, 0, 0]), Err(2));
        // A name that is present but empty is still blamed where it starts.
        assert_eq!(TransportId::parse(&[0x05, 0, 0, 4, 0, 0, 0, 0]), Err(4));
        let mut p = vec![0u8; 24];
        p[20] = 0x08; // SPEC_I_PT
        p.extend_from_slice(&4u32.to_be_bytes());
        p.extend_from_slice(&[0x05, 0, 0, 0]);
        let e = spec_i_pt_ids(&p).unwrap_err();
        assert_eq!(e.field, Some(FieldPointer::param(30, None)));
        assert!(30 < p.len());
    }

    /// Found by the pr_out fuzz target: a REGISTER AND MOVE list whose TRANSPORTID
    /// PARAMETER DATA LENGTH is below a TransportID's 4-byte header was blamed at byte 24,
    /// past the end of a 24-byte list. The length field (byte 20) is at fault.
    #[test]
    fn register_and_move_short_transport_id_blames_its_length() {
        let mut p = vec![0u8; 24];
        let e = RegisterMoveParams::parse(&p).unwrap_err();
        assert_eq!(e.field, Some(FieldPointer::param(20, Some(7))));
        p[23] = 2;
        p.extend_from_slice(&[0x05, 0]);
        let e = RegisterMoveParams::parse(&p).unwrap_err();
        assert_eq!(e.field, Some(FieldPointer::param(20, Some(7))));
    }

    #[test]
    fn transport_ids_are_bounded() {
        let longest = TransportId {
            name: "n".repeat(MAX_ISCSI_NAME_LEN),
            isid: Some(0x23d0_0000_0001),
        };
        let b = longest.encode();
        assert_eq!(b.len(), MAX_TRANSPORT_ID_LEN);
        assert_eq!(TransportId::parse(&b).unwrap(), longest);
        // A name over 223 bytes, and a body padded beyond the longest valid one (even
        // with a short name), name no iSCSI initiator port.
        let long = TransportId {
            name: "n".repeat(MAX_ISCSI_NAME_LEN + 1),
            isid: None,
        };
        assert_eq!(TransportId::parse(&long.encode()), Err(4));
        let mut padded = TransportId {
            name: "iqn.a".into(),
            isid: Some(1),
        }
        .encode();
        let body = MAX_TRANSPORT_ID_LEN - 4 + 4;
        padded.resize(4 + body, 0);
        padded[2..4].copy_from_slice(&(body as u16).to_be_bytes());
        assert_eq!(TransportId::parse(&padded), Err(2));
    }

    #[test]
    fn register_and_move_params() {
        let tid = TransportId {
            name: "iqn.a".into(),
            isid: Some(1),
        }
        .encode();
        let mut p = vec![0u8; 24];
        p[0..8].copy_from_slice(&1u64.to_be_bytes());
        p[8..16].copy_from_slice(&2u64.to_be_bytes());
        p[17] = 0x02;
        p[18..20].copy_from_slice(&3u16.to_be_bytes());
        p[20..24].copy_from_slice(&(tid.len() as u32).to_be_bytes());
        p.extend_from_slice(&tid);
        let m = RegisterMoveParams::parse(&p).unwrap();
        assert!(m.unreg && !m.aptpl);
        assert_eq!((m.key, m.sa_key, m.relative_port), (1, 2, 3));
        assert_eq!(m.transport_id.isid, Some(1));
        assert!(RegisterMoveParams::parse(&p[..p.len() - 1]).is_err());
    }

    #[test]
    fn responses() {
        let k = encode_read_keys(3, &[1, 2]);
        assert_eq!(&k[0..8], &[0, 0, 0, 3, 0, 0, 0, 16]);
        assert_eq!(k.len(), 24);
        let r = encode_read_reservation(4, Some((5, PrType::ExclusiveAccess)));
        assert_eq!(r.len(), 24);
        assert_eq!(r[21], 3);
        assert_eq!(encode_read_reservation(4, None).len(), 8);
        let c = encode_report_capabilities(Capabilities {
            spec_i_pt: false,
            all_tg_pt: true,
            ptpl_capable: true,
            ptpl_active: false,
        });
        assert_eq!(c, vec![0, 8, 0x15, 0x90, 0xEA, 0x01, 0, 0]);
        let f = encode_read_full_status(
            1,
            &[FullStatusEntry {
                key: 9,
                all_tg_pt: false,
                holder: Some(PrType::WriteExclusive),
                relative_port: 2,
                transport_id: TransportId {
                    name: "iqn.a".into(),
                    isid: Some(1),
                },
            }],
        );
        let add = u32::from_be_bytes([f[4], f[5], f[6], f[7]]) as usize;
        assert_eq!(f.len(), 8 + add);
        assert_eq!(f[8 + 12], 1);
        assert_eq!(f[8 + 13], 1);
    }
}
