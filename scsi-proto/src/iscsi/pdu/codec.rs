//! Framing: PDU lengths, AHS, padding and digests.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::{Bhs, Opcode, Pdu, PduError, ScsiCommand, BHS_LEN};
use crate::iscsi::digest::{self, DIGEST_LEN};

/// The largest DataSegmentLength the 24-bit field can express (2^24 - 1), which is also the
/// RFC maximum of MaxRecvDataSegmentLength.
pub const HARD_MAX_DATA_SEGMENT_LENGTH: u32 = (1 << 24) - 1;

/// AHS type codes (RFC 7143 section 11.2.2.2).
const AHS_EXTENDED_CDB: u8 = 1;
const AHS_BIDI_READ_LENGTH: u8 = 2;
/// TotalAHSLength is one byte of 4-byte words.
const MAX_AHS_BYTES: usize = 255 * 4;

/// Per-connection codec settings; they change when login completes (digests and
/// MaxRecvDataSegmentLength take effect for the full feature phase).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CodecConfig {
    /// CRC32C header digests in both directions.
    pub header_digest: bool,
    /// CRC32C data digests in both directions.
    pub data_digest: bool,
    /// Largest data segment we accept (our declared MaxRecvDataSegmentLength).
    pub max_recv_data_segment_length: u32,
    /// Largest data segment we may send (the peer's declared MaxRecvDataSegmentLength).
    pub max_send_data_segment_length: u32,
}

impl Default for CodecConfig {
    /// Login-phase settings: no digests, 8192-byte data segments (RFC 7143 section 13.12).
    fn default() -> Self {
        CodecConfig {
            header_digest: false,
            data_digest: false,
            max_recv_data_segment_length: 8192,
            max_send_data_segment_length: 8192,
        }
    }
}

fn pad4(n: usize) -> usize {
    (4 - n % 4) % 4
}

/// Offsets of one PDU's parts, known once its BHS has arrived.
struct Layout {
    header_end: usize,
    data_start: usize,
    dsl: usize,
    dd: usize,
    total: usize,
}

fn frame_layout(buf: &[u8], cfg: &CodecConfig) -> Result<Option<Layout>, PduError> {
    if buf.len() < BHS_LEN {
        return Ok(None);
    }
    let ahs_len = usize::from(buf[4]) * 4;
    let dsl = u32::from_be_bytes([0, buf[5], buf[6], buf[7]]) as usize;
    let hd = if cfg.header_digest { DIGEST_LEN } else { 0 };
    let dd = if cfg.data_digest && dsl > 0 {
        DIGEST_LEN
    } else {
        0
    };
    let header_end = BHS_LEN + ahs_len;
    let data_start = header_end + hd;
    Ok(Some(Layout {
        header_end,
        data_start,
        dsl,
        dd,
        total: data_start + dsl + pad4(dsl) + dd,
    }))
}

/// Total wire length of the PDU at the front of `buf`, once its 48-byte BHS is there
/// (`Ok(None)` before). Lets a reader reserve the whole PDU at once; the data segment length
/// is checked against `cfg` exactly as [`decode`] does.
pub fn frame_len(buf: &[u8], cfg: &CodecConfig) -> Result<Option<usize>, PduError> {
    let Some(layout) = frame_layout(buf, cfg)? else {
        return Ok(None);
    };
    check_limit(layout.dsl, cfg)?;
    Ok(Some(layout.total))
}

fn check_limit(dsl: usize, cfg: &CodecConfig) -> Result<(), PduError> {
    let limit = cfg
        .max_recv_data_segment_length
        .min(HARD_MAX_DATA_SEGMENT_LENGTH);
    // DataSegmentLength is a 24-bit field, so it always fits in u32.
    let length = dsl as u32;
    if length > limit {
        return Err(PduError::DataSegmentTooLong { length, limit });
    }
    Ok(())
}

/// Decode one PDU from the front of `buf`.
///
/// Returns `Ok(None)` when `buf` does not yet hold a whole PDU (nothing is consumed; read more
/// and call again). The header digest (when enabled) and then the data segment length
/// (against `cfg.max_recv_data_segment_length`) are checked as soon as the header is complete,
/// so a corrupt or hostile length is refused before the caller buffers any data. On a
/// recoverable error the PDU has been consumed; fatal errors leave the buffer as it was.
pub fn decode(buf: &mut BytesMut, cfg: &CodecConfig) -> Result<Option<Pdu>, PduError> {
    let Some(layout) = frame_layout(buf, cfg)? else {
        return Ok(None);
    };
    let Layout {
        header_end,
        data_start,
        dsl,
        dd,
        total,
    } = layout;
    // With header digests, trust nothing in the header (not even DataSegmentLength) until the
    // digest checks out; this runs as soon as the header has arrived, before waiting for data.
    if cfg.header_digest {
        if buf.len() < data_start {
            return Ok(None);
        }
        let computed = digest::crc32c_of(&[&buf[..header_end]]);
        let mut d = [0u8; DIGEST_LEN];
        d.copy_from_slice(&buf[header_end..data_start]);
        let received = digest::from_wire(d);
        if computed != received {
            return Err(PduError::HeaderDigest { computed, received });
        }
    }
    check_limit(dsl, cfg)?;
    if buf.len() < total {
        return Ok(None);
    }
    let frame = buf.split_to(total).freeze();

    let header = frame.slice(..BHS_LEN);
    if dd > 0 {
        let padded_end = data_start + dsl + pad4(dsl);
        let computed = digest::crc32c_of(&[&frame[data_start..padded_end]]);
        let received = read_digest(&frame, padded_end);
        if computed != received {
            return Err(PduError::DataDigest {
                header,
                computed,
                received,
            });
        }
    }

    let mut raw = [0u8; BHS_LEN];
    raw.copy_from_slice(&frame[..BHS_LEN]);
    let opcode = raw[0] & 0x3f;
    let Some(op) = Opcode::from_u8(opcode) else {
        return Err(PduError::UnsupportedOpcode { opcode, header });
    };
    let mut bhs = Bhs::parse(op, &raw);
    let ahs = frame.slice(BHS_LEN..header_end);
    match &mut bhs {
        Bhs::ScsiCommand(cmd) => {
            if let Err(reason) = parse_ahs(ahs, cmd) {
                return Err(PduError::InvalidAhs { reason, header });
            }
        }
        _ if !ahs.is_empty() => {
            return Err(PduError::InvalidAhs {
                reason: "AHS present on a PDU type that has none",
                header,
            })
        }
        _ => {}
    }
    let data = frame.slice(data_start..data_start + dsl);
    Ok(Some(Pdu { bhs, data }))
}

fn read_digest(frame: &Bytes, at: usize) -> u32 {
    let mut d = [0u8; DIGEST_LEN];
    d.copy_from_slice(&frame[at..at + DIGEST_LEN]);
    digest::from_wire(d)
}

/// Parse the AHS area of a SCSI Command into `cmd`.
fn parse_ahs(mut ahs: Bytes, cmd: &mut ScsiCommand) -> Result<(), &'static str> {
    while !ahs.is_empty() {
        if ahs.len() < 4 {
            return Err("truncated AHS header");
        }
        let len = usize::from(u16::from_be_bytes([ahs[0], ahs[1]]));
        let kind = ahs[2];
        // AHSLength counts the AHS-specific byte 3 and the payload after it.
        let size = 3 + len;
        let padded = size + pad4(size);
        if len == 0 || ahs.len() < padded {
            return Err("AHS length exceeds TotalAHSLength");
        }
        match kind {
            AHS_EXTENDED_CDB => {
                if cmd.extended_cdb.is_some() {
                    return Err("duplicate extended CDB AHS");
                }
                if len < 2 {
                    return Err("empty extended CDB AHS");
                }
                cmd.extended_cdb = Some(ahs.slice(4..size));
            }
            AHS_BIDI_READ_LENGTH => {
                if cmd.bidi_read_length.is_some() {
                    return Err("duplicate bidirectional read length AHS");
                }
                if len != 5 {
                    return Err("bidirectional read length AHS must have AHSLength 5");
                }
                cmd.bidi_read_length = Some(u32::from_be_bytes([ahs[4], ahs[5], ahs[6], ahs[7]]));
            }
            _ => return Err("unknown AHS type"),
        }
        ahs.advance(padded);
    }
    Ok(())
}

/// An encoded PDU in three pieces for vectored writes: header bytes (BHS, AHS, header
/// digest), the untouched data segment, and a trailer (padding and data digest, at most
/// 7 bytes, kept inline).
#[derive(Clone, Debug)]
pub struct EncodedPdu {
    /// BHS + AHS + header digest.
    pub header: Bytes,
    /// The data segment (shares memory with the PDU's `data`).
    pub data: Bytes,
    trailer: [u8; 3 + DIGEST_LEN],
    trailer_len: u8,
}

impl EncodedPdu {
    /// Padding and data digest bytes that follow `data`.
    pub fn trailer(&self) -> &[u8] {
        &self.trailer[..usize::from(self.trailer_len)]
    }

    /// Total bytes on the wire.
    pub fn len(&self) -> usize {
        self.header.len() + self.data.len() + usize::from(self.trailer_len)
    }

    /// Never true: a PDU has at least its 48-byte header.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Append the whole PDU to `out` (one copy of the data segment).
    pub fn write_to(&self, out: &mut BytesMut) {
        out.reserve(self.len());
        out.put_slice(&self.header);
        out.put_slice(&self.data);
        out.put_slice(self.trailer());
    }
}

impl Pdu {
    /// Encode into pieces for a vectored write. `scratch` provides the memory for the header
    /// (it is split off, so a long-lived scratch buffer is reused across PDUs).
    pub fn encode_parts(
        &self,
        cfg: &CodecConfig,
        scratch: &mut BytesMut,
    ) -> Result<EncodedPdu, PduError> {
        let dsl = self.data.len();
        let limit = cfg
            .max_send_data_segment_length
            .min(HARD_MAX_DATA_SEGMENT_LENGTH);
        if dsl > limit as usize {
            return Err(PduError::DataSegmentTooLong {
                length: u32::try_from(dsl).unwrap_or(u32::MAX),
                limit,
            });
        }
        let mut raw = [0u8; BHS_LEN];
        self.bhs.write(&mut raw);
        let dsl_bytes = (dsl as u32).to_be_bytes();
        raw[5..8].copy_from_slice(&dsl_bytes[1..]);

        scratch.clear();
        scratch.reserve(BHS_LEN + MAX_AHS_BYTES + DIGEST_LEN);
        scratch.put_slice(&raw);
        if let Bhs::ScsiCommand(cmd) = &self.bhs {
            write_ahs(cmd, scratch)?;
            let words = (scratch.len() - BHS_LEN) / 4;
            scratch[4] = u8::try_from(words).map_err(|_| PduError::Unencodable("AHS too long"))?;
        }
        if cfg.header_digest {
            let crc = digest::crc32c_of(&[&scratch[..]]);
            scratch.put_slice(&digest::to_wire(crc));
        }
        let header = scratch.split().freeze();

        let mut trailer = [0u8; 3 + DIGEST_LEN];
        let pad = pad4(dsl);
        let mut trailer_len = pad;
        if cfg.data_digest && dsl > 0 {
            let crc = digest::crc32c_of(&[&self.data, &trailer[..pad]]);
            trailer[pad..pad + DIGEST_LEN].copy_from_slice(&digest::to_wire(crc));
            trailer_len += DIGEST_LEN;
        }
        Ok(EncodedPdu {
            header,
            data: self.data.clone(),
            trailer,
            trailer_len: trailer_len as u8,
        })
    }

    /// Encode the whole PDU contiguously at the end of `out`.
    pub fn encode(&self, cfg: &CodecConfig, out: &mut BytesMut) -> Result<(), PduError> {
        let mut scratch = BytesMut::new();
        let parts = self.encode_parts(cfg, &mut scratch)?;
        parts.write_to(out);
        Ok(())
    }
}

fn write_ahs(cmd: &ScsiCommand, out: &mut BytesMut) -> Result<(), PduError> {
    if let Some(ext) = &cmd.extended_cdb {
        if ext.is_empty() {
            return Err(PduError::Unencodable("empty extended CDB"));
        }
        let size = 4 + ext.len();
        if size + pad4(size) + if cmd.bidi_read_length.is_some() { 8 } else { 0 } > MAX_AHS_BYTES {
            return Err(PduError::Unencodable("extended CDB too long for the AHS"));
        }
        out.put_u16((ext.len() + 1) as u16);
        out.put_u8(AHS_EXTENDED_CDB);
        out.put_u8(0);
        out.put_slice(ext);
        out.put_bytes(0, pad4(size));
    }
    if let Some(len) = cmd.bidi_read_length {
        out.put_u16(5);
        out.put_u8(AHS_BIDI_READ_LENGTH);
        out.put_u8(0);
        out.put_u32(len);
    }
    Ok(())
}
