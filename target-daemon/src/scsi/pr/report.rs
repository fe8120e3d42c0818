//! PERSISTENT RESERVE IN (SPC-4 6.14): the four reports, encoded by scsi-proto from a
//! LUN's state.

use scsi_proto::scsi::pr::{self as proto, in_sa, Capabilities, FullStatusEntry, TransportId};

use super::rules::PrData;

/// PERSISTENT RESERVE IN parameter data for `service_action` (before allocation-length
/// truncation); `ptpl_capable`: whether the LUN has a store (PTPL_C).
pub(super) fn pr_in(st: &PrData, service_action: u16, ptpl_capable: bool) -> Vec<u8> {
    match u8::try_from(service_action).unwrap_or(u8::MAX) {
        in_sa::READ_KEYS => {
            let keys: Vec<u64> = st.registrations.iter().map(|r| r.key).collect();
            proto::encode_read_keys(st.generation, &keys)
        }
        in_sa::READ_RESERVATION => {
            let r = st.res_type().map(|t| {
                let key = if t.all_registrants() {
                    0
                } else {
                    st.registrations
                        .iter()
                        .find(|r| r.holder)
                        .map_or(0, |r| r.key)
                };
                (key, t)
            });
            proto::encode_read_reservation(st.generation, r)
        }
        in_sa::REPORT_CAPABILITIES => proto::encode_report_capabilities(Capabilities {
            spec_i_pt: true,
            all_tg_pt: true,
            ptpl_capable,
            ptpl_active: st.aptpl,
        }),
        in_sa::READ_FULL_STATUS => {
            let t = st.res_type();
            let entries: Vec<FullStatusEntry> = st
                .registrations
                .iter()
                .map(|r| FullStatusEntry {
                    key: r.key,
                    all_tg_pt: r.tpgt.is_none(),
                    holder: t.filter(|t| t.all_registrants() || r.holder),
                    relative_port: r.tpgt.map_or(0, |p| p.max(1)),
                    transport_id: TransportId {
                        name: r.initiator.clone(),
                        isid: Some(r.isid),
                    },
                })
                .collect();
            proto::encode_read_full_status(st.generation, &entries)
        }
        // The CDB decoder only lets the four service actions above through.
        _ => proto::encode_read_keys(st.generation, &[]),
    }
}
