//! Runs a [`raft_proto`] node as a tokio task: tokio timers and TCP, disk writes and syncs on
//! a dedicated thread (with the same group commit as every adapter), `propose(bytes).await`
//! resolving when committed and applied.
//!
//! Everything but the waiting and the sockets — storage, the step-and-execute driver, the
//! state machine trait, the errors — comes from [`adapter_common`], shared with
//! `adapter-thread` and `adapter-smol`: switching runtime changes the crate you call `start`
//! from, not your state machine or your options.
//!
//! # Example: a single-node cluster
//!
//! ```
//! use adapter_tokio::transport::TcpTransport;
//! use adapter_tokio::{NodeOptions, ProposeError, StateMachine, TcpConfig};
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
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! let dir = std::env::temp_dir().join(format!("adapter-tokio-doc-{}", std::process::id()));
//! let (inbound_tx, inbound_rx) = tokio::sync::mpsc::channel(1024);
//! let tcp = TcpConfig::new(7, 1, "127.0.0.1:0".parse().unwrap(), Default::default());
//! let transport = TcpTransport::start(tcp, inbound_tx).await.unwrap();
//! let node = adapter_tokio::start(NodeOptions::new(1, vec![1], &dir), Counter(0), transport, inbound_rx)
//!     .unwrap();
//! let answer = loop {
//!     match node.propose(b"hello".to_vec()).await {
//!         Err(ProposeError::NotLeader { .. }) => {
//!             tokio::time::sleep(std::time::Duration::from_millis(20)).await
//!         }
//!         other => break other.expect("committed"),
//!     }
//! };
//! assert_eq!(answer, 5u64.to_le_bytes());
//! node.shutdown().await;
//! # std::fs::remove_dir_all(&dir).ok();
//! # });
//! ```

mod node;
pub mod transport;

pub use adapter_common::storage;
pub use adapter_common::{
    MemoryNetwork, NodeOptions, ProposeError, ReadError, StartError, StateMachine, Status,
    TcpConfig, TransferError, Transport, TransportStats, WaitError,
};
pub use node::{start, NodeHandle};
pub use raft_proto::{
    Config, Index, Membership, MembershipChange, Message, NodeId, ReadRefusal, Role, Term,
    TransferRefusal,
};

/// How many peer messages a node's inbound queue holds (see [`inbound_channel`]). When it is
/// full the transport's readers wait, which slows the peers' connections down instead of
/// growing memory.
pub const INBOUND_CAPACITY: usize = 4096;

/// The transport's end of a node's inbound queue: peers' messages go in here.
pub type InboundSender = tokio::sync::mpsc::Sender<Message>;

/// The node's end of its inbound queue, handed to [`start`].
pub type InboundReceiver = tokio::sync::mpsc::Receiver<Message>;

/// A node's inbound queue (a tokio bounded channel of [`INBOUND_CAPACITY`] messages): give the sender to the
/// transport and the receiver to [`start`]. Any channel of these types works; this one needs
/// no channel crate in your dependencies.
pub fn inbound_channel() -> (InboundSender, InboundReceiver) {
    tokio::sync::mpsc::channel(INBOUND_CAPACITY)
}
