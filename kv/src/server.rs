//! `raft-kv serve`: one replica, with its Raft port and its client port.

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use adapter_common::tls::TlsConfig;
use adapter_common::{NodeOptions, ProposeError, ReadError, TcpConfig};
use raft_proto::wire::FrameDecoder;
use raft_proto::NodeId;

use crate::protocol::{
    read_frame, write_frame, MemberChange, Members, Request, Response, Stream, MAX_FRAME,
};
use crate::runtime::{Node, Runtime};
use crate::store::{KvCommand, KvStore};
use adapter_common::sessions::{self, ClientSession, SessionError};

/// How a replica serves reads (`Get`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum ReadMode {
    /// ReadIndex (thesis §6.4): one round of heartbeats to a majority, no log write; at a
    /// follower, the leader's read index. The default.
    Index,
    /// Lease reads: served by the leader without a round while its lease holds (it assumes
    /// the nodes' clocks run at rates within the drift bound of each other).
    Lease,
    /// Through the log: a log entry per read, committed and applied (a disk write on a
    /// majority).
    Log,
}

/// Everything `serve` needs.
#[derive(Debug, Clone)]
pub(crate) struct ServeConfig {
    pub(crate) id: NodeId,
    pub(crate) cluster_id: u64,
    /// Where this node listens for its peers.
    pub(crate) raft_addr: SocketAddr,
    /// Raft addresses of the members of a new cluster, this one included (empty when the
    /// node joins an existing cluster).
    pub(crate) peers: BTreeMap<NodeId, SocketAddr>,
    /// Client addresses of the members of a new cluster, where given: a member the
    /// membership has no data for is described with them (clients find the leader).
    pub(crate) peer_clients: BTreeMap<NodeId, SocketAddr>,
    /// Client addresses of members of an existing cluster to join (as a learner).
    pub(crate) join: Vec<SocketAddr>,
    /// Where this node listens for clients.
    pub(crate) client_addr: SocketAddr,
    pub(crate) data_dir: PathBuf,
    pub(crate) snapshot_every: u64,
    /// See `Config::stream_snapshots`.
    pub(crate) stream_snapshots: bool,
    /// Which adapter runs the node.
    pub(crate) runtime: Runtime,
    /// How reads are served.
    pub(crate) read_mode: ReadMode,
    /// Where the Prometheus metrics are served, if anywhere.
    pub(crate) metrics_addr: Option<SocketAddr>,
    /// Whether a client's `Shutdown` request is obeyed (otherwise it is refused: anyone who
    /// reaches the client port could stop the node). With TLS, every client is authenticated
    /// and may ask.
    pub(crate) allow_remote_shutdown: bool,
    /// Mutual TLS on the Raft port and the client port (plain TCP on both without).
    pub(crate) tls: Option<TlsConfig>,
}

/// How long a client request may wait for its command to commit.
const COMMIT_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a client may take for its TLS handshake and first request.
const FIRST_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a membership change may take (a learner may have a snapshot to catch up with).
const CHANGE_TIMEOUT: Duration = Duration::from_secs(10);

/// The data a kv member carries: its Raft address (what the transports read) and its client
/// address (what clients read).
pub(crate) fn member_data(raft: SocketAddr, client: SocketAddr) -> String {
    format!("{raft} {client}")
}

/// Runs the replica until a client asks it to shut down.
pub(crate) fn serve(config: ServeConfig) -> Result<(), String> {
    let listen = config.raft_addr;
    let mut others = config.peers.clone();
    others.remove(&config.id);
    let mut tcp = TcpConfig::new(config.cluster_id, config.id, listen, others);
    tcp.queue_len = 4096;
    tcp.tls = config.tls.clone();
    let voters = config.peers.keys().copied().collect();
    let mut options = NodeOptions::new(config.id, voters, &config.data_dir);
    options.snapshot_every = Some(config.snapshot_every);
    options.raft.stream_snapshots = config.stream_snapshots;
    options.raft.lease_reads = config.read_mode == ReadMode::Lease;
    if let Some(addr) = config.metrics_addr {
        crate::exporter::serve(addr)?;
        options.metrics = true;
        tracing::info!(%addr, "metrics at http://{addr}/metrics");
    }
    let store = KvStore::default();
    let node = Arc::new(
        Node::start(config.runtime, options, store.clone(), tcp)
            .map_err(|e| format!("cannot start node {}: {e}", config.id))?,
    );
    let clients = TcpListener::bind(config.client_addr)
        .map_err(|e| format!("cannot listen for clients on {}: {e}", config.client_addr))?;
    tracing::info!(id = config.id, raft = %listen, clients = %config.client_addr, runtime = ?config.runtime, read_mode = ?config.read_mode, tls = config.tls.is_some(), "serving");
    if !config.join.is_empty() {
        // Ask the cluster to add this node as a learner; a node that restarts is a member
        // already, which is fine.
        let (join, id) = (config.join.clone(), config.id);
        let data = member_data(listen, config.client_addr);
        std::thread::spawn(move || {
            let change = MemberChange::AddLearner { id, data };
            match crate::members::change(&join, change, Duration::from_secs(60)) {
                Ok(members) => tracing::info!(id, ?members, "joined the cluster as a learner"),
                Err(error) => tracing::warn!(id, %error, "could not join the cluster"),
            }
        });
    }
    let (stop_tx, stop_rx) = crossbeam_channel::bounded::<()>(1);
    on_sigterm(stop_tx.clone());
    let read_mode = config.read_mode;
    // A TLS client proved a certificate of the cluster's CA.
    let allow_shutdown = config.allow_remote_shutdown || config.tls.is_some();
    let tls = config.tls.clone();
    let bootstrap_data: Arc<BTreeMap<NodeId, String>> = Arc::new(
        config
            .peer_clients
            .iter()
            .filter_map(|(id, client)| Some((*id, member_data(*config.peers.get(id)?, *client))))
            .collect(),
    );
    std::thread::spawn({
        let node = Arc::clone(&node);
        move || {
            for stream in clients.incoming().flatten() {
                let stream = match Stream::accepted(stream, tls.as_ref()) {
                    Ok(stream) => stream,
                    Err(error) => {
                        tracing::error!(%error, "cannot start a TLS session for a client");
                        continue;
                    }
                };
                let node = Arc::clone(&node);
                let store = store.clone();
                let stop = stop_tx.clone();
                let context = ClientContext {
                    read_mode,
                    allow_shutdown,
                    bootstrap_data: Arc::clone(&bootstrap_data),
                };
                std::thread::spawn(move || serve_client(stream, &node, &store, &context, &stop));
            }
        }
    });
    // Block until asked to stop (a client's request, or SIGTERM), then stop cleanly: a leader
    // hands leadership over first, and nothing acknowledged is lost.
    let _ = stop_rx.recv();
    node.stop();
    // Client threads may still hold the node (stopped already); stop the transport through a
    // last reference or, if they do not let go within a few seconds, by exiting.
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    let mut node = node;
    loop {
        match Arc::try_unwrap(node) {
            Ok(node) => {
                node.shutdown();
                break;
            }
            Err(shared) if std::time::Instant::now() < deadline => {
                node = shared;
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(_) => {
                tracing::warn!("clients still connected at shutdown; exiting");
                break;
            }
        }
    }
    tracing::info!(id = config.id, "shut down");
    Ok(())
}

/// Sends on `stop` when the process receives SIGTERM (a service manager stopping it).
fn on_sigterm(stop: crossbeam_channel::Sender<()>) {
    let spawned = std::thread::Builder::new()
        .name("sigterm".into())
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime,
                Err(error) => return tracing::warn!(%error, "cannot watch for SIGTERM"),
            };
            runtime.block_on(async {
                use tokio::signal::unix::{signal, SignalKind};
                match signal(SignalKind::terminate()) {
                    Ok(mut term) => {
                        term.recv().await;
                        tracing::info!("SIGTERM: shutting down (a leader hands over first)");
                        let _ = stop.try_send(());
                    }
                    Err(error) => tracing::warn!(%error, "cannot watch for SIGTERM"),
                }
            });
        });
    if let Err(error) = spawned {
        tracing::warn!(%error, "cannot watch for SIGTERM");
    }
}

/// Answers a `Get` the way `mode` says.
fn read(node: &Node, store: &KvStore, mode: ReadMode, key: String) -> Response {
    if mode == ReadMode::Log {
        return propose(node, &KvCommand::Get { key });
    }
    match node.read_index(COMMIT_TIMEOUT) {
        Ok(_) => Response::Done(store.get(&key)),
        Err(ReadError::NoLeader) => Response::NotLeader(None),
        Err(e) => Response::Unavailable(e.to_string()),
    }
}

/// Replicates `command` outside any session and answers its result.
fn propose(node: &Node, command: &KvCommand) -> Response {
    let bytes = postcard::to_allocvec(command).unwrap_or_default();
    propose_encoded(node, sessions::plain(&bytes))
}

/// Replicates bytes encoded for the sessions wrapper and answers the store's result.
fn propose_encoded(node: &Node, bytes: Vec<u8>) -> Response {
    match node.propose(bytes, COMMIT_TIMEOUT) {
        Ok(answer) => match sessions::decode_answer(&answer) {
            Ok(answer) => Response::Done(postcard::from_bytes(&answer).unwrap_or(None)),
            Err(SessionError::Expired) => Response::SessionExpired,
            Err(e) => Response::Unavailable(e.to_string()),
        },
        Err(ProposeError::NotLeader { leader_hint }) => Response::NotLeader(leader_hint),
        Err(ProposeError::Transferring { to }) => Response::NotLeader(Some(to)),
        Err(e) => Response::Unavailable(e.to_string()),
    }
}

/// Opens a client session: its id is the index of the registration entry.
fn register(node: &Node) -> Response {
    match node.propose(ClientSession::register(), COMMIT_TIMEOUT) {
        Ok(answer) => match ClientSession::from_registration(&answer) {
            Some(session) => Response::Registered(session.id()),
            None => Response::Unavailable("not a registration answer".into()),
        },
        Err(ProposeError::NotLeader { leader_hint }) => Response::NotLeader(leader_hint),
        Err(ProposeError::Transferring { to }) => Response::NotLeader(Some(to)),
        Err(e) => Response::Unavailable(e.to_string()),
    }
}

/// What every client connection of a replica shares.
struct ClientContext {
    read_mode: ReadMode,
    /// Whether a client may shut the node down (`--allow-remote-shutdown`).
    allow_shutdown: bool,
    /// Member data for the members of a new cluster that the membership has none for.
    bootstrap_data: Arc<BTreeMap<NodeId, String>>,
}

impl ClientContext {
    /// The membership as clients see it, with the bootstrap client addresses filled in.
    fn members(&self, membership: &raft_proto::Membership, leader: Option<NodeId>) -> Members {
        let mut members = Members::from_core(membership, leader);
        for (id, data) in self.bootstrap_data.iter() {
            if membership.contains(*id) && !members.data.iter().any(|(i, _)| i == id) {
                members.data.push((*id, data.clone()));
            }
        }
        members
    }
}

fn serve_client(
    mut stream: Stream,
    node: &Node,
    store: &KvStore,
    context: &ClientContext,
    stop: &crossbeam_channel::Sender<()>,
) {
    let _ = stream.tcp().set_nodelay(true);
    // A client has this long for its TLS handshake and first request; an idle one may then
    // keep its connection.
    let _ = stream.tcp().set_read_timeout(Some(FIRST_REQUEST_TIMEOUT));
    let mut decoder = FrameDecoder::new(MAX_FRAME);
    let mut served = 0u64;
    loop {
        let request = match read_frame::<Request>(&mut stream, &mut decoder) {
            Ok(request) => request,
            Err(error) => {
                let client = stream.tcp().peer_addr().ok();
                match error
                    .get_ref()
                    .and_then(|e| e.downcast_ref::<rustls::Error>())
                {
                    Some(rustls::Error::AlertReceived(alert)) => tracing::warn!(
                        ?client,
                        ?alert,
                        "a client refused this node's TLS certificate"
                    ),
                    Some(tls) => tracing::warn!(
                        ?client,
                        error = %tls,
                        "refused a client: its TLS handshake failed (it needs a certificate of \
                         the cluster's CA, valid now)"
                    ),
                    None if served == 0 && error.kind() != std::io::ErrorKind::UnexpectedEof => {
                        tracing::debug!(?client, %error, "a client left before its first request");
                    }
                    None => {}
                }
                return;
            }
        };
        if served == 0 {
            let _ = stream.tcp().set_read_timeout(None);
        }
        served += 1;
        let response = match request {
            Request::Command(KvCommand::Get { key }) => read(node, store, context.read_mode, key),
            Request::Command(command) => propose(node, &command),
            Request::Register => register(node),
            Request::SessionCommand {
                command: KvCommand::Get { key },
                ..
            } => read(node, store, context.read_mode, key),
            Request::SessionCommand {
                client,
                seq,
                command,
            } => {
                let bytes = postcard::to_allocvec(&command).unwrap_or_default();
                propose_encoded(node, ClientSession::resume(client, seq).command(&bytes))
            }
            Request::Dump => {
                let applied = node.status().map_or(0, |s| s.applied_index);
                Response::Dump(store.dump(), applied)
            }
            Request::Status => match node.status() {
                Some(s) => Response::Status {
                    id: s.id,
                    role: format!("{:?}", s.role),
                    term: s.term,
                    leader: s.leader,
                    commit: s.commit_index,
                    applied: s.applied_index,
                    refused_by_peers: s.transport.map_or(0, |t| t.refused_by_peers),
                },
                None => Response::Unavailable("shut down".into()),
            },
            Request::Members => match (node.membership(), node.status()) {
                (Some(membership), Some(status)) => {
                    Response::Members(context.members(&membership, status.leader))
                }
                _ => Response::Unavailable("shut down".into()),
            },
            Request::ChangeMembership(change) => {
                match node.change_membership(change.into_core(), CHANGE_TIMEOUT) {
                    Ok(membership) => {
                        let leader = node.status().and_then(|s| s.leader);
                        Response::Members(context.members(&membership, leader))
                    }
                    Err(ProposeError::NotLeader { leader_hint }) => {
                        Response::NotLeader(leader_hint)
                    }
                    Err(ProposeError::Refused(error)) => Response::Refused(error.to_string()),
                    Err(e) => Response::Unavailable(e.to_string()),
                }
            }
            Request::Shutdown if !context.allow_shutdown => {
                tracing::warn!(client = ?stream.tcp().peer_addr().ok(), "refused a remote shutdown");
                Response::Refused(
                    "remote shutdown is not allowed (start the node with --allow-remote-shutdown, \
                     or with TLS)"
                        .into(),
                )
            }
            Request::Shutdown => {
                let _ = write_frame(&mut stream, &Response::Done(None));
                let _ = stop.try_send(());
                return;
            }
        };
        if write_frame(&mut stream, &response).is_err() {
            return;
        }
    }
}
