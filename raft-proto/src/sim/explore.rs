//! Exhaustive exploration of small clusters of the real [`Node`](crate::Node): every
//! interleaving of the events that can happen, up to a depth, each state checked by the judge.
//!
//! The random search of [`random`](super::random) finds what is likely; the explorer visits
//! every state a cluster can reach within `depth` events. At each state every event that could
//! happen next is a branch:
//!
//! - any message in flight is delivered, or lost, or delivered with a copy left in flight (a
//!   duplicate; losses and duplicates together are bounded by [`ExploreOptions::losses`]);
//! - any server's timer fires, however late (timers are abstracted to "may fire": time moves
//!   on to the server's next deadline, or stays if that has passed);
//! - any server's disk syncs, making durable its writes up to one the node asked to sync
//!   (the oldest, or more at once);
//! - a live server crashes, keeping any prefix of its writes not yet durable (bounded by
//!   [`ExploreOptions::crashes`]), and a crashed one restarts from its durable state;
//! - the leader is asked to append a command (bounded by [`ExploreOptions::proposals`]), to
//!   remove a member, add a server that is not one as a voter, or replace a voter by such a
//!   server in one joint change ([`ExploreOptions::changes`]), and any
//!   live server is asked for a linearizable read ([`ExploreOptions::reads`]; each read is
//!   checked against the highest commit index when it was asked and what was applied when it
//!   is served, as in every simulation).
//!
//! Snapshots happen as the simulator's options say ([`SimOptions::snapshot_interval`]: the
//! application snapshots once it applied such an entry), streamed or not, so a leader sends a
//! snapshot to a follower its log no longer reaches. [`ExploreOptions::sync_at_once`] drops the
//! sync events (each write is durable within the step that made it), and
//! [`ExploreOptions::prefix`] starts the search at the end of a given path: both buy depth for
//! the bugs whose shortest paths are long.
//!
//! Every state is checked by the same judge as every simulation ([`Sim`]: Election
//! Safety, Leader Append-Only, Log Matching, Leader Completeness, State Machine Safety,
//! durability of what is applied, memberships, monotonic terms and indexes). States are told
//! apart by each node's state without its clock, deadlines and random generator, the disks,
//! and the multiset of what is in flight (see `Sim::explore_state`), and by what the judge
//! remembers of the path; a state met again with no more events left to spend is not explored
//! again. The search deepens one event at a time ([`explore_with`]), so the first violation
//! found is at the smallest depth: its path is a shortest way to it, and [`replay`] runs it
//! again.
//!
//! **What the timing abstraction costs.** Every path explored is a real run of the nodes, but
//! two states told apart only by their clocks and deadlines are taken for one, and explored
//! from the first met. Where a node's choice depends on how its deadlines fall against the
//! clock (a candidate's timer that starts a new election or only asks again for votes; the
//! sticky leader and check-quorum), the other state's choices may be missed, so the states
//! reached depend a little on the order of the search: depth 7 from the start gives 99,569
//! distinct states on one thread and 93,127 in a run on two. Telling clocks apart would make
//! every state unique (deadlines are drawn at random), so the explorer claims no more than
//! this: from each state it keeps, every order of events, with the timing that state was
//! first met with.
//!
//! ```
//! use raft_proto::sim::explore::{explore, ExploreOptions};
//!
//! let mut options = ExploreOptions::new(3, 5);
//! options.max_states = 20_000;
//! let report = explore(&options);
//! assert!(report.violation.is_none());
//! assert!(report.distinct > 100);
//! ```

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::fmt::{self, Write as _};
use std::format;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::vec;
use std::vec::Vec;

use super::{Failure, Sim, SimOptions};
use crate::membership::MembershipChange;
use crate::types::{NodeId, Payload, Role};

/// An event in flight, as the explorer lists them.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Pending {
    /// A message on its way.
    Message {
        /// The sender.
        from: NodeId,
        /// The addressee.
        to: NodeId,
        /// The kind of message.
        what: &'static str,
        /// Its term.
        term: u64,
    },
    /// A server's armed timer.
    Timer(NodeId),
    /// A server's disk syncing: its writes become durable up to one the node asked to sync.
    Sync(NodeId),
}

/// What becomes of a message the explorer picks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Fate {
    /// Delivered (a timer fired, a write synced).
    Happens,
    /// Lost.
    Lost,
    /// Delivered, and a copy stays in flight.
    Duplicated,
}

/// One step of an explored path.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Choice {
    /// The pending event with this order number (see [`Pending`]) happens, or is lost or
    /// duplicated.
    Event {
        /// The simulator's order number of the event (stable on replay).
        order: u64,
        /// What the event is.
        what: Pending,
        /// What becomes of it.
        fate: Fate,
    },
    /// Server `server` (0-based) crashes, keeping the first `keep` of its writes not yet
    /// durable.
    Crash {
        /// The server, 0-based.
        server: usize,
        /// How many of its unsynced writes survive.
        keep: usize,
    },
    /// Server `server` (0-based) restarts from its durable state.
    Restart {
        /// The server, 0-based.
        server: usize,
    },
    /// Server `server` (0-based), the leader, is asked to append a command.
    Propose {
        /// The server, 0-based.
        server: usize,
    },
    /// Server `server` (0-based) is asked for a linearizable read.
    Read {
        /// The server, 0-based.
        server: usize,
    },
    /// Server `server` (0-based), the leader, is asked for a membership change.
    ChangeMembership {
        /// The server, 0-based.
        server: usize,
        /// The change.
        change: Change,
    },
}

/// A membership change the explorer asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Change {
    /// Remove a member.
    Remove(NodeId),
    /// Add a server that is not a member as a voter.
    AddVoter(NodeId),
    /// Replace a voter by a server that is not a member, in one joint change.
    Replace {
        /// The voter that leaves.
        out: NodeId,
        /// The server that comes in.
        added: NodeId,
    },
}

impl fmt::Display for Choice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Event { what, fate, .. } => {
                let fate = match fate {
                    Fate::Happens => "",
                    Fate::Lost => " LOST",
                    Fate::Duplicated => " DUPLICATED",
                };
                match what {
                    Pending::Message {
                        from,
                        to,
                        what,
                        term,
                    } => write!(f, "{what} {from}->{to} (term {term}){fate}"),
                    Pending::Timer(id) => write!(f, "timer of {id} fires"),
                    Pending::Sync(id) => write!(f, "disk of {id} syncs a write"),
                }
            }
            Self::Crash { server, keep } => {
                write!(
                    f,
                    "server {} crashes keeping {keep} unsynced writes",
                    server + 1
                )
            }
            Self::Restart { server } => write!(f, "server {} restarts", server + 1),
            Self::Propose { server } => write!(f, "leader {} is asked to append", server + 1),
            Self::Read { server } => write!(f, "server {} is asked for a read", server + 1),
            Self::ChangeMembership { server, change } => {
                write!(f, "leader {} is asked to ", server + 1)?;
                match change {
                    Change::Remove(id) => write!(f, "remove {id}"),
                    Change::AddVoter(id) => write!(f, "add voter {id}"),
                    Change::Replace { out, added } => write!(f, "replace voter {out} by {added}"),
                }
            }
        }
    }
}

/// How an exploration is bounded.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ExploreOptions {
    /// Servers, all voters from the start unless `sim.initial_voters` says fewer (the others
    /// start empty, as spares a membership change may add).
    pub nodes: usize,
    /// The most events on a path (after the prefix, if any).
    pub depth: usize,
    /// Stop once this many distinct states are known (the report says it was cut short).
    pub max_states: usize,
    /// Crashes per path.
    pub crashes: usize,
    /// Proposals per path.
    pub proposals: usize,
    /// Messages lost or duplicated per path.
    pub losses: usize,
    /// Linearizable reads asked per path (each checked against the highest commit index when
    /// it was asked, and against what was applied when it is served).
    pub reads: usize,
    /// Membership changes asked per path (removing a member, adding a server that is not one
    /// as a voter, or replacing a voter by such a server).
    pub changes: usize,
    /// Start from a cluster with a leader and one command applied everywhere (the simulator
    /// runs with its seeded timing until then) instead of from the start: the explored paths
    /// then begin where the fresh ones need some ten events to get to. A violation during
    /// that warm-up is reported with an empty path.
    pub from_leader: bool,
    /// Events to run before the search, as positions (see [`Violation::positions`]): the
    /// search starts where they end, and `depth` counts the events after them. The paths
    /// reported begin with them, and their events count against the budgets per path
    /// (`crashes`, `proposals`, ...). A position that names no open choice ends the prefix
    /// there (check it with [`replay_positions`]).
    pub prefix: Vec<usize>,
    /// Disks that sync at once: every write becomes durable within the step that made it,
    /// before anything else happens (a crash then loses nothing). The paths are shorter by
    /// every sync they would have spent, at the price of the interleavings of syncs with the
    /// rest, which only the bugs of persistence ordering need.
    pub sync_at_once: bool,
    /// Threads searching at once (1: the search is deterministic to the last figure; with
    /// more, the states reached, how many were visited and which of several shortest
    /// violations is reported may differ from run to run, as the timing abstraction of the
    /// module doc says).
    pub threads: usize,
    /// The simulator's options (timing, features, injected bugs); its `nodes` is set from
    /// `nodes`.
    pub sim: SimOptions,
}

impl ExploreOptions {
    /// `nodes` servers up to `depth` events, at most 1,000,000 states, one crash, one
    /// proposal and one lost or duplicated message per path, no reads and no membership
    /// changes, the nodes as configured by default (pre-vote and check-quorum on).
    pub fn new(nodes: usize, depth: usize) -> Self {
        let mut sim = SimOptions::new(nodes, 1);
        sim.crash_point_odds = 0;
        sim.crash_loses_unsynced = true;
        Self {
            nodes,
            depth,
            max_states: 1_000_000,
            crashes: 1,
            proposals: 1,
            losses: 1,
            reads: 0,
            changes: 0,
            from_leader: false,
            prefix: Vec::new(),
            sync_at_once: false,
            threads: 1,
            sim,
        }
    }
}

/// A violation the explorer reached: of safety, or a warm-up (`from_leader`) that failed.
#[derive(Debug, Clone)]
pub struct Violation {
    /// The events from the start that lead to it: a shortest such path (of those that begin
    /// with the prefix, if one was given).
    pub path: Vec<Choice>,
    /// The same path as the position of each choice among those open at its step: what
    /// [`replay_positions`] takes (and `simulate --explore --replay` prints and reads).
    pub positions: Vec<usize>,
    /// What the judge said.
    pub failure: Failure,
}

/// What an exploration did.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ExploreReport {
    /// States reached (each checked), repeats included, over every bound of the iterative
    /// deepening.
    pub visited: u64,
    /// Distinct states within the last bound searched.
    pub distinct: u64,
    /// The deepest bound searched completely (with a violation: its path length, less the
    /// prefix's).
    pub depth: usize,
    /// Whether every state within the depth was explored (not cut short by `max_states`).
    pub complete: bool,
    /// Seconds taken.
    pub seconds: f64,
    /// The first violation found (at the smallest depth), if any.
    pub violation: Option<Violation>,
}

/// A state searched from: the cluster, the path to it (and each choice's position among those
/// open at its step), and what the path has used of its budgets.
struct State {
    sim: Sim,
    path: Vec<Choice>,
    positions: Vec<usize>,
    crashes: usize,
    proposals: usize,
    losses: usize,
    reads: usize,
    changes: usize,
}

impl State {
    /// The cluster at the end of `options.prefix` (as far as its positions fit): where the
    /// search starts.
    fn start(options: &ExploreOptions) -> Self {
        let mut state = Self::origin(options);
        state.follow(options, &options.prefix);
        state
    }

    /// Takes the choices at `positions`, one step after the other, up to the step the judge
    /// fails at, if one does; false if a position names no open choice (the state is then
    /// where the path stopped fitting).
    fn follow(&mut self, options: &ExploreOptions, positions: &[usize]) -> bool {
        for &position in positions {
            if self.sim.failure().is_some() {
                break;
            }
            let Some(choice) = choices(self, options).into_iter().nth(position) else {
                return false;
            };
            apply(self, &choice, options);
            self.positions.push(position);
        }
        true
    }

    /// The cluster before any event: fresh, or after the warm-up of `from_leader`.
    fn origin(options: &ExploreOptions) -> Self {
        Self {
            sim: initial(options),
            path: Vec::new(),
            positions: Vec::new(),
            crashes: 0,
            proposals: 0,
            losses: 0,
            reads: 0,
            changes: 0,
        }
    }

    fn child(&self) -> Self {
        Self {
            sim: self.sim.clone(),
            path: self.path.clone(),
            positions: self.positions.clone(),
            ..*self
        }
    }
}

/// The choices open at `state`.
fn choices(state: &State, options: &ExploreOptions) -> Vec<Choice> {
    let sim = &state.sim;
    let mut out = Vec::new();
    for (order, what) in sim.explore_pending() {
        let message = matches!(what, Pending::Message { .. });
        out.push(Choice::Event {
            order,
            what: what.clone(),
            fate: Fate::Happens,
        });
        if message && state.losses < options.losses {
            out.push(Choice::Event {
                order,
                what: what.clone(),
                fate: Fate::Lost,
            });
            out.push(Choice::Event {
                order,
                what,
                fate: Fate::Duplicated,
            });
        }
    }
    for server in 0..sim.len() {
        if sim.is_alive(server) {
            if state.crashes < options.crashes {
                for keep in 0..=sim.unsynced_writes(server) {
                    out.push(Choice::Crash { server, keep });
                }
            }
            let leader = sim.node(server).filter(|n| n.role() == Role::Leader);
            if state.proposals < options.proposals && leader.is_some() {
                out.push(Choice::Propose { server });
            }
            if state.reads < options.reads {
                out.push(Choice::Read { server });
            }
            if let Some(node) = leader.filter(|_| state.changes < options.changes) {
                let membership = node.membership();
                let voters = membership.voters();
                let outside: Vec<NodeId> = (1..=sim.len() as NodeId)
                    .filter(|&id| !membership.contains(id))
                    .collect();
                let mut change = |change| out.push(Choice::ChangeMembership { server, change });
                for id in 1..=sim.len() as NodeId {
                    if membership.contains(id) && voters.len() > 1 {
                        change(Change::Remove(id));
                    }
                }
                for &added in &outside {
                    change(Change::AddVoter(added));
                    for &voter in voters {
                        change(Change::Replace { out: voter, added });
                    }
                }
            }
        } else {
            out.push(Choice::Restart { server });
        }
    }
    out
}

/// Applies `choice` to `state` in place.
fn apply(state: &mut State, choice: &Choice, options: &ExploreOptions) {
    match choice {
        Choice::Event { order, fate, .. } => {
            state.sim.explore_fire(*order, *fate);
            if *fate != Fate::Happens {
                state.losses += 1;
            }
        }
        Choice::Crash { server, keep } => {
            state.sim.explore_crash(*server, *keep);
            state.crashes += 1;
        }
        Choice::Restart { server } => {
            state.sim.start(*server);
            state.sim.connect(*server);
        }
        Choice::Propose { server } => {
            let command = format!("c{}", state.proposals + 1).into_bytes();
            state.sim.propose(*server, command);
            state.proposals += 1;
        }
        Choice::Read { server } => {
            state.sim.read(*server);
            state.reads += 1;
        }
        Choice::ChangeMembership { server, change } => {
            let change = match *change {
                Change::Remove(id) => MembershipChange::Remove { id },
                Change::AddVoter(id) => MembershipChange::AddVoter {
                    id,
                    data: Payload::default(),
                },
                Change::Replace { out, added } => {
                    let voters = state
                        .sim
                        .node(*server)
                        .map(|n| n.membership().voters().clone())
                        .unwrap_or_default();
                    MembershipChange::Replace {
                        voters: voters
                            .into_iter()
                            .filter(|&v| v != out)
                            .chain([added])
                            .map(|id| (id, Payload::default()))
                            .collect(),
                        learners: Vec::new(),
                    }
                }
            };
            state.sim.change_membership(*server, change);
            state.changes += 1;
        }
    }
    if options.sync_at_once {
        sync_all(&mut state.sim);
    }
    state.path.push(choice.clone());
}

/// Makes every pending write durable, and those the nodes make on being told, until none is
/// left.
fn sync_all(sim: &mut Sim) {
    while let Some((order, _)) = sim
        .explore_pending()
        .into_iter()
        .find(|(_, what)| matches!(what, Pending::Sync(_)))
    {
        sim.explore_fire(order, Fate::Happens);
    }
}

/// The key a state is told apart by: the cluster (see `Sim::explore_state`) and the budgets
/// left.
fn key(state: &State) -> u128 {
    let mut hasher = KeyHasher::new();
    let _ = state.sim.explore_state(&mut hasher);
    let _ = write!(
        hasher,
        "|{}|{}|{}|{}|{}",
        state.crashes, state.proposals, state.losses, state.reads, state.changes
    );
    hasher.finish()
}

/// A 128-bit hash of the text written to it, eight bytes at a time, without building the
/// text (what is written is buffered in a block of 64 bytes): two lanes of multiply-and-rotate,
/// mixed at the end. Collisions between states would prune unexplored ones, hence 128 bits.
#[derive(Debug, Clone, Copy)]
pub(crate) struct KeyHasher {
    a: u64,
    b: u64,
    block: [u8; 64],
    filled: usize,
    total: u64,
}

impl KeyHasher {
    pub(crate) fn new() -> Self {
        Self {
            a: 0x243F_6A88_85A3_08D3,
            b: 0x1319_8A2E_0370_7344,
            block: [0; 64],
            filled: 0,
            total: 0,
        }
    }

    fn word(&mut self, v: u64) {
        self.a = (self.a ^ v)
            .wrapping_mul(0x9E37_79B9_7F4A_7C15)
            .rotate_left(31);
        self.b = (self.b ^ v.rotate_left(32))
            .wrapping_mul(0xC2B2_AE3D_27D4_EB4F)
            .rotate_left(27)
            ^ self.a;
    }

    /// Hashes the buffered block (the unfilled part is zeros).
    fn flush(&mut self) {
        let block = self.block;
        for chunk in block[..self.filled.next_multiple_of(8)].chunks_exact(8) {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            self.word(u64::from_le_bytes(word));
        }
        self.block = [0; 64];
        self.filled = 0;
    }

    pub(crate) fn finish(mut self) -> u128 {
        self.flush();
        self.word(self.total);
        let mix = |mut z: u64| {
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        };
        (u128::from(mix(self.a)) << 64) | u128::from(mix(self.b ^ mix(self.a)))
    }
}

impl fmt::Write for KeyHasher {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let mut bytes = s.as_bytes();
        self.total += bytes.len() as u64;
        while !bytes.is_empty() {
            let take = bytes.len().min(64 - self.filled);
            self.block[self.filled..self.filled + take].copy_from_slice(&bytes[..take]);
            self.filled += take;
            bytes = &bytes[take..];
            if self.filled == 64 {
                self.flush();
            }
        }
        Ok(())
    }
}

/// The cluster the explorer starts from.
fn initial(options: &ExploreOptions) -> Sim {
    let mut sim_options = options.sim.clone();
    sim_options.nodes = options.nodes;
    let mut sim = Sim::new(sim_options);
    if options.from_leader {
        // Without a bug this elects a leader and commits. A safety violation on the way stays
        // recorded; a warm-up that ends without a leader or without the command applied
        // everywhere is recorded as its failure too, so that the search reports it (with an
        // empty path) instead of starting from wherever it stopped.
        let voters = options.sim.initial_voters.unwrap_or(options.nodes);
        let warm_up = sim
            .check_one_leader()
            .and_then(|_| sim.one(b"start".to_vec(), voters, true));
        if let Err(failure) = warm_up {
            sim.failure.get_or_insert(failure);
        }
    }
    if options.sync_at_once {
        sync_all(&mut sim);
    }
    sim
}

/// Explores every path of up to `options.depth` events, as `options` bounds it.
pub fn explore(options: &ExploreOptions) -> ExploreReport {
    explore_with(options, |_| {})
}

/// The figures of one bound of the iterative deepening (see [`explore_with`]).
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct Level {
    /// The bound: paths of up to this many events.
    pub depth: usize,
    /// Distinct states within it.
    pub distinct: u64,
    /// States reached within it, repeats included.
    pub visited: u64,
    /// Seconds this bound took.
    pub seconds: f64,
}

/// Like [`explore`], calling `progress` after each bound.
///
/// The search is an iterative deepening: a depth-first search of every path of up to 1
/// event, then 2, and so on up to `options.depth`. Each search keeps the states it met with
/// the most events it had left to spend from them, and skips a state met again with no more
/// left (everything reachable from it within that was searched already); so it needs memory
/// for the states' keys only (16 bytes and a count each) and the clusters along one path,
/// where a breadth-first search would hold a whole level of clusters. A violation found at
/// bound `d` was not found at `d - 1`: its path is a shortest one. The bounds before the last
/// cost about one part in the branching factor of the last (some 15 for 3 nodes).
///
/// With [`ExploreOptions::threads`] above 1, each bound first goes breadth first until there
/// are 16 states per thread, and the threads then search from those states one at a time,
/// sharing the states met.
pub fn explore_with(options: &ExploreOptions, mut progress: impl FnMut(Level)) -> ExploreReport {
    let started = std::time::Instant::now();
    let mut report = ExploreReport {
        visited: 0,
        distinct: 1,
        depth: 0,
        complete: true,
        seconds: 0.0,
        violation: None,
    };
    let root = State::start(options);
    if let Some(failure) = root.sim.failure() {
        // The warm-up of `from_leader` or the prefix already failed: a violation before any
        // explored event.
        report.violation = Some(Violation {
            path: root.path.clone(),
            positions: root.positions.clone(),
            failure: failure.clone(),
        });
        report.seconds = started.elapsed().as_secs_f64();
        return report;
    }
    for depth in 1..=options.depth {
        let level_started = std::time::Instant::now();
        let search = Search::new(options);
        search.remember(key(&root), depth);
        search.run(root.child(), depth);
        let visited = search.visited.load(Ordering::Relaxed);
        let cut_short = search.cut_short.load(Ordering::Relaxed);
        let violation = search
            .violation
            .into_inner()
            .unwrap_or_else(|e| e.into_inner());
        report.visited += visited;
        report.distinct = search.distinct.load(Ordering::Relaxed) as u64;
        progress(Level {
            depth,
            distinct: report.distinct,
            visited,
            seconds: level_started.elapsed().as_secs_f64(),
        });
        if violation.is_some() || cut_short {
            report.violation = violation;
            report.complete = !cut_short;
            report.depth = if cut_short { depth - 1 } else { depth };
            break;
        }
        report.depth = depth;
    }
    report.seconds = started.elapsed().as_secs_f64();
    report
}

/// How many shards the map of states met is cut into (by key), so that threads seldom wait
/// for each other.
const SHARDS: usize = 64;

/// One depth-first search of the iterative deepening, on `options.threads` threads sharing
/// the states met.
struct Search<'o> {
    options: &'o ExploreOptions,
    /// Each state met, with the most events that were left to spend from it.
    seen: Vec<Mutex<HashMap<u128, usize>>>,
    distinct: AtomicUsize,
    visited: AtomicU64,
    cut_short: AtomicBool,
    /// Set once a violation is found or the search is cut short: every thread stops.
    stop: AtomicBool,
    violation: Mutex<Option<Violation>>,
}

impl<'o> Search<'o> {
    fn new(options: &'o ExploreOptions) -> Self {
        Self {
            options,
            seen: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            distinct: AtomicUsize::new(0),
            visited: AtomicU64::new(0),
            cut_short: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            violation: Mutex::new(None),
        }
    }

    /// Notes that `key` was met with `left` events to spend; false if it was met before with
    /// as many (nothing new to search from it).
    fn remember(&self, key: u128, left: usize) -> bool {
        let shard = &self.seen[(key as usize) % SHARDS];
        let mut shard = shard.lock().unwrap_or_else(|e| e.into_inner());
        match shard.entry(key) {
            Entry::Occupied(mut seen) => {
                if *seen.get() >= left {
                    return false;
                }
                seen.insert(left);
            }
            Entry::Vacant(new) => {
                new.insert(left);
                if self.distinct.fetch_add(1, Ordering::Relaxed) + 1 >= self.options.max_states {
                    self.cut_short.store(true, Ordering::Relaxed);
                    self.stop.store(true, Ordering::Relaxed);
                }
            }
        }
        true
    }

    /// Takes the choice at `position` from `state`, with `left` events left after it: the
    /// state it leads to if that was not met before with as many events left (and the search
    /// goes on).
    fn step(&self, state: &State, position: usize, choice: &Choice, left: usize) -> Option<State> {
        let mut child = state.child();
        apply(&mut child, choice, self.options);
        child.positions.push(position);
        self.visited.fetch_add(1, Ordering::Relaxed);
        if let Some(failure) = child.sim.failure() {
            let mut found = self.violation.lock().unwrap_or_else(|e| e.into_inner());
            // Several threads may find one at this bound (all of its length): keep the first
            // in path order of those found.
            let earlier = found
                .as_ref()
                .is_some_and(|v| v.positions <= child.positions);
            if !earlier {
                *found = Some(Violation {
                    path: child.path,
                    positions: child.positions,
                    failure: failure.clone(),
                });
            }
            self.stop.store(true, Ordering::Relaxed);
            return None;
        }
        (self.remember(key(&child), left) && !self.stop.load(Ordering::Relaxed)).then_some(child)
    }

    /// Searches every path of up to `left` events from `root`: on this thread alone, or cut
    /// into subtrees (the states a few events down) that the threads take one at a time.
    fn run(&self, root: State, left: usize) {
        let threads = self.options.threads.max(1);
        if threads == 1 {
            self.dfs(&root, left);
            return;
        }
        // Breadth first until there are enough subtrees to share out evenly.
        let mut frontier = vec![root];
        let mut left = left;
        while frontier.len() < 16 * threads && left > 0 && !self.stop.load(Ordering::Relaxed) {
            let mut next = Vec::new();
            for state in &frontier {
                for (position, choice) in choices(state, self.options).into_iter().enumerate() {
                    if let Some(child) = self.step(state, position, &choice, left - 1) {
                        next.push(child);
                    }
                }
            }
            frontier = next;
            left -= 1;
        }
        if left == 0 {
            return;
        }
        let taken = AtomicUsize::new(0);
        std::thread::scope(|scope| {
            for _ in 0..threads {
                scope.spawn(|| loop {
                    let i = taken.fetch_add(1, Ordering::Relaxed);
                    if i >= frontier.len() || self.stop.load(Ordering::Relaxed) {
                        break;
                    }
                    self.dfs(&frontier[i], left);
                });
            }
        });
    }

    /// Searches every path of up to `left` (at least 1) events from `state`.
    fn dfs(&self, state: &State, left: usize) {
        for (position, choice) in choices(state, self.options).into_iter().enumerate() {
            if self.stop.load(Ordering::Relaxed) {
                return;
            }
            if let Some(child) = self.step(state, position, &choice, left - 1) {
                if left > 1 {
                    self.dfs(&child, left - 1);
                }
            }
        }
    }
}

/// Runs a path given as positions (see [`Violation::positions`]) from the start: the
/// simulator at its end and the path, or the judge's verdict and the path up to it; `None` if
/// a position names no open choice.
pub fn replay_positions(
    options: &ExploreOptions,
    positions: &[usize],
) -> Option<(Result<Sim, Failure>, Vec<Choice>)> {
    let mut state = State::origin(options);
    if !state.follow(options, positions) {
        return None;
    }
    if let Some(failure) = state.sim.failure() {
        return Some((Err(failure.clone()), state.path));
    }
    Some((Ok(state.sim), state.path))
}

/// The choices open after the path given as positions (see [`replay_positions`]), in the
/// order their positions count: `None` if a position names no open choice or the path fails
/// on the way.
pub fn open_choices(options: &ExploreOptions, positions: &[usize]) -> Option<Vec<Choice>> {
    let mut state = State::origin(options);
    let fits = state.follow(options, positions);
    (fits && state.sim.failure().is_none()).then(|| choices(&state, options))
}

/// Runs `path` again from the start: the simulator at its end, or the judge's verdict if it
/// fails on the way (a path a violation was reported with fails at its last step).
pub fn replay(options: &ExploreOptions, path: &[Choice]) -> Result<Sim, Failure> {
    let mut state = State::origin(options);
    for choice in path {
        apply(&mut state, choice, options);
        if let Some(failure) = state.sim.failure() {
            return Err(failure.clone());
        }
    }
    Ok(state.sim)
}
