//! The `slotgate` command line: help, missing seed, address in use.
//! (Also makes `cargo test` build the binary the e2e tests in tests/ use.)

use std::process::Command;

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_slotgate")
}

#[test]
fn help_lists_flags() {
    let out = Command::new(bin()).arg("--help").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--listen",
        "--seed",
        "--config",
        "--metrics",
        "--maxclients",
        "--backend-password",
    ] {
        assert!(text.contains(flag), "missing {flag} in help: {text}");
    }
}

#[test]
fn no_seed_is_an_error() {
    let out = Command::new(bin())
        .args(["--listen", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--seed"));
}

#[test]
fn address_in_use_says_how_to_pick_another() {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let out = Command::new(bin())
        .args(["--listen", &addr, "--seed", "127.0.0.1:1"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("already in use") && err.contains("--listen"),
        "{err}"
    );
}
