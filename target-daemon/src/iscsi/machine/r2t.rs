//! Write data collection: immediate data, unsolicited Data-Out and R2T-solicited bursts.
//!
//! A [`PendingWrite`] is the reader's bookkeeping for one write command until all its data is
//! in: it checks every Data-Out (Target Transfer Tag, DataSN, buffer offset, F bit) and says
//! which R2Ts to send next, within MaxBurstLength per R2T and MaxOutstandingR2T at once. We
//! negotiate DataPDUInOrder=Yes and DataSequenceInOrder=Yes, so data must arrive at strictly
//! increasing offsets. This module does no I/O.

use bytes::{Bytes, BytesMut};
use scsi_proto::iscsi::pdu::{DataOut, R2t, RESERVED_TAG};

/// Data-Out payloads at least this long are kept as slices of the receive buffer; shorter
/// ones are copied.
const ZERO_COPY_MIN: usize = 16 * 1024;

/// Negotiated parameters that govern data transfer.
#[derive(Clone, Copy, Debug)]
pub struct WriteParams {
    /// FirstBurstLength.
    pub first_burst: u32,
    /// MaxBurstLength.
    pub max_burst: u32,
    /// MaxOutstandingR2T.
    pub max_outstanding_r2t: u32,
    /// InitialR2T.
    pub initial_r2t: bool,
}

/// One outstanding R2T.
#[derive(Clone, Copy, Debug)]
struct Solicited {
    ttt: u32,
    offset: u32,
    len: u32,
    received: u32,
    next_data_sn: u32,
}

/// Outcome of feeding a Data-Out PDU.
#[derive(Debug, PartialEq, Eq)]
pub enum DataOutResult {
    /// Accepted; more data to come (possibly after new R2Ts).
    Accepted,
    /// A protocol violation; the command must fail.
    Invalid(&'static str),
}

/// Data collection state of one write command.
#[derive(Debug)]
pub struct PendingWrite {
    /// Initiator Task Tag.
    pub itt: u32,
    /// LUN field as received.
    pub lun_raw: u64,
    /// Bytes handed to the device server: min(EDTL, what the CDB transfers).
    want: u32,
    /// Expected Data Transfer Length.
    edtl: u32,
    /// Received data (only the first `want` bytes are kept). Large PDUs are kept as
    /// zero-copy slices; small ones are copied into `small` so a flood of tiny Data-Out PDUs
    /// cannot pin many receive buffers.
    parts: Vec<Bytes>,
    small: BytesMut,
    kept: u32,
    /// Next expected buffer offset (everything before it has arrived).
    filled: u32,
    /// End of the unsolicited region (immediate data + unsolicited Data-Out).
    unsolicited_end: u32,
    /// Waiting for more unsolicited Data-Out (TTT 0xffffffff).
    unsolicited_open: bool,
    unsolicited_data_sn: u32,
    /// Next offset to solicit.
    next_solicit: u32,
    r2ts: Vec<Solicited>,
    r2t_sn: u32,
    /// R2Ts sent so far (the command's ExpDataSN in the SCSI Response).
    pub r2t_count: u32,
}

impl PendingWrite {
    /// Starts collecting data for a write with `immediate` data, `final_bit` from the command
    /// PDU and `want` bytes needed by the device server.
    pub fn new(
        itt: u32,
        lun_raw: u64,
        edtl: u32,
        want: u32,
        immediate: Bytes,
        final_bit: bool,
        p: &WriteParams,
    ) -> Result<PendingWrite, &'static str> {
        let imm = immediate.len() as u32;
        if imm > edtl {
            return Err("immediate data longer than the expected data transfer length");
        }
        if imm > p.first_burst {
            return Err("immediate data longer than FirstBurstLength");
        }
        let unsolicited_open = !p.initial_r2t && !final_bit && imm < edtl.min(p.first_burst);
        let unsolicited_end = if unsolicited_open {
            edtl.min(p.first_burst)
        } else {
            imm
        };
        let mut w = PendingWrite {
            itt,
            lun_raw,
            want: want.min(edtl),
            edtl,
            parts: Vec::new(),
            small: BytesMut::new(),
            kept: 0,
            filled: 0,
            unsolicited_end,
            unsolicited_open,
            unsolicited_data_sn: 0,
            next_solicit: unsolicited_end,
            r2ts: Vec::new(),
            r2t_sn: 0,
            r2t_count: 0,
        };
        w.store(immediate);
        Ok(w)
    }

    fn store(&mut self, data: Bytes) {
        let len = data.len() as u32;
        if self.kept < self.want {
            let take = (self.want - self.kept).min(len) as usize;
            if take >= ZERO_COPY_MIN {
                if !self.small.is_empty() {
                    self.parts.push(self.small.split().freeze());
                }
                self.parts.push(data.slice(..take));
            } else if take > 0 {
                self.small.extend_from_slice(&data[..take]);
            }
            self.kept += take as u32;
        }
        self.filled += len;
    }

    /// Feeds one Data-Out PDU for this task.
    pub fn on_data_out(&mut self, h: &DataOut, data: Bytes) -> DataOutResult {
        let len = data.len() as u32;
        if h.buffer_offset != self.filled {
            return DataOutResult::Invalid("Data-Out buffer offset out of order");
        }
        let Some(end) = h.buffer_offset.checked_add(len) else {
            return DataOutResult::Invalid("Data-Out buffer offset overflows");
        };
        if end > self.edtl {
            return DataOutResult::Invalid("Data-Out beyond the expected data transfer length");
        }
        if h.ttt == RESERVED_TAG {
            if !self.unsolicited_open {
                return DataOutResult::Invalid("unsolicited Data-Out not allowed here");
            }
            if h.data_sn != self.unsolicited_data_sn {
                return DataOutResult::Invalid("unsolicited Data-Out DataSN out of sequence");
            }
            if end > self.unsolicited_end {
                return DataOutResult::Invalid("unsolicited data beyond FirstBurstLength");
            }
            self.unsolicited_data_sn = self.unsolicited_data_sn.wrapping_add(1);
            self.store(data);
            if h.final_bit {
                self.unsolicited_open = false;
                // An initiator that ends the unsolicited burst early leaves the rest to R2Ts.
                self.next_solicit = self.filled;
            } else if end == self.unsolicited_end {
                return DataOutResult::Invalid("unsolicited burst complete without the F bit");
            }
            return DataOutResult::Accepted;
        }
        let Some(i) = self.r2ts.iter().position(|r| r.ttt == h.ttt) else {
            return DataOutResult::Invalid("Data-Out with an unknown Target Transfer Tag");
        };
        let r = &mut self.r2ts[i];
        if h.data_sn != r.next_data_sn {
            return DataOutResult::Invalid("Data-Out DataSN out of sequence");
        }
        if h.buffer_offset != r.offset + r.received || len > r.len - r.received {
            return DataOutResult::Invalid("Data-Out outside the solicited range");
        }
        r.received += len;
        r.next_data_sn = r.next_data_sn.wrapping_add(1);
        let done = r.received == r.len;
        if h.final_bit && !done {
            return DataOutResult::Invalid("F bit set before the solicited burst was complete");
        }
        self.store(data);
        if done {
            self.r2ts.remove(i);
        }
        DataOutResult::Accepted
    }

    /// Bytes this write keeps for the device server (what it reserves in the write buffer
    /// budget).
    pub fn want(&self) -> u32 {
        self.want
    }

    /// Whether the initiator sends data without being asked: immediate data or unsolicited
    /// Data-Out. Only solicited data can be held back.
    pub fn has_unsolicited(&self) -> bool {
        self.unsolicited_end > 0
    }

    /// Whether every byte needed has arrived and nothing more is expected.
    pub fn is_complete(&self) -> bool {
        !self.unsolicited_open && self.r2ts.is_empty() && self.next_solicit >= self.want
    }

    /// Whether the task waits for R2Ts it has not been sent yet.
    pub fn needs_r2t(&self) -> bool {
        !self.unsolicited_open
            && self.next_solicit < self.want
            && (self.r2ts.len() as u32) < u32::MAX
    }

    /// The collected data (exactly `want` bytes once complete) in the pieces it arrived in:
    /// large payloads as slices of the receive buffer, runs of small ones gathered. Never
    /// glued into one buffer here: storage writes the pieces with one gather write, and
    /// gluing cost a copy of every multi-PDU write (a third of the daemon's CPU time in a
    /// 1 MiB sequential write).
    pub fn take_data(&mut self) -> Vec<Bytes> {
        if !self.small.is_empty() {
            self.parts.push(self.small.split().freeze());
        }
        std::mem::take(&mut self.parts)
    }

    /// Builds the R2Ts to send now (the caller has reserved the buffer space for all of
    /// `want`). `ttt` allocates Target Transfer Tags.
    pub fn next_r2ts(&mut self, p: &WriteParams, mut ttt: impl FnMut() -> u32) -> Vec<R2t> {
        let mut out = Vec::new();
        if self.unsolicited_open {
            return out;
        }
        while (self.r2ts.len() as u32) < p.max_outstanding_r2t.max(1)
            && self.next_solicit < self.want
        {
            let len = (self.want - self.next_solicit).min(p.max_burst.max(512));
            let tag = ttt();
            self.r2ts.push(Solicited {
                ttt: tag,
                offset: self.next_solicit,
                len,
                received: 0,
                next_data_sn: 0,
            });
            out.push(R2t {
                lun: self.lun_raw,
                itt: self.itt,
                ttt: tag,
                stat_sn: 0,
                exp_cmd_sn: 0,
                max_cmd_sn: 0,
                r2t_sn: self.r2t_sn,
                buffer_offset: self.next_solicit,
                desired_data_transfer_length: len,
            });
            self.r2t_sn = self.r2t_sn.wrapping_add(1);
            self.r2t_count += 1;
            self.next_solicit += len;
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(initial_r2t: bool) -> WriteParams {
        WriteParams {
            first_burst: 8192,
            max_burst: 16384,
            max_outstanding_r2t: 2,
            initial_r2t,
        }
    }

    fn dout(ttt: u32, data_sn: u32, off: u32, fin: bool) -> DataOut {
        DataOut {
            final_bit: fin,
            lun: 0,
            itt: 7,
            ttt,
            exp_stat_sn: 0,
            data_sn,
            buffer_offset: off,
        }
    }

    fn bytes(n: usize, v: u8) -> Bytes {
        Bytes::from(vec![v; n])
    }

    /// The pieces of a write's data, back to back.
    fn flat(parts: Vec<Bytes>) -> Vec<u8> {
        parts.iter().flat_map(|p| p.iter().copied()).collect()
    }

    #[test]
    fn immediate_only() {
        let p = params(true);
        let mut w = PendingWrite::new(7, 0, 4096, 4096, bytes(4096, 1), true, &p).unwrap();
        assert!(w.is_complete());
        assert!(w.next_r2ts(&p, || 1).is_empty());
        assert_eq!(flat(w.take_data()).len(), 4096);
    }

    #[test]
    fn solicited_bursts_and_outstanding_limit() {
        let p = params(true);
        let total = 5 * 16384;
        let mut w = PendingWrite::new(7, 0, total, total, bytes(1024, 1), true, &p).unwrap();
        let mut tag = 0;
        let r = w.next_r2ts(&p, || {
            tag += 1;
            tag
        });
        assert_eq!(r.len(), 2);
        assert_eq!(
            (r[0].buffer_offset, r[0].desired_data_transfer_length),
            (1024, 16384)
        );
        assert_eq!((r[1].buffer_offset, r[1].r2t_sn), (1024 + 16384, 1));
        // First R2T's data in two PDUs.
        assert_eq!(
            w.on_data_out(&dout(1, 0, 1024, false), bytes(8192, 2)),
            DataOutResult::Accepted
        );
        assert_eq!(
            w.on_data_out(&dout(1, 1, 1024 + 8192, true), bytes(8192, 2)),
            DataOutResult::Accepted
        );
        let r = w.next_r2ts(&p, || {
            tag += 1;
            tag
        });
        assert_eq!(r.len(), 1);
        assert!(!w.is_complete());
        // Wrong DataSN / offset are refused.
        assert!(matches!(
            w.on_data_out(&dout(2, 1, 1024 + 16384, false), bytes(512, 0)),
            DataOutResult::Invalid(_)
        ));
        assert!(matches!(
            w.on_data_out(&dout(2, 0, 0, false), bytes(512, 0)),
            DataOutResult::Invalid(_)
        ));
        assert!(matches!(
            w.on_data_out(&dout(99, 0, 1024 + 16384, false), bytes(512, 0)),
            DataOutResult::Invalid(_)
        ));
    }

    #[test]
    fn unsolicited_then_r2t() {
        let p = params(false);
        let mut w = PendingWrite::new(7, 0, 20000, 20000, bytes(4096, 1), false, &p).unwrap();
        assert!(
            w.next_r2ts(&p, || 5).is_empty(),
            "no R2T while unsolicited data flows"
        );
        assert_eq!(
            w.on_data_out(&dout(RESERVED_TAG, 0, 4096, true), bytes(4096, 2)),
            DataOutResult::Accepted
        );
        let r = w.next_r2ts(&p, || 5);
        assert_eq!(r.len(), 1);
        assert_eq!(
            (r[0].buffer_offset, r[0].desired_data_transfer_length),
            (8192, 20000 - 8192)
        );
        assert_eq!(
            w.on_data_out(&dout(5, 0, 8192, true), bytes(20000 - 8192, 3)),
            DataOutResult::Accepted
        );
        assert!(w.is_complete());
        let d = flat(w.take_data());
        assert_eq!(d.len(), 20000);
        assert_eq!((d[0], d[5000], d[19999]), (1, 2, 3));
    }

    #[test]
    fn want_smaller_than_edtl_keeps_prefix() {
        let p = params(true);
        let mut w = PendingWrite::new(7, 0, 10000, 512, bytes(8192, 9), true, &p).unwrap();
        assert!(w.is_complete());
        assert_eq!(flat(w.take_data()).len(), 512);
    }

    #[test]
    fn tiny_pdus_are_copied_and_reassembled() {
        let p = params(true);
        let mut w = PendingWrite::new(7, 0, 3000, 3000, Bytes::new(), true, &p).unwrap();
        let r = w.next_r2ts(&p, || 9);
        assert_eq!(r.len(), 1);
        for i in 0..3000u32 {
            let fin = i == 2999;
            let b = Bytes::from(vec![(i % 251) as u8]);
            assert_eq!(
                w.on_data_out(&dout(9, i, i, fin), b),
                DataOutResult::Accepted
            );
        }
        assert!(w.is_complete());
        assert!(w.parts.is_empty(), "tiny payloads are not kept as slices");
        let d = flat(w.take_data());
        assert_eq!(d.len(), 3000);
        assert!(d.iter().enumerate().all(|(i, &v)| v == (i % 251) as u8));
    }

    #[test]
    fn bad_immediate() {
        let p = params(true);
        assert!(PendingWrite::new(7, 0, 100, 100, bytes(200, 1), true, &p).is_err());
        assert!(PendingWrite::new(7, 0, 100_000, 100_000, bytes(9000, 1), true, &p).is_err());
    }

    #[test]
    fn unsolicited_data_is_known_up_front() {
        let p = params(false);
        let w = PendingWrite::new(7, 0, 65536, 65536, Bytes::new(), false, &p).unwrap();
        assert!(w.has_unsolicited(), "unsolicited Data-Out will follow");
        let p = params(true);
        let w = PendingWrite::new(7, 0, 65536, 65536, Bytes::new(), true, &p).unwrap();
        assert!(!w.has_unsolicited(), "everything is solicited");
        let w = PendingWrite::new(7, 0, 65536, 65536, bytes(512, 1), true, &p).unwrap();
        assert!(w.has_unsolicited(), "immediate data");
        assert_eq!(w.want(), 65536);
    }
}
