//! SendTargets answers (RFC 7143 section 13.3 and Appendix C).
//!
//! The caller decides which targets the initiator may see (ACL filtering) and which portal
//! addresses to advertise; this module applies the SendTargets value rules and formats the
//! `TargetName`/`TargetAddress` text.

use std::net::SocketAddr;

use bytes::Bytes;

use crate::iscsi::negotiate::SessionType;
use crate::iscsi::pdu::Opcode;
use crate::iscsi::text::TextWriter;

/// Whether an initiator PDU is acceptable in the full feature phase of a discovery session:
/// only Text (SendTargets) and Logout, plus NOP-Out pings, which carry no SCSI semantics.
/// Anything else is answered with a Reject (protocol error).
pub fn allowed_in_discovery(op: Opcode) -> bool {
    matches!(
        op,
        Opcode::TextRequest | Opcode::LogoutRequest | Opcode::NopOut
    )
}

/// One target the initiator may discover.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiscoveredTarget {
    /// Target IQN.
    pub name: String,
    /// Portals in `TargetAddress` form (`ip:port,tpgt`; IPv6 in brackets), see
    /// [`target_address`].
    pub addresses: Vec<String>,
}

/// Format a portal as a `TargetAddress` value: `192.0.2.1:3260,1` or `[2001:db8::1]:3260,1`.
pub fn target_address(addr: SocketAddr, tpgt: u16) -> String {
    // SocketAddr's Display already brackets IPv6 addresses.
    format!("{addr},{tpgt}")
}

/// The text answering `SendTargets=<value>`.
///
/// - `All`: every target in `targets` (discovery sessions only; a normal session gets
///   `SendTargets=Reject`).
/// - empty value: the session's own target (normal sessions only).
/// - a target name: that target, if it is in `targets` (otherwise an empty answer, which
///   does not reveal whether the name exists).
pub fn send_targets(
    value: &str,
    session_type: SessionType,
    session_target: Option<&str>,
    targets: &[DiscoveredTarget],
) -> Bytes {
    let mut out = TextWriter::new();
    let mut emit = |t: &DiscoveredTarget| {
        out.push("TargetName", &t.name);
        for a in &t.addresses {
            out.push("TargetAddress", a);
        }
    };
    match (value, session_type) {
        ("All", SessionType::Discovery) => targets.iter().for_each(&mut emit),
        ("All", SessionType::Normal) => {
            let mut w = TextWriter::new();
            w.push("SendTargets", "Reject");
            return w.finish();
        }
        ("", _) => {
            if let Some(name) = session_target {
                targets
                    .iter()
                    .filter(|t| t.name.eq_ignore_ascii_case(name))
                    .for_each(&mut emit);
            }
        }
        (name, _) => targets
            .iter()
            .filter(|t| t.name.eq_ignore_ascii_case(name))
            .filter(|t| {
                session_type == SessionType::Discovery
                    || session_target.is_some_and(|s| s.eq_ignore_ascii_case(&t.name))
            })
            .for_each(&mut emit),
    }
    out.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::iscsi::text;

    fn targets() -> Vec<DiscoveredTarget> {
        vec![
            DiscoveredTarget {
                name: "iqn.2026-01.io.lunar:a".into(),
                addresses: vec![
                    target_address("192.0.2.1:3260".parse().expect("addr"), 1),
                    target_address("[2001:db8::1]:3260".parse().expect("addr"), 1),
                ],
            },
            DiscoveredTarget {
                name: "iqn.2026-01.io.lunar:b".into(),
                addresses: vec![target_address("192.0.2.1:3260".parse().expect("addr"), 1)],
            },
        ]
    }

    fn pairs(b: &Bytes) -> Vec<(String, String)> {
        text::parse(b)
            .expect("parses")
            .into_iter()
            .map(|k| (k.key, k.value))
            .collect()
    }

    #[test]
    fn discovery_opcodes() {
        assert!(allowed_in_discovery(Opcode::TextRequest));
        assert!(allowed_in_discovery(Opcode::LogoutRequest));
        assert!(!allowed_in_discovery(Opcode::ScsiCommand));
        assert!(!allowed_in_discovery(Opcode::TaskMgmtRequest));
        assert!(!allowed_in_discovery(Opcode::DataOut));
    }

    #[test]
    fn all_in_discovery() {
        let p = pairs(&send_targets(
            "All",
            SessionType::Discovery,
            None,
            &targets(),
        ));
        let expect: Vec<(String, String)> = [
            ("TargetName", "iqn.2026-01.io.lunar:a"),
            ("TargetAddress", "192.0.2.1:3260,1"),
            ("TargetAddress", "[2001:db8::1]:3260,1"),
            ("TargetName", "iqn.2026-01.io.lunar:b"),
            ("TargetAddress", "192.0.2.1:3260,1"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(p, expect);
    }

    #[test]
    fn normal_session_rules() {
        let t = targets();
        let p = pairs(&send_targets(
            "All",
            SessionType::Normal,
            Some("iqn.2026-01.io.lunar:a"),
            &t,
        ));
        assert_eq!(p, vec![("SendTargets".to_string(), "Reject".to_string())]);
        let p = pairs(&send_targets(
            "",
            SessionType::Normal,
            Some("iqn.2026-01.io.lunar:b"),
            &t,
        ));
        assert_eq!(p.len(), 2);
        assert_eq!(p[0].1, "iqn.2026-01.io.lunar:b");
        // Another target by name from a normal session: nothing.
        let p = pairs(&send_targets(
            "iqn.2026-01.io.lunar:a",
            SessionType::Normal,
            Some("iqn.2026-01.io.lunar:b"),
            &t,
        ));
        assert!(p.is_empty());
        // By name in discovery; unknown name gives nothing.
        let p = pairs(&send_targets(
            "iqn.2026-01.io.lunar:b",
            SessionType::Discovery,
            None,
            &t,
        ));
        assert_eq!(p.len(), 2);
        assert!(send_targets("iqn.nope:x", SessionType::Discovery, None, &t).is_empty());
    }
}
