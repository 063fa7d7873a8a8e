//! Carrying Raft messages between nodes: a [`Transport`] trait, a TCP implementation on plain
//! threads ([`TcpTransport`]) and an in-process one for tests ([`MemoryNetwork`]).
//!
//! Raft tolerates lost, duplicated and reordered messages, so a transport is free to drop: it
//! must never block the node. [`Transport::send`] only queues, and every queue is bounded.
//!
//! # The TCP protocol
//!
//! The protocol is the one every adapter's TCP transport speaks, written once in
//! `adapter-common` ([`PeerReader`] for accepted connections, [`PeerWriter`] for outgoing
//! ones); this module adds the threads and the sockets. Frames are [`raft_proto::wire`]
//! frames carrying [`PeerFrame`]s. Each node opens one connection to each peer and only
//! writes on it; the accepting side only reads. A connection starts with a
//! [`PeerFrame::Hello`] naming the cluster, the connecting node and where it accepts
//! connections; the acceptor refuses the connection (saying why, then closing it) when the
//! cluster id is not its own or the node claims the acceptor's id. Then come
//! [`PeerFrame::Raft`] frames, delivered in order. A frame that is oversized, malformed,
//! truncated or out of protocol closes the connection; the writer on the other side
//! reconnects with exponential backoff.
//!
//! [`PeerFrame`]: raft_proto::wire::PeerFrame
//! [`PeerFrame::Hello`]: raft_proto::wire::PeerFrame::Hello
//! [`PeerFrame::Raft`]: raft_proto::wire::PeerFrame::Raft
//!
//! Peers are looked up in a [`PeerBook`]: the writer thread to a member added at run time is
//! started by the first message to it, and the writer to a node that left is stopped.
//!
//! With `TcpConfig::tls` (feature `tls`), every connection runs mutual TLS first, driven by
//! the same shared halves ([`PeerReader`] on the accepting side, `PeerLink` on the connecting
//! side), so this transport only carries the bytes: see `adapter_common::tls` for what is
//! checked, and the `tls_*` checks of the conformance suite.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::io::{self, ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use adapter_common::net::TransportCounters as Counters;
use adapter_common::net::{
    check_config, on_link_failed, reconnect_backoff, PeerLink, PeerReader, PeerWriter,
};
pub use adapter_common::net::{
    MemoryNetwork, MemoryTransport, PeerBook, TcpConfig, Transport, TransportStats,
};
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TrySendError};
use raft_proto::{Message, NodeId};

/// How long a connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// How long one write may block on a peer that does not read before the connection is dropped.
const WRITE_TIMEOUT: Duration = Duration::from_secs(2);
/// How often a blocked reader or writer wakes up to look at the stop flag.
const POLL: Duration = Duration::from_millis(50);
/// How long an accepted connection may take to say hello.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// How many bytes a reader asks the socket for at once.
const READ_CHUNK: usize = 64 * 1024;
/// The smallest cap on simultaneously open inbound connections (see [`TcpTransport`]).
const MIN_INBOUND_CONNECTIONS: usize = 16;
/// How long [`TcpTransport::shutdown`] waits for its threads in all.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(5);

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// What every thread of one transport shares.
struct Shared {
    config: Arc<TcpConfig>,
    book: Arc<PeerBook>,
    stop: AtomicBool,
    counters: Arc<Counters>,
    inbound: Sender<Message>,
    /// Every open socket, so that shutdown can unblock whoever is using it.
    sockets: Mutex<HashMap<u64, TcpStream>>,
    /// The inbound connection currently accepted for each peer (connection id, socket): a new
    /// one from the same peer replaces (closes) the old one.
    peer_connections: Mutex<HashMap<NodeId, (u64, TcpStream)>>,
    /// The reader threads the listener started.
    readers: Mutex<Vec<JoinHandle<()>>>,
    next_connection: AtomicU64,
}

impl Shared {
    fn stopping(&self) -> bool {
        self.stop.load(Ordering::Acquire)
    }

    /// Registers `stream` for shutdown; returns its connection id.
    fn register(&self, stream: &TcpStream) -> u64 {
        let id = self.next_connection.fetch_add(1, Ordering::Relaxed);
        if let Ok(clone) = stream.try_clone() {
            lock(&self.sockets).insert(id, clone);
        }
        if self.stopping() {
            // Shutdown may already have gone through the registry.
            let _ = stream.shutdown(Shutdown::Both);
        }
        id
    }

    fn unregister(&self, id: u64) {
        lock(&self.sockets).remove(&id);
    }

    /// Waits `timeout` (less if stopping), dropping whatever arrives in `queue` meanwhile.
    /// Returns false when the transport stops or the queue is closed.
    fn drop_for(&self, queue: &Receiver<Message>, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.stopping() {
                return false;
            }
            let now = Instant::now();
            if now >= deadline {
                return true;
            }
            match queue.recv_timeout((deadline - now).min(POLL)) {
                Ok(_) => Counters::add(&self.counters.dropped, 1),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return false,
            }
        }
    }
}

/// A [`Transport`] over TCP, run by plain threads: one accepting connections, one reading each
/// accepted connection, one writing to each peer.
///
/// Each peer has a queue of [`TcpConfig::queue_len`] messages; [`send`](Transport::send) drops
/// the message when it is full, so a slow or dead peer never blocks the node. While a peer is
/// unreachable, its writer retries with exponential backoff (20 ms doubling up to 1 s) and
/// drops what is queued meanwhile instead of delivering it late. Received messages go to the
/// inbound channel with `try_send`, dropped when it is full.
///
/// Inbound connections are capped (four per peer, at least 16) so that a flood of connections
/// cannot exhaust threads; an accepted connection must say hello within 5 s, and may not send a
/// frame of more than 64 bytes before that. A new connection from a peer replaces (closes) its
/// previous one, so connections left half-open by a crash or a partition do not pile up.
pub struct TcpTransport {
    shared: Arc<Shared>,
    local_addr: SocketAddr,
    /// The queue of each peer's writer, started on the first message to it; emptied on
    /// shutdown, which closes the queues.
    queues: Mutex<BTreeMap<NodeId, Sender<Message>>>,
    /// The listener thread first, then the writer threads.
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl fmt::Debug for TcpTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TcpTransport")
            .field("node_id", &self.shared.config.node_id)
            .field("local_addr", &self.local_addr)
            .field("peers", &self.shared.config.peers)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl TcpTransport {
    /// Binds `config.listen` and starts the threads. Messages received from peers are sent
    /// to `inbound`.
    pub fn start(config: TcpConfig, inbound: Sender<Message>) -> io::Result<Self> {
        let listener = TcpListener::bind(config.listen)?;
        Self::start_with_listener(config, listener, inbound)
    }

    /// Like [`start`](Self::start), but accepts on an already bound `listener` (and ignores
    /// `config.listen`). Useful to learn every member's address before starting any of them.
    pub fn start_with_listener(
        mut config: TcpConfig,
        listener: TcpListener,
        inbound: Sender<Message>,
    ) -> io::Result<Self> {
        check_config(&config)?;
        listener.set_nonblocking(false)?;
        let local_addr = listener.local_addr()?;
        if config.advertise.is_none() && !local_addr.ip().is_unspecified() {
            config.advertise = Some(local_addr);
        }
        let shared = Arc::new(Shared {
            book: Arc::new(PeerBook::new(&config)),
            config: Arc::new(config),
            stop: AtomicBool::new(false),
            counters: Arc::default(),
            inbound,
            sockets: Mutex::new(HashMap::new()),
            peer_connections: Mutex::new(HashMap::new()),
            readers: Mutex::new(Vec::new()),
            next_connection: AtomicU64::new(0),
        });
        let node = shared.config.node_id;
        let listener_shared = Arc::clone(&shared);
        let accept = thread::Builder::new()
            .name(format!("raft-{node}-accept"))
            .spawn(move || accept_loop(&listener_shared, &listener))?;
        Ok(Self {
            shared,
            local_addr,
            queues: Mutex::new(BTreeMap::new()),
            threads: Mutex::new(vec![accept]),
        })
    }

    /// The queue of `peer`'s writer, starting its thread if the peer's address is known.
    fn queue(&self, peer: NodeId) -> Option<Sender<Message>> {
        let mut queues = lock(&self.queues);
        if let Some(queue) = queues.get(&peer) {
            return Some(queue.clone());
        }
        self.shared.book.address(peer)?;
        if self.shared.stopping() {
            return None;
        }
        let (sender, receiver) = crossbeam_channel::bounded(self.shared.config.queue_len.max(1));
        let writer_shared = Arc::clone(&self.shared);
        let spawned = thread::Builder::new()
            .name(format!("raft-{}-to-{peer}", self.shared.config.node_id))
            .spawn(move || write_loop(&writer_shared, peer, &receiver));
        match spawned {
            Ok(handle) => {
                let mut threads = lock(&self.threads);
                // Keep the listener (first); forget the writers that ended.
                let mut kept = Vec::with_capacity(threads.len() + 1);
                for (i, handle) in threads.drain(..).enumerate() {
                    if i == 0 || !handle.is_finished() {
                        kept.push(handle);
                    }
                }
                kept.push(handle);
                *threads = kept;
            }
            Err(error) => {
                tracing::warn!(%error, peer, "could not start a writer");
                return None;
            }
        }
        queues.insert(peer, sender.clone());
        Some(sender)
    }

    /// The address the transport accepts connections on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The counters so far.
    pub fn stats(&self) -> TransportStats {
        self.shared.counters.snapshot()
    }

    /// Stops the transport: the listener and every connection close, messages still queued
    /// are dropped, and later [`Transport::send`]s are dropped. Waits for its threads (a few
    /// seconds at most; a thread still running then is left to finish on its own). Dropping
    /// the transport does the same. Shutting a node down does not stop its transport: stop
    /// the node first (its last messages, such as a leader's hand-over, still go out), then
    /// the transport.
    pub fn shutdown(&self) {
        self.stop_and_join();
    }

    fn stop_and_join(&self) {
        let mut threads = std::mem::take(&mut *lock(&self.threads));
        if threads.is_empty() {
            return;
        }
        self.shared.stop.store(true, Ordering::Release);
        // Closing the queues wakes the writers waiting on them.
        lock(&self.queues).clear();
        // Shutting the sockets down wakes whoever reads or writes them.
        for stream in lock(&self.shared.sockets).values() {
            let _ = stream.shutdown(Shutdown::Both);
        }
        // A connection to ourselves wakes the listener blocked in `accept`.
        let mut wake = self.local_addr;
        if wake.ip().is_unspecified() {
            wake.set_ip(match wake {
                SocketAddr::V4(_) => [127, 0, 0, 1].into(),
                SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
            });
        }
        let _ = TcpStream::connect_timeout(&wake, CONNECT_TIMEOUT);

        let deadline = Instant::now() + SHUTDOWN_WAIT;
        // The listener is first: once it is joined, no reader can be added.
        let listener_joined = join_by(threads.remove(0), deadline);
        for handle in threads {
            join_by(handle, deadline);
        }
        // Any reader that raced the first pass over the sockets is woken now.
        for stream in lock(&self.shared.sockets).values() {
            let _ = stream.shutdown(Shutdown::Both);
        }
        let readers = std::mem::take(&mut *lock(&self.shared.readers));
        for handle in readers {
            join_by(handle, deadline);
        }
        if !listener_joined {
            tracing::warn!(
                node = self.shared.config.node_id,
                "listener did not stop in time"
            );
        }
    }
}

impl Drop for TcpTransport {
    fn drop(&mut self) {
        self.stop_and_join();
    }
}

/// Joins `handle` if it finishes by `deadline`; otherwise leaves it running. Returns whether
/// it was joined.
fn join_by(handle: JoinHandle<()>, deadline: Instant) -> bool {
    while !handle.is_finished() {
        if Instant::now() >= deadline {
            tracing::warn!(thread = ?handle.thread().name(), "thread did not stop in time");
            return false;
        }
        thread::sleep(Duration::from_millis(2));
    }
    let _ = handle.join();
    true
}

impl Transport for TcpTransport {
    fn can_reach(&self, peer: NodeId) -> Option<bool> {
        Some(self.shared.book.address(peer).is_some())
    }

    fn counters(&self) -> Option<TransportStats> {
        Some(self.stats())
    }

    fn consumed(&self, bytes: u64) {
        self.shared.counters.consumed(bytes);
    }

    fn set_members(&self, members: &[(NodeId, Option<SocketAddr>)]) {
        let changed = self.shared.book.set_members(members);
        let mut queues = lock(&self.queues);
        for peer in changed {
            // Closing its queue ends the writer.
            queues.remove(&peer);
        }
    }

    fn send(&self, message: Message) {
        let counters = &self.shared.counters;
        let Some(queue) = self.queue(message.to) else {
            tracing::debug!(to = message.to, "dropping a message to an unknown peer");
            Counters::add(&counters.dropped, 1);
            return;
        };
        if let Err(error) = queue.try_send(message) {
            tracing::trace!(
                to = error.into_inner().to,
                "peer queue full; message dropped"
            );
            Counters::add(&counters.dropped, 1);
        }
    }
}

fn accept_loop(shared: &Arc<Shared>, listener: &TcpListener) {
    loop {
        let max_connections = shared
            .book
            .known()
            .saturating_mul(4)
            .max(MIN_INBOUND_CONNECTIONS);
        let accepted = listener.accept();
        if shared.stopping() {
            return;
        }
        let (stream, remote) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::warn!(%error, "accept failed");
                // For example out of file descriptors: do not spin.
                thread::sleep(POLL);
                continue;
            }
        };
        let mut readers = lock(&shared.readers);
        readers.retain(|handle| !handle.is_finished());
        if readers.len() >= max_connections {
            drop(readers);
            tracing::warn!(%remote, "too many inbound connections; refusing");
            Counters::add(&shared.counters.refused_connections, 1);
            continue;
        }
        let reader_shared = Arc::clone(shared);
        let spawned = thread::Builder::new()
            .name(format!("raft-{}-from-{remote}", shared.config.node_id))
            .spawn(move || read_connection(&reader_shared, stream, remote));
        match spawned {
            Ok(handle) => readers.push(handle),
            Err(error) => tracing::warn!(%error, %remote, "could not start a reader"),
        }
    }
}

/// Reads one accepted connection until it ends, the transport stops, or the peer misbehaves.
fn read_connection(shared: &Shared, mut stream: TcpStream, remote: SocketAddr) {
    let connection = shared.register(&stream);
    let peer = serve_connection(shared, &mut stream, remote, connection);
    let _ = stream.shutdown(Shutdown::Both);
    shared.unregister(connection);
    if let Some(peer) = peer {
        let mut current = lock(&shared.peer_connections);
        if current.get(&peer).is_some_and(|(id, _)| *id == connection) {
            current.remove(&peer);
        }
    }
}

/// The body of [`read_connection`]; returns the peer if the handshake went through. The
/// protocol itself (hello, frames, what is refused and counted) is the shared [`PeerReader`].
fn serve_connection(
    shared: &Shared,
    stream: &mut TcpStream,
    remote: SocketAddr,
    connection: u64,
) -> Option<NodeId> {
    if let Err(error) = stream
        .set_read_timeout(Some(POLL))
        .and_then(|()| stream.set_write_timeout(Some(WRITE_TIMEOUT)))
        .and_then(|()| stream.set_nodelay(true))
    {
        tracing::warn!(%error, %remote, "could not set up an inbound connection");
        return None;
    }
    let handshake_deadline = Instant::now() + HANDSHAKE_TIMEOUT;
    let mut reader = PeerReader::new(
        Arc::clone(&shared.config),
        Arc::clone(&shared.counters),
        Arc::clone(&shared.book),
    );
    let mut buf = vec![0; READ_CHUNK];
    while !shared.stopping() {
        // Checked on every pass, not only when a read times out: a peer trickling bytes in
        // (a slow TLS handshake) must not hold the connection past the deadline.
        if reader.peer().is_none() && Instant::now() >= handshake_deadline {
            tracing::warn!(%remote, "no hello in time; closing the connection");
            Counters::add(&shared.counters.refused_connections, 1);
            return None;
        }
        let n = match stream.read(&mut buf) {
            Ok(0) => {
                reader.on_end(remote);
                return reader.peer();
            }
            Ok(n) => n,
            Err(error) if matches!(error.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                continue;
            }
            Err(error) if error.kind() == ErrorKind::Interrupted => continue,
            Err(error) => {
                tracing::debug!(%error, %remote, peer = ?reader.peer(), "inbound connection failed");
                return reader.peer();
            }
        };
        let said_hello = reader.peer().is_some();
        let mut inbound_gone = false;
        let open = reader.on_bytes(&buf[..n], remote, |message| {
            match shared.inbound.try_send(message) {
                Ok(()) => true,
                Err(TrySendError::Full(_)) => false,
                Err(TrySendError::Disconnected(_)) => {
                    inbound_gone = true;
                    false
                }
            }
        });
        if let Some(reply) = reader.take_reply() {
            // The TLS handshake; or before closing, why (the peer waits for this after its
            // hello before sending more).
            if stream.write_all(&reply).is_err() {
                return reader.peer();
            }
        }
        if !open {
            let _ = stream.shutdown(Shutdown::Write);
        }
        if let (false, Some(peer)) = (said_hello, reader.peer()) {
            tracing::debug!(%remote, peer, "peer connected");
            if let Ok(clone) = stream.try_clone() {
                let old = lock(&shared.peer_connections).insert(peer, (connection, clone));
                if let Some((_, old)) = old {
                    // The peer reconnected: its old connection is dead or dying.
                    let _ = old.shutdown(Shutdown::Both);
                }
            }
        }
        if inbound_gone {
            tracing::debug!("inbound channel closed; closing the connection");
            return reader.peer();
        }
        if !open {
            return reader.peer();
        }
    }
    reader.peer()
}

/// Connects to `addr`, runs the TLS handshake if any, and says hello ([`PeerWriter::hello`]);
/// a peer that refuses the hello says why, which is logged and counted here, as is a TLS
/// failure.
fn connect(
    writer: &PeerWriter,
    peer: NodeId,
    addr: SocketAddr,
    out: &mut Vec<u8>,
) -> io::Result<(TcpStream, PeerLink)> {
    let tls_failed = |error| {
        on_link_failed(writer.counters(), peer, addr, &error);
        io::Error::new(ErrorKind::PermissionDenied, error)
    };
    let mut link = PeerLink::new(writer.config(), peer).map_err(tls_failed)?;
    let mut stream = TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT)?;
    stream.set_nodelay(true)?;
    stream.set_write_timeout(Some(WRITE_TIMEOUT))?;
    let mut answer = vec![0u8; READ_CHUNK];
    let mut received = 0;
    // The whole TLS handshake (none without TLS) gets one deadline.
    let deadline = Instant::now() + HANDSHAKE_TIMEOUT;
    loop {
        let done = link.handshake(&answer[..received], out);
        // Also after a failure: the alert that tells the peer why.
        let written = stream.write_all(out);
        if done.map_err(tls_failed)? {
            written?;
            break;
        }
        written?;
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(ErrorKind::TimedOut.into());
        }
        stream.set_read_timeout(Some(left))?;
        received = stream.read(&mut answer)?;
        if received == 0 {
            return Err(tls_failed(link.closed_in_handshake()));
        }
    }
    writer.hello(out);
    link.seal(out);
    stream.write_all(out)?;
    // An accepted hello gets no answer; a refused one gets the reason, then the close.
    stream.set_read_timeout(Some(adapter_common::net::REFUSAL_WAIT))?;
    match stream.read(&mut answer) {
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
            Ok((stream, link))
        }
        Err(e) => Err(e),
        Ok(n) => {
            link.report_answer(&answer[..n], writer.counters(), peer, addr);
            Err(io::Error::new(
                ErrorKind::ConnectionRefused,
                "the peer closed the connection after the hello",
            ))
        }
    }
}

/// Keeps a connection to `peer` (at the address the book gives at each connection) and
/// writes what its queue holds, until the queue closes, the transport stops, or the peer has
/// no address any more.
fn write_loop(shared: &Shared, peer: NodeId, queue: &Receiver<Message>) {
    let counters = &shared.counters;
    let writer = PeerWriter::new(Arc::clone(&shared.config), Arc::clone(&shared.counters));
    let mut failures = 0;
    let mut out = Vec::new();
    // The open connection and its registry id.
    let mut connection: Option<(TcpStream, u64, PeerLink)> = None;
    while !shared.stopping() {
        let Some((stream, _, link)) = &mut connection else {
            let Some(addr) = shared.book.address(peer) else {
                break;
            };
            match connect(&writer, peer, addr, &mut out) {
                Ok((stream, link)) => {
                    tracing::debug!(peer, %addr, "connected");
                    let id = shared.register(&stream);
                    connection = Some((stream, id, link));
                    failures = 0;
                }
                Err(error) => {
                    let backoff = reconnect_backoff(failures);
                    tracing::debug!(peer, %addr, %error, ?backoff, "cannot connect; retrying");
                    // The peer is unreachable: what is queued meanwhile is dropped.
                    if !shared.drop_for(queue, backoff) {
                        break;
                    }
                    failures = failures.saturating_add(1);
                }
            }
            continue;
        };
        let first = match queue.recv_timeout(POLL) {
            Ok(message) => message,
            Err(RecvTimeoutError::Timeout) => continue,
            Err(RecvTimeoutError::Disconnected) => break,
        };
        // Gather what else is queued into one write.
        let batch = writer.batch(first, || queue.try_recv().ok(), &mut out);
        if batch == 0 {
            continue;
        }
        link.seal(&mut out);
        match stream.write_all(&out) {
            Ok(()) => Counters::add(&counters.sent, batch),
            Err(error) => {
                tracing::debug!(peer, %error, "write failed; reconnecting");
                Counters::add(&counters.dropped, batch);
                if let Some((stream, id, _)) = connection.take() {
                    let _ = stream.shutdown(Shutdown::Both);
                    shared.unregister(id);
                }
            }
        }
    }
    if let Some((stream, id, _)) = connection {
        let _ = stream.shutdown(Shutdown::Both);
        shared.unregister(id);
    }
}
