//! A streamed snapshot of N MiB sent to a lagging follower between two processes on
//! 127.0.0.1, with each process's peak RSS growth during the transfer.
//!
//! ```sh
//! cargo run --release -p benches --bin snapshot-transfer -- --mib 1024
//! ```
//!
//! The leader (node 1, alone) grows a state machine whose state is a file, to N MiB (each
//! command appends 1 MiB of bytes generated from a seed, so the log stays small), and takes a
//! streamed snapshot of it. A second process then starts node 2, empty, and the leader adds it
//! as a learner: its log no longer holds the entries, so it sends the snapshot, chunk by chunk
//! from its snapshot file; node 2 stages the chunks in a file, installs it and restores its
//! state from it. Each process resets its peak RSS (`/proc/self/clear_refs`) just before the
//! transfer and reports the growth of the peak over its RSS at that moment; the two states
//! are compared by checksum.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use adapter_common::StateMachine;
use adapter_thread::transport::TcpTransport;
use adapter_thread::{NodeHandle, NodeOptions, TcpConfig};
use raft_proto::{Index, MembershipChange, Payload};

const MIB: usize = 1 << 20;
const CLUSTER: u64 = 0x5_0A95;

/// A state machine whose state is one file: every command appends bytes generated from a
/// seed; snapshots stream the file.
struct BlobMachine {
    path: PathBuf,
    file: File,
}

impl BlobMachine {
    fn new(path: PathBuf) -> io::Result<Self> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .read(true)
            .open(&path)?;
        file.set_len(0)?;
        Ok(Self { path, file })
    }
}

/// `len` bytes generated from `seed` (xorshift), in pieces handed to `out`.
fn generate(seed: u64, len: usize, mut out: impl FnMut(&[u8]) -> io::Result<()>) -> io::Result<()> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut piece = vec![0u8; 64 * 1024];
    let mut left = len;
    while left > 0 {
        let n = left.min(piece.len());
        for word in piece[..n].chunks_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            word.copy_from_slice(&x.to_le_bytes()[..word.len()]);
        }
        out(&piece[..n])?;
        left -= n;
    }
    Ok(())
}

impl StateMachine for BlobMachine {
    fn apply(&mut self, _index: Index, command: &[u8]) -> Vec<u8> {
        let (Some(len), Some(seed)) = (command.get(..4), command.get(4..12)) else {
            return Vec::new();
        };
        let len = u32::from_le_bytes(len.try_into().unwrap_or_default()) as usize;
        let seed = u64::from_le_bytes(seed.try_into().unwrap_or_default());
        let file = &mut self.file;
        if let Err(error) = generate(seed, len, |bytes| file.write_all(bytes)) {
            panic!("cannot grow the state file: {error}");
        }
        Vec::new()
    }

    fn snapshot(&self) -> Vec<u8> {
        std::fs::read(&self.path).unwrap_or_default()
    }

    fn restore(&mut self, snapshot: &[u8]) {
        let restored = self
            .file
            .set_len(0)
            .and_then(|()| self.file.write_all(snapshot));
        if let Err(error) = restored {
            panic!("cannot restore the state file: {error}");
        }
    }

    fn snapshot_to(&self, out: &mut dyn Write) -> io::Result<()> {
        let mut state = BufReader::with_capacity(MIB, File::open(&self.path)?);
        io::copy(&mut state, out).map(|_| ())
    }

    fn restore_from(&mut self, input: &mut dyn Read) -> io::Result<()> {
        self.file.set_len(0)?;
        let mut buf = vec![0u8; MIB];
        loop {
            let n = input.read(&mut buf)?;
            if n == 0 {
                return Ok(());
            }
            self.file.write_all(&buf[..n])?;
        }
    }
}

/// The CRC-32 and length of a file, read in bounded pieces.
fn checksum(path: &Path) -> io::Result<(u32, u64)> {
    let mut file = File::open(path)?;
    let mut hasher = crc32fast::Hasher::new();
    let mut buf = vec![0u8; MIB];
    let mut len = 0;
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            return Ok((hasher.finalize(), len));
        }
        hasher.update(&buf[..n]);
        len += n as u64;
    }
}

/// A field of `/proc/self/status`, in KiB.
fn proc_status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// Resets the peak RSS to the current RSS; returns the current RSS in KiB.
fn reset_peak() -> u64 {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    proc_status_kib("VmRSS:")
}

fn start_node(
    id: u64,
    voters: Vec<u64>,
    dir: &Path,
    listen: SocketAddr,
    peer: (u64, SocketAddr),
) -> Result<NodeHandle, String> {
    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    let mut options = NodeOptions::new(id, voters, dir.join("raft"));
    options.raft.stream_snapshots = true;
    options.raft.snapshot_catchup_entries = 0;
    options.snapshot_every = Some(64);
    let machine = BlobMachine::new(dir.join("state.bin")).map_err(|e| e.to_string())?;
    let tcp = TcpConfig::new(CLUSTER, id, listen, BTreeMap::from([peer]));
    let (tx, rx) = crossbeam_channel::bounded(1024);
    let transport = Arc::new(TcpTransport::start(tcp, tx).map_err(|e| e.to_string())?);
    adapter_thread::start(options, machine, transport, rx).map_err(|e| e.to_string())
}

fn wait_until(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if done() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// Node 1: grows the state to `mib` MiB, snapshots it, says `ready`, adds node 2 when told,
/// and reports its peak RSS growth when told to stop.
fn leader(dir: &Path, mib: u32, me: SocketAddr, peer: SocketAddr) -> Result<(), String> {
    let node = start_node(1, vec![1], dir, me, (2, peer))?;
    if !wait_until(Duration::from_secs(10), || {
        node.status().is_some_and(|s| s.leader == Some(1))
    }) {
        return Err("node 1 did not become leader".into());
    }
    let started = Instant::now();
    for seed in 0..=u64::from(mib) {
        // The last command adds nothing: the snapshot then covers every 1 MiB command.
        let len: u32 = if seed == u64::from(mib) {
            0
        } else {
            MIB as u32
        };
        let mut command = len.to_le_bytes().to_vec();
        command.extend(seed.to_le_bytes());
        node.propose_timeout(command, Duration::from_secs(60))
            .map_err(|e| format!("proposal failed: {e}"))?;
    }
    let applied = node.status().map_or(0, |s| s.applied_index);
    // Grow the log with empty commands until a snapshot covers the whole state.
    let mut seed = u64::from(mib) + 1;
    while node.status().map_or(0, |s| s.snapshot_index) < applied {
        let mut command = 0u32.to_le_bytes().to_vec();
        command.extend(seed.to_le_bytes());
        seed += 1;
        node.propose_timeout(command, Duration::from_secs(60))
            .map_err(|e| format!("proposal failed: {e}"))?;
    }
    let applied = node.status().map_or(0, |s| s.applied_index);
    let (crc, len) = checksum(&dir.join("state.bin")).map_err(|e| e.to_string())?;
    println!(
        "ready {applied} {crc:08x} {len} {:.1}",
        started.elapsed().as_secs_f64()
    );
    let mut lines = io::stdin().lock().lines();
    let _ = lines.next(); // "add"
    let before = reset_peak();
    node.change_membership_timeout(
        MembershipChange::AddLearner {
            id: 2,
            // Its Raft address, as adapter_common::member_address reads it.
            data: Payload::from(peer.to_string().into_bytes()),
        },
        Duration::from_secs(60),
    )
    .map_err(|e| format!("adding node 2 failed: {e}"))?;
    let _ = lines.next(); // "stop"
    let peak = proc_status_kib("VmHWM:");
    println!("leader {before} {peak}");
    node.shutdown();
    Ok(())
}

/// Node 2: starts empty, waits until it applied `target`, reports its peak RSS growth and
/// the checksum of its state.
fn follower(dir: &Path, target: Index, me: SocketAddr, peer: SocketAddr) -> Result<(), String> {
    let node = start_node(2, Vec::new(), dir, me, (1, peer))?;
    let before = reset_peak();
    let started = Instant::now();
    if !wait_until(Duration::from_secs(1800), || {
        node.status().is_some_and(|s| s.applied_index >= target)
    }) {
        return Err(format!("node 2 did not apply index {target} in 30 minutes"));
    }
    let seconds = started.elapsed().as_secs_f64();
    let peak = proc_status_kib("VmHWM:");
    let snapshot = node.status().map_or(0, |s| s.snapshot_index);
    node.shutdown();
    let (crc, len) = checksum(&dir.join("state.bin")).map_err(|e| e.to_string())?;
    println!("follower {before} {peak} {seconds:.2} {snapshot} {crc:08x} {len}");
    Ok(())
}

fn free_addr() -> Result<SocketAddr, String> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| e.to_string())
}

/// Reads `child`'s next output line.
fn next_line(
    lines: &mut impl Iterator<Item = io::Result<String>>,
    who: &str,
) -> Result<String, String> {
    lines
        .next()
        .and_then(Result::ok)
        .ok_or_else(|| format!("the {who} process ended early"))
}

fn run(mib: u32, dir: &Path) -> Result<(), String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let (a, b) = (free_addr()?, free_addr()?);
    let _ = std::fs::remove_dir_all(dir);
    let mut leader = Command::new(&exe)
        .args(["--role", "leader", "--mib", &mib.to_string()])
        .args(["--dir", &dir.join("node-1").display().to_string()])
        .args(["--me", &a.to_string(), "--peer", &b.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| e.to_string())?;
    let mut to_leader = leader.stdin.take().ok_or("no stdin")?;
    let mut from_leader = BufReader::new(leader.stdout.take().ok_or("no stdout")?).lines();
    let ready = next_line(&mut from_leader, "leader")?;
    let fields: Vec<&str> = ready.split_whitespace().collect();
    let [_, target, crc, len, grow_s] = fields[..] else {
        return Err(format!("unexpected line from the leader: {ready}"));
    };
    println!(
        "leader: state of {len} bytes (crc {crc}) grown in {grow_s} s, snapshot at index {target}"
    );
    let follower = Command::new(&exe)
        .args(["--role", "follower", "--target", target])
        .args(["--dir", &dir.join("node-2").display().to_string()])
        .args(["--me", &b.to_string(), "--peer", &a.to_string()])
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| e.to_string())?;
    writeln!(to_leader, "add").map_err(|e| e.to_string())?;
    let output = follower.wait_with_output().map_err(|e| e.to_string())?;
    writeln!(to_leader, "stop").map_err(|e| e.to_string())?;
    let leader_line = next_line(&mut from_leader, "leader")?;
    let _ = leader.wait();
    let follower_line = String::from_utf8_lossy(&output.stdout).trim().to_string();
    let f: Vec<&str> = follower_line.split_whitespace().collect();
    let l: Vec<&str> = leader_line.split_whitespace().collect();
    let ([_, f_before, f_peak, seconds, snapshot, f_crc, f_len], [_, l_before, l_peak]) =
        (&f[..], &l[..])
    else {
        return Err(format!(
            "unexpected lines: {leader_line:?} {follower_line:?}"
        ));
    };
    let kib = |s: &str| s.parse::<u64>().unwrap_or(0);
    let growth = |before: &str, peak: &str| kib(peak).saturating_sub(kib(before)) as f64 / 1024.0;
    let mib_s = kib(len) as f64 / MIB as f64 / seconds.parse::<f64>().unwrap_or(f64::INFINITY);
    println!(
        "follower: caught up through the snapshot at index {snapshot} in {seconds} s ({mib_s:.0} MiB/s)"
    );
    println!(
        "peak RSS growth during the transfer: leader {:.1} MiB (from {:.1}), follower {:.1} MiB (from {:.1})",
        growth(l_before, l_peak),
        kib(l_before) as f64 / 1024.0,
        growth(f_before, f_peak),
        kib(f_before) as f64 / 1024.0
    );
    if (*f_crc, *f_len) != (crc, len) {
        return Err(format!(
            "the follower's state ({f_len} bytes, crc {f_crc}) differs from the leader's ({len} bytes, crc {crc})"
        ));
    }
    println!("the follower's state equals the leader's ({len} bytes, crc {crc})");
    let _ = std::fs::remove_dir_all(dir);
    Ok(())
}

fn main() {
    // Warnings and errors of the nodes (RUST_LOG for more), on standard error.
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(io::stderr)
        .init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let addr = |name: &str| arg(name).and_then(|a| a.parse::<SocketAddr>().ok());
    let mib: u32 = arg("--mib").and_then(|m| m.parse().ok()).unwrap_or(1024);
    let result = match arg("--role").as_deref() {
        Some("leader") => match (arg("--dir"), addr("--me"), addr("--peer")) {
            (Some(dir), Some(me), Some(peer)) => leader(Path::new(&dir), mib, me, peer),
            _ => Err("--role leader needs --dir, --me and --peer".into()),
        },
        Some("follower") => match (
            arg("--dir"),
            arg("--target").and_then(|t| t.parse().ok()),
            addr("--me"),
            addr("--peer"),
        ) {
            (Some(dir), Some(target), Some(me), Some(peer)) => {
                follower(Path::new(&dir), target, me, peer)
            }
            _ => Err("--role follower needs --dir, --target, --me and --peer".into()),
        },
        _ => {
            let dir = arg("--dir").map_or_else(
                || std::env::temp_dir().join(format!("snapshot-transfer-{}", std::process::id())),
                PathBuf::from,
            );
            run(mib, &dir)
        }
    };
    if let Err(error) = result {
        eprintln!("error: {error}");
        std::process::exit(1);
    }
}
