//! Exactly-once commands through client sessions (Raft thesis §6.3), as a wrapper any
//! [`StateMachine`] can use.
//!
//! A proposal that ends in [`ProposeError::Lost`](crate::ProposeError::Lost),
//! [`Indeterminate`](crate::ProposeError::Indeterminate) or
//! [`TimedOut`](crate::ProposeError::TimedOut) may or may not have been applied. Retrying a
//! command that is not idempotent (an increment, an append) can then apply it twice. With
//! sessions, a client registers once (a log entry whose index becomes its id), numbers its
//! commands 1, 2, 3, … and retries a command with the same bytes: [`Sessions`] applies each
//! (client, number) at most once and answers a retry with the answer of the first application.
//!
//! The table of sessions is part of the replicated state (it is in every snapshot) and is
//! bounded: when more than `max_clients` sessions exist, the one idle for the most log entries
//! is expired, on every node alike, since the decision depends on the log alone. A command of
//! an expired or unknown session is refused with [`SessionError::Expired`], never applied: the
//! client must register again, and must then treat its command in flight as of unknown
//! outcome.
//!
//! A client has one command in flight at a time (the next number once the previous one has
//! an answer), as in the thesis; a number below the last one applied is refused as
//! [`SessionError::Stale`] (a delayed duplicate).
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

use std::collections::BTreeMap;

use raft_proto::Index;

use crate::StateMachine;

/// A command applied as is, outside any session.
const PLAIN: u8 = 0;
/// A client's registration: the answer is its session id.
const REGISTER: u8 = 1;
/// A numbered command of a session.
const IN_SESSION: u8 = 2;

/// The answer's first byte: the command's answer follows.
const OK: u8 = 0;
/// The answer's first byte: the session is expired or unknown.
const EXPIRED: u8 = 1;
/// The answer's first byte: the number is below the last one applied.
const STALE: u8 = 2;
/// The answer's first byte: the command's bytes are not a session encoding.
const MALFORMED: u8 = 3;

/// The snapshot format's version byte.
const SNAPSHOT_VERSION: u8 = 1;

/// Why a command of a session was not applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SessionError {
    /// The session is unknown or was expired: register again. The command was not applied
    /// now; whether an earlier attempt of it was is unknown.
    #[error("the client session is expired or unknown")]
    Expired,
    /// A number below the last one the session applied: a delayed duplicate, not applied.
    #[error("a command older than the session's last one")]
    Stale,
    /// The bytes were not produced by [`ClientSession`] or [`plain`].
    #[error("not a session-encoded command")]
    Malformed,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Client {
    /// The highest number applied.
    last_seq: u64,
    /// Its answer, for a retry.
    answer: Vec<u8>,
    /// The log index of the session's last command (or registration).
    active_at: Index,
}

/// A [`StateMachine`] wrapper that applies each numbered command of a client session at most
/// once (see the [module documentation](self)). Every command proposed to a node running it
/// must be encoded by [`ClientSession`] or [`plain`], and every answer decoded by
/// [`decode_answer`].
#[derive(Debug)]
pub struct Sessions<S> {
    inner: S,
    clients: BTreeMap<u64, Client>,
    /// The sessions by the index they were last active at: the first is expired first.
    by_activity: BTreeMap<Index, u64>,
    max_clients: usize,
}

impl<S> Sessions<S> {
    /// Wraps `inner`, keeping at most `max_clients` sessions (at least 1).
    pub fn new(inner: S, max_clients: usize) -> Self {
        Self {
            inner,
            clients: BTreeMap::new(),
            by_activity: BTreeMap::new(),
            max_clients: max_clients.max(1),
        }
    }

    /// The wrapped state machine.
    pub fn inner(&self) -> &S {
        &self.inner
    }

    /// How many sessions are open.
    pub fn sessions(&self) -> usize {
        self.clients.len()
    }

    fn touch(&mut self, id: u64, index: Index) {
        if let Some(client) = self.clients.get_mut(&id) {
            self.by_activity.remove(&client.active_at);
            client.active_at = index;
            self.by_activity.insert(index, id);
        }
    }

    fn register(&mut self, index: Index) -> Vec<u8> {
        self.clients.insert(
            index,
            Client {
                last_seq: 0,
                answer: Vec::new(),
                active_at: index,
            },
        );
        self.by_activity.insert(index, index);
        while self.clients.len() > self.max_clients {
            let Some((_, oldest)) = self.by_activity.pop_first() else {
                break;
            };
            self.clients.remove(&oldest);
        }
        answer(OK, &index.to_le_bytes())
    }
}

fn answer(status: u8, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + body.len());
    out.push(status);
    out.extend_from_slice(body);
    out
}

fn take_u64(bytes: &[u8]) -> Option<(u64, &[u8])> {
    let (head, rest) = bytes.split_at_checked(8)?;
    Some((u64::from_le_bytes(head.try_into().ok()?), rest))
}

impl<S: StateMachine> StateMachine for Sessions<S> {
    fn apply(&mut self, index: Index, command: &[u8]) -> Vec<u8> {
        let Some((&tag, rest)) = command.split_first() else {
            return answer(MALFORMED, &[]);
        };
        match tag {
            PLAIN => answer(OK, &self.inner.apply(index, rest)),
            REGISTER if rest.is_empty() => self.register(index),
            IN_SESSION => {
                let Some((id, rest)) = take_u64(rest) else {
                    return answer(MALFORMED, &[]);
                };
                let Some((seq, command)) = take_u64(rest) else {
                    return answer(MALFORMED, &[]);
                };
                let Some(client) = self.clients.get(&id) else {
                    return answer(EXPIRED, &[]);
                };
                let reply = if seq == client.last_seq && seq > 0 {
                    answer(OK, &client.answer)
                } else if seq < client.last_seq || seq == 0 {
                    answer(STALE, &[])
                } else {
                    let result = self.inner.apply(index, command);
                    let reply = answer(OK, &result);
                    if let Some(client) = self.clients.get_mut(&id) {
                        client.last_seq = seq;
                        client.answer = result;
                    }
                    reply
                };
                self.touch(id, index);
                reply
            }
            _ => answer(MALFORMED, &[]),
        }
    }

    fn snapshot(&self) -> Vec<u8> {
        let mut out = vec![SNAPSHOT_VERSION];
        out.extend_from_slice(&(self.clients.len() as u64).to_le_bytes());
        for (id, client) in &self.clients {
            out.extend_from_slice(&id.to_le_bytes());
            out.extend_from_slice(&client.last_seq.to_le_bytes());
            out.extend_from_slice(&client.active_at.to_le_bytes());
            out.extend_from_slice(&(client.answer.len() as u64).to_le_bytes());
            out.extend_from_slice(&client.answer);
        }
        out.extend_from_slice(&self.inner.snapshot());
        out
    }

    /// Restores the sessions and the wrapped state. Bytes this wrapper did not write (they
    /// cannot come from a node running it) restore no session and hand everything to the
    /// wrapped state machine.
    fn restore(&mut self, snapshot: &[u8]) {
        self.clients.clear();
        self.by_activity.clear();
        let parsed = (|| {
            let (&version, mut rest) = snapshot.split_first()?;
            if version != SNAPSHOT_VERSION {
                return None;
            }
            let (count, after) = take_u64(rest)?;
            rest = after;
            let mut clients = Vec::new();
            for _ in 0..count {
                let (id, after) = take_u64(rest)?;
                let (last_seq, after) = take_u64(after)?;
                let (active_at, after) = take_u64(after)?;
                let (len, after) = take_u64(after)?;
                let len = usize::try_from(len).ok()?;
                let (answer, after) = after.split_at_checked(len)?;
                rest = after;
                clients.push((
                    id,
                    Client {
                        last_seq,
                        answer: answer.to_vec(),
                        active_at,
                    },
                ));
            }
            Some((clients, rest))
        })();
        match parsed {
            Some((clients, inner)) => {
                for (id, client) in clients {
                    self.by_activity.insert(client.active_at, id);
                    self.clients.insert(id, client);
                }
                self.inner.restore(inner);
            }
            None => self.inner.restore(snapshot),
        }
    }
}

/// A client's side of a session: registers once, then numbers its commands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientSession {
    id: u64,
    next_seq: u64,
}

impl ClientSession {
    /// The command that registers a new session: propose it, then build the session from its
    /// answer with [`from_registration`](Self::from_registration). A registration that ends
    /// in doubt may simply be proposed again (an unused session expires).
    pub fn register() -> Vec<u8> {
        vec![REGISTER]
    }

    /// The session a registration's answer names (`None` if the bytes are not one).
    pub fn from_registration(answer: &[u8]) -> Option<Self> {
        let body = decode_answer(answer).ok()?;
        let id = u64::from_le_bytes(body.as_slice().try_into().ok()?);
        Some(Self { id, next_seq: 1 })
    }

    /// A session resumed with its id and the next number to use (for a client that keeps its
    /// session across restarts).
    pub fn resume(id: u64, next_seq: u64) -> Self {
        Self { id, next_seq }
    }

    /// The session's id (the log index of its registration).
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The number the next command gets.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Encodes `command` with the session's next number. Propose the returned bytes; if the
    /// outcome is in doubt (lost, indeterminate, timed out, no leader), propose the same bytes
    /// again, as often as needed: the command is applied once. Call this again only for the
    /// next command, once this one has an answer.
    pub fn command(&mut self, command: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(17 + command.len());
        out.push(IN_SESSION);
        out.extend_from_slice(&self.id.to_le_bytes());
        out.extend_from_slice(&self.next_seq.to_le_bytes());
        out.extend_from_slice(command);
        self.next_seq += 1;
        out
    }
}

/// Encodes a command applied outside any session (no protection against a retry).
pub fn plain(command: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + command.len());
    out.push(PLAIN);
    out.extend_from_slice(command);
    out
}

/// The wrapped state machine's answer to a command, or why it was not applied.
pub fn decode_answer(answer: &[u8]) -> Result<Vec<u8>, SessionError> {
    match answer.split_first() {
        Some((&OK, body)) => Ok(body.to_vec()),
        Some((&EXPIRED, _)) => Err(SessionError::Expired),
        Some((&STALE, _)) => Err(SessionError::Stale),
        _ => Err(SessionError::Malformed),
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

    fn registered(machine: &mut Sessions<Log>, index: Index) -> ClientSession {
        ClientSession::from_registration(&machine.apply(index, &ClientSession::register()))
            .expect("a registration")
    }

    #[test]
    fn a_retried_command_is_applied_once_and_answered_alike() {
        let mut machine = Sessions::new(Log::default(), 4);
        let mut session = registered(&mut machine, 1);
        assert_eq!(session.id(), 1);
        let a = session.command(b"a");
        let first = machine.apply(2, &a);
        assert_eq!(machine.apply(3, &a), first);
        assert_eq!(machine.apply(7, &a), first);
        assert_eq!(machine.inner().0, vec![b"a".to_vec()]);
        let b = session.command(b"b");
        assert_eq!(
            decode_answer(&machine.apply(8, &b)).unwrap(),
            2u64.to_le_bytes()
        );
        // The first command again, delayed: not applied.
        assert_eq!(
            decode_answer(&machine.apply(9, &a)),
            Err(SessionError::Stale)
        );
        assert_eq!(machine.inner().0.len(), 2);
    }

    #[test]
    fn the_least_recently_active_session_expires_and_is_refused() {
        let mut machine = Sessions::new(Log::default(), 2);
        let mut one = registered(&mut machine, 1);
        let mut two = registered(&mut machine, 2);
        let x = one.command(b"x");
        machine.apply(3, &x);
        // A third session expires the least recently active: two (active at 2), not one.
        let mut three = registered(&mut machine, 4);
        assert_eq!(machine.sessions(), 2);
        let y = two.command(b"y");
        assert_eq!(
            decode_answer(&machine.apply(5, &y)),
            Err(SessionError::Expired)
        );
        assert!(decode_answer(&machine.apply(6, &one.command(b"z"))).is_ok());
        assert!(decode_answer(&machine.apply(7, &three.command(b"w"))).is_ok());
        assert_eq!(
            machine.inner().0,
            vec![b"x".to_vec(), b"z".to_vec(), b"w".to_vec()]
        );
    }

    #[test]
    fn sessions_survive_a_snapshot() {
        let mut machine = Sessions::new(Log::default(), 8);
        let mut session = registered(&mut machine, 1);
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
    fn malformed_commands_and_snapshots_do_not_panic() {
        let mut machine = Sessions::new(Log::default(), 8);
        for bytes in [
            &[][..],
            &[9],
            &[IN_SESSION, 1, 2],
            &[REGISTER, 0],
            &[IN_SESSION; 12],
        ] {
            assert!(decode_answer(&machine.apply(1, bytes)).is_err());
        }
        assert!(machine.inner().0.is_empty());
        for bytes in [
            &[][..],
            &[SNAPSHOT_VERSION, 255, 255, 255, 255, 255, 255, 255, 255],
            &[7, 1],
        ] {
            machine.restore(bytes);
            assert_eq!(machine.sessions(), 0);
        }
        assert!(decode_answer(&machine.apply(2, &plain(b"p"))).is_ok());
    }
}
