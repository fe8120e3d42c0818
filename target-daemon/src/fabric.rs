//! Which SCSI transport a target is exported over, and the names each one uses.
//!
//! iSCSI targets are served by lunard's own front end and named by iSCSI names (IQN).
//! Fibre Channel (`qla2xxx`) and the kernel's loopback fabric (`loopback`, tcm_loop) are
//! driven by Linux LIO: lunard configures them through configfs and serves their commands
//! through a TCMU user backstore. Those targets and their initiators are named by world
//! wide port names (WWPN), which LIO spells differently per fabric: qla2xxx wants the colon
//! form `21:00:00:24:ff:31:4c:48`, tcm_loop the `naa.` form `naa.5001405abcdef012`. Lunar
//! accepts either spelling everywhere and stores the one the fabric's configfs tree uses, so
//! a name compares equal however an admin typed it.
//!
//! [`Frontend`] is what the LUN manager needs of the server of a fabric (lunard's iSCSI
//! server, LIO): export or withdraw a target, change its access control, list and close its
//! sessions. The manager sees only this trait and the neutral types beside it
//! ([`TargetSpec`], [`SessionView`]); the daemon wires the concrete front ends in. LUNs need
//! no help from here: the manager adds and removes them on each target's [`ScsiTarget`],
//! which raises the unit attentions and tells a fabric acting per LUN through its
//! [`crate::scsi::LunObserver`].

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::scsi::ScsiTarget;
use crate::secret::Secret;

/// The transport of a target.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Fabric {
    /// lunard's own iSCSI front end (RFC 7143).
    #[default]
    Iscsi,
    /// Fibre Channel through LIO's `tcm_qla2xxx` (a QLogic HBA in target mode).
    Qla2xxx,
    /// LIO's loopback fabric (`tcm_loop`): the LUNs appear as local SCSI disks of the
    /// appliance itself; for local use and for testing the FC path without an HBA.
    Loopback,
}

impl Fabric {
    /// The name used in YAML, the admin API and LIO's configfs (`/sys/kernel/config/target/NAME`).
    pub fn as_str(self) -> &'static str {
        match self {
            Fabric::Iscsi => "iscsi",
            Fabric::Qla2xxx => "qla2xxx",
            Fabric::Loopback => "loopback",
        }
    }

    /// Parses the YAML/admin spelling.
    pub fn parse(s: &str) -> Result<Fabric, UnknownFabric> {
        match s.to_ascii_lowercase().as_str() {
            "iscsi" => Ok(Fabric::Iscsi),
            "qla2xxx" | "fc" => Ok(Fabric::Qla2xxx),
            "loopback" | "tcm_loop" => Ok(Fabric::Loopback),
            _ => Err(UnknownFabric(s.to_string())),
        }
    }

    /// Served through LIO and TCMU rather than lunard's iSCSI front end.
    pub fn is_lio(self) -> bool {
        self != Fabric::Iscsi
    }

    /// Checks a target or initiator name for this fabric and returns its canonical spelling
    /// (iSCSI names unchanged; WWPNs in the form this fabric's configfs tree uses).
    pub fn canonical_name(self, name: &str) -> Result<String, String> {
        match self {
            Fabric::Iscsi => {
                scsi_proto::iscsi::names::validate(name).map_err(|e| format!("{name:?}: {e}"))?;
                Ok(name.to_string())
            }
            Fabric::Qla2xxx => parse_wwpn(name).map(wwpn_colon),
            Fabric::Loopback => parse_wwpn(name).map(|w| format!("naa.{w:016x}")),
        }
    }

    /// Whether two names denote the same port on this fabric.
    pub fn same_name(self, a: &str, b: &str) -> bool {
        match (self.canonical_name(a), self.canonical_name(b)) {
            (Ok(x), Ok(y)) => x.eq_ignore_ascii_case(&y),
            _ => a.eq_ignore_ascii_case(b),
        }
    }
}

/// A fabric name lunard does not know.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown fabric {0:?}: expected {EXPECTED_FABRICS}")]
pub struct UnknownFabric(pub String);

/// The fabric names [`Fabric::parse`] accepts, for messages.
pub const EXPECTED_FABRICS: &str = "iscsi, qla2xxx (Fibre Channel) or loopback";

impl std::fmt::Display for Fabric {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A target as a front end exports it: name, transport and access control (its LUNs live on
/// its [`ScsiTarget`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TargetSpec {
    /// Target name: IQN for iSCSI, WWPN in the fabric's canonical spelling for LIO fabrics.
    pub name: String,
    /// Transport.
    pub fabric: Fabric,
    /// TargetAlias.
    pub alias: Option<String>,
    /// Any initiator may log in.
    pub allow_any: bool,
    /// Allowed initiators (when not `allow_any`).
    pub initiators: Vec<String>,
    /// CHAP required for normal sessions (iSCSI only).
    pub chap: Option<ChapSpec>,
}

/// CHAP credentials a target requires.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChapSpec {
    /// Name the initiator must send.
    pub username: String,
    /// Secret the initiator must know.
    pub secret: Secret,
    /// Mutual CHAP: the name and secret the target answers with.
    pub mutual: Option<(String, Secret)>,
}

/// One logged-in session, as `session list` shows it, whatever the fabric.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionView {
    /// Target session handle.
    pub tsih: u16,
    /// Initiator name.
    pub initiator: String,
    /// ISID as 12 hex digits.
    pub isid: String,
    /// Target name, `None` for discovery sessions.
    pub target: Option<String>,
    /// LUNs the session can reach.
    pub luns: Vec<u64>,
    /// Connections: (CID, initiator address, portal address).
    pub connections: Vec<(u16, String, String)>,
    /// Creation time, seconds since the Unix epoch.
    pub since_unix: u64,
    /// Commands running now.
    pub tasks: usize,
}

/// Why a front end could not apply a target-level change now (the change is kept in the
/// state and applied when lunard restarts).
#[derive(Debug, thiserror::Error)]
#[error("the {fabric} front end cannot apply the change to target {target:?}: {reason}")]
pub struct FrontendError {
    /// Fabric of the front end.
    pub fabric: Fabric,
    /// Target the change was for.
    pub target: String,
    /// What the front end said.
    pub reason: String,
}

/// What the LUN manager needs of the server of a fabric.
pub trait Frontend: Send + Sync {
    /// The fabrics this front end serves.
    fn fabrics(&self) -> &'static [Fabric];
    /// Starts exporting a new target with the LUNs of `scsi`.
    fn add_target(&self, spec: TargetSpec, scsi: Arc<ScsiTarget>) -> Result<(), FrontendError>;
    /// Stops exporting a target and closes its sessions.
    fn remove_target(&self, name: &str) -> Result<(), FrontendError>;
    /// Replaces a target's access control (ACL, CHAP); new logins see it.
    fn update_target(&self, spec: TargetSpec) -> Result<(), FrontendError>;
    /// Sessions logged in to the target `name`.
    fn sessions(&self, name: &str) -> Vec<SessionView>;
    /// Asks every session of the target `name` to close; returns how many there were.
    fn close_sessions(&self, name: &str) -> usize;
}

/// Parses a 64-bit world wide port name: `naa.` + 16 hex digits, 16 bare hex digits, or
/// eight colon-separated hex bytes (`21:00:00:24:ff:31:4c:48`). The NAA field (top four
/// bits) must be 1, 2, 5 or 6, the formats FC ports use (IEEE 803, IEEE extended, IEEE
/// registered, IEEE registered extended); an all-zero name is refused.
pub fn parse_wwpn(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let hex: String = if let Some(h) = t.strip_prefix("naa.").or_else(|| t.strip_prefix("NAA.")) {
        h.to_string()
    } else if t.contains(':') {
        let parts: Vec<&str> = t.split(':').collect();
        if parts.len() != 8 || parts.iter().any(|p| p.len() != 2) {
            return Err(format!(
                "{s:?}: a WWPN in colon form has eight two-digit hex bytes, e.g. 21:00:00:24:ff:31:4c:48"
            ));
        }
        parts.concat()
    } else {
        t.to_string()
    };
    if hex.len() != 16 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(format!(
            "{s:?}: a WWPN is 16 hex digits, written naa.21000024ff314c48 or 21:00:00:24:ff:31:4c:48"
        ));
    }
    let v = u64::from_str_radix(&hex, 16).map_err(|e| format!("{s:?}: {e}"))?;
    if v == 0 {
        return Err(format!("{s:?}: the all-zero WWPN is not a port name"));
    }
    match v >> 60 {
        1 | 2 | 5 | 6 => Ok(v),
        n => Err(format!(
            "{s:?}: NAA type {n} is not a port name format (FC WWPNs start with 1, 2, 5 or 6)"
        )),
    }
}

/// `21:00:00:24:ff:31:4c:48`, the spelling `tcm_qla2xxx` uses in configfs.
pub fn wwpn_colon(w: u64) -> String {
    let b = w.to_be_bytes();
    b.iter()
        .map(|x| format!("{x:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wwpn_spellings_agree() {
        let a = parse_wwpn("21:00:00:24:FF:31:4c:48").unwrap();
        let b = parse_wwpn("naa.21000024ff314c48").unwrap();
        let c = parse_wwpn("21000024ff314c48").unwrap();
        assert_eq!(a, 0x2100_0024_ff31_4c48);
        assert_eq!(a, b);
        assert_eq!(b, c);
        assert_eq!(wwpn_colon(a), "21:00:00:24:ff:31:4c:48");
        assert_eq!(
            Fabric::Qla2xxx
                .canonical_name("naa.21000024FF314C48")
                .unwrap(),
            "21:00:00:24:ff:31:4c:48"
        );
        assert_eq!(
            Fabric::Loopback
                .canonical_name("50:01:40:5a:bc:de:f0:12")
                .unwrap(),
            "naa.5001405abcdef012"
        );
        assert!(Fabric::Qla2xxx.same_name("naa.21000024ff314c48", "21:00:00:24:ff:31:4c:48"));
    }

    #[test]
    fn bad_wwpns_are_refused_with_a_reason() {
        for bad in [
            "",
            "naa.123",
            "21:00:00:24:ff:31:4c",
            "21:00:00:24:ff:31:4c:4g",
            "2100:0024:ff31:4c48",
            "0000000000000000",
            "31000024ff314c48",
            "iqn.2026-11.io.lunar:x",
        ] {
            let e = parse_wwpn(bad).unwrap_err();
            assert!(
                e.contains("WWPN") || e.contains("NAA") || e.contains("zero"),
                "{bad}: {e}"
            );
        }
        assert!(Fabric::Iscsi.canonical_name("naa.21000024ff314c48").is_ok());
        assert!(Fabric::Iscsi
            .canonical_name("21:00:00:24:ff:31:4c:48")
            .is_err());
    }

    #[test]
    fn fabric_names_parse() {
        assert_eq!(Fabric::parse("FC").unwrap(), Fabric::Qla2xxx);
        assert_eq!(Fabric::parse("loopback").unwrap(), Fabric::Loopback);
        assert_eq!(Fabric::parse("iscsi").unwrap(), Fabric::Iscsi);
        assert!(Fabric::parse("srp")
            .unwrap_err()
            .to_string()
            .contains("unknown fabric"));
        assert!(!Fabric::Iscsi.is_lio() && Fabric::Qla2xxx.is_lio());
    }
}
