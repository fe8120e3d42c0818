//! iSCSI (RFC 7143) protocol logic with no I/O.
//!
//! The daemon owns sockets and timers; this module owns everything that can be decided from
//! bytes alone: the PDU codec ([`pdu`]), digests ([`digest`]), sequence-number arithmetic and
//! the CmdSN window ([`seq`]).

pub mod digest;
pub mod pdu;
pub mod seq;
