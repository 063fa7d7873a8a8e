//! A deterministic, sans-IO implementation of the Raft consensus algorithm.
//!
//! The core is a pure state machine: a [`Node`] takes [`Event`]s (time passing, a message from
//! a peer, a proposal, a durability acknowledgement) through [`Node::step`] and answers with
//! [`Action`]s (persist, send, apply, answer the proposal). It reads no clock, opens no file or
//! socket, starts no thread and draws randomness only from the seed in its [`Config`]: the
//! same configuration and events always give the same actions. The rules an embedding must
//! follow when carrying out the actions are in the [`io`] module, snapshots included: the
//! application hands the core a snapshot ([`Event::SnapshotTaken`]), the core compacts its log
//! and sends the snapshot, in chunks, to followers that need entries it no longer has.
//!
//! The cluster's membership changes through the log ([`Event::ChangeMembership`], joint
//! consensus when the voters change, learners that receive the log without voting; see
//! [`Membership`]); elections and commitment need a majority of every configuration in force.
//! Pre-vote and check-quorum ([`Config::pre_vote`], [`Config::check_quorum`]) keep a node that
//! was cut off, or removed, from disrupting the cluster.
//!
//! Reads need no log entry: [`Event::Read`] is answered by [`Action::ReadReady`] once the read
//! index is confirmed by a quorum (ReadIndex, batched across concurrent reads), covered by the
//! leader's lease ([`Config::lease_reads`], opt-in, with a stated clock assumption), or given
//! by the leader to a follower; the action comes after the entries up to that index were
//! applied. [`Event::TransferLeadership`] hands leadership to a caught-up voter without an
//! election timeout of silence.
//!
//! # Example: a single-node cluster driven by hand
//!
//! ```
//! use raft_proto::{Action, Config, Event, Node, ProposalOutcome};
//!
//! let mut node = Node::new(Config::new(1, vec![1]), 0).unwrap();
//! let mut storage = Vec::new();
//! let mut applied = Vec::new();
//! let mut now = 0;
//! let mut events = vec![Event::Tick];
//! let mut proposed = false;
//! while applied.is_empty() {
//!     now = now.max(node.next_deadline());
//!     let event = events.pop().unwrap_or(Event::Tick);
//!     for action in node.step(now, event) {
//!         match action {
//!             // A real embedding writes and syncs here, then acknowledges.
//!             Action::Persist(write) => {
//!                 storage.push(write.clone());
//!                 events.push(Event::Persisted { seq: write.seq });
//!             }
//!             Action::Send(_) => unreachable!("no peers"),
//!             Action::Apply { entries, .. } => applied.extend(entries),
//!             Action::ProposalOutcome(outcome) => {
//!                 assert!(matches!(outcome, ProposalOutcome::Accepted { first_index: 1, .. }))
//!             }
//!             _ => {}
//!         }
//!     }
//!     if node.is_leader() && !proposed {
//!         events.push(Event::Propose(vec![b"hello".to_vec().into()]));
//!         proposed = true;
//!     }
//! }
//! assert_eq!(&applied[0].data[..], b"hello");
//! ```
//!
//! # Features
//!
//! - `std` (default): nothing in the core needs it; without it the crate is `no_std` + `alloc`.
//! - `serde`: serde derives on messages, entries and durable state.
//! - `codec`: the byte formats every adapter shares, as pure functions: `wire` frames for
//!   the network and `record`s for the disk log (module docs name the exact layouts).
//! - `sim`: the deterministic cluster simulator and the lab scenarios 2A–2D (module `sim`).
//! - `bug-injection`: test-only switches for deliberate bugs, to prove the simulator catches them.

#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;
#[cfg(feature = "std")]
extern crate std;

mod config;
pub mod io;
mod log;
mod membership;
mod message;
mod node;
mod progress;
mod rng;
pub mod sessions;
mod types;

#[cfg(feature = "codec")]
pub mod record;
#[cfg(feature = "sim")]
pub mod sim;
#[cfg(feature = "codec")]
pub mod wire;

#[cfg(feature = "bug-injection")]
pub use config::InjectedBugs;
pub use config::{Config, ConfigError};
pub use io::{
    Action, Event, MembershipOutcome, Persist, ProposalOutcome, ProposalRefusal, ReadRefusal,
    SnapshotChunkRequest, TransferOutcome, TransferRefusal,
};
pub use membership::{Membership, MembershipChange, MembershipError};
pub use message::{AppendOutcome, Message, MessageBody};
pub use node::{Node, NodeStats, StartError};
pub use types::{
    DurableState, Entry, EntryKind, HardState, Index, Instant, NodeId, Payload, Role, Snapshot,
    SnapshotMeta, Term,
};
