//! REPORT TARGET PORT GROUPS parameter data (SPC-4 6.36).
//!
//! The encoding only: which groups exist and which state each is in is the device
//! server's business (target-daemon `scsi::alua`). A single Lunar reports every group
//! active/optimized, supporting only that state ([`encode`]: any path is as good as any
//! other); gateways of an HA group report each gateway's group in its own state
//! ([`encode_reports`]).

/// PREF bit: the group is a preferred path.
const PREF: u8 = 0x80;
/// Extended header: format type 001b in bits 6..4 of byte 4.
const EXTENDED_FORMAT: u8 = 0x10;

/// Asymmetric access state of a target port group (SPC-4 table 164, 5.16.2.4).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AccessState {
    /// 0h: every command is processed with optimal performance.
    ActiveOptimized,
    /// 1h: every command is processed, possibly slower.
    ActiveNonOptimized,
    /// 2h: only the commands SPC-4 5.16.2.4.4 lists are processed.
    Standby,
    /// 3h: only the commands SPC-4 5.16.2.4.5 lists are processed.
    Unavailable,
    /// Fh: the group is changing state (SPC-4 5.16.2.5).
    Transitioning,
}

impl AccessState {
    /// The 4-bit ASYMMETRIC ACCESS STATE code.
    pub fn code(self) -> u8 {
        match self {
            AccessState::ActiveOptimized => 0x0,
            AccessState::ActiveNonOptimized => 0x1,
            AccessState::Standby => 0x2,
            AccessState::Unavailable => 0x3,
            AccessState::Transitioning => 0xF,
        }
    }
}

/// The support bits of byte 1 of a target port group descriptor: which states the group
/// can be in (SPC-4 6.36.2). `T_SUP` (transitioning), `U_SUP`, `S_SUP`, `AN_SUP`, `AO_SUP`.
pub mod supports {
    /// T_SUP: the group may report transitioning.
    pub const TRANSITIONING: u8 = 0x80;
    /// O_SUP: offline.
    pub const OFFLINE: u8 = 0x40;
    /// LBD_SUP: logical block dependent.
    pub const LBA_DEPENDENT: u8 = 0x10;
    /// U_SUP: unavailable.
    pub const UNAVAILABLE: u8 = 0x08;
    /// S_SUP: standby.
    pub const STANDBY: u8 = 0x04;
    /// AN_SUP: active/non-optimized.
    pub const ACTIVE_NON_OPTIMIZED: u8 = 0x02;
    /// AO_SUP: active/optimized.
    pub const ACTIVE_OPTIMIZED: u8 = 0x01;
}

/// STATUS CODE of a target port group descriptor (SPC-4 table 165).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StatusCode {
    /// 00h: no status available.
    None,
    /// 01h: altered by SET TARGET PORT GROUPS.
    AlteredBySet,
    /// 02h: altered by implicit asymmetric logical unit access behavior.
    AlteredImplicitly,
}

/// One target port group: its number and the relative target ports in it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortGroup {
    /// TARGET PORT GROUP number.
    pub id: u16,
    /// Relative target port identifiers (at most 255 are reported: the count is one byte).
    pub ports: Vec<u16>,
}

/// One target port group descriptor: the group, its state and what it supports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupReport {
    /// The group and its ports.
    pub group: PortGroup,
    /// Its asymmetric access state.
    pub state: AccessState,
    /// PREF: a preferred group.
    pub pref: bool,
    /// Support bits ([`supports`]).
    pub supported: u8,
    /// Why the state is what it is.
    pub status: StatusCode,
}

/// Encode REPORT TARGET PORT GROUPS parameter data, every group active/optimized and
/// preferred and supporting only that state; `extended` selects the extended header
/// (format 001b, implicit transition time 0 s). Not yet truncated to the allocation length.
pub fn encode(groups: &[PortGroup], extended: bool) -> Vec<u8> {
    let reports: Vec<GroupReport> = groups
        .iter()
        .map(|g| GroupReport {
            group: g.clone(),
            state: AccessState::ActiveOptimized,
            pref: true,
            supported: supports::ACTIVE_OPTIMIZED,
            status: StatusCode::None,
        })
        .collect();
    encode_reports(&reports, extended.then_some(0))
}

/// Encode REPORT TARGET PORT GROUPS parameter data from full descriptors;
/// `extended_transition_secs` selects the extended header (format 001b) with that
/// IMPLICIT TRANSITION TIME (seconds an implicit transition may take; 0 = unspecified).
/// Not yet truncated to the allocation length.
pub fn encode_reports(reports: &[GroupReport], extended_transition_secs: Option<u8>) -> Vec<u8> {
    let mut body = Vec::new();
    if let Some(secs) = extended_transition_secs {
        body.extend_from_slice(&[EXTENDED_FORMAT, secs, 0, 0]);
    }
    for r in reports {
        let ports = &r.group.ports[..r.group.ports.len().min(usize::from(u8::MAX))];
        body.push(if r.pref { PREF } else { 0 } | r.state.code());
        body.push(r.supported);
        body.extend_from_slice(&r.group.id.to_be_bytes());
        body.push(0);
        body.push(match r.status {
            StatusCode::None => 0x00,
            StatusCode::AlteredBySet => 0x01,
            StatusCode::AlteredImplicitly => 0x02,
        });
        body.push(0); // vendor specific
        body.push(u8::try_from(ports.len()).unwrap_or(u8::MAX));
        for p in ports {
            body.extend_from_slice(&[0, 0]);
            body.extend_from_slice(&p.to_be_bytes());
        }
    }
    let mut out = Vec::with_capacity(4 + body.len());
    out.extend_from_slice(&(u32::try_from(body.len()).unwrap_or(u32::MAX)).to_be_bytes());
    out.extend_from_slice(&body);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group(id: u16) -> PortGroup {
        PortGroup {
            id,
            ports: vec![id],
        }
    }

    #[test]
    fn one_group_length_format() {
        let d = encode(&[group(3)], false);
        assert_eq!(&d[0..4], &12u32.to_be_bytes());
        assert_eq!(d[4], 0x80, "PREF, active/optimized");
        assert_eq!(d[5], 0x01, "AO_SUP");
        assert_eq!(&d[6..8], &3u16.to_be_bytes());
        assert_eq!(d[9], 0, "no status");
        assert_eq!(d[11], 1, "one port");
        assert_eq!(&d[14..16], &3u16.to_be_bytes());
        assert_eq!(d.len(), 16);
    }

    #[test]
    fn extended_header() {
        let x = encode(&[group(1)], true);
        assert_eq!(
            &x[0..4],
            &16u32.to_be_bytes(),
            "length counts the extended header"
        );
        assert_eq!(x[4], 0x10, "format type 001b");
        assert_eq!(x[5], 0, "implicit transition time");
        assert_eq!(&x[10..12], &1u16.to_be_bytes());
    }

    #[test]
    fn groups_follow_each_other() {
        let d = encode(&[group(1), group(2)], false);
        assert_eq!(&d[0..4], &24u32.to_be_bytes(), "two 12-byte descriptors");
        for (i, id) in [1u16, 2].into_iter().enumerate() {
            let desc = &d[4 + 12 * i..16 + 12 * i];
            assert_eq!(desc[0], 0x80);
            assert_eq!(&desc[2..4], &id.to_be_bytes());
            assert_eq!(desc[7], 1, "one relative target port");
            assert_eq!(&desc[10..12], &id.to_be_bytes());
        }
    }

    #[test]
    fn port_count_is_capped_at_one_byte() {
        let big = PortGroup {
            id: 7,
            ports: (0..300).collect(),
        };
        let d = encode(&[big], false);
        assert_eq!(d[11], 255);
        assert_eq!(d.len(), 4 + 8 + 255 * 4, "count and list agree");
        let len = u32::from_be_bytes([d[0], d[1], d[2], d[3]]) as usize;
        assert_eq!(len, d.len() - 4);
    }

    #[test]
    fn no_groups_is_an_empty_list() {
        assert_eq!(encode(&[], false), vec![0, 0, 0, 0]);
    }

    #[test]
    fn states_support_bits_and_status() {
        let mk = |id: u16, state| GroupReport {
            group: group(id),
            state,
            pref: false,
            supported: supports::TRANSITIONING
                | supports::UNAVAILABLE
                | supports::STANDBY
                | supports::ACTIVE_OPTIMIZED,
            status: StatusCode::AlteredImplicitly,
        };
        let d = encode_reports(
            &[
                mk(1, AccessState::ActiveOptimized),
                mk(2, AccessState::Standby),
                mk(3, AccessState::Transitioning),
                mk(4, AccessState::Unavailable),
            ],
            Some(30),
        );
        assert_eq!(&d[0..4], &52u32.to_be_bytes(), "header + four descriptors");
        assert_eq!(d[4], 0x10);
        assert_eq!(d[5], 30, "implicit transition time");
        let states: Vec<u8> = (0..4).map(|i| d[8 + 12 * i]).collect();
        assert_eq!(states, vec![0x0, 0x2, 0xF, 0x3], "no PREF, state codes");
        for i in 0..4 {
            let desc = &d[8 + 12 * i..20 + 12 * i];
            assert_eq!(desc[1], 0x8D, "T_SUP U_SUP S_SUP AO_SUP");
            assert_eq!(desc[5], 0x02, "altered by implicit behaviour");
            assert_eq!(&desc[2..4], &(i as u16 + 1).to_be_bytes());
        }
    }

    #[test]
    fn encode_is_the_all_optimized_report() {
        let g = [group(1), group(2)];
        let reports: Vec<GroupReport> = g
            .iter()
            .map(|g| GroupReport {
                group: g.clone(),
                state: AccessState::ActiveOptimized,
                pref: true,
                supported: supports::ACTIVE_OPTIMIZED,
                status: StatusCode::None,
            })
            .collect();
        assert_eq!(encode(&g, true), encode_reports(&reports, Some(0)));
        assert_eq!(encode(&g, false), encode_reports(&reports, None));
    }
}
