//! Runs a [`raft_proto`] node on plain OS threads: real timers, crash-safe file storage
//! ([`storage`]), TCP or in-memory transport ([`transport`]), and a blocking handle for the
//! application ([`NodeHandle`]). No async runtime.
//!
//! The node thread feeds the core every input that is ready and carries out its actions,
//! keeping the contract of [`raft_proto::io`]: persists go, in order, to a storage thread that
//! writes each batch with one write and one fsync and only then acknowledges it; messages go
//! to the transport at once; committed entries go to your [`StateMachine`], whose answers
//! complete the proposals.
//!
//! The handle's calls have the names and the arguments of `adapter-tokio`'s and
//! `adapter-smol`'s async ones, and block instead of awaiting: each returns once the node
//! answers, which it does within [`NodeOptions::proposal_timeout`] (proposals, membership
//! changes) or an election timeout (reads, transfers); only
//! [`wait_applied`](NodeHandle::wait_applied) waits as long as it takes. Each also has a
//! `_timeout` variant (`propose_timeout`, `read_index_timeout`, …) that gives up sooner, as
//! `recv` and `recv_timeout` do on a channel.
//!
//! # Example: a single-node cluster
//!
//! ```
//! use std::time::Duration;
//! use adapter_thread::transport::MemoryNetwork;
//! use adapter_thread::{NodeOptions, ProposeError, StateMachine};
//!
//! /// Counts the bytes of every command.
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
//! let dir = std::env::temp_dir().join(format!("adapter-thread-doc-{}", std::process::id()));
//! let network = MemoryNetwork::new();
//! let (inbound_tx, inbound_rx) = crossbeam_channel::unbounded();
//! let options = NodeOptions::new(1, vec![1], &dir);
//! let inbox = move |message| inbound_tx.try_send(message).is_ok();
//! let node = adapter_thread::start(options, Counter(0), network.endpoint(1, inbox), inbound_rx)?;
//! // The node elects itself after an election timeout; until then it is not the leader.
//! let answer = loop {
//!     match node.propose(b"hello".to_vec()) {
//!         Err(ProposeError::NotLeader { .. }) => std::thread::sleep(Duration::from_millis(20)),
//!         other => break other.expect("committed"),
//!     }
//! };
//! assert_eq!(answer, 5u64.to_le_bytes());
//! // A linearizable read: once it returns, the state machine holds every acknowledged write.
//! let index = node.read_index().expect("confirmed");
//! assert!(index >= 1);
//! node.shutdown();
//! # std::fs::remove_dir_all(&dir).ok();
//! # Ok::<(), adapter_thread::StartError>(())
//! ```

mod runtime;
pub mod transport;

pub use adapter_common::storage;
pub use adapter_common::{
    MemoryNetwork, NodeOptions, ProposeError, ReadError, StartError, StateMachine, Status,
    TcpConfig, TransferError, Transport, TransportStats, WaitError,
};
pub use raft_proto::{
    Config, Index, Membership, MembershipChange, Message, NodeId, ReadRefusal, Role, Term,
    TransferRefusal,
};
pub use runtime::{start, NodeHandle};

/// How many peer messages a node's inbound queue holds (see [`inbound_channel`]). When it is
/// full the transport's readers wait, which slows the peers' connections down instead of
/// growing memory.
pub const INBOUND_CAPACITY: usize = 4096;

/// The transport's end of a node's inbound queue: peers' messages go in here.
pub type InboundSender = crossbeam_channel::Sender<Message>;

/// The node's end of its inbound queue, handed to [`start`].
pub type InboundReceiver = crossbeam_channel::Receiver<Message>;

/// A node's inbound queue (a crossbeam bounded channel of [`INBOUND_CAPACITY`] messages): give the sender to the
/// transport and the receiver to [`start`]. Any channel of these types works; this one needs
/// no channel crate in your dependencies.
pub fn inbound_channel() -> (InboundSender, InboundReceiver) {
    crossbeam_channel::bounded(INBOUND_CAPACITY)
}
