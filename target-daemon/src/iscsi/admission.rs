//! Connection admission: how many iSCSI connections the portals hold in total, from one IP
//! address, and still logging in. Checked as a connection is accepted, before a byte of it is
//! read, so a flood of connections (or of slow, never-finishing logins, which cost buffers
//! before any authentication) is refused at the door instead of consuming memory and tasks.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use parking_lot::Mutex;

use crate::config::LimitsCfg;

/// Which limit refused a connection (the `limit` label of `lunar_limit_refusals_total`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// `limits.max_connections`.
    Connections,
    /// `limits.max_connections_per_address`.
    PerAddress,
    /// `limits.max_logins_in_progress`.
    LoginsInProgress,
}

impl Refusal {
    /// The metrics label.
    pub fn label(self) -> &'static str {
        match self {
            Refusal::Connections => "iscsi_connections",
            Refusal::PerAddress => "iscsi_connections_per_address",
            Refusal::LoginsInProgress => "iscsi_logins_in_progress",
        }
    }
}

#[derive(Default)]
struct Counts {
    total: u32,
    logging_in: u32,
    by_addr: HashMap<IpAddr, u32>,
}

/// The counters behind the limits.
pub struct Admission {
    max_total: u32,
    max_per_addr: u32,
    max_logging_in: u32,
    counts: Mutex<Counts>,
}

impl Admission {
    /// Admission with the limits of `cfg`.
    pub fn new(cfg: &LimitsCfg) -> Arc<Admission> {
        Arc::new(Admission {
            max_total: cfg.max_connections,
            max_per_addr: cfg.max_connections_per_address,
            max_logging_in: cfg.max_logins_in_progress,
            counts: Mutex::new(Counts::default()),
        })
    }

    /// Admits a new connection from `addr` (it starts in the login phase), or says which
    /// limit it would exceed.
    pub fn admit(self: &Arc<Self>, addr: IpAddr) -> Result<ConnSlot, Refusal> {
        let mut c = self.counts.lock();
        if c.total >= self.max_total {
            return Err(Refusal::Connections);
        }
        if c.logging_in >= self.max_logging_in {
            return Err(Refusal::LoginsInProgress);
        }
        let n = c.by_addr.get(&addr).copied().unwrap_or(0);
        if n >= self.max_per_addr {
            return Err(Refusal::PerAddress);
        }
        c.total += 1;
        c.logging_in += 1;
        c.by_addr.insert(addr, n + 1);
        Ok(ConnSlot {
            admission: self.clone(),
            addr,
            logging_in: true,
        })
    }

    /// Connections held now (all phases).
    pub fn connections(&self) -> u32 {
        self.counts.lock().total
    }
}

/// One admitted connection; dropping it frees its place.
pub struct ConnSlot {
    admission: Arc<Admission>,
    addr: IpAddr,
    logging_in: bool,
}

impl ConnSlot {
    /// The connection finished logging in: it no longer counts as a login in progress.
    pub fn logged_in(&mut self) {
        if std::mem::take(&mut self.logging_in) {
            let mut c = self.admission.counts.lock();
            c.logging_in = c.logging_in.saturating_sub(1);
        }
    }
}

impl Drop for ConnSlot {
    fn drop(&mut self) {
        let mut c = self.admission.counts.lock();
        c.total = c.total.saturating_sub(1);
        if self.logging_in {
            c.logging_in = c.logging_in.saturating_sub(1);
        }
        if let Some(n) = c.by_addr.get_mut(&self.addr) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                c.by_addr.remove(&self.addr);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(total: u32, per: u32, login: u32) -> LimitsCfg {
        LimitsCfg {
            max_connections: total,
            max_connections_per_address: per,
            max_logins_in_progress: login,
            ..LimitsCfg::default()
        }
    }

    #[test]
    fn each_limit_refuses_and_slots_come_back() {
        let a = Admission::new(&limits(3, 2, 2));
        let x: IpAddr = [127, 0, 0, 1].into();
        let y: IpAddr = [127, 0, 0, 2].into();
        let mut s1 = a.admit(x).expect("first");
        let _s2 = a.admit(x).expect("second");
        s1.logged_in();
        assert_eq!(a.admit(x).err(), Some(Refusal::PerAddress));
        let s3 = a.admit(y).expect("other address");
        assert_eq!(a.admit(y).err(), Some(Refusal::Connections));
        drop(s3);
        let _s4 = a.admit(y).expect("a freed slot is reusable");
        assert_eq!(a.connections(), 3);
        drop(s1);
        assert_eq!(
            a.admit(y).err(),
            Some(Refusal::LoginsInProgress),
            "two connections are still logging in"
        );
    }
}
