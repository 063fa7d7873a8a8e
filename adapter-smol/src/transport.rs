//! TCP transport on smol's building blocks (async-net sockets, async-io timers,
//! async-channel queues): the same protocol as every adapter's (the shared
//! [`PeerReader`] / [`PeerWriter`]), runnable under any executor.
//!
//! One task accepts connections and one task reads each of them; one task per peer owns the
//! outgoing connection, fed by a bounded queue: [`Transport::send`] never waits (a message
//! that does not fit is dropped and counted), and a dead peer is reconnected with exponential
//! backoff. Garbage, truncated or oversized frames close that connection only. Peers are
//! looked up in a [`PeerBook`]: the writer to a member added at run time is started by the
//! first message to it, and the writer to a node that left is stopped.
//!
//! With `TcpConfig::tls` (feature `tls`), every connection runs mutual TLS first, driven by
//! the same shared halves ([`PeerReader`] on the accepting side, `PeerLink` on the connecting
//! side), so this transport only carries the bytes: see `adapter_common::tls` for what is
//! checked, and the `tls_*` checks of the conformance suite.

use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use adapter_common::net::{
    check_config, on_link_failed, reconnect_backoff, LinkError, PeerLink,
    TransportCounters as Counters, REFUSAL_WAIT,
};
use adapter_common::{PeerBook, PeerReader, PeerWriter, TcpConfig, Transport, TransportStats};
use async_channel::{Receiver, Sender};
use futures_lite::{future, AsyncReadExt, AsyncWriteExt};
use raft_proto::{Message, NodeId};
use smol::net::{TcpListener, TcpStream};

use crate::node::{sleep, SmolSpawner, Spawn};

/// A connection must say hello within this time.
const HELLO_TIMEOUT: Duration = Duration::from_secs(5);

/// A TCP transport whose tasks run on smol's executor, or on the one given at start.
pub struct TcpTransport {
    config: Arc<TcpConfig>,
    book: Arc<PeerBook>,
    /// The queue of each peer's writer task, started on the first message to it.
    queues: Mutex<BTreeMap<NodeId, Sender<Message>>>,
    counters: Arc<Counters>,
    local_addr: SocketAddr,
    /// Dropping the sender closes the channel: every task sees it and ends.
    stop: Mutex<Option<Sender<()>>>,
    stopped: Receiver<()>,
    spawner: Box<dyn Spawn>,
}

impl std::fmt::Debug for TcpTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TcpTransport")
            .field("node_id", &self.config.node_id)
            .field("local_addr", &self.local_addr)
            .finish_non_exhaustive()
    }
}

impl TcpTransport {
    /// Binds `config.listen` and starts the transport's tasks on smol's global executor;
    /// received messages go to `inbound` (dropped when it is full). For another executor
    /// (async-std's), see [`start_with`](Self::start_with).
    pub async fn start(config: TcpConfig, inbound: Sender<Message>) -> io::Result<Self> {
        Self::start_with(config, None, inbound, SmolSpawner).await
    }

    /// Like [`start`](Self::start), but accepts on an already bound `listener` (and ignores
    /// `config.listen`): bind every member's listener to port 0 first, learn their addresses
    /// with `local_addr`, then start each transport with the others' addresses.
    pub async fn start_with_listener(
        config: TcpConfig,
        listener: std::net::TcpListener,
        inbound: Sender<Message>,
    ) -> io::Result<Self> {
        Self::start_with(config, Some(listener), inbound, SmolSpawner).await
    }

    /// The general form of [`start`](Self::start) and
    /// [`start_with_listener`](Self::start_with_listener): accepts on `listener` (or binds
    /// `config.listen` when it is `None`) and runs the transport's tasks on the executor of
    /// `spawner`, as [`start_with`](crate::start_with) does for the node.
    pub async fn start_with(
        config: TcpConfig,
        listener: Option<std::net::TcpListener>,
        inbound: Sender<Message>,
        spawner: impl Spawn + Clone,
    ) -> io::Result<Self> {
        let listener = match listener {
            Some(listener) => TcpListener::try_from(listener)?,
            None => TcpListener::bind(config.listen).await?,
        };
        Self::start_on(config, listener, inbound, spawner)
    }

    fn start_on(
        mut config: TcpConfig,
        listener: TcpListener,
        inbound: Sender<Message>,
        spawner: impl Spawn + Clone,
    ) -> io::Result<Self> {
        check_config(&config)?;
        let local_addr = listener.local_addr()?;
        if config.advertise.is_none() && !local_addr.ip().is_unspecified() {
            config.advertise = Some(local_addr);
        }
        let book = Arc::new(PeerBook::new(&config));
        let config = Arc::new(config);
        let counters = Arc::new(Counters::default());
        let (stop, stopped) = async_channel::bounded::<()>(1);
        let accept = accept_loop(
            listener,
            Arc::clone(&config),
            Arc::clone(&book),
            inbound,
            Arc::clone(&counters),
            stopped.clone(),
            spawner.clone(),
        );
        spawner.spawn(Box::pin(accept));
        Ok(Self {
            config,
            book,
            queues: Mutex::new(BTreeMap::new()),
            counters,
            local_addr,
            stop: Mutex::new(Some(stop)),
            stopped,
            spawner: Box::new(spawner),
        })
    }

    /// The queue of `peer`'s writer, starting it if its address is known.
    fn queue(&self, peer: NodeId) -> Option<Sender<Message>> {
        let mut queues = self.queues.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(queue) = queues.get(&peer).filter(|q| !q.is_closed()) {
            return Some(queue.clone());
        }
        self.book.address(peer)?;
        if self.stopped.is_closed() {
            return None;
        }
        let (queue, queued) = async_channel::bounded(self.config.queue_len.max(1));
        let writer = PeerWriter::new(Arc::clone(&self.config), Arc::clone(&self.counters));
        self.spawner.spawn(Box::pin(write_loop(
            peer,
            Arc::clone(&self.book),
            writer,
            queued,
            self.stopped.clone(),
        )));
        queues.insert(peer, queue.clone());
        Some(queue)
    }

    /// Where the transport accepts connections.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The counters since the transport started.
    pub fn stats(&self) -> TransportStats {
        self.counters.snapshot()
    }

    /// Stops the transport: the listener and every connection close as their tasks end,
    /// messages still queued are dropped, and later [`Transport::send`]s are dropped. Returns
    /// at once; the tasks end on their own. Shutting a node down does not stop its transport:
    /// stop the node first (its last messages, such as a leader's hand-over, still go out),
    /// then the transport.
    pub fn shutdown(&self) {
        self.stop
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        for (_, queue) in
            std::mem::take(&mut *self.queues.lock().unwrap_or_else(PoisonError::into_inner))
        {
            queue.close();
        }
    }
}

impl Drop for TcpTransport {
    fn drop(&mut self) {
        self.shutdown();
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
        let mut queues = self.queues.lock().unwrap_or_else(PoisonError::into_inner);
        for peer in changed {
            if let Some(queue) = queues.remove(&peer) {
                queue.close();
            }
        }
    }
}

async fn accept_loop(
    listener: TcpListener,
    config: Arc<TcpConfig>,
    book: Arc<PeerBook>,
    inbound: Sender<Message>,
    counters: Arc<Counters>,
    stopped: Receiver<()>,
    spawner: impl Spawn,
) {
    loop {
        let accepted = future::or(async { Some(listener.accept().await) }, async {
            let _ = stopped.recv().await;
            None
        })
        .await;
        match accepted {
            None => return,
            Some(Ok((stream, remote))) => {
                let _ = stream.set_nodelay(true);
                spawner.spawn(Box::pin(read_loop(
                    stream,
                    remote,
                    PeerReader::new(
                        Arc::clone(&config),
                        Arc::clone(&counters),
                        Arc::clone(&book),
                    ),
                    inbound.clone(),
                    Arc::clone(&counters),
                    stopped.clone(),
                )));
            }
            Some(Err(error)) => {
                tracing::warn!(%error, "accept failed");
                sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

/// Reads one accepted connection: a hello first, then Raft messages from that peer.
async fn read_loop(
    mut stream: TcpStream,
    remote: SocketAddr,
    mut reader: PeerReader,
    inbound: Sender<Message>,
    counters: Arc<Counters>,
    stopped: Receiver<()>,
) {
    let mut buf = vec![0u8; 64 * 1024];
    let hello_deadline = Instant::now() + HELLO_TIMEOUT;
    loop {
        let said_hello = reader.peer().is_some();
        let limit = if said_hello {
            Duration::MAX
        } else {
            hello_deadline.saturating_duration_since(Instant::now())
        };
        let read = future::or(
            async { Some(stream.read(&mut buf).await) },
            future::or(
                async {
                    let _ = stopped.recv().await;
                    None
                },
                async {
                    if limit == Duration::MAX {
                        future::pending::<()>().await;
                    }
                    sleep(limit).await;
                    Some(Err(io::ErrorKind::TimedOut.into()))
                },
            ),
        )
        .await;
        match read {
            None => return,
            Some(Ok(0)) => {
                reader.on_end(remote);
                return;
            }
            Some(Ok(n)) => {
                let open = reader.on_bytes(&buf[..n], remote, |m| inbound.try_send(m).is_ok());
                if let Some(reply) = reader.take_reply() {
                    // The TLS handshake; or before closing, why (the peer waits for this
                    // after its hello before sending more).
                    let said = async {
                        stream.write_all(&reply).await?;
                        if !open {
                            stream.close().await?;
                        }
                        io::Result::Ok(())
                    };
                    let timeout = async {
                        sleep(HELLO_TIMEOUT).await;
                        Err(io::ErrorKind::TimedOut.into())
                    };
                    if future::or(said, timeout).await.is_err() {
                        return;
                    }
                }
                if !open {
                    return;
                }
            }
            Some(Err(error)) => {
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
    let timeout = async {
        sleep(HELLO_TIMEOUT).await;
        Err(None)
    };
    match future::or(handshake, timeout).await {
        Ok(()) => {}
        Err(Some(error)) => {
            tls_failed(error);
            return None;
        }
        Err(None) => return None,
    }
    writer.hello(out);
    link.seal(out);
    stream.write_all(out).await.ok()?;
    let read = future::or(async { Some(stream.read(&mut answer).await) }, async {
        sleep(REFUSAL_WAIT).await;
        None
    })
    .await;
    let Some(read) = read else {
        return Some((stream, link));
    };
    if let Ok(n) = read {
        link.report_answer(&answer[..n], writer.counters(), peer, addr);
    }
    None
}

/// Owns the connection to one peer: connects (with backoff) to the address the book gives,
/// says hello, writes what is queued; reconnects after an error. Ends when the transport
/// stops, the queue closes, or the peer has no address any more.
async fn write_loop(
    peer: NodeId,
    book: Arc<PeerBook>,
    writer: PeerWriter,
    queue: Receiver<Message>,
    stopped: Receiver<()>,
) {
    let counters = writer.counters();
    let mut failures = 0;
    let mut out = Vec::new();
    loop {
        let Some(addr) = book.address(peer) else {
            return;
        };
        let greeted = future::or(
            async { Some(connect_and_greet(peer, addr, &writer, &mut out).await) },
            async {
                let _ = stopped.recv().await;
                None
            },
        )
        .await;
        let (mut stream, mut link) = match greeted {
            None => return,
            Some(Some(greeted)) => greeted,
            Some(None) => {
                // Unreachable or refused: what waits for it is stale by the time it comes
                // back.
                while queue.try_recv().is_ok() {
                    Counters::add(&counters.dropped, 1);
                }
                if queue.is_closed() {
                    return;
                }
                sleep(reconnect_backoff(failures)).await;
                failures += 1;
                continue;
            }
        };
        // Accepted: the next failure starts the backoff over.
        failures = 0;
        // A closed queue (the transport stopped) ends the task.
        while let Ok(first) = queue.recv().await {
            let batch = writer.batch(first, || queue.try_recv().ok(), &mut out);
            link.seal(&mut out);
            if stream.write_all(&out).await.is_err() {
                tracing::debug!(peer, %addr, "write failed; reconnecting");
                Counters::add(&counters.dropped, batch);
                break;
            }
            Counters::add(&counters.sent, batch);
        }
        if queue.is_closed() {
            return;
        }
    }
}
