//! SCSI (SAM-5, SPC-4, SBC-3): CDB decoding, sense data, VPD and mode pages.
