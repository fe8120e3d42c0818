//! Standard INQUIRY data (SPC-4 6.6.2).

/// Peripheral device type of a direct-access block device.
pub const DEVICE_TYPE_DISK: u8 = 0x00;

/// Byte 0 reported for a LUN that does not exist: qualifier 011b, device type 1Fh
/// ("not capable of supporting a peripheral device at this logical unit").
pub const NO_LUN_PERIPHERAL: u8 = 0x7F;

/// Version descriptors: SAM-5, SPC-4, SBC-3, iSCSI (SPC-4 table 146 codes, no revision).
pub const VERSION_DESCRIPTORS: [u16; 4] = [0x00A0, 0x0460, 0x04C0, 0x0960];

/// Target port group support reported in the TPGS field.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Tpgs {
    /// No asymmetric logical unit access.
    #[default]
    None,
    /// Implicit ALUA only (REPORT TARGET PORT GROUPS, no SET TARGET PORT GROUPS).
    Implicit,
}

/// Parameters of the standard INQUIRY data.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StandardInquiry {
    /// Byte 0: peripheral qualifier and device type.
    pub peripheral: u8,
    /// Product identification (up to 16 ASCII characters).
    pub product: String,
    /// Product revision level (up to 4 ASCII characters).
    pub revision: String,
    /// TPGS field.
    pub tpgs: Tpgs,
}

impl Default for StandardInquiry {
    fn default() -> Self {
        Self {
            peripheral: DEVICE_TYPE_DISK,
            product: "LUNAR VOLUME".into(),
            revision: "0001".into(),
            tpgs: Tpgs::None,
        }
    }
}

/// Vendor identification, 8 bytes.
pub const VENDOR: &[u8; 8] = b"LUNAR   ";

/// Copy printable ASCII from `s` into `dst`, padding with spaces (SPC-4 4.3.1).
fn ascii_field(dst: &mut [u8], s: &str) {
    dst.fill(b' ');
    for (d, c) in dst
        .iter_mut()
        .zip(s.bytes().filter(|c| (0x20..=0x7E).contains(c)))
    {
        *d = c;
    }
}

/// Total length of Lunar's standard INQUIRY data.
pub const STANDARD_LEN: usize = 96;

impl StandardInquiry {
    /// Render the full 96-byte standard INQUIRY data (the caller truncates to the
    /// allocation length).
    pub fn encode(&self) -> Vec<u8> {
        let mut b = vec![0u8; STANDARD_LEN];
        b[0] = self.peripheral;
        b[1] = 0; // RMB=0: not removable
        b[2] = 0x06; // VERSION: SPC-4
        b[3] = 0x10 | 0x02; // HISUP, RESPONSE DATA FORMAT 2
        b[4] = (STANDARD_LEN - 5) as u8;
        // 3PC: the device server is a copy manager (EXTENDED COPY, VMware's full copy).
        b[5] = 0x08
            | match self.tpgs {
                Tpgs::None => 0,
                Tpgs::Implicit => 0x10,
            };
        b[6] = 0;
        b[7] = 0x02; // CMDQUE: full task management model
        b[8..16].copy_from_slice(VENDOR);
        ascii_field(&mut b[16..32], &self.product);
        ascii_field(&mut b[32..36], &self.revision);
        for (i, v) in VERSION_DESCRIPTORS.iter().enumerate() {
            b[58 + 2 * i..60 + 2 * i].copy_from_slice(&v.to_be_bytes());
        }
        b
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standard_golden() {
        let b = StandardInquiry::default().encode();
        assert_eq!(b.len(), 96);
        assert_eq!(&b[..8], &[0x00, 0x00, 0x06, 0x12, 91, 0x08, 0x00, 0x02]);
        assert_eq!(&b[8..16], b"LUNAR   ");
        assert_eq!(&b[16..32], b"LUNAR VOLUME    ");
        assert_eq!(&b[32..36], b"0001");
        assert_eq!(
            &b[58..66],
            &[0x00, 0xA0, 0x04, 0x60, 0x04, 0xC0, 0x09, 0x60]
        );
        assert!(b[66..].iter().all(|&x| x == 0));
    }

    #[test]
    fn fields_are_sanitised_and_tpgs() {
        let b = StandardInquiry {
            peripheral: NO_LUN_PERIPHERAL,
            product: "a\u{1}very long product name indeed".into(),
            revision: "1.2.3.4".into(),
            tpgs: Tpgs::Implicit,
        }
        .encode();
        assert_eq!(b[0], 0x7F);
        assert_eq!(b[5] & 0x30, 0x10);
        assert_eq!(&b[16..32], b"avery long produ");
        assert_eq!(&b[32..36], b"1.2.");
    }
}
