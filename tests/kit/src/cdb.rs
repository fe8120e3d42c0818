//! READ/WRITE-style CDBs (SBC-4 section 5): an opcode, an LBA and a transfer length in the
//! layouts of the 6-, 10-, 12- and 16-byte commands, every other field zero. scsi-proto
//! decodes CDBs but has no encoder for them (a target never sends one); the opcodes come from
//! it, so a test names a command the way the device server does.

pub use scsi_proto::scsi::opcode;

/// A 6-byte CDB with a 21-bit LBA and 8-bit length (READ(6), WRITE(6)).
pub fn cdb6(opcode: u8, lba: u32, blocks: u8) -> [u8; 6] {
    [
        opcode,
        ((lba >> 16) & 0x1f) as u8,
        (lba >> 8) as u8,
        lba as u8,
        blocks,
        0,
    ]
}

/// A 10-byte CDB with a 32-bit LBA and 16-bit length (READ(10), WRITE(10), VERIFY(10)...).
pub fn cdb10(opcode: u8, lba: u32, blocks: u16) -> [u8; 10] {
    let mut c = [0u8; 10];
    c[0] = opcode;
    c[2..6].copy_from_slice(&lba.to_be_bytes());
    c[7..9].copy_from_slice(&blocks.to_be_bytes());
    c
}

/// A 12-byte CDB with a 32-bit LBA and 32-bit length (READ(12), WRITE(12)).
pub fn cdb12(opcode: u8, lba: u32, blocks: u32) -> [u8; 12] {
    let mut c = [0u8; 12];
    c[0] = opcode;
    c[2..6].copy_from_slice(&lba.to_be_bytes());
    c[6..10].copy_from_slice(&blocks.to_be_bytes());
    c
}

/// A 16-byte CDB with a 64-bit LBA and 32-bit length (READ(16), WRITE(16)...).
pub fn cdb16(opcode: u8, lba: u64, blocks: u32) -> [u8; 16] {
    let mut c = [0u8; 16];
    c[0] = opcode;
    c[2..10].copy_from_slice(&lba.to_be_bytes());
    c[10..14].copy_from_slice(&blocks.to_be_bytes());
    c
}

/// READ(10) of `blocks` blocks at `lba`.
pub fn read10(lba: u32, blocks: u16) -> [u8; 10] {
    cdb10(opcode::READ_10, lba, blocks)
}

/// WRITE(10) of `blocks` blocks at `lba`.
pub fn write10(lba: u32, blocks: u16) -> [u8; 10] {
    cdb10(opcode::WRITE_10, lba, blocks)
}

/// READ(16) of `blocks` blocks at `lba`.
pub fn read16(lba: u64, blocks: u32) -> [u8; 16] {
    cdb16(opcode::READ_16, lba, blocks)
}

/// WRITE(16) of `blocks` blocks at `lba`.
pub fn write16(lba: u64, blocks: u32) -> [u8; 16] {
    cdb16(opcode::WRITE_16, lba, blocks)
}

#[cfg(test)]
mod tests {
    use super::*;
    use scsi_proto::scsi::cdb::{parse, Command};

    /// What the builders make decodes, with scsi-proto's decoder, to the command meant.
    #[test]
    fn builders_decode_to_what_they_say() {
        let cases: Vec<(Vec<u8>, bool, u64, u64)> = vec![
            (
                cdb6(opcode::READ_6, 0x12_3456, 8).to_vec(),
                false,
                0x12_3456,
                8,
            ),
            (read10(0x0102_0304, 16).to_vec(), false, 0x0102_0304, 16),
            (write10(7, 1).to_vec(), true, 7, 1),
            (cdb12(opcode::READ_12, 9, 70_000).to_vec(), false, 9, 70_000),
            (read16(1 << 40, 3).to_vec(), false, 1 << 40, 3),
            (write16(5, 2).to_vec(), true, 5, 2),
        ];
        for (bytes, write, lba, blocks) in cases {
            let cdb = parse(&bytes).unwrap_or_else(|s| panic!("{bytes:02x?}: {s:?}"));
            let (w, range) = match cdb.command {
                Command::Read { range, .. } => (false, range),
                Command::Write { range, .. } => (true, range),
                other => panic!("{bytes:02x?} decoded as {other:?}"),
            };
            assert_eq!(
                (w, range.lba, u64::from(range.blocks)),
                (write, lba, blocks),
                "{bytes:02x?}"
            );
        }
    }
}
