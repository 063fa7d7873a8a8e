//! Volatile storage (`NodeOptions::volatile`): a cluster commits with nothing on disk, and a
//! node restarted that way starts empty.

use std::time::{Duration, Instant};

use adapter_thread::{inbound_channel, MemoryNetwork, NodeHandle, NodeOptions, Role, StateMachine};

#[derive(Default)]
struct Count(u64);

impl StateMachine for Count {
    fn apply(&mut self, _index: u64, _command: &[u8]) -> Vec<u8> {
        self.0 += 1;
        self.0.to_le_bytes().to_vec()
    }
    fn snapshot(&self) -> Vec<u8> {
        self.0.to_le_bytes().to_vec()
    }
    fn restore(&mut self, snapshot: &[u8]) {
        self.0 = snapshot.try_into().map(u64::from_le_bytes).unwrap_or(0);
    }
}

fn start(network: &MemoryNetwork, id: u64, dir: &std::path::Path) -> NodeHandle {
    let mut options = NodeOptions::new(id, vec![1, 2, 3], dir.join(format!("node-{id}")));
    options.volatile = true;
    options.snapshot_every = Some(50);
    let (tx, rx) = inbound_channel();
    let transport = network.endpoint(id, move |message| tx.try_send(message).is_ok());
    adapter_thread::start(options, Count::default(), transport, rx).expect("starts")
}

#[test]
fn a_volatile_cluster_commits_without_a_disk_and_forgets_on_restart() {
    let dir = std::env::temp_dir().join(format!("raft-volatile-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let network = MemoryNetwork::new();
    let nodes: Vec<NodeHandle> = (1..=3).map(|id| start(&network, id, &dir)).collect();
    let deadline = Instant::now() + Duration::from_secs(10);
    let leader = loop {
        assert!(Instant::now() < deadline, "no leader within 10 s");
        if let Some(i) = nodes
            .iter()
            .position(|n| n.status().is_some_and(|s| s.role == Role::Leader))
        {
            break i;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let mut last = 0;
    for i in 1..=120u64 {
        let answer = nodes[leader].propose(vec![1; 16]).expect("commits");
        last = u64::from_le_bytes(answer.try_into().expect("8 bytes"));
        assert_eq!(last, i);
    }
    let index = nodes[leader].status().expect("runs").applied_index;
    for node in &nodes {
        let status = node
            .wait_applied_timeout(index, Duration::from_secs(10))
            .expect("every node applies what committed");
        assert!(status.snapshot_index > 0, "snapshots are taken in memory");
    }
    assert_eq!(last, 120);
    assert!(
        !dir.exists(),
        "volatile storage writes nothing to the data directory"
    );

    // A follower restarted with volatile storage has forgotten everything it held.
    let follower = (leader + 1) % 3;
    nodes[follower].shutdown();
    // Cut off, so that the leader cannot refill it before we look.
    network.disconnect(follower as u64 + 1);
    let restarted = start(&network, follower as u64 + 1, &dir);
    let status = restarted.status().expect("runs");
    assert!(
        status.last_log_index < index && status.snapshot_index == 0,
        "a volatile node restarts empty: {status:?}"
    );
    restarted.shutdown();
    for (i, node) in nodes.iter().enumerate() {
        if i != follower {
            node.shutdown();
        }
    }
    assert!(!dir.exists());
}
