//! What every transport shares: the [`Transport`] trait the driver's messages go to, the
//! inbox a transport hands received messages to, the peer handshake rule, and an in-process
//! network for tests ([`MemoryNetwork`]).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};

use raft_proto::{Message, NodeId};

/// Something that carries messages to the other members of the cluster.
pub trait Transport: Send + Sync + 'static {
    /// Queues `message` for `message.to`. Never blocks; may drop the message (for example when
    /// the peer is unreachable or its queue is full), which Raft tolerates.
    fn send(&self, message: Message);
}

impl<T: Transport> Transport for Arc<T> {
    fn send(&self, message: Message) {
        (**self).send(message);
    }
}

/// How a TCP transport is set up (every adapter's TCP transport takes this).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TcpConfig {
    /// Shared by every member; connections from another cluster are refused.
    pub cluster_id: u64,
    /// This node's id, announced to peers in the hello.
    pub node_id: NodeId,
    /// Where to accept connections from peers (port 0 picks a free port; the transport
    /// reports the one it got).
    pub listen: SocketAddr,
    /// The other members of the cluster and where they listen. Only these may connect, and
    /// only these can be sent to.
    pub peers: BTreeMap<NodeId, SocketAddr>,
    /// The largest frame payload sent or accepted, in bytes.
    pub max_frame: usize,
    /// How many messages may wait for each peer before further ones are dropped (at least 1).
    pub queue_len: usize,
}

impl TcpConfig {
    /// A configuration with the defaults: frames of up to 16 MiB
    /// ([`raft_proto::wire::DEFAULT_MAX_FRAME`]) and 1024 messages queued per peer.
    pub fn new(
        cluster_id: u64,
        node_id: NodeId,
        listen: SocketAddr,
        peers: BTreeMap<NodeId, SocketAddr>,
    ) -> Self {
        Self {
            cluster_id,
            node_id,
            listen,
            peers,
            max_frame: raft_proto::wire::DEFAULT_MAX_FRAME,
            queue_len: 1024,
        }
    }
}

/// Counters a TCP transport keeps since it started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct TransportStats {
    /// Messages written to a peer's connection.
    pub sent: u64,
    /// Messages given up on: queue full, unknown or unreachable peer, failed write, too large
    /// to frame, or received while the inbound channel was full.
    pub dropped: u64,
    /// Messages received from peers and handed to the inbound channel.
    pub received: u64,
    /// Inbound connections refused: wrong cluster, unknown node, no hello in time, or too many
    /// connections.
    pub refused_connections: u64,
    /// Inbound frames that were oversized, malformed, truncated or out of protocol (each
    /// closes its connection, except a message whose sender or addressee is wrong, which is
    /// only dropped).
    pub bad_frames: u64,
}

/// The atomic counters behind [`TransportStats`], shared by a transport's threads or tasks.
#[derive(Debug, Default)]
pub struct TransportCounters {
    /// See [`TransportStats::sent`].
    pub sent: AtomicU64,
    /// See [`TransportStats::dropped`].
    pub dropped: AtomicU64,
    /// See [`TransportStats::received`].
    pub received: AtomicU64,
    /// See [`TransportStats::refused_connections`].
    pub refused_connections: AtomicU64,
    /// See [`TransportStats::bad_frames`].
    pub bad_frames: AtomicU64,
}

impl TransportCounters {
    /// Adds `n` to `counter`.
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// The counters' current values.
    pub fn snapshot(&self) -> TransportStats {
        TransportStats {
            sent: self.sent.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
            received: self.received.load(Ordering::Relaxed),
            refused_connections: self.refused_connections.load(Ordering::Relaxed),
            bad_frames: self.bad_frames.load(Ordering::Relaxed),
        }
    }
}

/// Where a transport hands each received message: returns false when the message had to be
/// dropped (the node is not keeping up). It must not block.
pub type Inbox = Arc<dyn Fn(Message) -> bool + Send + Sync>;

/// Why a connecting peer was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal {
    /// It belongs to another cluster.
    #[error("cluster id {0} is not ours")]
    OtherCluster(u64),
    /// It is not a member (or claims to be this node).
    #[error("node {0} is not a member")]
    NotAMember(NodeId),
}

/// The handshake rule every TCP transport applies to a peer's hello: same cluster, and a
/// member other than this node.
pub fn check_hello(
    our_cluster: u64,
    our_id: NodeId,
    members: &BTreeMap<NodeId, SocketAddr>,
    cluster_id: u64,
    node_id: NodeId,
) -> Result<(), Refusal> {
    if cluster_id != our_cluster {
        return Err(Refusal::OtherCluster(cluster_id));
    }
    if node_id == our_id || !members.contains_key(&node_id) {
        return Err(Refusal::NotAMember(node_id));
    }
    Ok(())
}

/// Before its hello, a connection may send frames of at most this many bytes.
pub const HELLO_MAX_FRAME: usize = 64;

/// The receiving side of the peer protocol, without the I/O: feed it the bytes read from an
/// accepted connection and it checks the hello, decodes the frames, and hands the valid
/// messages to the inbox. Every TCP transport drives one per accepted connection.
#[derive(Debug)]
pub struct PeerReader {
    config: Arc<TcpConfig>,
    counters: Arc<TransportCounters>,
    decoder: raft_proto::wire::FrameDecoder,
    peer: Option<NodeId>,
}

impl PeerReader {
    /// A reader for a connection just accepted.
    pub fn new(config: Arc<TcpConfig>, counters: Arc<TransportCounters>) -> Self {
        Self {
            config,
            counters,
            decoder: raft_proto::wire::FrameDecoder::new(HELLO_MAX_FRAME),
            peer: None,
        }
    }

    /// The peer, once it said hello.
    pub fn peer(&self) -> Option<NodeId> {
        self.peer
    }

    /// Takes bytes read from the connection; every valid message goes to `deliver` (which
    /// returns false when it had to drop it). Returns false when the connection must be
    /// closed: a refused hello, a bad or oversized frame, a frame out of protocol.
    pub fn on_bytes(
        &mut self,
        bytes: &[u8],
        remote: SocketAddr,
        mut deliver: impl FnMut(Message) -> bool,
    ) -> bool {
        use raft_proto::wire::PeerFrame;
        self.decoder.extend(bytes);
        loop {
            let frame = match self.decoder.next_frame::<PeerFrame>() {
                Ok(Some(frame)) => frame,
                Ok(None) => return true,
                Err(error) => {
                    tracing::warn!(%error, %remote, peer = ?self.peer, "bad frame; closing the connection");
                    TransportCounters::add(&self.counters.bad_frames, 1);
                    return false;
                }
            };
            match (self.peer, frame) {
                (
                    None,
                    PeerFrame::Hello {
                        cluster_id,
                        node_id,
                    },
                ) => {
                    let config = &self.config;
                    if let Err(refusal) = check_hello(
                        config.cluster_id,
                        config.node_id,
                        &config.peers,
                        cluster_id,
                        node_id,
                    ) {
                        tracing::warn!(%remote, %refusal, "refusing a connection");
                        TransportCounters::add(&self.counters.refused_connections, 1);
                        return false;
                    }
                    self.peer = Some(node_id);
                    self.decoder.set_max_frame(config.max_frame);
                }
                (Some(from), PeerFrame::Raft(message)) => {
                    let valid = message.from == from && message.to == self.config.node_id;
                    if valid && deliver(message) {
                        TransportCounters::add(&self.counters.received, 1);
                    } else {
                        TransportCounters::add(&self.counters.dropped, 1);
                    }
                }
                (peer, _) => {
                    tracing::warn!(%remote, ?peer, "frame out of protocol; closing the connection");
                    TransportCounters::add(&self.counters.bad_frames, 1);
                    return false;
                }
            }
        }
    }
}

/// The sending side of the peer protocol, without the I/O: the hello that opens a
/// connection, then batches of messages.
#[derive(Debug)]
pub struct PeerWriter {
    config: Arc<TcpConfig>,
    counters: Arc<TransportCounters>,
}

impl PeerWriter {
    /// A writer for connections to peers, set up by `config`.
    pub fn new(config: Arc<TcpConfig>, counters: Arc<TransportCounters>) -> Self {
        Self { config, counters }
    }

    /// Replaces `out` with the hello frame.
    pub fn hello(&self, out: &mut Vec<u8>) {
        out.clear();
        let hello = raft_proto::wire::PeerFrame::Hello {
            cluster_id: self.config.cluster_id,
            node_id: self.config.node_id,
        };
        if raft_proto::wire::encode_frame(&hello, self.config.max_frame, out).is_err() {
            out.clear();
        }
    }

    /// Replaces `out` with the frames of `messages`; returns how many were framed (a message
    /// too large to frame is dropped and counted).
    pub fn frames(&self, messages: impl IntoIterator<Item = Message>, out: &mut Vec<u8>) -> u64 {
        out.clear();
        let mut framed = 0;
        for message in messages {
            let frame = raft_proto::wire::PeerFrame::Raft(message);
            if raft_proto::wire::encode_frame(&frame, self.config.max_frame, out).is_ok() {
                framed += 1;
            } else {
                TransportCounters::add(&self.counters.dropped, 1);
            }
        }
        framed
    }

    /// The counters, for the transport to count sends and failures.
    pub fn counters(&self) -> &TransportCounters {
        &self.counters
    }
}

/// How long a transport waits before reconnecting after `failures` failed attempts in a row:
/// 20 ms, doubling, at most 1 s.
pub fn reconnect_backoff(failures: u32) -> std::time::Duration {
    std::time::Duration::from_millis(20u64.saturating_mul(1 << failures.min(6)).min(1000))
}

/// An in-process network for tests: endpoints deliver to each other's inbound channels
/// directly, and any node can be cut off and reconnected. Clones are handles on the same
/// network.
#[derive(Clone, Default)]
pub struct MemoryNetwork {
    inner: Arc<RwLock<MemoryInner>>,
}

#[derive(Default)]
struct MemoryInner {
    inbound: BTreeMap<NodeId, Inbox>,
    disconnected: BTreeSet<NodeId>,
}

impl fmt::Debug for MemoryNetwork {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = self.inner.read().unwrap_or_else(PoisonError::into_inner);
        f.debug_struct("MemoryNetwork")
            .field("nodes", &inner.inbound.keys().collect::<Vec<_>>())
            .field("disconnected", &inner.disconnected)
            .finish()
    }
}

impl MemoryNetwork {
    /// An empty network.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds node `id`, whose received messages go to `inbox` (replacing any earlier endpoint
    /// of the same id), and returns its transport.
    pub fn endpoint(
        &self,
        id: NodeId,
        inbox: impl Fn(Message) -> bool + Send + Sync + 'static,
    ) -> MemoryTransport {
        self.write().inbound.insert(id, Arc::new(inbox));
        MemoryTransport {
            id,
            network: self.clone(),
        }
    }

    /// Cuts node `id` off: every message from or to it is dropped until [`connect`](Self::connect).
    pub fn disconnect(&self, id: NodeId) {
        self.write().disconnected.insert(id);
    }

    /// Undoes [`disconnect`](Self::disconnect).
    pub fn connect(&self, id: NodeId) {
        self.write().disconnected.remove(&id);
    }

    /// Whether node `id` is currently cut off.
    pub fn is_connected(&self, id: NodeId) -> bool {
        !self.read().disconnected.contains(&id)
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, MemoryInner> {
        self.inner.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, MemoryInner> {
        self.inner.write().unwrap_or_else(PoisonError::into_inner)
    }
}

/// One node's [`Transport`] on a [`MemoryNetwork`]. Delivery is immediate: a message is
/// dropped when either end is disconnected, the addressee is unknown, or its inbox refuses it.
#[derive(Debug, Clone)]
pub struct MemoryTransport {
    id: NodeId,
    network: MemoryNetwork,
}

impl MemoryTransport {
    /// The node this endpoint belongs to.
    pub fn id(&self) -> NodeId {
        self.id
    }
}

impl Transport for MemoryTransport {
    fn send(&self, message: Message) {
        let inner = self.network.read();
        if inner.disconnected.contains(&self.id) || inner.disconnected.contains(&message.to) {
            return;
        }
        if let Some(inbox) = inner.inbound.get(&message.to) {
            let _ = inbox(message);
        }
    }
}
