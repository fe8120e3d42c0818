//! A command's Data-Out as the transport received it: the bytes, in the pieces they arrived
//! in.
//!
//! An iSCSI write of 1 MiB arrives as several PDUs (immediate data, then a Data-Out PDU per
//! R2T burst), each a slice of the connection's receive buffer. Gluing them into one buffer
//! cost a copy of the whole write (about a third of the daemon's CPU time in a 1 MiB
//! sequential write, see docs/performance.md) before storage copied it once more into the
//! pool. WRITE hands the pieces to storage as they are (a gather write); the commands that
//! parse their parameter data (MODE SELECT, UNMAP, PERSISTENT RESERVE OUT, EXTENDED COPY,
//! COMPARE AND WRITE, ...) take it contiguous with [`DataOut::contiguous`], which copies only
//! when there is more than one piece (their data is small).

use bytes::{Bytes, BytesMut};

/// The Data-Out of one command.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DataOut {
    /// The pieces, in order; none is empty.
    parts: Vec<Bytes>,
    /// Their total length.
    len: usize,
}

impl DataOut {
    /// The Data-Out made of `parts`, back to back.
    pub fn from_parts(parts: Vec<Bytes>) -> DataOut {
        let mut parts = parts;
        parts.retain(|p| !p.is_empty());
        let len = parts.iter().map(Bytes::len).sum();
        DataOut { parts, len }
    }

    /// Total bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether there is no Data-Out.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// How many pieces the data arrived in.
    pub fn piece_count(&self) -> usize {
        self.parts.len()
    }

    /// All of it in one buffer: no copy when it arrived in one piece.
    pub fn contiguous(&self) -> Bytes {
        match self.parts.as_slice() {
            [] => Bytes::new(),
            [one] => one.clone(),
            many => {
                let mut b = BytesMut::with_capacity(self.len);
                for p in many {
                    b.extend_from_slice(p);
                }
                b.freeze()
            }
        }
    }

    /// The first `n` bytes (all of them when there are fewer), as slices of the pieces: no
    /// copy.
    pub fn prefix(&self, n: usize) -> Vec<Bytes> {
        let mut left = n.min(self.len);
        let mut out = Vec::with_capacity(self.parts.len());
        for p in &self.parts {
            if left == 0 {
                break;
            }
            let take = p.len().min(left);
            out.push(p.slice(..take));
            left -= take;
        }
        out
    }
}

impl From<Bytes> for DataOut {
    fn from(b: Bytes) -> DataOut {
        DataOut::from_parts(vec![b])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pieces() -> DataOut {
        DataOut::from_parts(vec![
            Bytes::from_static(b"abc"),
            Bytes::new(),
            Bytes::from_static(b"defg"),
            Bytes::from_static(b"h"),
        ])
    }

    #[test]
    fn length_and_contiguous_view() {
        let d = pieces();
        assert_eq!(d.len(), 8);
        assert_eq!(d.piece_count(), 3, "empty pieces are dropped");
        assert_eq!(&d.contiguous()[..], b"abcdefgh");
        assert!(DataOut::default().is_empty());
        assert!(DataOut::default().contiguous().is_empty());
    }

    /// One piece is handed out as it is, never copied.
    #[test]
    fn one_piece_is_not_copied() {
        let b = Bytes::from(vec![7u8; 4096]);
        let d = DataOut::from(b.clone());
        assert_eq!(d.contiguous().as_ptr(), b.as_ptr());
        assert_eq!(d.prefix(512)[0].as_ptr(), b.as_ptr());
    }

    #[test]
    fn prefixes_cut_inside_and_between_pieces() {
        let d = pieces();
        let flat = |v: Vec<Bytes>| v.iter().flat_map(|b| b.to_vec()).collect::<Vec<u8>>();
        assert_eq!(flat(d.prefix(0)), b"");
        assert_eq!(flat(d.prefix(2)), b"ab");
        assert_eq!(flat(d.prefix(3)), b"abc");
        assert_eq!(d.prefix(3).len(), 1, "no empty tail piece");
        assert_eq!(flat(d.prefix(5)), b"abcde");
        assert_eq!(flat(d.prefix(8)), b"abcdefgh");
        assert_eq!(flat(d.prefix(100)), b"abcdefgh", "capped at the length");
    }
}
