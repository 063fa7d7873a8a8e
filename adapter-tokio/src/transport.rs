//! TCP transport on tokio: the same protocol as every adapter's (length-prefixed postcard
//! frames from [`raft_proto::wire`], a hello naming the cluster and the node, checked with
//! [`adapter_common::check_hello`]), with tokio sockets and tasks.
//!
//! One task accepts connections and one task reads each of them; one task per peer owns the
//! outgoing connection, fed by a bounded queue: [`Transport::send`] never waits (a message
//! that does not fit is dropped and counted), and a dead peer is reconnected with exponential
//! backoff (20 ms up to 1 s). Garbage, truncated or oversized frames close that connection
//! only. Peers are looked up in a [`PeerBook`]: the writer to a member added at run time is
//! started by the first message to it, and the writer to a node that left is stopped.
//!
//! With `TcpConfig::tls` (feature `tls`), every connection runs mutual TLS first, driven by
//! the same shared halves ([`PeerReader`] on the accepting side, `PeerLink` on the connecting
//! side), so this transport only carries the bytes: see `adapter_common::tls` for what is
//! checked, and the `tls_*` checks of the conformance suite.

use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use adapter_common::net::{check_config, on_link_failed, REFUSAL_WAIT};
use adapter_common::net::{reconnect_backoff, LinkError, PeerLink, TransportCounters as Counters};
use adapter_common::{PeerBook, PeerReader, PeerWriter, TcpConfig, Transport, TransportStats};
use raft_proto::{Message, NodeId};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

/// A connection must say hello within this time.
const HELLO_TIMEOUT: Duration = Duration::from_secs(5);

/// A TCP transport running on the current tokio runtime.
#[derive(Debug)]
pub struct TcpTransport {
    config: Arc<TcpConfig>,
    book: Arc<PeerBook>,
    /// The queue of each peer's writer task, started on the first message to it.
    queues: Mutex<BTreeMap<NodeId, mpsc::Sender<Message>>>,
    counters: Arc<Counters>,
    local_addr: SocketAddr,
    stop: watch::Sender<bool>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    runtime: tokio::runtime::Handle,
}

impl TcpTransport {
    /// Binds `config.listen` and starts the transport's tasks; received messages go to
    /// `inbound` (dropped when it is full).
    pub async fn start(config: TcpConfig, inbound: mpsc::Sender<Message>) -> io::Result<Self> {
        let listener = TcpListener::bind(config.listen).await?;
        Self::start_on(config, listener, inbound)
    }

    /// Like [`start`](Self::start), but accepts on an already bound `listener` (and ignores
    /// `config.listen`): bind every member's listener to port 0 first, learn their addresses
    /// with `local_addr`, then start each transport with the others' addresses.
    pub async fn start_with_listener(
        config: TcpConfig,
        listener: std::net::TcpListener,
        inbound: mpsc::Sender<Message>,
    ) -> io::Result<Self> {
        listener.set_nonblocking(true)?;
        Self::start_on(config, TcpListener::from_std(listener)?, inbound)
    }

    fn start_on(
        mut config: TcpConfig,
        listener: TcpListener,
        inbound: mpsc::Sender<Message>,
    ) -> io::Result<Self> {
        check_config(&config)?;
        let local_addr = listener.local_addr()?;
        if config.advertise.is_none() && !local_addr.ip().is_unspecified() {
            config.advertise = Some(local_addr);
        }
        let book = Arc::new(PeerBook::new(&config));
        let config = Arc::new(config);
        let counters = Arc::new(Counters::default());
        let (stop, stopped) = watch::channel(false);
        let tasks = vec![tokio::spawn(accept_loop(
            listener,
            Arc::clone(&config),
            Arc::clone(&book),
            inbound,
            Arc::clone(&counters),
            stopped,
        ))];
        Ok(Self {
            config,
            book,
            queues: Mutex::new(BTreeMap::new()),
            counters,
            local_addr,
            stop,
            tasks: Mutex::new(tasks),
            runtime: tokio::runtime::Handle::current(),
        })
    }

    /// The queue of `peer`'s writer, starting it if its address is known.
    fn queue(&self, peer: NodeId) -> Option<mpsc::Sender<Message>> {
        let mut queues = self.queues.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(queue) = queues.get(&peer).filter(|q| !q.is_closed()) {
            return Some(queue.clone());
        }
        self.book.address(peer)?;
        if *self.stop.borrow() {
            return None;
        }
        let (queue, queued) = mpsc::channel(self.config.queue_len.max(1));
        let writer = PeerWriter::new(Arc::clone(&self.config), Arc::clone(&self.counters));
        let task = self.runtime.spawn(write_loop(
            peer,
            Arc::clone(&self.book),
            writer,
            queued,
            self.stop.subscribe(),
        ));
        let mut tasks = self.tasks.lock().unwrap_or_else(PoisonError::into_inner);
        tasks.retain(|t| !t.is_finished());
        tasks.push(task);
        queues.insert(peer, queue.clone());
        Some(queue)
    }

    /// Drops the writers to `peers` (their tasks end once their queues close).
    fn forget(&self, peers: &[NodeId]) {
        let mut queues = self.queues.lock().unwrap_or_else(PoisonError::into_inner);
        for peer in peers {
            queues.remove(peer);
        }
    }

    /// Where the transport accepts connections.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The counters since the transport started.
    pub fn stats(&self) -> TransportStats {
        self.counters.snapshot()
    }

    /// Stops the transport: the listener and every connection close, messages still queued
    /// are dropped, and later [`Transport::send`]s are dropped. Returns once its tasks ended
    /// (within a few seconds at most). Shutting a node down does not stop its transport:
    /// stop the node first (its last messages, such as a leader's hand-over, still go out),
    /// then the transport.
    pub async fn shutdown(&self) {
        let _ = self.stop.send(true);
        self.queues
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
        let tasks = std::mem::take(&mut *self.tasks.lock().unwrap_or_else(PoisonError::into_inner));
        for task in tasks {
            task.abort();
            let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
        }
    }
}

impl Transport for TcpTransport {
    fn can_reach(&self, peer: NodeId) -> Option<bool> {
        Some(self.book.address(peer).is_some())
    }

    fn counters(&self) -> Option<TransportStats> {
        Some(self.stats())
    }

    fn consumed(&self, bytes: u64) {
        self.counters.consumed(bytes);
    }

    fn send(&self, message: Message) {
        let delivered = self
            .queue(message.to)
            .is_some_and(|queue| queue.try_send(message).is_ok());
        if !delivered {
            Counters::add(&self.counters.dropped, 1);
        }
    }

    fn set_members(&self, members: &[(NodeId, Option<SocketAddr>)]) {
        let changed = self.book.set_members(members);
        self.forget(&changed);
    }
}

async fn accept_loop(
    listener: TcpListener,
    config: Arc<TcpConfig>,
    book: Arc<PeerBook>,
    inbound: mpsc::Sender<Message>,
    counters: Arc<Counters>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, remote)) => {
                    let _ = stream.set_nodelay(true);
                    tokio::spawn(read_loop(
                        stream,
                        remote,
                        Arc::clone(&config),
                        Arc::clone(&book),
                        inbound.clone(),
                        Arc::clone(&counters),
                        stop.clone(),
                    ));
                }
                Err(error) => {
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            },
            _ = stop.changed() => return,
        }
    }
}

/// Reads one accepted connection: a hello first, then Raft messages from that peer.
async fn read_loop(
    mut stream: TcpStream,
    remote: SocketAddr,
    config: Arc<TcpConfig>,
    book: Arc<PeerBook>,
    inbound: mpsc::Sender<Message>,
    counters: Arc<Counters>,
    mut stop: watch::Receiver<bool>,
) {
    let mut reader = PeerReader::new(config, Arc::clone(&counters), book);
    let mut buf = vec![0u8; 64 * 1024];
    let hello_deadline = tokio::time::Instant::now() + HELLO_TIMEOUT;
    loop {
        let said_hello = reader.peer().is_some();
        let read = async {
            if said_hello {
                stream.read(&mut buf).await
            } else {
                tokio::time::timeout_at(hello_deadline, stream.read(&mut buf))
                    .await
                    .unwrap_or_else(|_| Err(io::ErrorKind::TimedOut.into()))
            }
        };
        let n = tokio::select! {
            n = read => n,
            _ = stop.changed() => return,
        };
        match n {
            Ok(0) => {
                reader.on_end(remote);
                return;
            }
            Ok(n) => {
                let open = reader.on_bytes(&buf[..n], remote, |m| inbound.try_send(m).is_ok());
                if let Some(reply) = reader.take_reply() {
                    // The TLS handshake; or before closing, why (the peer waits for this
                    // after its hello before sending more).
                    let said = async {
                        stream.write_all(&reply).await?;
                        if !open {
                            stream.shutdown().await?;
                        }
                        io::Result::Ok(())
                    };
                    if !matches!(tokio::time::timeout(HELLO_TIMEOUT, said).await, Ok(Ok(()))) {
                        return;
                    }
                }
                if !open {
                    return;
                }
            }
            Err(error) => {
                if !said_hello {
                    Counters::add(&counters.refused_connections, 1);
                }
                tracing::debug!(%error, %remote, "connection closed");
                return;
            }
        }
    }
}

/// Connects to `peer` at `addr`, runs the TLS handshake if any, and says hello. `None` if
/// the connection fails, TLS fails (logged and counted here), or the peer refuses the hello
/// (an accepted hello gets no answer; a refused one gets the reason, logged and counted here,
/// then the close).
async fn connect_and_greet(
    peer: NodeId,
    addr: SocketAddr,
    writer: &PeerWriter,
    out: &mut Vec<u8>,
) -> Option<(TcpStream, PeerLink)> {
    let tls_failed = |error: LinkError| on_link_failed(writer.counters(), peer, addr, &error);
    let mut link = PeerLink::new(writer.config(), peer)
        .map_err(tls_failed)
        .ok()?;
    let mut stream = TcpStream::connect(addr).await.ok()?;
    let _ = stream.set_nodelay(true);
    let mut answer = vec![0u8; 16 * 1024];
    let handshake = async {
        let mut received = 0;
        loop {
            let done = link.handshake(&answer[..received], out);
            // Also after a failure: the alert that tells the peer why.
            let written = stream.write_all(out).await;
            let done = done.map_err(Some)?;
            written.map_err(|_| None)?;
            if done {
                return Ok(());
            }
            received = stream.read(&mut answer).await.map_err(|_| None)?;
            if received == 0 {
                return Err(Some(link.closed_in_handshake()));
            }
        }
    };
    match tokio::time::timeout(HELLO_TIMEOUT, handshake).await {
        Ok(Ok(())) => {}
        Ok(Err(Some(error))) => {
            tls_failed(error);
            return None;
        }
        Ok(Err(None)) | Err(_) => return None,
    }
    writer.hello(out);
    link.seal(out);
    stream.write_all(out).await.ok()?;
    match tokio::time::timeout(REFUSAL_WAIT, stream.read(&mut answer)).await {
        Err(_) => Some((stream, link)),
        Ok(read) => {
            if let Ok(n) = read {
                link.report_answer(&answer[..n], writer.counters(), peer, addr);
            }
            None
        }
    }
}

/// Owns the connection to one peer: connects (with backoff) to the address the book gives,
/// says hello, writes what is queued; reconnects after an error. Ends when the queue closes
/// or the peer has no address any more.
async fn write_loop(
    peer: NodeId,
    book: Arc<PeerBook>,
    writer: PeerWriter,
    mut queue: mpsc::Receiver<Message>,
    mut stop: watch::Receiver<bool>,
) {
    let counters = writer.counters();
    let mut failures = 0;
    let mut out = Vec::new();
    loop {
        let Some(addr) = book.address(peer) else {
            return;
        };
        let greeted = tokio::select! {
            greeted = connect_and_greet(peer, addr, &writer, &mut out) => greeted,
            _ = stop.changed() => return,
        };
        let Some((mut stream, mut link)) = greeted else {
            // Unreachable or refused: what waits for it is stale by the time it comes back.
            while queue.try_recv().is_ok() {
                Counters::add(&counters.dropped, 1);
            }
            tokio::select! {
                () = tokio::time::sleep(reconnect_backoff(failures)) => {}
                _ = stop.changed() => return,
            }
            failures += 1;
            continue;
        };
        // Accepted: the next failure starts the backoff over.
        failures = 0;
        loop {
            let first = tokio::select! {
                message = queue.recv() => match message {
                    Some(message) => message,
                    None => return,
                },
                _ = stop.changed() => return,
            };
            let batch = writer.batch(first, || queue.try_recv().ok(), &mut out);
            link.seal(&mut out);
            if stream.write_all(&out).await.is_err() {
                tracing::debug!(peer, %addr, "write failed; reconnecting");
                Counters::add(&counters.dropped, batch);
                break;
            }
            Counters::add(&counters.sent, batch);
        }
    }
}
