//! Runs a [`raft_proto`] node on smol's building blocks — async-io timers and sockets,
//! async-channel queues, disk writes on a dedicated thread — so that it runs under smol and,
//! spawned with async-std's executor, under async-std too. It does not depend on tokio.
//!
//! Everything but the waiting and the sockets — storage, the step-and-execute driver, the
//! state machine trait, the errors — comes from [`adapter_common`], shared with
//! `adapter-thread` and `adapter-tokio`.
//!
//! # Example: a single-node cluster on smol
//!
//! Under async-std (or any other executor), start the transport with
//! [`TcpTransport::start_with`](transport::TcpTransport::start_with) and the node with
//! [`start_with`], passing `|f| { async_std::task::spawn(f); }` as the spawner; the rest is
//! the same.
//!
//! ```
//! use adapter_smol::transport::TcpTransport;
//! use adapter_smol::{NodeOptions, ProposeError, StateMachine, TcpConfig};
//!
//! struct Counter(u64);
//!
//! impl StateMachine for Counter {
//!     fn apply(&mut self, _index: u64, command: &[u8]) -> Vec<u8> {
//!         self.0 += command.len() as u64;
//!         self.0.to_le_bytes().to_vec()
//!     }
//!     fn snapshot(&self) -> Vec<u8> {
//!         self.0.to_le_bytes().to_vec()
//!     }
//!     fn restore(&mut self, snapshot: &[u8]) {
//!         self.0 = snapshot.try_into().map(u64::from_le_bytes).unwrap_or(0);
//!     }
//! }
//!
//! smol::block_on(async {
//!     let dir = std::env::temp_dir().join(format!("adapter-smol-doc-{}", std::process::id()));
//!     let (inbound_tx, inbound_rx) = async_channel::bounded(1024);
//!     let tcp = TcpConfig::new(7, 1, "127.0.0.1:0".parse().unwrap(), Default::default());
//!     let transport = TcpTransport::start(tcp, inbound_tx).await.unwrap();
//!     let options = NodeOptions::new(1, vec![1], &dir);
//!     let node = adapter_smol::start(options, Counter(0), transport, inbound_rx).unwrap();
//!     let answer = loop {
//!         match node.propose(b"hello".to_vec()).await {
//!             Err(ProposeError::NotLeader { .. }) => {
//!                 smol::Timer::after(std::time::Duration::from_millis(20)).await;
//!             }
//!             other => break other.expect("committed"),
//!         }
//!     };
//!     assert_eq!(answer, 5u64.to_le_bytes());
//!     node.shutdown().await;
//!     std::fs::remove_dir_all(&dir).ok();
//! });
//! ```

mod node;
pub mod transport;

pub use adapter_common::storage;
pub use adapter_common::{
    MemoryNetwork, NodeOptions, ProposeError, ReadError, StartError, StateMachine, Status,
    TcpConfig, TransferError, Transport, TransportStats, WaitError,
};
pub use node::{start, start_with, BoxFuture, NodeHandle, SmolSpawner, Spawn};
pub use raft_proto::{
    Config, Index, Membership, MembershipChange, Message, NodeId, ReadRefusal, Role, Term,
    TransferRefusal,
};

/// How many peer messages a node's inbound queue holds (see [`inbound_channel`]). When it is
/// full the transport's readers wait, which slows the peers' connections down instead of
/// growing memory.
pub const INBOUND_CAPACITY: usize = 4096;

/// The transport's end of a node's inbound queue: peers' messages go in here.
pub type InboundSender = async_channel::Sender<Message>;

/// The node's end of its inbound queue, handed to [`start`].
pub type InboundReceiver = async_channel::Receiver<Message>;

/// A node's inbound queue (an async-channel bounded channel of [`INBOUND_CAPACITY`] messages): give the sender to the
/// transport and the receiver to [`start`]. Any channel of these types works; this one needs
/// no channel crate in your dependencies.
pub fn inbound_channel() -> (InboundSender, InboundReceiver) {
    async_channel::bounded(INBOUND_CAPACITY)
}
