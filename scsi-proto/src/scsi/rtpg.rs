//! REPORT TARGET PORT GROUPS parameter data (SPC-4 6.36).
//!
//! The encoding only: which groups exist and which state each is in is the device
//! server's business (target-daemon `scsi::alua`). Every group Lunar reports is
//! active/optimized and supports only that state: any path is as good as any other.

/// Asymmetric access state: active/optimized (SPC-4 table 164).
const ACTIVE_OPTIMIZED: u8 = 0x0;
/// PREF bit: the group is a preferred path.
const PREF: u8 = 0x80;
/// Supported states: AO_SUP only.
const SUPPORTED_STATES: u8 = 0x01;
/// Status code: no status available.
const STATUS_NONE: u8 = 0x00;
/// Extended header: format type 001b in bits 6..4 of byte 4.
const EXTENDED_FORMAT: u8 = 0x10;

/// One target port group: its number and the relative target ports in it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortGroup {
    /// TARGET PORT GROUP number.
    pub id: u16,
    /// Relative target port identifiers (at most 255 are reported: the count is one byte).
    pub ports: Vec<u16>,
}

/// Encode REPORT TARGET PORT GROUPS parameter data, every group active/optimized and
/// preferred; `extended` selects the extended header (format 001b, implicit transition
/// time 0 s). Not yet truncated to the allocation length.
pub fn encode(groups: &[PortGroup], extended: bool) -> Vec<u8> {
    let mut body = Vec::new();
    if extended {
        body.extend_from_slice(&[EXTENDED_FORMAT, 0, 0, 0]);
    }
    for g in groups {
        let ports = &g.ports[..g.ports.len().min(usize::from(u8::MAX))];
        body.push(PREF | ACTIVE_OPTIMIZED);
        body.push(SUPPORTED_STATES);
        body.extend_from_slice(&g.id.to_be_bytes());
        body.push(0);
        body.push(STATUS_NONE);
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
}
