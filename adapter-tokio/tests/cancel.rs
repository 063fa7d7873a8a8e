//! Dropping a proposal future is safe: the node keeps going and nothing is lost or doubled.

use std::time::Duration;

use adapter_common::conformance::LogMachine;
use adapter_tokio::{MemoryNetwork, NodeOptions, ProposeError};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_proposal_futures_lose_nothing() {
    let dir = std::env::temp_dir().join(format!("adapter-tokio-cancel-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let network = MemoryNetwork::new();
    let (tx, rx) = tokio::sync::mpsc::channel(1024);
    let endpoint = network.endpoint(1, move |m| tx.try_send(m).is_ok());
    let node = adapter_tokio::start(
        NodeOptions::new(1, vec![1], &dir),
        LogMachine::default(),
        endpoint,
        rx,
    )
    .expect("starts");
    loop {
        match node.propose(b"first".to_vec()).await {
            Err(ProposeError::NotLeader { .. }) => {
                tokio::time::sleep(Duration::from_millis(20)).await
            }
            other => {
                other.expect("committed");
                break;
            }
        }
    }
    // 100 proposals whose futures are dropped before they can complete.
    for i in 0..100 {
        let proposal = node.propose(format!("dropped-{i}").into_bytes());
        let _ = tokio::time::timeout(Duration::from_micros(1), proposal).await;
    }
    // The node still answers, and every dropped proposal was still appended exactly once:
    // the log machine answers how many commands it holds.
    let answer = node.propose(b"last".to_vec()).await.expect("committed");
    let count = u64::from_le_bytes(answer[..8].try_into().expect("8 bytes"));
    assert_eq!(count, 102);
    node.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}
