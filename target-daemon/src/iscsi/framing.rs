//! PDU framing on the receive side: a `tokio_util::codec::Decoder` over scsi-proto's pure
//! decoder, and the connection's read half feeding it.
//!
//! [`FrameReader`] owns the receive buffer instead of handing it to `FramedRead` because it
//! keeps its own refill policy (64 KiB at a time, so a read carries many small PDUs and a
//! large data segment arrives in few reads) and because the full feature loop asks whether a
//! whole PDU is already buffered before it flushes its batched results. Data segments are
//! split off the buffer as `Bytes` (no copy). Sending does not use an `Encoder`: the writer
//! encodes headers into a scratch buffer and writes data segments straight from their
//! `Bytes` with vectored writes, which an `Encoder` into one contiguous buffer would copy.

use bytes::BytesMut;
use scsi_proto::iscsi::pdu::{self, CodecConfig, Pdu, PduError};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio_util::codec::Decoder;

/// Why reading the next PDU failed.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The peer closed the connection.
    #[error("connection closed by peer")]
    Eof,
    /// Socket error.
    #[error("read error: {0}")]
    Io(#[from] std::io::Error),
    /// The PDU could not be decoded.
    #[error("{0}")]
    Pdu(#[from] PduError),
}

/// The iSCSI PDU codec: whole PDUs out of a byte buffer, under the connection's current
/// settings (digests, MaxRecvDataSegmentLength), which change once login completes.
#[derive(Clone, Debug, Default)]
pub struct PduCodec {
    /// The settings PDUs are decoded with.
    pub config: CodecConfig,
}

impl Decoder for PduCodec {
    type Item = Pdu;
    type Error = ReadError;

    /// `Ok(None)` until a whole PDU is buffered; a data segment longer than the negotiated
    /// MaxRecvDataSegmentLength is refused as soon as the header is in, so memory is bounded
    /// by one PDU.
    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Pdu>, ReadError> {
        Ok(pdu::decode(src, &self.config)?)
    }
}

/// Reads whole PDUs from a byte stream. Cancel safe: partial input stays in the buffer.
pub struct FrameReader<R> {
    io: R,
    buf: BytesMut,
    codec: PduCodec,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    /// Wraps a read half; decodes with login settings until [`Self::set_config`].
    pub fn new(io: R) -> Self {
        FrameReader {
            io,
            buf: BytesMut::with_capacity(64 * 1024),
            codec: PduCodec::default(),
        }
    }

    /// Switches to the full feature phase settings.
    pub fn set_config(&mut self, config: CodecConfig) {
        self.codec.config = config;
    }

    /// The settings PDUs are decoded with now.
    pub fn config(&self) -> &CodecConfig {
        &self.codec.config
    }

    /// Whether a whole PDU (or a decode error) is already buffered, so [`Self::next`] will
    /// not wait for the socket.
    pub fn has_buffered_pdu(&self) -> bool {
        // `frame_len` knows the length once the header is in, before the rest has arrived.
        match pdu::frame_len(&self.buf, &self.codec.config) {
            Ok(Some(total)) => self.buf.len() >= total,
            Ok(None) => false,
            Err(_) => true,
        }
    }

    /// The next PDU.
    pub async fn next(&mut self) -> Result<Pdu, ReadError> {
        loop {
            if let Some(p) = self.codec.decode(&mut self.buf)? {
                return Ok(p);
            }
            if self.buf.capacity() - self.buf.len() < 16 * 1024 {
                self.buf.reserve(64 * 1024);
            }
            let n = self.io.read_buf(&mut self.buf).await?;
            if n == 0 {
                return Err(ReadError::Eof);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A PDU whose header has arrived but not its data segment is not "buffered": the
    /// connection must flush its batched results before it waits for the rest.
    #[test]
    fn a_pdu_is_buffered_only_once_all_of_it_is_in() {
        let mut r = FrameReader::new(tokio::io::empty());
        assert!(!r.has_buffered_pdu(), "nothing in");
        // A 48-byte header announcing a 100-byte data segment (opcode 0: NOP-Out).
        let mut bhs = [0u8; 48];
        bhs[0] = 0x40;
        bhs[7] = 100;
        r.buf.extend_from_slice(&bhs);
        assert!(!r.has_buffered_pdu(), "header only");
        r.buf.extend_from_slice(&[0u8; 60]);
        assert!(!r.has_buffered_pdu(), "part of the data segment");
        r.buf.extend_from_slice(&[0u8; 40]);
        assert!(r.has_buffered_pdu(), "the whole PDU");
    }

    /// The codec hands a data segment through as a slice of the receive buffer: its bytes
    /// are where they were read (no copy).
    #[test]
    fn the_decoder_hands_data_segments_through_without_a_copy() {
        let mut bhs = [0u8; 48];
        bhs[0] = 0x40;
        bhs[7] = 8;
        bhs[16..20].copy_from_slice(&[0xff; 4]);
        let mut buf = BytesMut::with_capacity(4096);
        buf.extend_from_slice(&bhs);
        buf.extend_from_slice(b"ping1234");
        let base = buf.as_ptr() as usize;
        let p = PduCodec::default()
            .decode(&mut buf)
            .expect("valid")
            .expect("whole");
        assert_eq!(&p.data[..], b"ping1234");
        assert_eq!(p.data.as_ptr() as usize, base + 48, "sliced, not copied");
    }
}
