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
    assert!(stdout.contains("operations: linearizable"), "{stdout}");
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
    // Crash and restart from disk, for real, on every runtime; once with snapshots streamed
    // through files.
    for (runtime, seed, extra) in [
        ("thread", 1, None),
        ("thread", 2, Some("--stream-snapshots")),
        ("tokio", 3, None),
        ("smol", 4, None),
        ("async-std", 5, None),
    ] {
        let mut args = vec!["--rounds", "5"];
        args.extend(extra);
        chaos(runtime, seed, &args);
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

/// Free ports on 127.0.0.1 (bound, then released).
fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<std::net::TcpListener> = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("a free port"))
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().expect("bound").port())
        .collect()
}

/// Runs the CLI with `args`; returns whether it succeeded and what it printed.
fn cli(args: &[&str]) -> (bool, String) {
    let output = raft_kv().args(args).output().expect("runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

/// Three `raft-kv serve` processes on free ports with their data under `dir` (and their logs,
/// standard output and error, in `dir/n{i}.log`), each given `extra(i)` besides (`i` from 0); returns them and their
/// client addresses.
fn serve_three(
    dir: &std::path::Path,
    extra: impl Fn(usize) -> Vec<String>,
) -> (Vec<std::process::Child>, Vec<String>) {
    let ports = free_ports(6);
    let raft = |i: usize| format!("127.0.0.1:{}", ports[i]);
    let clients: Vec<String> = (0..3)
        .map(|i| format!("127.0.0.1:{}", ports[3 + i]))
        .collect();
    let peers: Vec<String> = (0..3)
        .map(|i| format!("{}={}/{}", i + 1, raft(i), clients[i]))
        .collect();
    let peers = peers.join(",");
    std::fs::create_dir_all(dir).expect("a scratch directory");
    let children = (0..3)
        .map(|i| {
            let log = std::fs::File::create(dir.join(format!("n{i}.log"))).expect("a log file");
            raft_kv()
                .args(["serve", "--id", &(i + 1).to_string(), "--peers", &peers])
                .args([
                    "--client-addr",
                    &clients[i],
                    "--exit-with-parent",
                    "--data-dir",
                ])
                .arg(dir.join(format!("n{i}")))
                .args(extra(i))
                .stdin(std::process::Stdio::piped())
                .stdout(log.try_clone().expect("a log file"))
                .stderr(log)
                .spawn()
                .expect("starts")
        })
        .collect();
    (children, clients)
}

/// The client CLI against three `serve` processes: put, get (also at a follower), delete,
/// status; SIGTERM on the leader hands leadership over before the process exits (another
/// node leads at once); and a clear error, with a failing exit status, once no node runs.
#[test]
fn the_cli_reads_and_writes_and_sigterm_hands_leadership_over() {
    let dir = scratch("cli");
    let (mut children, clients) = serve_three(&dir, |_| vec!["--allow-remote-shutdown".into()]);
    let client = |i: usize| clients[i].clone();
    let cluster = clients.join(",");
    let (ok, out) = cli(&["put", "greeting", "hello", "--cluster", &cluster]);
    assert!(ok, "{out}");
    for at in [cluster.as_str(), &client(0), &client(1), &client(2)] {
        let (ok, out) = cli(&["get", "greeting", "--cluster", at]);
        assert!(ok && out.trim() == "hello", "get at {at}: {out}");
    }
    let (ok, out) = cli(&["delete", "greeting", "--cluster", &cluster]);
    assert!(ok && out.contains("deleted"), "{out}");
    let (ok, out) = cli(&["get", "greeting", "--cluster", &cluster]);
    assert!(ok && out.contains("not found"), "{out}");
    let (ok, status) = cli(&["status", "--cluster", &cluster]);
    assert!(ok, "{status}");
    let leader_line = status
        .lines()
        .find(|l| l.contains("Leader "))
        .unwrap_or_else(|| panic!("no leader in {status}"));
    let leader: usize = leader_line
        .split_whitespace()
        .nth(2)
        .and_then(|id| id.parse().ok())
        .expect("a node id");
    let term: u64 = leader_line
        .split_whitespace()
        .nth(5)
        .and_then(|t| t.parse().ok())
        .expect("a term");
    // SIGTERM: the leader hands over, then exits.
    let victim = &mut children[leader - 1];
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &victim.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(killed.success());
    let exited = (0..500).any(|_| {
        std::thread::sleep(std::time::Duration::from_millis(10));
        matches!(victim.try_wait(), Ok(Some(_)))
    });
    assert!(exited, "the leader did not exit within 5 s of SIGTERM");
    let (_, status) = cli(&["status", "--cluster", &cluster]);
    let new_term = format!("term {}", term + 1);
    assert!(
        status
            .lines()
            .any(|l| l.contains("Leader ") && l.contains(&new_term)),
        "no leader of term {} right after the old one exited:\n{status}",
        term + 1
    );
    let (ok, out) = cli(&["put", "after", "sigterm", "--cluster", &cluster]);
    assert!(ok, "{out}");
    // Started with --allow-remote-shutdown: a client can stop a node.
    let survivor = (0..3).find(|&i| i != leader - 1).expect("a survivor");
    let (ok, out) = cli(&["shutdown", "--node", &client(survivor)]);
    assert!(ok && out.contains("shutting down"), "{out}");
    let exited = (0..500).any(|_| {
        std::thread::sleep(std::time::Duration::from_millis(10));
        matches!(children[survivor].try_wait(), Ok(Some(_)))
    });
    assert!(
        exited,
        "node {} did not exit within 5 s of its shutdown",
        survivor + 1
    );
    for child in &mut children {
        let _ = child.kill();
        let _ = child.wait();
    }
    let (ok, out) = cli(&["get", "after", "--cluster", &cluster]);
    assert!(!ok, "a read succeeded with every node down: {out}");
    assert!(out.contains("Connection refused"), "{out}");
    let (ok, out) = cli(&["status", "--cluster", &cluster]);
    assert!(!ok && out.contains("no node answered"), "{out}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Every fault kind between real processes — partitions both ways and one way, delayed and
/// throttled links (through proxies), SIGSTOP pauses, SIGKILLs — under load, in every read
/// mode: the history stays linearizable and no acknowledged write is lost.
#[test]
fn faults_between_processes_keep_the_history_linearizable() {
    for (runtime, read_mode, seed) in [
        ("thread", "index", 11),
        ("tokio", "lease", 12),
        ("smol", "log", 13),
    ] {
        let stdout = chaos(
            runtime,
            seed,
            &[
                "--rounds",
                "6",
                "--faults",
                "kill,partition,one-way,delay,slow,pause",
                "--read-mode",
                read_mode,
            ],
        );
        assert!(stdout.contains("operations: linearizable"), "{stdout}");
        for kind in ["Kill", "Partition", "OneWay", "Delay", "Slow", "Pause"] {
            assert!(
                stdout.contains(&format!("{kind} 1")),
                "{kind} missing: {stdout}"
            );
        }
    }
}

/// `GET path` over plain HTTP; the whole answer (status line, headers, body).
fn http(addr: &str, request: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).expect("the metrics port answers");
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .expect("a timeout");
    stream.write_all(request.as_bytes()).expect("sends");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).expect("reads");
    answer
}

/// The value of the sample `name` (labels included, exactly) in a Prometheus text answer.
fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// `serve --metrics-addr`: every node serves its metrics in Prometheus's text format; after
/// writes, the leader shows itself as leader, counts its commits, times them and its fsyncs,
/// and every node agrees on the term and the commit index.
#[test]
fn every_node_serves_its_metrics() {
    let dir = scratch("metrics");
    let metrics: Vec<String> = free_ports(3)
        .into_iter()
        .map(|port| format!("127.0.0.1:{port}"))
        .collect();
    let (mut children, clients) =
        serve_three(&dir, |i| vec!["--metrics-addr".into(), metrics[i].clone()]);
    let cluster = clients.join(",");
    for k in 0..5 {
        let (ok, out) = cli(&["put", &format!("k{k}"), "v", "--cluster", &cluster]);
        assert!(ok, "{out}");
    }
    let get = "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n";
    // What every node must show once its gauges caught up (followers learn the last commit
    // index with a heartbeat, gauges are set at most every 100 ms): polled for up to 10 s.
    let check = |texts: &[String]| -> Result<(), String> {
        if let Some(bad) = texts.iter().find(|t| !t.starts_with("HTTP/1.1 200 OK")) {
            return Err(format!("not a 200: {bad}"));
        }
        let leaders: Vec<usize> = (0..3)
            .filter(|&i| {
                let name = format!("raft_role{{node=\"{}\",role=\"leader\"}}", i + 1);
                sample(&texts[i], &name) == Some(1.0)
            })
            .collect();
        let [leader] = leaders[..] else {
            return Err(format!("leaders: {leaders:?}"));
        };
        let node = format!("{{node=\"{}\"}}", leader + 1);
        let text = &texts[leader];
        let at_least = |name: String, min: f64| match sample(text, &name) {
            Some(v) if v >= min => Ok(()),
            other => Err(format!("{name} = {other:?}, expected at least {min}")),
        };
        at_least(format!("raft_commits_total{node}"), 5.0)?;
        at_least(format!("raft_commit_latency_seconds_count{node}"), 5.0)?;
        at_least(format!("raft_fsync_seconds_count{node}"), 1.0)?;
        let kind = "kind=\"append_request\"";
        at_least(
            format!("raft_messages_sent_total{{node=\"{}\",{kind}}}", leader + 1),
            1.0,
        )?;
        let of = |name: &str, i: usize| sample(&texts[i], &format!("{name}{{node=\"{}\"}}", i + 1));
        for name in ["raft_term", "raft_commit_index"] {
            let values: Vec<Option<f64>> = (0..3).map(|i| of(name, i)).collect();
            if values.iter().any(|v| v.is_none() || *v != values[leader]) {
                return Err(format!("{name}: {values:?}"));
            }
        }
        Ok(())
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let texts: Vec<String> = metrics.iter().map(|m| http(m, get)).collect();
        match check(&texts) {
            Ok(()) => break,
            Err(why) if std::time::Instant::now() > deadline => panic!("{why}\n{texts:?}"),
            Err(_) => std::thread::sleep(std::time::Duration::from_millis(50)),
        }
    }
    // Anything but GET /metrics is refused.
    assert!(http(&metrics[0], "POST /metrics HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 405"));
    assert!(http(&metrics[0], "GET / HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 404"));
    // Started without --allow-remote-shutdown: a client cannot stop a node.
    let (ok, out) = cli(&["shutdown", "--node", &clients[0]]);
    assert!(!ok && out.contains("--allow-remote-shutdown"), "{out}");
    std::thread::sleep(std::time::Duration::from_millis(500));
    let still_running = children[0].try_wait().expect("waits").is_none();
    assert!(still_running, "node 1 stopped on a refused shutdown");
    for child in &mut children {
        let _ = child.kill();
        let _ = child.wait();
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Mutual TLS end to end: `raft-kv certs` makes the certificates, three `serve` processes use
/// them between each other and on their client ports; a client with a certificate of the
/// cluster's CA reads and writes and may shut a node down (no --allow-remote-shutdown); a
/// client without TLS, or with a certificate of another CA, is refused, and the node logs
/// why.
#[test]
fn a_tls_cluster_serves_authenticated_clients_only() {
    let dir = scratch("tls");
    let _ = std::fs::remove_dir_all(&dir);
    let certs = dir.join("certs");
    let other = dir.join("other");
    let (ok, out) = cli(&[
        "certs",
        "--dir",
        certs.to_str().unwrap(),
        "--nodes",
        "1,2,3",
    ]);
    assert!(ok, "{out}");
    let (ok, out) = cli(&["certs", "--dir", other.to_str().unwrap(), "--nodes", "1"]);
    assert!(ok, "{out}");
    let pem = |dir: &std::path::Path, name: &str| dir.join(name).to_str().unwrap().to_string();
    let tls_of = |dir: &std::path::Path, who: &str| {
        vec![
            "--tls-cert".to_string(),
            pem(dir, &format!("{who}.pem")),
            "--tls-key".to_string(),
            pem(dir, &format!("{who}-key.pem")),
            "--tls-ca".to_string(),
            pem(dir, "ca.pem"),
        ]
    };
    let (mut children, clients) = serve_three(&dir, |i| tls_of(&certs, &format!("node-{}", i + 1)));
    let cluster = clients.join(",");
    let with = |args: &[&str], tls: &[String]| {
        let mut all: Vec<&str> = args.to_vec();
        all.extend(tls.iter().map(String::as_str));
        cli(&all)
    };
    let client_tls = tls_of(&certs, "client");
    let (ok, out) = with(
        &["put", "secret", "kept", "--cluster", &cluster],
        &client_tls,
    );
    assert!(ok, "{out}");
    let (ok, out) = with(&["get", "secret", "--cluster", &cluster], &client_tls);
    assert!(ok && out.trim() == "kept", "{out}");
    let (ok, out) = with(&["status", "--cluster", &cluster], &client_tls);
    assert!(ok && out.contains("Leader "), "{out}");

    // No TLS: the node speaks TLS, the client does not understand it.
    let (ok, out) = cli(&["get", "secret", "--cluster", &clients[0]]);
    assert!(!ok, "a plaintext client read: {out}");
    // A certificate of another CA: refused, and the node says why.
    let (ok, out) = with(
        &["get", "secret", "--cluster", &clients[0]],
        &tls_of(&other, "client"),
    );
    assert!(!ok, "a client of another CA read: {out}");
    let logged = (0..100).any(|_| {
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::read_to_string(dir.join("n0.log"))
            .is_ok_and(|log| log.contains("refused a client: its TLS handshake failed"))
    });
    assert!(
        logged,
        "node 1 did not log the refused client:\n{}",
        std::fs::read_to_string(dir.join("n0.log")).unwrap_or_default()
    );

    // An authenticated client may shut a node down.
    let (ok, out) = with(&["shutdown", "--node", &clients[2]], &client_tls);
    assert!(ok && out.contains("shutting down"), "{out}");
    let exited = (0..500).any(|_| {
        std::thread::sleep(std::time::Duration::from_millis(10));
        matches!(children[2].try_wait(), Ok(Some(_)))
    });
    assert!(exited, "node 3 did not exit within 5 s of its shutdown");
    let (ok, out) = with(
        &["put", "after", "shutdown", "--cluster", &cluster],
        &client_tls,
    );
    assert!(ok, "two nodes of three still commit: {out}");
    for child in &mut children {
        let _ = child.kill();
        let _ = child.wait();
    }
    let _ = std::fs::remove_dir_all(&dir);
}
