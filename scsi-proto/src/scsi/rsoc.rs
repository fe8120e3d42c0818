//! REPORT SUPPORTED OPERATION CODES (SPC-4 6.35) and REPORT SUPPORTED TASK MANAGEMENT
//! FUNCTIONS (SPC-4 6.36) parameter data, generated from the command table.

use super::cdb::RsocCdb;
use super::opcode::{self, CommandInfo, COMMANDS};
use super::sense::Sense;

/// Nominal and recommended command timeouts reported with RCTD=1, in seconds. Lunar has
/// no per-command timeout knowledge, so it reports 0 ("not specified").
const TIMEOUTS_DESCRIPTOR: [u8; 12] = [0x00, 0x0A, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];

fn all_commands(rctd: bool) -> Vec<u8> {
    let desc_len = if rctd { 20 } else { 8 };
    let mut b = Vec::with_capacity(4 + COMMANDS.len() * desc_len);
    b.extend_from_slice(&((COMMANDS.len() * desc_len) as u32).to_be_bytes());
    for c in COMMANDS {
        b.push(c.opcode);
        b.push(0);
        b.extend_from_slice(&c.service_action.unwrap_or(0).to_be_bytes());
        b.push(0);
        let mut flags = 0;
        if c.service_action.is_some() {
            flags |= 0x01; // SERVACTV
        }
        if rctd {
            flags |= 0x02; // CTDP
        }
        b.push(flags);
        b.extend_from_slice(&(c.cdb_len() as u16).to_be_bytes());
        if rctd {
            b.extend_from_slice(&TIMEOUTS_DESCRIPTOR);
        }
    }
    b
}

fn one_command(info: Option<&CommandInfo>, rctd: bool) -> Vec<u8> {
    let mut b = vec![0u8; 4];
    match info {
        None => b[1] = 0x01, // SUPPORT 001b: not supported
        Some(c) => {
            b[1] = 0x03; // SUPPORT 011b: supported per standard
            if rctd {
                b[1] |= 0x80; // CTDP
            }
            b[2..4].copy_from_slice(&(c.cdb_len() as u16).to_be_bytes());
            b.extend_from_slice(c.usage);
            if rctd {
                b.extend_from_slice(&TIMEOUTS_DESCRIPTOR);
            }
        }
    }
    b
}

/// Render the parameter data for a REPORT SUPPORTED OPERATION CODES CDB.
pub fn encode(req: &RsocCdb) -> Result<Vec<u8>, Sense> {
    let has_sa = opcode::has_service_action(req.opcode);
    match req.options {
        0 => Ok(all_commands(req.rctd)),
        // One command, no service action: invalid if the opcode has service actions.
        1 if has_sa => Err(Sense::invalid_field_in_cdb(3, Some(7))),
        1 => Ok(one_command(opcode::lookup(req.opcode, None), req.rctd)),
        // One command with service action: invalid if the opcode has none.
        2 if !has_sa => Err(Sense::invalid_field_in_cdb(3, Some(7))),
        2 => Ok(one_command(
            opcode::lookup(req.opcode, Some(req.service_action)),
            req.rctd,
        )),
        // 011b: service action used only when the opcode has service actions.
        3 => {
            let sa = has_sa.then_some(req.service_action);
            Ok(one_command(opcode::lookup(req.opcode, sa), req.rctd))
        }
        _ => Err(Sense::invalid_field_in_cdb(2, Some(2))),
    }
}

/// Task management functions the transport implements, for REPORT SUPPORTED TMFS.
///
/// Each field is one support bit of the parameter data; the bit it sets is given.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SupportedTmfs {
    /// ATS (byte 0 bit 7): ABORT TASK.
    pub abort_task: bool,
    /// ATSS (byte 0 bit 6): ABORT TASK SET.
    pub abort_task_set: bool,
    /// CACAS (byte 0 bit 5): CLEAR ACA.
    pub clear_aca: bool,
    /// CTSS (byte 0 bit 4): CLEAR TASK SET.
    pub clear_task_set: bool,
    /// LURS (byte 0 bit 3): LOGICAL UNIT RESET.
    pub lun_reset: bool,
    /// QTS (byte 0 bit 2): QUERY TASK.
    pub query_task: bool,
    /// TRS (byte 0 bit 1): TARGET RESET (obsolete in SAM-5, still sent by iSCSI initiators).
    pub target_reset: bool,
    /// WAKES (byte 0 bit 0): WAKEUP (obsolete).
    pub wakeup: bool,
    /// QAES (byte 1 bit 2): QUERY ASYNCHRONOUS EVENT.
    pub query_async_event: bool,
    /// QTSS (byte 1 bit 1): QUERY TASK SET.
    pub query_task_set: bool,
    /// ITNRS (byte 1 bit 0): I_T NEXUS RESET.
    pub i_t_nexus_reset: bool,
}

impl Default for SupportedTmfs {
    /// What Lunar's iSCSI front end implements.
    fn default() -> Self {
        Self {
            abort_task: true,
            abort_task_set: true,
            clear_aca: false,
            clear_task_set: true,
            lun_reset: true,
            query_task: false,
            target_reset: true,
            wakeup: false,
            query_async_event: false,
            query_task_set: false,
            i_t_nexus_reset: false,
        }
    }
}

impl SupportedTmfs {
    /// Parameter data: 4 bytes, or the 16-byte extended format when REPD=1.
    pub fn encode(&self, repd: bool) -> Vec<u8> {
        let bit = |on: bool, b: u8| if on { 1u8 << b } else { 0 };
        let b0 = bit(self.abort_task, 7)
            | bit(self.abort_task_set, 6)
            | bit(self.clear_aca, 5)
            | bit(self.clear_task_set, 4)
            | bit(self.lun_reset, 3)
            | bit(self.query_task, 2)
            | bit(self.target_reset, 1)
            | bit(self.wakeup, 0);
        let b1 = bit(self.query_async_event, 2)
            | bit(self.query_task_set, 1)
            | bit(self.i_t_nexus_reset, 0);
        if repd {
            let mut v = vec![0u8; 16];
            v[0] = b0;
            v[1] = b1;
            v[3] = 0x0C;
            v
        } else {
            vec![b0, b1, 0, 0]
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scsi::cdb::{self, Command};

    fn req(options: u8, opcode: u8, sa: u16, rctd: bool) -> RsocCdb {
        RsocCdb {
            rctd,
            options,
            opcode,
            service_action: sa,
            alloc_len: 4096,
        }
    }

    #[test]
    fn all_commands_lists_table() {
        let b = encode(&req(0, 0, 0, false)).unwrap();
        let len = u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize;
        assert_eq!(len, COMMANDS.len() * 8);
        assert_eq!(b.len(), len + 4);
        // Each descriptor round-trips to a decodable command of the stated length.
        for d in b[4..].chunks(8) {
            let cdb_len = u16::from_be_bytes([d[6], d[7]]) as usize;
            let mut raw = vec![0u8; cdb_len];
            raw[0] = d[0];
            if d[5] & 1 != 0 {
                raw[1] = d[3];
            }
            assert!(cdb::lookup(&raw).is_ok(), "opcode {:02x}", d[0]);
        }
        let b = encode(&req(0, 0, 0, true)).unwrap();
        assert_eq!(b.len(), 4 + COMMANDS.len() * 20);
        assert_eq!(b[4 + 5], 0x02);
        assert_eq!(&b[4 + 8..4 + 10], &[0x00, 0x0A]);
    }

    #[test]
    fn one_command_formats() {
        let b = encode(&req(1, 0x28, 0, false)).unwrap();
        assert_eq!(&b[..4], &[0, 0x03, 0, 10]);
        assert_eq!(
            &b[4..],
            &[0x28, 0xFE, 0xFF, 0xFF, 0xFF, 0xFF, 0x1F, 0xFF, 0xFF, 0x00]
        );
        // Unsupported opcode.
        assert_eq!(
            encode(&req(1, 0x02, 0, false)).unwrap(),
            vec![0, 0x01, 0, 0]
        );
        // Opcode with service actions requested without one.
        let e = encode(&req(1, 0x9E, 0, false)).unwrap_err();
        assert_eq!(e.code, crate::scsi::sense::asc::INVALID_FIELD_IN_CDB);
        // Service action required but opcode has none.
        assert!(encode(&req(2, 0x28, 0, false)).is_err());
        let b = encode(&req(2, 0x9E, 0x10, true)).unwrap();
        assert_eq!(&b[..4], &[0, 0x83, 0, 16]);
        assert_eq!(b[5], 0x10);
        assert_eq!(b.len(), 4 + 16 + 12);
        assert_eq!(
            encode(&req(2, 0x9E, 0x11, false)).unwrap(),
            vec![0, 0x01, 0, 0]
        );
        assert_eq!(encode(&req(3, 0x28, 0x55, false)).unwrap()[1], 0x03);
    }

    #[test]
    fn usage_data_accepts_what_it_advertises() {
        // A CDB with every advertised bit set (except fields we reject by value) decodes
        // past the reserved-bit check.
        for c in COMMANDS {
            let mut raw = c.usage.to_vec();
            let err = cdb::parse(&raw).err();
            if let Some(e) = err {
                // Allowed failures: value checks, never a reserved-bit pointer outside usage.
                let fp = e.field.unwrap();
                let byte = usize::from(fp.byte);
                let bit = fp.bit.unwrap_or(7);
                assert!(
                    c.usage[byte] & (1 << bit) != 0 || byte == 0,
                    "{}: {e}",
                    c.name
                );
            }
            raw.fill(0);
            raw[0] = c.opcode;
            if let Some(sa) = c.service_action {
                raw[1] = sa as u8;
            }
            let _ = cdb::parse(&raw);
        }
        assert!(matches!(
            cdb::parse(&[0, 0, 0, 0, 0, 0]).unwrap().command,
            Command::TestUnitReady
        ));
    }

    #[test]
    fn tmfs() {
        assert_eq!(SupportedTmfs::default().encode(false), vec![0xDA, 0, 0, 0]);
        let b = SupportedTmfs::default().encode(true);
        assert_eq!(b.len(), 16);
        assert_eq!(b[3], 0x0C);
    }
}
