//! The real thing: `raft-kv` processes on 127.0.0.1 with real disks, killed with SIGKILL.

use std::process::Command;

fn raft_kv() -> Command {
    Command::new(env!("CARGO_BIN_EXE_raft-kv"))
}

fn scratch(name: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("raft-kv-test-{name}-{}", std::process::id()))
}

#[test]
fn the_demo_loses_no_acknowledged_write_across_a_leader_kill() {
    let dir = scratch("demo");
    let output = raft_kv()
        .args(["demo", "--writes", "2000", "--clients", "8", "--dir"])
        .arg(&dir)
        .output()
        .expect("runs");
    let _ = std::fs::remove_dir_all(&dir);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "demo failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("present on 3/3 nodes"), "{stdout}");
    assert!(stdout.contains("failover"), "{stdout}");
}

/// Runs `raft-kv chaos` with `args` on `runtime` with `seed`; returns its standard output,
/// failing the test if it fails.
fn chaos(runtime: &str, seed: u64, args: &[&str]) -> String {
    let dir = scratch(&format!("chaos-{runtime}-{seed}"));
    let output = raft_kv()
        .arg("chaos")
        .args(args)
        .args(["--clients", "4", "--runtime", runtime, "--seed"])
        .arg(seed.to_string())
        .arg("--dir")
        .arg(&dir)
        .output()
        .expect("runs");
    let _ = std::fs::remove_dir_all(&dir);
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "chaos {args:?} on {runtime} (seed {seed}) failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

#[test]
fn random_sigkills_under_load_lose_no_acknowledged_write() {
    // Crash and restart from disk, for real, on every runtime.
    for (runtime, seed) in [
        ("thread", 1),
        ("thread", 2),
        ("tokio", 3),
        ("smol", 4),
        ("async-std", 5),
    ] {
        chaos(runtime, seed, &["--rounds", "5"]);
    }
}

/// The demo on each async runtime: the same replica, only the adapter changes.
#[test]
fn the_demo_runs_on_every_runtime() {
    for runtime in ["tokio", "smol", "async-std"] {
        let dir = scratch(&format!("demo-{runtime}"));
        let output = raft_kv()
            .args([
                "demo",
                "--writes",
                "1000",
                "--clients",
                "8",
                "--runtime",
                runtime,
                "--dir",
            ])
            .arg(&dir)
            .output()
            .expect("runs");
        let _ = std::fs::remove_dir_all(&dir);
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success() && stdout.contains("present on 3/3 nodes"),
            "demo on {runtime} failed:\n{stdout}\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

/// Replacing voters by fresh processes under load, on threads and tokio: every acknowledged
/// write is on every final member.
#[test]
fn replacing_nodes_under_load_loses_no_acknowledged_write() {
    for (runtime, seed) in [("thread", 7), ("tokio", 8)] {
        let stdout = chaos(runtime, seed, &["--membership", "--rounds", "4"]);
        assert!(
            stdout.contains("4 rounds") && stdout.contains("all 3 nodes"),
            "{stdout}"
        );
    }
}
