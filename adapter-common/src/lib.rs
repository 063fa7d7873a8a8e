//! What every `raft-proto` adapter shares, whatever its runtime: crash-safe file storage
//! ([`storage`]) and the thread that writes it ([`writer`]), the step-and-execute logic with
//! the state machine trait and the errors ([`driver`]), and the transports' common parts
//! ([`net`]). An adapter adds only its loop (wait for the next input or deadline, feed the
//! [`Driver`], carry out the [`Effects`]) and its sockets, in its runtime's idiom.
//!
//! # Example: the smallest adapter loop (one node, storage written inline)
//!
//! ```
//! use std::sync::mpsc;
//! use adapter_common::storage::FileStorage;
//! use adapter_common::{Driver, Effects, NodeOptions, StateMachine};
//!
//! struct Echo;
//! impl StateMachine for Echo {
//!     fn apply(&mut self, _index: u64, command: &[u8]) -> Vec<u8> { command.to_vec() }
//!     fn snapshot(&self) -> Vec<u8> { Vec::new() }
//!     fn restore(&mut self, _snapshot: &[u8]) {}
//! }
//!
//! let dir = std::env::temp_dir().join(format!("adapter-common-doc-{}", std::process::id()));
//! let (mut storage, durable, _report) = FileStorage::open(&dir).unwrap();
//! let mut options = NodeOptions::new(1, vec![1], &dir);
//! // Elect quickly: a lone node becomes leader after its first election timeout.
//! options.raft.election_timeout_min = 2;
//! options.raft.election_timeout_max = 3;
//! options.raft.heartbeat_interval = 1;
//! let mut driver = Driver::new(&options, Echo, durable).unwrap();
//! let (answer_tx, answer_rx) = mpsc::channel();
//! let mut effects = Effects::default();
//! let mut proposed = false;
//! let answer = loop {
//!     std::thread::sleep(driver.time_to_deadline().min(std::time::Duration::from_millis(5)));
//!     if driver.status().role == raft_proto::Role::Leader && !proposed {
//!         let reply = answer_tx.clone();
//!         driver.propose(b"hi".to_vec(), Box::new(move |a| { let _ = reply.send(a); }), &mut effects);
//!         proposed = true;
//!     }
//!     driver.flush(&mut effects);
//!     // A real adapter hands the writes to a `writer::StorageWorker` and the messages to
//!     // its transport; here the single node writes inline and has nobody to talk to.
//!     let writes = std::mem::take(&mut effects.writes);
//!     if let Some(last) = writes.last().map(|w| w.seq) {
//!         storage.persist(&writes).unwrap();
//!         driver.on_persisted(last, &mut effects);
//!     }
//!     if let Ok(answer) = answer_rx.try_recv() {
//!         break answer;
//!     }
//! };
//! assert_eq!(answer.unwrap(), b"hi");
//! # drop(storage);
//! # std::fs::remove_dir_all(&dir).ok();
//! ```

mod applier;
#[cfg(feature = "conformance")]
pub mod conformance;
pub mod driver;
#[cfg(feature = "fault-proxy")]
pub mod faults;
pub mod floor;
pub mod metrics;
pub mod net;
pub mod sessions;
pub mod snapfile;
pub mod storage;
#[cfg(feature = "tls")]
pub mod tls;
pub mod writer;

pub use applier::ApplierReport;
pub use driver::{
    member_address, ChangeReply, Command, Driver, Effects, Input, NodeOptions, ProposeError,
    ReadError, ReadReply, Reply, StartError, StateMachine, Status, TransferError, TransferReply,
    WaitError, WaitReply,
};
pub use net::{
    check_hello, inbound_size, unreachable_voters, Inbox, MemoryNetwork, MemoryTransport, PeerBook,
    PeerLink, PeerReader, PeerWriter, Refusal, TcpConfig, Transport, TransportStats,
};
