//! A misconfigured peer is visible at both ends: the node that refuses its hello counts and
//! logs it, and the refused node is told why, logs it at `error` and counts it.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use raft_proto::MessageBody;

use adapter_smol::transport::TcpTransport;
use adapter_smol::{inbound_channel, Message, TcpConfig, Transport};

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
        smol::Timer::after(Duration::from_millis(10)).await;
    }
    false
}

#[test]
fn a_peer_of_another_cluster_is_told_why_it_is_refused() {
    smol::block_on(refused());
}

async fn refused() {
    let any = "127.0.0.1:0".parse().unwrap();
    let (b_tx, b_rx) = inbound_channel();
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
    let received = futures_lite::future::or(async { b_rx.recv().await.ok() }, async {
        smol::Timer::after(Duration::from_secs(10)).await;
        None
    })
    .await;
    assert_eq!(received, Some(heartbeat(3, 2)));
    assert_eq!(c.stats().refused_by_peers, 0);
    // The refused node backs off (20 ms, doubling to 1 s), rather than retrying every 20 ms.
    let before = a.stats().refused_by_peers;
    smol::Timer::after(Duration::from_secs(1)).await;
    let retries = a.stats().refused_by_peers - before;
    assert!(retries <= 8, "{retries} refusals in 1 s: no backoff");
    for transport in [a, b, c] {
        transport.shutdown();
    }
}
