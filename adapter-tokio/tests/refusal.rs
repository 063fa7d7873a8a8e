//! A misconfigured peer is visible at both ends: the node that refuses its hello counts and
//! logs it, and the refused node is told why, logs it at `error` and counts it.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use raft_proto::MessageBody;

use adapter_tokio::transport::TcpTransport;
use adapter_tokio::{inbound_channel, Message, TcpConfig, Transport};

fn heartbeat(from: u64, to: u64) -> Message {
    Message {
        from,
        to,
        term: 1,
        body: MessageBody::ConfirmLeader { round: 1 },
    }
}

async fn eventually(mut condition: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(10) {
        if condition() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_of_another_cluster_is_told_why_it_is_refused() {
    let any = "127.0.0.1:0".parse().unwrap();
    let (b_tx, mut b_rx) = inbound_channel();
    let b = TcpTransport::start(TcpConfig::new(42, 2, any, BTreeMap::new()), b_tx)
        .await
        .unwrap();
    let peers = BTreeMap::from([(2, b.local_addr())]);
    let (a_tx, _a_rx) = inbound_channel();
    let a = TcpTransport::start(TcpConfig::new(43, 1, any, peers.clone()), a_tx)
        .await
        .unwrap();
    let (c_tx, _c_rx) = inbound_channel();
    let c = TcpTransport::start(TcpConfig::new(42, 3, any, peers), c_tx)
        .await
        .unwrap();
    a.send(heartbeat(1, 2));
    c.send(heartbeat(3, 2));
    assert!(
        eventually(|| a.stats().refused_by_peers >= 1).await,
        "{:?}",
        a.stats()
    );
    assert!(b.stats().refused_connections >= 1, "{:?}", b.stats());
    let received = tokio::time::timeout(Duration::from_secs(10), b_rx.recv()).await;
    assert_eq!(received.ok().flatten(), Some(heartbeat(3, 2)));
    assert_eq!(c.stats().refused_by_peers, 0);
    // The refused node backs off (20 ms, doubling to 1 s), rather than retrying every 20 ms.
    let before = a.stats().refused_by_peers;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let retries = a.stats().refused_by_peers - before;
    assert!(retries <= 8, "{retries} refusals in 1 s: no backoff");
    for transport in [a, b, c] {
        transport.shutdown().await;
    }
}

/// The refused node's own status says so, not only its transport's counters and its log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_node_shows_it_in_its_status() {
    let any = "127.0.0.1:0".parse().unwrap();
    let (b_tx, _b_rx) = inbound_channel();
    let b = TcpTransport::start(TcpConfig::new(42, 2, any, BTreeMap::new()), b_tx)
        .await
        .unwrap();
    let dir = std::env::temp_dir().join(format!("tokio-refused-status-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let (a_tx, a_rx) = inbound_channel();
    let peers = BTreeMap::from([(2, b.local_addr())]);
    let a = TcpTransport::start(TcpConfig::new(43, 1, any, peers), a_tx)
        .await
        .unwrap();
    let node = adapter_tokio::start(
        adapter_tokio::NodeOptions::new(1, vec![1, 2], &dir),
        Nothing,
        a,
        a_rx,
    )
    .unwrap();
    let start = Instant::now();
    let mut refused = 0;
    // Node 1 campaigns after an election timeout (300–600 ms), and node 2 refuses it.
    while refused == 0 && start.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let status = node.status().await.expect("running");
        refused = status.transport.expect("TCP counts").refused_by_peers;
    }
    assert!(refused >= 1, "the refusal never reached the status");
    node.shutdown().await;
    b.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

struct Nothing;

impl adapter_tokio::StateMachine for Nothing {
    fn apply(&mut self, _index: u64, _command: &[u8]) -> Vec<u8> {
        Vec::new()
    }
    fn snapshot(&self) -> Vec<u8> {
        Vec::new()
    }
    fn restore(&mut self, _snapshot: &[u8]) {}
}
