//! `raft-kv bench-reads` and `raft-kv bench-failover`: measurements on real processes on
//! 127.0.0.1, printed as medians and percentiles (the machine is shared and noisy: compare
//! ratios within one run, not absolute numbers across runs).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use clap::ValueEnum;

use crate::demo::{Client, Cluster};
use crate::protocol::{Connection, Request, Response};
use crate::runtime::Runtime;
use crate::server::ReadMode;
use crate::store::KvCommand;

/// What the read benchmark measures.
#[derive(Debug, Clone)]
pub(crate) struct ReadBench {
    pub(crate) exe: PathBuf,
    pub(crate) dir: PathBuf,
    pub(crate) read_modes: Vec<ReadMode>,
    pub(crate) clients: usize,
    pub(crate) duration: Duration,
    pub(crate) runtime: Runtime,
}

const KEYS: usize = 1000;

fn name(mode: ReadMode) -> String {
    mode.to_possible_value()
        .map_or_else(|| format!("{mode:?}"), |v| v.get_name().to_string())
}

/// The `p`-quantile of sorted `samples`, in milliseconds.
fn quantile(samples: &[Duration], p: f64) -> f64 {
    let at = ((samples.len() as f64 * p) as usize).min(samples.len().saturating_sub(1));
    samples.get(at).map_or(0.0, |d| d.as_secs_f64() * 1000.0)
}

/// For each read mode: a fresh cluster, `KEYS` keys written, then `clients` readers at the
/// leader for `duration`.
pub(crate) fn reads(bench: &ReadBench) -> Result<(), String> {
    println!(
        "reads at the leader of a 3-process cluster on 127.0.0.1 ({:?} adapter), {} clients, {:?} per mode",
        bench.runtime, bench.clients, bench.duration
    );
    for &mode in &bench.read_modes {
        let dir = bench.dir.join(name(mode));
        let cluster = Cluster::start(bench.exe.clone(), bench.runtime, mode, &dir)?;
        let (leader, _) = cluster
            .wait_for_leader(0, Duration::from_secs(10))
            .ok_or("no leader was elected within 10 s")?;
        let mut writer = Client::new(&cluster);
        for i in 0..KEYS {
            let command = KvCommand::Put {
                key: crate::demo::key(i),
                value: crate::demo::value(i),
            };
            writer
                .execute(&command, Duration::from_secs(10))
                .ok_or("the preload did not commit")?;
        }
        let addr = cluster.client_addr(leader);
        let (latencies, errors) = read_load(addr, bench.clients, bench.duration);
        let mut latencies = latencies;
        latencies.sort();
        let seconds = bench.duration.as_secs_f64();
        println!(
            "--read-mode {:<5}  {:>8.0} reads/s  p50 {:.3} ms  p99 {:.3} ms  ({} reads, {} errors)",
            name(mode),
            latencies.len() as f64 / seconds,
            quantile(&latencies, 0.50),
            quantile(&latencies, 0.99),
            latencies.len(),
            errors
        );
        cluster.stop();
    }
    Ok(())
}

/// `clients` threads reading random keys at `addr` for `duration`: every read's latency, and
/// how many failed.
fn read_load(addr: SocketAddr, clients: usize, duration: Duration) -> (Vec<Duration>, u64) {
    let latencies = Mutex::new(Vec::new());
    let errors = AtomicU64::new(0);
    let stop = AtomicBool::new(false);
    std::thread::scope(|scope| {
        for c in 0..clients {
            let (latencies, errors, stop) = (&latencies, &errors, &stop);
            scope.spawn(move || {
                let mut conn = Connection::new(addr, Duration::from_secs(5));
                let mut mine = Vec::new();
                let mut i = c * 7919;
                while !stop.load(Ordering::Relaxed) {
                    i = (i + 7919) % KEYS;
                    let request = Request::Command(KvCommand::Get {
                        key: crate::demo::key(i),
                    });
                    let t0 = Instant::now();
                    match conn.call(&request) {
                        Ok(Response::Done(Some(_))) => mine.push(t0.elapsed()),
                        _ => {
                            errors.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                latencies
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .extend(mine);
            });
        }
        std::thread::sleep(duration);
        stop.store(true, Ordering::Relaxed);
    });
    (
        latencies.into_inner().unwrap_or_else(|p| p.into_inner()),
        errors.into_inner(),
    )
}

/// How the leader is stopped.
#[derive(Debug, Clone, Copy)]
enum Stop {
    Term,
    Kill,
}

/// For SIGTERM and SIGKILL in turn: `rounds` times, stop the leader of a fresh cluster under
/// a write load, and measure until another node leads and until a write is acknowledged again.
pub(crate) fn failover(
    exe: PathBuf,
    dir: &Path,
    rounds: usize,
    runtime: Runtime,
) -> Result<(), String> {
    println!(
        "leader stopped under a write load, 3 processes on 127.0.0.1 ({runtime:?} adapter), {rounds} rounds per signal"
    );
    for stop in [Stop::Term, Stop::Kill] {
        let mut leader_gaps = Vec::new();
        let mut write_gaps = Vec::new();
        let mut cluster = Cluster::start(
            exe.clone(),
            runtime,
            ReadMode::Index,
            &dir.join(format!("{stop:?}").to_lowercase()),
        )?;
        for round in 0..rounds {
            let (leader, term) = cluster
                .wait_for_leader(0, Duration::from_secs(10))
                .ok_or("no leader was elected within 10 s")?;
            let mut client = Client::new(&cluster);
            let put = |i: usize| KvCommand::Put {
                key: format!("failover-{round}-{i}"),
                value: b"x".to_vec(),
            };
            client
                .execute(&put(0), Duration::from_secs(10))
                .ok_or("no write before the stop")?;
            let pid = cluster.pid(leader).ok_or("the leader has no process")?;
            let stopped_at = Instant::now();
            match stop {
                Stop::Term => {
                    std::process::Command::new("kill")
                        .args(["-TERM", &pid.to_string()])
                        .status()
                        .map_err(|e| format!("cannot run kill: {e}"))?;
                }
                Stop::Kill => cluster.kill(leader),
            }
            let (new_leader, _) = cluster
                .wait_for_leader(term, Duration::from_secs(10))
                .ok_or("no new leader within 10 s")?;
            leader_gaps.push(stopped_at.elapsed());
            client
                .execute(&put(1), Duration::from_secs(10))
                .ok_or("no write after the stop")?;
            write_gaps.push(stopped_at.elapsed());
            if new_leader == leader {
                return Err(format!("node {leader} still leads after its stop"));
            }
            // Reap the stopped process, restart it, and let it catch up.
            if let Stop::Term = stop {
                cluster.reap(leader, Duration::from_secs(5))?;
            }
            cluster.spawn(leader)?;
            std::thread::sleep(Duration::from_millis(1500));
        }
        leader_gaps.sort();
        write_gaps.sort();
        let label = match stop {
            Stop::Term => "SIGTERM (hand-over)",
            Stop::Kill => "SIGKILL (election)",
        };
        println!(
            "{label:<20}  new leader after: median {:.1} ms, max {:.1} ms;  first write after: median {:.1} ms, max {:.1} ms",
            quantile(&leader_gaps, 0.5),
            quantile(&leader_gaps, 1.0),
            quantile(&write_gaps, 0.5),
            quantile(&write_gaps, 1.0),
        );
        cluster.stop();
    }
    Ok(())
}

/// What the memory benchmark runs.
#[derive(Debug, Clone)]
pub(crate) struct MemoryBench {
    pub(crate) exe: PathBuf,
    pub(crate) dir: PathBuf,
    pub(crate) clients: usize,
    pub(crate) duration: Duration,
    pub(crate) runtime: Runtime,
    pub(crate) snapshot_every: u64,
}

/// A process's resident set now and at its peak, in KiB, from `/proc/PID/status`.
fn rss_kib(pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))?
            .split_whitespace()
            .nth(1)?
            .parse::<u64>()
            .ok()
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

/// A fresh cluster snapshotting every `snapshot_every` entries, `clients` writers overwriting
/// a fixed set of keys for `duration`; samples each node's resident memory every second and
/// prints, per node, its RSS after a warm-up, at the end, and its peak.
pub(crate) fn memory(bench: &MemoryBench) -> Result<(), String> {
    const KEYS: usize = 10_000;
    const WARM_UP: Duration = Duration::from_secs(10);
    let every = bench.snapshot_every.to_string();
    let cluster = Cluster::start_with(
        bench.exe.clone(),
        bench.runtime,
        ReadMode::Index,
        &bench.dir,
        None,
        &["--snapshot-every", &every],
    )?;
    let (leader, _) = cluster
        .wait_for_leader(0, Duration::from_secs(10))
        .ok_or("no leader was elected within 10 s")?;
    println!(
        "memory of a 3-process cluster ({:?} adapter) under {} writers overwriting {KEYS} keys for {:?}, snapshots every {} entries",
        bench.runtime, bench.clients, bench.duration, bench.snapshot_every
    );
    let stop = AtomicBool::new(false);
    let writes = AtomicU64::new(0);
    let ids = cluster.ids();
    let pids: Vec<(u64, u32)> = ids
        .iter()
        .filter_map(|&id| Some((id, cluster.pid(id)?)))
        .collect();
    let mut warm: Vec<Option<u64>> = vec![None; pids.len()];
    let mut last: Vec<u64> = vec![0; pids.len()];
    let mut highest: Vec<u64> = vec![0; pids.len()];
    let mut writes_at_warm = 0;
    let started = Instant::now();
    std::thread::scope(|scope| {
        for c in 0..bench.clients {
            let mut client = Client::new(&cluster);
            let (stop, writes) = (&stop, &writes);
            scope.spawn(move || {
                let mut i = c;
                while !stop.load(Ordering::Relaxed) {
                    let command = KvCommand::Put {
                        key: crate::demo::key(i % KEYS),
                        value: format!("{i:016}").into_bytes(),
                    };
                    if client.execute(&command, Duration::from_secs(5)).is_some() {
                        writes.fetch_add(1, Ordering::Relaxed);
                    }
                    i += bench.clients;
                }
            });
        }
        let mut next_minute = 1;
        while started.elapsed() < bench.duration {
            std::thread::sleep(Duration::from_secs(1));
            if started.elapsed() >= Duration::from_secs(60 * next_minute) {
                // One line a minute: whether memory levels off or keeps growing.
                let now: Vec<String> = pids
                    .iter()
                    .map(|&(id, pid)| {
                        let rss = rss_kib(pid).map_or(0, |(rss, _)| rss);
                        format!("node {id} {:.1} MiB", rss as f64 / 1024.0)
                    })
                    .collect();
                println!(
                    "minute {next_minute}: {} writes; RSS {}",
                    writes.load(Ordering::Relaxed),
                    now.join(", ")
                );
                next_minute += 1;
            }
            for (k, &(_, pid)) in pids.iter().enumerate() {
                if let Some((rss, _)) = rss_kib(pid) {
                    last[k] = rss;
                    highest[k] = highest[k].max(rss);
                    if warm[k].is_none() && started.elapsed() >= WARM_UP {
                        warm[k] = Some(rss);
                        writes_at_warm = writes.load(Ordering::Relaxed);
                    }
                }
            }
        }
        stop.store(true, Ordering::Relaxed);
    });
    let total = writes.load(Ordering::Relaxed);
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "{total} writes in {seconds:.0} s ({:.0}/s), {} after the warm-up",
        total as f64 / seconds,
        total - writes_at_warm
    );
    for (k, &(id, pid)) in pids.iter().enumerate() {
        // The kernel's high-water mark, or the highest sample if that is higher (VmHWM is
        // updated lazily).
        let peak = rss_kib(pid).map_or(0, |(_, hwm)| hwm).max(highest[k]);
        let warm = warm[k].unwrap_or(0);
        let role = if id == leader { "leader" } else { "follower" };
        println!(
            "node {id} ({role}): RSS {:.1} MiB after {}s warm-up, {:.1} MiB at the end, peak {:.1} MiB; growth after warm-up to peak {:.1} MiB",
            warm as f64 / 1024.0,
            WARM_UP.as_secs(),
            last[k] as f64 / 1024.0,
            peak as f64 / 1024.0,
            peak.saturating_sub(warm) as f64 / 1024.0
        );
    }
    cluster.stop();
    Ok(())
}

/// What the TLS benchmark measures.
#[derive(Debug, Clone)]
pub(crate) struct TlsBench {
    pub(crate) exe: PathBuf,
    pub(crate) dir: PathBuf,
    pub(crate) writes: usize,
    pub(crate) clients: usize,
    pub(crate) rounds: usize,
    pub(crate) runtime: Runtime,
}

/// The demo's load (no kill) on fresh clusters, plain and with mutual TLS in turn; prints
/// each run's throughput and latencies, then the medians and the ratios TLS / plain.
pub(crate) fn tls(bench: &TlsBench) -> Result<(), String> {
    println!(
        "the demo's load without the kill, {} writes by {} clients, {:?} adapter, plain TCP and mutual TLS in turn",
        bench.writes, bench.clients, bench.runtime
    );
    let mut runs: [Vec<crate::demo::Phase>; 2] = [Vec::new(), Vec::new()];
    for round in 0..bench.rounds.max(1) {
        for (kind, tls) in [(0, false), (1, true)] {
            let report = crate::demo::run(
                bench.exe.clone(),
                &crate::demo::DemoConfig {
                    dir: bench.dir.clone(),
                    writes: bench.writes,
                    clients: bench.clients,
                    kill_at: None,
                    quiet: true,
                    runtime: bench.runtime,
                    read_mode: ReadMode::Index,
                    tls,
                },
            )?;
            let phase = report.steady;
            println!(
                "  round {} {:>5}: {:>7.0} writes/s, p50 {:.2} ms, p99 {:.2} ms (floor {:.3} ms)",
                round + 1,
                if tls { "TLS" } else { "plain" },
                phase.rate(),
                phase.p50_ms,
                phase.p99_ms,
                report.floor.total().as_secs_f64() * 1000.0,
            );
            runs[kind].push(phase);
        }
    }
    crate::protocol::set_client_tls(None);
    let median = |values: Vec<f64>| {
        let mut values = values;
        values.sort_by(f64::total_cmp);
        values[values.len() / 2]
    };
    let summary = |phases: &[crate::demo::Phase]| {
        (
            median(phases.iter().map(crate::demo::Phase::rate).collect()),
            median(phases.iter().map(|p| p.p50_ms).collect()),
            median(phases.iter().map(|p| p.p99_ms).collect()),
        )
    };
    let (plain, tls) = (summary(&runs[0]), summary(&runs[1]));
    println!(
        "median plain: {:.0} writes/s, p50 {:.2} ms, p99 {:.2} ms",
        plain.0, plain.1, plain.2
    );
    println!(
        "median TLS:   {:.0} writes/s, p50 {:.2} ms, p99 {:.2} ms",
        tls.0, tls.1, tls.2
    );
    println!(
        "TLS / plain: throughput {:.2}x, p50 {:.2}x, p99 {:.2}x",
        tls.0 / plain.0.max(1e-9),
        tls.1 / plain.1.max(1e-9),
        tls.2 / plain.2.max(1e-9)
    );
    Ok(())
}
