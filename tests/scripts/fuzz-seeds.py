#!/usr/bin/env python3
"""Writes the hand-made seed inputs of every fuzz target into its corpus directory.

The seeds are committed (scsi-proto/fuzz/corpus/<target>/seed-*, target-daemon/fuzz/corpus/
<target>/seed-*); rerun this after changing one. A seed is one small valid input of the
target's format, so the fuzzer starts from the shapes that reach deep code (a login that
completes, a REGISTER with SPEC_I_PT, an XCOPY with two targets and a segment...) instead
of having to discover every length field by chance. Inputs the fuzzer finds are merged
beside them under their SHA-1 names (tests/scripts/fuzz.sh with LUNAR_FUZZ_MERGE=1).

Usage: python3 tests/scripts/fuzz-seeds.py
"""

import os
import struct
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCSI = os.path.join(ROOT, "scsi-proto", "fuzz", "corpus")
DAEMON = os.path.join(ROOT, "target-daemon", "fuzz", "corpus")


def write(base, target, name, data):
    d = os.path.join(base, target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, "seed-" + name), "wb") as f:
        f.write(data)


def be16(v):
    return struct.pack(">H", v)


def be32(v):
    return struct.pack(">I", v)


def be64(v):
    return struct.pack(">Q", v)


def pad4(b):
    return b + b"\0" * (-len(b) % 4)


# --- iSCSI ---------------------------------------------------------------------------------

def text(pairs):
    return b"".join(f"{k}={v}".encode() + b"\0" for k, v in pairs)


def pdu(opcode, flags, data=b"", specific=b"", lun=0, itt=1):
    """A 48-byte BHS (RFC 7143 11.2) plus the padded data segment; `specific` fills bytes
    20..47 (opcode-specific fields)."""
    bhs = bytes([opcode, flags, 0, 0, 0]) + len(data).to_bytes(3, "big")
    bhs += be64(lun) + be32(itt)
    bhs += specific.ljust(28, b"\0")
    assert len(bhs) == 48
    return bhs + pad4(data)


def login(csg, nsg, transit, pairs, tsih=0, cmdsn=1):
    flags = (0x80 if transit else 0) | (csg << 2) | nsg
    isid = bytes([0x80, 0, 0x23, 0xD0, 0, 1])
    # Byte 2/3: version max/min (0); bytes 8..13 ISID, 14..15 TSIH (in place of the LUN).
    bhs = bytes([0x43, flags, 0, 0, 0])
    data = text(pairs)
    bhs += len(data).to_bytes(3, "big") + isid + be16(tsih) + be32(1)
    bhs += be16(0) + be16(0) + be32(cmdsn) + be32(0)
    bhs = bhs.ljust(48, b"\0")
    return bhs + pad4(data)


INITIATOR = "iqn.1993-08.org.debian:01:0123456789ab"
TARGET = "iqn.2026-11.io.lunar:demo"

LOGIN_NORMAL = login(1, 3, True, [
    ("InitiatorName", INITIATOR), ("SessionType", "Normal"), ("TargetName", TARGET),
    ("HeaderDigest", "None"), ("DataDigest", "None"), ("MaxRecvDataSegmentLength", "262144"),
    ("ImmediateData", "Yes"), ("InitialR2T", "Yes"), ("MaxBurstLength", "1048576"),
    ("FirstBurstLength", "262144"), ("ErrorRecoveryLevel", "0"),
])
LOGIN_SECURITY = login(0, 1, True, [
    ("InitiatorName", INITIATOR), ("SessionType", "Normal"), ("TargetName", TARGET),
    ("AuthMethod", "None"),
]) + login(1, 3, True, [("HeaderDigest", "CRC32C,None"), ("MaxConnections", "1")], cmdsn=1)
LOGIN_CHAP = login(0, 0, False, [
    ("InitiatorName", INITIATOR), ("SessionType", "Normal"), ("TargetName", TARGET + "chap"),
    ("AuthMethod", "CHAP,None"),
]) + login(0, 0, False, [("CHAP_A", "5")]) + login(0, 1, True, [
    ("CHAP_N", "user"), ("CHAP_R", "0x" + "00" * 16),
])
LOGIN_DISCOVERY = login(1, 3, True, [("InitiatorName", INITIATOR), ("SessionType", "Discovery")])
READ10 = bytes([0x28, 0, 0, 0, 0, 0, 0, 0, 8, 0]).ljust(16, b"\0")
SCSI_READ = pdu(0x01, 0xC1, specific=be32(4096) + be32(1) + be32(1) + READ10, lun=0)
SCSI_WRITE_IMM = pdu(0x01, 0xA1, data=b"\xAB" * 512,
                     specific=be32(512) + be32(1) + be32(1)
                     + bytes([0x2A, 0, 0, 0, 0, 0, 0, 0, 1, 0]).ljust(16, b"\0"))
NOP_OUT = pdu(0x40, 0x80, itt=0xFFFFFFFF, specific=be32(0xFFFFFFFF) + be32(1))
TEXT_SENDTARGETS = pdu(0x44, 0x80, data=text([("SendTargets", "All")]),
                       specific=be32(0xFFFFFFFF) + be32(2))
LOGOUT = pdu(0x46, 0x80, specific=be32(0) + be32(3))
TASK_ABORT = pdu(0x42, 0x81, specific=be32(7) + be32(4))

# pdu_decode: first byte selects the digests (bit 0 header, bit 1 data); 0 = none.
write(SCSI, "pdu_decode", "login", b"\0" + LOGIN_NORMAL)
write(SCSI, "pdu_decode", "scsi-read-nop-logout", b"\0" + SCSI_READ + NOP_OUT + LOGOUT)
write(SCSI, "pdu_decode", "scsi-write-immediate", b"\0" + SCSI_WRITE_IMM)
write(SCSI, "pdu_decode", "text-tmf", b"\0" + TEXT_SENDTARGETS + TASK_ABORT)

# iscsi_connection (target-daemon): first byte: bit 0 discovery session, bit 1 InitialR2T,
# bit 2 ImmediateData, bits 6-7 MaxOutstandingR2T - 1; then a PDU stream from CmdSN 1.
WRITE10_1 = bytes([0x2A, 0, 0, 0, 0, 0, 0, 0, 1, 0]).ljust(16, b"\0")
SCSI_WRITE_R2T = pdu(0x01, 0xA1, specific=be32(512) + be32(1) + be32(1) + WRITE10_1, itt=2)
# Data-Out for the first R2T (TTT 1): TTT, reserved, ExpStatSN, reserved, DataSN 0, offset 0.
DATA_OUT = pdu(0x05, 0x80, data=b"\xCD" * 512,
               specific=be32(1) + be32(0) + be32(1) + be32(0) + be32(0) + be32(0), itt=2)
TEXT_1 = pdu(0x44, 0x80, data=text([("SendTargets", "All")]),
             specific=be32(0xFFFFFFFF) + be32(1), itt=3)
LOGOUT_2 = pdu(0x46, 0x80, specific=be32(0) + be32(2), itt=4)
write(DAEMON, "iscsi_connection", "read-nop-text-logout",
      b"\x04" + SCSI_READ + NOP_OUT + TEXT_SENDTARGETS + LOGOUT)
write(DAEMON, "iscsi_connection", "write-r2t-data-out", b"\x06" + SCSI_WRITE_R2T + DATA_OUT)
write(DAEMON, "iscsi_connection", "immediate-write-tmf", b"\x04" + SCSI_WRITE_IMM + TASK_ABORT)
write(DAEMON, "iscsi_connection", "discovery-text-logout", b"\x01" + TEXT_1 + LOGOUT_2)

write(SCSI, "login", "normal", LOGIN_NORMAL)
write(SCSI, "login", "security-then-operational", LOGIN_SECURITY)
write(SCSI, "login", "chap", LOGIN_CHAP)
write(SCSI, "login", "discovery", LOGIN_DISCOVERY)

write(SCSI, "text_parse", "operational", text([
    ("HeaderDigest", "CRC32C,None"), ("MaxRecvDataSegmentLength", "262144"),
    ("TargetAlias", "demo"), ("X-com.example.key", "value")]))
write(SCSI, "text_parse", "chap", text([("CHAP_A", "5"), ("CHAP_I", "1"),
                                        ("CHAP_C", "0x" + "a5" * 16)]))
write(SCSI, "text_parse", "sendtargets", text([("SendTargets", "All")]))

# --- SCSI CDBs -----------------------------------------------------------------------------

def cdb16(*b):
    return bytes(b).ljust(16, b"\0")


CDBS = {
    "test-unit-ready": bytes(6),
    "inquiry-vpd83": bytes([0x12, 1, 0x83, 0, 0xFF, 0]),
    "read6": bytes([0x08, 0, 0, 8, 1, 0]),
    "read10-fua": bytes([0x28, 0x08, 0, 0, 0x10, 0, 0, 0, 8, 0]),
    "write16": bytes([0x8A, 0]) + be64(1 << 33) + be32(16) + bytes(2),
    "write-same16-unmap-ndob": bytes([0x93, 0x09]) + be64(0) + be32(64) + bytes(2),
    "compare-and-write": bytes([0x89, 0]) + be64(5) + bytes([0, 0, 0, 1, 0, 0]),
    "verify10-bytchk": bytes([0x2F, 0x02, 0, 0, 0, 0, 0, 0, 2, 0]),
    "mode-sense10-all": bytes([0x5A, 0x08, 0x3F, 0xFF, 0, 0, 0, 0x10, 0, 0]),
    "mode-select6": bytes([0x15, 0x10, 0, 0, 24, 0]),
    "read-capacity16": cdb16(0x9E, 0x10, *([0] * 11), 32),
    "get-lba-status": cdb16(0x9E, 0x12, *([0] * 11), 24),
    "unmap": bytes([0x42, 0, 0, 0, 0, 0, 0, 0, 24, 0]),
    "pr-in-read-keys": bytes([0x5E, 0, 0, 0, 0, 0, 0, 0x10, 0, 0]),
    "pr-out-register": bytes([0x5F, 0, 0, 0, 0, 0, 0, 0, 24, 0]),
    "xcopy": cdb16(0x83, 0, *([0] * 8), 0, 0, 0, 92),
    "receive-copy-results-op": cdb16(0x84, 0x03, *([0] * 8), 0, 0, 1, 0),
    "report-luns": bytes([0xA0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0]),
    "rsoc-one": bytes([0xA3, 0x0C, 0x82, 0x9E, 0, 0x10, 0, 0, 1, 0, 0, 0]),
    "report-tpg": bytes([0xA3, 0x2A, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0]),
    "sync-cache16": cdb16(0x91, 0x02),
    "start-stop": bytes([0x1B, 0, 0, 0, 0x01, 0]),
    # Rejected ones, for the sense paths.
    "rdprotect": bytes([0x28, 0x20, 0, 0, 0, 0, 0, 0, 1, 0]),
    "naca": bytes([0x00, 0, 0, 0, 0, 0x04]),
    # Fixed and descriptor sense data (decoded by the same target).
    "sense-fixed": bytes([0xF0, 0, 5, 0, 0, 0, 9, 10, 0, 0, 0, 0, 0x24, 0, 0, 0xC8, 0, 1]),
    "sense-descriptor": bytes([0x72, 5, 0x21, 0, 0, 0, 0, 20, 0, 0x0A, 0x80, 0]) + be64(7)
    + bytes([2, 6, 0, 0, 0xC8, 0, 2, 0]),
}
for name, c in CDBS.items():
    write(SCSI, "cdb_parse", name, c)

# --- PERSISTENT RESERVE OUT ----------------------------------------------------------------

def transport_id(name, isid=None):
    t = f"{name},i,0x{isid:012x}" if isid is not None else name
    body = (t.encode() + b"\0")
    body = body.ljust(max(20, len(body) + (-len(body) % 4)), b"\0")
    return bytes([0x45 if isid is not None else 0x05, 0]) + be16(len(body)) + body


def prout(key, sa_key, flags):
    return be64(key) + be64(sa_key) + bytes(4) + bytes([flags, 0, 0, 0])


ids = transport_id(INITIATOR, 0x23D000000001) + transport_id("iqn.2026-01.io.example:h2")
write(SCSI, "pr_out", "register", prout(0, 0x1234, 0))
write(SCSI, "pr_out", "register-aptpl-all-tg-pt", prout(0, 0x1234, 0x05))
write(SCSI, "pr_out", "register-spec-i-pt", prout(0, 0x1234, 0x08) + be32(len(ids)) + ids)
tid = transport_id(INITIATOR, 1)
write(SCSI, "pr_out", "register-and-move",
      be64(0x1234) + be64(0x5678) + bytes([0, 0x02]) + be16(1) + be32(len(tid)) + tid)
write(SCSI, "pr_out", "transport-id-port", transport_id(INITIATOR, 0x23D000000001))
write(SCSI, "pr_out", "transport-id-device", transport_id(INITIATOR))

# --- EXTENDED COPY (LID1) ------------------------------------------------------------------

def xcopy_target(naa, block_size=512):
    d = bytes([0xE4, 0x00, 0, 0, 0x01, 0x03, 0, len(naa)]) + naa
    d = d.ljust(28, b"\0") + bytes([0]) + block_size.to_bytes(3, "big")
    assert len(d) == 32
    return d


def xcopy_segment(src, dst, blocks, src_lba, dst_lba):
    return (bytes([0x02, 0x00]) + be16(24) + be16(src) + be16(dst) + bytes(2)
            + be16(blocks) + be64(src_lba) + be64(dst_lba))


def xcopy(list_id, flags, targets, segments):
    t = b"".join(targets)
    s = b"".join(segments)
    return bytes([list_id, flags]) + be16(len(t)) + bytes(4) + be32(len(s)) + be32(0) + t + s


NAA_A = bytes([0x60, 0x01, 0x40, 0x50] + [0x11] * 12)
NAA_B = bytes([0x60, 0x01, 0x40, 0x50] + [0x22] * 12)
# xcopy: the first byte picks the block size (512 << n); 0 = 512.
write(SCSI, "xcopy", "two-targets-one-segment", b"\0" + xcopy(
    1, 0x00, [xcopy_target(NAA_A), xcopy_target(NAA_B)], [xcopy_segment(0, 1, 8, 0, 100)]))
write(SCSI, "xcopy", "same-lun-no-list-id", b"\3" + xcopy(
    0, 0x18, [xcopy_target(NAA_A, 4096)],
    [xcopy_segment(0, 0, 1, 0, 9), xcopy_segment(0, 0, 2, 1, 10)]))
write(SCSI, "xcopy", "empty", b"\0")

# --- UNMAP ---------------------------------------------------------------------------------

def unmap_list(descs):
    body = b"".join(be64(lba) + be32(n) + bytes(4) for lba, n in descs)
    return be16(len(body) + 6) + be16(len(body)) + bytes(4) + body


# unmap: 12 bytes of limits (max descriptors u16, max LBA count u32, capacity u48) first.
limits = be16(64) + be32(1 << 22) + (1 << 24).to_bytes(6, "big")
write(SCSI, "unmap", "two-extents", limits + unmap_list([(0, 8), (4096, 2048)]))
write(SCSI, "unmap", "zero-length", limits + unmap_list([(100, 0)]))
write(SCSI, "unmap", "header-only", limits + unmap_list([]))

# --- lunard: admin requests ----------------------------------------------------------------

REQUESTS = {
    "pool-status": '{"op": "pool.status"}',
    "lun-create": '{"op": "lun.create", "args": {"name": "db", "size_bytes": 10737418240, '
                  '"guarantee": "full", "block_size": 4096, "target": "' + TARGET + '", '
                  '"lun_id": 1, "read_only": false}, "token": "s3cret"}',
    "lun-resize": '{"op": "lun.resize", "args": {"name": "db", "size_bytes": 1073741824, '
                  '"shrink": true}}',
    "lun-set": '{"op": "lun.set", "args": {"name": "db", "read_only": true, "rename": "db2"}}',
    "snapshot-group": '{"op": "snapshot.group", "args": {"group": "nightly", '
                      '"luns": ["db", "logs"]}}',
    "clone-create": '{"op": "clone.create", "args": {"source": "db@nightly", "name": "dev", '
                    '"mode": "linked", "target": "' + TARGET + '", "copy_acl": true}}',
    "chap-set": '{"op": "chap.set", "args": {"target": "' + TARGET + '", "username": "u", '
                '"secret": "0123456789ab", "mutual_username": "t", '
                '"mutual_secret": "ba9876543210"}}',
    "target-create": '{"op": "target.create", "args": {"iqn": "' + TARGET + '", '
                     '"fabric": "iscsi", "alias": "demo", "allow_any": true}}',
    "session-list": '{"op": "session.list", "args": {"target": null}}\n',
}
for name, r in REQUESTS.items():
    write(DAEMON, "admin_request", name, r)

# --- lunard: configuration -----------------------------------------------------------------

with open(os.path.join(ROOT, "deploy", "lunar.example.yaml"), "rb") as f:
    write(DAEMON, "config_yaml", "example", f.read())
# The embedded default, read from where lunard keeps it (one copy of the text).
with open(os.path.join(ROOT, "target-daemon", "src", "config", "defaults.rs"), encoding="utf-8") as f:
    src = f.read()
start = src.index('DEFAULT_CONFIG_YAML: &str = r#"') + len('DEFAULT_CONFIG_YAML: &str = r#"')
write(DAEMON, "config_yaml", "default", src[start:src.index('"#;', start)].lstrip("\n").encode())
write(DAEMON, "config_yaml", "invalid-chunk", "pool:\n  chunk_size: 3000\n")
write(DAEMON, "config_yaml", "size", "1 GiB")

print("seeds written under", os.path.relpath(SCSI, ROOT), "and", os.path.relpath(DAEMON, ROOT),
      file=sys.stderr)
