//! Binding the admin Unix socket so that it is never reachable with a looser mode than 0600.
//!
//! `bind(2)` creates the socket file with mode `0777 & !umask`, and a socket has no file
//! descriptor to `fchmod` before it is bound, so `bind` then `chmod` leaves a moment in which
//! anyone the umask lets through (with the usual 022: every local user) may connect and
//! manage lunard. Setting the umask around `bind` does not work either: the umask is
//! process-wide, and lunard has other threads creating files at the same time (the pool, the
//! state file) that would inherit the temporary value, or set it back under us.
//!
//! So the socket is bound where nobody else can reach it: in a fresh directory created with
//! mode 0700 next to the final path (connecting needs search permission on every directory
//! of the path). There it gets mode 0600, and only then is it renamed to the final path.
//! `rename(2)` is atomic and keeps the inode, so the listening socket keeps working and the
//! name appears with its final mode; it also replaces a stale socket left by a crashed run
//! in one step. The empty private directory is removed afterwards.

use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::Context;

/// Mode of the admin socket: only lunard's user may connect.
pub const SOCKET_MODE: u32 = 0o600;

/// Binds a listening Unix socket at `path` with mode [`SOCKET_MODE`] from the moment the path
/// exists (see the module comment). An existing file at `path` (a stale socket) is replaced.
pub fn bind_private(path: &Path) -> anyhow::Result<tokio::net::UnixListener> {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let private = private_dir(&parent)?;
    let result = bind_in(&private, path);
    // Empty after a successful rename; on failure it may still hold the socket.
    let _ = std::fs::remove_file(private.join("s"));
    let _ = std::fs::remove_dir(&private);
    result
}

/// Creates a new directory with mode 0700 in `parent` (a short name: socket paths are
/// limited to 108 bytes).
fn private_dir(parent: &Path) -> anyhow::Result<PathBuf> {
    let mut last = None;
    for _ in 0..16 {
        let dir = parent.join(format!(".s{:06x}", rand::random::<u32>() & 0xff_ffff));
        match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => {
                // The umask can only have removed bits; make sure the owner can enter it.
                std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))
                    .with_context(|| format!("cannot set mode 0700 on {}", dir.display()))?;
                return Ok(dir);
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => last = Some(e),
            Err(e) => {
                return Err(e).with_context(|| {
                    format!("cannot create a private directory in {}", parent.display())
                })
            }
        }
    }
    Err(anyhow::anyhow!(
        "cannot create a private directory in {}: {}",
        parent.display(),
        last.map_or_else(String::new, |e| e.to_string())
    ))
}

fn bind_in(private: &Path, path: &Path) -> anyhow::Result<tokio::net::UnixListener> {
    let tmp = private.join("s");
    let listener = std::os::unix::net::UnixListener::bind(&tmp)
        .with_context(|| format!("cannot bind the admin socket {}", path.display()))?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(SOCKET_MODE))
        .with_context(|| format!("cannot set mode 0600 on {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| {
        format!(
            "cannot move the admin socket into place at {}",
            path.display()
        )
    })?;
    listener.set_nonblocking(true)?;
    tokio::net::UnixListener::from_std(listener)
        .with_context(|| format!("cannot listen on {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileTypeExt;

    #[tokio::test]
    async fn the_socket_has_mode_0600_replaces_a_stale_one_and_leaves_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("admin.sock");
        std::fs::write(&path, b"stale").unwrap();
        let l = bind_private(&path).unwrap();
        let meta = std::fs::metadata(&path).unwrap();
        assert!(meta.file_type().is_socket());
        assert_eq!(meta.permissions().mode() & 0o7777, SOCKET_MODE);
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("admin.sock")]);
        // Reachable under its final name.
        let (c, a) = tokio::join!(tokio::net::UnixStream::connect(&path), l.accept());
        c.unwrap();
        a.unwrap();
    }

    #[tokio::test]
    async fn a_failed_bind_leaves_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        // The final name is a non-empty directory: the rename fails.
        let path = dir.path().join("admin.sock");
        std::fs::create_dir(&path).unwrap();
        std::fs::write(path.join("x"), b"").unwrap();
        let e = bind_private(&path).unwrap_err();
        assert!(
            format!("{e:#}").contains("cannot move the admin socket"),
            "{e:#}"
        );
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
