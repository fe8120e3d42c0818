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

use bytes::{BufMut, BytesMut};
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

/// Room kept for what follows the PDU being read, so one read carries many small PDUs.
const READ_AHEAD: usize = 64 * 1024;

/// A read into less free space than this is not worth a syscall: grow first.
const MIN_READ: usize = 16 * 1024;

/// A PDU with at least this much still to arrive is read on its own (see
/// `FrameReader::make_room`).
const LARGE_PDU: usize = 64 * 1024;

/// Room reserved to read a header into after a large PDU.
const HEADER_PROBE: usize = 4096;

/// Reads whole PDUs from a byte stream. Cancel safe: partial input stays in the buffer.
pub struct FrameReader<R> {
    io: R,
    buf: BytesMut,
    codec: PduCodec,
    /// The last PDU read was large: read only a header next.
    last_large: bool,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    /// Wraps a read half; decodes with login settings until [`Self::set_config`].
    pub fn new(io: R) -> Self {
        FrameReader {
            io,
            buf: BytesMut::with_capacity(64 * 1024),
            codec: PduCodec::default(),
            last_large: false,
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

    /// Makes room for the next read and says how much it may take. Once a PDU's header is
    /// in, the rest of it is reserved at once: a large data segment then arrives in as few
    /// reads as the socket allows, into one allocation. Growing 64 KiB at a time instead
    /// re-allocated and copied the partial PDU on each step (a 256 KiB Data-Out cost about
    /// its own size again in `memmove`) and took a read per 64 KiB.
    ///
    /// The rest of a large PDU is read exactly, and after one the next read takes only a
    /// header: so a large PDU always starts at the front of the buffer, where the reserve
    /// has nothing to move, rather than as a partial tail that a reserve copies into the
    /// next allocation (small PDUs keep arriving many to a read). The length was checked
    /// against MaxRecvDataSegmentLength by `frame_len`, so a hostile header cannot make this
    /// reserve more than one PDU.
    fn make_room(&mut self) -> usize {
        let free = self.buf.capacity() - self.buf.len();
        match pdu::frame_len(&self.buf, &self.codec.config) {
            Ok(Some(total)) => {
                let rest = total.saturating_sub(self.buf.len());
                if rest >= LARGE_PDU {
                    self.last_large = true;
                    if free < rest {
                        self.buf.reserve(rest);
                    }
                    return rest;
                }
                if free < rest + MIN_READ {
                    self.buf.reserve(rest + READ_AHEAD);
                }
                usize::MAX
            }
            _ if self.last_large && self.buf.is_empty() => {
                self.last_large = false;
                if free < HEADER_PROBE {
                    self.buf.reserve(HEADER_PROBE);
                }
                pdu::BHS_LEN
            }
            _ => {
                if free < MIN_READ {
                    self.buf.reserve(READ_AHEAD);
                }
                usize::MAX
            }
        }
    }

    /// The next PDU.
    pub async fn next(&mut self) -> Result<Pdu, ReadError> {
        loop {
            if let Some(p) = self.codec.decode(&mut self.buf)? {
                return Ok(p);
            }
            let limit = self.make_room();
            let n = self.io.read_buf(&mut (&mut self.buf).limit(limit)).await?;
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

    /// An `AsyncRead` that hands out at most `step` bytes per read, whatever room is offered.
    struct Trickle {
        data: Vec<u8>,
        pos: usize,
        step: usize,
    }

    impl AsyncRead for Trickle {
        fn poll_read(
            mut self: std::pin::Pin<&mut Self>,
            _cx: &mut std::task::Context<'_>,
            buf: &mut tokio::io::ReadBuf<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            let n = self
                .step
                .min(buf.remaining())
                .min(self.data.len() - self.pos);
            let from = self.pos;
            buf.put_slice(&self.data[from..from + n]);
            self.pos += n;
            std::task::Poll::Ready(Ok(()))
        }
    }

    /// Small and large PDUs back to back come out whole and in order, however the socket
    /// cuts the stream, with and without digests: the header-only read after a large PDU
    /// and the exact read of a large PDU's rest lose and repeat nothing.
    #[test]
    fn mixed_sizes_decode_in_order_under_any_read_sizes() {
        use scsi_proto::iscsi::pdu::{Bhs, NopOut};
        let sizes = [
            0usize, 100, 200_000, 5, 70_000, 70_000, 0, 65_536, 3, 262_144, 1,
        ];
        for digests in [false, true] {
            let cfg = CodecConfig {
                header_digest: digests,
                data_digest: digests,
                max_recv_data_segment_length: 262_144,
                max_send_data_segment_length: 262_144,
            };
            let mut wire = BytesMut::new();
            let mut scratch = BytesMut::new();
            for (i, &n) in sizes.iter().enumerate() {
                let data: Vec<u8> = (0..n).map(|k| (k * 7 + i) as u8).collect();
                let p = Pdu::new(
                    NopOut {
                        immediate: true,
                        lun: 0,
                        itt: i as u32,
                        ttt: pdu::RESERVED_TAG,
                        cmd_sn: 1,
                        exp_stat_sn: 1,
                    },
                    bytes::Bytes::from(data),
                );
                p.encode_parts(&cfg, &mut scratch)
                    .expect("encodable")
                    .write_to(&mut wire);
            }
            for step in [1usize << 20, 65_536, 1000, 47, 49] {
                let mut r = FrameReader::new(Trickle {
                    data: wire.to_vec(),
                    pos: 0,
                    step,
                });
                r.set_config(cfg);
                let rt = tokio::runtime::Builder::new_current_thread()
                    .build()
                    .expect("runtime");
                rt.block_on(async {
                    for (i, &n) in sizes.iter().enumerate() {
                        let p = r.next().await.expect("a whole PDU");
                        let Bhs::NopOut(h) = &p.bhs else {
                            panic!("not a NOP-Out: {:?}", p.bhs.opcode());
                        };
                        assert_eq!(h.itt, i as u32, "step {step}: in order");
                        assert_eq!(p.data.len(), n, "step {step}: PDU {i}'s length");
                        assert!(
                            p.data
                                .iter()
                                .enumerate()
                                .all(|(k, &v)| v == (k * 7 + i) as u8),
                            "step {step}: PDU {i}'s bytes"
                        );
                    }
                    assert!(matches!(r.next().await, Err(ReadError::Eof)));
                });
            }
        }
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
