//! SBC-3 block commands: READ/WRITE, WRITE AND VERIFY, VERIFY, SYNCHRONIZE CACHE, PRE-FETCH,
//! WRITE SAME, UNMAP, GET LBA STATUS, READ CAPACITY.

use bytes::{Bytes, BytesMut};
use scsi_proto::scsi::cdb::{check_lba_range, BlockRange, ByteCheck, Command};
use scsi_proto::scsi::lba_status::{self, LbaStatus, ProvisioningStatus};
use scsi_proto::scsi::sense::{asc, Sense, SenseKey};
use scsi_proto::scsi::unmap::{self, UnmapLimits};
use scsi_proto::scsi::vpd::BlockLimits;
use storage_core::StorageError;

use super::sense_map::{storage_error, Access};
use super::{status, truncated, Ctx, ScsiResponse};

/// Largest buffer built to replicate a WRITE SAME pattern; bigger ranges are written in
/// pieces so memory stays bounded whatever the NUMBER OF LOGICAL BLOCKS.
const WRITE_SAME_BUFFER: usize = 1 << 20;

/// VERIFY reads (and compares) the medium this many bytes at a time.
const VERIFY_PIECE_BYTES: usize = 1 << 20;

pub(super) fn read_err(e: StorageError) -> Sense {
    tracing::warn!("storage read failed: {e}");
    storage_error(&e, Access::Read)
}

pub(super) fn write_err(e: StorageError) -> Sense {
    if !matches!(e, StorageError::NoSpace | StorageError::OutOfRange { .. }) {
        tracing::warn!("storage write failed: {e}");
    }
    storage_error(&e, Access::Write)
}

/// Whether `cmd` transfers more than the Block Limits page allows (SBC-4 6.6.4, table
/// "Transfer limits for commands"): READ, WRITE, WRITE AND VERIFY, ORWRITE and a VERIFY
/// that carries Data-Out over MAXIMUM TRANSFER LENGTH, COMPARE AND WRITE over MAXIMUM
/// COMPARE AND WRITE LENGTH. The handlers below refuse exactly these with INVALID FIELD IN
/// CDB pointing at the length field; transports ask first (through
/// [`super::ScsiTarget::data_out_len`]) so they never buffer the data of such a command.
/// A VERIFY without Data-Out is checked in pieces and may be longer.
pub(crate) fn exceeds_transfer_limits(limits: &BlockLimits, cmd: &Command) -> bool {
    match cmd {
        Command::Read { range, .. }
        | Command::Write { range, .. }
        | Command::WriteAndVerify { range, .. }
        | Command::OrWrite { range, .. } => range.blocks > limits.max_transfer,
        Command::Verify { range, bytchk, .. } => {
            *bytchk != ByteCheck::None && range.blocks > limits.max_transfer
        }
        Command::CompareAndWrite { blocks, .. } => *blocks > limits.max_compare_and_write,
        _ => false,
    }
}

impl Ctx<'_> {
    fn block_size(&self) -> u32 {
        self.lun.block_size()
    }

    /// Byte offset of the TRANSFER LENGTH / NUMBER OF LOGICAL BLOCKS field in this CDB.
    fn length_field(&self) -> u16 {
        match self.cdb.info.cdb_len() {
            6 => 4,
            10 => 7,
            12 => 6,
            _ => 10,
        }
    }

    /// Reject transfers above the Block Limits maximum, then check the LBA range.
    fn check_transfer(&self, range: BlockRange) -> Result<(), Sense> {
        if range.blocks > self.lun.limits.max_transfer {
            return Err(Sense::invalid_field_in_cdb(self.length_field(), Some(7)));
        }
        check_lba_range(range.lba, u64::from(range.blocks), self.lun.num_blocks())
    }

    pub(super) async fn read(&self, range: BlockRange, _fua: bool) -> Result<ScsiResponse, Sense> {
        self.check_transfer(range)?;
        if range.blocks == 0 {
            return Ok(ScsiResponse::good(Bytes::new()));
        }
        let data = self
            .vol()?
            .read(range.lba, range.blocks)
            .await
            .map_err(read_err)?;
        Ok(ScsiResponse::good(data))
    }

    /// WRITE and WRITE AND VERIFY. When the initiator sent less Data-Out than the CDB asks
    /// for, only the whole blocks received are written (the transport reports the overflow
    /// residual); extra Data-Out is ignored.
    pub(super) async fn write(&self, range: BlockRange, fua: bool) -> Result<ScsiResponse, Sense> {
        self.check_writable()?;
        self.check_transfer(range)?;
        let bs = self.block_size() as usize;
        let wanted = range.blocks as usize * bs;
        let have = self.req.data_out.len().min(wanted) / bs * bs;
        if have == 0 {
            return Ok(ScsiResponse::good(Bytes::new()));
        }
        let fua = fua || self.lun.write_through();
        // The pieces the transport received, written as they are (no gathering copy).
        let data = self.req.data_out.prefix(have);
        let _shared = self.lun.atomic.read().await;
        self.vol()?
            .write_vectored(range.lba, data, fua)
            .await
            .map_err(write_err)?;
        Ok(ScsiResponse::good(Bytes::new()))
    }

    /// VERIFY: BYTCHK 0 reads the range back (surfacing medium errors); BYTCHK 1 compares
    /// the Data-Out with the medium, BYTCHK 3 compares one block with every block.
    /// A mismatch is MISCOMPARE with the offset of the first differing byte.
    ///
    /// The VERIFICATION LENGTH is bounded like a READ's: SBC-4 lists VERIFY among the
    /// commands MAXIMUM TRANSFER LENGTH of the Block Limits page applies to (INVALID FIELD
    /// IN CDB beyond it), whatever BYTCHK says, so one command never reads more than a READ
    /// may. Within that the medium is read [`VERIFY_PIECE_BYTES`] at a time.
    pub(super) async fn verify(
        &self,
        range: BlockRange,
        bytchk: ByteCheck,
    ) -> Result<ScsiResponse, Sense> {
        self.check_transfer(range)?;
        let bs = self.block_size() as usize;
        let step = u32::try_from(VERIFY_PIECE_BYTES / bs)
            .unwrap_or(u32::MAX)
            .max(1);
        let data_out = self.req.data_out.contiguous();
        if bytchk != ByteCheck::None
            && data_out.len()
                < if bytchk == ByteCheck::Full {
                    range.blocks as usize * bs
                } else {
                    bs
                }
        {
            return Err(Sense::new(
                SenseKey::IllegalRequest,
                asc::INVALID_FIELD_IN_COMMAND_INFORMATION_UNIT,
            ));
        }
        let mut done: u32 = 0;
        while done < range.blocks {
            let n = (range.blocks - done).min(step);
            let lba = range.lba + u64::from(done);
            let medium = self.vol()?.read(lba, n).await.map_err(read_err)?;
            let base = done as usize * bs;
            let mismatch = match bytchk {
                ByteCheck::None => None,
                ByteCheck::Full => {
                    // The length check above guarantees the range; clamp anyway so a
                    // short read from the store can never index out of bounds.
                    let end = (base + medium.len()).min(data_out.len());
                    let expected = data_out.get(base..end).unwrap_or_default();
                    first_difference(expected, &medium).map(|i| base + i)
                }
                ByteCheck::SingleBlock => {
                    let pattern = data_out.get(..bs).unwrap_or_default();
                    medium.chunks(bs).enumerate().find_map(|(k, blk)| {
                        first_difference(pattern, blk).map(|i| base + k * bs + i)
                    })
                }
            };
            if let Some(offset) = mismatch {
                return Err(Sense::new(
                    SenseKey::Miscompare,
                    asc::MISCOMPARE_DURING_VERIFY_OPERATION,
                )
                .with_information(offset as u64));
            }
            done += n;
        }
        Ok(ScsiResponse::good(Bytes::new()))
    }

    /// SYNCHRONIZE CACHE: everything acknowledged becomes stable (a zero length means "to
    /// the end of the medium"; the store flushes the whole volume either way).
    pub(super) async fn synchronize_cache(&self, range: BlockRange) -> Result<ScsiResponse, Sense> {
        check_lba_range(range.lba, u64::from(range.blocks), self.lun.num_blocks())?;
        self.vol()?.flush().await.map_err(write_err)?;
        Ok(ScsiResponse::good(Bytes::new()))
    }

    /// PRE-FETCH: the data is as close to the cache as it will get; CONDITION MET.
    pub(super) fn pre_fetch(&self, range: BlockRange) -> Result<ScsiResponse, Sense> {
        check_lba_range(range.lba, u64::from(range.blocks), self.lun.num_blocks())?;
        Ok(ScsiResponse::status(status::CONDITION_MET))
    }

    /// The blocks a WRITE SAME covers. NUMBER OF LOGICAL BLOCKS 0 means "from the LBA to the
    /// end of the medium" (we report WSNZ=0, SBC-4 5.49/5.50); that LBA must exist. Either
    /// way a range longer than MAXIMUM WRITE SAME LENGTH is INVALID FIELD IN CDB pointing at
    /// the NUMBER OF LOGICAL BLOCKS field: for a zero-length command SBC-4 requires the same
    /// refusal when the rest of the medium exceeds the limit, so one command never zeroes
    /// more than the Block Limits page promises is cheap.
    fn write_same_blocks(&self, range: BlockRange) -> Result<u64, Sense> {
        let capacity = self.lun.num_blocks();
        let blocks = if range.blocks == 0 {
            if range.lba >= capacity {
                return Err(Sense::lba_out_of_range().with_information(range.lba));
            }
            capacity - range.lba
        } else {
            check_lba_range(range.lba, u64::from(range.blocks), capacity)?;
            u64::from(range.blocks)
        };
        let max = self.lun.limits.max_write_same;
        if max != 0 && blocks > max {
            return Err(Sense::invalid_field_in_cdb(self.length_field(), Some(7)));
        }
        Ok(blocks)
    }

    /// WRITE SAME(10/16). With UNMAP set the range is deallocated whatever the pattern: SBC
    /// lets the device server either unmap each LBA (it then reads as zeros, LBPRZ=1) or
    /// write the data, and lunard unmaps (whole chunks freed, partial chunks zeroed) so the
    /// whole range reads back zeros, as LIO and tgtd do and libiscsi's UnmapUntilEnd checks.
    /// Without UNMAP the pattern is written: a zero pattern (or NDOB) as a zero-write, which
    /// allocates like any write (the host did not allow deallocation: decision 0030), any
    /// other pattern replicated.
    pub(super) async fn write_same(
        &self,
        range: BlockRange,
        unmap: bool,
        ndob: bool,
    ) -> Result<ScsiResponse, Sense> {
        self.check_writable()?;
        let blocks = self.write_same_blocks(range)?;
        let range_end = range.lba + blocks;
        let bs = self.block_size() as usize;
        let pattern = if ndob {
            None
        } else {
            // Exactly one block of Data-Out: anything else is a malformed request (and
            // silently using part of it would write a pattern the initiator did not mean).
            if self.req.data_out.len() != bs {
                return Err(Sense::new(
                    SenseKey::IllegalRequest,
                    asc::INVALID_FIELD_IN_COMMAND_INFORMATION_UNIT,
                ));
            }
            Some(self.req.data_out.contiguous())
        };
        let vol = self.vol()?;
        let fua = self.lun.write_through();
        let _shared = self.lun.atomic.read().await;
        match pattern {
            Some(p) if !unmap && p.iter().any(|&b| b != 0) => {
                let per_buf = (WRITE_SAME_BUFFER / bs).max(1) as u64;
                let first = blocks.min(per_buf) as usize;
                let mut buf = BytesMut::with_capacity(first * bs);
                for _ in 0..first {
                    buf.extend_from_slice(&p);
                }
                let buf = buf.freeze();
                let mut lba = range.lba;
                let end = range_end;
                while lba < end {
                    let n = (end - lba).min(per_buf) as usize;
                    vol.write(lba, buf.slice(..n * bs), fua)
                        .await
                        .map_err(write_err)?;
                    lba += n as u64;
                }
            }
            _ => {
                vol.write_zeroes(range.lba, blocks, unmap)
                    .await
                    .map_err(write_err)?;
                if fua {
                    vol.flush().await.map_err(write_err)?;
                }
            }
        }
        Ok(ScsiResponse::good(Bytes::new()))
    }

    /// COMPARE AND WRITE (SBC-3 5.2): under the LUN's exclusive write lock, read the range,
    /// compare it with the first half of the Data-Out and write the second half only if
    /// they are equal. This is VMware's ATS locking primitive.
    pub(super) async fn compare_and_write(
        &self,
        lba: u64,
        blocks: u8,
        fua: bool,
    ) -> Result<ScsiResponse, Sense> {
        self.check_writable()?;
        if blocks > self.lun.limits.max_compare_and_write {
            return Err(Sense::invalid_field_in_cdb(13, Some(7)));
        }
        check_lba_range(lba, u64::from(blocks), self.lun.num_blocks())?;
        if blocks == 0 {
            // Zero blocks is a no-op, unless Data-Out came with it: then the NUMBER OF
            // LOGICAL BLOCKS field cannot be what the initiator meant (e.g. 256 wrapped).
            if !self.req.data_out.is_empty() {
                return Err(Sense::invalid_field_in_cdb(13, Some(7)));
            }
            return Ok(ScsiResponse::good(Bytes::new()));
        }
        let half = usize::from(blocks) * self.block_size() as usize;
        if self.req.data_out.len() != 2 * half {
            return Err(Sense::new(
                SenseKey::IllegalRequest,
                asc::INVALID_FIELD_IN_COMMAND_INFORMATION_UNIT,
            ));
        }
        let data_out = self.req.data_out.contiguous();
        let verify = &data_out[..half];
        let new_data = data_out.slice(half..);
        let fua = fua || self.lun.write_through();
        let _exclusive = self.lun.atomic.write().await;
        let medium = self
            .vol()?
            .read(lba, u32::from(blocks))
            .await
            .map_err(read_err)?;
        if let Some(offset) = first_difference(verify, &medium) {
            return Err(Sense::new(
                SenseKey::Miscompare,
                asc::MISCOMPARE_DURING_VERIFY_OPERATION,
            )
            .with_information(offset as u64));
        }
        self.vol()?
            .write(lba, new_data, fua)
            .await
            .map_err(write_err)?;
        Ok(ScsiResponse::good(Bytes::new()))
    }

    /// ORWRITE(16) (SBC-3 5.9, without the XDWRITEREAD-style second phase): the medium
    /// becomes medium OR Data-Out, atomically with respect to other writes. Like WRITE, only
    /// the whole blocks of Data-Out received are applied.
    pub(super) async fn or_write(
        &self,
        range: BlockRange,
        fua: bool,
    ) -> Result<ScsiResponse, Sense> {
        self.check_writable()?;
        self.check_transfer(range)?;
        let bs = self.block_size() as usize;
        let have = self.req.data_out.len().min(range.blocks as usize * bs) / bs;
        if have == 0 {
            return Ok(ScsiResponse::good(Bytes::new()));
        }
        let fua = fua || self.lun.write_through();
        let _exclusive = self.lun.atomic.write().await;
        let medium = self
            .vol()?
            .read(range.lba, have as u32)
            .await
            .map_err(read_err)?;
        let mut merged = BytesMut::from(&medium[..]);
        let data_out = self.req.data_out.contiguous();
        for (m, d) in merged.iter_mut().zip(data_out.iter()) {
            *m |= *d;
        }
        self.vol()?
            .write(range.lba, merged.freeze(), fua)
            .await
            .map_err(write_err)?;
        Ok(ScsiResponse::good(Bytes::new()))
    }

    /// UNMAP: deallocate every described extent (they read back as zeros: LBPRZ).
    pub(super) async fn unmap(&self, param_len: u32) -> Result<ScsiResponse, Sense> {
        self.check_writable()?;
        let want = param_len as usize;
        let data_out = self.req.data_out.contiguous();
        let data = &data_out[..want.min(data_out.len())];
        if data.len() < want && data.len() < 8 {
            return Err(Sense::parameter_list_length_error());
        }
        let limits = UnmapLimits {
            max_descriptors: self.lun.limits.max_unmap_descriptors,
            max_lba_count: self.lun.limits.max_unmap_lba_count,
            capacity_blocks: self.lun.num_blocks(),
        };
        let descriptors = unmap::parse(data, &limits)?;
        let _shared = self.lun.atomic.read().await;
        for d in descriptors.iter().filter(|d| d.blocks > 0) {
            self.vol()?
                .unmap(d.lba, u64::from(d.blocks))
                .await
                .map_err(write_err)?;
        }
        Ok(ScsiResponse::good(Bytes::new()))
    }

    /// GET LBA STATUS: mapped/deallocated extents starting at `lba`, as many as fit.
    pub(super) fn get_lba_status(&self, lba: u64, alloc_len: u32) -> Result<ScsiResponse, Sense> {
        let capacity = self.lun.num_blocks();
        if lba >= capacity {
            return Err(Sense::lba_out_of_range().with_information(lba));
        }
        let max = lba_status::descriptors_for_alloc(alloc_len);
        let mut out = Vec::with_capacity(max);
        let mut cur = lba;
        while cur < capacity && out.len() < max {
            let (mapped, run) = self.vol()?.block_status(cur).map_err(read_err)?;
            let run = run.min(capacity - cur).min(u64::from(u32::MAX));
            if run == 0 {
                break;
            }
            let status = if mapped {
                ProvisioningStatus::Mapped
            } else {
                ProvisioningStatus::Deallocated
            };
            out.push(LbaStatus {
                lba: cur,
                blocks: run as u32,
                status,
            });
            cur += run;
        }
        Ok(ScsiResponse::good(truncated(
            lba_status::encode(&out),
            alloc_len,
        )))
    }

    /// READ DEFECT DATA(10/12): a virtual medium has no defects; both lists are valid and
    /// empty, in whatever format was requested.
    pub(super) fn read_defect_data(&self, twelve: bool, flags: u8, alloc_len: u32) -> ScsiResponse {
        // PLISTV/GLISTV mirror REQ_PLIST/REQ_GLIST; the format field echoes the request.
        let header = if twelve {
            vec![0, flags, 0, 0, 0, 0, 0, 0]
        } else {
            vec![0, flags, 0, 0]
        };
        ScsiResponse::good(truncated(header, alloc_len))
    }

    pub(super) fn read_capacity10(&self) -> ScsiResponse {
        ScsiResponse::good(Bytes::copy_from_slice(&self.lun.capacity().encode10()))
    }

    pub(super) fn read_capacity16(&self, alloc_len: u32) -> ScsiResponse {
        ScsiResponse::good(truncated(
            self.lun.capacity().encode16().to_vec(),
            alloc_len,
        ))
    }
}

/// Index of the first byte where `a` and `b` differ.
fn first_difference(a: &[u8], b: &[u8]) -> Option<usize> {
    a.iter().zip(b).position(|(x, y)| x != y)
}
