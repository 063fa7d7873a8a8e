//! The streamed snapshot transfer between two processes, small: the follower's state equals
//! the leader's (the README's run sends 1 GiB and reports peak RSS).

#[test]
fn a_streamed_snapshot_reaches_a_follower_in_another_process() {
    let dir = std::env::temp_dir().join(format!("snapshot-transfer-test-{}", std::process::id()));
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_snapshot-transfer"))
        .args(["--mib", "16", "--dir"])
        .arg(&dir)
        .output()
        .expect("runs");
    let _ = std::fs::remove_dir_all(&dir);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains("the follower's state equals the leader's (16777216 bytes"),
        "{stdout}"
    );
    assert!(
        stdout.contains("caught up through the snapshot"),
        "{stdout}"
    );
}
