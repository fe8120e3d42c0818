//! `lunarctl cg ...`: consistency groups, LUNs of one pool snapshotted at one instant
//! (docs/admin-api.md, "Consistency groups").

use clap::Subcommand;
use target_daemon::admin::proto::{Deleted, Request};
use target_daemon::lunmgr::groups::ConsistencyGroupView;
use target_daemon::lunmgr::SnapshotView;

use super::{decode, table, Client, Out, Shown};

#[derive(Debug, Subcommand)]
pub(crate) enum CgCmd {
    /// Create consistency group NAME of the LUNs given with --lun (all in one pool).
    Create {
        /// Group name.
        name: String,
        /// A member LUN (repeat for each).
        #[arg(long = "lun", required = true)]
        luns: Vec<String>,
    },
    /// The consistency groups and their members.
    List,
    /// Delete consistency group NAME (its LUNs and snapshots stay).
    Delete {
        /// Group name.
        name: String,
    },
    /// Snapshot every member of group NAME as SNAP, at one instant.
    Snapshot {
        /// Group name.
        name: String,
        /// Snapshot name (each member's snapshot gets it).
        snap: String,
    },
}

fn print_groups(w: Out<'_>, groups: &[ConsistencyGroupView]) -> std::io::Result<()> {
    let rows = groups
        .iter()
        .map(|g| vec![g.name.clone(), g.pool.clone(), g.members.join(",")])
        .collect();
    table(w, &["NAME", "POOL", "MEMBERS"], rows)
}

pub(crate) fn run(cmd: CgCmd, c: &mut Client) -> anyhow::Result<Shown> {
    Ok(match cmd {
        CgCmd::Create { name, luns } => {
            let v = c.call(Request::CgCreate { name, luns })?;
            let g: ConsistencyGroupView = decode(&v)?;
            Shown::line(
                v,
                format!(
                    "created consistency group {} ({}) in pool {}",
                    g.name,
                    g.members.join(", "),
                    g.pool
                ),
            )
        }
        CgCmd::List => Shown::list(c.call(Request::CgList)?, print_groups),
        CgCmd::Delete { name } => {
            let v = c.call(Request::CgDelete { name })?;
            let d: Deleted = decode(&v)?;
            Shown::line(v, format!("deleted consistency group {}", d.deleted))
        }
        CgCmd::Snapshot { name, snap } => {
            let v = c.call(Request::CgSnapshot {
                name,
                snapshot: snap,
            })?;
            let snaps: Vec<SnapshotView> = decode(&v)?;
            let text = snaps
                .iter()
                .map(|s| format!("{}@{}", s.lun, s.name))
                .collect::<Vec<_>>()
                .join(", ");
            Shown::line(v, format!("created {text}"))
        }
    })
}
