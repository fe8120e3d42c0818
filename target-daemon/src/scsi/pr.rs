//! Persistent reservations (SPC-4 5.12): registrations per I_T nexus, one reservation per
//! logical unit, the six reservation types, and the access-conflict rules that other
//! commands are checked against.
//!
//! Registrations survive logout (that is their point) but not a daemon restart: APTPL is
//! not supported, and REPORT CAPABILITIES says so (PTPL_C=0). SPEC_I_PT, ALL_TG_PT and
//! REGISTER AND MOVE are not supported either.

use scsi_proto::scsi::opcode::{pri, pro};
use scsi_proto::scsi::sense::{asc, AdditionalSense, Sense, SenseKey};

use super::Nexus;

/// Reservation types (SPC-4 table 175).
pub const WRITE_EXCLUSIVE: u8 = 0x1;
pub const EXCLUSIVE_ACCESS: u8 = 0x3;
pub const WRITE_EXCLUSIVE_REGISTRANTS_ONLY: u8 = 0x5;
pub const EXCLUSIVE_ACCESS_REGISTRANTS_ONLY: u8 = 0x6;
pub const WRITE_EXCLUSIVE_ALL_REGISTRANTS: u8 = 0x7;
pub const EXCLUSIVE_ACCESS_ALL_REGISTRANTS: u8 = 0x8;

fn valid_type(t: u8) -> bool {
    matches!(t, 0x1 | 0x3 | 0x5 | 0x6 | 0x7 | 0x8)
}

fn all_registrants(t: u8) -> bool {
    matches!(
        t,
        WRITE_EXCLUSIVE_ALL_REGISTRANTS | EXCLUSIVE_ACCESS_ALL_REGISTRANTS
    )
}

/// How a command touches the medium, for conflict checks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Reads or otherwise observes the medium.
    Read,
    /// Modifies the medium or its parameters.
    Write,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Reservation {
    holder: Nexus,
    pr_type: u8,
}

/// What a PERSISTENT RESERVE OUT did.
#[derive(Debug, PartialEq, Eq)]
pub enum PrOutcome {
    /// GOOD.
    Good,
    /// RESERVATION CONFLICT status.
    Conflict,
}

/// Persistent reservation state of one logical unit.
#[derive(Debug, Default)]
pub struct PrState {
    generation: u32,
    registrations: Vec<(Nexus, u64)>,
    reservation: Option<Reservation>,
}

fn be64(b: &[u8]) -> u64 {
    let mut v = [0u8; 8];
    v.copy_from_slice(&b[..8]);
    u64::from_be_bytes(v)
}

/// iSCSI initiator-port TransportID (SPC-4 7.6.4.6, format 01b): "name,i,0x<ISID>",
/// NUL-terminated and padded to a multiple of four bytes.
fn transport_id(n: &Nexus) -> Vec<u8> {
    let mut name = format!("{},i,0x{:012x}", n.initiator, n.isid & 0xFFFF_FFFF_FFFF).into_bytes();
    name.truncate(1000);
    name.push(0);
    while name.len() % 4 != 0 {
        name.push(0);
    }
    let mut t = vec![0x40 | 0x05, 0];
    t.extend_from_slice(&(name.len() as u16).to_be_bytes());
    t.extend_from_slice(&name);
    t
}

impl PrState {
    fn key_of(&self, n: &Nexus) -> Option<u64> {
        self.registrations
            .iter()
            .find(|(r, _)| r == n)
            .map(|(_, k)| *k)
    }

    fn is_holder(&self, n: &Nexus) -> bool {
        match &self.reservation {
            None => false,
            Some(r) if all_registrants(r.pr_type) => self.key_of(n).is_some(),
            Some(r) => &r.holder == n,
        }
    }

    /// Whether anything (a registration or a reservation) exists.
    pub fn is_active(&self) -> bool {
        !self.registrations.is_empty() || self.reservation.is_some()
    }

    /// Whether a reservation is held (SCSI-2 RESERVE/RELEASE then conflict).
    pub fn is_reserved(&self) -> bool {
        self.reservation.is_some()
    }

    /// Whether `n` may perform an access of kind `access` (SPC-4 5.12.1 table 171).
    pub fn conflicts(&self, n: &Nexus, access: Access) -> bool {
        let Some(r) = &self.reservation else {
            return false;
        };
        if self.is_holder(n) {
            return false;
        }
        let registered = self.key_of(n).is_some();
        match r.pr_type {
            WRITE_EXCLUSIVE => access == Access::Write,
            EXCLUSIVE_ACCESS => true,
            WRITE_EXCLUSIVE_REGISTRANTS_ONLY | WRITE_EXCLUSIVE_ALL_REGISTRANTS => {
                access == Access::Write && !registered
            }
            _ => !registered,
        }
    }

    /// Drop the registration of `n`, and the reservation with it when `n` held it.
    /// Returns the nexuses that must be told the reservation was released.
    fn unregister(&mut self, n: &Nexus) -> Vec<Nexus> {
        self.registrations.retain(|(r, _)| r != n);
        let mut notify = Vec::new();
        if let Some(r) = &self.reservation {
            if all_registrants(r.pr_type) {
                if self.registrations.is_empty() {
                    self.reservation = None;
                }
            } else if &r.holder == n {
                if matches!(
                    r.pr_type,
                    WRITE_EXCLUSIVE_REGISTRANTS_ONLY | EXCLUSIVE_ACCESS_REGISTRANTS_ONLY
                ) {
                    notify = self.registrations.iter().map(|(r, _)| r.clone()).collect();
                }
                self.reservation = None;
            }
        }
        notify
    }

    /// PERSISTENT RESERVE IN parameter data.
    pub fn pr_in(&self, service_action: u16) -> Vec<u8> {
        let mut b = self.generation.to_be_bytes().to_vec();
        match service_action {
            pri::READ_KEYS => {
                let keys: Vec<u8> = self
                    .registrations
                    .iter()
                    .flat_map(|(_, k)| k.to_be_bytes())
                    .collect();
                b.extend_from_slice(&(keys.len() as u32).to_be_bytes());
                b.extend_from_slice(&keys);
            }
            pri::READ_RESERVATION => match &self.reservation {
                None => b.extend_from_slice(&0u32.to_be_bytes()),
                Some(r) => {
                    b.extend_from_slice(&16u32.to_be_bytes());
                    let key = if all_registrants(r.pr_type) {
                        0
                    } else {
                        self.key_of(&r.holder).unwrap_or(0)
                    };
                    b.extend_from_slice(&key.to_be_bytes());
                    b.extend_from_slice(&[0, 0, 0, 0, 0, r.pr_type & 0x0F, 0, 0]);
                }
            },
            pri::READ_FULL_STATUS => {
                let mut descs = Vec::new();
                for (n, key) in &self.registrations {
                    let holder = self.is_holder(n);
                    descs.extend_from_slice(&key.to_be_bytes());
                    descs.extend_from_slice(&[0; 4]);
                    descs.push(u8::from(holder)); // R_HOLDER (ALL_TG_PT=0)
                    descs.push(match (&self.reservation, holder) {
                        (Some(r), true) => r.pr_type & 0x0F,
                        _ => 0,
                    });
                    descs.extend_from_slice(&[0; 4]);
                    descs.extend_from_slice(&n.tpgt.max(1).to_be_bytes());
                    let tid = transport_id(n);
                    descs.extend_from_slice(&(tid.len() as u32).to_be_bytes());
                    descs.extend_from_slice(&tid);
                }
                b.extend_from_slice(&(descs.len() as u32).to_be_bytes());
                b.extend_from_slice(&descs);
            }
            _ => {
                // REPORT CAPABILITIES: TMV, all six types; no PTPL, SIP, ATP, CRH.
                b = vec![
                    0,
                    8,
                    0x00,
                    0x80,
                    0x80 | 0x40 | 0x20 | 0x08 | 0x02,
                    0x01,
                    0,
                    0,
                ];
            }
        }
        b
    }

    /// Execute a PERSISTENT RESERVE OUT. `uas` collects (nexus, code) unit attentions to
    /// establish on this LUN.
    pub fn pr_out(
        &mut self,
        n: &Nexus,
        service_action: u16,
        scope: u8,
        pr_type: u8,
        params: &[u8],
        uas: &mut Vec<(Nexus, AdditionalSense)>,
    ) -> Result<PrOutcome, Sense> {
        if params.len() != 24 {
            return Err(Sense::parameter_list_length_error());
        }
        let rk = be64(&params[0..8]);
        let sark = be64(&params[8..16]);
        let flags = params[20];
        if flags & 0x08 != 0 {
            return Err(Sense::invalid_field_in_param(20, Some(3)));
        }
        if flags & 0x04 != 0 {
            return Err(Sense::invalid_field_in_param(20, Some(2)));
        }
        if flags & 0x01 != 0 {
            return Err(Sense::invalid_field_in_param(20, Some(0)));
        }
        let current = self.key_of(n);
        if matches!(service_action, pro::REGISTER | pro::REGISTER_AND_IGNORE) {
            let ignore = service_action == pro::REGISTER_AND_IGNORE;
            match current {
                None => {
                    if !ignore && rk != 0 {
                        return Ok(PrOutcome::Conflict);
                    }
                    if sark != 0 {
                        self.registrations.push((n.clone(), sark));
                    }
                }
                Some(k) => {
                    if !ignore && rk != k {
                        return Ok(PrOutcome::Conflict);
                    }
                    if sark == 0 {
                        for other in self.unregister(n) {
                            uas.push((other, asc::RESERVATIONS_RELEASED));
                        }
                    } else if let Some(entry) = self.registrations.iter_mut().find(|(r, _)| r == n)
                    {
                        entry.1 = sark;
                    }
                }
            }
            self.generation = self.generation.wrapping_add(1);
            return Ok(PrOutcome::Good);
        }
        // Every other service action needs a registered nexus presenting its key.
        if current != Some(rk) {
            return Ok(PrOutcome::Conflict);
        }
        let check_scope_type = || -> Result<(), Sense> {
            if scope != 0 {
                return Err(Sense::invalid_field_in_cdb(2, Some(7)));
            }
            if !valid_type(pr_type) {
                return Err(Sense::invalid_field_in_cdb(2, Some(3)));
            }
            Ok(())
        };
        match service_action {
            pro::RESERVE => {
                check_scope_type()?;
                match &self.reservation {
                    None => {
                        self.reservation = Some(Reservation {
                            holder: n.clone(),
                            pr_type,
                        });
                        Ok(PrOutcome::Good)
                    }
                    Some(r) if self.is_holder(n) && r.pr_type == pr_type => Ok(PrOutcome::Good),
                    Some(_) => Ok(PrOutcome::Conflict),
                }
            }
            pro::RELEASE => {
                let Some(r) = self.reservation.clone() else {
                    return Ok(PrOutcome::Good);
                };
                if !self.is_holder(n) {
                    return Ok(PrOutcome::Good);
                }
                if scope != 0 || r.pr_type != pr_type {
                    return Err(Sense::new(
                        SenseKey::IllegalRequest,
                        asc::INVALID_RELEASE_OF_PERSISTENT_RESERVATION,
                    ));
                }
                self.reservation = None;
                if !matches!(r.pr_type, WRITE_EXCLUSIVE | EXCLUSIVE_ACCESS) {
                    for (other, _) in self.registrations.iter().filter(|(o, _)| o != n) {
                        uas.push((other.clone(), asc::RESERVATIONS_RELEASED));
                    }
                }
                Ok(PrOutcome::Good)
            }
            pro::CLEAR => {
                for (other, _) in self.registrations.iter().filter(|(o, _)| o != n) {
                    uas.push((other.clone(), asc::RESERVATIONS_PREEMPTED));
                }
                self.registrations.clear();
                self.reservation = None;
                self.generation = self.generation.wrapping_add(1);
                Ok(PrOutcome::Good)
            }
            pro::PREEMPT | pro::PREEMPT_AND_ABORT => {
                check_scope_type()?;
                let holder_key = match &self.reservation {
                    Some(r) if !all_registrants(r.pr_type) => self.key_of(&r.holder),
                    _ => None,
                };
                let all_reg = self
                    .reservation
                    .as_ref()
                    .is_some_and(|r| all_registrants(r.pr_type));
                let take_over = if all_reg {
                    sark == 0
                } else {
                    self.reservation.is_some() && holder_key == Some(sark)
                };
                if sark == 0 && !all_reg {
                    return Err(Sense::invalid_field_in_param(8, Some(7)));
                }
                let removed: Vec<Nexus> = self
                    .registrations
                    .iter()
                    .filter(|(o, k)| {
                        o != n
                            && (if all_reg && sark == 0 {
                                true
                            } else {
                                *k == sark
                            })
                    })
                    .map(|(o, _)| o.clone())
                    .collect();
                if removed.is_empty() && !take_over {
                    return Ok(PrOutcome::Conflict);
                }
                self.registrations.retain(|(o, _)| !removed.contains(o));
                for o in removed {
                    uas.push((o, asc::RESERVATIONS_PREEMPTED));
                }
                if take_over {
                    self.reservation = Some(Reservation {
                        holder: n.clone(),
                        pr_type,
                    });
                }
                self.generation = self.generation.wrapping_add(1);
                Ok(PrOutcome::Good)
            }
            // REGISTER AND MOVE and reserved service actions.
            _ => Err(Sense::invalid_field_in_cdb(1, Some(4))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nx(i: u64) -> Nexus {
        Nexus {
            initiator: format!("iqn.test:{i}"),
            isid: i,
            tpgt: 1,
        }
    }

    fn params(rk: u64, sark: u64) -> Vec<u8> {
        let mut p = vec![0u8; 24];
        p[..8].copy_from_slice(&rk.to_be_bytes());
        p[8..16].copy_from_slice(&sark.to_be_bytes());
        p
    }

    fn out(
        s: &mut PrState,
        n: &Nexus,
        sa: u16,
        t: u8,
        rk: u64,
        sark: u64,
    ) -> Result<PrOutcome, Sense> {
        s.pr_out(n, sa, 0, t, &params(rk, sark), &mut Vec::new())
    }

    #[test]
    fn register_reserve_conflict_release() {
        let mut s = PrState::default();
        let (a, b) = (nx(1), nx(2));
        assert_eq!(
            out(&mut s, &a, pro::REGISTER, 0, 0, 0xA),
            Ok(PrOutcome::Good)
        );
        assert_eq!(
            out(&mut s, &b, pro::REGISTER, 0, 0, 0xB),
            Ok(PrOutcome::Good)
        );
        // Wrong key.
        assert_eq!(
            out(&mut s, &a, pro::REGISTER, 0, 0x9, 0xC),
            Ok(PrOutcome::Conflict)
        );
        assert_eq!(
            out(&mut s, &a, pro::RESERVE, WRITE_EXCLUSIVE, 0xA, 0),
            Ok(PrOutcome::Good)
        );
        assert!(s.conflicts(&b, Access::Write));
        assert!(!s.conflicts(&b, Access::Read));
        assert!(!s.conflicts(&a, Access::Write));
        assert_eq!(
            out(&mut s, &b, pro::RESERVE, WRITE_EXCLUSIVE, 0xB, 0),
            Ok(PrOutcome::Conflict)
        );
        // Release with the wrong type.
        let e = out(&mut s, &a, pro::RELEASE, EXCLUSIVE_ACCESS, 0xA, 0).unwrap_err();
        assert_eq!(e.code, asc::INVALID_RELEASE_OF_PERSISTENT_RESERVATION);
        assert_eq!(
            out(&mut s, &a, pro::RELEASE, WRITE_EXCLUSIVE, 0xA, 0),
            Ok(PrOutcome::Good)
        );
        assert!(!s.conflicts(&b, Access::Write));
        // READ KEYS lists both keys.
        let keys = s.pr_in(0);
        assert_eq!(&keys[4..8], &16u32.to_be_bytes());
    }

    #[test]
    fn registrants_only_and_preempt() {
        let mut s = PrState::default();
        let (a, b, c) = (nx(1), nx(2), nx(3));
        out(&mut s, &a, pro::REGISTER, 0, 0, 0xA).unwrap();
        out(&mut s, &b, pro::REGISTER, 0, 0, 0xB).unwrap();
        out(
            &mut s,
            &a,
            pro::RESERVE,
            EXCLUSIVE_ACCESS_REGISTRANTS_ONLY,
            0xA,
            0,
        )
        .unwrap();
        assert!(!s.conflicts(&b, Access::Read));
        assert!(s.conflicts(&c, Access::Read));
        let r = s.pr_in(1);
        assert_eq!(&r[8..16], &0xAu64.to_be_bytes());
        assert_eq!(r[21], EXCLUSIVE_ACCESS_REGISTRANTS_ONLY);
        // B preempts A: A's registration goes, B holds the reservation.
        let mut uas = Vec::new();
        let res = s.pr_out(
            &b,
            pro::PREEMPT,
            0,
            EXCLUSIVE_ACCESS,
            &params(0xB, 0xA),
            &mut uas,
        );
        assert_eq!(res, Ok(PrOutcome::Good));
        assert_eq!(uas, vec![(a.clone(), asc::RESERVATIONS_PREEMPTED)]);
        assert!(s.conflicts(&a, Access::Read));
        assert_eq!(s.key_of(&a), None);
        // Preempting a key nobody has is a conflict.
        assert_eq!(
            out(&mut s, &b, pro::PREEMPT, EXCLUSIVE_ACCESS, 0xB, 0x77),
            Ok(PrOutcome::Conflict)
        );
        // CLEAR removes everything.
        out(&mut s, &b, pro::CLEAR, 0, 0xB, 0).unwrap();
        assert!(!s.is_active());
    }

    #[test]
    fn all_registrants_and_unregister() {
        let mut s = PrState::default();
        let (a, b) = (nx(1), nx(2));
        out(&mut s, &a, pro::REGISTER, 0, 0, 0xA).unwrap();
        out(&mut s, &b, pro::REGISTER_AND_IGNORE, 0, 0x1234, 0xB).unwrap();
        out(
            &mut s,
            &a,
            pro::RESERVE,
            WRITE_EXCLUSIVE_ALL_REGISTRANTS,
            0xA,
            0,
        )
        .unwrap();
        assert!(s.is_holder(&b));
        assert_eq!(&s.pr_in(1)[8..16], &[0; 8]);
        out(&mut s, &a, pro::REGISTER, 0, 0xA, 0).unwrap();
        assert!(s.is_reserved());
        out(&mut s, &b, pro::REGISTER, 0, 0xB, 0).unwrap();
        assert!(!s.is_reserved());
    }

    #[test]
    fn bad_parameters() {
        let mut s = PrState::default();
        let a = nx(1);
        let e = s
            .pr_out(&a, pro::REGISTER, 0, 0, &[0; 20], &mut Vec::new())
            .unwrap_err();
        assert_eq!(e.code, asc::PARAMETER_LIST_LENGTH_ERROR);
        let mut p = params(0, 1);
        p[20] = 0x01; // APTPL
        let e = s
            .pr_out(&a, pro::REGISTER, 0, 0, &p, &mut Vec::new())
            .unwrap_err();
        assert_eq!(
            e.field,
            Some(scsi_proto::scsi::sense::FieldPointer::param(20, Some(0)))
        );
        out(&mut s, &a, pro::REGISTER, 0, 0, 1).unwrap();
        let e = out(&mut s, &a, pro::RESERVE, 2, 1, 0).unwrap_err();
        assert_eq!(
            e.field,
            Some(scsi_proto::scsi::sense::FieldPointer::cdb(2, Some(3)))
        );
        assert_eq!(s.pr_in(2)[..2], [0, 8]);
        // READ FULL STATUS: one descriptor with an iSCSI TransportID.
        let full = s.pr_in(3);
        let len = u32::from_be_bytes([full[4], full[5], full[6], full[7]]) as usize;
        assert_eq!(len + 8, full.len());
        assert_eq!(&full[8..16], &1u64.to_be_bytes());
        assert_eq!(full[32], 0x45);
        let tid = String::from_utf8_lossy(&full[36..]);
        assert!(tid.starts_with("iqn.test:1,i,0x000000000001"), "{tid}");
    }
}
