//! Reading a stream incrementally (sans I/O): the caller appends bytes as they arrive and
//! takes events out. Input is hostile: every length is checked against what the header
//! allows before the decoder waits for (and so buffers) that many bytes, so a decoder never
//! holds more than one record ([`MAX_RECORD`](super::format::MAX_RECORD)) plus what the
//! caller appended since the last event.

use bytes::{Buf, Bytes, BytesMut};

use super::error::StreamError;
use super::format::{
    chain, record_crc, u32_at, u64_at, StreamHeader, Trailer, DATA_PREFIX, END_LEN, HOLE_LEN,
    TAG_DATA, TAG_END, TAG_HOLE,
};

/// One decoded record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Record {
    /// Chunk `index` holds `payload` (its exact length).
    Data {
        /// Chunk index.
        index: u64,
        /// The chunk's bytes.
        payload: Bytes,
    },
    /// Chunks `index..index + run` read as zeros.
    Hole {
        /// First chunk.
        index: u64,
        /// Number of chunks (at least 1).
        run: u64,
    },
}

/// What the decoder produced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// The header (always first, exactly once; boxed: it is large next to a record).
    Header(Box<StreamHeader>),
    /// A verified record.
    Record(Record),
    /// The END trailer, verified against everything before it (always last).
    End(Trailer),
}

#[derive(Debug)]
enum State {
    Header,
    Records {
        header: Box<StreamHeader>,
        seed: u32,
    },
    Done,
    /// An error was returned: every later call returns an error too.
    Failed,
}

/// The header figures record checks need (copied out so the state can change meanwhile).
#[derive(Clone, Copy, Debug)]
struct Geometry {
    size_bytes: u64,
    chunk_size: u64,
    change_count: u64,
}

impl Geometry {
    fn of(h: &StreamHeader) -> Geometry {
        Geometry {
            size_bytes: h.size_bytes,
            chunk_size: u64::from(h.chunk_size),
            change_count: h.change_count,
        }
    }

    fn chunks(&self) -> u64 {
        self.size_bytes.div_ceil(self.chunk_size)
    }

    fn chunk_len(&self, index: u64) -> u64 {
        self.size_bytes
            .saturating_sub(index.saturating_mul(self.chunk_size))
            .min(self.chunk_size)
    }
}

/// Incremental stream decoder.
#[derive(Debug)]
pub struct Decoder {
    buf: BytesMut,
    state: State,
    /// Stream offset of `buf[0]`.
    offset: u64,
    digest: u32,
    next_index: u64,
    records: u64,
    payload_bytes: u64,
    changes: u64,
}

impl Default for Decoder {
    fn default() -> Self {
        Self::new()
    }
}

impl Decoder {
    /// A decoder expecting a header.
    pub fn new() -> Decoder {
        Decoder {
            buf: BytesMut::new(),
            state: State::Header,
            offset: 0,
            digest: 0,
            next_index: 0,
            records: 0,
            payload_bytes: 0,
            changes: 0,
        }
    }

    /// Appends received bytes. Call [`Decoder::next_event`] until it returns `Ok(None)`
    /// before appending more, so the buffer stays bounded.
    pub fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// The buffer to read into directly (append only), to save a copy.
    pub fn buffer_mut(&mut self) -> &mut BytesMut {
        &mut self.buf
    }

    /// Bytes of the stream consumed into events so far.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// The header, once decoded.
    pub fn header(&self) -> Option<&StreamHeader> {
        match &self.state {
            State::Records { header, .. } => Some(header.as_ref()),
            _ => None,
        }
    }

    /// Whether END was decoded.
    pub fn is_done(&self) -> bool {
        matches!(self.state, State::Done)
    }

    /// The next event, `Ok(None)` if more bytes are needed.
    pub fn next_event(&mut self) -> Result<Option<Event>, StreamError> {
        let r = self.step();
        if r.is_err() {
            self.state = State::Failed;
            self.buf.clear();
        }
        r
    }

    /// At the end of the input: an error unless END was decoded and nothing followed it.
    pub fn finish(&self) -> Result<(), StreamError> {
        match self.state {
            State::Done if self.buf.is_empty() => Ok(()),
            State::Done => Err(StreamError::TrailingData),
            State::Failed => Err(StreamError::EndMismatch(
                "the stream was already refused".into(),
            )),
            _ => Err(StreamError::Truncated {
                offset: self.offset + self.buf.len() as u64,
            }),
        }
    }

    fn consume(&mut self, n: usize) -> Bytes {
        self.offset += n as u64;
        self.buf.split_to(n).freeze()
    }

    fn step(&mut self) -> Result<Option<Event>, StreamError> {
        let (header, seed): (Geometry, u32) = match &self.state {
            State::Failed => {
                return Err(StreamError::EndMismatch(
                    "the stream was already refused".into(),
                ))
            }
            State::Done => {
                return if self.buf.is_empty() {
                    Ok(None)
                } else {
                    Err(StreamError::TrailingData)
                }
            }
            State::Header => {
                let Some((h, len, crc)) = StreamHeader::decode(&self.buf)? else {
                    return Ok(None);
                };
                self.consume(len);
                self.digest = crc;
                self.next_index = h.start_index;
                let h = Box::new(h);
                self.state = State::Records {
                    header: h.clone(),
                    seed: crc,
                };
                return Ok(Some(Event::Header(h)));
            }
            State::Records { header, seed } => (Geometry::of(header), *seed),
        };
        if self.buf.len() < 8 {
            // Check the tag early so garbage is refused without waiting for more bytes.
            if let Some(&tag) = self.buf.first() {
                if ![TAG_DATA, TAG_HOLE, TAG_END].contains(&tag) {
                    return Err(StreamError::UnknownRecord {
                        tag,
                        offset: self.offset,
                    });
                }
            }
            return Ok(None);
        }
        let offset = self.offset;
        let tag = self.buf[0];
        if self.buf[1..4] != [0; 3] {
            return Err(StreamError::BadRecord {
                offset,
                reason: "reserved bytes are not zero".into(),
            });
        }
        let len = u32_at(&self.buf, 4);
        match tag {
            TAG_DATA => {
                if self.buf.len() < DATA_PREFIX {
                    return Ok(None);
                }
                let index = u64_at(&self.buf, 8);
                let chunks = header.chunks();
                if index >= chunks {
                    return Err(StreamError::PastEnd {
                        index,
                        end: index.saturating_add(1),
                        chunks,
                    });
                }
                // Checked before waiting for the payload: a hostile length never makes the
                // decoder buffer more than one real chunk.
                let want = header.chunk_len(index);
                if u64::from(len) != want {
                    return Err(StreamError::BadRecord {
                        offset,
                        reason: format!("chunk {index} has length {len}, expected {want}"),
                    });
                }
                let total = DATA_PREFIX + len as usize + 4;
                if self.buf.len() < total {
                    self.buf.reserve(total - self.buf.len());
                    return Ok(None);
                }
                let crc = u32_at(&self.buf, total - 4);
                if record_crc(seed, &[&self.buf[..total - 4]]) != crc {
                    return Err(StreamError::RecordCrc { offset });
                }
                self.admit(index, 1, header.change_count)?;
                let mut framing = [0u8; DATA_PREFIX];
                framing.copy_from_slice(&self.buf[..DATA_PREFIX]);
                self.digest = chain(self.digest, &framing, crc);
                self.payload_bytes += u64::from(len);
                self.offset += DATA_PREFIX as u64;
                self.buf.advance(DATA_PREFIX);
                let payload = self.consume(len as usize);
                self.consume(4);
                Ok(Some(Event::Record(Record::Data { index, payload })))
            }
            TAG_HOLE => {
                if len != 0 {
                    return Err(StreamError::BadRecord {
                        offset,
                        reason: "a HOLE record has a non-zero length field".into(),
                    });
                }
                if self.buf.len() < HOLE_LEN {
                    return Ok(None);
                }
                let crc = u32_at(&self.buf, 24);
                if record_crc(seed, &[&self.buf[..24]]) != crc {
                    return Err(StreamError::RecordCrc { offset });
                }
                let index = u64_at(&self.buf, 8);
                let run = u64_at(&self.buf, 16);
                let chunks = header.chunks();
                let end = index.saturating_add(run);
                if run == 0 || end > chunks {
                    return Err(StreamError::PastEnd { index, end, chunks });
                }
                self.admit(index, run, header.change_count)?;
                let framing = self.buf[..24].to_vec();
                self.digest = chain(self.digest, &framing, crc);
                self.consume(HOLE_LEN);
                Ok(Some(Event::Record(Record::Hole { index, run })))
            }
            TAG_END => {
                if len != 0 {
                    return Err(StreamError::BadRecord {
                        offset,
                        reason: "the END trailer has a non-zero length field".into(),
                    });
                }
                if self.buf.len() < END_LEN {
                    return Ok(None);
                }
                let crc = u32_at(&self.buf, 28);
                if record_crc(seed, &[&self.buf[..28]]) != crc {
                    return Err(StreamError::RecordCrc { offset });
                }
                let t = Trailer {
                    records: u64_at(&self.buf, 8),
                    payload_bytes: u64_at(&self.buf, 16),
                    digest: u32_at(&self.buf, 24),
                };
                let want = Trailer {
                    records: self.records,
                    payload_bytes: self.payload_bytes,
                    digest: self.digest,
                };
                if t != want {
                    return Err(StreamError::EndMismatch(format!(
                        "END says {} records, {} payload bytes, digest {:#010x}; received {} \
                         records, {} payload bytes, digest {:#010x}",
                        t.records,
                        t.payload_bytes,
                        t.digest,
                        want.records,
                        want.payload_bytes,
                        want.digest
                    )));
                }
                if self.changes != header.change_count {
                    return Err(StreamError::EndMismatch(format!(
                        "{} changes received, the header announces {}",
                        self.changes, header.change_count
                    )));
                }
                self.consume(END_LEN);
                self.state = State::Done;
                if !self.buf.is_empty() {
                    return Err(StreamError::TrailingData);
                }
                Ok(Some(Event::End(t)))
            }
            tag => Err(StreamError::UnknownRecord { tag, offset }),
        }
    }

    fn admit(&mut self, index: u64, run: u64, announced: u64) -> Result<(), StreamError> {
        if index < self.next_index {
            return Err(StreamError::OutOfOrder {
                index,
                expected: self.next_index,
            });
        }
        if self.changes + run > announced {
            return Err(StreamError::TooManyChanges(announced));
        }
        self.next_index = index + run;
        self.changes += run;
        self.records += 1;
        Ok(())
    }
}
