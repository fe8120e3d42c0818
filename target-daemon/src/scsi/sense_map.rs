//! Mapping storage-core errors to SCSI sense.

use scsi_proto::scsi::sense::{asc, Sense, SenseKey};
use storage_core::StorageError;

/// Which kind of medium access failed, to pick the MEDIUM ERROR code on I/O errors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Reading (READ, VERIFY, GET LBA STATUS...).
    Read,
    /// Writing (WRITE, WRITE SAME, UNMAP, SYNCHRONIZE CACHE...).
    Write,
}

/// `ESHUTDOWN`, what librados/librbd return to a client the cluster has blocklisted.
const ESHUTDOWN: i32 = 108;

/// Sense for a storage error. Logged by the caller; the initiator sees only the sense.
pub fn storage_error(e: &StorageError, access: Access) -> Sense {
    match e {
        StorageError::NoSpace => Sense::new(
            SenseKey::DataProtect,
            asc::SPACE_ALLOCATION_FAILED_WRITE_PROTECT,
        ),
        StorageError::OutOfRange { lba, .. } => Sense::lba_out_of_range().with_information(*lba),
        StorageError::ReadOnly(_) => Sense::new(SenseKey::DataProtect, asc::WRITE_PROTECTED),
        // The volume behind the LUN was deleted.
        StorageError::NotFound(_) => Sense::lun_not_supported(),
        // Transient: ABORTED COMMAND makes initiators retry.
        StorageError::Busy(_) | StorageError::Cancelled => {
            Sense::new(SenseKey::AbortedCommand, asc::NO_ADDITIONAL_SENSE)
        }
        // The store refused this client: a gateway of an HA group was fenced (Ceph
        // blocklisted it because another gateway took the pool over). The I/O belongs on
        // the new owner: the asymmetric-access transition sense makes hosts retry and
        // re-read the port group states instead of failing the I/O as a medium error.
        StorageError::Io { source, .. } if source.raw_os_error() == Some(ESHUTDOWN) => Sense::new(
            SenseKey::NotReady,
            asc::LOGICAL_UNIT_NOT_ACCESSIBLE_ASYMMETRIC_ACCESS_STATE_TRANSITION,
        ),
        StorageError::Io { .. } => match access {
            Access::Read => Sense::new(SenseKey::MediumError, asc::UNRECOVERED_READ_ERROR),
            Access::Write => Sense::new(SenseKey::MediumError, asc::WRITE_ERROR),
        },
        _ => Sense::new(SenseKey::HardwareError, asc::INTERNAL_TARGET_FAILURE),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mapping() {
        let s = storage_error(&StorageError::NoSpace, Access::Write);
        assert_eq!(
            (s.key, s.code),
            (
                SenseKey::DataProtect,
                asc::SPACE_ALLOCATION_FAILED_WRITE_PROTECT
            )
        );
        let s = storage_error(
            &StorageError::OutOfRange {
                lba: 7,
                blocks: 1,
                capacity_blocks: 7,
            },
            Access::Read,
        );
        assert_eq!(
            (s.key, s.code, s.information),
            (SenseKey::IllegalRequest, asc::LBA_OUT_OF_RANGE, Some(7))
        );
        let s = storage_error(&StorageError::ReadOnly("v".into()), Access::Write);
        assert_eq!(s.code, asc::WRITE_PROTECTED);
        let io = || StorageError::Io {
            context: "x".into(),
            source: std::io::Error::other("boom"),
        };
        assert_eq!(
            storage_error(&io(), Access::Read).code,
            asc::UNRECOVERED_READ_ERROR
        );
        assert_eq!(
            storage_error(&io(), Access::Write).key,
            SenseKey::MediumError
        );
        assert_eq!(
            storage_error(&StorageError::Corrupt("c".into()), Access::Read).key,
            SenseKey::HardwareError
        );
        // A fenced (blocklisted) gateway: a path error hosts retry, not a medium error.
        let fenced = StorageError::Io {
            context: "writing".into(),
            source: std::io::Error::from_raw_os_error(ESHUTDOWN),
        };
        let s = storage_error(&fenced, Access::Write);
        assert_eq!(
            (s.key, s.code),
            (
                SenseKey::NotReady,
                asc::LOGICAL_UNIT_NOT_ACCESSIBLE_ASYMMETRIC_ACCESS_STATE_TRANSITION
            )
        );
    }
}
