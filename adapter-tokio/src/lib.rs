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
    TcpConfig, TransferError, Transport,
};
pub use node::{start, NodeHandle};
