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

    /// The membership in force changed: `members` are the other members, each with the
    /// address its membership data names, if any. A transport that routes by address
    /// reaches members added at run time and drops what it kept for nodes that left (see
    /// [`PeerBook`]). By default nothing happens (routes that do not change).
    fn set_members(&self, members: &[(NodeId, Option<SocketAddr>)]) {
        let _ = members;
    }

    /// Whether the transport knows where to reach `peer` now: `Some(false)` for a TCP
    /// transport with no address for it, `None` for a transport that cannot tell (by default).
    /// Checked against the voters when a node starts (see [`unreachable_voters`]).
    fn can_reach(&self, peer: NodeId) -> Option<bool> {
        let _ = peer;
        None
    }

    /// The transport's counters now, if it keeps any (`None` by default). The node copies
    /// them into its [`Status::transport`](crate::Status::transport) on every wake-up, so
    /// that a misconfiguration the transport sees (a peer refusing this node) shows in the
    /// node's status.
    fn counters(&self) -> Option<TransportStats> {
        None
    }

    /// The node took messages of `bytes` in all ([`inbound_size`]) off its inbound queue:
    /// a transport that bounds the bytes waiting there ([`TcpConfig::max_inbound_bytes`])
    /// makes room for as many. The node's loop reports this once per wake-up. By default
    /// nothing happens; a transport that wraps another must forward it (as `Arc<T>` does),
    /// or the inner one's budget fills and the node stops hearing its peers.
    fn consumed(&self, bytes: u64) {
        let _ = bytes;
    }
}

impl<T: Transport> Transport for Arc<T> {
    fn send(&self, message: Message) {
        (**self).send(message);
    }

    fn set_members(&self, members: &[(NodeId, Option<SocketAddr>)]) {
        (**self).set_members(members);
    }

    fn can_reach(&self, peer: NodeId) -> Option<bool> {
        (**self).can_reach(peer)
    }

    fn counters(&self) -> Option<TransportStats> {
        (**self).counters()
    }

    fn consumed(&self, bytes: u64) {
        (**self).consumed(bytes);
    }
}

/// The voters of `voters` other than `own` that `transport` has no address for, each logged
/// at `warn`: the node's configuration (its voters) and the transport's (its peers) disagree.
/// Such a voter is reached only once it connects and announces its address, so the cluster
/// may not elect a leader until then. Every adapter's `start` checks this.
pub fn unreachable_voters(
    own: NodeId,
    voters: &[NodeId],
    transport: &impl Transport,
) -> Vec<NodeId> {
    let missing: Vec<NodeId> = voters
        .iter()
        .copied()
        .filter(|&voter| voter != own && transport.can_reach(voter) == Some(false))
        .collect();
    for voter in &missing {
        tracing::warn!(
            node = own,
            voter,
            "a voter has no address in the transport's peers: it is reached only once it \
             connects itself (list every voter in the TCP peers; a node's own id is skipped)"
        );
    }
    missing
}

/// Where each peer can be reached, for a TCP transport whose peers change at run time.
///
/// An address comes, by precedence, from the membership (the data of the member, given with
/// [`set_members`](Self::set_members)), from the transport's configuration (the operator's
/// word wins over what a peer says of itself: a proxy, a NAT), or from the peer's own hello
/// ([`learn`](Self::learn): how a node that joins reaches a leader it has never heard of). A
/// node that leaves the membership loses its routes.
#[derive(Debug)]
pub struct PeerBook {
    own: NodeId,
    routes: RwLock<Routes>,
}

#[derive(Debug, Default)]
struct Routes {
    configured: BTreeMap<NodeId, SocketAddr>,
    announced: BTreeMap<NodeId, SocketAddr>,
    learned: BTreeMap<NodeId, SocketAddr>,
    members: BTreeSet<NodeId>,
}

impl Routes {
    fn address(&self, id: NodeId) -> Option<SocketAddr> {
        self.announced
            .get(&id)
            .or_else(|| self.configured.get(&id))
            .or_else(|| self.learned.get(&id))
            .copied()
    }
}

impl PeerBook {
    /// A book for node `own` starting from `config.peers`.
    pub fn new(config: &TcpConfig) -> Self {
        let configured: BTreeMap<NodeId, SocketAddr> = config
            .peers
            .iter()
            .filter(|(&id, _)| id != config.node_id)
            .map(|(&id, &addr)| (id, addr))
            .collect();
        let members = configured.keys().copied().collect();
        Self {
            own: config.node_id,
            routes: RwLock::new(Routes {
                configured,
                members,
                ..Routes::default()
            }),
        }
    }

    /// Where `id` can be reached, if known.
    pub fn address(&self, id: NodeId) -> Option<SocketAddr> {
        self.read().address(id)
    }

    /// Every node with an address.
    pub fn known(&self) -> usize {
        let routes = self.read();
        let mut all: BTreeSet<NodeId> = routes.configured.keys().copied().collect();
        all.extend(routes.announced.keys());
        all.extend(routes.learned.keys());
        all.len()
    }

    /// Peer `id` said in its hello that it accepts connections at `address`. (A writer
    /// looks its peer's address up again at every reconnection.)
    pub fn learn(&self, id: NodeId, address: SocketAddr) {
        if id != self.own {
            self.write().learned.insert(id, address);
        }
    }

    /// The membership changed; returns the nodes whose route changed or that left (the
    /// transport drops its writers to them).
    pub fn set_members(&self, members: &[(NodeId, Option<SocketAddr>)]) -> Vec<NodeId> {
        if members.is_empty() {
            // A node that joins knows no membership until the leader's reaches it: nobody
            // left, and the routes it was configured with or learned from the leader's hello
            // (which comes once per connection) are how it answers.
            return Vec::new();
        }
        let mut routes = self.write();
        let now: BTreeSet<NodeId> = members
            .iter()
            .map(|(id, _)| *id)
            .filter(|&id| id != self.own)
            .collect();
        let mut changed: Vec<NodeId> = routes.members.difference(&now).copied().collect();
        for id in &changed {
            routes.announced.remove(id);
            routes.learned.remove(id);
            routes.configured.remove(id);
        }
        for &(id, address) in members {
            if id == self.own {
                continue;
            }
            let before = routes.address(id);
            match address {
                Some(address) => routes.announced.insert(id, address),
                None => routes.announced.remove(&id),
            };
            if routes.address(id) != before && before.is_some() {
                changed.push(id);
            }
        }
        routes.members = now;
        changed
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Routes> {
        self.routes.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Routes> {
        self.routes.write().unwrap_or_else(PoisonError::into_inner)
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
    /// The members known at start and where they listen (empty for a node that joins an
    /// existing cluster). It may include this node itself, which is skipped, so one map of
    /// every member can serve all of them; it should name the same nodes as the core's
    /// `voters` (a voter without an address here is reached only once it connects itself). Members added later are reached at the address their membership
    /// data names, or that their hello announces; any node of the same cluster may connect.
    pub peers: BTreeMap<NodeId, SocketAddr>,
    /// The address announced to peers in the hello (where they can reach this node); `None`:
    /// the address the transport is bound to, unless that is unspecified (0.0.0.0).
    pub advertise: Option<SocketAddr>,
    /// The largest frame payload sent or accepted, in bytes.
    pub max_frame: usize,
    /// How many messages may wait for each peer before further ones are dropped (at least 1).
    pub queue_len: usize,
    /// How many bytes of received messages (as [`inbound_size`] counts them) may wait for the
    /// node at once, from all peers together; a message that does not fit is dropped. The
    /// node reports what it took ([`Transport::consumed`]), so this bounds the memory the
    /// inbound queue holds whatever its length in messages and however fast peers send (one
    /// message is always let into an empty queue, so a message larger than this still gets
    /// through). 64 MiB by default.
    pub max_inbound_bytes: u64,
    /// Mutual TLS for every peer connection (feature `tls`; `None`, plain TCP, by default).
    /// With it, this node accepts only peers proving a certificate of the cluster's CA that
    /// names the node id their hello announces, and connects only to peers proving one that
    /// names the peer it dials (see [`crate::tls`]); plaintext connections are refused.
    #[cfg(feature = "tls")]
    pub tls: Option<crate::tls::TlsConfig>,
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
            advertise: None,
            max_frame: raft_proto::wire::DEFAULT_MAX_FRAME,
            queue_len: 1024,
            max_inbound_bytes: 64 << 20,
            #[cfg(feature = "tls")]
            tls: None,
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
    /// Inbound connections refused: a failed TLS handshake (with TLS), a hello of another
    /// cluster, of this node's id, or (with TLS) of a node its certificate does not name; no
    /// hello in time; or too many connections.
    pub refused_connections: u64,
    /// Inbound frames that were oversized, malformed, truncated or out of protocol (each
    /// closes its connection, except a message whose sender or addressee is wrong, which is
    /// only dropped).
    pub bad_frames: u64,
    /// Outbound connections a peer refused (it said why in a refusal frame, which this
    /// transport logs at `error`): a different cluster id, this node's id taken by the peer,
    /// or (with TLS) this node's certificate not naming its id. Non-zero means a
    /// misconfigured cluster.
    pub refused_by_peers: u64,
    /// Bytes of the frames made for peers (hellos included; before TLS, if any).
    pub bytes_sent: u64,
    /// Bytes of the frames read from peers' connections (after TLS, if any).
    pub bytes_received: u64,
    /// Outbound connections that failed at the TLS level, each logged at `error`: the peer's
    /// certificate is not of the cluster's CA, has expired, or does not name the peer
    /// dialled; or the peer refused this node's certificate. (Inbound ones count as
    /// [`refused_connections`](Self::refused_connections).) Non-zero means a misconfigured
    /// cluster or an impostor.
    pub tls_failures: u64,
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
    /// See [`TransportStats::refused_by_peers`].
    pub refused_by_peers: AtomicU64,
    /// See [`TransportStats::bytes_sent`].
    pub bytes_sent: AtomicU64,
    /// See [`TransportStats::bytes_received`].
    pub bytes_received: AtomicU64,
    /// See [`TransportStats::tls_failures`].
    pub tls_failures: AtomicU64,
    /// The bytes ([`inbound_size`]) of the messages handed to the node and not yet reported
    /// taken ([`Transport::consumed`]).
    pub inbound_bytes: AtomicU64,
}

impl TransportCounters {
    /// Adds `n` to `counter`.
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// The node took messages of `bytes` ([`inbound_size`]) off its inbound queue.
    pub fn consumed(&self, bytes: u64) {
        let _ = self
            .inbound_bytes
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| {
                Some(b.saturating_sub(bytes))
            });
    }

    /// The counters' current values.
    pub fn snapshot(&self) -> TransportStats {
        TransportStats {
            sent: self.sent.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
            received: self.received.load(Ordering::Relaxed),
            refused_connections: self.refused_connections.load(Ordering::Relaxed),
            bad_frames: self.bad_frames.load(Ordering::Relaxed),
            refused_by_peers: self.refused_by_peers.load(Ordering::Relaxed),
            bytes_sent: self.bytes_sent.load(Ordering::Relaxed),
            bytes_received: self.bytes_received.load(Ordering::Relaxed),
            tls_failures: self.tls_failures.load(Ordering::Relaxed),
        }
    }
}

/// What a received message costs in the inbound queue, as the transports and the node
/// count it against [`TcpConfig::max_inbound_bytes`]: its payload bytes (entries' data and
/// snapshot chunks, member data) plus a fixed overhead per message and per entry.
pub fn inbound_size(message: &Message) -> u64 {
    const MESSAGE: u64 = 64;
    const ENTRY: u64 = 32;
    match &message.body {
        raft_proto::MessageBody::AppendRequest { entries, .. } => entries
            .iter()
            .map(|e| ENTRY + e.data.len() as u64)
            .sum::<u64>()
            .saturating_add(MESSAGE),
        raft_proto::MessageBody::SnapshotChunk {
            data, membership, ..
        } => {
            let members: u64 = membership
                .members()
                .into_iter()
                .map(|id| ENTRY + membership.data(id).map_or(0, |d| d.len() as u64))
                .sum();
            MESSAGE + data.len() as u64 + members
        }
        _ => MESSAGE,
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
    /// It claims to be this node.
    #[error("node {0} is this node")]
    SameNode(NodeId),
    /// Its TLS certificate does not name the node id its hello announces.
    #[error("the TLS certificate presented is not for node {0}")]
    NotCertified(NodeId),
}

/// The handshake rule every TCP transport applies to a peer's hello: the same cluster, and
/// another node. (Membership is the core's business and changes at run time: a node that
/// joins must hear from a leader it does not know yet. Authenticating peers is TLS's.)
pub fn check_hello(
    our_cluster: u64,
    our_id: NodeId,
    cluster_id: u64,
    node_id: NodeId,
) -> Result<(), Refusal> {
    if cluster_id != our_cluster {
        return Err(Refusal::OtherCluster(cluster_id));
    }
    if node_id == our_id {
        return Err(Refusal::SameNode(node_id));
    }
    Ok(())
}

/// The frame an accepting side writes back before closing a connection whose hello it
/// refused.
pub fn refusal_frame(refusal: &Refusal) -> Vec<u8> {
    let mut out = Vec::new();
    let frame = raft_proto::wire::PeerFrame::Refused {
        reason: refusal.to_string(),
    };
    if raft_proto::wire::encode_frame(&frame, HELLO_MAX_FRAME, &mut out).is_err() {
        out.clear();
    }
    out
}

/// How long a connecting side waits, after its hello, for a refusal before it starts sending
/// (an accepted hello gets no answer).
pub const REFUSAL_WAIT: std::time::Duration = std::time::Duration::from_millis(50);

/// What the connecting side read back after its hello: the reason of a refusal, if the bytes
/// hold a refusal frame. Anything else (nothing, garbage) is no refusal.
pub fn refusal_in(bytes: &[u8]) -> Option<String> {
    let mut decoder = raft_proto::wire::FrameDecoder::new(HELLO_MAX_FRAME);
    decoder.extend(bytes);
    match decoder.next_frame::<raft_proto::wire::PeerFrame>() {
        Ok(Some(raft_proto::wire::PeerFrame::Refused { reason })) => Some(reason),
        _ => None,
    }
}

/// Logs and counts a refusal a peer sent this node.
pub fn on_refused_by_peer(
    counters: &TransportCounters,
    peer: NodeId,
    addr: SocketAddr,
    reason: &str,
) {
    TransportCounters::add(&counters.refused_by_peers, 1);
    tracing::error!(
        peer,
        %addr,
        reason,
        "the peer refused this node's connection: check that both use the same cluster id \
         and distinct node ids (and, with TLS, that this node's certificate names its id)"
    );
}

/// The most messages one write to a peer carries.
pub const WRITE_BATCH_MESSAGES: usize = 256;

/// A write to a peer stops taking messages once it holds this many bytes (it always takes
/// one).
pub const WRITE_BATCH_BYTES: usize = 256 * 1024;

/// Before its hello, a connection may send frames of at most this many bytes (a hello with
/// the longest IPv6 address fits).
pub const HELLO_MAX_FRAME: usize = 128;

/// The receiving side of the peer protocol, without the I/O: feed it the bytes read from an
/// accepted connection and it runs TLS (if [`TcpConfig::tls`] is set), checks the hello,
/// decodes the frames, and hands the valid messages to the inbox; what it must write back
/// (TLS handshake messages and alerts, the frame saying why a hello was refused) it gives in
/// [`take_reply`](Self::take_reply). Every TCP transport drives one per accepted connection.
#[derive(Debug)]
pub struct PeerReader {
    config: Arc<TcpConfig>,
    counters: Arc<TransportCounters>,
    book: Arc<PeerBook>,
    decoder: raft_proto::wire::FrameDecoder,
    peer: Option<NodeId>,
    /// What to write back to the peer.
    reply: Vec<u8>,
    /// The TLS session, with TLS.
    #[cfg(feature = "tls")]
    tls: Option<Result<crate::tls::TlsSession, crate::tls::SessionError>>,
    /// The plaintext of what was last received, with TLS.
    #[cfg(feature = "tls")]
    plain: Vec<u8>,
}

impl PeerReader {
    /// A reader for a connection just accepted; a peer's announced address goes to `book`.
    pub fn new(
        config: Arc<TcpConfig>,
        counters: Arc<TransportCounters>,
        book: Arc<PeerBook>,
    ) -> Self {
        Self {
            #[cfg(feature = "tls")]
            tls: config.tls.as_ref().map(crate::tls::TlsSession::server),
            #[cfg(feature = "tls")]
            plain: Vec::new(),
            config,
            counters,
            book,
            decoder: raft_proto::wire::FrameDecoder::new(HELLO_MAX_FRAME),
            peer: None,
            reply: Vec::new(),
        }
    }

    /// The bytes to write back to the peer now, if any, after
    /// [`on_bytes`](Self::on_bytes): TLS handshake messages, or before closing, a TLS alert
    /// or the frame saying why the hello was refused.
    pub fn take_reply(&mut self) -> Option<Vec<u8>> {
        (!self.reply.is_empty()).then(|| std::mem::take(&mut self.reply))
    }

    /// The peer, once it said hello.
    pub fn peer(&self) -> Option<NodeId> {
        self.peer
    }

    /// The connection reached its end of stream: a frame cut short by it counts as a bad
    /// frame.
    pub fn on_end(&self, remote: SocketAddr) {
        let bytes = self.decoder.buffered();
        if bytes > 0 {
            tracing::warn!(%remote, peer = ?self.peer, bytes, "connection closed in the middle of a frame");
            TransportCounters::add(&self.counters.bad_frames, 1);
        }
    }

    /// Takes bytes read from the connection; every valid message goes to `deliver` (which
    /// returns false when it had to drop it). Returns false when the connection must be
    /// closed: a failed TLS handshake, a refused hello, a bad or oversized frame, a frame out
    /// of protocol. Write [`take_reply`](Self::take_reply) to the peer after each call.
    pub fn on_bytes(
        &mut self,
        bytes: &[u8],
        remote: SocketAddr,
        deliver: impl FnMut(Message) -> bool,
    ) -> bool {
        #[cfg(feature = "tls")]
        if let Some(session) = &mut self.tls {
            let session = match session {
                Ok(session) => session,
                Err(error) => {
                    tracing::error!(%remote, %error, "cannot start a TLS session; closing the connection");
                    TransportCounters::add(&self.counters.refused_connections, 1);
                    return false;
                }
            };
            let mut plain = std::mem::take(&mut self.plain);
            plain.clear();
            let handshaking = session.is_handshaking();
            let received = session.receive(bytes, &mut plain);
            session.take_output(&mut self.reply);
            if let Err(error) = received {
                if handshaking {
                    tracing::warn!(
                        %remote,
                        %error,
                        "refusing a connection: its TLS handshake failed (a certificate not of \
                         the cluster's CA, expired, or no TLS at all)"
                    );
                    TransportCounters::add(&self.counters.refused_connections, 1);
                } else {
                    tracing::warn!(%remote, peer = ?self.peer, %error, "TLS failed on an established connection; closing it");
                    TransportCounters::add(&self.counters.bad_frames, 1);
                }
                self.plain = plain;
                return false;
            }
            let open = self.on_plaintext(&plain, remote, deliver);
            self.plain = plain;
            return open;
        }
        self.on_plaintext(bytes, remote, deliver)
    }

    /// Whether the peer's TLS certificate names `node` (always, without TLS).
    fn certified(&self, node: NodeId) -> bool {
        #[cfg(feature = "tls")]
        if let Some(session) = &self.tls {
            return session.as_ref().is_ok_and(|session| session.peer_is(node));
        }
        let _ = node;
        true
    }

    /// Queues the refusal frame (sealed, with TLS).
    fn refuse(&mut self, refusal: &Refusal) {
        let frame = refusal_frame(refusal);
        #[cfg(feature = "tls")]
        if let Some(Ok(session)) = &mut self.tls {
            session.seal(&frame, &mut self.reply);
            return;
        }
        self.reply.extend_from_slice(&frame);
    }

    fn on_plaintext(
        &mut self,
        bytes: &[u8],
        remote: SocketAddr,
        mut deliver: impl FnMut(Message) -> bool,
    ) -> bool {
        use raft_proto::wire::PeerFrame;
        if bytes.is_empty() {
            return true;
        }
        TransportCounters::add(&self.counters.bytes_received, bytes.len() as u64);
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
                        address,
                    },
                ) => {
                    let config = &self.config;
                    let checked =
                        check_hello(config.cluster_id, config.node_id, cluster_id, node_id)
                            .and_then(|()| {
                                if self.certified(node_id) {
                                    Ok(())
                                } else {
                                    Err(Refusal::NotCertified(node_id))
                                }
                            });
                    if let Err(refusal) = checked {
                        tracing::warn!(%remote, %refusal, "refusing a connection");
                        TransportCounters::add(&self.counters.refused_connections, 1);
                        self.refuse(&refusal);
                        return false;
                    }
                    if let Ok(address) = address.parse() {
                        self.book.learn(node_id, address);
                    }
                    self.peer = Some(node_id);
                    self.decoder.set_max_frame(self.config.max_frame);
                }
                (Some(from), PeerFrame::Raft(message)) => {
                    if message.from != from || message.to != self.config.node_id {
                        // Forged or misrouted: dropped, and the connection stays.
                        tracing::warn!(
                            %remote, peer = from, message.from, message.to,
                            "dropping a message with the wrong sender or addressee"
                        );
                        TransportCounters::add(&self.counters.bad_frames, 1);
                    } else {
                        let size = inbound_size(&message);
                        let queued = &self.counters.inbound_bytes;
                        // Reserved before the node can take it (and report it taken).
                        let max = self.config.max_inbound_bytes;
                        let room = queued
                            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |q| {
                                // One message always fits in an empty queue, whatever its
                                // size (it is at most a frame).
                                let after = q.saturating_add(size);
                                (after <= max || q == 0).then_some(after)
                            })
                            .is_ok();
                        if room && deliver(message) {
                            TransportCounters::add(&self.counters.received, 1);
                        } else {
                            if room {
                                self.counters.consumed(size);
                            }
                            TransportCounters::add(&self.counters.dropped, 1);
                        }
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

/// Why an outbound connection failed at the TLS level (see [`PeerLink`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct LinkError(String);

/// The connecting side of one connection to a peer, without the I/O: the TLS handshake (if
/// [`TcpConfig::tls`] is set; nothing to do otherwise), sealing what is written, and reading
/// the peer's answer to the hello. Every TCP transport makes one per connection:
///
/// 1. [`handshake`](Self::handshake) with nothing received, then with each read, writing
///    what it gives, until it says the handshake is over (at once without TLS);
/// 2. the hello ([`PeerWriter::hello`]) and every batch after it go through
///    [`seal`](Self::seal) before they are written;
/// 3. what is read back after the hello goes to [`answer`](Self::answer).
#[derive(Debug)]
pub struct PeerLink {
    #[cfg(feature = "tls")]
    tls: Option<crate::tls::TlsSession>,
    #[cfg(feature = "tls")]
    scratch: Vec<u8>,
}

impl PeerLink {
    /// A link for a new connection to `peer`.
    pub fn new(config: &TcpConfig, peer: NodeId) -> Result<Self, LinkError> {
        #[cfg(feature = "tls")]
        {
            let tls = match &config.tls {
                Some(tls) => Some(
                    crate::tls::TlsSession::client(tls, peer)
                        .map_err(|e| LinkError(e.to_string()))?,
                ),
                None => None,
            };
            Ok(Self {
                tls,
                scratch: Vec::new(),
            })
        }
        #[cfg(not(feature = "tls"))]
        {
            let _ = (config, peer);
            Ok(Self {})
        }
    }

    /// Advances the handshake with the bytes `received` from the peer (none, the first
    /// time); replaces `out` with what to write to the peer. Returns whether the handshake is
    /// over (then write `out`, and go on with the hello). An error (the peer's certificate
    /// refused, or an alert from the peer) ends the connection.
    pub fn handshake(&mut self, received: &[u8], out: &mut Vec<u8>) -> Result<bool, LinkError> {
        out.clear();
        #[cfg(feature = "tls")]
        if let Some(session) = &mut self.tls {
            let mut plain = Vec::new();
            let result = session.receive(received, &mut plain);
            session.take_output(out);
            result.map_err(|e| LinkError(e.to_string()))?;
            return Ok(!session.is_handshaking());
        }
        let _ = received;
        Ok(true)
    }

    /// Seals `out` in place (encrypts it into TLS records; nothing without TLS).
    pub fn seal(&mut self, out: &mut Vec<u8>) {
        #[cfg(feature = "tls")]
        if let Some(session) = &mut self.tls {
            self.scratch.clear();
            session.seal(out, &mut self.scratch);
            std::mem::swap(out, &mut self.scratch);
        }
        let _ = out;
    }

    /// What the peer sent back after the hello: `Ok(Some(reason))` when it refused the hello,
    /// `Ok(None)` for anything else (nothing, garbage), an error when it refused at the TLS
    /// level (an alert: it does not accept this node's certificate).
    pub fn answer(&mut self, received: &[u8]) -> Result<Option<String>, LinkError> {
        #[cfg(feature = "tls")]
        if let Some(session) = &mut self.tls {
            let mut plain = Vec::new();
            session
                .receive(received, &mut plain)
                .map_err(|e| LinkError(e.to_string()))?;
            return Ok(refusal_in(&plain));
        }
        // A TLS alert record (content type 21, version 3.x): the peer speaks TLS, this node
        // does not.
        if let [21, 3, 0..=4, ..] = received {
            return Err(LinkError(
                "the peer answered with a TLS alert: it uses TLS and this node does not".into(),
            ));
        }
        Ok(refusal_in(received))
    }

    /// What the peer sent back after the hello, when it sent anything (it then closes the
    /// connection): a refusal of the hello is logged and counted as
    /// [`on_refused_by_peer`] does, a refusal at the TLS level as [`on_link_failed`] does.
    pub fn report_answer(
        &mut self,
        received: &[u8],
        counters: &TransportCounters,
        peer: NodeId,
        addr: SocketAddr,
    ) {
        match self.answer(received) {
            Ok(Some(reason)) => on_refused_by_peer(counters, peer, addr, &reason),
            Ok(None) => {}
            Err(error) => on_link_failed(counters, peer, addr, &error),
        }
    }

    /// The error for a connection the peer closed before the TLS handshake ended.
    pub fn closed_in_handshake(&self) -> LinkError {
        LinkError(
            "the peer closed the connection during the TLS handshake (does it run without \
             TLS?)"
                .into(),
        )
    }
}

/// Checks what a TCP transport is given before it starts: with TLS, this node's own
/// certificate must be a member's certificate of the CA, valid now, naming its node id (its
/// peers would refuse it otherwise; see [`TlsConfig::check_member`](crate::tls::TlsConfig::check_member)). Every TCP
/// transport's `start` returns this error.
pub fn check_config(config: &TcpConfig) -> std::io::Result<()> {
    #[cfg(feature = "tls")]
    if let Some(tls) = &config.tls {
        tls.check_member(config.node_id)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    }
    let _ = config;
    Ok(())
}

/// Logs (at `error`) and counts an outbound connection to `peer` that failed at the TLS
/// level.
pub fn on_link_failed(
    counters: &TransportCounters,
    peer: NodeId,
    addr: SocketAddr,
    error: &LinkError,
) {
    TransportCounters::add(&counters.tls_failures, 1);
    tracing::error!(
        peer,
        %addr,
        %error,
        "TLS with the peer failed: check that both use TLS with certificates of the cluster's \
         CA, valid now, for server and client authentication, each naming its own node id \
         (node-ID)"
    );
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
            address: self
                .config
                .advertise
                .map(|a| a.to_string())
                .unwrap_or_default(),
        };
        if raft_proto::wire::encode_frame(&hello, self.config.max_frame, out).is_err() {
            out.clear();
        }
        TransportCounters::add(&self.counters.bytes_sent, out.len() as u64);
    }

    /// Replaces `out` with the frames of `messages`; returns how many were framed (a message
    /// too large to frame is dropped and counted).
    pub fn frames(&self, messages: impl IntoIterator<Item = Message>, out: &mut Vec<u8>) -> u64 {
        out.clear();
        messages
            .into_iter()
            .map(|message| u64::from(self.push_frame(message, out)))
            .sum()
    }

    /// Replaces `out` with one write's worth of frames: `first`, then what `more` yields
    /// while the batch holds fewer than [`WRITE_BATCH_MESSAGES`] messages and
    /// [`WRITE_BATCH_BYTES`] bytes (the policy every TCP transport follows). Returns how many
    /// were framed (a message too large to frame is dropped and counted).
    pub fn batch(
        &self,
        first: Message,
        mut more: impl FnMut() -> Option<Message>,
        out: &mut Vec<u8>,
    ) -> u64 {
        out.clear();
        let mut taken = 1;
        let mut framed = u64::from(self.push_frame(first, out));
        while taken < WRITE_BATCH_MESSAGES && out.len() < WRITE_BATCH_BYTES {
            let Some(message) = more() else {
                break;
            };
            taken += 1;
            framed += u64::from(self.push_frame(message, out));
        }
        framed
    }

    /// Appends the frame of `message` to `out`; false (and counted as dropped) when it is
    /// too large to frame.
    fn push_frame(&self, message: Message, out: &mut Vec<u8>) -> bool {
        let frame = raft_proto::wire::PeerFrame::Raft(message);
        let before = out.len();
        let framed = raft_proto::wire::encode_frame(&frame, self.config.max_frame, out).is_ok();
        let bytes = out.len().saturating_sub(before) as u64;
        TransportCounters::add(&self.counters.bytes_sent, bytes);
        if !framed {
            tracing::warn!(to = ?self.config.node_id, "a message cannot be framed; dropped");
            TransportCounters::add(&self.counters.dropped, 1);
        }
        framed
    }

    /// The counters, for the transport to count sends and failures.
    pub fn counters(&self) -> &TransportCounters {
        &self.counters
    }

    /// The transport's configuration.
    pub fn config(&self) -> &TcpConfig {
        &self.config
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A node that joins is configured with (or learns from a hello) where the leader is;
    /// its empty membership at start must not wipe that route, or it can never answer.
    #[test]
    fn a_joining_node_keeps_its_routes_until_it_knows_a_membership() {
        let leader: SocketAddr = "127.0.0.1:7001".parse().unwrap();
        let config = TcpConfig::new(
            1,
            2,
            "127.0.0.1:7002".parse().unwrap(),
            [(1, leader)].into(),
        );
        let book = PeerBook::new(&config);
        book.learn(1, leader);
        assert!(book.set_members(&[]).is_empty());
        assert_eq!(book.address(1), Some(leader));
        // Once a membership without node 1 is known, node 1 has left: its routes go.
        assert_eq!(book.set_members(&[(2, None), (3, None)]), vec![1]);
        assert_eq!(book.address(1), None);
    }
}
