//! A state machine on its own thread (`NodeOptions::apply_on_thread`) that panics stops its
//! node cleanly: the proposer is answered, the node reports itself shut down, and nothing
//! hangs.

use std::time::{Duration, Instant};

use adapter_tokio::{inbound_channel, MemoryNetwork, NodeOptions, ProposeError, StateMachine};

struct Fragile;

impl StateMachine for Fragile {
    fn apply(&mut self, _index: u64, command: &[u8]) -> Vec<u8> {
        assert!(command != b"boom", "the state machine cannot apply this");
        command.to_vec()
    }
    fn snapshot(&self) -> Vec<u8> {
        Vec::new()
    }
    fn restore(&mut self, _snapshot: &[u8]) {}
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_state_machine_on_its_thread_stops_the_node() {
    let dir = std::env::temp_dir().join(format!("tokio-apply-thread-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut options = NodeOptions::new(1, vec![1], &dir);
    options.apply_on_thread = true;
    options.raft.election_timeout_min = 20;
    options.raft.election_timeout_max = 40;
    options.raft.heartbeat_interval = 5;
    let network = MemoryNetwork::new();
    let (tx, rx) = inbound_channel();
    let transport = network.endpoint(1, move |message| tx.try_send(message).is_ok());
    let node = adapter_tokio::start(options, Fragile, transport, rx).unwrap();
    let start = Instant::now();
    let answer = loop {
        match node.propose(b"fine".to_vec()).await {
            Err(ProposeError::NotLeader { .. }) if start.elapsed() < Duration::from_secs(10) => {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            other => break other,
        }
    };
    assert_eq!(answer, Ok(b"fine".to_vec()));
    let boom = tokio::time::timeout(Duration::from_secs(10), node.propose(b"boom".to_vec())).await;
    assert_eq!(boom, Ok(Err(ProposeError::ShutDown)));
    let stopped = tokio::time::timeout(Duration::from_secs(10), async {
        while node.status().await.is_some() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(stopped.is_ok(), "the node did not stop");
    node.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}
