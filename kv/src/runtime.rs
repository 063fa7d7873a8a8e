//! The replica on the runtime of your choice: `--runtime thread|tokio|smol|async-std`. The
//! state machine, the options and the TCP configuration are the same for every runtime; only
//! the crate `start` comes from changes.

use std::sync::Arc;
use std::time::Duration;

use adapter_common::{NodeOptions, ProposeError, ReadError, Status, TcpConfig};
use raft_proto::{Membership, MembershipChange};

use crate::store::{machine, KvStore};

/// Which adapter runs the node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Runtime {
    /// adapter-thread: OS threads and channels.
    Thread,
    /// adapter-tokio: a tokio task.
    Tokio,
    /// adapter-smol on smol's executor.
    Smol,
    /// adapter-smol on async-std's executor.
    AsyncStd,
}

/// A running replica, seen through blocking calls whatever runs it.
pub(crate) enum Node {
    Thread {
        node: adapter_thread::NodeHandle,
        transport: Arc<adapter_thread::transport::TcpTransport>,
    },
    Tokio {
        runtime: tokio::runtime::Runtime,
        node: adapter_tokio::NodeHandle,
        transport: Arc<adapter_tokio::transport::TcpTransport>,
    },
    Smol {
        node: adapter_smol::NodeHandle,
        transport: Arc<adapter_smol::transport::TcpTransport>,
    },
}

fn async_std_spawner(future: adapter_smol::BoxFuture) {
    async_std::task::spawn(future);
}

/// A transport that cannot start on `addr`: it cannot listen there, or its configuration
/// (its TLS certificate) is refused.
fn listen_error(addr: std::net::SocketAddr) -> impl FnOnce(std::io::Error) -> String {
    move |e| {
        if e.kind() == std::io::ErrorKind::InvalidInput {
            format!("the transport's configuration is refused: {e}")
        } else {
            format!("cannot listen for peers on {addr}: {e}")
        }
    }
}

impl Node {
    /// Starts the replica's transport and node on `runtime`.
    pub(crate) fn start(
        runtime: Runtime,
        options: NodeOptions,
        store: KvStore,
        tcp: TcpConfig,
    ) -> Result<Self, String> {
        let listen = tcp.listen;
        match runtime {
            Runtime::Thread => {
                let (tx, rx) = crossbeam_channel::bounded(16 * 1024);
                let transport = Arc::new(
                    adapter_thread::transport::TcpTransport::start(tcp, tx)
                        .map_err(listen_error(listen))?,
                );
                let node =
                    adapter_thread::start(options, machine(store), Arc::clone(&transport), rx)
                        .map_err(|e| e.to_string())?;
                Ok(Self::Thread { node, transport })
            }
            Runtime::Tokio => {
                let runtime = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .map_err(|e| format!("cannot start the tokio runtime: {e}"))?;
                let (node, transport) = runtime.block_on(async {
                    let (tx, rx) = tokio::sync::mpsc::channel(16 * 1024);
                    let transport = Arc::new(
                        adapter_tokio::transport::TcpTransport::start(tcp, tx)
                            .await
                            .map_err(listen_error(listen))?,
                    );
                    let node =
                        adapter_tokio::start(options, machine(store), Arc::clone(&transport), rx)
                            .map_err(|e| e.to_string())?;
                    Ok::<_, String>((node, transport))
                })?;
                Ok(Self::Tokio {
                    runtime,
                    node,
                    transport,
                })
            }
            Runtime::Smol => start_smol(adapter_smol::SmolSpawner, options, store, tcp),
            Runtime::AsyncStd => start_smol(async_std_spawner, options, store, tcp),
        }
    }

    /// Proposes and waits up to `timeout` for the answer.
    pub(crate) fn propose(
        &self,
        command: Vec<u8>,
        timeout: Duration,
    ) -> Result<Vec<u8>, ProposeError> {
        match self {
            Self::Thread { node, .. } => node.propose_timeout(command, timeout),
            Self::Tokio { runtime, node, .. } => runtime.block_on(async {
                tokio::time::timeout(timeout, node.propose(command))
                    .await
                    .unwrap_or(Err(ProposeError::TimedOut))
            }),
            Self::Smol { node, .. } => {
                smol::block_on(futures_lite::future::or(node.propose(command), async {
                    smol::Timer::after(timeout).await;
                    Err(ProposeError::TimedOut)
                }))
            }
        }
    }

    /// Asks for a membership change and waits up to `timeout` for it to complete.
    pub(crate) fn change_membership(
        &self,
        change: MembershipChange,
        timeout: Duration,
    ) -> Result<Membership, ProposeError> {
        match self {
            Self::Thread { node, .. } => node.change_membership_timeout(change, timeout),
            Self::Tokio { runtime, node, .. } => runtime.block_on(async {
                tokio::time::timeout(timeout, node.change_membership(change))
                    .await
                    .unwrap_or(Err(ProposeError::TimedOut))
            }),
            Self::Smol { node, .. } => smol::block_on(futures_lite::future::or(
                node.change_membership(change),
                async {
                    smol::Timer::after(timeout).await;
                    Err(ProposeError::TimedOut)
                },
            )),
        }
    }

    /// Waits up to `timeout` until a linearizable read may be served from the store.
    pub(crate) fn read_index(&self, timeout: Duration) -> Result<u64, ReadError> {
        match self {
            Self::Thread { node, .. } => node.read_index_timeout(timeout),
            Self::Tokio { runtime, node, .. } => runtime.block_on(async {
                tokio::time::timeout(timeout, node.read_index())
                    .await
                    .unwrap_or(Err(ReadError::TimedOut))
            }),
            Self::Smol { node, .. } => {
                smol::block_on(futures_lite::future::or(node.read_index(), async {
                    smol::Timer::after(timeout).await;
                    Err(ReadError::TimedOut)
                }))
            }
        }
    }

    /// The membership in force at the node, None once it is shut down.
    pub(crate) fn membership(&self) -> Option<Membership> {
        match self {
            Self::Thread { node, .. } => node.membership(),
            Self::Tokio { runtime, node, .. } => runtime.block_on(node.membership()),
            Self::Smol { node, .. } => smol::block_on(node.membership()),
        }
    }

    /// The node's status, None once it is shut down.
    pub(crate) fn status(&self) -> Option<Status> {
        match self {
            Self::Thread { node, .. } => node.status(),
            Self::Tokio { runtime, node, .. } => runtime.block_on(node.status()),
            Self::Smol { node, .. } => smol::block_on(node.status()),
        }
    }

    /// Stops the node (a leader hands leadership over first); callable while clients still
    /// hold the node. The transport keeps running until [`shutdown`](Self::shutdown).
    pub(crate) fn stop(&self) {
        match self {
            Self::Thread { node, .. } => node.shutdown(),
            Self::Tokio { runtime, node, .. } => runtime.block_on(node.shutdown()),
            Self::Smol { node, .. } => smol::block_on(node.shutdown()),
        }
    }

    /// Stops the node, then its transport.
    pub(crate) fn shutdown(self) {
        self.stop();
        match self {
            Self::Thread { transport, .. } => {
                if let Ok(transport) = Arc::try_unwrap(transport) {
                    transport.shutdown();
                }
            }
            Self::Tokio {
                runtime, transport, ..
            } => runtime.block_on(async {
                if let Ok(transport) = Arc::try_unwrap(transport) {
                    transport.shutdown().await;
                }
            }),
            Self::Smol { transport, .. } => transport.shutdown(),
        }
    }
}

/// adapter-smol with its tasks on the executor `spawner` stands for (smol's or async-std's).
fn start_smol(
    spawner: impl adapter_smol::Spawn + Clone,
    options: NodeOptions,
    store: KvStore,
    tcp: TcpConfig,
) -> Result<Node, String> {
    let listen = tcp.listen;
    let (tx, rx) = async_channel::bounded(16 * 1024);
    let transport =
        adapter_smol::transport::TcpTransport::start_with(tcp, None, tx, spawner.clone());
    let transport = Arc::new(smol::block_on(transport).map_err(listen_error(listen))?);
    let node = adapter_smol::start_with(
        options,
        machine(store),
        Arc::clone(&transport),
        rx,
        &spawner,
    )
    .map_err(|e| e.to_string())?;
    Ok(Node::Smol { node, transport })
}
