//! Writing a stream: the header, then records, then END (sans I/O: the caller writes the
//! returned bytes). A DATA payload is never copied: the encoder returns the framing before
//! and after it, and the caller writes the three pieces in order.
//!
//! The encoder enforces the same rules as the decoder (ascending indexes, chunk lengths,
//! the announced change count), so a sender bug ends in an error, not in a stream every
//! receiver refuses.

use super::error::StreamError;
use super::format::{
    chain, record_crc, StreamHeader, Trailer, DATA_PREFIX, END_LEN, HOLE_LEN, TAG_DATA, TAG_END,
    TAG_HOLE,
};

/// State of one stream being written.
#[derive(Debug)]
pub struct Encoder {
    header: StreamHeader,
    seed: u32,
    digest: u32,
    next_index: u64,
    records: u64,
    payload_bytes: u64,
    changes: u64,
}

impl Encoder {
    /// Starts a stream: returns the encoder and the header bytes to write first.
    pub fn new(header: StreamHeader) -> Result<(Encoder, Vec<u8>), StreamError> {
        let bytes = header.encode()?;
        let seed = super::format::u32_at(&bytes, bytes.len() - 4);
        let next_index = header.start_index;
        Ok((
            Encoder {
                header,
                seed,
                digest: seed,
                next_index,
                records: 0,
                payload_bytes: 0,
                changes: 0,
            },
            bytes,
        ))
    }

    /// The header this stream was started with.
    pub fn header(&self) -> &StreamHeader {
        &self.header
    }

    fn admit(&mut self, index: u64, run: u64) -> Result<(), StreamError> {
        if index < self.next_index {
            return Err(StreamError::OutOfOrder {
                index,
                expected: self.next_index,
            });
        }
        let chunks = self.header.chunks();
        let end = index.saturating_add(run);
        if run == 0 || end > chunks {
            return Err(StreamError::PastEnd { index, end, chunks });
        }
        if self.changes + run > self.header.change_count {
            return Err(StreamError::TooManyChanges(self.header.change_count));
        }
        self.next_index = end;
        self.changes += run;
        self.records += 1;
        Ok(())
    }

    /// A DATA record for chunk `index`: returns the framing to write before `payload` and
    /// the CRC to write after it.
    pub fn data(
        &mut self,
        index: u64,
        payload: &[u8],
    ) -> Result<([u8; DATA_PREFIX], [u8; 4]), StreamError> {
        let want = self.header.chunk_len(index);
        if payload.len() as u64 != want || index >= self.header.chunks() {
            return Err(StreamError::BadRecord {
                offset: 0,
                reason: format!("chunk {index} is {} bytes, expected {want}", payload.len()),
            });
        }
        self.admit(index, 1)?;
        let mut p = [0u8; DATA_PREFIX];
        p[0] = TAG_DATA;
        // want <= MAX_CHUNK_SIZE (validated header), so it fits in u32.
        p[4..8].copy_from_slice(&(want as u32).to_le_bytes());
        p[8..16].copy_from_slice(&index.to_le_bytes());
        let crc = record_crc(self.seed, &[&p, payload]);
        self.digest = chain(self.digest, &p, crc);
        self.payload_bytes += want;
        Ok((p, crc.to_le_bytes()))
    }

    /// A HOLE record: chunks `index..index + run` read as zeros in `to`.
    pub fn hole(&mut self, index: u64, run: u64) -> Result<[u8; HOLE_LEN], StreamError> {
        self.admit(index, run)?;
        let mut r = [0u8; HOLE_LEN];
        r[0] = TAG_HOLE;
        r[8..16].copy_from_slice(&index.to_le_bytes());
        r[16..24].copy_from_slice(&run.to_le_bytes());
        let crc = record_crc(self.seed, &[&r[..24]]);
        r[24..28].copy_from_slice(&crc.to_le_bytes());
        self.digest = chain(self.digest, &r[..24], crc);
        Ok(r)
    }

    /// The END trailer; refused if fewer changes were written than the header announced.
    pub fn end(self) -> Result<([u8; END_LEN], Trailer), StreamError> {
        if self.changes != self.header.change_count {
            return Err(StreamError::EndMismatch(format!(
                "{} changes written, {} announced",
                self.changes, self.header.change_count
            )));
        }
        let t = Trailer {
            records: self.records,
            payload_bytes: self.payload_bytes,
            digest: self.digest,
        };
        Ok((encode_end(self.seed, &t), t))
    }
}

/// Bytes of an END trailer (also used by tests to forge trailers).
pub(crate) fn encode_end(seed: u32, t: &Trailer) -> [u8; END_LEN] {
    let mut r = [0u8; END_LEN];
    r[0] = TAG_END;
    r[8..16].copy_from_slice(&t.records.to_le_bytes());
    r[16..24].copy_from_slice(&t.payload_bytes.to_le_bytes());
    r[24..28].copy_from_slice(&t.digest.to_le_bytes());
    let crc = record_crc(seed, &[&r[..28]]);
    r[28..32].copy_from_slice(&crc.to_le_bytes());
    r
}
