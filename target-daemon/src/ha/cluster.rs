//! The lease lane's RADOS calls: probe, acquire, renew and release the lease lock on
//! `lunar.<group>.lease`, read and change its content, and the planned move.
//!
//! Each call blocks (librados' synchronous API, bounded by `rados_osd_op_timeout`); the
//! shell runs them on a blocking thread and feeds the outcome to the machine. Errors are
//! sorted into what the machine cares about ([`Failure`]).

use std::time::{Duration, Instant};

use storage_core::ceph::{CephError, Expect, IoCtx};

use super::lease::{lease_object, LeaseContent, LOCK_NAME};
use super::machine::{Failure, Probe};

/// How often a version-checked content write is retried when another writer raced it.
const CAS_ATTEMPTS: usize = 8;

/// Sorts a Ceph error for the machine.
pub fn failure(e: &CephError) -> Failure {
    if e.is_blocklisted() || e.errno() == Some(libc::ESHUTDOWN) {
        return Failure::Blocklisted;
    }
    match e {
        CephError::Busy { .. } | CephError::NotHeld { .. } => Failure::Busy,
        other => Failure::Other(other.to_string()),
    }
}

/// The lease of one gateway in one group, over one RADOS client.
#[derive(Debug, Clone)]
pub struct LeaseClient {
    ioctx: IoCtx,
    oid: String,
    /// Lock cookie and description: the gateway's name.
    me: String,
    lease: Duration,
}

impl LeaseClient {
    /// The lease of pool `pool` of `group` for gateway `me`, with the given duration.
    pub fn new(ioctx: IoCtx, group: &str, pool: &str, me: &str, lease: Duration) -> LeaseClient {
        LeaseClient {
            ioctx,
            oid: lease_object(group, pool),
            me: me.to_string(),
            lease,
        }
    }

    /// The pool context the lease lives in.
    pub fn ioctx(&self) -> &IoCtx {
        &self.ioctx
    }

    /// The content and its version (an absent object is epoch 0, version `None`).
    pub fn read(&self) -> Result<(LeaseContent, Option<u64>), CephError> {
        match self.ioctx.read(&self.oid)? {
            None => Ok((LeaseContent::default(), None)),
            Some(d) => {
                let c = LeaseContent::decode(&d.data).map_err(|e| {
                    CephError::Invalid(format!("lease object {} is not lease JSON: {e}", self.oid))
                })?;
                Ok((c, Some(d.version)))
            }
        }
    }

    /// Whether the lock is held, and the content.
    pub fn probe(&self) -> Result<Probe, Failure> {
        let info = self
            .ioctx
            .list_lockers(&self.oid, LOCK_NAME)
            .map_err(|e| failure(&e))?;
        let (content, stamp) = self.read().map_err(|e| failure(&e))?;
        Ok(Probe {
            held: !info.lockers.is_empty(),
            content,
            stamp,
        })
    }

    /// Takes the lock, then writes the content of a takeover by this gateway. Returns when
    /// the lock call was sent and the content written.
    pub fn acquire(&self) -> Result<(Instant, LeaseContent), Failure> {
        let sent = Instant::now();
        match self.lock(false) {
            Ok(()) => {}
            // Already ours (a release that did not reach the OSD): extend it instead.
            Err(CephError::Os { errno, .. }) if errno == libc::EEXIST => {
                self.lock(true).map_err(|e| failure(&e))?
            }
            Err(e) => return Err(failure(&e)),
        }
        let content = self
            .update(|c| c.taken_by(&self.me))
            .map_err(|e| failure(&e))?;
        Ok((sent, content))
    }

    /// Renews the lock; returns when the renew was sent and the content read after it.
    pub fn renew(&self) -> Result<(Instant, LeaseContent), Failure> {
        let sent = Instant::now();
        self.lock(true).map_err(|e| failure(&e))?;
        let (content, _) = self.read().map_err(|e| failure(&e))?;
        Ok((sent, content))
    }

    /// Gives the lock back; a lock we no longer hold is fine (it expired).
    pub fn release(&self) -> Result<(), CephError> {
        match self.ioctx.unlock(&self.oid, LOCK_NAME, &self.me) {
            Ok(()) | Err(CephError::NotHeld { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Read-modify-write of the content, version-checked, retried when another writer
    /// raced it. Returns what was written.
    pub fn update(
        &self,
        change: impl Fn(&LeaseContent) -> LeaseContent,
    ) -> Result<LeaseContent, CephError> {
        let mut last = None;
        for _ in 0..CAS_ATTEMPTS {
            let (old, version) = self.read()?;
            let new = change(&old);
            let expect = version.map_or(Expect::Absent, Expect::Version);
            match self.ioctx.write_full(&self.oid, &new.encode(), expect) {
                Ok(_) => return Ok(new),
                Err(e @ CephError::Conflict { .. }) => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| {
            CephError::Invalid(format!("lease object {}: no write attempted", self.oid))
        }))
    }

    fn lock(&self, renew: bool) -> Result<(), CephError> {
        self.ioctx.lock_exclusive(
            &self.oid,
            LOCK_NAME,
            &self.me,
            &self.me,
            Some(self.lease),
            renew,
        )
    }
}
