//! A key-value store on top of the simulated cluster, and clients that use it: what they
//! observe is recorded as a history and judged by the linearizability checker
//! ([`lincheck`]). The log judge checks what the nodes store; this checks what clients see.
//!
//! Each server's application keeps a map from keys to values, built from the commands it
//! applied (and rebuilt from the commands a snapshot carries). Clients issue one operation at
//! a time: a write is proposed at a server and acknowledged when that server applies it; a
//! read is either asked as a linearizable read ([`ReadMode::ReadIndex`]: ReadIndex, a lease
//! when the nodes run with lease reads, or a read at a follower) and served from the server's
//! map when the node says it may be, or proposed as a log entry ([`ReadMode::Log`]) and
//! answered when applied. A write goes through the client's session
//! ([`crate::sessions`], registered before its first write): one not answered within the
//! client's timeout is proposed again with the same bytes, up to [`KvOptions::retries`] times,
//! and the session table applies it once. An operation still not answered has an unknown
//! outcome (it may still take effect, or never). Every server fails the run if it applies the
//! same write twice.
//!
//! ```
//! use raft_proto::sim::kv::{KvOptions, ReadMode, Target};
//! use raft_proto::sim::{Sim, SimOptions, SECOND};
//!
//! let mut options = SimOptions::new(3, 7);
//! options.leader_noop = true;
//! let mut sim = Sim::new(options);
//! sim.check_one_leader().unwrap();
//! sim.start_kv(KvOptions::new(4, 3, ReadMode::ReadIndex));
//! sim.sleep(2 * SECOND).unwrap();
//! let report = sim.finish_kv().unwrap();
//! assert!(report.reads_served > 0 && report.writes_acked > 0);
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::format;
use std::vec::Vec;

use lincheck::{Budget, Input, Operation, Output, Verdict};

use super::{Failure, FailureKind, Sim, SimEvent, MS};
use crate::io::{Event, ProposalOutcome};
use crate::sessions::{decode_answer, plain, ClientSession, SessionError, SessionTable};
use crate::types::{Index, Payload, Term};

/// How clients read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ReadMode {
    /// A linearizable read without a log entry ([`Event::Read`]): ReadIndex at the leader, a
    /// lease when the nodes run with lease reads, or the leader's read index at a follower.
    ReadIndex,
    /// A log entry, answered when applied.
    Log,
}

/// Which server a client sends an operation to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Target {
    /// The leader of the highest term (a client that follows redirects); any server while
    /// there is none.
    Leader,
    /// Always this server.
    Server(usize),
    /// A server that is not the leader.
    Followers,
    /// Any server.
    Any,
}

/// A key-value workload.
#[derive(Debug, Clone, Copy)]
pub struct KvOptions {
    /// How many clients (each with one operation at a time).
    pub clients: usize,
    /// Keys are drawn from `0..keys`.
    pub keys: u64,
    /// The share of reads, in percent.
    pub read_percent: u64,
    /// How reads are made.
    pub read_mode: ReadMode,
    /// Where reads go.
    pub reads_at: Target,
    /// Where writes go.
    pub writes_at: Target,
    /// A client gives up on an operation after this long (microseconds): its outcome is then
    /// unknown.
    pub timeout: u64,
    /// A client waits up to this long (microseconds, uniformly drawn) between operations.
    pub think: u64,
    /// How many times a write not answered in time is proposed again, with the same bytes,
    /// before its outcome is recorded as unknown.
    pub retries: u32,
    /// Whether writes go through client sessions (on by default). Off, a retried write is an
    /// ordinary command again and may take effect twice: the judge must then catch it.
    pub sessions: bool,
}

impl KvOptions {
    /// `clients` clients over `keys` keys, half reads made in `read_mode`, everything sent to
    /// the leader, a timeout of one second and up to 20 ms between operations.
    pub fn new(clients: usize, keys: u64, read_mode: ReadMode) -> Self {
        Self {
            clients,
            keys: keys.max(1),
            read_percent: 50,
            read_mode,
            reads_at: Target::Leader,
            writes_at: Target::Leader,
            timeout: 1000 * MS,
            think: 20 * MS,
            retries: 2,
            sessions: true,
        }
    }
}

/// What a workload did, once it is judged linearizable.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct KvReport {
    /// Operations in the history (those with an unknown outcome included).
    pub operations: usize,
    /// Writes acknowledged.
    pub writes_acked: u64,
    /// Reads answered.
    pub reads_served: u64,
    /// Reads answered at the instant they were asked (by a lease, or a single voter).
    pub instant_reads: u64,
    /// Reads the node refused (no leader, leadership lost, timed out).
    pub reads_refused: u64,
    /// Operations whose outcome stayed unknown.
    pub unknown: u64,
    /// Writes proposed again after their time was up.
    pub retried: u64,
}

/// How many client sessions the model's table keeps.
const MAX_SESSIONS: usize = 64;

/// One server's key-value map, behind its session table.
#[derive(Debug, Clone)]
pub(super) struct KvState {
    map: BTreeMap<u64, u64>,
    table: SessionTable,
    /// Every write applied, by its unique value.
    written: BTreeSet<u64>,
    /// A write applied a second time, once seen.
    pub(super) applied_twice: Option<u64>,
    /// The session table's answer to the last command applied.
    last_answer: Vec<u8>,
}

impl Default for KvState {
    fn default() -> Self {
        Self {
            map: BTreeMap::new(),
            table: SessionTable::new(MAX_SESSIONS),
            written: BTreeSet::new(),
            applied_twice: None,
            last_answer: Vec::new(),
        }
    }
}

const TAG: &[u8; 2] = b"KV";
const PUT: u8 = 0;
const GET: u8 = 1;
const COMMAND_LEN: usize = 2 + 1 + 3 * 8;

/// A command of the key-value model: `KV`, the kind, then client, key and value (a value
/// unique to the operation, also for a read, so that every command is a distinct entry).
fn command(kind: u8, client: u64, key: u64, value: u64) -> Payload {
    let mut bytes = Vec::with_capacity(COMMAND_LEN);
    bytes.extend_from_slice(TAG);
    bytes.push(kind);
    bytes.extend_from_slice(&client.to_le_bytes());
    bytes.extend_from_slice(&key.to_le_bytes());
    bytes.extend_from_slice(&value.to_le_bytes());
    Payload::from(bytes)
}

fn decode(data: &[u8]) -> Option<(u8, u64, u64)> {
    if data.len() != COMMAND_LEN || &data[..2] != TAG {
        return None;
    }
    let word = |at: usize| {
        let mut b = [0; 8];
        b.copy_from_slice(&data[at..at + 8]);
        u64::from_le_bytes(b)
    };
    Some((data[2], word(11), word(19)))
}

impl KvState {
    /// Applies the command at `index` through the session table (anything that is not a
    /// key-value command changes nothing).
    pub(super) fn apply(&mut self, index: Index, data: &[u8]) {
        let (map, written, twice) = (&mut self.map, &mut self.written, &mut self.applied_twice);
        self.last_answer = self.table.apply(index, data, |command| {
            if let Some((PUT, key, value)) = decode(command) {
                if !written.insert(value) {
                    twice.get_or_insert(value);
                }
                map.insert(key, value);
            }
            Vec::new()
        });
    }

    /// The state after applying `commands` (with their indexes) in order.
    pub(super) fn replay<'a>(commands: impl IntoIterator<Item = (Index, &'a Payload)>) -> Self {
        let mut state = Self::default();
        for (index, command) in commands {
            state.apply(index, command);
        }
        state
    }

    fn get(&self, key: u64) -> Option<u64> {
        self.map.get(&key).copied()
    }
}

/// The workload's state inside the simulator.
#[derive(Debug, Default, Clone)]
pub(super) struct Workload {
    options: Option<KvOptions>,
    running: bool,
    clients: Vec<Client>,
    history: Vec<Operation<u64, u64>>,
    next_value: u64,
    report: KvReport,
}

#[derive(Debug, Default, Clone)]
struct Client {
    /// The time of the client's one scheduled event.
    next_at: u64,
    pending: Option<Pending>,
    /// Its session, once registered.
    session: Option<ClientSession>,
}

#[derive(Debug, Clone)]
struct Pending {
    /// Its position in the history (none for a registration).
    op: usize,
    /// How many times it was proposed again.
    retries: u32,
    server: usize,
    incarnation: u64,
    kind: PendingKind,
    deadline: u64,
}

#[derive(Debug, Clone)]
enum PendingKind {
    /// A command proposed at `index` in `term`: acknowledged when applied there.
    Command {
        index: Index,
        term: Term,
        data: Payload,
        key: u64,
        read: bool,
    },
    /// A linearizable read.
    Read { context: u64, key: u64 },
    /// The client's registration, proposed at `index` in `term`: its session's id is the
    /// index once applied there.
    Register { index: Index, term: Term },
}

/// Marks a pending registration, which has no operation in the history.
const NO_OPERATION: usize = usize::MAX;

impl Workload {
    /// Whether some client waits for an entry to be applied.
    pub(super) fn is_waiting(&self) -> bool {
        self.clients.iter().any(|c| {
            matches!(&c.pending, Some(p) if matches!(p.kind, PendingKind::Command { .. } | PendingKind::Register { .. }))
        })
    }
}

impl Sim {
    /// Starts a key-value workload (replacing any earlier one and its history).
    pub fn start_kv(&mut self, mut options: KvOptions) {
        options.sessions &= self.options.client_sessions;
        self.kv = Workload {
            options: Some(options),
            running: true,
            clients: (0..options.clients).map(|_| Client::default()).collect(),
            ..Workload::default()
        };
        for c in 0..options.clients {
            let at = self.now + self.rng.range(0, options.think.max(1));
            self.schedule_client(c, at);
        }
    }

    /// Changes where the workload's reads and writes go.
    pub fn retarget_kv(&mut self, reads_at: Target, writes_at: Target) {
        if let Some(options) = self.kv.options.as_mut() {
            options.reads_at = reads_at;
            options.writes_at = writes_at;
        }
    }

    /// What the workload did so far.
    pub fn kv_report(&self) -> KvReport {
        let mut report = self.kv.report;
        report.operations = self.kv.history.len();
        report
    }

    /// The history so far: every operation with its invocation and return times (virtual
    /// microseconds), or an unknown outcome.
    pub fn kv_history(&self) -> &[Operation<u64, u64>] {
        &self.kv.history
    }

    /// Stops the clients, waits until every operation ended (answered or given up), and judges
    /// the history: a safety failure if it is not linearizable, a liveness failure if the
    /// checker cannot decide.
    pub fn finish_kv(&mut self) -> Result<KvReport, Failure> {
        self.kv.running = false;
        let timeout = self.kv.options.map_or(0, |o| o.timeout);
        self.sleep(timeout + MS)?;
        let report = self.kv_report();
        match lincheck::check(&self.kv.history, Budget::default()) {
            Verdict::Linearizable => Ok(report),
            Verdict::Violation(v) => {
                let message = format!(
                    "Linearizability: the history of {} operations is not linearizable: on key \
                     {}, {:?} cannot follow {:?} (pending: {:?})",
                    report.operations,
                    v.key,
                    v.stuck,
                    v.linearized.iter().rev().take(3).collect::<Vec<_>>(),
                    v.pending
                );
                Err(self.failure_now(FailureKind::Safety, message))
            }
            _ => Err(self.failure_now(
                FailureKind::Liveness,
                format!(
                    "the linearizability checker could not decide the history of {} operations",
                    report.operations
                ),
            )),
        }
    }

    fn schedule_client(&mut self, client: usize, at: u64) {
        self.kv.clients[client].next_at = at;
        self.schedule(at, SimEvent::Client { client });
    }

    /// A client's scheduled event: it gives up on an operation past its deadline, and starts
    /// the next one.
    pub(super) fn client_acts(&mut self, c: usize) {
        let Some(options) = self.kv.options else {
            return;
        };
        let client = &mut self.kv.clients[c];
        if client.next_at != self.now {
            return;
        }
        if let Some(pending) = client.pending.take() {
            if self.now < pending.deadline {
                client.pending = Some(pending);
                return;
            }
            match pending.kind {
                PendingKind::Register { .. } => {}
                PendingKind::Command {
                    data,
                    key,
                    read: false,
                    ..
                } if self.kv.running && pending.retries < options.retries => {
                    // In doubt: the same bytes again, wherever writes go now.
                    return self.propose_write(c, pending.op, pending.retries + 1, data, key);
                }
                _ => {
                    self.kv.history[pending.op].ret = self.now;
                    self.kv.report.unknown += 1;
                }
            }
        }
        if !self.kv.running {
            return;
        }
        let read = self.rng.range(0, 100) < options.read_percent;
        if !read && options.sessions && self.kv.clients[c].session.is_none() {
            return self.register_client(c);
        }
        let target = if read {
            options.reads_at
        } else {
            options.writes_at
        };
        let s = self.kv_server(target);
        let key = self.rng.range(0, options.keys);
        if self.servers[s].node.is_none() || self.servers[s].paused {
            // The connection is refused: nothing happened.
            let at = self.now + options.think.max(MS);
            return self.schedule_client(c, at);
        }
        let value = self.kv.next_value;
        self.kv.next_value += 1;
        let op = self.kv.history.len();
        let call = self.now;
        let (input, kind) = if read {
            (Input::Get, GET)
        } else {
            (Input::Put(value), PUT)
        };
        self.kv
            .history
            .push(Operation::new(c as u64, key, input, None, call, 0));
        let incarnation = self.servers[s].incarnation;
        let deadline = self.now + options.timeout;
        if read && options.read_mode == ReadMode::ReadIndex {
            let context = self.start_read(s);
            self.kv.clients[c].pending = Some(Pending {
                op,
                retries: 0,
                server: s,
                incarnation,
                kind: PendingKind::Read { context, key },
                deadline,
            });
            self.schedule_client(c, deadline);
            self.step(s, Event::Read { context });
            return;
        }
        let command = command(kind, c as u64, key, value);
        let data = match self.kv.clients[c].session.as_mut() {
            Some(session) if !read => Payload::from(session.command(&command)),
            _ => Payload::from(plain(&command)),
        };
        if !self.propose_at(c, s, op, 0, data, key, read) {
            // Refused: the command is in no log, it never takes effect.
            self.kv.history.pop();
            let at = self.now + options.think.max(MS);
            self.schedule_client(c, at);
        }
    }

    /// Proposes client `c`'s command `data` at server `s`; on acceptance the client waits for
    /// it there until its deadline. Returns whether it was accepted.
    #[allow(clippy::too_many_arguments)]
    fn propose_at(
        &mut self,
        c: usize,
        s: usize,
        op: usize,
        retries: u32,
        data: Payload,
        key: u64,
        read: bool,
    ) -> bool {
        let Some(options) = self.kv.options else {
            return false;
        };
        if self.servers[s].node.is_none() || self.servers[s].paused {
            return false;
        }
        let incarnation = self.servers[s].incarnation;
        let deadline = self.now + options.timeout;
        match self.propose_outcome(s, data.clone()) {
            Some(ProposalOutcome::Accepted {
                first_index, term, ..
            }) => {
                self.kv.clients[c].pending = Some(Pending {
                    op,
                    retries,
                    server: s,
                    incarnation,
                    kind: PendingKind::Command {
                        index: first_index,
                        term,
                        data,
                        key,
                        read,
                    },
                    deadline,
                });
                self.schedule_client(c, deadline);
                true
            }
            _ => false,
        }
    }

    /// Proposes again client `c`'s write `data` (operation `op`), whose outcome is in doubt.
    /// A server that refuses it leaves it in doubt, and the client tries again later.
    fn propose_write(&mut self, c: usize, op: usize, retries: u32, data: Payload, key: u64) {
        let Some(options) = self.kv.options else {
            return;
        };
        self.kv.report.retried += 1;
        let s = self.kv_server(options.writes_at);
        if !self.propose_at(c, s, op, retries, data.clone(), key, false) {
            let at = self.now + options.think.max(MS);
            self.kv.clients[c].pending = Some(Pending {
                op,
                retries,
                server: s,
                incarnation: self.servers[s].incarnation,
                // Nothing to wait for: the deadline passes at once.
                kind: PendingKind::Command {
                    index: 0,
                    term: 0,
                    data,
                    key,
                    read: false,
                },
                deadline: at,
            });
            self.schedule_client(c, at);
        }
    }

    /// Client `c` registers its session before its first write.
    fn register_client(&mut self, c: usize) {
        let Some(options) = self.kv.options else {
            return;
        };
        let s = self.kv_server(options.writes_at);
        let accepted = (self.servers[s].node.is_some() && !self.servers[s].paused)
            .then(|| self.propose_outcome(s, Payload::from(ClientSession::register())))
            .flatten();
        let at = match accepted {
            Some(ProposalOutcome::Accepted {
                first_index, term, ..
            }) => {
                let deadline = self.now + options.timeout;
                self.kv.clients[c].pending = Some(Pending {
                    op: NO_OPERATION,
                    retries: 0,
                    server: s,
                    incarnation: self.servers[s].incarnation,
                    kind: PendingKind::Register {
                        index: first_index,
                        term,
                    },
                    deadline,
                });
                deadline
            }
            _ => self.now + options.think.max(MS),
        };
        self.schedule_client(c, at);
    }

    /// The server an operation for `target` goes to.
    fn kv_server(&mut self, target: Target) -> usize {
        let n = self.servers.len();
        let any = self.rng.range(0, n as u64) as usize;
        match target {
            Target::Leader => self.current_leader().unwrap_or(any),
            Target::Server(s) => s.min(n - 1),
            Target::Any => any,
            Target::Followers => match self.current_leader() {
                Some(leader) if n > 1 => {
                    (leader + 1 + self.rng.range(0, n as u64 - 1) as usize) % n
                }
                _ => any,
            },
        }
    }

    /// Server `s` applied the command `data` of `term` at `index`: a client waiting for it
    /// there is answered (or learns that its command lost its place and never takes effect).
    pub(super) fn kv_applied(&mut self, s: usize, index: Index, term: Term, data: &Payload) {
        let incarnation = self.servers[s].incarnation;
        for c in 0..self.kv.clients.len() {
            let Some(pending) = &self.kv.clients[c].pending else {
                continue;
            };
            if pending.server != s || pending.incarnation != incarnation {
                continue;
            }
            match &pending.kind {
                PendingKind::Register {
                    index: wanted,
                    term: wanted_term,
                } if *wanted == index => {
                    let registered = *wanted_term == term
                        && data.as_ref() == ClientSession::register().as_slice();
                    let client = &mut self.kv.clients[c];
                    if registered {
                        client.session = Some(ClientSession::resume(index, 1));
                    }
                    client.pending = None;
                    let think = self.kv.options.map_or(MS, |o| o.think.max(1));
                    let at = self.now + self.rng.range(0, think);
                    self.schedule_client(c, at);
                }
                PendingKind::Command {
                    index: wanted,
                    term: wanted_term,
                    data: wanted_data,
                    key,
                    read,
                } if *wanted == index => {
                    let op = pending.op;
                    let answer = decode_answer(&self.servers[s].kv.last_answer);
                    let output = if *wanted_term == term && wanted_data == data {
                        match answer {
                            Ok(_) if *read => {
                                self.kv.report.reads_served += 1;
                                Some(Output::Value(self.servers[s].kv.get(*key)))
                            }
                            Ok(_) => {
                                self.kv.report.writes_acked += 1;
                                Some(Output::Done)
                            }
                            Err(refusal) => {
                                // Not applied now (an earlier attempt may have been): the
                                // outcome is unknown, and an expired session registers again.
                                if refusal == SessionError::Expired {
                                    self.kv.clients[c].session = None;
                                }
                                None
                            }
                        }
                    } else {
                        // Another entry took its index: it was never committed, and never
                        // will be.
                        None
                    };
                    self.complete(c, op, output);
                }
                _ => {}
            }
        }
    }

    /// Server `s` served the read `context`.
    pub(super) fn kv_read_served(&mut self, s: usize, context: u64) {
        let Some(c) = self.kv_reader(context) else {
            return;
        };
        let Some(pending) = &self.kv.clients[c].pending else {
            return;
        };
        let PendingKind::Read { key, .. } = pending.kind else {
            return;
        };
        let op = pending.op;
        if self.kv.history[op].call == self.now {
            self.kv.report.instant_reads += 1;
        }
        self.kv.report.reads_served += 1;
        let value = self.servers[s].kv.get(key);
        self.complete(c, op, Some(Output::Value(value)));
    }

    /// The read `context` was refused: a read that did not happen constrains nothing.
    pub(super) fn kv_read_refused(&mut self, context: u64) {
        let Some(c) = self.kv_reader(context) else {
            return;
        };
        if let Some(op) = self.kv.clients[c].pending.as_ref().map(|p| p.op) {
            self.kv.report.reads_refused += 1;
            self.complete(c, op, None);
        }
    }

    fn kv_reader(&self, context: u64) -> Option<usize> {
        self.kv.clients.iter().position(|c| {
            matches!(&c.pending, Some(Pending { kind: PendingKind::Read { context: x, .. }, .. }) if *x == context)
        })
    }

    /// Client `c`'s operation `op` ended with `output` (`None`: it took no effect, or its
    /// outcome is unknown); the client's next operation comes after a pause.
    fn complete(&mut self, c: usize, op: usize, output: Option<Output<u64>>) {
        let operation = &mut self.kv.history[op];
        operation.output = output;
        operation.ret = self.now;
        if operation.output.is_none() {
            self.kv.report.unknown += 1;
        }
        self.kv.clients[c].pending = None;
        let think = self.kv.options.map_or(MS, |o| o.think.max(1));
        let at = self.now + self.rng.range(0, think);
        self.schedule_client(c, at);
    }
}
