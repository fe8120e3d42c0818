//! Replication streams (issue 18): a snapshot in full, or the chunks that changed between two
//! snapshots, as a versioned and checksummed byte stream that another pool applies, like
//! `zfs send | zfs receive`. docs/replication-stream.md describes the bytes and
//! docs/decisions/0018-replication-stream.md why they look that way.
//!
//! [`format`], [`encode`] and [`decode`] are sans I/O: bytes in, bytes or events out, no
//! pool. [`token`] is the resume token an interrupted receive hands out. [`send`] and
//! [`receive`] drive them over any `AsyncWrite` / `AsyncRead` (a file, a pipe, the admin
//! socket, a TLS connection) against a [`Pool`](crate::Pool).

pub mod decode;
pub mod encode;
mod error;
pub mod format;
mod gather;
mod progress;
mod receive;
mod send;
pub mod token;

#[cfg(test)]
mod codec_tests;

pub use decode::{Decoder, Event, Record};
pub use encode::Encoder;
pub use error::StreamError;
pub use format::{StreamHeader, StreamKind, StreamSnapshot, Trailer};
pub use progress::StreamProgress;
pub use receive::{
    abort_pending, pending_receives, plan, receive, receive_staged, token_of, PendingReceive,
    ReceiveError, ReceiveRequest, ReceiveSummary, StagedReceive,
};
pub use receive::{SAVE_EVERY, SAVE_EVERY_BYTES};
pub use send::{prepare_send, send, PreparedSend, SendRequest, SendSummary, READ_AHEAD};
pub use token::ResumeToken;
