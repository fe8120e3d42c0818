//! PERSISTENT RESERVE OUT requests decoded before the reservation state is looked at: the
//! decoding (a SPEC_I_PT list may hold a thousand TransportIDs) runs on a blocking thread,
//! outside the LUN's lock.

use scsi_proto::scsi::pr::{
    self as proto, out_sa, PrOutCdb, ProutParams, RegisterMoveParams, TransportId,
};
use scsi_proto::scsi::sense::Sense;

/// A decoded PERSISTENT RESERVE OUT: CDB fields and parameter list, checked as far as
/// they can be without the reservation state. Built by [`PrOutRequest::parse`] outside the
/// LUN's lock (a SPEC_I_PT list may hold hundreds of TransportIDs).
#[derive(Debug)]
pub struct PrOutRequest {
    pub(super) c: PrOutCdb,
    pub(super) params: Params,
}

/// The parameter list of one service action.
#[derive(Debug)]
pub(super) enum Params {
    Move(RegisterMoveParams),
    Basic {
        p: ProutParams,
        /// SPEC_I_PT: the TransportID list, or why it is invalid (reported only after
        /// the checks SPC-4 makes first).
        ids: Option<Result<Vec<TransportId>, Sense>>,
    },
}

impl PrOutRequest {
    /// Decode the service action and its parameter list (`params`: exactly PARAMETER
    /// LIST LENGTH bytes).
    pub fn parse(
        service_action: u16,
        scope: u8,
        pr_type: u8,
        params: &[u8],
    ) -> Result<Self, Sense> {
        let Ok(sa) = u8::try_from(service_action) else {
            return Err(Sense::invalid_field_in_cdb(1, Some(4)));
        };
        let c = PrOutCdb {
            sa,
            scope,
            type_code: pr_type,
            param_len: u32::try_from(params.len()).unwrap_or(u32::MAX),
        };
        let params = if sa == out_sa::REGISTER_AND_MOVE {
            Params::Move(RegisterMoveParams::parse(params)?)
        } else {
            let p = ProutParams::parse(params)?;
            let ids = (p.spec_i_pt && sa == out_sa::REGISTER).then(|| proto::spec_i_pt_ids(params));
            Params::Basic { p, ids }
        };
        Ok(Self { c, params })
    }
}
