//! iSCSI (RFC 7143): PDU codec, negotiation, CHAP and sequencing.
