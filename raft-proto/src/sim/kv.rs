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
//! answered when applied. An operation not answered within the client's timeout has an
//! unknown outcome (it may still take effect, or never).
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

use std::collections::BTreeMap;
use std::format;
use std::vec::Vec;

use lincheck::{Budget, Input, Operation, Output, Verdict};

use super::{Failure, FailureKind, Sim, SimEvent, MS};
use crate::io::{Event, ProposalOutcome};
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
}

/// One server's key-value map.
#[derive(Debug, Clone, Default)]
pub(super) struct KvState {
    map: BTreeMap<u64, u64>,
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
    /// Applies a command (anything that is not a key-value command is ignored).
    pub(super) fn apply(&mut self, data: &[u8]) {
        if let Some((PUT, key, value)) = decode(data) {
            self.map.insert(key, value);
        }
    }

    /// The map after applying `commands` in order.
    pub(super) fn replay(commands: &[Payload]) -> Self {
        let mut state = Self::default();
        for command in commands {
            state.apply(command);
        }
        state
    }

    fn get(&self, key: u64) -> Option<u64> {
        self.map.get(&key).copied()
    }
}

/// The workload's state inside the simulator.
#[derive(Debug, Default)]
pub(super) struct Workload {
    options: Option<KvOptions>,
    running: bool,
    clients: Vec<Client>,
    history: Vec<Operation<u64, u64>>,
    next_value: u64,
    report: KvReport,
}

#[derive(Debug, Default)]
struct Client {
    /// The time of the client's one scheduled event.
    next_at: u64,
    pending: Option<Pending>,
}

#[derive(Debug)]
struct Pending {
    /// Its position in the history.
    op: usize,
    server: usize,
    incarnation: u64,
    kind: PendingKind,
    deadline: u64,
}

#[derive(Debug)]
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
}

impl Workload {
    /// Whether some client waits for an entry to be applied.
    pub(super) fn is_waiting(&self) -> bool {
        self.clients
            .iter()
            .any(|c| matches!(&c.pending, Some(p) if matches!(p.kind, PendingKind::Command { .. })))
    }
}

impl Sim {
    /// Starts a key-value workload (replacing any earlier one and its history).
    pub fn start_kv(&mut self, options: KvOptions) {
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
            self.kv.history[pending.op].ret = self.now;
            self.kv.report.unknown += 1;
        }
        if !self.kv.running {
            return;
        }
        let read = self.rng.range(0, 100) < options.read_percent;
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
                server: s,
                incarnation,
                kind: PendingKind::Read { context, key },
                deadline,
            });
            self.schedule_client(c, deadline);
            self.step(s, Event::Read { context });
            return;
        }
        let data = command(kind, c as u64, key, value);
        match self.propose_outcome(s, data.clone()) {
            Some(ProposalOutcome::Accepted {
                first_index, term, ..
            }) => {
                self.kv.clients[c].pending = Some(Pending {
                    op,
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
            }
            _ => {
                // Refused: the command is in no log, it never takes effect.
                self.kv.history.pop();
                let at = self.now + options.think.max(MS);
                self.schedule_client(c, at);
            }
        }
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
            let PendingKind::Command {
                index: wanted,
                term: wanted_term,
                data: wanted_data,
                key,
                read,
            } = &pending.kind
            else {
                continue;
            };
            if pending.server != s || pending.incarnation != incarnation || *wanted != index {
                continue;
            }
            let op = pending.op;
            let output = if *wanted_term == term && wanted_data == data {
                if *read {
                    self.kv.report.reads_served += 1;
                    Some(Output::Value(self.servers[s].kv.get(*key)))
                } else {
                    self.kv.report.writes_acked += 1;
                    Some(Output::Done)
                }
            } else {
                // Another entry took its index: it was never committed, and never will be.
                None
            };
            self.complete(c, op, output);
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
