//! Exactly-once commands through client sessions (Raft thesis §6.3), as a wrapper any
//! [`StateMachine`] can use: [`Sessions`] runs the core's [`SessionTable`] in front of the
//! application's state machine and keeps the table in every snapshot. The protocol, the
//! client's side and the expiry rule are documented in [`raft_proto::sessions`].
//!
//! A proposal that ends in [`ProposeError::Lost`](crate::ProposeError::Lost),
//! [`Indeterminate`](crate::ProposeError::Indeterminate) or
//! [`TimedOut`](crate::ProposeError::TimedOut) may or may not have been applied: propose the
//! same session-encoded bytes again, and the command is applied once.
//!
//! # Example
//!
//! ```
//! use adapter_common::sessions::{decode_answer, ClientSession, Sessions};
//! use adapter_common::StateMachine;
//!
//! #[derive(Default)]
//! struct Counter(u64);
//! impl StateMachine for Counter {
//!     fn apply(&mut self, _index: u64, command: &[u8]) -> Vec<u8> {
//!         self.0 += command.len() as u64;
//!         self.0.to_le_bytes().to_vec()
//!     }
//!     fn snapshot(&self) -> Vec<u8> { self.0.to_le_bytes().to_vec() }
//!     fn restore(&mut self, s: &[u8]) { self.0 = s.try_into().map(u64::from_le_bytes).unwrap_or(0) }
//! }
//!
//! // On every node: the wrapped state machine.
//! let mut machine = Sessions::new(Counter::default(), 10_000);
//! // A client registers (the bytes go through `propose`; here they are applied directly).
//! let answer = machine.apply(7, &ClientSession::register());
//! let mut session = ClientSession::from_registration(&answer).unwrap();
//! let add = session.command(b"abc");
//! let first = decode_answer(&machine.apply(8, &add)).unwrap();
//! // The answer was lost: the client retries the same bytes, and nothing is applied twice.
//! let retry = decode_answer(&machine.apply(9, &add)).unwrap();
//! assert_eq!(first, retry);
//! assert_eq!(machine.inner().0, 3);
//! ```

pub use raft_proto::sessions::{decode_answer, plain, ClientSession, SessionError, SessionTable};
use raft_proto::Index;

use crate::StateMachine;

/// A [`StateMachine`] wrapper that applies each numbered command of a client session at most
/// once (see the [module documentation](self)). Every command proposed to a node running it
/// must be encoded by [`ClientSession`] or [`plain`], and every answer decoded by
/// [`decode_answer`].
#[derive(Debug)]
pub struct Sessions<S> {
    inner: S,
    table: SessionTable,
    max_clients: usize,
}

impl<S> Sessions<S> {
    /// Wraps `inner`, keeping at most `max_clients` sessions (at least 1).
    pub fn new(inner: S, max_clients: usize) -> Self {
        Self {
            inner,
            table: SessionTable::new(max_clients),
            max_clients,
        }
    }

    /// The wrapped state machine.
    pub fn inner(&self) -> &S {
        &self.inner
    }

    /// How many sessions are open.
    pub fn sessions(&self) -> usize {
        self.table.len()
    }
}

impl<S: StateMachine> StateMachine for Sessions<S> {
    fn apply(&mut self, index: Index, command: &[u8]) -> Vec<u8> {
        let inner = &mut self.inner;
        self.table
            .apply(index, command, |command| inner.apply(index, command))
    }

    fn snapshot(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.table.encode_into(&mut out);
        out.extend_from_slice(&self.inner.snapshot());
        out
    }

    /// Restores the sessions and the wrapped state. Bytes this wrapper did not write (they
    /// cannot come from a node running it) restore no session and hand everything to the
    /// wrapped state machine.
    fn restore(&mut self, snapshot: &[u8]) {
        match SessionTable::decode(snapshot, self.max_clients) {
            Some((table, inner)) => {
                self.table = table;
                self.inner.restore(inner);
            }
            None => {
                self.table = SessionTable::new(self.max_clients);
                self.inner.restore(snapshot);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Appends each command; answers how many it holds.
    #[derive(Debug, Default)]
    struct Log(Vec<Vec<u8>>);

    impl StateMachine for Log {
        fn apply(&mut self, _index: Index, command: &[u8]) -> Vec<u8> {
            self.0.push(command.to_vec());
            (self.0.len() as u64).to_le_bytes().to_vec()
        }
        fn snapshot(&self) -> Vec<u8> {
            self.0.concat()
        }
        fn restore(&mut self, snapshot: &[u8]) {
            self.0 = snapshot.chunks(1).map(<[u8]>::to_vec).collect();
        }
    }

    #[test]
    fn sessions_survive_a_snapshot() {
        let mut machine = Sessions::new(Log::default(), 8);
        let mut session =
            ClientSession::from_registration(&machine.apply(1, &ClientSession::register()))
                .expect("registered");
        let a = session.command(b"a");
        let first = machine.apply(2, &a);
        let snapshot = machine.snapshot();
        let mut other = Sessions::new(Log::default(), 8);
        other.restore(&snapshot);
        assert_eq!(other.snapshot(), snapshot);
        assert_eq!(other.apply(3, &a), first);
        assert_eq!(other.inner().0, vec![b"a".to_vec()]);
    }

    #[test]
    fn a_snapshot_without_sessions_restores_the_wrapped_state() {
        let mut machine = Sessions::new(Log::default(), 8);
        machine.restore(b"xy");
        assert_eq!(machine.sessions(), 0);
        assert_eq!(machine.inner().0, vec![b"x".to_vec(), b"y".to_vec()]);
        assert!(decode_answer(&machine.apply(2, &plain(b"p"))).is_ok());
    }
}
