//! Exactly-once commands through client sessions (Raft thesis §6.3): the replicated table
//! of sessions, and the client's side.
//!
//! A proposal whose outcome is in doubt (its leader was lost, an answer timed out, a snapshot
//! covered it) may or may not have been applied. Retrying a command that is not idempotent
//! can then apply it twice. With sessions, a client registers once (a log entry whose index
//! becomes its id), numbers its commands 1, 2, 3, … and retries a command with the same
//! bytes: the [`SessionTable`], part of the replicated state, applies each (client, number) at
//! most once and answers a retry with the answer of the first application.
//!
//! The table is bounded: when more than `max_clients` sessions exist, the one idle for the
//! most log entries is expired, on every node alike, since the decision depends on the log
//! alone. A command of an expired or unknown session is refused with
//! [`SessionError::Expired`], never applied: the client must register again, and treat its
//! command in flight as of unknown outcome. A client has one command in flight at a time; a
//! number below the last one applied is refused as [`SessionError::Stale`] (a delayed
//! duplicate).
//!
//! The adapters wrap any state machine in it (`adapter_common::sessions::Sessions`); the
//! simulator's key-value model runs its clients through it.
//!
//! ```
//! use raft_proto::sessions::{decode_answer, ClientSession, SessionTable};
//!
//! let mut table = SessionTable::new(100);
//! let mut total = 0u64;
//! let mut add = |command: &[u8]| {
//!     total += command.len() as u64;
//!     total.to_le_bytes().to_vec()
//! };
//! let answer = table.apply(7, &ClientSession::register(), &mut add);
//! let mut session = ClientSession::from_registration(&answer).unwrap();
//! let command = session.command(b"abc");
//! let first = table.apply(8, &command, &mut add);
//! // The answer was lost; the retry is answered alike and applies nothing.
//! assert_eq!(table.apply(9, &command, &mut add), first);
//! assert_eq!(decode_answer(&first), Ok(3u64.to_le_bytes().to_vec()));
//! ```

use alloc::collections::BTreeMap;
use alloc::vec;
use alloc::vec::Vec;

use crate::types::Index;

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
/// Why a command of a session was not applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SessionError {
    /// The session is unknown or was expired: register again. The command was not applied
    /// now; whether an earlier attempt of it was is unknown.
    Expired,
    /// A number below the last one the session applied: a delayed duplicate, not applied.
    Stale,
    /// The bytes were not produced by [`ClientSession`] or [`plain`].
    Malformed,
}

impl core::fmt::Display for SessionError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            Self::Expired => "the client session is expired or unknown",
            Self::Stale => "a command older than the session's last one",
            Self::Malformed => "not a session-encoded command",
        })
    }
}

impl core::error::Error for SessionError {}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Client {
    /// The highest number applied.
    last_seq: u64,
    /// Its answer, for a retry.
    answer: Vec<u8>,
    /// The log index of the session's last command (or registration).
    active_at: Index,
}

/// The replicated table of client sessions (see the [module documentation](self)). Every
/// node applies every committed command through it, in log order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionTable {
    clients: BTreeMap<u64, Client>,
    /// The sessions by the index they were last active at: the first is expired first.
    by_activity: BTreeMap<Index, u64>,
    max_clients: usize,
}

impl SessionTable {
    /// An empty table keeping at most `max_clients` sessions (at least 1). Every node must use
    /// the same bound: which session expires is part of the replicated state.
    pub fn new(max_clients: usize) -> Self {
        Self {
            clients: BTreeMap::new(),
            by_activity: BTreeMap::new(),
            max_clients: max_clients.max(1),
        }
    }

    /// How many sessions are open.
    pub fn len(&self) -> usize {
        self.clients.len()
    }

    /// Whether no session is open.
    pub fn is_empty(&self) -> bool {
        self.clients.is_empty()
    }

    /// Applies the committed `command` at `index`: a registration opens a session; a plain
    /// command, or a session's next command, goes to `inner` (the application's state
    /// machine); a retried one gets the first answer again, without `inner`. Returns the
    /// encoded answer, for [`decode_answer`].
    pub fn apply(
        &mut self,
        index: Index,
        command: &[u8],
        inner: impl FnOnce(&[u8]) -> Vec<u8>,
    ) -> Vec<u8> {
        let Some((&tag, rest)) = command.split_first() else {
            return answer(MALFORMED, &[]);
        };
        match tag {
            PLAIN => answer(OK, &inner(rest)),
            REGISTER if rest.is_empty() => self.register(index),
            IN_SESSION => {
                let Some((id, rest)) = take_u64(rest) else {
                    return answer(MALFORMED, &[]);
                };
                let Some((seq, command)) = take_u64(rest) else {
                    return answer(MALFORMED, &[]);
                };
                let Some(client) = self.clients.get_mut(&id) else {
                    return answer(EXPIRED, &[]);
                };
                let reply = if seq == client.last_seq && seq > 0 {
                    answer(OK, &client.answer)
                } else if seq < client.last_seq || seq == 0 {
                    answer(STALE, &[])
                } else {
                    let result = inner(command);
                    let reply = answer(OK, &result);
                    client.last_seq = seq;
                    client.answer = result;
                    reply
                };
                self.touch(id, index);
                reply
            }
            _ => answer(MALFORMED, &[]),
        }
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

    /// Appends the table's bytes to `out` (for a snapshot).
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        out.push(SNAPSHOT_VERSION);
        out.extend_from_slice(&(self.clients.len() as u64).to_le_bytes());
        for (id, client) in &self.clients {
            out.extend_from_slice(&id.to_le_bytes());
            out.extend_from_slice(&client.last_seq.to_le_bytes());
            out.extend_from_slice(&client.active_at.to_le_bytes());
            out.extend_from_slice(&(client.answer.len() as u64).to_le_bytes());
            out.extend_from_slice(&client.answer);
        }
    }

    /// A table from the start of `bytes` written by [`encode_into`](Self::encode_into), and
    /// the bytes after it; `None` if they do not start with a table.
    pub fn decode(bytes: &[u8], max_clients: usize) -> Option<(Self, &[u8])> {
        let (&version, rest) = bytes.split_first()?;
        if version != SNAPSHOT_VERSION {
            return None;
        }
        let (count, mut rest) = take_u64(rest)?;
        let mut table = Self::new(max_clients);
        for _ in 0..count {
            let (id, after) = take_u64(rest)?;
            let (last_seq, after) = take_u64(after)?;
            let (active_at, after) = take_u64(after)?;
            let (len, after) = take_u64(after)?;
            let (answer, after) = after.split_at_checked(usize::try_from(len).ok()?)?;
            rest = after;
            // Ids and activity indexes are log indexes of distinct entries: a repeat is not a
            // table this code wrote.
            if table.by_activity.insert(active_at, id).is_some() {
                return None;
            }
            let client = Client {
                last_seq,
                answer: answer.to_vec(),
                active_at,
            };
            if table.clients.insert(id, client).is_some() {
                return None;
            }
        }
        Some((table, rest))
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

    fn registered(table: &mut SessionTable, index: Index) -> ClientSession {
        ClientSession::from_registration(&table.apply(
            index,
            &ClientSession::register(),
            |_| vec![],
        ))
        .expect("a registration")
    }

    #[test]
    fn a_retried_command_is_applied_once_and_answered_alike() {
        let mut table = SessionTable::new(4);
        let mut log: Vec<Vec<u8>> = Vec::new();
        let mut session = registered(&mut table, 1);
        assert_eq!(session.id(), 1);
        let a = session.command(b"a");
        let mut apply = |table: &mut SessionTable, index, bytes: &[u8]| {
            table.apply(index, bytes, |c| {
                log.push(c.to_vec());
                (log.len() as u64).to_le_bytes().to_vec()
            })
        };
        let first = apply(&mut table, 2, &a);
        assert_eq!(apply(&mut table, 3, &a), first);
        assert_eq!(apply(&mut table, 7, &a), first);
        let b = session.command(b"b");
        assert_eq!(
            decode_answer(&apply(&mut table, 8, &b)),
            Ok(2u64.to_le_bytes().to_vec())
        );
        // The first command again, delayed: not applied.
        assert_eq!(
            decode_answer(&apply(&mut table, 9, &a)),
            Err(SessionError::Stale)
        );
        assert_eq!(log, vec![b"a".to_vec(), b"b".to_vec()]);
    }

    #[test]
    fn the_least_recently_active_session_expires_and_is_refused() {
        let mut table = SessionTable::new(2);
        let mut one = registered(&mut table, 1);
        let mut two = registered(&mut table, 2);
        table.apply(3, &one.command(b"x"), |_| vec![]);
        // A third session expires the least recently active: two (active at 2), not one.
        let mut three = registered(&mut table, 4);
        assert_eq!(table.len(), 2);
        let refused = table.apply(5, &two.command(b"y"), |_| panic!("applied"));
        assert_eq!(decode_answer(&refused), Err(SessionError::Expired));
        assert!(decode_answer(&table.apply(6, &one.command(b"z"), |_| vec![])).is_ok());
        assert!(decode_answer(&table.apply(7, &three.command(b"w"), |_| vec![])).is_ok());
    }

    #[test]
    fn a_table_round_trips_through_its_bytes() {
        let mut table = SessionTable::new(8);
        let mut session = registered(&mut table, 1);
        let a = session.command(b"a");
        let first = table.apply(2, &a, |_| b"answer".to_vec());
        let mut bytes = Vec::new();
        table.encode_into(&mut bytes);
        bytes.extend_from_slice(b"rest");
        let (mut back, rest) = SessionTable::decode(&bytes, 8).expect("a table");
        assert_eq!(back, table);
        assert_eq!(rest, b"rest");
        assert_eq!(back.apply(3, &a, |_| panic!("applied twice")), first);
    }

    #[test]
    fn malformed_commands_and_tables_are_refused_without_panicking() {
        let mut table = SessionTable::new(8);
        for bytes in [
            &[][..],
            &[9],
            &[IN_SESSION, 1, 2],
            &[REGISTER, 0],
            &[IN_SESSION; 12],
        ] {
            let answer = table.apply(1, bytes, |_| panic!("applied"));
            assert!(decode_answer(&answer).is_err());
        }
        // Two sessions last active at the same index: not a table this code wrote.
        let mut twice = SessionTable::new(8);
        registered(&mut twice, 1);
        registered(&mut twice, 2);
        let mut bytes = Vec::new();
        twice.encode_into(&mut bytes);
        let first_active_at = 1 + 8 + 8 + 8;
        bytes[first_active_at..first_active_at + 8].copy_from_slice(&2u64.to_le_bytes());
        assert!(SessionTable::decode(&bytes, 8).is_none());
        let huge = [SNAPSHOT_VERSION, 255, 255, 255, 255, 255, 255, 255, 255];
        for bytes in [&[][..], &huge[..], &[7, 1]] {
            assert!(SessionTable::decode(bytes, 8).is_none());
        }
    }
}
