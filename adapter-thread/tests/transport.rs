//! The transports against real sockets on 127.0.0.1: delivery and order, the handshake,
//! hostile bytes, dead and slow peers, reconnection, shutdown; and the in-memory network.

use std::collections::BTreeMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use adapter_thread::transport::{MemoryNetwork, TcpConfig, TcpTransport, Transport};
use crossbeam_channel::Receiver;
use raft_proto::wire::{encode_frame, FrameDecoder, PeerFrame};
use raft_proto::{Entry, Message, MessageBody, NodeId};

const CLUSTER: u64 = 0x5eed;
/// How long a test waits for something that should happen within milliseconds.
const PATIENCE: Duration = Duration::from_secs(5);
/// How long a shutdown may take.
const SHUTDOWN_BOUND: Duration = Duration::from_secs(2);

fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .try_init();
}

fn bind() -> TcpListener {
    TcpListener::bind("127.0.0.1:0").unwrap()
}

/// A small message whose term numbers it.
fn msg(from: NodeId, to: NodeId, seq: u64) -> Message {
    Message {
        from,
        to,
        term: seq,
        body: MessageBody::VoteResponse {
            granted: seq.is_multiple_of(2),
        },
    }
}

/// A message carrying one entry of `data`.
fn append(from: NodeId, to: NodeId, seq: u64, data: &Arc<[u8]>) -> Message {
    Message {
        from,
        to,
        term: seq,
        body: MessageBody::AppendRequest {
            prev_log_index: seq,
            prev_log_term: 1,
            entries: vec![Entry::command(1, Arc::clone(data))],
            leader_commit: 0,
        },
    }
}

/// Starts one node per id, all on 127.0.0.1 with ports chosen by the system, each with all
/// the others as peers. `tweak` may change each configuration.
fn cluster(
    ids: &[NodeId],
    tweak: impl Fn(&mut TcpConfig),
) -> Vec<(TcpTransport, Receiver<Message>)> {
    let listeners: Vec<TcpListener> = ids.iter().map(|_| bind()).collect();
    let addrs: BTreeMap<NodeId, SocketAddr> = ids
        .iter()
        .zip(&listeners)
        .map(|(&id, listener)| (id, listener.local_addr().unwrap()))
        .collect();
    ids.iter()
        .zip(listeners)
        .map(|(&id, listener)| {
            let mut peers = addrs.clone();
            peers.remove(&id);
            let mut config = TcpConfig::new(CLUSTER, id, addrs[&id], peers);
            tweak(&mut config);
            let (sender, receiver) = crossbeam_channel::bounded(10_000);
            let transport = TcpTransport::start_with_listener(config, listener, sender).unwrap();
            assert_eq!(transport.local_addr(), addrs[&id]);
            (transport, receiver)
        })
        .collect()
}

/// Receives exactly `n` messages, failing if they do not all come within [`PATIENCE`].
fn recv_n(receiver: &Receiver<Message>, n: usize) -> Vec<Message> {
    let deadline = Instant::now() + PATIENCE;
    (0..n)
        .map(|i| {
            receiver
                .recv_deadline(deadline)
                .unwrap_or_else(|_| panic!("only {i} of {n} messages arrived"))
        })
        .collect()
}

/// Polls `condition` until it holds or [`PATIENCE`] runs out; returns whether it held.
fn eventually(mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + PATIENCE;
    while Instant::now() < deadline {
        if condition() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    condition()
}

fn timed_shutdown(transport: TcpTransport) {
    let start = Instant::now();
    transport.shutdown();
    let took = start.elapsed();
    assert!(took < SHUTDOWN_BOUND, "shutdown took {took:?}");
}

/// Asserts that the other end closes `stream`, having written nothing but, at most, one
/// refusal frame; returns the refusal's reason if there was one.
fn assert_closed_by_node(stream: &mut TcpStream) -> Option<String> {
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    let mut written = Vec::new();
    let mut buf = [0; 256];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => written.extend_from_slice(&buf[..n]),
            Err(error) => {
                assert!(
                    !matches!(error.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
                    "the node kept the connection open: {error}"
                );
                break;
            }
        }
    }
    if written.is_empty() {
        return None;
    }
    let mut decoder = FrameDecoder::new(1024);
    decoder.extend(&written);
    match decoder.next_frame::<PeerFrame>() {
        Ok(Some(PeerFrame::Refused { reason })) => Some(reason),
        other => panic!("the node wrote {} bytes: {other:?}", written.len()),
    }
}

/// Asserts that `stream` stays open for a while (the node is still reading it).
fn assert_still_open(stream: &mut TcpStream) {
    stream
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut buf = [0; 64];
    let error = stream
        .read(&mut buf)
        .expect_err("the node closed the connection");
    assert!(matches!(
        error.kind(),
        ErrorKind::WouldBlock | ErrorKind::TimedOut
    ));
}

fn frame(value: &PeerFrame) -> Vec<u8> {
    let mut out = Vec::new();
    encode_frame(value, 1 << 20, &mut out).unwrap();
    out
}

fn hello(cluster_id: u64, node_id: NodeId) -> Vec<u8> {
    frame(&PeerFrame::Hello {
        cluster_id,
        node_id,
        address: String::new(),
    })
}

fn raw_connect(addr: SocketAddr, bytes: &[u8]) -> TcpStream {
    let mut stream = TcpStream::connect(addr).unwrap();
    // The node may close before reading everything; that is what is being tested.
    let _ = stream.write_all(bytes);
    stream
}

#[test]
fn two_nodes_exchange_messages_in_order() {
    init_tracing();
    let mut nodes = cluster(&[1, 2], |_| {});
    let (b, b_in) = nodes.pop().unwrap();
    let (a, a_in) = nodes.pop().unwrap();
    let big: Arc<[u8]> = (0..20_000u32).map(|i| i as u8).collect();
    let mut a_sent = Vec::new();
    for seq in 0..300 {
        let to_b = if seq % 10 == 0 {
            append(1, 2, seq, &big)
        } else {
            msg(1, 2, seq)
        };
        a_sent.push(to_b.clone());
        a.send(to_b);
        b.send(msg(2, 1, seq));
    }
    assert_eq!(
        recv_n(&b_in, 300),
        a_sent,
        "everything, intact and in order"
    );
    let b_sent: Vec<Message> = (0..300).map(|seq| msg(2, 1, seq)).collect();
    assert_eq!(recv_n(&a_in, 300), b_sent);
    assert!(eventually(|| a.stats().sent == 300 && b.stats().sent == 300));
    assert!(eventually(
        || a.stats().received == 300 && b.stats().received == 300
    ));
    for node in [&a, &b] {
        let stats = node.stats();
        assert_eq!(
            (stats.received, stats.dropped, stats.bad_frames),
            (300, 0, 0)
        );
        assert_eq!(stats.refused_connections, 0);
    }
    timed_shutdown(a);
    timed_shutdown(b);
}

#[test]
fn three_nodes_all_pairs() {
    init_tracing();
    let ids = [1, 2, 3];
    let nodes = cluster(&ids, |_| {});
    for (node, _) in &nodes {
        // Messages to itself or to a stranger are dropped, not sent.
        node.send(msg(0, 9, 0));
    }
    for seq in 0..100 {
        for (from, (node, _)) in ids.iter().zip(&nodes) {
            for &to in ids.iter().filter(|&&to| to != *from) {
                node.send(msg(*from, to, seq));
            }
        }
    }
    for (&id, (node, inbound)) in ids.iter().zip(&nodes) {
        let got = recv_n(inbound, 200);
        for &from in ids.iter().filter(|&&from| from != id) {
            let terms: Vec<u64> = got
                .iter()
                .filter(|m| m.from == from)
                .inspect(|m| assert_eq!(m.to, id))
                .map(|m| m.term)
                .collect();
            assert_eq!(terms, (0..100).collect::<Vec<_>>(), "from {from} to {id}");
        }
        assert!(eventually(|| node.stats().received == 200));
        assert_eq!(node.stats().dropped, 1);
    }
    for (node, _) in nodes {
        timed_shutdown(node);
    }
}

#[test]
fn handshake_refuses_other_clusters_and_this_node_but_not_newcomers() {
    init_tracing();
    let a_listener = bind();
    let (b_in_tx, b_in) = crossbeam_channel::bounded(100);
    let config = TcpConfig::new(
        CLUSTER,
        2,
        "127.0.0.1:0".parse().unwrap(),
        BTreeMap::from([(1, a_listener.local_addr().unwrap())]),
    );
    let b = TcpTransport::start(config, b_in_tx).unwrap();
    let b_addr = b.local_addr();

    // Raw connections: wrong cluster, this node's own id, and no hello at all.
    // A refused hello is answered with the reason.
    let mut wrong_cluster = raw_connect(b_addr, &hello(CLUSTER + 1, 1));
    let reason = assert_closed_by_node(&mut wrong_cluster).expect("a refusal");
    assert!(reason.contains(&(CLUSTER + 1).to_string()), "{reason}");
    let mut no_hello = raw_connect(b_addr, &frame(&PeerFrame::Raft(msg(1, 2, 0))));
    assert_eq!(assert_closed_by_node(&mut no_hello), None);
    let mut self_hello = raw_connect(b_addr, &hello(CLUSTER, 2));
    assert!(assert_closed_by_node(&mut self_hello).is_some());

    // A real transport configured for another cluster, and one for a node that is not a
    // member yet (a node joining the cluster must be heard; membership is the core's business).
    let mut others = Vec::new();
    for (cluster_id, id) in [(CLUSTER + 1, 1), (CLUSTER, 42)] {
        let (tx, _rx) = crossbeam_channel::bounded(10);
        let config = TcpConfig::new(
            cluster_id,
            id,
            "127.0.0.1:0".parse().unwrap(),
            BTreeMap::from([(2, b_addr)]),
        );
        let other = TcpTransport::start(config, tx).unwrap();
        other.send(msg(id, 2, 7));
        others.push(other);
    }
    assert!(eventually(|| b.stats().refused_connections >= 3));
    // The transport of another cluster learns it was refused, and counts it.
    assert!(
        eventually(|| others[0].stats().refused_by_peers >= 1),
        "{:?}",
        others[0].stats()
    );
    assert_eq!(others[1].stats().refused_by_peers, 0);
    assert!(
        eventually(|| b.stats().bad_frames >= 1),
        "raft frame before hello"
    );
    assert_eq!(
        recv_n(&b_in, 1),
        vec![msg(42, 2, 7)],
        "only the newcomer's message got through"
    );

    // A member's messages must carry its own id: a forged sender is dropped, the connection
    // stays, and what follows is delivered.
    let mut member = raw_connect(b_addr, &hello(CLUSTER, 1));
    member
        .write_all(&frame(&PeerFrame::Raft(msg(3, 2, 1))))
        .unwrap();
    member
        .write_all(&frame(&PeerFrame::Raft(msg(1, 5, 2))))
        .unwrap();
    member
        .write_all(&frame(&PeerFrame::Raft(msg(1, 2, 3))))
        .unwrap();
    assert_eq!(recv_n(&b_in, 1), vec![msg(1, 2, 3)]);
    assert_still_open(&mut member);
    // A second hello on the same connection is out of protocol.
    member.write_all(&hello(CLUSTER, 1)).unwrap();
    assert_closed_by_node(&mut member);

    // The genuine node 1 gets through.
    let (a_in_tx, _a_in) = crossbeam_channel::bounded(10);
    let config = TcpConfig::new(
        CLUSTER,
        1,
        a_listener.local_addr().unwrap(),
        BTreeMap::from([(2, b_addr)]),
    );
    let a = TcpTransport::start_with_listener(config, a_listener, a_in_tx).unwrap();
    a.send(msg(1, 2, 10));
    assert_eq!(recv_n(&b_in, 1), vec![msg(1, 2, 10)]);
    assert!(b_in.try_recv().is_err());
    // Counters are bumped just after delivery (the newcomer's message counts too).
    assert!(eventually(|| b.stats().received == 3), "{:?}", b.stats());
    assert!(b.stats().bad_frames >= 4, "{:?}", b.stats());

    for other in others {
        timed_shutdown(other);
    }
    timed_shutdown(a);
    timed_shutdown(b);
}

#[test]
fn hostile_bytes_close_the_connection_but_the_node_keeps_serving() {
    init_tracing();
    let mut nodes = cluster(&[1, 2], |config| config.max_frame = 1 << 20);
    let (b, b_in) = nodes.pop().unwrap();
    let (a, _a_in) = nodes.pop().unwrap();
    let b_addr = b.local_addr();
    // An idle connection that stays open across everything, and across shutdown.
    let mut idle = raw_connect(b_addr, &[]);

    // Random bytes, then end of stream.
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let noise: Vec<u8> = (0..4096)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect();
    let mut random = raw_connect(b_addr, &noise);
    let _ = random.shutdown(Shutdown::Write);
    assert_closed_by_node(&mut random);

    // Random bytes after a valid hello.
    let mut random_after_hello = raw_connect(b_addr, &hello(CLUSTER, 1));
    let _ = random_after_hello.write_all(&noise);
    let _ = random_after_hello.shutdown(Shutdown::Write);
    assert_closed_by_node(&mut random_after_hello);

    // A frame cut short: half of a message, then end of stream.
    let whole = frame(&PeerFrame::Raft(msg(1, 2, 0)));
    let mut truncated = raw_connect(b_addr, &hello(CLUSTER, 1));
    truncated.write_all(&whole[..whole.len() / 2]).unwrap();
    truncated.shutdown(Shutdown::Write).unwrap();
    assert_closed_by_node(&mut truncated);

    // A hello cut short.
    let mut truncated_hello = raw_connect(b_addr, &hello(CLUSTER, 1)[..3]);
    truncated_hello.shutdown(Shutdown::Write).unwrap();
    assert_closed_by_node(&mut truncated_hello);

    // Oversized length prefixes, with the connection left open: closed at once.
    let mut oversized = raw_connect(b_addr, &hello(CLUSTER, 1));
    oversized
        .write_all(&((1u32 << 20) + 1).to_le_bytes())
        .unwrap();
    assert_closed_by_node(&mut oversized);
    let mut oversized_hello = raw_connect(b_addr, &u32::MAX.to_le_bytes());
    assert_closed_by_node(&mut oversized_hello);
    // Before the hello, even a modest frame is too large.
    let mut big_hello = raw_connect(b_addr, &1000u32.to_le_bytes());
    assert_closed_by_node(&mut big_hello);

    assert!(eventually(|| b.stats().bad_frames >= 7), "{:?}", b.stats());
    assert!(b_in.try_recv().is_err(), "nothing was delivered");
    assert_still_open(&mut idle);

    // The node still serves its real peer. (The raw connections that said hello as node 1
    // replaced node 1's own connection, so its writer may lose a write and reconnect first.)
    let deadline = Instant::now() + PATIENCE;
    let mut seq = 0;
    let first = loop {
        assert!(Instant::now() < deadline, "node 1 never got through");
        a.send(msg(1, 2, seq));
        seq += 1;
        if let Ok(message) = b_in.recv_timeout(Duration::from_millis(20)) {
            break message;
        }
    };
    let _ = recv_n(&b_in, (seq - first.term - 1) as usize);
    for i in 0..10 {
        a.send(msg(1, 2, seq + i));
    }
    let terms: Vec<u64> = recv_n(&b_in, 10).iter().map(|m| m.term).collect();
    assert_eq!(terms, (seq..seq + 10).collect::<Vec<_>>());

    timed_shutdown(a);
    timed_shutdown(b);
    assert_closed_by_node(&mut idle);
}

#[test]
fn dead_peer_never_blocks_and_is_reached_once_it_comes_up() {
    init_tracing();
    // An address where nobody listens (yet).
    let b_addr = bind().local_addr().unwrap();
    let a_listener = bind();
    let a_addr = a_listener.local_addr().unwrap();
    let (a_in_tx, _a_in) = crossbeam_channel::bounded(10);
    let config = TcpConfig::new(CLUSTER, 1, a_addr, BTreeMap::from([(2, b_addr)]));
    let a = TcpTransport::start_with_listener(config, a_listener, a_in_tx).unwrap();

    let start = Instant::now();
    for seq in 0..1000 {
        a.send(msg(1, 2, seq));
    }
    let took = start.elapsed();
    assert!(
        took < Duration::from_millis(500),
        "1000 sends took {took:?}"
    );
    // Nothing can be sent; all of it is dropped rather than kept for later.
    assert!(eventually(|| a.stats().dropped == 1000), "{:?}", a.stats());
    assert_eq!(a.stats().sent, 0);

    // The peer comes up on that address; new messages reach it.
    let (b_in_tx, b_in) = crossbeam_channel::bounded(10_000);
    let config = TcpConfig::new(CLUSTER, 2, b_addr, BTreeMap::from([(1, a_addr)]));
    let b = TcpTransport::start(config, b_in_tx).unwrap();
    let deadline = Instant::now() + PATIENCE;
    let mut seq = 1000;
    let first = loop {
        assert!(Instant::now() < deadline, "never reconnected");
        a.send(msg(1, 2, seq));
        seq += 1;
        if let Ok(message) = b_in.recv_timeout(Duration::from_millis(20)) {
            break message;
        }
    };
    assert!(first.term >= 1000, "old messages were not delivered late");
    // The connection is now steady: everything arrives, in order.
    let tail: Vec<u64> = recv_n(&b_in, (seq - first.term - 1) as usize)
        .iter()
        .map(|m| m.term)
        .collect();
    assert_eq!(tail, (first.term + 1..seq).collect::<Vec<_>>());
    for i in 0..50 {
        a.send(msg(1, 2, seq + i));
    }
    let terms: Vec<u64> = recv_n(&b_in, 50).iter().map(|m| m.term).collect();
    assert_eq!(terms, (seq..seq + 50).collect::<Vec<_>>());

    timed_shutdown(a);
    timed_shutdown(b);
}

#[test]
fn slow_peer_never_blocks_and_shutdown_is_prompt() {
    init_tracing();
    // A peer that accepts connections (the kernel does it) but never reads.
    let black_hole = bind();
    let (tx, _rx) = crossbeam_channel::bounded(10);
    let mut config = TcpConfig::new(
        CLUSTER,
        1,
        "127.0.0.1:0".parse().unwrap(),
        BTreeMap::from([(2, black_hole.local_addr().unwrap())]),
    );
    config.queue_len = 16;
    let a = TcpTransport::start(config, tx).unwrap();
    let payload: Arc<[u8]> = vec![0xab; 256 * 1024].into();
    let start = Instant::now();
    for seq in 0..1000 {
        a.send(append(1, 2, seq, &payload));
    }
    let took = start.elapsed();
    assert!(
        took < Duration::from_millis(500),
        "1000 sends took {took:?}"
    );
    let stats = a.stats();
    assert!(stats.dropped > 0, "the queue filled up: {stats:?}");
    assert!(stats.sent < 1000, "{stats:?}");
    // The writer is now stuck writing to a full socket; shutdown must not wait for it.
    timed_shutdown(a);
}

#[test]
fn full_inbound_channel_drops_instead_of_stalling() {
    init_tracing();
    let listeners = [bind(), bind()];
    let addrs = [
        listeners[0].local_addr().unwrap(),
        listeners[1].local_addr().unwrap(),
    ];
    let [a_listener, b_listener] = listeners;
    let (a_in_tx, _a_in) = crossbeam_channel::bounded(10);
    let (b_in_tx, b_in) = crossbeam_channel::bounded(4);
    let a = TcpTransport::start_with_listener(
        TcpConfig::new(CLUSTER, 1, addrs[0], BTreeMap::from([(2, addrs[1])])),
        a_listener,
        a_in_tx,
    )
    .unwrap();
    let b = TcpTransport::start_with_listener(
        TcpConfig::new(CLUSTER, 2, addrs[1], BTreeMap::from([(1, addrs[0])])),
        b_listener,
        b_in_tx,
    )
    .unwrap();
    for seq in 0..100 {
        a.send(msg(1, 2, seq));
    }
    assert!(eventually(|| {
        let stats = b.stats();
        stats.received + stats.dropped == 100
    }));
    let stats = b.stats();
    assert_eq!((stats.received, stats.dropped), (4, 96));
    let terms: Vec<u64> = b_in.try_iter().map(|m| m.term).collect();
    assert_eq!(terms, [0, 1, 2, 3]);
    // Room again: new messages get through on the same connection.
    a.send(msg(1, 2, 100));
    assert_eq!(recv_n(&b_in, 1)[0].term, 100);
    timed_shutdown(a);
    timed_shutdown(b);
}

#[test]
fn memory_network_delivers_and_cuts_nodes_off() {
    let network = MemoryNetwork::new();
    let (tx1, rx1) = crossbeam_channel::bounded(10);
    let (tx2, rx2) = crossbeam_channel::bounded(2);
    let (tx3, rx3) = crossbeam_channel::bounded(10);
    let n1 = network.endpoint(1, move |m| tx1.try_send(m).is_ok());
    let n2 = network
        .clone()
        .endpoint(2, move |m| tx2.try_send(m).is_ok());
    let n3 = network.endpoint(3, move |m| tx3.try_send(m).is_ok());
    assert_eq!((n1.id(), n2.id(), n3.id()), (1, 2, 3));

    n1.send(msg(1, 2, 0));
    n3.send(msg(3, 1, 0));
    n1.send(msg(1, 9, 0)); // nobody there: dropped
    assert_eq!(rx2.try_recv().unwrap(), msg(1, 2, 0));
    assert_eq!(rx1.try_recv().unwrap(), msg(3, 1, 0));

    network.disconnect(2);
    assert!(!network.is_connected(2));
    n1.send(msg(1, 2, 1));
    n2.send(msg(2, 3, 1));
    n1.send(msg(1, 3, 1));
    assert!(rx2.try_recv().is_err());
    assert_eq!(rx3.try_recv().unwrap(), msg(1, 3, 1), "others still talk");
    assert!(rx3.try_recv().is_err());

    network.connect(2);
    n2.send(msg(2, 3, 2));
    assert_eq!(rx3.try_recv().unwrap(), msg(2, 3, 2));

    // A full inbound channel drops instead of blocking.
    for seq in 0..5 {
        n1.send(msg(1, 2, seq));
    }
    assert_eq!(rx2.try_iter().count(), 2);
    assert!(rx1.try_recv().is_err());

    // The transports are usable as trait objects shared between threads.
    let shared: Arc<dyn Transport> = Arc::new(n3);
    std::thread::scope(|scope| {
        scope.spawn(|| shared.send(msg(3, 1, 9)));
    });
    assert_eq!(rx1.try_recv().unwrap(), msg(3, 1, 9));
}

#[test]
fn voters_without_an_address_are_reported_at_start() {
    let (tx, _rx) = crossbeam_channel::bounded(10);
    let peers = BTreeMap::from([
        (1, "127.0.0.1:9".parse().unwrap()),
        (2, "127.0.0.1:9".parse().unwrap()),
    ]);
    let config = TcpConfig::new(CLUSTER, 1, "127.0.0.1:0".parse().unwrap(), peers);
    let transport = TcpTransport::start(config, tx).unwrap();
    // The node itself needs no address; voter 3 has none.
    assert_eq!(
        adapter_common::unreachable_voters(1, &[1, 2, 3], &transport),
        vec![3]
    );
    assert!(adapter_common::unreachable_voters(1, &[1, 2], &transport).is_empty());
    // A transport that cannot tell reports nothing.
    let network = MemoryNetwork::new();
    let endpoint = network.endpoint(1, |_| true);
    assert!(adapter_common::unreachable_voters(1, &[1, 2, 3], &endpoint).is_empty());
    timed_shutdown(transport);
}

/// A member that sends valid, large messages at full speed to a node that does not keep up
/// cannot make the node's inbound queue hold more than `max_inbound_bytes`: the rest is
/// dropped, and room comes back as the node reports what it took.
#[test]
fn a_flooding_member_cannot_grow_the_inbound_queue_past_its_byte_limit() {
    init_tracing();
    let limit = 1 << 20;
    let mut nodes = cluster(&[2], |config| {
        config.max_frame = 1 << 20;
        config.max_inbound_bytes = limit;
    });
    let (b, b_in) = nodes.pop().unwrap();
    let data: Arc<[u8]> = vec![7u8; 100 * 1024].into();
    let mut member = raw_connect(b.local_addr(), &hello(CLUSTER, 1));
    for seq in 0..100 {
        member
            .write_all(&frame(&PeerFrame::Raft(append(1, 2, seq, &data))))
            .unwrap();
    }
    // Nobody takes anything off the queue meanwhile.
    assert!(
        eventually(|| {
            let stats = b.stats();
            stats.received + stats.dropped == 100
        }),
        "{:?}",
        b.stats()
    );
    let queued: Vec<Message> = b_in.try_iter().collect();
    let bytes: u64 = queued.iter().map(adapter_common::inbound_size).sum();
    assert!(bytes <= limit, "{bytes} bytes queued");
    assert_eq!(queued.len() as u64, b.stats().received);
    assert!(b.stats().dropped >= 85, "{:?}", b.stats());
    // The node took them: room for as many again.
    b.consumed(bytes);
    for seq in 100..105 {
        member
            .write_all(&frame(&PeerFrame::Raft(append(1, 2, seq, &data))))
            .unwrap();
    }
    assert_eq!(recv_n(&b_in, 5).len(), 5);
    timed_shutdown(b);
}

/// A node given a TLS certificate that does not name it, has expired, or is a client's cannot
/// start its transport: its peers would refuse every connection of it, so the mistake is
/// reported at once.
#[test]
fn a_certificate_for_another_node_is_refused_at_start() {
    use adapter_common::tls::{generate::ClusterCa, TlsConfig};
    let ca = ClusterCa::new("start check").unwrap();
    let issued = ca.node(2).unwrap();
    let tls = TlsConfig::from_pem(
        issued.cert_pem.as_bytes(),
        issued.key_pem.as_bytes(),
        ca.cert_pem().as_bytes(),
    )
    .unwrap();
    let mut config = TcpConfig::new(CLUSTER, 1, "127.0.0.1:0".parse().unwrap(), BTreeMap::new());
    config.tls = Some(tls.clone());
    let (tx, _rx) = crossbeam_channel::unbounded();
    let error = TcpTransport::start(config.clone(), tx.clone()).unwrap_err();
    assert_eq!(error.kind(), ErrorKind::InvalidInput);
    assert!(error.to_string().contains("node-1"), "{error}");
    // The same certificate is fine for node 2.
    config.node_id = 2;
    timed_shutdown(TcpTransport::start(config.clone(), tx.clone()).unwrap());
    // An expired certificate, or a client's, is refused at start too.
    for issued in [ca.expired_node(2).unwrap(), ca.client("node-2").unwrap()] {
        config.tls = Some(
            TlsConfig::from_pem(
                issued.cert_pem.as_bytes(),
                issued.key_pem.as_bytes(),
                ca.cert_pem().as_bytes(),
            )
            .unwrap(),
        );
        let error = TcpTransport::start(config.clone(), tx.clone()).unwrap_err();
        assert!(error.to_string().contains("would be refused"), "{error}");
    }
}
