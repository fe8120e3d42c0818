//! Discovery and identification through libiscsi: `iscsi-ls -s` (SendTargets + REPORT LUNS +
//! READ CAPACITY) and `iscsi-inq` (standard INQUIRY and every VPD page the LUN advertises).

use lunar_e2e::config::{with_portals, yaml, ByteSize, Config, LunCfg, PortalCfg, TargetCfg};
use lunar_e2e::initiator::{libiscsi, Auth};
use lunar_e2e::{require_tools, Lunard, LunardOptions, DEFAULT_TARGET_IQN};

#[test]
fn iscsi_ls_lists_default_target_and_lun() {
    require_tools!("iscsi-ls");
    let d = Lunard::start().expect("start lunard");
    let out = libiscsi("iscsi-ls", &["-s"], &d.portal_url(), None, &Auth::default())
        .and_then(|o| o.check())
        .expect("iscsi-ls");
    let text = out.stdout;
    assert!(
        text.contains(&format!("Target:{DEFAULT_TARGET_IQN}")),
        "target missing from discovery:\n{text}"
    );
    assert!(
        text.contains(&format!("Portal:{}", d.addr())),
        "portal missing:\n{text}"
    );
    let lun0 = text
        .lines()
        .find(|l| l.trim_start().starts_with("Lun:0 "))
        .unwrap_or_else(|| panic!("LUN 0 missing:\n{text}"));
    assert!(
        lun0.contains("DIRECT_ACCESS"),
        "LUN 0 is not a disk: {lun0}"
    );
    // iscsi-ls prints (last LBA * block size) in MiB, so a 1 GiB LUN shows as 1023M or 1024M.
    let size_mib: u64 = lun0
        .split("Size:")
        .nth(1)
        .and_then(|s| s.trim_end_matches([')', ' ']).strip_suffix('M'))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no size in {lun0:?}"));
    assert!(
        (1023..=1024).contains(&size_mib),
        "LUN 0 size {size_mib} MiB, want 1 GiB"
    );
    assert_eq!(
        text.lines()
            .filter(|l| l.trim_start().starts_with("Lun:"))
            .count(),
        1,
        "default target has exactly one LUN:\n{text}"
    );
}

/// Discovery over IPv6: lunard with one portal on `[::1]:0`, `iscsi-ls -s` through it
/// lists the target with its IPv6 portal and the LUN. Without an IPv6 loopback the test
/// skips loudly, or fails under `LUNAR_E2E_STRICT=1`.
#[test]
fn iscsi_ls_over_an_ipv6_portal() {
    require_tools!("iscsi-ls");
    if let Err(e) = std::net::TcpListener::bind("[::1]:0") {
        let msg = format!("iscsi_ls_over_an_ipv6_portal: no IPv6 loopback ([::1]): {e}");
        assert!(
            !lunar_e2e::tools::strict(),
            "{msg}; LUNAR_E2E_STRICT=1 so this is a failure, not a skip"
        );
        eprintln!();
        eprintln!("!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!");
        eprintln!("!!! SKIPPED {msg}");
        eprintln!("!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!");
        return;
    }
    const IQN: &str = "iqn.2026-11.io.lunar:v6";
    let cfg =
        with_portals(
            Config::local(ByteSize::gib(1)).with_target(
                TargetCfg::iscsi(IQN).with_lun(LunCfg::new(0, "lun0", ByteSize::mib(64))),
            ),
            vec![PortalCfg::new("[::1]:0".parse().expect("IPv6 loopback"))],
        );
    let d = Lunard::start_with(LunardOptions {
        config_yaml: Some(yaml(&cfg)),
        portals: 0,
        ..LunardOptions::default()
    })
    .expect("start lunard on [::1]");
    let addr = d.addr();
    assert!(addr.is_ipv6(), "portal {addr} is not IPv6");
    let out = libiscsi("iscsi-ls", &["-s"], &d.portal_url(), None, &Auth::default())
        .and_then(|o| o.check())
        .expect("iscsi-ls over IPv6");
    let text = out.stdout;
    assert!(
        text.contains(&format!("Target:{IQN}")),
        "target missing from IPv6 discovery:\n{text}"
    );
    assert!(
        text.contains(&format!("Portal:{addr}")),
        "IPv6 portal {addr} missing:\n{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.trim_start().starts_with("Lun:0 ") && l.contains("DIRECT_ACCESS")),
        "LUN 0 missing:\n{text}"
    );
}

#[test]
fn iscsi_inq_standard_and_vpd_pages() {
    require_tools!("iscsi-inq");
    let d = Lunard::start().expect("start lunard");
    let url = d.default_lun_url();
    let inq = |args: &[&str]| {
        libiscsi("iscsi-inq", args, &url, None, &Auth::default())
            .and_then(|o| o.check())
            .map(|o| o.stdout)
            .unwrap_or_else(|e| panic!("iscsi-inq {args:?}: {e:#}"))
    };

    let std_inq = inq(&[]);
    for want in [
        "Peripheral Qualifier:CONNECTED",
        "Peripheral Device Type:DIRECT_ACCESS",
        "Removable:0",
        "CmdQue:1",
    ] {
        assert!(
            std_inq.contains(want),
            "standard INQUIRY lacks {want:?}:\n{std_inq}"
        );
    }
    let field = |name: &str| {
        std_inq
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.trim().to_string())
            .unwrap_or_default()
    };
    assert!(!field("Vendor:").is_empty(), "empty T10 vendor:\n{std_inq}");
    assert!(
        !field("Product:").is_empty(),
        "empty product id:\n{std_inq}"
    );

    // Supported VPD pages: SPC/SBC mandatory ones, and every listed page must be readable.
    let supported = inq(&["-e", "1", "-c", "0"]);
    let pages: Vec<u8> = supported
        .lines()
        .filter_map(|l| l.strip_prefix("Page:0x"))
        .filter_map(|l| u8::from_str_radix(l.get(..2)?, 16).ok())
        .collect();
    for must in [0x00u8, 0x80, 0x83, 0xb0, 0xb1, 0xb2] {
        assert!(
            pages.contains(&must),
            "VPD page {must:#04x} not listed:\n{supported}"
        );
    }
    for page in pages.iter().filter(|p| **p != 0) {
        let text = inq(&["-e", "1", "-c", &page.to_string()]);
        assert!(
            !text.trim().is_empty(),
            "VPD page {page:#04x} printed nothing"
        );
    }
    let serial = inq(&["-e", "1", "-c", "128"]);
    let sn = serial
        .split("Unit Serial Number:[")
        .nth(1)
        .and_then(|s| s.split(']').next())
        .map(str::trim)
        .unwrap_or_default();
    assert!(!sn.is_empty(), "empty unit serial number:\n{serial}");
    let ids = inq(&["-e", "1", "-c", "131"]);
    assert!(
        ids.contains("Association:(0) LOGICAL_UNIT"),
        "no logical-unit designator in VPD 0x83:\n{ids}"
    );
    // lunard LUNs are thin: the provisioning page must say so (libiscsi prints lbpu etc.).
    let lbp = inq(&["-e", "1", "-c", "178"]);
    assert!(
        lbp.contains("lbpu:1"),
        "UNMAP not advertised in VPD 0xb2:\n{lbp}"
    );
    assert!(
        lbp.contains("provisioning type:2"),
        "LUN not reported thin in VPD 0xb2:\n{lbp}"
    );

    // An unsupported page is refused with ILLEGAL REQUEST / INVALID FIELD IN CDB.
    let bad = libiscsi(
        "iscsi-inq",
        &["-e", "1", "-c", "199"],
        &url,
        None,
        &Auth::default(),
    )
    .expect("run iscsi-inq");
    assert!(
        !bad.status.success(),
        "VPD page 0xc7 unexpectedly succeeded"
    );
    assert!(
        bad.combined().contains("INVALID_FIELD_IN_CDB"),
        "unsupported VPD page not rejected with INVALID FIELD IN CDB:\n{}",
        bad.combined()
    );
}
