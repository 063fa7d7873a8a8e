//! `raft-kv serve`: one replica, with its Raft port and its client port.

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use adapter_common::{NodeOptions, ProposeError, TcpConfig};
use raft_proto::wire::FrameDecoder;
use raft_proto::NodeId;

use crate::protocol::{
    read_frame, write_frame, MemberChange, Members, Request, Response, MAX_FRAME,
};
use crate::runtime::{Node, Runtime};
use crate::store::KvStore;

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
    /// Client addresses of members of an existing cluster to join (as a learner).
    pub(crate) join: Vec<SocketAddr>,
    /// Where this node listens for clients.
    pub(crate) client_addr: SocketAddr,
    pub(crate) data_dir: PathBuf,
    pub(crate) snapshot_every: u64,
    /// Which adapter runs the node.
    pub(crate) runtime: Runtime,
}

/// How long a client request may wait for its command to commit.
const COMMIT_TIMEOUT: Duration = Duration::from_secs(3);
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
    let voters = config.peers.keys().copied().collect();
    let mut options = NodeOptions::new(config.id, voters, &config.data_dir);
    options.snapshot_every = Some(config.snapshot_every);
    let store = KvStore::default();
    let node = Arc::new(
        Node::start(config.runtime, options, store.clone(), tcp)
            .map_err(|e| format!("cannot start node {}: {e}", config.id))?,
    );
    let clients = TcpListener::bind(config.client_addr)
        .map_err(|e| format!("cannot listen for clients on {}: {e}", config.client_addr))?;
    tracing::info!(id = config.id, raft = %listen, clients = %config.client_addr, runtime = ?config.runtime, "serving");
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
    std::thread::spawn({
        let node = Arc::clone(&node);
        move || {
            for stream in clients.incoming().flatten() {
                let node = Arc::clone(&node);
                let store = store.clone();
                let stop = stop_tx.clone();
                std::thread::spawn(move || serve_client(stream, &node, &store, &stop));
            }
        }
    });
    // Block until asked to stop, then stop cleanly: nothing acknowledged is lost.
    let _ = stop_rx.recv();
    // Client threads may still hold the node; shut it down through a last reference or, if
    // they do not let go within a few seconds, by exiting (nothing acknowledged is lost).
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

fn serve_client(
    mut stream: TcpStream,
    node: &Node,
    store: &KvStore,
    stop: &crossbeam_channel::Sender<()>,
) {
    let _ = stream.set_nodelay(true);
    let mut decoder = FrameDecoder::new(MAX_FRAME);
    while let Ok(request) = read_frame::<Request>(&mut stream, &mut decoder) {
        let response = match request {
            Request::Command(command) => {
                let bytes = postcard::to_allocvec(&command).unwrap_or_default();
                match node.propose(bytes, COMMIT_TIMEOUT) {
                    Ok(answer) => Response::Done(postcard::from_bytes(&answer).unwrap_or(None)),
                    Err(ProposeError::NotLeader { leader_hint }) => {
                        Response::NotLeader(leader_hint)
                    }
                    Err(e) => Response::Unavailable(e.to_string()),
                }
            }
            Request::Dump => {
                let applied = node.status().map_or(0, |s| s.applied_index);
                Response::Dump(store.dump(), applied)
            }
            Request::Status => match node.status() {
                Some(s) => Response::Status {
                    role: format!("{:?}", s.role),
                    term: s.term,
                    leader: s.leader,
                    applied: s.applied_index,
                },
                None => Response::Unavailable("shut down".into()),
            },
            Request::Members => match (node.membership(), node.status()) {
                (Some(membership), Some(status)) => {
                    Response::Members(Members::from_core(&membership, status.leader))
                }
                _ => Response::Unavailable("shut down".into()),
            },
            Request::ChangeMembership(change) => {
                match node.change_membership(change.into_core(), CHANGE_TIMEOUT) {
                    Ok(membership) => {
                        let leader = node.status().and_then(|s| s.leader);
                        Response::Members(Members::from_core(&membership, leader))
                    }
                    Err(ProposeError::NotLeader { leader_hint }) => {
                        Response::NotLeader(leader_hint)
                    }
                    Err(ProposeError::Refused(error)) => Response::Refused(error.to_string()),
                    Err(e) => Response::Unavailable(e.to_string()),
                }
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
