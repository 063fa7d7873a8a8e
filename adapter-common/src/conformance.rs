//! The conformance suite every adapter runs (test-only, feature `conformance`): election,
//! failover, proposals under load, crash and restart from disk, snapshot transfer to a lagging
//! node, shutdown, and bad frames on the Raft port — written once, run against each adapter
//! through its [`Harness`], as rustls runs one suite per crypto provider.
//!
//! An adapter's test file implements [`Harness`] (start a node over real TCP on 127.0.0.1 with
//! its runtime) and invokes [`conformance_tests!`](crate::conformance_tests).

use std::collections::BTreeMap;
use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use raft_proto::{NodeId, Role};

use crate::{NodeOptions, ProposeError, StateMachine, Status, TcpConfig};

/// A running node, seen through blocking calls whatever its runtime.
pub trait TestNode: Send + Sync {
    /// Proposes and waits up to `timeout` for the answer.
    fn propose(&self, command: Vec<u8>, timeout: Duration) -> Result<Vec<u8>, ProposeError>;
    /// The node's status, None once it is shut down.
    fn status(&self) -> Option<Status>;
    /// Stops the node cleanly (and its transport).
    fn shutdown(&self);
}

/// Starts nodes with one adapter.
pub trait Harness: Sync {
    /// Starts a node with `options` and a TCP transport set up by `tcp`, running
    /// [`LogMachine`] as its state machine.
    fn start(&self, options: NodeOptions, tcp: TcpConfig) -> Box<dyn TestNode>;
}

/// The suite's state machine: appends every command; answers how many it holds.
#[derive(Debug, Default)]
pub struct LogMachine(Vec<Vec<u8>>);

impl StateMachine for LogMachine {
    fn apply(&mut self, _index: u64, command: &[u8]) -> Vec<u8> {
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
}

const CLUSTER_ID: u64 = 42;

impl<'h> Cluster<'h> {
    /// Three nodes with data under a fresh temporary directory named after `name`.
    pub fn new(harness: &'h dyn Harness, name: &str) -> Self {
        Self::with_options(harness, name, |_| {})
    }

    /// Like [`new`](Self::new), with `tweak` applied to every node's options.
    pub fn with_options(harness: &'h dyn Harness, name: &str, tweak: fn(&mut NodeOptions)) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "raft-conformance-{name}-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        let listeners: Vec<TcpListener> = (0..3)
            .map(|_| TcpListener::bind("127.0.0.1:0").expect("a free port"))
            .collect();
        let peers = (1..=3)
            .zip(&listeners)
            .map(|(id, l)| (id, l.local_addr().expect("bound")))
            .collect();
        drop(listeners);
        let mut cluster = Self {
            harness,
            dir,
            peers,
            nodes: BTreeMap::new(),
            tweak,
        };
        for id in 1..=3 {
            cluster.start(id);
        }
        cluster
    }

    fn data_dir(dir: &Path, id: NodeId) -> PathBuf {
        dir.join(format!("node-{id}"))
    }

    /// Starts (or restarts) node `id` from its data directory.
    pub fn start(&mut self, id: NodeId) {
        let mut options = NodeOptions::new(id, vec![1, 2, 3], Self::data_dir(&self.dir, id));
        options.snapshot_every = Some(50);
        options.raft.max_snapshot_chunk = 256;
        (self.tweak)(&mut options);
        let mut others = self.peers.clone();
        others.remove(&id);
        let tcp = TcpConfig::new(CLUSTER_ID, id, self.peers[&id], others);
        let node = self.harness.start(options, tcp);
        self.nodes.insert(id, node);
    }

    /// Stops node `id` cleanly.
    pub fn stop(&mut self, id: NodeId) {
        if let Some(node) = self.nodes.remove(&id) {
            node.shutdown();
        }
    }

    /// The running node `id`.
    pub fn node(&self, id: NodeId) -> &dyn TestNode {
        self.nodes[&id].as_ref()
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

    /// Proposes through whichever node leads, for up to 10 s; returns the answer.
    pub fn propose(&self, command: &[u8]) -> Vec<u8> {
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
        node.propose(b"y".to_vec(), Duration::from_secs(1)),
        Err(ProposeError::ShutDown)
    );
    assert!(node.status().is_none());
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
        .propose(b"y".to_vec(), Duration::from_secs(60));
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

/// Generates one `#[test]` per conformance check for a harness expression.
#[macro_export]
macro_rules! conformance_tests {
    ($harness:expr) => {
        $crate::conformance_tests!(@tests $harness;
            election, proposals_under_load, failover, restart_from_disk,
            snapshot_to_lagging_node, shutdown, bad_frames_on_the_port,
            proposal_times_out_without_quorum);
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
