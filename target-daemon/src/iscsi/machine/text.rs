//! Text requests in the full feature phase: SendTargets (RFC 7143 appendix C) in discovery
//! and normal sessions, with C-bit continuation in both directions.
//!
//! Keys other than SendTargets are answered `NotUnderstood` (we do not renegotiate in the
//! full feature phase). Which targets SendTargets lists is the caller's: it passes the
//! answer in as a function of the key's value.

use bytes::Bytes;
use scsi_proto::iscsi::pdu::{Pdu, RejectReason, TextRequest, TextResponse, RESERVED_TAG};
use scsi_proto::iscsi::text::{self, TextAssembler, TextSegmenter, TextWriter};

/// The text exchange of one connection: request reassembly and a long response being
/// handed out chunk by chunk.
#[derive(Default)]
pub struct TextExchange {
    assembler: TextAssembler,
    pending: Option<(u32, u32, TextSegmenter)>,
    next_ttt: u32,
}

/// What a Text Request gets back.
#[derive(Debug)]
pub enum TextReply {
    /// A Text Response.
    Respond(Pdu),
    /// A Reject with this reason (the caller attaches the offending header).
    Reject(RejectReason, &'static str),
}

impl TextExchange {
    fn tag(&mut self) -> u32 {
        self.next_ttt = self.next_ttt.wrapping_add(1);
        if self.next_ttt == 0 || self.next_ttt == RESERVED_TAG {
            self.next_ttt = 1;
        }
        self.next_ttt
    }

    /// Handles a Text Request with data `data`. `send_targets(value, out)` appends the
    /// SendTargets answer for `value`; `max_segment` is the initiator's
    /// MaxRecvDataSegmentLength.
    pub fn request(
        &mut self,
        h: &TextRequest,
        data: &[u8],
        max_segment: u32,
        mut send_targets: impl FnMut(&str, &mut TextWriter),
    ) -> TextReply {
        let (itt, lun) = (h.itt, h.lun);
        if h.ttt != RESERVED_TAG {
            // Continuation of a response we split.
            let matches = self
                .pending
                .as_ref()
                .is_some_and(|(i, t, _)| *i == itt && *t == h.ttt);
            if !matches {
                self.pending = None;
                return TextReply::Reject(
                    RejectReason::InvalidPduField,
                    "text continuation with an unknown TTT",
                );
            }
            return self.next_chunk(lun);
        }
        // A new request cancels any unfinished response.
        self.pending = None;
        let full = match self.assembler.push(data, h.continue_bit) {
            Ok(Some(t)) => t,
            Ok(None) => {
                // More request text follows: acknowledge with an empty, non-final response.
                let ttt = self.tag();
                let resp = TextResponse {
                    final_bit: false,
                    continue_bit: false,
                    lun,
                    itt,
                    ttt,
                    stat_sn: 0,
                    exp_cmd_sn: 0,
                    max_cmd_sn: 0,
                };
                return TextReply::Respond(Pdu::header_only(resp));
            }
            Err(_) => {
                self.assembler.reset();
                return TextReply::Reject(RejectReason::ProtocolError, "text request refused");
            }
        };
        let Ok(pairs) = text::parse(&full) else {
            return TextReply::Reject(RejectReason::ProtocolError, "malformed text request");
        };
        let mut out = TextWriter::new();
        for kv in &pairs {
            if kv.key == "SendTargets" {
                send_targets(&kv.value, &mut out);
            } else {
                out.push(&kv.key, "NotUnderstood");
            }
        }
        self.pending = Some((
            itt,
            RESERVED_TAG,
            TextSegmenter::new(out.finish(), max_segment as usize),
        ));
        self.next_chunk(lun)
    }

    fn next_chunk(&mut self, lun: u64) -> TextReply {
        let Some((itt, _, mut seg)) = self.pending.take() else {
            return TextReply::Reject(RejectReason::ProtocolError, "no text response pending");
        };
        let (chunk, more): (Bytes, bool) = seg.next_chunk();
        let ttt = if more { self.tag() } else { RESERVED_TAG };
        let resp = TextResponse {
            final_bit: !more,
            continue_bit: more,
            lun,
            itt,
            ttt,
            stat_sn: 0,
            exp_cmd_sn: 0,
            max_cmd_sn: 0,
        };
        if more {
            self.pending = Some((itt, ttt, seg));
        }
        TextReply::Respond(Pdu::new(resp, chunk))
    }
}
