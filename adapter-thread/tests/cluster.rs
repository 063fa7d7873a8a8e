//! A three-node cluster in one process, over the in-memory transport, with real storage in
//! temporary directories: election, proposals under load, failover, restart from disk,
//! snapshot transfer to a lagging node, and shutdown.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use adapter_thread::transport::MemoryNetwork;
use adapter_thread::{NodeHandle, NodeOptions, ProposeError, StateMachine};
use raft_proto::{NodeId, Role};

/// Appends every command; answers the number of commands applied so far.
#[derive(Default)]
struct Log(Vec<Vec<u8>>);

impl StateMachine for Log {
    fn apply(&mut self, _index: u64, command: &[u8]) -> Vec<u8> {
        self.0.push(command.to_vec());
        (self.0.len() as u64).to_le_bytes().to_vec()
    }
    fn snapshot(&self) -> Vec<u8> {
        postcard::to_allocvec(&self.0).unwrap_or_default()
    }
    fn restore(&mut self, snapshot: &[u8]) {
        self.0 = postcard::from_bytes(snapshot).unwrap_or_default();
    }
}

struct Cluster {
    dir: PathBuf,
    network: MemoryNetwork,
    nodes: Vec<Option<NodeHandle>>,
}

impl Cluster {
    fn new(name: &str) -> Self {
        let dir =
            std::env::temp_dir().join(format!("adapter-thread-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut cluster = Self {
            dir,
            network: MemoryNetwork::new(),
            nodes: vec![None, None, None],
        };
        for id in 1..=3 {
            cluster.start(id);
        }
        cluster
    }

    fn data_dir(dir: &Path, id: NodeId) -> PathBuf {
        dir.join(format!("node-{id}"))
    }

    fn start(&mut self, id: NodeId) {
        let (tx, rx) = crossbeam_channel::bounded(4096);
        let mut options = NodeOptions::new(id, vec![1, 2, 3], Self::data_dir(&self.dir, id));
        options.snapshot_every = Some(50);
        options.raft.max_snapshot_chunk = 64;
        let node = adapter_thread::start(
            options,
            Log::default(),
            self.network.endpoint(id, move |m| tx.try_send(m).is_ok()),
            rx,
        )
        .expect("starts");
        self.nodes[id as usize - 1] = Some(node);
    }

    fn stop(&mut self, id: NodeId) {
        if let Some(node) = self.nodes[id as usize - 1].take() {
            node.shutdown();
        }
    }

    fn node(&self, id: NodeId) -> &NodeHandle {
        self.nodes[id as usize - 1].as_ref().expect("running")
    }

    fn leader(&self, within: Duration) -> NodeId {
        let start = Instant::now();
        while start.elapsed() < within {
            for node in self.nodes.iter().flatten() {
                if let Some(status) = node.status() {
                    if status.role == Role::Leader && status.leader == Some(status.id) {
                        return status.id;
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("no leader within {within:?}");
    }

    /// Proposes through whichever node leads, retrying for up to 10 s.
    fn propose(&self, command: &[u8]) -> Vec<u8> {
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(10) {
            for node in self.nodes.iter().flatten() {
                match node.propose(command.to_vec(), Duration::from_secs(2)) {
                    Ok(answer) => return answer,
                    Err(ProposeError::NotLeader { .. }) | Err(ProposeError::Lost) => {}
                    Err(ProposeError::TimedOut) => {}
                    Err(e) => panic!("proposal failed: {e}"),
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("no commit within 10 s");
    }

    fn wait_applied(&self, id: NodeId, index: u64, within: Duration) {
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

impl Drop for Cluster {
    fn drop(&mut self) {
        for id in 1..=3 {
            self.stop(id);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn elects_commits_fails_over_restarts_and_catches_up_by_snapshot() {
    let mut cluster = Cluster::new("cluster");
    let leader = cluster.leader(Duration::from_secs(5));

    // Proposals under load, from several threads at once.
    std::thread::scope(|scope| {
        for t in 0..4 {
            let cluster = &cluster;
            scope.spawn(move || {
                for i in 0..50 {
                    cluster.propose(format!("{t}-{i}").as_bytes());
                }
            });
        }
    });
    let status = cluster.node(leader).status().expect("running");
    assert!(status.commit_index >= 200);

    // Failover: cut the leader off; the others elect a new one and keep committing.
    cluster.network.disconnect(leader);
    let started = Instant::now();
    let mut new_leader = leader;
    while new_leader == leader && started.elapsed() < Duration::from_secs(5) {
        for id in (1..=3).filter(|&id| id != leader) {
            if cluster
                .node(id)
                .status()
                .is_some_and(|s| s.role == Role::Leader)
            {
                new_leader = id;
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_ne!(new_leader, leader, "no failover within 5 s");
    cluster.network.connect(leader);

    // A lagging node: stop one, commit past several snapshots, restart it from disk; it must
    // catch up through a (chunked) snapshot.
    let lagging = (1..=3).find(|&id| id != new_leader).expect("a follower");
    cluster.stop(lagging);
    let mut last = 0;
    for i in 0..300 {
        last = u64::from_le_bytes(
            cluster.propose(format!("more-{i}").as_bytes())[..8]
                .try_into()
                .expect("8 bytes"),
        );
    }
    assert!(last >= 500);
    cluster.start(lagging);
    let applied = cluster
        .node(new_leader)
        .status()
        .expect("running")
        .applied_index;
    cluster.wait_applied(lagging, applied, Duration::from_secs(10));
    let status = cluster.node(lagging).status().expect("running");
    assert!(
        status.snapshot_index > 0,
        "the lagging node should have a snapshot"
    );

    // Restart everyone from disk: the state comes back and the cluster goes on.
    for id in 1..=3 {
        cluster.stop(id);
    }
    for id in 1..=3 {
        cluster.start(id);
    }
    let answer = cluster.propose(b"after restart");
    let count = u64::from_le_bytes(answer[..8].try_into().expect("8 bytes"));
    assert!(count > last, "state lost across restart: {count} <= {last}");
}

#[test]
fn shutdown_fails_waiting_proposals_and_stops_threads() {
    let mut cluster = Cluster::new("shutdown");
    let leader = cluster.leader(Duration::from_secs(5));
    cluster.propose(b"x");
    let handle = cluster.node(leader).clone();
    cluster.stop(leader);
    assert!(matches!(
        handle.propose(b"y".to_vec(), Duration::from_secs(1)),
        Err(ProposeError::ShutDown)
    ));
    assert!(handle.status().is_none());
}
