//! Sending a command's result: Data-In PDUs and the SCSI Response.
//!
//! Read data is cut into Data-In PDUs no larger than the initiator's MaxRecvDataSegmentLength
//! and into sequences (F bit) no longer than MaxBurstLength. When there is no sense data the
//! status rides in the final Data-In (S bit) and no separate SCSI Response is sent. Residuals
//! follow RFC 7143 section 11.4.5: overflow when the command wanted to move more than the
//! Expected Data Transfer Length (the data is truncated to it), underflow when it moved less.

use bytes::Bytes;
use scsi_proto::iscsi::pdu::{self, DataIn, Pdu, ScsiResponse as ScsiResponsePdu, RESERVED_TAG};
use scsi_proto::scsi::sense::Sense;
#[cfg(test)]
use scsi_proto::scsi::sense::{asc, SenseKey};

pub use scsi_proto::scsi::status::{CHECK_CONDITION, GOOD, TASK_SET_FULL};

/// What the front end remembers about a command to answer it.
#[derive(Clone, Copy, Debug)]
pub struct CmdInfo {
    /// Initiator Task Tag.
    pub itt: u32,
    /// LUN field as received.
    pub lun_raw: u64,
    /// Expected Data Transfer Length.
    pub edtl: u32,
    /// R bit.
    pub read: bool,
    /// W bit.
    pub write: bool,
    /// Data-out length the CDB asks for (SPDTL), when the device server knows it.
    pub spdtl: Option<u32>,
    /// R2Ts sent for the command (its ExpDataSN for writes).
    pub r2t_count: u32,
}

/// Residual flags and count: (overflow, underflow, residual).
pub fn residual(actual: u64, edtl: u32) -> (bool, bool, u32) {
    let edtl = u64::from(edtl);
    if actual > edtl {
        (
            true,
            false,
            u32::try_from(actual - edtl).unwrap_or(u32::MAX),
        )
    } else if actual < edtl {
        (
            false,
            true,
            u32::try_from(edtl - actual).unwrap_or(u32::MAX),
        )
    } else {
        (false, false, 0)
    }
}

/// Limits for splitting Data-In.
#[derive(Clone, Copy, Debug)]
pub struct DataInLimits {
    /// Initiator's MaxRecvDataSegmentLength.
    pub max_segment: u32,
    /// MaxBurstLength (length of one Data-In sequence).
    pub max_burst: u32,
}

/// The PDUs that carry a command's result: Data-In PDUs and, unless the status rides in the
/// last of them, a SCSI Response.
pub fn result_pdus(
    info: &CmdInfo,
    status: u8,
    sense: Option<Bytes>,
    data_in: Bytes,
    data_out_used: u32,
    limits: DataInLimits,
) -> Vec<Pdu> {
    // Residual: compare what the command wanted to transfer with EDTL.
    let (overflow, underflow, count) = if info.write && !info.read {
        let wanted = info.spdtl.unwrap_or(data_out_used);
        residual(u64::from(wanted), info.edtl)
    } else if info.read {
        residual(data_in.len() as u64, info.edtl)
    } else {
        // No data direction: anything the command produced overflows, and an EDTL > 0
        // underflows.
        residual(data_in.len() as u64, info.edtl)
    };
    let data = if info.read {
        let n = data_in.len().min(info.edtl as usize);
        data_in.slice(..n)
    } else {
        Bytes::new()
    };
    let sense = sense.filter(|s| !s.is_empty());
    let piggyback = sense.is_none() && !data.is_empty();

    let seg = limits.max_segment.max(512) as usize;
    let burst = limits.max_burst.max(512) as usize;
    let mut data_sn = 0u32;
    let mut offset = 0usize;
    let total = data.len();
    let mut out = Vec::with_capacity(total.div_ceil(seg) + 1);
    while offset < total {
        let burst_end = ((offset / burst) + 1) * burst;
        let end = (offset + seg).min(total).min(burst_end);
        let last = end == total;
        let hdr = DataIn {
            final_bit: last || end == burst_end,
            ack: false,
            overflow: last && piggyback && overflow,
            underflow: last && piggyback && underflow,
            status: (last && piggyback).then_some(status),
            lun: info.lun_raw,
            itt: info.itt,
            ttt: RESERVED_TAG,
            stat_sn: 0,
            exp_cmd_sn: 0,
            max_cmd_sn: 0,
            data_sn,
            buffer_offset: offset as u32,
            residual_count: if last && piggyback { count } else { 0 },
        };
        out.push(Pdu::new(hdr, data.slice(offset..end)));
        data_sn = data_sn.wrapping_add(1);
        offset = end;
    }
    if piggyback {
        return out;
    }
    let segment = match &sense {
        Some(s) => pdu::sense_segment(s).unwrap_or_default(),
        None => Bytes::new(),
    };
    let hdr = ScsiResponsePdu {
        bidi_overflow: false,
        bidi_underflow: false,
        overflow,
        underflow,
        response: 0,
        status,
        itt: info.itt,
        snack_tag: 0,
        stat_sn: 0,
        exp_cmd_sn: 0,
        max_cmd_sn: 0,
        exp_data_sn: if info.read { data_sn } else { info.r2t_count },
        bidi_read_residual_count: 0,
        residual_count: count,
    };
    out.push(Pdu::new(hdr, segment));
    out
}

/// Fixed-format sense data (SPC-4 4.5.3) for errors the front end itself raises (it has
/// no LUN whose D_SENSE setting could ask for descriptor format).
pub fn fixed_sense(sense: Sense) -> Bytes {
    Bytes::copy_from_slice(&sense.encode_fixed())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn residual_kinds() {
        assert_eq!(residual(512, 512), (false, false, 0));
        assert_eq!(residual(512, 0), (true, false, 512));
        assert_eq!(residual(512, 200), (true, false, 312));
        assert_eq!(residual(512, 10000), (false, true, 9488));
        assert_eq!(
            residual(u64::from(u32::MAX) * 4, 0),
            (true, false, u32::MAX)
        );
    }

    #[test]
    fn sense_layout() {
        let s = fixed_sense(Sense::new(
            SenseKey::IllegalRequest,
            asc::INVALID_FIELD_IN_CDB,
        ));
        assert_eq!(s.len(), 18);
        assert_eq!(s[0], 0x70);
        assert_eq!(s[2], 0x05);
        assert_eq!(s[7], 10);
        assert_eq!((s[12], s[13]), (0x24, 0));
    }
}
