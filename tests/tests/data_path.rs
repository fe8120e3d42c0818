//! Data integrity through independent initiators: qemu's iSCSI block driver (libiscsi).
//!
//! - `qemu-img convert` of a 256 MiB random image into a LUN and back, checksums equal;
//! - 16 concurrent sessions (16 `qemu-io`, each its own initiator name) each writing and
//!   verifying its own 16 MiB region, then every region re-verified from a fresh session;
//! - data survives a SIGTERM restart of lunard on the same data dir.

use lunar_e2e::initiator::{qemu_image_opts, qemu_io};
use lunar_e2e::process::{run, Output};
use lunar_e2e::{require_tools, Lunard, DEFAULT_TARGET_IQN};
use md5::{Digest, Md5};
use rand::RngCore;
use std::io::{Read, Write};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

const MIB: u64 = 1 << 20;

fn md5_file(path: &Path) -> [u8; 16] {
    let mut f = std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut h = Md5::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).expect("read");
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    h.finalize().into()
}

fn qemu_img(args: &[&str]) -> Output {
    run(
        Command::new("qemu-img").args(args),
        Duration::from_secs(600),
    )
    .and_then(|o| o.check())
    .unwrap_or_else(|e| panic!("{e:#}"))
}

#[test]
fn qemu_img_convert_round_trip_256mib() {
    require_tools!("qemu-img");
    let d = Lunard::start().expect("start lunard");
    let dir = tempfile::tempdir().expect("tempdir");
    let src = dir.path().join("src.raw");
    let back = dir.path().join("back.raw");
    {
        let mut f = std::fs::File::create(&src).expect("create");
        let mut rng = rand::thread_rng();
        let mut buf = vec![0u8; MIB as usize];
        for _ in 0..256 {
            rng.fill_bytes(&mut buf);
            f.write_all(&buf).expect("write");
        }
    }
    // Write into the first 256 MiB of LUN 0 (`-n`: the LUN exists, do not create it).
    let window = Some((0, 256 * MIB));
    let lun = qemu_image_opts(
        d.addr(),
        DEFAULT_TARGET_IQN,
        0,
        "iqn.2026-11.io.lunar.test:qemu-img",
        window,
    );
    qemu_img(&[
        "convert",
        "-n",
        "-f",
        "raw",
        "--target-image-opts",
        src.to_str().unwrap(),
        &lun,
    ]);
    qemu_img(&[
        "convert",
        "-O",
        "raw",
        "--image-opts",
        &lun,
        back.to_str().unwrap(),
    ]);
    assert_eq!(
        std::fs::metadata(&back).expect("stat").len(),
        256 * MIB,
        "read back a different size"
    );
    assert_eq!(
        md5_file(&src),
        md5_file(&back),
        "data read back differs from data written"
    );
}

#[test]
fn sixteen_concurrent_sessions_each_verify_own_region() {
    require_tools!("qemu-io");
    let d = Lunard::start().expect("start lunard");
    let addr = d.addr();
    const REGION: u64 = 16 * MIB;
    let workers: Vec<_> = (0..16u64)
        .map(|i| {
            std::thread::spawn(move || {
                let who = format!("iqn.2026-11.io.lunar.test:worker-{i}");
                let opts = qemu_image_opts(addr, DEFAULT_TARGET_IQN, 0, &who, None);
                let pattern = 0x10 + i;
                let off = i * REGION;
                // Several writes of mixed sizes (unaligned to the 64 KiB chunk), then verify.
                let cmds = vec![
                    format!("write -P {pattern} {off} {}", REGION / 2),
                    format!("write -P {pattern} {} {}", off + REGION / 2, 4096),
                    format!(
                        "write -P {pattern} {} {}",
                        off + REGION / 2 + 4096,
                        REGION / 2 - 4096
                    ),
                    format!("read -P {pattern} {off} {REGION}"),
                ];
                qemu_io(&opts, &cmds).map(|_| ())
            })
        })
        .collect();
    let mut errors = Vec::new();
    for (i, w) in workers.into_iter().enumerate() {
        match w.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => errors.push(format!("worker {i}: {e:#}")),
            Err(_) => errors.push(format!("worker {i} panicked")),
        }
    }
    assert!(errors.is_empty(), "{}", errors.join("\n"));
    // No session overwrote another's region: re-read everything from a fresh session.
    let opts = qemu_image_opts(
        addr,
        DEFAULT_TARGET_IQN,
        0,
        "iqn.2026-11.io.lunar.test:checker",
        None,
    );
    let cmds: Vec<String> = (0..16u64)
        .map(|i| format!("read -P {} {} {REGION}", 0x10 + i, i * REGION))
        .collect();
    qemu_io(&opts, &cmds).expect("re-verify all regions");
}

#[test]
fn data_survives_sigterm_restart() {
    require_tools!("qemu-io");
    let mut d = Lunard::start().expect("start lunard");
    let who = "iqn.2026-11.io.lunar.test:restart";
    let writes = [
        (0x5a_u64, 0u64, 8 * MIB),
        (0xa5, 512 * MIB + 4096, 3 * MIB),
        (0x3c, 1023 * MIB, MIB),
    ];
    let opts = qemu_image_opts(d.addr(), DEFAULT_TARGET_IQN, 0, who, None);
    let cmds: Vec<String> = writes
        .iter()
        .map(|(p, o, l)| format!("write -P {p} {o} {l}"))
        .collect();
    qemu_io(&opts, &cmds).expect("write before restart");

    d.stop().expect("graceful SIGTERM stop");
    d.restart().expect("restart on the same data dir");

    let opts = qemu_image_opts(d.addr(), DEFAULT_TARGET_IQN, 0, who, None);
    let mut cmds: Vec<String> = writes
        .iter()
        .map(|(p, o, l)| format!("read -P {p} {o} {l}"))
        .collect();
    // Never-written space of a thin LUN reads as zeros.
    cmds.push(format!("read -P 0 {} {}", 256 * MIB, 4 * MIB));
    qemu_io(&opts, &cmds).expect("read back after restart");
}
