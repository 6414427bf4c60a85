//! A very short `compare --suite front` run: forms a 3-master redis-server cluster, starts the
//! slotgate proxy over it and twemproxy over standalone servers, and checks that every
//! section of the report is there. No timing assertions.
//!
//! Needs redis-server, redis-cli and nutcracker on PATH and the slotgate binary
//! (`SLOTGATE_BIN`, else target/<profile>/slotgate beside this test's slotgate-bench, else
//! target/{release,debug}/slotgate). Without them the test prints why and passes, except
//! under `CI=true`, where that is a failure.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

fn skip(why: &str) {
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("CI=true and {why}");
    }
    eprintln!("SKIPPED: {why}");
}

fn on_path(name: &str) -> Option<PathBuf> {
    let p = slotgate_bench::compare::target::resolve_bin(Path::new(name));
    p.is_file().then_some(p)
}

/// The slotgate proxy binary, if one was built.
fn slotgate_bin() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("SLOTGATE_BIN") {
        return Some(PathBuf::from(p)).filter(|p| p.is_file());
    }
    // `cargo test --workspace` builds it into the same target/<profile> as slotgate-bench.
    let beside = Path::new(env!("CARGO_BIN_EXE_slotgate-bench")).with_file_name("slotgate");
    if beside.is_file() {
        return Some(beside);
    }
    let target = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target");
    ["release", "debug"]
        .iter()
        .map(|profile| target.join(profile).join("slotgate"))
        .find(|p| p.is_file())
}

/// The table row that starts with `prefix`.
fn row<'a>(md: &'a str, prefix: &str) -> &'a str {
    md.lines()
        .find(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("no row starting with {prefix:?} in:\n{md}"))
}

#[test]
fn short_front_run_reports_every_target() {
    for tool in ["redis-server", "redis-cli", "nutcracker"] {
        if on_path(tool).is_none() {
            skip(&format!("{tool} is not available for the front-suite test"));
            return;
        }
    }
    let Some(proxy) = slotgate_bin() else {
        skip("the slotgate binary is not built (cargo build -p slotgate)");
        return;
    };
    let mut args: Vec<String> = [
        "compare",
        "--suite",
        "front",
        "--rounds",
        "1",
        "-n",
        "2000",
        "-r",
        "1000",
        "-c",
        "4",
        "-P",
        "1,4",
        "--idle-conns",
        "300",
        "--half-load-secs",
        "0.5",
        "--max-time",
        "120",
        "--no-write",
    ]
    .map(String::from)
    .to_vec();
    args.push("--proxy-bin".into());
    args.push(proxy.display().to_string());
    if on_path("redis-benchmark").is_none() {
        args.extend(["--tools".into(), "slotgate-bench".into()]);
    }
    let out = Command::new(env!("CARGO_BIN_EXE_slotgate-bench"))
        .args(&args)
        .stdin(Stdio::null())
        .output()
        .expect("running slotgate-bench compare");
    let md = String::from_utf8_lossy(&out.stdout).into_owned();
    eprintln!("{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "compare --suite front failed:\n{md}");

    for target in ["slotgate", "direct", "twemproxy"] {
        let tool = if target == "direct" {
            "slotgate-bench --cluster"
        } else {
            "slotgate-bench"
        };
        for (w, p) in [("set", 1), ("get", 1), ("set", 4), ("get", 4)] {
            let r = row(&md, &format!("| {target} | {tool} | {w} | {p} |"));
            assert!(r.ends_with("| 0 |"), "errors in: {r}");
        }
    }
    // Ratios to the references are exactly 1 for the references themselves.
    assert!(row(&md, "| direct | slotgate-bench --cluster | get | 1 |").contains("| 1.00× |"));
    // The proxies have measured CPU; the direct client has none.
    assert!(!row(&md, "| slotgate | slotgate-bench | set | 1 |").contains("| – | – |"));
    assert!(md.contains("### Proxy processes"), "{md}");
    assert!(md.contains("### Added latency at half load"), "{md}");
    row(&md, "| slotgate | 300 | 0 |");
    row(&md, "| twemproxy | 300 | 0 |");
}
