//! `raft-kv demo`: three replicas as child processes on 127.0.0.1, a client load with a
//! progress bar, the leader killed with SIGKILL half-way, failover measured, the killed node
//! restarted, and every acknowledged write checked on every node; meanwhile a few clients
//! read and write shared keys, and their history is checked for linearizability.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use adapter_common::faults::FaultyLink;
use indicatif::{ProgressBar, ProgressStyle};
use raft_proto::NodeId;

use clap::ValueEnum;

use crate::history::Recorder;
use crate::protocol::{Connection, Request, Response};
use crate::runtime::Runtime;
use crate::server::ReadMode;
use crate::store::KvCommand;

/// How many clients record their history in the demo and the chaos runs.
const RECORDED_CLIENTS: u64 = 4;

/// What the demo does.
#[derive(Debug, Clone)]
pub(crate) struct DemoConfig {
    pub(crate) dir: PathBuf,
    pub(crate) writes: usize,
    pub(crate) clients: usize,
    /// Kill the leader when this fraction of the writes is acknowledged (None: never).
    pub(crate) kill_at: Option<f64>,
    pub(crate) quiet: bool,
    pub(crate) runtime: Runtime,
    pub(crate) read_mode: ReadMode,
    /// Mutual TLS between the nodes and with the clients.
    pub(crate) tls: bool,
}

/// What the demo measured.
#[derive(Debug, Clone)]
pub(crate) struct DemoReport {
    pub(crate) acknowledged: usize,
    pub(crate) seconds: f64,
    /// The floor measured at the start: fsync + round trip.
    pub(crate) floor: adapter_common::floor::Floor,
    /// The steady state before the kill (or of the whole run without one).
    pub(crate) steady: Phase,
    /// The writes acknowledged after the kill, pause included.
    pub(crate) after_kill: Option<Phase>,
    pub(crate) failover_ms: Option<f64>,
    /// The longest time without an acknowledged write, from the kill on.
    pub(crate) longest_gap_ms: Option<f64>,
    pub(crate) verified_nodes: usize,
    /// The recorded clients' verdict line.
    pub(crate) history: String,
}

/// Writes acknowledged in one part of the run.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Phase {
    pub(crate) writes: usize,
    pub(crate) seconds: f64,
    pub(crate) p50_ms: f64,
    pub(crate) p99_ms: f64,
}

impl Phase {
    /// `done` holds (latency, acknowledged at) of every write; the phase keeps those
    /// acknowledged from `from` to `to`, both included (times since the start).
    fn of(done: &[(Duration, Duration)], from: Duration, to: Duration) -> Self {
        let mut latencies: Vec<Duration> = done
            .iter()
            .filter(|(_, at)| (from..=to).contains(at))
            .map(|(latency, _)| *latency)
            .collect();
        latencies.sort();
        let percentile = |p: f64| -> f64 {
            latencies
                .get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1)))
                .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
        };
        Self {
            writes: latencies.len(),
            seconds: to.saturating_sub(from).as_secs_f64(),
            p50_ms: percentile(0.50),
            p99_ms: percentile(0.99),
        }
    }

    pub(crate) fn rate(&self) -> f64 {
        self.writes as f64 / self.seconds.max(1e-9)
    }
}

const NODES: NodeId = 3;
const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// A cluster of `raft-kv serve` child processes.
pub(crate) struct Cluster {
    exe: PathBuf,
    runtime: Runtime,
    read_mode: ReadMode,
    dir: PathBuf,
    /// The nodes the cluster was started with.
    bootstrap: Vec<NodeId>,
    peers: BTreeMap<NodeId, SocketAddr>,
    clients: BTreeMap<NodeId, SocketAddr>,
    children: BTreeMap<NodeId, Child>,
    /// With proxies: the link each node dials to reach each other one, by (from, to).
    links: BTreeMap<(NodeId, NodeId), FaultyLink>,
    /// The nodes stopped with SIGSTOP.
    paused: BTreeSet<NodeId>,
    /// More arguments for every `raft-kv serve` (see [`start_with`](Self::start_with)).
    serve_args: Vec<String>,
    /// With TLS: where the CA's certificate and each node's certificate and key are.
    tls_dir: Option<PathBuf>,
}

impl Cluster {
    /// Starts three nodes with data under `dir` (emptied first).
    pub(crate) fn start(
        exe: PathBuf,
        runtime: Runtime,
        read_mode: ReadMode,
        dir: &Path,
    ) -> Result<Self, String> {
        Self::start_with(exe, runtime, read_mode, dir, None, &[])
    }

    /// Like [`start`](Self::start), with mutual TLS between the nodes and with this
    /// process's clients: a CA and certificates are made in `dir/tls` (`raft-kv certs`).
    pub(crate) fn start_tls(
        exe: PathBuf,
        runtime: Runtime,
        read_mode: ReadMode,
        dir: &Path,
    ) -> Result<Self, String> {
        let mut cluster = Self::prepare(exe, runtime, read_mode, dir, None, &[])?;
        let tls_dir = dir.join("tls");
        let ca = adapter_common::tls::generate::ClusterCa::new("raft-kv demo")
            .map_err(|e| format!("cannot make a CA: {e}"))?;
        let ids: Vec<NodeId> = (1..=NODES).collect();
        ca.write_cluster(&tls_dir, &ids)
            .map_err(|e| format!("cannot write certificates: {e}"))?;
        let client = adapter_common::tls::TlsConfig::from_pem_files(
            &tls_dir.join("client.pem"),
            &tls_dir.join("client-key.pem"),
            &tls_dir.join("ca.pem"),
        )
        .map_err(|e| format!("TLS: {e}"))?;
        crate::protocol::set_client_tls(Some(client));
        cluster.tls_dir = Some(tls_dir);
        cluster.spawn_all()?;
        Ok(cluster)
    }

    /// The cluster of a chaos run, as `config` says; with `proxies`, see
    /// [`start_with`](Self::start_with).
    pub(crate) fn start_chaos(
        exe: PathBuf,
        config: &ChaosConfig,
        proxies: Option<u64>,
    ) -> Result<Self, String> {
        let serve_args = config.serve_args();
        Self::start_with(
            exe,
            config.runtime,
            config.read_mode,
            &config.dir,
            proxies,
            serve_args,
        )
    }

    /// Like [`start`](Self::start); with `proxies` (a seed for their jitter), every peer
    /// link goes through a [`FaultyLink`] (see [`link`](Self::link)); every node gets
    /// `serve_args` as extra `raft-kv serve` arguments.
    pub(crate) fn start_with(
        exe: PathBuf,
        runtime: Runtime,
        read_mode: ReadMode,
        dir: &Path,
        proxies: Option<u64>,
        serve_args: &[&str],
    ) -> Result<Self, String> {
        let mut cluster = Self::prepare(exe, runtime, read_mode, dir, proxies, serve_args)?;
        cluster.spawn_all()?;
        Ok(cluster)
    }

    /// Starts the nodes the cluster was made with.
    fn spawn_all(&mut self) -> Result<(), String> {
        (1..=NODES).try_for_each(|id| self.spawn(id))
    }

    /// The cluster of [`start_with`](Self::start_with), its nodes not started yet.
    fn prepare(
        exe: PathBuf,
        runtime: Runtime,
        read_mode: ReadMode,
        dir: &Path,
        proxies: Option<u64>,
        serve_args: &[&str],
    ) -> Result<Self, String> {
        let _ = std::fs::remove_dir_all(dir);
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let mut ports = free_ports(2 * NODES as usize)?.into_iter();
        let mut peers = BTreeMap::new();
        let mut clients = BTreeMap::new();
        for id in 1..=NODES {
            peers.insert(id, ports.next().ok_or("no port")?);
            clients.insert(id, ports.next().ok_or("no port")?);
        }
        let mut cluster = Self {
            exe,
            runtime,
            read_mode,
            dir: dir.to_path_buf(),
            bootstrap: (1..=NODES).collect(),
            links: BTreeMap::new(),
            peers,
            clients,
            children: BTreeMap::new(),
            paused: BTreeSet::new(),
            serve_args: serve_args.iter().map(|a| a.to_string()).collect(),
            tls_dir: None,
        };
        if let Some(seed) = proxies {
            for (&from, &to) in cluster
                .peers
                .keys()
                .flat_map(|f| cluster.peers.keys().map(move |t| (f, t)))
            {
                if from != to {
                    let link = FaultyLink::start(cluster.peers[&to], seed ^ (from * 31 + to))
                        .map_err(|e| format!("cannot start a proxy: {e}"))?;
                    cluster.links.insert((from, to), link);
                }
            }
        }
        Ok(cluster)
    }

    /// The proxy node `from` dials to reach node `to` (a cluster started with proxies).
    pub(crate) fn link(&self, from: NodeId, to: NodeId) -> Option<&FaultyLink> {
        self.links.get(&(from, to))
    }

    /// Every proxied link to or from node `id`.
    pub(crate) fn links_of(&self, id: NodeId) -> impl Iterator<Item = &FaultyLink> {
        self.links
            .iter()
            .filter(move |((from, to), _)| *from == id || *to == id)
            .map(|(_, link)| link)
    }

    /// Makes every link healthy again.
    pub(crate) fn heal_links(&self) {
        for link in self.links.values() {
            link.heal();
        }
    }

    /// Stops node `id`'s process with SIGSTOP (it keeps its sockets and state, and its
    /// clock runs on).
    pub(crate) fn pause(&mut self, id: NodeId) -> Result<(), String> {
        let pid = self
            .pid(id)
            .ok_or_else(|| format!("node {id} does not run"))?;
        signal(pid, "-STOP")?;
        self.paused.insert(id);
        Ok(())
    }

    /// Wakes node `id` after [`pause`](Self::pause) with SIGCONT.
    pub(crate) fn resume(&mut self, id: NodeId) -> Result<(), String> {
        if self.paused.remove(&id) {
            if let Some(pid) = self.pid(id) {
                signal(pid, "-CONT")?;
            }
        }
        Ok(())
    }

    /// Wakes every paused node.
    pub(crate) fn resume_all(&mut self) -> Result<(), String> {
        for id in std::mem::take(&mut self.paused) {
            if let Some(pid) = self.pid(id) {
                signal(pid, "-CONT")?;
            }
        }
        Ok(())
    }

    /// The lines of the nodes' logs that report a panic.
    pub(crate) fn panics(&self) -> Vec<String> {
        let mut found = Vec::new();
        for id in self.clients.keys() {
            let path = self.dir.join(format!("node-{id}.log"));
            let Ok(log) = std::fs::read_to_string(&path) else {
                continue;
            };
            found.extend(
                log.lines()
                    .filter(|line| line.contains("panicked"))
                    .map(|line| format!("node {id}: {line}")),
            );
        }
        found
    }

    /// For each of `ids`: whether its process still runs (or how it ended) and the last
    /// lines of its log, to tell why it did not answer.
    pub(crate) fn describe(&mut self, ids: &[NodeId]) -> String {
        let mut out = String::new();
        for id in ids {
            let state = match self.children.get_mut(id).map(Child::try_wait) {
                None => "not started".to_string(),
                Some(Ok(None)) => "still running".to_string(),
                Some(Ok(Some(status))) => format!("exited: {status}"),
                Some(Err(e)) => format!("unknown: {e}"),
            };
            let path = self.dir.join(format!("node-{id}.log"));
            let log = std::fs::read_to_string(&path).unwrap_or_default();
            let lines: Vec<&str> = log.lines().collect();
            let tail = lines[lines.len().saturating_sub(20)..].join("\n  ");
            out.push_str(&format!("node {id} ({state}), its log ends:\n  {tail}\n"));
        }
        out
    }

    /// Adds node `id` on fresh ports and starts it empty with `--join` (the current members'
    /// client addresses): it asks to be added as a learner.
    pub(crate) fn spawn_joining(&mut self, id: NodeId) -> Result<(), String> {
        let mut ports = free_ports(2)?.into_iter();
        self.peers.insert(id, ports.next().ok_or("no port")?);
        self.clients.insert(id, ports.next().ok_or("no port")?);
        self.spawn(id)
    }

    /// Forgets node `id` (removed from the cluster), killing it if it runs.
    pub(crate) fn forget(&mut self, id: NodeId) {
        self.kill(id);
        self.peers.remove(&id);
        self.clients.remove(&id);
    }

    /// The data node `id` carries as a member: its Raft and client addresses.
    pub(crate) fn member_data(&self, id: NodeId) -> String {
        crate::server::member_data(self.peers[&id], self.clients[&id])
    }

    /// The client addresses of every node.
    pub(crate) fn client_addrs(&self) -> Vec<SocketAddr> {
        self.clients.values().copied().collect()
    }

    /// The `raft-kv serve` arguments of node `id` for TLS (none without).
    fn tls_args(&self, id: NodeId) -> Vec<PathBuf> {
        let Some(dir) = &self.tls_dir else {
            return Vec::new();
        };
        let name = adapter_common::tls::node_name(id);
        vec![
            "--tls-cert".into(),
            dir.join(format!("{name}.pem")),
            "--tls-key".into(),
            dir.join(format!("{name}-key.pem")),
            "--tls-ca".into(),
            dir.join("ca.pem"),
        ]
    }

    /// Starts (or restarts) node `id` as a child process, logging to its data directory: a
    /// bootstrap node with `--peers`, any other with `--join`.
    pub(crate) fn spawn(&mut self, id: NodeId) -> Result<(), String> {
        let membership = if self.bootstrap.contains(&id) {
            let peers: Vec<String> = self
                .peers
                .iter()
                .filter(|(i, _)| self.bootstrap.contains(i))
                .map(|(i, a)| {
                    // Through the proxy of the link from `id` to `i`, if there is one.
                    let a = self.link(id, *i).map_or(*a, FaultyLink::addr);
                    format!("{i}={a}/{}", self.clients[i])
                })
                .collect();
            vec!["--peers".to_string(), peers.join(",")]
        } else {
            let join: Vec<String> = self
                .clients
                .iter()
                .filter(|(&i, _)| i != id)
                .map(|(_, a)| a.to_string())
                .collect();
            vec![
                "--raft-addr".to_string(),
                self.peers[&id].to_string(),
                "--join".to_string(),
                join.join(","),
            ]
        };
        let log_path = self.dir.join(format!("node-{id}.log"));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(|e| format!("cannot open {}: {e}", log_path.display()))?;
        let err = log.try_clone().map_err(|e| e.to_string())?;
        let child = Command::new(&self.exe)
            .arg("serve")
            .args(["--id", &id.to_string()])
            .args(&membership)
            .args(["--client-addr", &self.clients[&id].to_string()])
            // The node exits when this process dies (its stdin closes): no orphans.
            .arg("--exit-with-parent")
            // `stop` asks each node to shut down through its client port.
            .arg("--allow-remote-shutdown")
            .arg("--runtime")
            .arg(
                self.runtime
                    .to_possible_value()
                    .map_or_else(|| "thread".to_string(), |v| v.get_name().to_string()),
            )
            .arg("--read-mode")
            .arg(
                self.read_mode
                    .to_possible_value()
                    .map_or_else(|| "index".to_string(), |v| v.get_name().to_string()),
            )
            .arg("--data-dir")
            .arg(self.dir.join(format!("node-{id}")))
            .args(&self.serve_args)
            .args(self.tls_args(id))
            .stdin(Stdio::piped())
            .stdout(log)
            .stderr(err)
            .spawn()
            .map_err(|e| format!("cannot start node {id}: {e}"))?;
        self.children.insert(id, child);
        Ok(())
    }

    /// Waits up to `limit` for node `id`'s process to exit (after a SIGTERM), then kills it
    /// if it has not; an error if it had to be killed.
    pub(crate) fn reap(&mut self, id: NodeId, limit: Duration) -> Result<(), String> {
        let Some(mut child) = self.children.remove(&id) else {
            return Ok(());
        };
        let start = Instant::now();
        while start.elapsed() < limit {
            if let Ok(Some(_)) = child.try_wait() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        let _ = child.kill();
        let _ = child.wait();
        Err(format!("node {id} did not exit within {limit:?}"))
    }

    /// The process id of node `id`'s process, if it runs.
    pub(crate) fn pid(&self, id: NodeId) -> Option<u32> {
        self.children.get(&id).map(Child::id)
    }

    /// Kills node `id` with SIGKILL (paused or not).
    pub(crate) fn kill(&mut self, id: NodeId) {
        self.paused.remove(&id);
        if let Some(mut child) = self.children.remove(&id) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The client address of node `id`.
    pub(crate) fn client_addr(&self, id: NodeId) -> SocketAddr {
        self.clients[&id]
    }

    /// The node ids.
    pub(crate) fn ids(&self) -> Vec<NodeId> {
        self.clients.keys().copied().collect()
    }

    /// The leader and its term, if a running node claims leadership.
    pub(crate) fn leader(&self) -> Option<(NodeId, u64)> {
        let mut best = None;
        for id in self.children.keys() {
            let mut conn = Connection::new(self.clients[id], Duration::from_millis(300));
            if let Ok(Response::Status { role, term, .. }) = conn.call(&Request::Status) {
                if role == "Leader" && best.is_none_or(|(_, t)| term > t) {
                    best = Some((*id, term));
                }
            }
        }
        best
    }

    /// Waits up to `limit` for a leader of a term above `after`.
    pub(crate) fn wait_for_leader(&self, after: u64, limit: Duration) -> Option<(NodeId, u64)> {
        let start = Instant::now();
        while start.elapsed() < limit {
            if let Some((id, term)) = self.leader() {
                if term > after {
                    return Some((id, term));
                }
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        None
    }

    /// The key-value pairs each running node holds, once they all agree (or after `limit`).
    pub(crate) fn converged_dumps(
        &self,
        limit: Duration,
    ) -> BTreeMap<NodeId, BTreeMap<String, Vec<u8>>> {
        let start = Instant::now();
        loop {
            let mut dumps = BTreeMap::new();
            let mut applied = Vec::new();
            for id in self.children.keys() {
                let mut conn = Connection::new(self.clients[id], CALL_TIMEOUT);
                if let Ok(Response::Dump(pairs, index)) = conn.call(&Request::Dump) {
                    dumps.insert(*id, pairs.into_iter().collect::<BTreeMap<_, _>>());
                    applied.push(index);
                }
            }
            let agree = dumps.len() == self.children.len()
                && applied.windows(2).all(|w| w[0] == w[1])
                && dumps.values().all(|d| Some(d) == dumps.values().next());
            if agree || start.elapsed() > limit {
                return dumps;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Asks every node to shut down cleanly; kills those that do not within a few seconds.
    pub(crate) fn stop(mut self) {
        for (id, addr) in &self.clients {
            if self.children.contains_key(id) {
                let mut conn = Connection::new(*addr, Duration::from_secs(2));
                let _ = conn.call(&Request::Shutdown);
            }
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        for (_, mut child) in std::mem::take(&mut self.children) {
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for (_, mut child) in std::mem::take(&mut self.children) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Sends a signal (`-STOP`, `-CONT`, `-TERM`) to process `pid` with kill(1).
pub(crate) fn signal(pid: u32, which: &str) -> Result<(), String> {
    let status = Command::new("kill")
        .args([which, &pid.to_string()])
        .status()
        .map_err(|e| format!("cannot run kill: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("kill {which} {pid} failed: {status}"))
    }
}

/// Ports free now (bound and released: good enough on loopback), outside the ephemeral range.
fn free_ports(n: usize) -> Result<Vec<SocketAddr>, String> {
    // Below the kernel's ephemeral range: a port taken from it (port 0) can be handed to an
    // outgoing connection while its node is down after a kill (clients and proxies connect
    // all the time), and the restarted node then cannot bind it again.
    let low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    let (first, last) = if low > 12_000 {
        (10_000u64, u64::from(low))
    } else {
        // An unusual range: fall back on the ports above it.
        (u64::from(low).max(1024) + 30_000, 65_000)
    };
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let mut random = random_below(nanos ^ u64::from(std::process::id()).rotate_left(32));
    let mut listeners = Vec::with_capacity(n);
    for _ in 0..10_000 {
        if listeners.len() == n {
            break;
        }
        let port = (first + random(last - first)) as u16;
        if let Ok(listener) = TcpListener::bind(("127.0.0.1", port)) {
            listeners.push(listener);
        }
    }
    if listeners.len() < n {
        return Err(format!("found only {} free ports of {n}", listeners.len()));
    }
    listeners
        .iter()
        .map(|l| l.local_addr().map_err(|e| e.to_string()))
        .collect()
}

/// A client that follows leader hints and retries until its write is acknowledged.
pub(crate) struct Client {
    connections: BTreeMap<NodeId, Connection>,
    leader: NodeId,
}

impl Client {
    pub(crate) fn new(cluster: &Cluster) -> Self {
        Self {
            connections: cluster
                .ids()
                .into_iter()
                .map(|id| (id, Connection::new(cluster.client_addr(id), CALL_TIMEOUT)))
                .collect(),
            leader: 1,
        }
    }

    /// Replicates `command`, retrying through leader changes for up to `limit`. Returns the
    /// answer once a node acknowledged it as committed.
    pub(crate) fn execute(
        &mut self,
        command: &KvCommand,
        limit: Duration,
    ) -> Option<Option<Vec<u8>>> {
        let start = Instant::now();
        let request = Request::Command(command.clone());
        let ids: Vec<NodeId> = self.connections.keys().copied().collect();
        while start.elapsed() < limit {
            let conn = self.connections.get_mut(&self.leader)?;
            match conn.call(&request) {
                Ok(Response::Done(answer)) => return Some(answer),
                Ok(Response::NotLeader(Some(hint))) if hint != self.leader => self.leader = hint,
                _ => {
                    // No leader known, a timeout, or a dead node: try the next one.
                    let next = ids
                        .iter()
                        .position(|&i| i == self.leader)
                        .map_or(0, |p| p + 1);
                    self.leader = ids[next % ids.len()];
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
        }
        None
    }
}

/// Runs the demo.
pub(crate) fn run(exe: PathBuf, config: &DemoConfig) -> Result<DemoReport, String> {
    // The floor, measured where the nodes will keep their data, before they start.
    std::fs::create_dir_all(&config.dir).map_err(|e| e.to_string())?;
    let floor = adapter_common::floor::Floor::measure(&config.dir, 300)
        .map_err(|e| format!("cannot measure the floor: {e}"))?;
    let mut cluster = if config.tls {
        Cluster::start_tls(exe, config.runtime, config.read_mode, &config.dir)?
    } else {
        crate::protocol::set_client_tls(None);
        Cluster::start(exe, config.runtime, config.read_mode, &config.dir)?
    };
    let say = |line: String| {
        if !config.quiet {
            println!("{line}");
        }
    };
    say(format!(
        "started 3 nodes on 127.0.0.1 with the {:?} adapter, reads by {:?}{} (data in {})",
        config.runtime,
        config.read_mode,
        if config.tls { ", mutual TLS" } else { "" },
        config.dir.display()
    ));
    let (first_leader, _) = cluster
        .wait_for_leader(0, Duration::from_secs(10))
        .ok_or("no leader was elected within 10 s")?;
    say(format!("node {first_leader} is the leader"));

    let bar = if config.quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(config.writes as u64)
    };
    bar.set_style(
        ProgressStyle::with_template("{elapsed_precise} [{wide_bar}] {pos}/{len} writes {msg}")
            .map_err(|e| e.to_string())?,
    );
    let next = AtomicUsize::new(0);
    let acked = AtomicUsize::new(0);
    let failures = AtomicU64::new(0);
    // Per acknowledged write: its number, its latency and when it was acknowledged.
    let results: Mutex<Vec<(usize, Duration, Duration)>> = Mutex::new(Vec::new());
    let started = Instant::now();
    let mut failover = None;
    let mut killed_at = None;
    let recorder = Recorder::new();
    let stop_recorded = std::sync::atomic::AtomicBool::new(false);
    let addrs = cluster.client_addrs();
    std::thread::scope(|scope| -> Result<(), String> {
        let _stop_recorded = StopOnDrop(&stop_recorded);
        for id in 0..RECORDED_CLIENTS {
            let (recorder, stop, addrs) = (&recorder, &stop_recorded, &addrs);
            scope.spawn(move || crate::history::client(id, || addrs.clone(), stop, recorder));
        }
        for _ in 0..config.clients {
            let mut client = Client::new(&cluster);
            let (next, acked, failures, results, bar) = (&next, &acked, &failures, &results, &bar);
            scope.spawn(move || loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= config.writes {
                    return;
                }
                let command = KvCommand::Put {
                    key: key(i),
                    value: value(i),
                };
                let t0 = Instant::now();
                match client.execute(&command, Duration::from_secs(30)) {
                    Some(_) => {
                        let latency = t0.elapsed();
                        results.lock().unwrap_or_else(|p| p.into_inner()).push((
                            i,
                            latency,
                            started.elapsed(),
                        ));
                        acked.fetch_add(1, Ordering::Relaxed);
                        bar.inc(1);
                    }
                    None => {
                        failures.fetch_add(1, Ordering::Relaxed);
                    }
                }
            });
        }
        // The chaos: kill the leader once the load is under way.
        if let Some(fraction) = config.kill_at {
            let threshold = (config.writes as f64 * fraction) as usize;
            while acked.load(Ordering::Relaxed) < threshold {
                if next.load(Ordering::Relaxed) >= config.writes {
                    break;
                }
                std::thread::sleep(Duration::from_millis(2));
            }
            if let Some((victim, term)) = cluster.leader() {
                bar.set_message(format!("killed leader {victim} (SIGKILL)"));
                let kill_instant = Instant::now();
                killed_at = Some(started.elapsed());
                cluster.kill(victim);
                let new_leader = cluster.wait_for_leader(term, Duration::from_secs(10));
                let elapsed = kill_instant.elapsed();
                match new_leader {
                    Some((id, _)) => {
                        failover = Some(elapsed);
                        bar.set_message(format!(
                            "node {victim} killed; node {id} leads after {:.0} ms; restarting {victim}",
                            elapsed.as_secs_f64() * 1000.0
                        ));
                    }
                    None => bar.set_message("no new leader within 10 s".to_string()),
                }
                cluster.spawn(victim)?;
                if failover.is_none() {
                    return Err(format!(
                        "no new leader within 10 s of killing node {victim}"
                    ));
                }
            } else {
                return Err("no leader to kill".to_string());
            }
        }
        // The recorded clients run as long as the writers.
        while acked.load(Ordering::Relaxed) + (failures.load(Ordering::Relaxed) as usize)
            < config.writes
        {
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(())
    })?;
    bar.finish();
    let end = started.elapsed();
    let seconds = end.as_secs_f64();
    let results = results.into_inner().unwrap_or_else(|p| p.into_inner());
    let done: Vec<(Duration, Duration)> = results.iter().map(|&(_, l, at)| (l, at)).collect();
    let steady = Phase::of(&done, Duration::ZERO, killed_at.unwrap_or(end));
    let after_kill = killed_at.map(|kill| Phase::of(&done, kill, end));
    let longest_gap_ms = killed_at.map(|kill| {
        let mut times: Vec<Duration> = done
            .iter()
            .map(|&(_, at)| at)
            .filter(|&at| at >= kill)
            .collect();
        times.sort();
        // Up to the end of the run too: with no write acknowledged after the kill, the
        // whole rest of the run is the gap.
        times.push(end.max(kill));
        let mut previous = kill;
        let mut longest = Duration::ZERO;
        for at in times {
            longest = longest.max(at.saturating_sub(previous));
            previous = at;
        }
        longest.as_secs_f64() * 1000.0
    });

    // Every acknowledged write must be on every node, with its value.
    let dumps = cluster.converged_dumps(Duration::from_secs(30));
    let mut verified_nodes = 0;
    for (id, dump) in &dumps {
        let missing = results
            .iter()
            .filter(|(i, _, _)| dump.get(&key(*i)) != Some(&value(*i)))
            .count();
        if missing == 0 {
            verified_nodes += 1;
        } else {
            say(format!("node {id} lacks {missing} acknowledged writes"));
        }
    }
    let report = DemoReport {
        acknowledged: results.len(),
        seconds,
        floor,
        steady,
        after_kill,
        failover_ms: failover.map(|d| d.as_secs_f64() * 1000.0),
        longest_gap_ms,
        verified_nodes,
        history: recorder.check()?,
    };
    let floor_ms = report.floor.total().as_secs_f64() * 1000.0;
    say(format!("{}", report.floor));
    say(format!(
        "steady state{}: {} writes in {:.2} s, {:.0} writes/s with {} clients; commit latency \
         p50 {:.2} ms ({:.2}× the floor), p99 {:.2} ms",
        if killed_at.is_some() {
            " before the kill"
        } else {
            ""
        },
        report.steady.writes,
        report.steady.seconds,
        report.steady.rate(),
        config.clients,
        report.steady.p50_ms,
        report.steady.p50_ms / floor_ms,
        report.steady.p99_ms
    ));
    if let (Some(ms), Some(gap), Some(after)) =
        (report.failover_ms, report.longest_gap_ms, report.after_kill)
    {
        say(format!(
            "failover: a new leader {ms:.0} ms after the SIGKILL; no write acknowledged for \
             {gap:.0} ms at most"
        ));
        say(format!(
            "from the kill on: {} writes in {:.2} s, {:.0} writes/s, p50 {:.2} ms, p99 {:.2} ms \
             (the pause included)",
            after.writes,
            after.seconds,
            after.rate(),
            after.p50_ms,
            after.p99_ms
        ));
    }
    say(format!(
        "in all: {} writes acknowledged in {:.2} s",
        report.acknowledged, report.seconds
    ));
    say(format!(
        "verified: all {} acknowledged writes present on {}/{} nodes",
        report.acknowledged,
        report.verified_nodes,
        dumps.len()
    ));
    say(report.history.clone());
    cluster.stop();
    if report.verified_nodes != NODES as usize || failures.load(Ordering::Relaxed) > 0 {
        return Err(format!(
            "verification failed: {}/{} nodes hold every acknowledged write, {} writes never acknowledged",
            report.verified_nodes,
            NODES,
            failures.load(Ordering::Relaxed)
        ));
    }
    Ok(report)
}

pub(crate) fn key(i: usize) -> String {
    format!("key-{i:07}")
}

pub(crate) fn value(i: usize) -> Vec<u8> {
    format!("value-{i}").into_bytes()
}

/// A generator of numbers below a bound (xorshift), from `seed`: the chaos's choices.
pub(crate) fn random_below(seed: u64) -> impl FnMut(u64) -> u64 {
    let mut rng = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    move |bound: u64| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng % bound.max(1)
    }
}

/// Stops the clients however a chaos scope is left (an error would otherwise leave them
/// looping and the scope waiting for them for ever).
pub(crate) struct StopOnDrop<'a>(pub(crate) &'a std::sync::atomic::AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// What the chaos run does: `rounds` times, SIGKILL a random node (the leader one time in
/// two) at a random moment under load, and restart it after a random pause.
#[derive(Debug, Clone)]
pub(crate) struct ChaosConfig {
    pub(crate) dir: PathBuf,
    pub(crate) rounds: usize,
    pub(crate) clients: usize,
    pub(crate) seed: u64,
    pub(crate) runtime: Runtime,
    /// Rounds replace a random voter by a fresh node instead of crashing nodes.
    pub(crate) membership: bool,
    pub(crate) read_mode: ReadMode,
    /// The faults to pick from each round; `[Kill]` alone is the crash test (every fifth
    /// round crashes the whole cluster), anything else runs through proxies
    /// ([`crate::nemesis`]).
    pub(crate) faults: Vec<crate::nemesis::Fault>,
    /// The nodes stream their snapshots through files.
    pub(crate) stream_snapshots: bool,
}

impl ChaosConfig {
    /// The extra `raft-kv serve` arguments of the run's nodes.
    pub(crate) fn serve_args(&self) -> &'static [&'static str] {
        if self.stream_snapshots {
            &["--stream-snapshots"]
        } else {
            &[]
        }
    }
}

/// What a chaos run did.
#[derive(Debug, Clone)]
pub(crate) struct ChaosReport {
    /// The longest time without an acknowledged write (fault runs only).
    pub(crate) longest_gap: Option<Duration>,
    /// Writes acknowledged, each found on every node at the end.
    pub(crate) acknowledged: usize,
    /// Rounds run.
    pub(crate) rounds: usize,
    /// Nodes at the end.
    pub(crate) nodes: usize,
}

/// Runs the recorded clients against the addresses `addrs` gives until `stop`.
pub(crate) fn spawn_recorded<'s>(
    scope: &'s std::thread::Scope<'s, '_>,
    recorder: &'s Recorder,
    stop: &'s std::sync::atomic::AtomicBool,
    addrs: &'s std::sync::RwLock<Vec<SocketAddr>>,
) {
    for id in 0..RECORDED_CLIENTS {
        scope.spawn(move || {
            let current = || addrs.read().unwrap_or_else(|p| p.into_inner()).clone();
            crate::history::client(id, current, stop, recorder);
        });
    }
}

/// Runs the chaos test; fails if an acknowledged write is missing anywhere at the end or the
/// nodes do not converge.
pub(crate) fn chaos(exe: PathBuf, config: &ChaosConfig) -> Result<ChaosReport, String> {
    let crash_only = config
        .faults
        .iter()
        .all(|&f| f == crate::nemesis::Fault::Kill);
    if config.membership && !crash_only {
        return Err("--membership runs without proxies: it takes no --faults but kill".into());
    }
    if config.membership {
        return chaos_membership(exe, config);
    }
    if !crash_only {
        return crate::nemesis::run(exe, config);
    }
    let mut cluster = Cluster::start_chaos(exe, config, None)?;
    cluster
        .wait_for_leader(0, Duration::from_secs(10))
        .ok_or("no leader was elected within 10 s")?;
    let mut random = random_below(config.seed);
    let stop = std::sync::atomic::AtomicBool::new(false);
    let writes = Writes::default();
    let recorder = Recorder::new();
    let addrs = std::sync::RwLock::new(cluster.client_addrs());
    std::thread::scope(|scope| -> Result<(), String> {
        let _stop_clients = StopOnDrop(&stop);
        spawn_recorded(scope, &recorder, &stop, &addrs);
        writes.spawn_writers(scope, &cluster, config.clients, &stop);
        for round in 0..config.rounds {
            std::thread::sleep(Duration::from_millis(100 + random(400)));
            let victims: Vec<NodeId> = if round % 5 == 4 {
                // Every fifth round the whole cluster crashes at once.
                (1..=NODES).collect()
            } else {
                match cluster.leader() {
                    Some((leader, _)) if random(2) == 0 => vec![leader],
                    _ => vec![1 + random(NODES)],
                }
            };
            for &victim in &victims {
                cluster.kill(victim);
            }
            std::thread::sleep(Duration::from_millis(random(300)));
            for &victim in &victims {
                cluster.spawn(victim)?;
            }
        }
        std::thread::sleep(Duration::from_millis(300));
        Ok(())
    })?;
    let acked: Vec<usize> = writes.in_order().into_iter().map(|(i, _)| i).collect();
    verify(cluster, &acked, config.rounds, &recorder)
}

/// The load of a chaos run: writers of fresh keys (`key(i)` = `value(i)`), each write
/// acknowledged recorded with when it was.
#[derive(Default)]
pub(crate) struct Writes {
    next: AtomicUsize,
    acked: Mutex<Vec<(usize, Instant)>>,
}

impl Writes {
    /// Starts `clients` writers on `cluster` that run until `stop`.
    pub(crate) fn spawn_writers<'s>(
        &'s self,
        scope: &'s std::thread::Scope<'s, '_>,
        cluster: &Cluster,
        clients: usize,
        stop: &'s std::sync::atomic::AtomicBool,
    ) {
        for _ in 0..clients {
            let mut client = Client::new(cluster);
            scope.spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let i = self.next.fetch_add(1, Ordering::Relaxed);
                    let command = KvCommand::Put {
                        key: key(i),
                        value: value(i),
                    };
                    if client.execute(&command, Duration::from_secs(5)).is_some() {
                        let at = Instant::now();
                        self.acked
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .push((i, at));
                    }
                }
            });
        }
    }

    /// The acknowledged writes, in the order they were acknowledged.
    pub(crate) fn in_order(self) -> Vec<(usize, Instant)> {
        let mut acked = self.acked.into_inner().unwrap_or_else(|p| p.into_inner());
        acked.sort_by_key(|&(_, at)| at);
        acked
    }
}

/// Every acknowledged write on every running node, which all converged, the recorded
/// history linearizable, and no panic in any node's log; stops the cluster.
pub(crate) fn verify(
    mut cluster: Cluster,
    acked: &[usize],
    rounds: usize,
    recorder: &Recorder,
) -> Result<ChaosReport, String> {
    let verdict = recorder.check()?;
    println!("{verdict}");
    let panics = cluster.panics();
    if !panics.is_empty() {
        return Err(format!("a node panicked: {}", panics.join("; ")));
    }
    if acked.is_empty() {
        return Err("no write was acknowledged".into());
    }
    let dumps = cluster.converged_dumps(Duration::from_secs(30));
    if dumps.len() != cluster.children.len() {
        let silent: Vec<NodeId> = cluster
            .ids()
            .into_iter()
            .filter(|id| !dumps.contains_key(id))
            .collect();
        return Err(format!(
            "only {} of {} nodes answered at the end:\n{}",
            dumps.len(),
            cluster.children.len(),
            cluster.describe(&silent)
        ));
    }
    if dumps.values().any(|d| Some(d) != dumps.values().next()) {
        return Err("the nodes did not converge to the same state".into());
    }
    for (id, dump) in &dumps {
        let missing: Vec<usize> = acked
            .iter()
            .copied()
            .filter(|&i| dump.get(&key(i)) != Some(&value(i)))
            .collect();
        if !missing.is_empty() {
            return Err(format!(
                "node {id} lacks {} acknowledged writes (first: {})",
                missing.len(),
                key(missing[0])
            ));
        }
    }
    let nodes = dumps.len();
    cluster.stop();
    Ok(ChaosReport {
        longest_gap: None,
        acknowledged: acked.len(),
        rounds,
        nodes,
    })
}

/// The membership chaos: `rounds` times under load, a fresh node (new id, empty directory)
/// joins as a learner and replaces a random voter (the leader one time in two) in one joint
/// change; the replaced node is then killed and forgotten.
fn chaos_membership(exe: PathBuf, config: &ChaosConfig) -> Result<ChaosReport, String> {
    let mut cluster = Cluster::start_chaos(exe, config, None)?;
    cluster
        .wait_for_leader(0, Duration::from_secs(10))
        .ok_or("no leader was elected within 10 s")?;
    let mut random = random_below(config.seed);
    let addrs = std::sync::RwLock::new(cluster.client_addrs());
    let next = AtomicUsize::new(0);
    let stop = std::sync::atomic::AtomicBool::new(false);
    let acked: Mutex<Vec<usize>> = Mutex::new(Vec::new());
    let recorder = Recorder::new();
    std::thread::scope(|scope| -> Result<(), String> {
        let _stop_clients = StopOnDrop(&stop);
        spawn_recorded(scope, &recorder, &stop, &addrs);
        for _ in 0..config.clients {
            let (next, stop, acked, addrs) = (&next, &stop, &acked, &addrs);
            scope.spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let command = KvCommand::Put {
                        key: key(i),
                        value: value(i),
                    };
                    let known = addrs.read().unwrap_or_else(|p| p.into_inner()).clone();
                    let limit = Duration::from_secs(5);
                    if crate::members::execute(&known, command, limit).is_ok() {
                        acked.lock().unwrap_or_else(|p| p.into_inner()).push(i);
                    }
                }
            });
        }
        let limit = Duration::from_secs(60);
        for (round, fresh) in (0..config.rounds).zip(NODES + 1..) {
            std::thread::sleep(Duration::from_millis(100 + random(400)));
            let members = crate::members::list(&cluster.client_addrs())?;
            let victim = match members.leader {
                Some(leader) if random(2) == 0 => leader,
                _ => members.voters[random(members.voters.len() as u64) as usize],
            };
            cluster.spawn_joining(fresh)?;
            *addrs.write().unwrap_or_else(|p| p.into_inner()) = cluster.client_addrs();
            // The fresh node adds itself as a learner; wait for it to be one.
            let start = Instant::now();
            loop {
                let members = crate::members::list(&cluster.client_addrs())?;
                if members.learners.contains(&fresh) {
                    break;
                }
                if start.elapsed() > limit {
                    return Err(format!("round {round}: node {fresh} did not join"));
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let voters = members
                .voters
                .iter()
                .copied()
                .filter(|&v| v != victim)
                .chain([fresh])
                .map(|v| (v, cluster.member_data(v)))
                .collect();
            let change = crate::protocol::MemberChange::Replace {
                voters,
                learners: Vec::new(),
            };
            crate::members::change(&cluster.client_addrs(), change, limit)
                .map_err(|e| format!("round {round}: replacing {victim} by {fresh}: {e}"))?;
            cluster.forget(victim);
            *addrs.write().unwrap_or_else(|p| p.into_inner()) = cluster.client_addrs();
        }
        std::thread::sleep(Duration::from_millis(300));
        Ok(())
    })?;
    let acked = acked.into_inner().unwrap_or_else(|p| p.into_inner());
    verify(cluster, &acked, config.rounds, &recorder)
}
