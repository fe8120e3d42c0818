//! The `TCM-USER` generic-netlink family: the kernel announces TCMU devices being added,
//! removed and reconfigured (new `dev_config`, `dev_size` or write cache setting) on its
//! `config` multicast group.
//!
//! lunard listens but never sends `SET_FEATURES`: without it the kernel does not wait for
//! `*_DONE` replies, so backstores work the same whether or not lunard is listening (and
//! lunard creates its backstores itself through configfs, so it knows about them
//! anyway). When the family is missing (`target_core_user` not loaded) [`Listener::open`]
//! returns [`NetlinkError::FamilyMissing`], for the caller to log once.
//!
//! Message encoding and decoding are pure functions over byte slices; only
//! [`Listener`] touches a socket.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

/// The family name.
pub const FAMILY: &str = "TCM-USER";
/// The multicast group events are sent to.
pub const GROUP: &str = "config";

/// `enum tcmu_genl_cmd`.
pub mod cmd {
    /// `TCMU_CMD_ADDED_DEVICE`: the kernel created a TCMU device (event).
    pub const ADDED_DEVICE: u8 = 1;
    /// `TCMU_CMD_REMOVED_DEVICE`: the kernel is removing a TCMU device (event).
    pub const REMOVED_DEVICE: u8 = 2;
    /// `TCMU_CMD_RECONFIG_DEVICE`: `dev_config`, `dev_size` or the write cache setting
    /// of a device changed (event).
    pub const RECONFIG_DEVICE: u8 = 3;
    /// `TCMU_CMD_ADDED_DEVICE_DONE`: userspace's reply to `ADDED_DEVICE` (only awaited
    /// after `SET_FEATURES`; lunard never sends it).
    pub const ADDED_DEVICE_DONE: u8 = 4;
    /// `TCMU_CMD_REMOVED_DEVICE_DONE`: userspace's reply to `REMOVED_DEVICE`.
    pub const REMOVED_DEVICE_DONE: u8 = 5;
    /// `TCMU_CMD_RECONFIG_DEVICE_DONE`: userspace's reply to `RECONFIG_DEVICE`.
    pub const RECONFIG_DEVICE_DONE: u8 = 6;
    /// `TCMU_CMD_SET_FEATURES`: userspace asks the kernel to wait for `*_DONE` replies.
    pub const SET_FEATURES: u8 = 7;
}

/// `enum tcmu_genl_attr`.
pub mod attr {
    /// `TCMU_ATTR_DEVICE` (string): the device's UIO name.
    pub const DEVICE: u16 = 1;
    /// `TCMU_ATTR_MINOR` (u32): the UIO minor, `/dev/uio<minor>`.
    pub const MINOR: u16 = 2;
    /// `TCMU_ATTR_PAD`: padding so a following u64 attribute is 8-byte aligned.
    pub const PAD: u16 = 3;
    /// `TCMU_ATTR_DEV_CFG` (string): the new `dev_config` of a reconfiguration.
    pub const DEV_CFG: u16 = 4;
    /// `TCMU_ATTR_DEV_SIZE` (u64): the new device size in bytes of a reconfiguration.
    pub const DEV_SIZE: u16 = 5;
    /// `TCMU_ATTR_WRITECACHE` (u8): the new write cache setting of a reconfiguration.
    pub const WRITECACHE: u16 = 6;
    /// `TCMU_ATTR_CMD_STATUS` (s32): the result userspace reports in a `*_DONE` reply.
    pub const CMD_STATUS: u16 = 7;
    /// `TCMU_ATTR_DEVICE_ID` (u32): LIO's index of the device.
    pub const DEVICE_ID: u16 = 8;
    /// `TCMU_ATTR_SUPP_KERN_CMD_REPLY` (u8): in `SET_FEATURES`, whether userspace sends
    /// `*_DONE` replies.
    pub const SUPP_KERN_CMD_REPLY: u16 = 9;
}

// Netlink and generic-netlink constants (linux/netlink.h, linux/genetlink.h).
const NLMSG_HDRLEN: usize = 16;
const GENL_HDRLEN: usize = 4;
const NLA_HDRLEN: usize = 4;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLM_F_REQUEST: u16 = 1;
const GENL_ID_CTRL: u16 = 0x10;
const CTRL_CMD_NEWFAMILY: u8 = 1;
const CTRL_CMD_GETFAMILY: u8 = 3;
const CTRL_ATTR_FAMILY_ID: u16 = 1;
const CTRL_ATTR_FAMILY_NAME: u16 = 2;
const CTRL_ATTR_MCAST_GROUPS: u16 = 7;
const CTRL_ATTR_MCAST_GRP_NAME: u16 = 1;
const CTRL_ATTR_MCAST_GRP_ID: u16 = 2;
const NLA_TYPE_MASK: u16 = 0x3fff;
const SOL_NETLINK: libc::c_int = 270;
const NETLINK_ADD_MEMBERSHIP: libc::c_int = 1;

/// Netlink trouble.
#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    /// The kernel knows no `TCM-USER` family: `target_core_user` is not loaded.
    #[error("the TCM-USER netlink family does not exist (is target_core_user loaded?)")]
    FamilyMissing,
    /// The family exists but has no [`GROUP`] multicast group.
    #[error("the TCM-USER family has no \"config\" multicast group")]
    GroupMissing,
    /// A message or attribute whose lengths or contents do not add up (what is wrong).
    #[error("malformed netlink message: {0}")]
    Malformed(String),
    /// The kernel answered with `NLMSG_ERROR` (the errno, made positive).
    #[error("netlink error {0}")]
    Kernel(i32),
    /// The socket failed.
    #[error("netlink socket: {0}")]
    Io(#[from] io::Error),
}

/// The device an event is about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventDevice {
    /// The UIO name, `tcm-user/<hba>/<name>[/<dev_config>]` (see [`super::uio::parse_name`]).
    pub uio_name: String,
    /// The UIO minor: the device is `/dev/uio<minor>`.
    pub minor: u32,
    /// LIO's device index, if sent.
    pub device_id: Option<u32>,
}

/// What a reconfiguration changes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reconfig {
    /// A new `dev_config` string (`TCMU_ATTR_DEV_CFG`).
    DevConfig(String),
    /// A new size in bytes (`TCMU_ATTR_DEV_SIZE`).
    DevSize(u64),
    /// The write cache was turned on or off (`TCMU_ATTR_WRITECACHE`).
    WriteCache(bool),
    /// None of the above attributes was present.
    Unknown,
}

/// A decoded event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TcmuEvent {
    /// `TCMU_CMD_ADDED_DEVICE`: a device appeared.
    Added(EventDevice),
    /// `TCMU_CMD_REMOVED_DEVICE`: a device is going away.
    Removed(EventDevice),
    /// `TCMU_CMD_RECONFIG_DEVICE`: a device's configuration changed, and how.
    Reconfigured(EventDevice, Reconfig),
}

/// A netlink attribute: type (flags masked off) and payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Attr<'a> {
    /// `nla_type` without the nested / byte-order flags.
    pub kind: u16,
    /// The payload, without the `nlattr` header and padding.
    pub data: &'a [u8],
}

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// Splits an attribute stream. Fails on a length that points outside the buffer.
pub fn attrs(mut b: &[u8]) -> Result<Vec<Attr<'_>>, NetlinkError> {
    let mut out = Vec::new();
    while b.len() >= NLA_HDRLEN {
        let len = usize::from(u16::from_ne_bytes([b[0], b[1]]));
        let kind = u16::from_ne_bytes([b[2], b[3]]) & NLA_TYPE_MASK;
        if len < NLA_HDRLEN || len > b.len() {
            return Err(NetlinkError::Malformed(format!(
                "attribute length {len} with {} bytes left",
                b.len()
            )));
        }
        out.push(Attr {
            kind,
            data: &b[NLA_HDRLEN..len],
        });
        b = &b[align4(len).min(b.len())..];
    }
    Ok(out)
}

/// Appends one attribute.
pub fn put_attr(buf: &mut Vec<u8>, kind: u16, data: &[u8]) {
    let len = NLA_HDRLEN + data.len();
    buf.extend_from_slice(&(len as u16).to_ne_bytes());
    buf.extend_from_slice(&kind.to_ne_bytes());
    buf.extend_from_slice(data);
    buf.resize(align4(buf.len()), 0);
}

/// A netlink message: header fields and payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Msg<'a> {
    /// `nlmsg_type`: the generic-netlink family id, or `NLMSG_ERROR` / `NLMSG_DONE`.
    pub kind: u16,
    /// `nlmsg_flags` (`NLM_F_*`).
    pub flags: u16,
    /// `nlmsg_seq`: matches a reply to its request.
    pub seq: u32,
    /// Everything after the `nlmsghdr`.
    pub payload: &'a [u8],
}

/// Splits a datagram into netlink messages.
pub fn messages(mut b: &[u8]) -> Result<Vec<Msg<'_>>, NetlinkError> {
    let mut out = Vec::new();
    while b.len() >= NLMSG_HDRLEN {
        let len = u32::from_ne_bytes([b[0], b[1], b[2], b[3]]) as usize;
        if len < NLMSG_HDRLEN || len > b.len() {
            return Err(NetlinkError::Malformed(format!(
                "message length {len} with {} bytes left",
                b.len()
            )));
        }
        out.push(Msg {
            kind: u16::from_ne_bytes([b[4], b[5]]),
            flags: u16::from_ne_bytes([b[6], b[7]]),
            seq: u32::from_ne_bytes([b[8], b[9], b[10], b[11]]),
            payload: &b[NLMSG_HDRLEN..len],
        });
        b = &b[align4(len).min(b.len())..];
    }
    Ok(out)
}

/// Builds a generic-netlink message.
pub fn genl_message(
    family: u16,
    flags: u16,
    seq: u32,
    genl_cmd: u8,
    version: u8,
    attrs: &[u8],
) -> Vec<u8> {
    let len = NLMSG_HDRLEN + GENL_HDRLEN + attrs.len();
    let mut b = Vec::with_capacity(len);
    b.extend_from_slice(&(len as u32).to_ne_bytes());
    b.extend_from_slice(&family.to_ne_bytes());
    b.extend_from_slice(&flags.to_ne_bytes());
    b.extend_from_slice(&seq.to_ne_bytes());
    b.extend_from_slice(&0u32.to_ne_bytes());
    b.extend_from_slice(&[genl_cmd, version, 0, 0]);
    b.extend_from_slice(attrs);
    b
}

/// CTRL_CMD_GETFAMILY for `name`.
pub fn get_family_request(seq: u32, name: &str) -> Vec<u8> {
    let mut a = Vec::new();
    let mut z = name.as_bytes().to_vec();
    z.push(0);
    put_attr(&mut a, CTRL_ATTR_FAMILY_NAME, &z);
    genl_message(GENL_ID_CTRL, NLM_F_REQUEST, seq, CTRL_CMD_GETFAMILY, 1, &a)
}

/// A resolved family.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Family {
    /// The family id: the `nlmsg_type` of its messages.
    pub id: u16,
    /// Multicast groups: name and id.
    pub groups: Vec<(String, u32)>,
}

fn c_string(b: &[u8]) -> String {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..end]).into_owned()
}

fn u32_of(b: &[u8]) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(..4)?.try_into().ok()?))
}

/// Decodes the controller's answer to [`get_family_request`]: the family, or
/// [`NetlinkError::FamilyMissing`] for ENOENT.
pub fn parse_family_reply(datagram: &[u8]) -> Result<Family, NetlinkError> {
    for m in messages(datagram)? {
        match m.kind {
            NLMSG_ERROR => {
                let errno = m
                    .payload
                    .get(..4)
                    .map(|b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
                    .ok_or_else(|| NetlinkError::Malformed("short NLMSG_ERROR".into()))?;
                if errno == 0 {
                    continue; // an ACK
                }
                if -errno == libc::ENOENT {
                    return Err(NetlinkError::FamilyMissing);
                }
                return Err(NetlinkError::Kernel(-errno));
            }
            GENL_ID_CTRL => {
                let Some(body) = m.payload.get(GENL_HDRLEN..) else {
                    return Err(NetlinkError::Malformed("short genetlink header".into()));
                };
                if m.payload[0] != CTRL_CMD_NEWFAMILY {
                    continue;
                }
                let mut id = None;
                let mut groups = Vec::new();
                for a in attrs(body)? {
                    match a.kind {
                        CTRL_ATTR_FAMILY_ID => {
                            id = a.data.get(..2).map(|b| u16::from_ne_bytes([b[0], b[1]]))
                        }
                        CTRL_ATTR_MCAST_GROUPS => {
                            for g in attrs(a.data)? {
                                let mut name = None;
                                let mut gid = None;
                                for f in attrs(g.data)? {
                                    match f.kind {
                                        CTRL_ATTR_MCAST_GRP_NAME => name = Some(c_string(f.data)),
                                        CTRL_ATTR_MCAST_GRP_ID => gid = u32_of(f.data),
                                        _ => {}
                                    }
                                }
                                if let (Some(n), Some(i)) = (name, gid) {
                                    groups.push((n, i));
                                }
                            }
                        }
                        _ => {}
                    }
                }
                let id = id.ok_or_else(|| NetlinkError::Malformed("no family id".into()))?;
                return Ok(Family { id, groups });
            }
            _ => {}
        }
    }
    Err(NetlinkError::Malformed("no family in the reply".into()))
}

/// Decodes one message of the TCM-USER family (`family` is its resolved id). `Ok(None)`
/// for messages that are not events (other families, `*_DONE`, `SET_FEATURES`).
pub fn parse_event(m: &Msg<'_>, family: u16) -> Result<Option<TcmuEvent>, NetlinkError> {
    if m.kind != family {
        return Ok(None);
    }
    let Some(body) = m.payload.get(GENL_HDRLEN..) else {
        return Err(NetlinkError::Malformed("short genetlink header".into()));
    };
    let genl_cmd = m.payload[0];
    if !matches!(
        genl_cmd,
        cmd::ADDED_DEVICE | cmd::REMOVED_DEVICE | cmd::RECONFIG_DEVICE
    ) {
        return Ok(None);
    }
    let mut name = None;
    let mut minor = None;
    let mut device_id = None;
    let mut change = Reconfig::Unknown;
    for a in attrs(body)? {
        match a.kind {
            attr::DEVICE => name = Some(c_string(a.data)),
            attr::MINOR => minor = u32_of(a.data),
            attr::DEVICE_ID => device_id = u32_of(a.data),
            attr::DEV_CFG => change = Reconfig::DevConfig(c_string(a.data)),
            attr::DEV_SIZE => {
                let v = a
                    .data
                    .get(..8)
                    .and_then(|b| b.try_into().ok())
                    .map(u64::from_ne_bytes)
                    .ok_or_else(|| NetlinkError::Malformed("short DEV_SIZE".into()))?;
                change = Reconfig::DevSize(v);
            }
            attr::WRITECACHE => {
                change = Reconfig::WriteCache(a.data.first().copied().unwrap_or(0) != 0)
            }
            _ => {}
        }
    }
    let dev = EventDevice {
        uio_name: name.ok_or_else(|| NetlinkError::Malformed("event without DEVICE".into()))?,
        minor: minor.ok_or_else(|| NetlinkError::Malformed("event without MINOR".into()))?,
        device_id,
    };
    Ok(Some(match genl_cmd {
        cmd::ADDED_DEVICE => TcmuEvent::Added(dev),
        cmd::REMOVED_DEVICE => TcmuEvent::Removed(dev),
        _ => TcmuEvent::Reconfigured(dev, change),
    }))
}

/// A socket subscribed to the TCM-USER `config` group.
pub struct Listener {
    fd: AsyncFd<OwnedFd>,
    family: u16,
    buf: Vec<u8>,
    pending: std::collections::VecDeque<TcmuEvent>,
}

fn check(rc: libc::c_int) -> io::Result<libc::c_int> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

impl Listener {
    /// Resolves the family, joins its `config` group. Must be called inside a tokio
    /// runtime (the socket is registered with it). Blocks briefly for the controller's
    /// answer.
    pub fn open() -> Result<Self, NetlinkError> {
        // SAFETY: plain socket(2) call; the result is checked and owned right away.
        let raw = check(unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::NETLINK_GENERIC,
            )
        })?;
        // SAFETY: `raw` is a fresh, valid fd nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: sockaddr_nl is plain data; zeroed is its "any" address.
        let mut sa: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        sa.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        // SAFETY: `sa` is a valid sockaddr_nl of the size passed.
        check(unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&sa as *const libc::sockaddr_nl).cast(),
                std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        })?;
        let req = get_family_request(1, FAMILY);
        // SAFETY: sends `req` (valid for its length) to the kernel (`sa`, pid 0) on a
        // valid fd.
        check(unsafe {
            libc::sendto(
                fd.as_raw_fd(),
                req.as_ptr().cast(),
                req.len(),
                0,
                (&sa as *const libc::sockaddr_nl).cast(),
                std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            ) as libc::c_int
        })?;
        let mut buf = vec![0u8; 16384];
        let n = recv(&fd, &mut buf, 0)?;
        let fam = parse_family_reply(&buf[..n])?;
        let group = fam
            .groups
            .iter()
            .find(|(n, _)| n == GROUP)
            .map(|(_, id)| *id)
            .ok_or(NetlinkError::GroupMissing)?;
        // SAFETY: setsockopt with a u32 option value of the size passed.
        check(unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                SOL_NETLINK,
                NETLINK_ADD_MEMBERSHIP,
                (&group as *const u32).cast(),
                std::mem::size_of::<u32>() as libc::socklen_t,
            )
        })?;
        // SAFETY: fcntl on a valid fd.
        let fl = check(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFL) })?;
        // SAFETY: as above.
        check(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, fl | libc::O_NONBLOCK) })?;
        tracing::debug!(
            family = fam.id,
            group,
            "listening to TCM-USER netlink events"
        );
        Ok(Self {
            // SAFETY: the AsyncFd owns the OwnedFd, which stays open and keeps returning the
            // same descriptor from as_raw_fd until the AsyncFd is dropped.
            fd: unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }
                .map_err(io::Error::from)?,
            family: fam.id,
            buf,
            pending: Default::default(),
        })
    }

    /// The next event. Undecodable messages are logged and skipped.
    pub async fn next(&mut self) -> Result<TcmuEvent, NetlinkError> {
        loop {
            if let Some(e) = self.pending.pop_front() {
                return Ok(e);
            }
            let mut guard = self.fd.readable().await?;
            let buf = &mut self.buf;
            let n = match guard.try_io(|fd| recv(fd.get_ref(), buf, libc::MSG_DONTWAIT)) {
                Ok(r) => r?,
                Err(_would_block) => continue,
            };
            match messages(&self.buf[..n]) {
                Ok(ms) => {
                    for m in ms {
                        if m.kind == NLMSG_DONE || m.kind == NLMSG_ERROR {
                            continue;
                        }
                        match parse_event(&m, self.family) {
                            Ok(Some(e)) => self.pending.push_back(e),
                            Ok(None) => {}
                            Err(e) => tracing::warn!(error = %e, "undecodable TCM-USER event"),
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %e, "undecodable netlink datagram"),
            }
        }
    }
}

fn recv(fd: &OwnedFd, buf: &mut [u8], flags: libc::c_int) -> io::Result<usize> {
    // SAFETY: receives into `buf`, valid for its length, from a valid fd.
    let n = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), flags) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nested(kind: u16, inner: &[u8]) -> Vec<u8> {
        let mut b = Vec::new();
        put_attr(&mut b, kind | 0x8000, inner);
        b
    }

    #[test]
    fn get_family_request_bytes() {
        let m = get_family_request(7, "TCM-USER");
        // nlmsghdr(16) + genlmsghdr(4) + attr(4 + "TCM-USER\0" = 13, padded to 16)
        assert_eq!(m.len(), 36);
        assert_eq!(u32::from_ne_bytes(m[0..4].try_into().unwrap()), 36);
        assert_eq!(
            u16::from_ne_bytes(m[4..6].try_into().unwrap()),
            GENL_ID_CTRL
        );
        assert_eq!(
            u16::from_ne_bytes(m[6..8].try_into().unwrap()),
            NLM_F_REQUEST
        );
        assert_eq!(u32::from_ne_bytes(m[8..12].try_into().unwrap()), 7);
        assert_eq!(&m[16..20], &[CTRL_CMD_GETFAMILY, 1, 0, 0]);
        assert_eq!(u16::from_ne_bytes(m[20..22].try_into().unwrap()), 13);
        assert_eq!(
            u16::from_ne_bytes(m[22..24].try_into().unwrap()),
            CTRL_ATTR_FAMILY_NAME
        );
        assert_eq!(&m[24..33], b"TCM-USER\0");
        assert_eq!(&m[33..36], &[0, 0, 0]);
    }

    fn family_reply(id: u16, groups: &[(&str, u32)]) -> Vec<u8> {
        let mut a = Vec::new();
        put_attr(&mut a, CTRL_ATTR_FAMILY_ID, &id.to_ne_bytes());
        put_attr(&mut a, CTRL_ATTR_FAMILY_NAME, b"TCM-USER\0");
        let mut gs = Vec::new();
        for (i, (n, gid)) in groups.iter().enumerate() {
            let mut g = Vec::new();
            put_attr(&mut g, CTRL_ATTR_MCAST_GRP_ID, &gid.to_ne_bytes());
            let mut z = n.as_bytes().to_vec();
            z.push(0);
            put_attr(&mut g, CTRL_ATTR_MCAST_GRP_NAME, &z);
            gs.extend(nested(i as u16 + 1, &g));
        }
        a.extend(nested(CTRL_ATTR_MCAST_GROUPS, &gs));
        genl_message(GENL_ID_CTRL, 0, 1, CTRL_CMD_NEWFAMILY, 2, &a)
    }

    #[test]
    fn family_reply_decodes() {
        let f = parse_family_reply(&family_reply(0x1f, &[("config", 9)])).unwrap();
        assert_eq!(f.id, 0x1f);
        assert_eq!(f.groups, vec![("config".to_string(), 9)]);
    }

    #[test]
    fn missing_family_is_enoent() {
        let mut err = (-libc::ENOENT).to_ne_bytes().to_vec();
        err.extend_from_slice(&get_family_request(1, FAMILY)[..16]);
        let mut m = Vec::new();
        m.extend_from_slice(&((16 + err.len()) as u32).to_ne_bytes());
        m.extend_from_slice(&NLMSG_ERROR.to_ne_bytes());
        m.extend_from_slice(&[0; 10]);
        m.extend_from_slice(&err);
        assert!(matches!(
            parse_family_reply(&m),
            Err(NetlinkError::FamilyMissing)
        ));
        m[16..20].copy_from_slice(&(-libc::EPERM).to_ne_bytes());
        assert!(matches!(parse_family_reply(&m), Err(NetlinkError::Kernel(e)) if e == libc::EPERM));
    }

    fn event(family: u16, c: u8, extra: &[(u16, Vec<u8>)]) -> Vec<u8> {
        let mut a = Vec::new();
        put_attr(&mut a, attr::DEVICE, b"tcm-user/1/lun0/lunard/vol0\0");
        put_attr(&mut a, attr::MINOR, &3u32.to_ne_bytes());
        put_attr(&mut a, attr::DEVICE_ID, &12u32.to_ne_bytes());
        for (k, v) in extra {
            put_attr(&mut a, *k, v);
        }
        genl_message(family, 0, 0, c, 2, &a)
    }

    fn decode(b: &[u8], family: u16) -> Option<TcmuEvent> {
        let ms = messages(b).unwrap();
        assert_eq!(ms.len(), 1);
        parse_event(&ms[0], family).unwrap()
    }

    #[test]
    fn events_decode() {
        let dev = EventDevice {
            uio_name: "tcm-user/1/lun0/lunard/vol0".into(),
            minor: 3,
            device_id: Some(12),
        };
        assert_eq!(
            decode(&event(0x20, cmd::ADDED_DEVICE, &[]), 0x20),
            Some(TcmuEvent::Added(dev.clone()))
        );
        assert_eq!(
            decode(&event(0x20, cmd::REMOVED_DEVICE, &[]), 0x20),
            Some(TcmuEvent::Removed(dev.clone()))
        );
        // DEV_SIZE comes as a 64-bit attribute (possibly after a PAD attribute).
        let size = event(
            0x20,
            cmd::RECONFIG_DEVICE,
            &[
                (attr::PAD, vec![]),
                (attr::DEV_SIZE, (8u64 << 30).to_ne_bytes().to_vec()),
            ],
        );
        assert_eq!(
            decode(&size, 0x20),
            Some(TcmuEvent::Reconfigured(
                dev.clone(),
                Reconfig::DevSize(8 << 30)
            ))
        );
        let cfg = event(
            0x20,
            cmd::RECONFIG_DEVICE,
            &[(attr::DEV_CFG, b"lunard/vol1\0".to_vec())],
        );
        assert_eq!(
            decode(&cfg, 0x20),
            Some(TcmuEvent::Reconfigured(
                dev.clone(),
                Reconfig::DevConfig("lunard/vol1".into())
            ))
        );
        let wc = event(0x20, cmd::RECONFIG_DEVICE, &[(attr::WRITECACHE, vec![1])]);
        assert_eq!(
            decode(&wc, 0x20),
            Some(TcmuEvent::Reconfigured(dev, Reconfig::WriteCache(true)))
        );
        // Another family, or a *_DONE reply, is not an event.
        assert_eq!(decode(&event(0x21, cmd::ADDED_DEVICE, &[]), 0x20), None);
        assert_eq!(
            decode(&event(0x20, cmd::ADDED_DEVICE_DONE, &[]), 0x20),
            None
        );
    }

    #[test]
    fn malformed_input_is_an_error_not_a_panic() {
        let good = event(0x20, cmd::ADDED_DEVICE, &[]);
        // Truncated anywhere: either fewer messages or an error, never a panic.
        for cut in 0..good.len() {
            if let Ok(ms) = messages(&good[..cut]) {
                for m in ms {
                    let _ = parse_event(&m, 0x20);
                }
            }
        }
        // An attribute length pointing past the end.
        let mut bad = good.clone();
        bad[20..22].copy_from_slice(&200u16.to_ne_bytes());
        let ms = messages(&bad).unwrap();
        assert!(parse_event(&ms[0], 0x20).is_err());
        // A message without DEVICE.
        let m = genl_message(0x20, 0, 0, cmd::ADDED_DEVICE, 2, &[]);
        assert!(parse_event(&messages(&m).unwrap()[0], 0x20).is_err());
        assert!(messages(&[0xff; 20]).is_err());
    }

    /// The real socket path against this machine's kernel: the family resolves (module
    /// loaded) or is reported missing, the one error the daemon logs and moves on from.
    #[tokio::test]
    async fn listener_resolves_the_family_or_says_it_is_missing() {
        match Listener::open() {
            Ok(l) => assert_ne!(l.family, 0),
            Err(NetlinkError::FamilyMissing) => {}
            Err(NetlinkError::Io(e)) if e.raw_os_error() == Some(libc::EAFNOSUPPORT) => {
                eprintln!("no AF_NETLINK here: {e}")
            }
            Err(e) => panic!("unexpected: {e}"),
        }
    }
}
