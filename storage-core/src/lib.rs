//! Lunar's shared thin-provisioned block store. Knows nothing about SCSI.
