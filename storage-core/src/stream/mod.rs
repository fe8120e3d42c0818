//! Replication streams (issue 18): a snapshot in full, or the chunks that changed between two
//! snapshots, as a versioned and checksummed byte stream that another pool applies, like
//! `zfs send | zfs receive`. docs/replication-stream.md describes the bytes and
//! docs/decisions/0018-replication-stream.md why they look that way.
//!
//! [`format`], [`encode`] and [`decode`] are sans I/O: bytes in, bytes or events out, no
//! pool. [`token`] is the resume token an interrupted receive hands out.

pub mod decode;
pub mod encode;
mod error;
pub mod format;
pub mod token;

#[cfg(test)]
mod codec_tests;

pub use decode::{Decoder, Event, Record};
pub use encode::Encoder;
pub use error::StreamError;
pub use format::{StreamHeader, StreamKind, StreamSnapshot, Trailer};
pub use token::ResumeToken;
