//! Access control at login: CHAP (one-way and mutual) and initiator ACLs, checked with
//! libiscsi's `iscsi-inq` (normal sessions) and `iscsi-ls` (discovery sessions).

use lunar_e2e::config::{open_target, with_target, yaml, ChapCfg, Config};
use lunar_e2e::initiator::{libiscsi, url, Auth};
use lunar_e2e::process::Output;
use lunar_e2e::{require_tools, Lunard, LunardOptions};

const IQN: &str = "iqn.2026-11.io.lunar:access";
const USER: &str = "e2e-initiator";
const SECRET: &str = "initiator-secret-1234";
const T_USER: &str = "lunar-target";
const T_SECRET: &str = "target-secret-56789";
const ALLOWED: &str = "iqn.2026-11.io.lunar.test:allowed";
const STRANGER: &str = "iqn.2026-11.io.lunar.test:stranger";

fn start(cfg: Config) -> Lunard {
    Lunard::start_with(LunardOptions {
        config_yaml: Some(yaml(&cfg)),
        ..LunardOptions::default()
    })
    .expect("start lunard")
}

fn inq(d: &Lunard, initiator: Option<&str>, auth: &Auth) -> Output {
    libiscsi(
        "iscsi-inq",
        &[],
        &url(d.addr(), Some((IQN, 0)), auth),
        initiator,
        auth,
    )
    .expect("run iscsi-inq")
}

fn assert_login_ok(out: &Output, what: &str) {
    assert!(
        out.status.success() && out.stdout.contains("DIRECT_ACCESS"),
        "{what}: login should succeed ({}):\n{}",
        out.status,
        out.combined()
    );
}

fn assert_login_refused(out: &Output, what: &str) {
    assert!(
        !out.status.success(),
        "{what}: login should be refused:\n{}",
        out.combined()
    );
    assert!(
        !out.stdout.contains("DIRECT_ACCESS"),
        "{what}: refused login still returned INQUIRY data:\n{}",
        out.combined()
    );
    let text = out.combined().to_ascii_lowercase();
    assert!(
        text.contains("login") || text.contains("auth") || text.contains("chap"),
        "{what}: failure is not a login failure:\n{}",
        out.combined()
    );
}

#[test]
fn chap_one_way_accepts_right_secret_and_rejects_others() {
    require_tools!("iscsi-inq");
    let d = start(with_target(
        open_target(IQN).with_chap(ChapCfg::new(USER, SECRET)),
    ));
    assert_login_ok(
        &inq(&d, None, &Auth::chap(USER, SECRET)),
        "correct CHAP secret",
    );
    assert_login_refused(
        &inq(&d, None, &Auth::chap(USER, "wrong-secret-12345")),
        "wrong CHAP secret",
    );
    assert_login_refused(
        &inq(&d, None, &Auth::chap("someone-else", SECRET)),
        "wrong CHAP name",
    );
    assert_login_refused(&inq(&d, None, &Auth::default()), "no CHAP credentials");
    // The target has no mutual credential: an initiator that insists on authenticating the
    // target must not get in.
    assert_login_refused(
        &inq(&d, None, &Auth::mutual(USER, SECRET, T_USER, T_SECRET)),
        "mutual CHAP demanded from a target without a mutual secret",
    );
}

#[test]
fn chap_mutual_authenticates_the_target() {
    require_tools!("iscsi-inq");
    let d = start(with_target(
        open_target(IQN).with_chap(ChapCfg::new(USER, SECRET).with_mutual(T_USER, T_SECRET)),
    ));
    assert_login_ok(
        &inq(&d, None, &Auth::mutual(USER, SECRET, T_USER, T_SECRET)),
        "mutual CHAP with matching secrets",
    );
    // A target configured with a mutual credential requires mutual CHAP: an initiator that
    // does not authenticate the target (sends no CHAP_I/CHAP_C) is refused.
    assert_login_refused(
        &inq(&d, None, &Auth::chap(USER, SECRET)),
        "one-way CHAP to a target that requires mutual CHAP",
    );
    // The initiator expects a different target secret: the target's CHAP_R cannot verify.
    assert_login_refused(
        &inq(
            &d,
            None,
            &Auth::mutual(USER, SECRET, T_USER, "not-the-target-secret"),
        ),
        "mutual CHAP with the wrong target secret",
    );
    assert_login_refused(
        &inq(
            &d,
            None,
            &Auth::mutual(USER, "wrong-secret-12345", T_USER, T_SECRET),
        ),
        "mutual CHAP with the wrong initiator secret",
    );
}

#[test]
fn acl_refuses_unlisted_initiators() {
    require_tools!("iscsi-inq", "iscsi-ls");
    let d = start(with_target(open_target(IQN).with_initiators([ALLOWED])));
    assert_login_ok(
        &inq(&d, Some(ALLOWED), &Auth::default()),
        "listed initiator",
    );
    assert_login_refused(
        &inq(&d, Some(STRANGER), &Auth::default()),
        "unlisted initiator",
    );

    // Discovery shows the target only to initiators that may log in to it.
    let ls = |who: &str| {
        libiscsi(
            "iscsi-ls",
            &[],
            &d.portal_url(),
            Some(who),
            &Auth::default(),
        )
        .expect("run iscsi-ls")
    };
    let allowed = ls(ALLOWED);
    assert!(
        allowed.stdout.contains(IQN),
        "listed initiator does not discover the target:\n{}",
        allowed.combined()
    );
    let stranger = ls(STRANGER);
    assert!(
        !stranger.stdout.contains(IQN),
        "unlisted initiator discovers the target:\n{}",
        stranger.combined()
    );
}
