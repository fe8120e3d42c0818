//! LIO's configfs tree (`/sys/kernel/config/target`), written directly: no targetcli,
//! no rtslib, no Python on the appliance.
//!
//! What lunard creates, and nothing else:
//!
//! ```text
//! core/user_<hba>/<backstore>/            TCMU backstore (one per exported LUN)
//!     control    <- dev_config=lunar/<volume>,dev_size=N,hw_block_size=B,max_data_area_mb=M
//!     enable     <- 1                    (the kernel creates /dev/uioN now)
//! <fabric>/<wwn>/tpgt_1/
//!     lun/lun_<id>/<backstore> -> core/user_<hba>/<backstore>
//!     acls/<initiator>/lun_<id>/lun_<id> -> tpgt_1/lun/lun_<id>     (explicit ACLs)
//!     attrib/generate_node_acls etc.     (allow_any: demo mode, read-write)
//!     nexus      <- naa.<initiator>      (loopback only: creates the local SCSI host)
//!     enable     <- 1                    (qla2xxx only: the port starts serving)
//! ```
//!
//! configfs is not an ordinary file system: `mkdir` makes the kernel object and fills the
//! directory with attribute files, `rmdir` removes it (attribute files cannot be unlinked),
//! symlinks are the links between objects. The same code runs against a plain directory in
//! tests; there attribute files are ordinary files that `rmdir` would trip over, so when the
//! tree is not configfs (checked with `statfs`) they are deleted before the `rmdir`.

use std::io;
use std::path::{Path, PathBuf};

use crate::fabric::Fabric;

/// Backstore names lunard creates start with this, so a restart can find (and a sweep can
/// remove) its own and never touches anyone else's.
pub const BACKSTORE_PREFIX: &str = "lunar_";

/// The `dev_config` prefix of lunard's backstores: the UIO device of a backstore is named
/// `tcm-user/<hba>/<backstore>/lunar/<volume>`.
pub const DEV_CONFIG_PREFIX: &str = "lunar/";

/// What a TCMU backstore is created with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackstoreSpec {
    /// configfs name (see [`backstore_name`]).
    pub name: String,
    /// Volume name, recorded in `dev_config` for administrators (`targetcli ls` shows it).
    pub volume: String,
    /// Logical size in bytes.
    pub size_bytes: u64,
    /// Logical block size.
    pub block_size: u32,
    /// Data area per backstore, MiB.
    pub max_data_area_mb: u32,
}

/// The backstore name for LUN `lun` of the target with WWPN `wwpn`: unique per target and
/// LUN, stable across restarts, and free of characters configfs or the UIO name would
/// mangle.
pub fn backstore_name(wwpn: u64, lun: u64) -> String {
    format!("{BACKSTORE_PREFIX}{wwpn:016x}_{lun}")
}

/// Why LIO cannot export a fabric's targets on this host (lunard then serves iSCSI only).
#[derive(Debug, thiserror::Error)]
pub enum Unavailable {
    /// `target_core_mod` is not loaded (or configfs not mounted).
    #[error(
        "{} not found: configfs is not mounted or target_core_mod is not loaded (modprobe target_core_user)",
        core.display()
    )]
    NoLio {
        /// The missing `target/core` directory.
        core: PathBuf,
    },
    /// The fabric's module (or, for qla2xxx, a target-mode HBA) is missing.
    #[error("cannot create {}: {source} ({})", dir.display(), fabric_hint(*fabric))]
    NoFabric {
        /// The fabric.
        fabric: Fabric,
        /// The fabric's configfs directory.
        dir: PathBuf,
        /// Why creating it failed.
        source: std::io::Error,
    },
}

fn fabric_hint(fabric: Fabric) -> &'static str {
    match fabric {
        Fabric::Qla2xxx => {
            "load tcm_qla2xxx with a QLogic HBA in target mode (qla2xxx qlini_mode=disabled)"
        }
        _ => "load tcm_loop",
    }
}

/// LIO's configfs tree as lunard manages it.
#[derive(Clone, Debug)]
pub struct Lio {
    /// `<configfs>/target`.
    root: PathBuf,
    /// TCMU HBA index (`core/user_<hba>`).
    hba: u32,
    /// The tree is real configfs (attribute files are kernel-made).
    real: bool,
}

/// `CONFIGFS_MAGIC` from `<linux/magic.h>`.
const CONFIGFS_MAGIC: i64 = 0x6265_6570;

impl Lio {
    /// The tree under `<configfs>/target`.
    pub fn new(configfs: &Path, hba: u32) -> Lio {
        let root = configfs.join("target");
        let real = is_configfs(configfs);
        Lio { root, hba, real }
    }

    /// `<configfs>/target`.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Checks that LIO is there (`target_core_mod` loaded, which makes `target/core`).
    pub fn check(&self) -> Result<(), Unavailable> {
        let core = self.root.join("core");
        if !core.is_dir() {
            return Err(Unavailable::NoLio { core });
        }
        Ok(())
    }

    /// Makes sure `<root>/<fabric>` exists. In configfs, creating it asks the kernel to
    /// load the fabric module (`tcm_qla2xxx`, `tcm_loop`); failing means the module or,
    /// for qla2xxx, a target-mode HBA is missing.
    pub fn check_fabric(&self, fabric: Fabric) -> Result<(), Unavailable> {
        let dir = self.root.join(fabric.as_str());
        if dir.is_dir() {
            return Ok(());
        }
        mkdir(&dir).map_err(|source| Unavailable::NoFabric {
            fabric,
            dir,
            source,
        })
    }

    fn hba_dir(&self) -> PathBuf {
        self.root.join("core").join(format!("user_{}", self.hba))
    }

    /// The configfs directory of backstore `name`.
    pub fn backstore_dir(&self, name: &str) -> PathBuf {
        self.hba_dir().join(name)
    }

    /// Whether backstore `name` exists and is enabled (left by an earlier run).
    pub fn backstore_enabled(&self, name: &str) -> bool {
        std::fs::read_to_string(self.backstore_dir(name).join("enable"))
            .is_ok_and(|s| s.trim() == "1")
    }

    /// Creates and enables a TCMU backstore. The kernel registers its UIO device on enable.
    pub fn create_backstore(&self, spec: &BackstoreSpec) -> io::Result<()> {
        mkdir(&self.hba_dir())?;
        let dir = self.backstore_dir(&spec.name);
        mkdir(&dir)?;
        // One write with every option: the kernel parses comma-separated key=value pairs.
        let control = format!(
            "dev_config={DEV_CONFIG_PREFIX}{},dev_size={},hw_block_size={},max_data_area_mb={}",
            spec.volume, spec.size_bytes, spec.block_size, spec.max_data_area_mb
        );
        if let Err(e) = write_attr(&dir.join("control"), &control) {
            let _ = self.remove_dir(&dir);
            return Err(e);
        }
        if let Err(e) = write_attr(&dir.join("enable"), "1") {
            let _ = self.remove_dir(&dir);
            return Err(e);
        }
        Ok(())
    }

    /// Re-arms a backstore an earlier lunard left behind: commands queued while nobody
    /// served the ring are failed back to the initiator (who retries) and the ring starts
    /// empty. The ring is blocked around the reset so no new command lands in the middle
    /// (`action/block_dev`, `action/reset_ring`, present since Linux 4.19). Slots of an
    /// out-of-order ring may hold completions the kernel never read, so a ring is never
    /// resumed where a dead process left it.
    pub fn reset_ring(&self, name: &str) -> io::Result<()> {
        let action = self.backstore_dir(name).join("action");
        if self.real && !action.join("reset_ring").exists() {
            return Ok(());
        }
        if !self.real {
            mkdir(&action)?;
        }
        let block = action.join("block_dev");
        let blocked = (!self.real || block.exists()) && write_attr(&block, "1").is_ok();
        let r = write_attr(&action.join("reset_ring"), "1");
        if blocked {
            write_attr(&block, "0")?;
        }
        r
    }

    /// Tells LIO a backstore's new size (`attrib/dev_size`; the kernel also announces it on
    /// the TCMU netlink family).
    pub fn set_size(&self, name: &str, size_bytes: u64) -> io::Result<()> {
        if !self.real {
            mkdir(&self.backstore_dir(name).join("attrib"))?;
        }
        write_attr(
            &self.backstore_dir(name).join("attrib").join("dev_size"),
            &size_bytes.to_string(),
        )
    }

    /// Removes a backstore (it must be unlinked from every fabric LUN first).
    pub fn remove_backstore(&self, name: &str) -> io::Result<()> {
        self.remove_dir(&self.backstore_dir(name))
    }

    /// lunard's backstores in the HBA (name prefix [`BACKSTORE_PREFIX`]).
    pub fn own_backstores(&self) -> Vec<String> {
        let Ok(rd) = std::fs::read_dir(self.hba_dir()) else {
            return Vec::new();
        };
        let mut v: Vec<String> = rd
            .filter_map(|e| e.ok())
            .filter(|e| e.path().is_dir())
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| n.starts_with(BACKSTORE_PREFIX))
            .collect();
        v.sort();
        v
    }

    /// `<root>/<fabric>/<wwn>/tpgt_1`.
    pub fn tpg_dir(&self, fabric: Fabric, wwn: &str) -> PathBuf {
        self.root.join(fabric.as_str()).join(wwn).join("tpgt_1")
    }

    /// Creates the target port and its portal group (idempotent).
    pub fn create_tpg(&self, fabric: Fabric, wwn: &str) -> io::Result<()> {
        let wwn_dir = self.root.join(fabric.as_str()).join(wwn);
        mkdir(&wwn_dir)?;
        let tpg = wwn_dir.join("tpgt_1");
        mkdir(&tpg)?;
        mkdir(&tpg.join("lun"))?;
        mkdir(&tpg.join("acls"))?;
        Ok(())
    }

    /// Links backstore `backstore` as LUN `lun` of the portal group (idempotent).
    pub fn link_lun(&self, fabric: Fabric, wwn: &str, lun: u64, backstore: &str) -> io::Result<()> {
        let dir = self
            .tpg_dir(fabric, wwn)
            .join("lun")
            .join(format!("lun_{lun}"));
        mkdir(&dir)?;
        symlink(&self.backstore_dir(backstore), &dir.join(backstore))
    }

    /// The fabric LUN numbers currently linked in the portal group.
    pub fn linked_luns(&self, fabric: Fabric, wwn: &str) -> Vec<u64> {
        let Ok(rd) = std::fs::read_dir(self.tpg_dir(fabric, wwn).join("lun")) else {
            return Vec::new();
        };
        let mut v: Vec<u64> = rd
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().into_string().ok())
            .filter_map(|n| n.strip_prefix("lun_").and_then(|x| x.parse().ok()))
            .collect();
        v.sort_unstable();
        v
    }

    /// Removes LUN `lun` from the portal group: first from every ACL that maps it, then the
    /// backstore link, then the LUN itself.
    pub fn unlink_lun(&self, fabric: Fabric, wwn: &str, lun: u64) -> io::Result<()> {
        let tpg = self.tpg_dir(fabric, wwn);
        for acl in subdirs(&tpg.join("acls")) {
            let mapped = acl.join(format!("lun_{lun}"));
            if mapped.is_dir() {
                remove_links(&mapped)?;
                self.remove_dir(&mapped)?;
            }
        }
        let dir = tpg.join("lun").join(format!("lun_{lun}"));
        if !dir.exists() {
            return Ok(());
        }
        remove_links(&dir)?;
        self.remove_dir(&dir)
    }

    /// Puts the portal group's access control in place: with `allow_any`, LIO's demo mode
    /// (dynamic node ACLs for every initiator, read-write); otherwise one node ACL per
    /// initiator, each mapping every LUN in `luns`, and no demo mode. ACLs of initiators no
    /// longer listed are removed.
    pub fn set_acls(
        &self,
        fabric: Fabric,
        wwn: &str,
        allow_any: bool,
        initiators: &[String],
        luns: &[u64],
    ) -> io::Result<()> {
        let tpg = self.tpg_dir(fabric, wwn);
        let attrib = tpg.join("attrib");
        mkdir(&attrib)?;
        let on = if allow_any { "1" } else { "0" };
        write_attr(&attrib.join("generate_node_acls"), on)?;
        write_attr(&attrib.join("cache_dynamic_acls"), on)?;
        write_attr(&attrib.join("demo_mode_write_protect"), "0")?;
        let acls = tpg.join("acls");
        mkdir(&acls)?;
        let wanted: Vec<&String> = if allow_any {
            Vec::new()
        } else {
            initiators.iter().collect()
        };
        for dir in subdirs(&acls) {
            let name = dir
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or("")
                .to_string();
            if !wanted.iter().any(|w| **w == name) {
                for m in subdirs(&dir) {
                    remove_links(&m)?;
                    self.remove_dir(&m)?;
                }
                self.remove_dir(&dir)?;
            }
        }
        for ini in wanted {
            let dir = acls.join(ini);
            mkdir(&dir)?;
            for &lun in luns {
                self.map_acl_lun(fabric, wwn, ini, lun)?;
            }
        }
        Ok(())
    }

    /// Maps fabric LUN `lun` into the node ACL of `initiator` under the same number.
    pub fn map_acl_lun(
        &self,
        fabric: Fabric,
        wwn: &str,
        initiator: &str,
        lun: u64,
    ) -> io::Result<()> {
        let tpg = self.tpg_dir(fabric, wwn);
        let m = tpg.join("acls").join(initiator).join(format!("lun_{lun}"));
        mkdir(&m)?;
        symlink(
            &tpg.join("lun").join(format!("lun_{lun}")),
            &m.join(format!("lun_{lun}")),
        )
    }

    /// Node ACLs (initiator names) of the portal group.
    pub fn acl_names(&self, fabric: Fabric, wwn: &str) -> Vec<String> {
        let mut v: Vec<String> = subdirs(&self.tpg_dir(fabric, wwn).join("acls"))
            .iter()
            .filter_map(|d| d.file_name().and_then(|n| n.to_str()).map(str::to_string))
            .collect();
        v.sort();
        v
    }

    /// Loopback: creates the local SCSI host (the I_T nexus) named `initiator`; the LUNs
    /// linked in the portal group appear as local disks. Idempotent.
    pub fn set_loopback_nexus(&self, wwn: &str, initiator: &str) -> io::Result<()> {
        let p = self.tpg_dir(Fabric::Loopback, wwn).join("nexus");
        if std::fs::read_to_string(&p).is_ok_and(|s| s.trim() == initiator) {
            return Ok(());
        }
        write_attr(&p, initiator)
    }

    /// qla2xxx: lets the port serve (after its LUNs and ACLs are in place).
    pub fn enable_tpg(&self, fabric: Fabric, wwn: &str) -> io::Result<()> {
        write_attr(&self.tpg_dir(fabric, wwn).join("enable"), "1")
    }

    /// Removes the target port: every ACL, every LUN link, the portal group, the WWN.
    pub fn remove_target(&self, fabric: Fabric, wwn: &str) -> io::Result<()> {
        let tpg = self.tpg_dir(fabric, wwn);
        if tpg.exists() {
            if fabric == Fabric::Qla2xxx {
                let _ = write_attr(&tpg.join("enable"), "0");
            }
            for acl in subdirs(&tpg.join("acls")) {
                for m in subdirs(&acl) {
                    remove_links(&m)?;
                    self.remove_dir(&m)?;
                }
                self.remove_dir(&acl)?;
            }
            for lun in self.linked_luns(fabric, wwn) {
                self.unlink_lun(fabric, wwn, lun)?;
            }
            self.remove_dir(&tpg)?;
        }
        let wwn_dir = self.root.join(fabric.as_str()).join(wwn);
        if wwn_dir.exists() {
            self.remove_dir(&wwn_dir)?;
        }
        Ok(())
    }

    /// `rmdir`, after deleting the plain files a test tree has where configfs has
    /// kernel-made attributes (and the default groups `lun/`, `acls/`, `attrib/`...).
    fn remove_dir(&self, dir: &Path) -> io::Result<()> {
        if !self.real {
            clear_plain_tree(dir)?;
        }
        match std::fs::remove_dir(dir) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            r => r.map_err(|e| with_path(e, "rmdir", dir)),
        }
    }
}

/// Deletes regular files and empty-able subdirectories below `dir` (test trees only).
fn clear_plain_tree(dir: &Path) -> io::Result<()> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Ok(());
    };
    for e in rd.flatten() {
        let p = e.path();
        let ft = e.file_type()?;
        if ft.is_file() {
            std::fs::remove_file(&p)?;
        } else if ft.is_dir() {
            clear_plain_tree(&p)?;
            std::fs::remove_dir(&p).map_err(|e| with_path(e, "rmdir", &p))?;
        }
    }
    Ok(())
}

fn is_configfs(p: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c) = std::ffi::CString::new(p.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: `c` is a valid NUL-terminated path and `st` a properly sized out-parameter.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::statfs(c.as_ptr(), &mut st) };
    rc == 0 && st.f_type as i64 == CONFIGFS_MAGIC
}

fn with_path(e: io::Error, op: &str, p: &Path) -> io::Error {
    io::Error::new(e.kind(), format!("{op} {}: {e}", p.display()))
}

fn mkdir(p: &Path) -> io::Result<()> {
    match std::fs::create_dir(p) {
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        r => r.map_err(|e| with_path(e, "mkdir", p)),
    }
}

fn write_attr(p: &Path, value: &str) -> io::Result<()> {
    // configfs attributes take one write(2); no truncation or creation semantics needed,
    // but a test tree needs the file created.
    std::fs::write(p, value.as_bytes()).map_err(|e| with_path(e, "write", p))
}

fn symlink(target: &Path, link: &Path) -> io::Result<()> {
    if let Ok(existing) = std::fs::read_link(link) {
        if existing == target {
            return Ok(());
        }
        std::fs::remove_file(link).map_err(|e| with_path(e, "unlink", link))?;
    }
    std::os::unix::fs::symlink(target, link).map_err(|e| with_path(e, "symlink", link))
}

fn subdirs(dir: &Path) -> Vec<PathBuf> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    rd.flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.path())
        .collect()
}

/// Removes the symlinks directly in `dir`.
fn remove_links(dir: &Path) -> io::Result<()> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Ok(());
    };
    for e in rd.flatten() {
        if e.file_type().is_ok_and(|t| t.is_symlink()) {
            std::fs::remove_file(e.path()).map_err(|x| with_path(x, "unlink", &e.path()))?;
        }
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Every entry below `root` as `path` (directories end in `/`, files show `=content`,
    /// symlinks `-> target`, relative to `root`), sorted: the whole tree at a glance.
    pub(crate) fn tree(root: &Path) -> Vec<String> {
        fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
            let Ok(rd) = std::fs::read_dir(dir) else {
                return;
            };
            for e in rd.flatten() {
                let p = e.path();
                let rel = p.strip_prefix(root).unwrap().display().to_string();
                let ft = e.file_type().unwrap();
                if ft.is_symlink() {
                    let t = std::fs::read_link(&p).unwrap();
                    let t = t.strip_prefix(root).unwrap_or(&t).display().to_string();
                    out.push(format!("{rel} -> {t}"));
                } else if ft.is_dir() {
                    out.push(format!("{rel}/"));
                    walk(root, &p, out);
                } else {
                    out.push(format!("{rel}={}", std::fs::read_to_string(&p).unwrap()));
                }
            }
        }
        let mut v = Vec::new();
        walk(root, root, &mut v);
        v.sort();
        v
    }

    fn fake_configfs() -> (tempfile::TempDir, Lio) {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("target/core")).unwrap();
        let lio = Lio::new(d.path(), 3);
        assert!(!lio.real, "a temporary directory is not configfs");
        (d, lio)
    }

    #[test]
    fn missing_lio_is_reported_with_the_fix() {
        let d = tempfile::tempdir().unwrap();
        let e = Lio::new(d.path(), 0).check().unwrap_err().to_string();
        assert!(
            e.contains("target/core") && e.contains("target_core_user"),
            "{e}"
        );
    }

    #[test]
    fn qla2xxx_target_with_acls_is_laid_out_as_lio_expects() {
        let (d, lio) = fake_configfs();
        let wwn = "21:00:00:24:ff:31:4c:48";
        let bs = backstore_name(0x2100_0024_ff31_4c48, 2);
        assert_eq!(bs, "lunar_21000024ff314c48_2");
        lio.check().unwrap();
        lio.check_fabric(Fabric::Qla2xxx).unwrap();
        lio.create_backstore(&BackstoreSpec {
            name: bs.clone(),
            volume: "db".into(),
            size_bytes: 1 << 30,
            block_size: 512,
            max_data_area_mb: 64,
        })
        .unwrap();
        assert!(lio.backstore_enabled(&bs));
        lio.create_tpg(Fabric::Qla2xxx, wwn).unwrap();
        let inits = vec![
            "21:00:00:24:ff:31:4c:49".to_string(),
            "21:00:00:24:ff:31:4c:4a".to_string(),
        ];
        lio.set_acls(Fabric::Qla2xxx, wwn, false, &inits, &[])
            .unwrap();
        lio.link_lun(Fabric::Qla2xxx, wwn, 2, &bs).unwrap();
        for i in &inits {
            lio.map_acl_lun(Fabric::Qla2xxx, wwn, i, 2).unwrap();
        }
        lio.enable_tpg(Fabric::Qla2xxx, wwn).unwrap();
        // Idempotent: a restart redoing the same steps changes nothing.
        let before = tree(d.path());
        lio.create_tpg(Fabric::Qla2xxx, wwn).unwrap();
        lio.link_lun(Fabric::Qla2xxx, wwn, 2, &bs).unwrap();
        lio.set_acls(Fabric::Qla2xxx, wwn, false, &inits, &[2])
            .unwrap();
        assert_eq!(tree(d.path()), before);

        let t = "target/qla2xxx/21:00:00:24:ff:31:4c:48/tpgt_1";
        let expect = vec![
            "target/".to_string(),
            "target/core/".into(),
            "target/core/user_3/".into(),
            format!("target/core/user_3/{bs}/"),
            format!("target/core/user_3/{bs}/control=dev_config=lunar/db,dev_size=1073741824,hw_block_size=512,max_data_area_mb=64"),
            format!("target/core/user_3/{bs}/enable=1"),
            "target/qla2xxx/".into(),
            "target/qla2xxx/21:00:00:24:ff:31:4c:48/".into(),
            format!("{t}/"),
            format!("{t}/acls/"),
            format!("{t}/acls/21:00:00:24:ff:31:4c:49/"),
            format!("{t}/acls/21:00:00:24:ff:31:4c:49/lun_2/"),
            format!("{t}/acls/21:00:00:24:ff:31:4c:49/lun_2/lun_2 -> {t}/lun/lun_2"),
            format!("{t}/acls/21:00:00:24:ff:31:4c:4a/"),
            format!("{t}/acls/21:00:00:24:ff:31:4c:4a/lun_2/"),
            format!("{t}/acls/21:00:00:24:ff:31:4c:4a/lun_2/lun_2 -> {t}/lun/lun_2"),
            format!("{t}/attrib/"),
            format!("{t}/attrib/cache_dynamic_acls=0"),
            format!("{t}/attrib/demo_mode_write_protect=0"),
            format!("{t}/attrib/generate_node_acls=0"),
            format!("{t}/enable=1"),
            format!("{t}/lun/"),
            format!("{t}/lun/lun_2/"),
            format!("{t}/lun/lun_2/{bs} -> target/core/user_3/{bs}"),
        ];
        let mut expect = expect;
        expect.sort();
        assert_eq!(tree(d.path()), expect);

        // One initiator leaves the ACL: its node ACL goes, the other's stays.
        lio.set_acls(Fabric::Qla2xxx, wwn, false, &inits[..1], &[2])
            .unwrap();
        assert_eq!(lio.acl_names(Fabric::Qla2xxx, wwn), inits[..1].to_vec());
        // allow_any: demo mode instead of node ACLs.
        lio.set_acls(Fabric::Qla2xxx, wwn, true, &[], &[2]).unwrap();
        assert!(lio.acl_names(Fabric::Qla2xxx, wwn).is_empty());
        let attr = |n: &str| {
            std::fs::read_to_string(lio.tpg_dir(Fabric::Qla2xxx, wwn).join("attrib").join(n))
                .unwrap()
        };
        assert_eq!(attr("generate_node_acls"), "1");
        assert_eq!(attr("demo_mode_write_protect"), "0");

        // LUN removal, then the target, then the backstore: nothing of lunard's is left.
        lio.unlink_lun(Fabric::Qla2xxx, wwn, 2).unwrap();
        assert!(lio.linked_luns(Fabric::Qla2xxx, wwn).is_empty());
        lio.remove_target(Fabric::Qla2xxx, wwn).unwrap();
        lio.remove_backstore(&bs).unwrap();
        assert_eq!(
            tree(d.path()),
            vec![
                "target/",
                "target/core/",
                "target/core/user_3/",
                "target/qla2xxx/"
            ]
        );
    }

    #[test]
    fn loopback_nexus_and_foreign_backstores() {
        let (d, lio) = fake_configfs();
        let wwn = "naa.5001405000000001";
        lio.check_fabric(Fabric::Loopback).unwrap();
        lio.create_tpg(Fabric::Loopback, wwn).unwrap();
        lio.set_loopback_nexus(wwn, "naa.50014050000000fe").unwrap();
        assert_eq!(
            std::fs::read_to_string(lio.tpg_dir(Fabric::Loopback, wwn).join("nexus")).unwrap(),
            "naa.50014050000000fe"
        );
        // A backstore of tcmu-runner's in the same HBA is not lunard's.
        std::fs::create_dir_all(d.path().join("target/core/user_3/glfs_vm1")).unwrap();
        lio.create_backstore(&BackstoreSpec {
            name: backstore_name(0x5001_4050_0000_0001, 0),
            volume: "v".into(),
            size_bytes: 1 << 20,
            block_size: 4096,
            max_data_area_mb: 8,
        })
        .unwrap();
        assert_eq!(
            lio.own_backstores(),
            vec!["lunar_5001405000000001_0".to_string()]
        );
        // A backstore still linked cannot be removed on real configfs; the fabric link goes first.
        lio.link_lun(Fabric::Loopback, wwn, 0, "lunar_5001405000000001_0")
            .unwrap();
        lio.remove_target(Fabric::Loopback, wwn).unwrap();
        lio.remove_backstore("lunar_5001405000000001_0").unwrap();
        assert!(lio.own_backstores().is_empty());
        assert!(d.path().join("target/core/user_3/glfs_vm1").is_dir());
    }
}
