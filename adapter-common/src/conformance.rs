//! The conformance suite every adapter runs (test-only, feature `conformance`): election,
//! failover, proposals under load, crash and restart from disk, snapshot transfer to a lagging
//! node, shutdown, membership changes, linearizable reads, leadership transfer (also on
//! shutdown), and bad frames on the Raft port — written once, run against each adapter
//! through its [`Harness`], as rustls runs one suite per crypto provider.
//!
//! An adapter's test file implements [`Harness`] (start a node over real TCP on 127.0.0.1 with
//! its runtime) and invokes [`conformance_tests!`](crate::conformance_tests).

use std::collections::BTreeMap;
use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use raft_proto::{Membership, MembershipChange, NodeId, Role};

use crate::faults::{FaultyLink, LinkFaults};
use crate::net::{PeerLink, PeerWriter, TransportCounters};
use crate::sessions::{self, decode_answer, ClientSession, Sessions};
use crate::tls::generate::ClusterCa;
use crate::tls::TlsConfig;
use crate::{
    NodeOptions, ProposeError, ReadError, StateMachine, Status, TcpConfig, TransferError, WaitError,
};

/// A running node, seen through blocking calls whatever its runtime.
pub trait TestNode: Send + Sync {
    /// Proposes and waits up to `timeout` for the answer.
    fn propose(&self, command: Vec<u8>, timeout: Duration) -> Result<Vec<u8>, ProposeError>;
    /// The node's status, None once it is shut down.
    fn status(&self) -> Option<Status>;
    /// Asks for a membership change and waits up to `timeout` for it to complete.
    fn change_membership(
        &self,
        change: MembershipChange,
        timeout: Duration,
    ) -> Result<Membership, ProposeError>;
    /// The membership in force at the node, None once it is shut down.
    fn membership(&self) -> Option<Membership>;
    /// Asks for a linearizable read and waits up to `timeout` for its read index.
    fn read_index(&self, timeout: Duration) -> Result<u64, ReadError>;
    /// Asks the node (the leader) to hand leadership over to `to`; waits up to `timeout`.
    fn transfer_leadership(&self, to: NodeId, timeout: Duration) -> Result<(), TransferError>;
    /// Waits up to `timeout` until the node applied `index`.
    fn wait_applied(&self, index: u64, timeout: Duration) -> Result<Status, WaitError>;
    /// Stops the node cleanly (and its transport).
    fn shutdown(&self);
}

/// Starts nodes with one adapter.
pub trait Harness: Sync {
    /// Starts a node with `options` and a TCP transport set up by `tcp`, running
    /// [`machine()`] as its state machine.
    fn start(&self, options: NodeOptions, tcp: TcpConfig) -> Box<dyn TestNode>;
}

/// Runs another harness's nodes with the state machine on a thread of its own
/// ([`NodeOptions::apply_on_thread`]), so that the whole suite can check that mode too.
#[derive(Debug)]
pub struct ApplyOnThread<H>(pub H);

impl<H: Harness> Harness for ApplyOnThread<H> {
    fn start(&self, mut options: NodeOptions, tcp: TcpConfig) -> Box<dyn TestNode> {
        options.apply_on_thread = true;
        self.0.start(options, tcp)
    }
}

/// Runs another harness's nodes with streamed snapshots
/// ([`Config::stream_snapshots`](raft_proto::Config)): snapshot bytes go from the state
/// machine to a file, from that file to the follower chunk by chunk, and from the follower's
/// staging file back into its state machine, never through memory as a whole.
#[derive(Debug)]
pub struct StreamSnapshots<H>(pub H);

impl<H: Harness> Harness for StreamSnapshots<H> {
    fn start(&self, mut options: NodeOptions, tcp: TcpConfig) -> Box<dyn TestNode> {
        options.raft.stream_snapshots = true;
        self.0.start(options, tcp)
    }
}

/// The suite's state machine: a [`LogMachine`] behind client sessions, so that a check can
/// retry a command in doubt and see it applied once. The suite's helpers encode ordinary
/// commands with [`sessions::plain`].
pub type SuiteMachine = Sessions<LogMachine>;

/// A fresh [`SuiteMachine`] (at most 1,000 sessions).
pub fn machine() -> SuiteMachine {
    Sessions::new(LogMachine::default(), 1000)
}

/// Appends every command; answers how many it holds.
///
/// A command [`stall_command`] makes the first machine of the process that applies it block
/// for the time it names (the leader's, which applies first): a slow state machine.
#[derive(Debug, Default)]
pub struct LogMachine(Vec<Vec<u8>>);

/// The tokens of the stall commands some machine already stalled on.
static STALLED: Mutex<Vec<u64>> = Mutex::new(Vec::new());

/// A command that blocks the first [`LogMachine`] of the process to apply it for `millis`;
/// `token` tells stall commands apart.
pub fn stall_command(millis: u64, token: u64) -> Vec<u8> {
    format!("stall {millis} {token}").into_bytes()
}

fn stall(command: &[u8]) {
    let Some(words) = std::str::from_utf8(command)
        .ok()
        .and_then(|c| c.strip_prefix("stall "))
    else {
        return;
    };
    let mut words = words.split(' ').map(|w| w.parse::<u64>().ok());
    let (Some(Some(millis)), Some(Some(token))) = (words.next(), words.next()) else {
        return;
    };
    let first = {
        let mut stalled = STALLED.lock().unwrap_or_else(PoisonError::into_inner);
        let first = !stalled.contains(&token);
        stalled.push(token);
        first
    };
    if first {
        std::thread::sleep(Duration::from_millis(millis));
    }
}

impl StateMachine for LogMachine {
    fn apply(&mut self, _index: u64, command: &[u8]) -> Vec<u8> {
        stall(command);
        self.0.push(command.to_vec());
        (self.0.len() as u64).to_le_bytes().to_vec()
    }
    fn snapshot(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for command in &self.0 {
            out.extend_from_slice(&(command.len() as u32).to_le_bytes());
            out.extend_from_slice(command);
        }
        out
    }
    fn restore(&mut self, mut snapshot: &[u8]) {
        self.0.clear();
        while snapshot.len() >= 4 {
            let (len, rest) = snapshot.split_at(4);
            let len = u32::from_le_bytes([len[0], len[1], len[2], len[3]]) as usize;
            let Some(command) = rest.get(..len) else {
                break;
            };
            self.0.push(command.to_vec());
            snapshot = &rest[len..];
        }
    }
}

/// A three-node cluster on 127.0.0.1 started through a harness.
pub struct Cluster<'h> {
    harness: &'h dyn Harness,
    dir: PathBuf,
    peers: BTreeMap<NodeId, SocketAddr>,
    nodes: BTreeMap<NodeId, Box<dyn TestNode>>,
    /// Applied to every node's options before it starts.
    tweak: fn(&mut NodeOptions),
    /// The nodes the cluster was bootstrapped with (the others join it when started).
    bootstrap: Vec<NodeId>,
    /// With proxies: the link each node dials to reach each other one, by (from, to).
    links: BTreeMap<(NodeId, NodeId), FaultyLink>,
    /// With TLS: the cluster's CA, and each node's TLS setup (made when it first starts,
    /// unless [`set_tls`](Self::set_tls) gave one).
    tls: Option<(ClusterCa, BTreeMap<NodeId, TlsConfig>)>,
}

const CLUSTER_ID: u64 = 42;

impl<'h> Cluster<'h> {
    /// Three nodes with data under a fresh temporary directory named after `name`.
    pub fn new(harness: &'h dyn Harness, name: &str) -> Self {
        Self::with_options(harness, name, |_| {})
    }

    /// Like [`new`](Self::new), with every peer connection going through a proxy that
    /// [`isolate`](Self::isolate) can cut.
    pub fn with_proxies(harness: &'h dyn Harness, name: &str) -> Self {
        Self::build(harness, name, |_| {}, true, 3, 3)
    }

    /// Like [`with_proxies`](Self::with_proxies), with `tweak` applied to every node's options.
    pub fn with_proxies_and_options(
        harness: &'h dyn Harness,
        name: &str,
        tweak: fn(&mut NodeOptions),
    ) -> Self {
        Self::build(harness, name, tweak, true, 3, 3)
    }

    /// Like [`new`](Self::new), with `tweak` applied to every node's options.
    pub fn with_options(harness: &'h dyn Harness, name: &str, tweak: fn(&mut NodeOptions)) -> Self {
        Self::build(harness, name, tweak, false, 3, 3)
    }

    /// Like [`new`](Self::new), with mutual TLS between peers: a CA made for the cluster, and
    /// for each node a certificate of it naming the node. Nodes in `held_back` are not
    /// started (give them a TLS setup of your own with [`set_tls`](Self::set_tls), then
    /// [`start`](Self::start) them).
    pub fn with_tls(harness: &'h dyn Harness, name: &str, held_back: &[NodeId]) -> Self {
        let mut cluster = Self::build(harness, name, |_| {}, false, 0, 3);
        cluster.tls = Some((
            ClusterCa::new("conformance").expect("a CA"),
            BTreeMap::new(),
        ));
        cluster.bootstrap = vec![1, 2, 3];
        for id in 1..=3 {
            if !held_back.contains(&id) {
                cluster.start(id);
            }
        }
        cluster
    }

    /// The cluster's CA (a cluster made [`with_tls`](Self::with_tls)).
    pub fn ca(&self) -> &ClusterCa {
        &self.tls.as_ref().expect("a cluster with TLS").0
    }

    /// Node `id` starts with `tls` from now on (a cluster made [`with_tls`](Self::with_tls)).
    pub fn set_tls(&mut self, id: NodeId, tls: TlsConfig) {
        self.tls
            .as_mut()
            .expect("a cluster with TLS")
            .1
            .insert(id, tls);
    }

    /// The TLS setup of node `id`, made from the CA the first time.
    fn tls_of(&mut self, id: NodeId) -> Option<TlsConfig> {
        let (ca, configs) = self.tls.as_mut()?;
        let tls = configs.entry(id).or_insert_with(|| {
            let issued = ca.node(id).expect("a certificate");
            TlsConfig::from_pem(
                issued.cert_pem.as_bytes(),
                issued.key_pem.as_bytes(),
                ca.cert_pem().as_bytes(),
            )
            .expect("a TLS setup")
        });
        Some(tls.clone())
    }

    /// A cluster bootstrapped with nodes `1..=bootstrap`, all started, and addresses reserved
    /// for nodes up to `total`: those start empty when [`start`](Self::start)ed, and join once
    /// a membership change adds them.
    pub fn growing(harness: &'h dyn Harness, name: &str, bootstrap: u64, total: u64) -> Self {
        Self::build(harness, name, |_| {}, false, bootstrap, total)
    }

    fn build(
        harness: &'h dyn Harness,
        name: &str,
        tweak: fn(&mut NodeOptions),
        proxies: bool,
        bootstrap: u64,
        total: u64,
    ) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "raft-conformance-{name}-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        let listeners: Vec<TcpListener> = (0..total)
            .map(|_| TcpListener::bind("127.0.0.1:0").expect("a free port"))
            .collect();
        let peers: BTreeMap<NodeId, SocketAddr> = (1..=total)
            .zip(&listeners)
            .map(|(id, l)| (id, l.local_addr().expect("bound")))
            .collect();
        drop(listeners);
        let mut links = BTreeMap::new();
        if proxies {
            for &from in peers.keys() {
                for (&to, &addr) in &peers {
                    if from != to {
                        links.insert(
                            (from, to),
                            FaultyLink::start(addr, from * 31 + to).expect("a proxy"),
                        );
                    }
                }
            }
        }
        let mut cluster = Self {
            harness,
            dir,
            peers,
            nodes: BTreeMap::new(),
            tweak,
            bootstrap: (1..=bootstrap).collect(),
            links,
            tls: None,
        };
        for id in 1..=bootstrap {
            cluster.start(id);
        }
        cluster
    }

    fn data_dir(dir: &Path, id: NodeId) -> PathBuf {
        dir.join(format!("node-{id}"))
    }

    /// Starts (or restarts) node `id` from its data directory: a bootstrap node with the
    /// bootstrap membership and every bootstrap node's address, any other one empty-handed
    /// (no voters, no peers: it learns them from the leader once added).
    pub fn start(&mut self, id: NodeId) {
        let bootstrap = self.bootstrap.contains(&id);
        let voters = if bootstrap {
            self.bootstrap.clone()
        } else {
            Vec::new()
        };
        let mut options = NodeOptions::new(id, voters, Self::data_dir(&self.dir, id));
        options.snapshot_every = Some(50);
        options.raft.max_snapshot_chunk = 256;
        (self.tweak)(&mut options);
        let mut others: BTreeMap<NodeId, SocketAddr> = self
            .peers
            .iter()
            .filter(|(&peer, _)| bootstrap && peer != id && self.bootstrap.contains(&peer))
            .map(|(&peer, &addr)| (peer, addr))
            .collect();
        for (&to, addr) in &mut others {
            if let Some(link) = self.links.get(&(id, to)) {
                *addr = link.addr();
            }
        }
        let mut tcp = TcpConfig::new(CLUSTER_ID, id, self.peers[&id], others);
        tcp.tls = self.tls_of(id);
        // Small, so that every check passes through the inbound byte budget many times over:
        // a node that did not report what it took would soon be deaf.
        tcp.max_inbound_bytes = 8 << 10;
        let node = self.harness.start(options, tcp);
        self.nodes.insert(id, node);
    }

    /// Stops node `id` cleanly.
    pub fn stop(&mut self, id: NodeId) {
        if let Some(node) = self.nodes.remove(&id) {
            node.shutdown();
        }
    }

    /// Cuts every link to and from node `id` (a cluster built
    /// [`with_proxies`](Self::with_proxies)): connections are closed and new ones refused.
    pub fn isolate(&self, id: NodeId) {
        for (&(from, to), link) in &self.links {
            if from == id || to == id {
                link.set(LinkFaults::cut());
            }
        }
    }

    /// Cuts the link from node `from` to node `to` only (a cluster built with proxies): `to`
    /// no longer hears `from`, and still reaches it.
    pub fn cut(&self, from: NodeId, to: NodeId) {
        if let Some(link) = self.links.get(&(from, to)) {
            link.set(LinkFaults::cut());
        }
    }

    /// Restores every link cut by [`isolate`](Self::isolate) or [`cut`](Self::cut).
    pub fn heal(&self) {
        for link in self.links.values() {
            link.heal();
        }
    }

    /// The running node `id`.
    pub fn node(&self, id: NodeId) -> &dyn TestNode {
        self.nodes[&id].as_ref()
    }

    /// The counters of node `id`'s transport.
    pub fn transport(&self, id: NodeId) -> crate::TransportStats {
        self.node(id)
            .status()
            .and_then(|s| s.transport)
            .unwrap_or_default()
    }

    /// The Raft address of node `id`.
    pub fn addr(&self, id: NodeId) -> SocketAddr {
        self.peers[&id]
    }

    /// Waits for a running node that leads.
    pub fn leader(&self, within: Duration) -> NodeId {
        let start = Instant::now();
        while start.elapsed() < within {
            for (&id, node) in &self.nodes {
                if node.status().is_some_and(|s| s.role == Role::Leader) {
                    return id;
                }
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("no leader within {within:?}");
    }

    /// Proposes `command` (outside any session) through whichever node leads, for up to
    /// 10 s; returns the state machine's answer.
    pub fn propose(&self, command: &[u8]) -> Vec<u8> {
        let answer = self.propose_encoded(&sessions::plain(command));
        decode_answer(&answer).expect("a plain command is applied")
    }

    /// Proposes bytes already encoded for [`SuiteMachine`] through whichever node leads, for
    /// up to 10 s, retrying the same bytes whatever the outcome; returns the raw answer.
    pub fn propose_encoded(&self, command: &[u8]) -> Vec<u8> {
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(10) {
            for node in self.nodes.values() {
                match node.propose(command.to_vec(), Duration::from_secs(2)) {
                    Ok(answer) => return answer,
                    Err(ProposeError::ShutDown) => panic!("a running node says it is shut down"),
                    Err(_) => {}
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("no commit within 10 s");
    }

    /// The data a member carries: its address.
    pub fn member_data(&self, id: NodeId) -> raft_proto::Payload {
        self.addr(id).to_string().into_bytes().into()
    }

    /// Asks the running nodes in turn for `change` until the leader completes it (retrying
    /// while there is no leader or another change is in progress), for up to 20 s.
    pub fn change(&self, change: MembershipChange) -> Membership {
        let start = Instant::now();
        // After an attempt whose outcome is unknown (a lost leader, a timeout), a refusal
        // saying the change is already there means an earlier attempt went through.
        let mut attempted = false;
        while start.elapsed() < Duration::from_secs(20) {
            for node in self.nodes.values() {
                match node.change_membership(change.clone(), Duration::from_secs(10)) {
                    Ok(membership) => return membership,
                    Err(ProposeError::Refused(raft_proto::MembershipError::ChangeInProgress)) => {}
                    Err(ProposeError::Refused(_)) if attempted => {
                        if let Some(membership) = node.membership() {
                            return membership;
                        }
                    }
                    Err(ProposeError::Refused(error)) => panic!("{change:?} refused: {error}"),
                    Err(ProposeError::NotLeader { .. }) => {}
                    Err(_) => attempted = true,
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("{change:?} did not complete within 20 s");
    }

    /// Waits until node `id` applied `index`.
    pub fn wait_applied(&self, id: NodeId, index: u64, within: Duration) {
        let start = Instant::now();
        while start.elapsed() < within {
            if self
                .node(id)
                .status()
                .is_some_and(|s| s.applied_index >= index)
            {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("node {id} did not apply {index} within {within:?}");
    }
}

impl Drop for Cluster<'_> {
    fn drop(&mut self) {
        for (_, node) in std::mem::take(&mut self.nodes) {
            node.shutdown();
        }
        for link in self.links.values() {
            link.stop();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn count(answer: &[u8]) -> u64 {
    answer
        .get(..8)
        .and_then(|b| b.try_into().ok())
        .map_or(0, u64::from_le_bytes)
}

/// A leader is elected, and only one.
pub fn election(harness: &dyn Harness) {
    let cluster = Cluster::new(harness, "election");
    let leader = cluster.leader(Duration::from_secs(5));
    std::thread::sleep(Duration::from_millis(300));
    let leaders = (1..=3)
        .filter(|&id| {
            cluster
                .node(id)
                .status()
                .is_some_and(|s| s.role == Role::Leader)
        })
        .count();
    assert_eq!(leaders, 1, "leader {leader} should be alone");
}

/// Proposals from several threads at once all commit, each exactly once.
pub fn proposals_under_load(harness: &dyn Harness) {
    let cluster = Cluster::new(harness, "load");
    cluster.leader(Duration::from_secs(5));
    let answers = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for t in 0..4 {
            let (cluster, answers) = (&cluster, &answers);
            scope.spawn(move || {
                for i in 0..50 {
                    let answer = cluster.propose(format!("{t}-{i}").as_bytes());
                    answers
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push(count(&answer));
                }
            });
        }
    });
    let mut answers = answers.into_inner().unwrap_or_else(|p| p.into_inner());
    answers.sort_unstable();
    answers.dedup();
    assert_eq!(
        answers.len(),
        200,
        "every proposal answered with its own position"
    );
}

/// The leader stops; the others elect a new one and keep committing.
pub fn failover(harness: &dyn Harness) {
    let mut cluster = Cluster::new(harness, "failover");
    let leader = cluster.leader(Duration::from_secs(5));
    let before = count(&cluster.propose(b"before"));
    let stopped_at = Instant::now();
    cluster.stop(leader);
    let new_leader = cluster.leader(Duration::from_secs(5));
    assert_ne!(new_leader, leader);
    assert!(stopped_at.elapsed() < Duration::from_secs(5));
    let after = count(&cluster.propose(b"after"));
    assert!(after > before);
}

/// Every node crashes and restarts from its data directory; nothing committed is lost.
pub fn restart_from_disk(harness: &dyn Harness) {
    let mut cluster = Cluster::new(harness, "restart");
    cluster.leader(Duration::from_secs(5));
    let mut last = 0;
    for i in 0..120 {
        last = count(&cluster.propose(format!("c{i}").as_bytes()));
    }
    for id in 1..=3 {
        cluster.stop(id);
    }
    for id in 1..=3 {
        cluster.start(id);
    }
    let after = count(&cluster.propose(b"after restart"));
    assert_eq!(
        after,
        last + 1,
        "the state machine came back with every command"
    );
}

/// `wait_applied` returns once the node applied the index, with its status: at once for an
/// index already applied, after catching up for a node restarted behind, and `TimedOut` for
/// an index nobody wrote; a stopped node answers `ShutDown`.
pub fn wait_applied(harness: &dyn Harness) {
    let mut cluster = Cluster::new(harness, "wait-applied");
    let leader = cluster.leader(Duration::from_secs(5));
    cluster.propose(b"first");
    let first = cluster
        .node(leader)
        .status()
        .expect("running")
        .applied_index;
    let status = cluster
        .node(leader)
        .wait_applied(first, Duration::from_millis(1))
        .expect("already applied");
    assert!(status.applied_index >= first && status.last_log_index >= first);
    let behind = if leader == 1 { 2 } else { 1 };
    cluster.stop(behind);
    for i in 0..30 {
        cluster.propose(format!("while {behind} is down: {i}").as_bytes());
    }
    let last = cluster
        .node(leader)
        .status()
        .expect("running")
        .applied_index;
    cluster.start(behind);
    let status = cluster
        .node(behind)
        .wait_applied(last, Duration::from_secs(10))
        .expect("the restarted node catches up");
    assert!(status.applied_index >= last, "{status:?} is below {last}");
    assert_eq!(
        cluster
            .node(behind)
            .wait_applied(last + 1_000_000, Duration::from_millis(200)),
        Err(WaitError::TimedOut)
    );
    cluster.node(behind).shutdown();
    assert_eq!(
        cluster.node(behind).wait_applied(1, Duration::from_secs(5)),
        Err(WaitError::ShutDown)
    );
}

/// With [`NodeOptions::apply_on_thread`], a state machine that blocks for longer than an
/// election timeout delays neither the leader's heartbeats nor its answers: see
/// [`leader_survives_a_stalled_state_machine`].
pub fn slow_apply_on_its_own_thread(harness: &dyn Harness) {
    assert!(leader_survives_a_stalled_state_machine(harness, true));
}

/// Stalls the leader's state machine for 2 s (four times the longest election timeout) and
/// returns whether the leader kept its leadership and term. With `apply_on_thread` it also
/// checks that the leader's status answers meanwhile, that it commits an entry its state
/// machine has not applied yet, and that both proposals are answered once the state machine
/// returns. On the loop (`apply_on_thread` false) the leader is silent for the whole stall,
/// and the followers elect another one.
pub fn leader_survives_a_stalled_state_machine(
    harness: &dyn Harness,
    apply_on_thread: bool,
) -> bool {
    static TOKEN: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let token = TOKEN.fetch_add(1, Ordering::Relaxed);
    let tweak: fn(&mut NodeOptions) = if apply_on_thread {
        |options| options.apply_on_thread = true
    } else {
        |options| options.apply_on_thread = false
    };
    let cluster = Cluster::with_options(harness, &format!("stall-{apply_on_thread}"), tweak);
    let leader = cluster.leader(Duration::from_secs(5));
    cluster.propose(b"before");
    let before = cluster.node(leader).status().expect("running");
    let stall = sessions::plain(&stall_command(2000, token));
    let after = sessions::plain(b"after");
    let node = cluster.node(leader);
    let started = Instant::now();
    let (stalled, behind, unapplied, read) = std::thread::scope(|s| {
        let stalled = s.spawn(|| node.propose(stall, Duration::from_secs(10)));
        std::thread::sleep(Duration::from_millis(200));
        let behind = s.spawn(|| node.propose(after, Duration::from_secs(10)));
        // A read covers the stalled entry: it is served only once the state machine
        // applied it.
        let read = s.spawn(|| {
            let index = node.read_index(Duration::from_secs(10));
            (index, started.elapsed(), node.status().expect("running"))
        });
        // Meanwhile the leader answers, and commits what its state machine has not applied.
        let mut unapplied = false;
        while apply_on_thread && started.elapsed() < Duration::from_millis(1500) {
            let status = node.status().expect("running");
            unapplied |= status.commit_index > status.applied_index;
            std::thread::sleep(Duration::from_millis(50));
        }
        let stalled = stalled.join().expect("no panic");
        let behind = behind.join().expect("no panic");
        (stalled, behind, unapplied, read.join().expect("no panic"))
    });
    let now = node.status().expect("running");
    let kept = now.role == Role::Leader && now.term == before.term;
    if apply_on_thread {
        assert!(unapplied, "the leader never committed past what it applied");
        let stalled = stalled.expect("the stalled command is answered");
        let behind = behind.expect("the command behind it is answered");
        let count = |answer: &[u8]| {
            let answer = decode_answer(answer).expect("a plain command is applied");
            u64::from_le_bytes(answer.try_into().expect("a count"))
        };
        assert_eq!(count(&behind), count(&stalled) + 1, "answered in log order");
        assert!(started.elapsed() >= Duration::from_secs(2), "it stalled");
        let (index, served_after, status) = read;
        let index = index.expect("the read is served");
        assert!(
            served_after >= Duration::from_secs(2) && status.applied_index >= index,
            "read index {index} served after {served_after:?}, before the state machine \
             applied it ({status:?})"
        );
    }
    kept
}

/// A leader whose state machine (on its own thread) is stalled answers proposals beyond
/// [`NodeOptions::max_pending_proposals`] with [`ProposeError::Busy`] at once, instead of
/// holding them; the ones it took are applied once the state machine returns.
pub fn busy_when_too_many_proposals_wait(harness: &dyn Harness) {
    static TOKEN: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1 << 32);
    let token = TOKEN.fetch_add(1, Ordering::Relaxed);
    let cluster = Cluster::with_options(harness, "busy", |options| {
        options.apply_on_thread = true;
        options.max_pending_proposals = 16;
    });
    let leader = cluster.leader(Duration::from_secs(5));
    cluster.propose(b"before");
    let node = cluster.node(leader);
    let stall = sessions::plain(&stall_command(1500, token));
    let (busy, applied) = std::thread::scope(|s| {
        let stalled = s.spawn(|| node.propose(stall, Duration::from_secs(10)));
        std::thread::sleep(Duration::from_millis(200));
        let proposers: Vec<_> = (0..64)
            .map(|i| {
                s.spawn(move || {
                    let command = sessions::plain(format!("queued {i}").as_bytes());
                    let start = Instant::now();
                    (
                        node.propose(command, Duration::from_secs(10)),
                        start.elapsed(),
                    )
                })
            })
            .collect();
        let mut busy = 0;
        let mut applied = 0;
        for proposer in proposers {
            match proposer.join().expect("no panic") {
                (Err(ProposeError::Busy { pending }), waited) => {
                    assert!(pending >= 16, "busy with {pending} pending");
                    assert!(
                        waited < Duration::from_millis(1000),
                        "busy after {waited:?}"
                    );
                    busy += 1;
                }
                (Ok(_), _) => applied += 1,
                (other, _) => panic!("a queued proposal ended in {other:?}"),
            }
        }
        assert!(stalled.join().expect("no panic").is_ok());
        (busy, applied)
    });
    assert_eq!(busy + applied, 64);
    assert!(busy >= 32 && applied >= 1, "{busy} busy, {applied} applied");
    // Once the state machine caught up, proposals are taken again.
    cluster.propose(b"after");
}

/// A command whose outcome was left in doubt (`Indeterminate`: its leader was cut off after
/// the followers had the entry, and caught up through a snapshot covering it) and is then
/// retried with the same bytes through its client session is applied exactly once.
pub fn retry_after_indeterminate_applies_once(harness: &dyn Harness) {
    let cluster = Cluster::with_proxies_and_options(harness, "exactly-once", |options| {
        // Snapshots often, keeping no log entries behind them: the old leader can only catch
        // up through a snapshot.
        options.snapshot_every = Some(5);
        options.raft.snapshot_catchup_entries = 0;
    });
    let old = cluster.leader(Duration::from_secs(5));
    let mut session =
        ClientSession::from_registration(&cluster.propose_encoded(&ClientSession::register()))
            .expect("registered");
    let before = count(&cluster.propose(b"before"));
    // The followers still hear the leader but it no longer hears them: its entry reaches
    // them, its commit never reaches it, and check-quorum makes it step down.
    for id in (1..=3).filter(|&id| id != old) {
        cluster.cut(id, old);
    }
    let command = session.command(b"once");
    let fillers = 20;
    let first = std::thread::scope(|scope| {
        let old_node = cluster.node(old);
        let attempt = scope.spawn(|| old_node.propose(command.clone(), Duration::from_secs(30)));
        // The others elect a leader, which commits the entry, then take snapshots past it.
        let start = Instant::now();
        let new = loop {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "no new leader while the old one was cut off"
            );
            let leading = (1..=3).filter(|&id| id != old).find(|&id| {
                cluster
                    .node(id)
                    .status()
                    .is_some_and(|s| s.role == Role::Leader && s.leader == Some(id))
            });
            if let Some(id) = leading {
                break id;
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        for i in 0..fillers {
            let filler = sessions::plain(format!("filler {i}").as_bytes());
            cluster
                .node(new)
                .propose(filler, Duration::from_secs(5))
                .expect("the new leader commits");
        }
        cluster.heal();
        attempt.join().expect("the proposer")
    });
    assert_eq!(
        first,
        Err(ProposeError::Indeterminate),
        "the old leader caught up through a snapshot covering its entry"
    );
    // In doubt: retry the same bytes. The entry did commit; the retry is not applied again
    // and gets the first application's answer.
    let retried = decode_answer(&cluster.propose_encoded(&command)).expect("applied");
    assert_eq!(
        count(&retried),
        before + 1,
        "the first application's answer"
    );
    let after = count(&cluster.propose(b"after"));
    assert_eq!(
        after,
        before + 1 + fillers + 1,
        "the command was applied exactly once"
    );
}

/// A node that was down while the others compacted their logs catches up by snapshot.
pub fn snapshot_to_lagging_node(harness: &dyn Harness) {
    let mut cluster = Cluster::new(harness, "snapshot");
    let leader = cluster.leader(Duration::from_secs(5));
    let lagging = if leader == 1 { 2 } else { 1 };
    cluster.stop(lagging);
    for i in 0..300 {
        cluster.propose(format!("s{i}").as_bytes());
    }
    cluster.start(lagging);
    let applied = cluster
        .node(cluster.leader(Duration::from_secs(5)))
        .status()
        .map_or(0, |s| s.applied_index);
    cluster.wait_applied(lagging, applied, Duration::from_secs(10));
    let status = cluster.node(lagging).status().expect("running");
    assert!(status.snapshot_index > 0, "caught up through a snapshot");
}

/// Shutdown answers waiting proposals and later calls with ShutDown, and returns.
pub fn shutdown(harness: &dyn Harness) {
    let mut cluster = Cluster::new(harness, "shutdown");
    let leader = cluster.leader(Duration::from_secs(5));
    cluster.propose(b"x");
    let node = cluster.nodes.remove(&leader).expect("running");
    let started = Instant::now();
    node.shutdown();
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(
        node.propose(sessions::plain(b"y"), Duration::from_secs(1)),
        Err(ProposeError::ShutDown)
    );
    assert!(node.status().is_none());
}

/// A read at any node returns a read index covering every write acknowledged before it, once
/// that node applied up to it.
pub fn linearizable_reads(harness: &dyn Harness) {
    let cluster = Cluster::new(harness, "reads");
    let leader = cluster.leader(Duration::from_secs(5));
    for round in 0..3 {
        cluster.propose(format!("w{round}").as_bytes());
        let committed = cluster.node(leader).status().expect("running").commit_index;
        for id in 1..=3 {
            let index = cluster
                .node(id)
                .read_index(Duration::from_secs(5))
                .unwrap_or_else(|e| panic!("read at node {id} failed: {e}"));
            assert!(
                index >= committed,
                "node {id} read at {index}, below the acknowledged write's commit {committed}"
            );
            let applied = cluster.node(id).status().expect("running").applied_index;
            assert!(
                applied >= index,
                "node {id} answered before applying {index}"
            );
        }
    }
}

/// A leader cut off from the others cannot confirm a read: it fails instead of returning
/// possibly stale state.
pub fn read_fails_without_quorum(harness: &dyn Harness) {
    let cluster = Cluster::with_proxies(harness, "read-quorum");
    let leader = cluster.leader(Duration::from_secs(5));
    cluster.propose(b"before");
    cluster.isolate(leader);
    let result = cluster.node(leader).read_index(Duration::from_secs(5));
    assert!(
        matches!(
            result,
            Err(ReadError::TimedOut | ReadError::LeadershipLost | ReadError::NoLeader)
        ),
        "an isolated leader served a read: {result:?}"
    );
    cluster.heal();
}

/// The leader hands leadership over to a follower on request: the follower leads in the next
/// term, and the cluster keeps committing.
pub fn transfer_leadership(harness: &dyn Harness) {
    let cluster = Cluster::new(harness, "transfer");
    let leader = cluster.leader(Duration::from_secs(5));
    let before = count(&cluster.propose(b"before"));
    let term = cluster.node(leader).status().expect("running").term;
    let target = if leader == 1 { 2 } else { 1 };
    cluster
        .node(leader)
        .transfer_leadership(target, Duration::from_secs(5))
        .expect("the transfer completes");
    let status = cluster.node(target).status().expect("running");
    assert_eq!(status.role, Role::Leader, "the target leads");
    assert_eq!(
        status.term,
        term + 1,
        "in the next term, without another election"
    );
    let refused = cluster
        .node(target)
        .transfer_leadership(target, Duration::from_secs(5));
    assert!(matches!(refused, Err(TransferError::Refused(_))));
    assert!(count(&cluster.propose(b"after")) > before);
}

/// A leader that is shut down hands leadership over first: when its shutdown returns,
/// another node already leads (without an election timeout of silence).
pub fn shutdown_hands_leadership_over(harness: &dyn Harness) {
    let mut cluster = Cluster::new(harness, "handover");
    let leader = cluster.leader(Duration::from_secs(5));
    cluster.propose(b"x");
    let term = cluster.node(leader).status().expect("running").term;
    cluster.stop(leader);
    let leaders: Vec<(NodeId, u64)> = (1..=3)
        .filter(|&id| id != leader)
        .filter_map(|id| {
            let s = cluster.node(id).status()?;
            (s.role == Role::Leader).then_some((id, s.term))
        })
        .collect();
    assert_eq!(
        leaders.len(),
        1,
        "no leader right after the leader's shutdown returned: no hand-over"
    );
    assert_eq!(leaders[0].1, term + 1);
    cluster.propose(b"y");
}

/// A follower cut off from the others for several election timeouts (its links dropped)
/// rejoins without changing the leader or anyone's term (pre-vote), and catches up.
pub fn partitioned_follower_rejoins(harness: &dyn Harness) {
    let cluster = Cluster::with_proxies(harness, "rejoin");
    let leader = cluster.leader(Duration::from_secs(5));
    cluster.propose(b"before");
    let term = cluster.node(leader).status().expect("running").term;
    let follower = if leader == 1 { 2 } else { 1 };
    cluster.isolate(follower);
    let cut_off_at = cluster
        .node(follower)
        .status()
        .expect("running")
        .commit_index;
    // Elections time out after 300-600 ms: the cut-off follower times out several times,
    // while the others commit without it.
    for i in 0..10 {
        cluster.propose(format!("while cut off {i}").as_bytes());
        std::thread::sleep(Duration::from_millis(300));
    }
    let status = cluster.node(follower).status().expect("running");
    assert_eq!(
        status.commit_index, cut_off_at,
        "the follower was not cut off: it learned of new commits"
    );
    cluster.heal();
    cluster.propose(b"after");
    let commit = cluster.node(leader).status().expect("running").commit_index;
    cluster.wait_applied(follower, commit, Duration::from_secs(10));
    for id in 1..=3 {
        let status = cluster.node(id).status().expect("running");
        assert_eq!(status.term, term, "node {id}'s term changed");
        assert_eq!(
            status.leader,
            Some(leader),
            "node {id} follows another leader"
        );
    }
}

/// Waits until every running node applied what the leader committed, and returns the
/// leader's membership.
fn converged(cluster: &Cluster<'_>) -> Membership {
    let leader = cluster.leader(Duration::from_secs(5));
    cluster.propose(b"converge");
    let status = cluster.node(leader).status().expect("running");
    for &id in cluster.nodes.keys() {
        cluster.wait_applied(id, status.commit_index, Duration::from_secs(10));
    }
    cluster.node(leader).membership().expect("running")
}

/// A one-node cluster grows to three: each new node starts empty, knowing no peer, is added
/// as a learner (it learns the leader's address from its hello), catches up, and is promoted.
pub fn grow_one_to_three(harness: &dyn Harness) {
    let mut cluster = Cluster::growing(harness, "grow", 1, 3);
    cluster.leader(Duration::from_secs(5));
    cluster.propose(b"alone");
    for id in [2, 3] {
        cluster.start(id);
        let data = cluster.member_data(id);
        let learner = cluster.change(MembershipChange::AddLearner { id, data });
        assert!(learner.learners().contains(&id));
        let voter = cluster.change(MembershipChange::PromoteLearner { id });
        assert!(voter.voters().contains(&id) && !voter.is_joint());
        cluster.propose(format!("with {id}").as_bytes());
    }
    let membership = converged(&cluster);
    assert_eq!(
        membership.voters().iter().copied().collect::<Vec<_>>(),
        [1, 2, 3]
    );
    for id in 1..=3 {
        assert_eq!(cluster.node(id).membership().expect("running"), membership);
    }
}

/// A follower of three is replaced by a fresh node: added as a learner, then one joint change
/// to the new voters; the removed node is stopped; the cluster keeps committing.
pub fn replace_a_node(harness: &dyn Harness) {
    let mut cluster = Cluster::growing(harness, "replace", 3, 4);
    let leader = cluster.leader(Duration::from_secs(5));
    cluster.propose(b"before");
    let old = if leader == 3 { 2 } else { 3 };
    cluster.start(4);
    let data = cluster.member_data(4);
    cluster.change(MembershipChange::AddLearner { id: 4, data });
    let voters = (1..=4)
        .filter(|&id| id != old)
        .map(|id| (id, cluster.member_data(id)))
        .collect();
    let membership = cluster.change(MembershipChange::Replace {
        voters,
        learners: Vec::new(),
    });
    assert!(!membership.contains(old));
    cluster.stop(old);
    let membership = converged(&cluster);
    assert!(membership.voters().contains(&4) && membership.voters().len() == 3);
}

/// Three nodes shrink to two (a follower removed; the two commit alone) and grow back to
/// three (the same node added again as a voter, catching up).
pub fn shrink_and_grow_back(harness: &dyn Harness) {
    let cluster = Cluster::growing(harness, "shrink", 3, 3);
    let leader = cluster.leader(Duration::from_secs(5));
    cluster.propose(b"three");
    let removed = if leader == 1 { 2 } else { 1 };
    let two = cluster.change(MembershipChange::Remove { id: removed });
    assert_eq!(two.voters().len(), 2);
    let before = cluster
        .node(removed)
        .status()
        .expect("running")
        .applied_index;
    for i in 0..5 {
        cluster.propose(format!("two {i}").as_bytes());
    }
    let data = cluster.member_data(removed);
    let three = cluster.change(MembershipChange::AddVoter { id: removed, data });
    assert_eq!(three.voters().len(), 3);
    let membership = converged(&cluster);
    assert!(membership.voters().contains(&removed));
    assert!(
        cluster
            .node(removed)
            .status()
            .expect("running")
            .applied_index
            > before + 5
    );
}

/// A proposal to a leader that lost its quorum is answered within the configured proposal
/// timeout, however long its caller is prepared to wait.
pub fn proposal_times_out_without_quorum(harness: &dyn Harness) {
    let mut cluster = Cluster::with_options(harness, "no-quorum", |options| {
        options.proposal_timeout = Duration::from_millis(1500);
    });
    let leader = cluster.leader(Duration::from_secs(5));
    cluster.propose(b"x");
    for id in (1..=3).filter(|&id| id != leader) {
        cluster.stop(id);
    }
    let started = Instant::now();
    let result = cluster
        .node(leader)
        .propose(sessions::plain(b"y"), Duration::from_secs(60));
    let waited = started.elapsed();
    assert!(
        matches!(
            result,
            Err(ProposeError::TimedOut | ProposeError::NotLeader { .. })
        ),
        "{result:?}"
    );
    assert!(
        waited < Duration::from_secs(10),
        "answered after {waited:?}, not within the proposal timeout"
    );
}

/// Random bytes, a truncated frame and an oversized length prefix on a node's Raft port close
/// those connections; the cluster keeps working.
pub fn bad_frames_on_the_port(harness: &dyn Harness) {
    let cluster = Cluster::new(harness, "frames");
    let leader = cluster.leader(Duration::from_secs(5));
    let garbage: [&[u8]; 3] = [
        &[0xde, 0xad, 0xbe, 0xef, 1, 2, 3, 4, 5, 6, 7, 8, 9],
        &[40, 0, 0, 0, 1, 2],
        &[0xff, 0xff, 0xff, 0x7f, 0, 0],
    ];
    for id in 1..=3 {
        for bytes in garbage {
            if let Ok(mut stream) = TcpStream::connect(cluster.addr(id)) {
                let _ = stream.write_all(bytes);
            }
        }
    }
    std::thread::sleep(Duration::from_millis(200));
    cluster.propose(b"still serving");
    assert!(cluster
        .node(leader)
        .status()
        .is_some_and(|s| s.commit_index > 0));
}

/// Mutual TLS between peers: a cluster whose members hold certificates of its CA elects a
/// leader, commits, and takes a restarted follower back; no connection was refused.
pub fn tls_cluster(harness: &dyn Harness) {
    let mut cluster = Cluster::with_tls(harness, "tls", &[]);
    let leader = cluster.leader(Duration::from_secs(5));
    cluster.propose(b"over TLS");
    let follower = (1..=3).find(|&id| id != leader).expect("a follower");
    cluster.stop(follower);
    cluster.propose(b"while a follower is down");
    cluster.start(follower);
    let index = count(&cluster.propose(b"after it came back"));
    let leader = cluster.leader(Duration::from_secs(5));
    let target = cluster.node(leader).status().expect("running").commit_index;
    assert!(index >= 3);
    cluster.wait_applied(follower, target, Duration::from_secs(10));
    for id in 1..=3 {
        let stats = cluster.transport(id);
        assert_eq!(stats.tls_failures, 0, "node {id}: {stats:?}");
        assert_eq!(stats.refused_connections, 0, "node {id}: {stats:?}");
        assert!(stats.received > 0, "node {id}: {stats:?}");
    }
}

/// Connects to `addr` (node `to`) claiming to be node `claim`, with `tls` (or plaintext), and
/// sends a hello and an append of term 1,000 that would change the node's term if it
/// reached its core. Returns what the peer said (a refusal frame's reason, a TLS error).
fn impostor(addr: SocketAddr, to: NodeId, claim: NodeId, tls: Option<TlsConfig>) -> String {
    let mut config = TcpConfig::new(
        CLUSTER_ID,
        claim,
        "127.0.0.1:9".parse().expect("an address"),
        BTreeMap::new(),
    );
    config.tls = tls;
    let writer = PeerWriter::new(
        std::sync::Arc::new(config.clone()),
        std::sync::Arc::new(TransportCounters::default()),
    );
    let mut link = PeerLink::new(&config, to).expect("a link");
    let Ok(mut stream) = TcpStream::connect(addr) else {
        return "no connection".into();
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let mut out = Vec::new();
    let mut buf = vec![0; 64 << 10];
    let mut received = 0;
    loop {
        match link.handshake(&buf[..received], &mut out) {
            Ok(done) => {
                let _ = stream.write_all(&out);
                if done {
                    break;
                }
            }
            Err(error) => return error.to_string(),
        }
        received = match std::io::Read::read(&mut stream, &mut buf) {
            Ok(0) | Err(_) => return "closed in the handshake".into(),
            Ok(n) => n,
        };
    }
    writer.hello(&mut out);
    let message = raft_proto::Message {
        from: claim,
        to,
        term: 1000,
        body: raft_proto::MessageBody::AppendRequest {
            prev_log_index: 0,
            prev_log_term: 0,
            entries: Vec::new(),
            leader_commit: 0,
        },
    };
    let mut frames = Vec::new();
    writer.frames([message], &mut frames);
    out.extend_from_slice(&frames);
    link.seal(&mut out);
    let _ = stream.write_all(&out);
    let mut answer = Vec::new();
    let _ = std::io::Read::read_to_end(&mut stream, &mut answer);
    match link.answer(&answer) {
        Ok(Some(reason)) => reason,
        Ok(None) => format!("{} bytes back", answer.len()),
        Err(error) => error.to_string(),
    }
}

/// Mutual TLS keeps impostors out: a peer with a certificate of another CA, an expired one,
/// one naming another node than its hello announces, or a client's certificate of the cluster's
/// CA naming the node it claims to be, and a peer speaking plaintext, are
/// each refused (and counted), and nothing they send reaches the core (a message of term
/// 1,000 from them leaves the node's term alone).
pub fn tls_refuses_impostors(harness: &dyn Harness) {
    let cluster = Cluster::with_tls(harness, "tls-impostors", &[]);
    let leader = cluster.leader(Duration::from_secs(5));
    cluster.propose(b"before");
    let target = (1..=3).find(|&id| id != leader).expect("a follower");
    let claim = (1..=3)
        .find(|&id| id != leader && id != target)
        .expect("a third node");
    let before = cluster.transport(target).refused_connections;
    let ca = cluster.ca();
    let ca_pem = ca.cert_pem();
    let other = ClusterCa::new("another cluster").expect("a CA");
    let setup = |issued: crate::tls::generate::Issued, trusted: String| {
        TlsConfig::from_pem(
            issued.cert_pem.as_bytes(),
            issued.key_pem.as_bytes(),
            trusted.as_bytes(),
        )
        .expect("a TLS setup")
    };
    let impostors = [
        // Trusting the cluster's CA too, so that it gets as far as showing its certificate.
        (
            "another CA",
            Some(setup(
                other.node(claim).expect("a certificate"),
                ca_pem.clone() + &other.cert_pem(),
            )),
        ),
        (
            "expired",
            Some(setup(
                ca.expired_node(claim).expect("a certificate"),
                ca_pem.clone(),
            )),
        ),
        (
            "another node",
            Some(setup(ca.node(7).expect("a certificate"), ca_pem.clone())),
        ),
        // A client's certificate of the cluster's CA, named like the node it claims to be:
        // not a member's (it may not authenticate a server).
        (
            "a client's certificate",
            Some(setup(
                ca.client(&crate::tls::node_name(claim))
                    .expect("a certificate"),
                ca_pem.clone(),
            )),
        ),
        ("plaintext", None),
    ];
    for (what, tls) in impostors {
        let said = impostor(cluster.addr(target), target, claim, tls);
        eprintln!("impostor with {what}: {said}");
        if what == "another node" || what == "a client's certificate" {
            assert!(said.contains("not for node"), "{what}: {said}");
        }
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    let refused = loop {
        let now = cluster.transport(target).refused_connections;
        if now >= before + 5 || Instant::now() > deadline {
            break now - before;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(refused, 5, "each impostor is refused once");
    let after = cluster.node(target).status().expect("running");
    assert!(
        after.term < 1000,
        "an impostor's message reached the core: term {}",
        after.term
    );
    cluster.propose(b"after");
}

/// A member set up with another CA (its certificate and its trust) is kept out: the two others
/// elect a leader and commit without it, refusing its connections and its certificate when they
/// dial it, and it never learns of a commit. (A node whose own certificate has expired or is not
/// of its CA does not even start: see `check_config`.)
pub fn tls_member_of_another_ca_is_kept_out(harness: &dyn Harness) {
    let mut cluster = Cluster::with_tls(harness, "tls-other-ca", &[3]);
    let other = ClusterCa::new("another cluster").expect("a CA");
    let issued = other.node(3).expect("a certificate");
    let tls = TlsConfig::from_pem(
        issued.cert_pem.as_bytes(),
        issued.key_pem.as_bytes(),
        other.cert_pem().as_bytes(),
    )
    .expect("a TLS setup");
    cluster.set_tls(3, tls);
    cluster.start(3);
    cluster.leader(Duration::from_secs(5));
    cluster.propose(b"without node 3");
    std::thread::sleep(Duration::from_millis(500));
    let outcast = cluster.node(3).status().expect("running");
    assert_eq!(outcast.commit_index, 0, "{outcast:?}");
    let outcast = cluster.transport(3);
    assert_eq!(outcast.received, 0, "{outcast:?}");
    let (mut refused, mut failures) = (0, 0);
    for id in 1..=2 {
        let stats = cluster.transport(id);
        refused += stats.refused_connections;
        failures += stats.tls_failures;
    }
    assert!(refused > 0, "node 3's connections are refused");
    assert!(
        failures > 0,
        "node 3's certificate is refused when dialling it"
    );
}

/// Generates one `#[test]` per conformance check for a harness expression.
#[macro_export]
macro_rules! conformance_tests {
    ($harness:expr) => {
        $crate::conformance_tests!(@tests $harness;
            election, proposals_under_load, failover, restart_from_disk,
            snapshot_to_lagging_node, shutdown, bad_frames_on_the_port,
            proposal_times_out_without_quorum, partitioned_follower_rejoins,
            grow_one_to_three, replace_a_node, shrink_and_grow_back, linearizable_reads,
            read_fails_without_quorum, transfer_leadership, shutdown_hands_leadership_over,
            wait_applied, retry_after_indeterminate_applies_once,
            slow_apply_on_its_own_thread, busy_when_too_many_proposals_wait, tls_cluster,
            tls_refuses_impostors, tls_member_of_another_ca_is_kept_out);
    };
    (@tests $harness:expr; $($check:ident),*) => {
        $(
            #[test]
            fn $check() {
                $crate::conformance::$check(&$harness);
            }
        )*
    };
}
