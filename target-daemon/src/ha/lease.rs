//! What the lease object `lunar.<group>.<pool>.lease` (one per pool of the group: each
//! pool is its own HA unit) holds besides its cls_lock: the epoch of the current
//! ownership, the owner, and the gateway a planned move hands over to.
//!
//! The lock says who may own the pool now (the OSD expires it); this content says who did
//! last and at which epoch, so a new owner can number its takeover, and carries the one
//! request an operator can make of the owner (`preferred`). It is JSON, changed only by
//! version-checked read-modify-write (the shell retries on a version race): the owner
//! writes `epoch` and `owner` after winning the lock, `lunarctl ha move` writes
//! `preferred`.

use serde::{Deserialize, Serialize};

/// The cls_lock name on the lease object.
pub const LOCK_NAME: &str = "lunar.lease";

/// Name of the lease object of pool `pool` of group `group`. (Before a group could have
/// several pools it was `lunar.<group>.lease`; pre-release, that name is simply no longer
/// read: a group upgraded while running would have two owners, so stop every gateway of
/// a group before upgrading it.)
pub fn lease_object(group: &str, pool: &str) -> String {
    format!("lunar.{group}.{pool}.lease")
}

/// Content of the lease object.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseContent {
    /// Bumped at every takeover; 0 before the first.
    pub epoch: u64,
    /// Gateway that took the lease at `epoch`.
    pub owner: Option<String>,
    /// Gateway a planned move hands the pool to: the owner releases when it sees another
    /// name here, and the others let that gateway take the lease first.
    #[serde(default)]
    pub preferred: Option<String>,
}

impl LeaseContent {
    /// Reads the object's bytes; an empty (new) object is epoch 0 with nobody.
    pub fn decode(bytes: &[u8]) -> Result<LeaseContent, serde_json::Error> {
        if bytes.is_empty() {
            return Ok(LeaseContent::default());
        }
        serde_json::from_slice(bytes)
    }

    /// The bytes written to the object.
    pub fn encode(&self) -> Vec<u8> {
        // A struct of integers, strings and options always serializes.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// The content `me` writes after winning the lock: the next epoch, itself as owner,
    /// and no pending move (a move to `me` is done; a move to another gateway that did
    /// not take the lease in time is abandoned).
    pub fn taken_by(&self, me: &str) -> LeaseContent {
        LeaseContent {
            epoch: self.epoch + 1,
            owner: Some(me.to_string()),
            preferred: None,
        }
    }

    /// The content after an operator asked to move the pool to `to`.
    pub fn moved_to(&self, to: &str) -> LeaseContent {
        LeaseContent {
            preferred: Some(to.to_string()),
            ..self.clone()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_pool_has_its_own_lease_object() {
        assert_eq!(lease_object("g1", "fast"), "lunar.g1.fast.lease");
        assert_ne!(lease_object("g1", "fast"), lease_object("g1", "bulk"));
    }

    #[test]
    fn content_round_trips_and_empty_is_epoch_zero() {
        assert_eq!(LeaseContent::decode(b"").unwrap(), LeaseContent::default());
        let c = LeaseContent::default().taken_by("gw1").moved_to("gw2");
        assert_eq!(c.epoch, 1);
        assert_eq!(LeaseContent::decode(&c.encode()).unwrap(), c);
        let t = c.taken_by("gw2");
        assert_eq!(
            (t.epoch, t.owner.as_deref(), t.preferred),
            (2, Some("gw2"), None)
        );
        assert!(LeaseContent::decode(b"{not json").is_err());
    }
}
