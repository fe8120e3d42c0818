//! Text requests in the full feature phase: SendTargets (RFC 7143 appendix C) in discovery
//! and normal sessions, with C-bit continuation in both directions.
//!
//! Only targets whose ACL admits the session's initiator are listed. Keys other than
//! SendTargets are answered `NotUnderstood` (we do not renegotiate in the full feature phase).

use bytes::Bytes;
use scsi_proto::iscsi::pdu::{Bhs, Pdu, RejectReason, TextResponse, RESERVED_TAG};
use scsi_proto::iscsi::text::{self, TextSegmenter, TextWriter};

use super::conn::{header_of, Conn};

/// A long Text Response being handed out chunk by chunk.
#[derive(Default)]
pub struct TextState {
    pending: Option<(u32, u32, TextSegmenter)>,
    next_ttt: u32,
}

impl TextState {
    fn tag(&mut self) -> u32 {
        self.next_ttt = self.next_ttt.wrapping_add(1);
        if self.next_ttt == 0 || self.next_ttt == RESERVED_TAG {
            self.next_ttt = 1;
        }
        self.next_ttt
    }
}

impl Conn {
    /// Handles a Text Request.
    pub(crate) async fn text_request(&mut self, pdu: Pdu) -> anyhow::Result<()> {
        let Bhs::TextRequest(h) = &pdu.bhs else {
            return Ok(());
        };
        let (itt, lun) = (h.itt, h.lun);
        if h.ttt != RESERVED_TAG {
            // Continuation of a response we split.
            let matches = self
                .text
                .pending
                .as_ref()
                .is_some_and(|(i, t, _)| *i == itt && *t == h.ttt);
            if !matches {
                self.text.pending = None;
                self.reject(RejectReason::InvalidPduField, header_of(&pdu))
                    .await;
                return Ok(());
            }
            return self.send_text_chunk(lun).await;
        }
        // A new request cancels any unfinished response.
        self.text.pending = None;
        let full = match self.text_in.push(&pdu.data, h.continue_bit) {
            Ok(Some(t)) => t,
            Ok(None) => {
                // More request text follows: acknowledge with an empty, non-final response.
                let ttt = self.text.tag();
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
                let _ = self.writer.send(Pdu::header_only(resp)).await;
                return Ok(());
            }
            Err(e) => {
                tracing::debug!(peer = %self.peer, "text request refused: {e}");
                self.text_in.reset();
                self.reject(RejectReason::ProtocolError, header_of(&pdu))
                    .await;
                return Ok(());
            }
        };
        let pairs = match text::parse(&full) {
            Ok(p) => p,
            Err(e) => {
                tracing::debug!(peer = %self.peer, "malformed text request: {e}");
                self.reject(RejectReason::ProtocolError, header_of(&pdu))
                    .await;
                return Ok(());
            }
        };
        let mut out = TextWriter::new();
        for kv in &pairs {
            if kv.key == "SendTargets" {
                self.send_targets(&kv.value, &mut out);
            } else {
                out.push(&kv.key, "NotUnderstood");
            }
        }
        let max = self.codec.max_send_data_segment_length as usize;
        self.text.pending = Some((itt, RESERVED_TAG, TextSegmenter::new(out.finish(), max)));
        self.send_text_chunk(lun).await
    }

    async fn send_text_chunk(&mut self, lun: u64) -> anyhow::Result<()> {
        let Some((itt, _, mut seg)) = self.text.pending.take() else {
            return Ok(());
        };
        let (chunk, more): (Bytes, bool) = seg.next_chunk();
        let ttt = if more { self.text.tag() } else { RESERVED_TAG };
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
            self.text.pending = Some((itt, ttt, seg));
        }
        let _ = self.writer.send(Pdu::new(resp, chunk)).await;
        Ok(())
    }

    /// Appends the SendTargets answer for `value` ("All", a target name, or empty for the
    /// session's own target).
    fn send_targets(&self, value: &str, out: &mut TextWriter) {
        let initiator = self.session.initiator.as_str();
        let portals = self.server.portals();
        let wanted: Vec<_> = match value {
            "All" => self
                .server
                .targets()
                .into_iter()
                .filter(|t| t.allows(initiator))
                .collect(),
            "" => self.session.target.iter().cloned().collect(),
            name => self
                .server
                .target(name)
                .filter(|t| t.allows(initiator))
                .into_iter()
                .collect(),
        };
        if wanted.is_empty() && !matches!(value, "All" | "") {
            // An unknown or hidden target: answer nothing rather than reveal it.
            return;
        }
        for t in wanted {
            out.push("TargetName", &t.cfg.iqn);
            for p in &portals {
                out.push("TargetAddress", &p.target_address(self.local));
            }
        }
    }
}
