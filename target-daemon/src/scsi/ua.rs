//! Unit attention conditions (SAM-5 5.14, SPC-4 5.12), kept per I_T_L nexus.
//!
//! A unit attention tells one initiator that something it cares about changed behind its
//! back (power on / reset, capacity, the LUN inventory, mode parameters). Each nexus has a
//! small queue per LUN; the device server reports and clears the oldest entry with CHECK
//! CONDITION on the next command that is not INQUIRY, REPORT LUNS or REQUEST SENSE.
//!
//! The hot path (every command) only touches an atomic counter unless something is queued.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};

use parking_lot::Mutex;
use scsi_proto::scsi::sense::{asc, AdditionalSense};

use super::Nexus;

/// Most conditions queued per I_T_L nexus; older ones are dropped beyond that (the
/// initiator will re-read everything after the first anyway).
const MAX_QUEUED: usize = 8;

/// Whether an ASC/ASCQ is one of the power on / reset family (29h), which supersedes
/// everything queued before it.
fn is_reset(code: AdditionalSense) -> bool {
    code.asc == 0x29
}

type Queues = HashMap<Nexus, HashMap<u64, VecDeque<AdditionalSense>>>;

/// Unit attention queues of one SCSI target, keyed by nexus then LUN.
#[derive(Default)]
pub struct UnitAttentions {
    queues: Mutex<Queues>,
    pending: AtomicUsize,
}

impl UnitAttentions {
    fn push(
        queues: &mut Queues,
        pending: &AtomicUsize,
        nexus: &Nexus,
        lun: u64,
        code: AdditionalSense,
    ) {
        let Some(per_lun) = queues.get_mut(nexus) else {
            return;
        };
        let q = per_lun.entry(lun).or_default();
        if q.contains(&code) {
            return;
        }
        if is_reset(code) {
            pending.fetch_sub(q.len(), Ordering::Relaxed);
            q.clear();
        } else if q.len() >= MAX_QUEUED {
            q.pop_front();
            pending.fetch_sub(1, Ordering::Relaxed);
        }
        q.push_back(code);
        pending.fetch_add(1, Ordering::Relaxed);
    }

    /// A nexus appeared (login): POWER ON, RESET, OR BUS DEVICE RESET OCCURRED on every LUN.
    pub fn login(&self, nexus: &Nexus, luns: &[u64]) {
        let mut q = self.queues.lock();
        if let Some(old) = q.remove(nexus) {
            let n: usize = old.values().map(VecDeque::len).sum();
            self.pending.fetch_sub(n, Ordering::Relaxed);
        }
        q.insert(nexus.clone(), HashMap::new());
        for &lun in luns {
            Self::push(
                &mut q,
                &self.pending,
                nexus,
                lun,
                asc::POWER_ON_RESET_OR_BUS_DEVICE_RESET_OCCURRED,
            );
        }
    }

    /// A nexus went away: forget its conditions.
    pub fn logout(&self, nexus: &Nexus) {
        if let Some(old) = self.queues.lock().remove(nexus) {
            let n: usize = old.values().map(VecDeque::len).sum();
            self.pending.fetch_sub(n, Ordering::Relaxed);
        }
    }

    /// Establish `code` on `lun` for one nexus.
    pub fn establish(&self, nexus: &Nexus, lun: u64, code: AdditionalSense) {
        let mut q = self.queues.lock();
        Self::push(&mut q, &self.pending, nexus, lun, code);
    }

    /// Establish `code` on `lun` for every known nexus except `except`.
    pub fn establish_lun(&self, lun: u64, code: AdditionalSense, except: Option<&Nexus>) {
        let mut q = self.queues.lock();
        let nexuses: Vec<Nexus> = q.keys().filter(|n| Some(*n) != except).cloned().collect();
        for n in nexuses {
            Self::push(&mut q, &self.pending, &n, lun, code);
        }
    }

    /// Establish `code` on every LUN in `luns` for every known nexus except `except`.
    pub fn establish_luns(&self, luns: &[u64], code: AdditionalSense, except: Option<&Nexus>) {
        let mut q = self.queues.lock();
        let nexuses: Vec<Nexus> = q.keys().filter(|n| Some(*n) != except).cloned().collect();
        for n in nexuses {
            for &lun in luns {
                Self::push(&mut q, &self.pending, &n, lun, code);
            }
        }
    }

    /// Drop every condition queued for a LUN that no longer exists.
    pub fn remove_lun(&self, lun: u64) {
        let mut q = self.queues.lock();
        for per_lun in q.values_mut() {
            if let Some(old) = per_lun.remove(&lun) {
                self.pending.fetch_sub(old.len(), Ordering::Relaxed);
            }
        }
    }

    /// The oldest condition pending for this I_T_L nexus, without clearing it.
    pub fn peek(&self, nexus: &Nexus, lun: u64) -> Option<AdditionalSense> {
        if self.pending.load(Ordering::Relaxed) == 0 {
            return None;
        }
        self.queues.lock().get(nexus)?.get(&lun)?.front().copied()
    }

    /// Report-and-clear: remove and return the oldest pending condition.
    pub fn take(&self, nexus: &Nexus, lun: u64) -> Option<AdditionalSense> {
        if self.pending.load(Ordering::Relaxed) == 0 {
            return None;
        }
        let mut q = self.queues.lock();
        let code = q.get_mut(nexus)?.get_mut(&lun)?.pop_front()?;
        self.pending.fetch_sub(1, Ordering::Relaxed);
        Some(code)
    }

    /// Clear one specific condition (REPORT LUNS clears REPORTED LUNS DATA HAS CHANGED).
    pub fn clear(&self, nexus: &Nexus, lun: u64, code: AdditionalSense) {
        if self.pending.load(Ordering::Relaxed) == 0 {
            return;
        }
        let mut q = self.queues.lock();
        if let Some(queue) = q.get_mut(nexus).and_then(|m| m.get_mut(&lun)) {
            let before = queue.len();
            queue.retain(|c| *c != code);
            self.pending
                .fetch_sub(before - queue.len(), Ordering::Relaxed);
        }
    }

    /// Clear one specific condition on every LUN of a nexus (REPORT LUNS clears REPORTED
    /// LUNS DATA HAS CHANGED for the whole inventory, SPC-4 6.33).
    pub fn clear_all_luns(&self, nexus: &Nexus, code: AdditionalSense) {
        if self.pending.load(Ordering::Relaxed) == 0 {
            return;
        }
        let mut q = self.queues.lock();
        if let Some(per_lun) = q.get_mut(nexus) {
            for queue in per_lun.values_mut() {
                let before = queue.len();
                queue.retain(|c| *c != code);
                self.pending
                    .fetch_sub(before - queue.len(), Ordering::Relaxed);
            }
        }
    }

    /// Whether the nexus is known (logged in).
    pub fn knows(&self, nexus: &Nexus) -> bool {
        self.queues.lock().contains_key(nexus)
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

    #[test]
    fn login_sets_power_on_and_take_clears() {
        let ua = UnitAttentions::default();
        ua.login(&nx(1), &[0, 1]);
        assert_eq!(
            ua.peek(&nx(1), 0),
            Some(asc::POWER_ON_RESET_OR_BUS_DEVICE_RESET_OCCURRED)
        );
        assert_eq!(
            ua.take(&nx(1), 0),
            Some(asc::POWER_ON_RESET_OR_BUS_DEVICE_RESET_OCCURRED)
        );
        assert_eq!(ua.take(&nx(1), 0), None);
        assert!(ua.take(&nx(1), 1).is_some());
        assert_eq!(ua.pending.load(Ordering::Relaxed), 0);
        assert_eq!(ua.take(&nx(2), 0), None);
    }

    #[test]
    fn establish_except_issuer_and_reset_supersedes() {
        let ua = UnitAttentions::default();
        ua.login(&nx(1), &[]);
        ua.login(&nx(2), &[]);
        ua.establish_lun(0, asc::CAPACITY_DATA_HAS_CHANGED, None);
        ua.establish_lun(0, asc::CAPACITY_DATA_HAS_CHANGED, None); // deduplicated
        ua.establish_lun(0, asc::MODE_PARAMETERS_CHANGED, Some(&nx(1)));
        assert_eq!(ua.take(&nx(1), 0), Some(asc::CAPACITY_DATA_HAS_CHANGED));
        assert_eq!(ua.take(&nx(1), 0), None);
        ua.establish_lun(0, asc::BUS_DEVICE_RESET_FUNCTION_OCCURRED, None);
        assert_eq!(
            ua.take(&nx(2), 0),
            Some(asc::BUS_DEVICE_RESET_FUNCTION_OCCURRED)
        );
        assert_eq!(ua.take(&nx(2), 0), None);
        ua.take(&nx(1), 0);
        assert_eq!(ua.pending.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn clear_remove_and_logout_keep_count_exact() {
        let ua = UnitAttentions::default();
        ua.login(&nx(1), &[0, 1, 2]);
        ua.establish_luns(&[0, 1], asc::REPORTED_LUNS_DATA_HAS_CHANGED, None);
        ua.clear(&nx(1), 0, asc::REPORTED_LUNS_DATA_HAS_CHANGED);
        assert_eq!(
            ua.take(&nx(1), 0),
            Some(asc::POWER_ON_RESET_OR_BUS_DEVICE_RESET_OCCURRED)
        );
        assert_eq!(ua.take(&nx(1), 0), None);
        ua.establish_luns(&[1, 2], asc::REPORTED_LUNS_DATA_HAS_CHANGED, None);
        ua.clear_all_luns(&nx(1), asc::REPORTED_LUNS_DATA_HAS_CHANGED);
        assert_eq!(
            ua.take(&nx(1), 2),
            Some(asc::POWER_ON_RESET_OR_BUS_DEVICE_RESET_OCCURRED)
        );
        assert_eq!(ua.take(&nx(1), 2), None);
        ua.remove_lun(1);
        assert_eq!(ua.peek(&nx(1), 1), None);
        ua.logout(&nx(1));
        assert_eq!(ua.pending.load(Ordering::Relaxed), 0);
        assert!(!ua.knows(&nx(1)));
    }

    #[test]
    fn queue_is_bounded() {
        let ua = UnitAttentions::default();
        ua.login(&nx(1), &[]);
        for i in 0..20u8 {
            ua.establish_lun(0, AdditionalSense::new(0x3F, i), None);
        }
        let mut n = 0;
        while ua.take(&nx(1), 0).is_some() {
            n += 1;
        }
        assert_eq!(n, MAX_QUEUED);
        assert_eq!(ua.pending.load(Ordering::Relaxed), 0);
    }
}
