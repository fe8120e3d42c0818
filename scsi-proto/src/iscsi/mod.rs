//! iSCSI (RFC 7143) protocol logic with no I/O.
//!
//! The daemon owns sockets and timers; this module owns everything that can be decided from
//! bytes alone: the PDU codec ([`pdu`]), digests ([`digest`]), sequence-number arithmetic and
//! the CmdSN window ([`seq`]), `key=value` text ([`text`]), operational key negotiation
//! ([`negotiate`]), CHAP ([`chap`]), the login state machine ([`login`]) with its status codes
//! ([`status`]), SendTargets answers ([`discovery`]) and iSCSI name validation ([`names`]).

pub mod chap;
pub mod digest;
pub mod discovery;
pub mod login;
pub mod names;
pub mod negotiate;
pub mod pdu;
pub mod seq;
pub mod status;
pub mod text;
