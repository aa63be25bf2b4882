//! The other isolation backends: `apptainer` where it is installed, and the
//! unisolated `process` backend with its warning.
#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests may unwrap.

use isms_test_support::Options;

fn round_trip(isolation: &str) -> String {
    let p = Options::new(env!("CARGO_BIN_EXE_isms"), env!("CARGO_TARGET_TMPDIR"))
        .env("ISMS_DOER_ISOLATION", isolation)
        .start();
    p.login_admin();
    p.run(&["project", "create", "iso"]);
    p.deploy_misbehave("iso", "echo", "echo", "");
    let r = p.trigger("/iso/echo", b"hello");
    assert_eq!((r.status, r.text().as_str()), (200, "hello"), "{isolation}");
    let r = p.trigger("/iso/echo", b"again");
    assert_eq!(r.text(), "again");
    p.output()
}

#[test]
fn apptainer_runs_doees_where_it_is_installed() {
    let Some(path) = std::env::var_os("PATH") else {
        return;
    };
    if !std::env::split_paths(&path).any(|dir| dir.join("apptainer").is_file()) {
        // Written to the handle, not with eprintln!, so the test harness
        // shows it even though the test passes.
        use std::io::Write;
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED apptainer_runs_doees_where_it_is_installed: apptainer is not on PATH"
        );
        return;
    }
    let banner = round_trip("apptainer");
    assert!(banner.contains("Isolation           apptainer"), "{banner}");
}

#[test]
fn the_process_backend_works_and_warns() {
    let banner = round_trip("process");
    assert!(banner.contains("WITHOUT ISOLATION"), "{banner}");
}
