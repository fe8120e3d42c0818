//! The hostile-initiator suite: lunard against an initiator that breaks every rule it can
//! (issue 14, "Trust"). It uses its own minimal initiator ([`lunar_e2e::raw`]), because real
//! initiators refuse to send bad PDUs.
//!
//! Every attack asserts a clean refusal (the login status, Reject, SCSI sense or connection
//! close RFC 7143 / SPC-4 / SBC-4 call for), no panic and no hang (every receive has a
//! deadline), and that honest sessions are untouched. Floods additionally measure an honest
//! session's READ latency on another target while they run and lunard's peak memory; the
//! bounds are in [`lunar_e2e::hostile`] and docs/testing.md ("Hostile initiator suite").
//!
//! Tests that reproduce a defect being fixed on another branch of issue 14 are
//! `#[ignore]`d with the branch named; run them with `--ignored`.

mod chap;
mod data_out;
mod floods;
mod login;
mod pdu;
mod scsi;

use lunar_e2e::raw::{Conn, Pdu};
use std::sync::Mutex;
use std::time::Duration;

/// Floods run one at a time: two at once on a two-core machine would measure each other.
static FLOOD: Mutex<()> = Mutex::new(());

/// Holds the flood lock for the rest of the test (a failed flood does not poison it for the
/// others).
fn flood_lock() -> std::sync::MutexGuard<'static, ()> {
    FLOOD.lock().unwrap_or_else(|p| p.into_inner())
}

/// How long a refused connection may stay open after the refusal.
const CLOSE_WITHIN: Duration = Duration::from_secs(5);

/// Asserts that `resp` (the answer to a login attempt) refuses it with an initiator-error
/// class status (0x02xx: RFC 7143 section 11.13.5) and that the target then closes the
/// connection. A connection closed without a response also counts as refused.
fn assert_login_refused(c: &mut Conn, resp: Option<Pdu>, what: &str) -> u16 {
    let status = match resp {
        None => return 0xffff,
        Some(r) => {
            assert_eq!(
                r.opcode(),
                lunar_e2e::raw::op::LOGIN_RESP,
                "{what}: expected a Login Response, got {}",
                r.describe()
            );
            let s = r.login_status();
            assert_eq!(
                s >> 8,
                2,
                "{what}: login not refused with an initiator-error status: {}",
                r.describe()
            );
            s
        }
    };
    c.expect_closed_within(CLOSE_WITHIN)
        .unwrap_or_else(|e| panic!("{what}: connection not closed after refusal: {e:#}"));
    status
}

/// Asserts an honest session still answers: a NOP-Out ping and a READ of LUN 0.
fn assert_session_alive(c: &mut Conn, what: &str) {
    c.ping()
        .unwrap_or_else(|e| panic!("{what}: honest session lost: {e:#}"));
    c.read10(0, 0, 8)
        .unwrap_or_else(|e| panic!("{what}: honest READ failed: {e:#}"));
}
