//! The MIT 6.824 Raft lab scenarios (2A, 2B, 2C, 2D) with the lab's steps and bounds, restated
//! for the simulator, and the lab tester's checks (`check_one_leader`, `one`, `wait`, ...).
//!
//! Each scenario is a function of a [`Sim`] built from [`Scenario::options`]; run one with
//! [`Scenario::run`] or find it by name with [`find`].

use std::collections::BTreeMap;
use std::format;
use std::string::String;
use std::vec::Vec;

use super::beyond::{
    checkquorum_isolated_leader, checkquorum_sticky_leader, one_way_link, paused_leader,
    prevote_minority_partition, prevote_rejoin,
};
use super::reads::{
    follower_read, lease_read, lease_setup, read_deposed_leader, read_index, read_setup,
    retried_writes, transfer_lagging, transfer_target_crash, transfer_up_to_date,
};
use super::reconfig::{
    add_learner, bad_changes, crash_in_joint, grow_from_one, partition_in_joint, promote_learner,
    remove_follower, remove_leader, replace_all,
};
use super::{Failure, Sim, SimOptions, MS, SECOND};
use crate::rng::Rng;
use crate::types::{Index, Payload, Term};

/// The lab's election timeout, used for its sleeps.
const ELECTION_TIMEOUT: u64 = SECOND;

/// Every scenario must finish within this much virtual time.
pub const TIME_LIMIT: u64 = 120 * SECOND;

/// One lab scenario: a name, a cluster size and a script.
#[derive(Clone, Copy)]
pub struct Scenario {
    /// The snake_case name, as the tests and the runner use it.
    pub name: &'static str,
    /// How many servers.
    pub nodes: usize,
    /// Whether the network starts unreliable.
    pub unreliable: bool,
    /// Whether the application snapshots every 10 applied entries (the 2D scenarios).
    pub snapshots: bool,
    /// Whether it is one of the MIT 6.824 lab's (else one of SCENARIOS-BEYOND.md's).
    pub lab: bool,
    /// Adjusts the options further (bootstrap voters, snapshot interval).
    setup: fn(&mut SimOptions),
    script: fn(&mut Sim, &mut Rng) -> Result<(), Failure>,
}

impl core::fmt::Debug for Scenario {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Scenario")
            .field("name", &self.name)
            .finish()
    }
}

impl Scenario {
    /// The options this scenario's simulation starts with, for `seed`.
    pub fn options(&self, seed: u64) -> SimOptions {
        let mut options = SimOptions::new(self.nodes, seed);
        options.unreliable = self.unreliable;
        if self.snapshots {
            options.snapshot_interval = Some(SNAPSHOT_INTERVAL);
        }
        (self.setup)(&mut options);
        options
    }

    /// Runs the scenario with its default options.
    pub fn run(&self, seed: u64) -> Result<ScenarioReport, Failure> {
        self.run_with(self.options(seed))
    }

    /// Runs the scenario with `options` (for example with injected bugs). Fails on any safety
    /// violation, on a missed expectation, or when it takes more than [`TIME_LIMIT`].
    pub fn run_with(&self, options: SimOptions) -> Result<ScenarioReport, Failure> {
        let mut rng = Rng::new(options.seed ^ 0x7E57_7E57);
        let mut sim = Sim::new(options);
        (self.script)(&mut sim, &mut rng)?;
        if sim.now() > TIME_LIMIT {
            return Err(sim.fail(format!(
                "{} took {:.1} virtual seconds, more than the limit of {}",
                self.name,
                sim.now() as f64 / SECOND as f64,
                TIME_LIMIT / SECOND
            )));
        }
        Ok(ScenarioReport {
            virtual_time: sim.now(),
            counters: sim.counters(),
            peak_persisted_size: sim.peak_persisted_size(),
            digest: sim.digest(),
        })
    }
}

/// What a passing scenario run did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScenarioReport {
    /// Virtual time taken, in microseconds.
    pub virtual_time: u64,
    /// The run's counters (events, messages, bytes, snapshot transfers).
    pub counters: super::Counters,
    /// The largest persisted Raft state (hard state and log) any server ever had, in bytes
    /// (measured only when the application snapshots; 0 otherwise).
    pub peak_persisted_size: usize,
    /// The run's digest, when [`SimOptions::digest`] was on (0 otherwise).
    pub digest: u64,
}

macro_rules! scenarios {
    ($($lab:ident $name:ident: $nodes:expr, $unreliable:expr, $snapshots:expr $(, $setup:expr)?;)*) => {
        /// Every scenario: the lab's in the lab's order, then those of SCENARIOS-BEYOND.md.
        pub const ALL: &[Scenario] = &[
            $(Scenario {
                name: stringify!($name),
                nodes: $nodes,
                unreliable: $unreliable,
                snapshots: $snapshots,
                lab: scenarios!(@lab $lab),
                setup: scenarios!(@setup $($setup)?),
                script: $name,
            },)*
        ];
    };
    (@setup) => { |_| {} };
    (@setup $setup:expr) => { $setup };
    (@lab lab) => { true };
    (@lab beyond) => { false };
}

scenarios! {
    lab initial_election: 3, false, false;
    lab re_election: 3, false, false;
    lab many_elections: 7, false, false;
    lab basic_agree: 3, false, false;
    lab rpc_bytes: 3, false, false;
    lab follower_failure: 3, false, false;
    lab leader_failure: 3, false, false;
    lab fail_agree: 3, false, false;
    lab fail_no_agree: 5, false, false;
    lab concurrent_starts: 3, false, false;
    lab rejoin: 3, false, false;
    lab backup: 5, false, false;
    lab count: 3, false, false;
    lab persist1: 3, false, false;
    lab persist2: 5, false, false;
    lab persist3: 3, false, false;
    lab figure8: 5, false, false;
    lab unreliable_agree: 5, true, false;
    lab figure8_unreliable: 5, true, false;
    lab reliable_churn: 5, false, false;
    lab unreliable_churn: 5, true, false;
    lab snapshot_basic: 3, false, true;
    lab snapshot_install: 3, false, true;
    lab snapshot_install_unreliable: 3, true, true;
    lab snapshot_install_crash: 3, false, true;
    lab snapshot_install_uncrash: 3, true, true;
    lab snapshot_all_crash: 3, false, true;
    lab snapshot_init: 3, false, true;
    beyond prevote_rejoin: 5, false, false;
    beyond prevote_minority_partition: 5, false, false;
    beyond checkquorum_isolated_leader: 5, false, false;
    beyond checkquorum_sticky_leader: 3, false, false;
    beyond one_way_link: 3, false, false;
    beyond paused_leader: 3, false, false;
    beyond add_learner: 4, false, false, |o| {
        o.initial_voters = Some(3);
        o.snapshot_interval = Some(100);
    };
    beyond promote_learner: 4, false, false, |o| {
        o.initial_voters = Some(3);
        o.snapshot_interval = Some(100);
    };
    beyond remove_follower: 5, false, false;
    beyond remove_leader: 5, false, false;
    beyond replace_all: 6, false, false, |o| o.initial_voters = Some(3);
    beyond grow_from_one: 3, false, false, |o| o.initial_voters = Some(1);
    beyond crash_in_joint: 5, false, false;
    beyond partition_in_joint: 5, false, false, |o| o.initial_voters = Some(3);
    beyond bad_changes: 3, false, false;
    beyond read_index: 3, true, false, read_setup;
    beyond read_deposed_leader: 5, false, false, read_setup;
    beyond lease_read: 3, false, false, lease_setup;
    beyond follower_read: 3, true, false, read_setup;
    beyond transfer_up_to_date: 3, false, false;
    beyond transfer_lagging: 3, false, false;
    beyond transfer_target_crash: 3, false, false;
    beyond retried_writes: 3, true, false, read_setup;
    beyond streamed_snapshot_install_unreliable: 3, true, true, streamed_setup;
    beyond streamed_snapshot_install_crash: 3, false, true, streamed_setup;
    beyond streamed_snapshot_all_crash: 3, false, true, streamed_setup;
}

/// Streamed snapshots ([`SimOptions::stream_snapshots`]) in chunks of 64 bytes: most
/// transfers take several.
fn streamed_setup(options: &mut SimOptions) {
    options.stream_snapshots = true;
    options.snapshot_chunk = 64;
}

/// The lab's `snapshot_install_unreliable` with streamed snapshots.
fn streamed_snapshot_install_unreliable(sim: &mut Sim, rng: &mut Rng) -> Result<(), Failure> {
    snapshot_install_unreliable(sim, rng)
}

/// The lab's `snapshot_install_crash` with streamed snapshots.
fn streamed_snapshot_install_crash(sim: &mut Sim, rng: &mut Rng) -> Result<(), Failure> {
    snapshot_install_crash(sim, rng)
}

/// The lab's `snapshot_all_crash` with streamed snapshots.
fn streamed_snapshot_all_crash(sim: &mut Sim, rng: &mut Rng) -> Result<(), Failure> {
    snapshot_all_crash(sim, rng)
}

/// The lab's snapshot interval: the service snapshots after every 10th applied entry.
pub const SNAPSHOT_INTERVAL: u64 = 10;

/// The lab's bound on the persisted Raft state (term, vote, log) in the 2D scenarios.
pub const MAX_LOG_SIZE: usize = 2000;

/// The scenario called `name`.
pub fn find(name: &str) -> Option<&'static Scenario> {
    ALL.iter().find(|s| s.name == name)
}

/// The lab's integer commands, as payloads.
pub fn command(x: u64) -> Payload {
    Payload::from(x.to_le_bytes())
}

fn as_command(payload: &Payload) -> Option<u64> {
    Some(u64::from_le_bytes(payload[..].try_into().ok()?))
}

// --- The lab tester's checks ------------------------------------------------------------------

impl Sim {
    fn live_and_connected(&self, s: usize) -> bool {
        self.is_alive(s) && self.is_connected(s)
    }

    /// Polls up to 10 times, 450–549 ms apart, for a leader among the connected servers; fails
    /// if a term has two, returns the leader of the highest term.
    pub fn check_one_leader(&mut self) -> Result<usize, Failure> {
        for _ in 0..10 {
            let pause = 450 + self.rng.range(0, 100);
            self.sleep(pause * MS)?;
            let mut leaders: BTreeMap<Term, Vec<usize>> = BTreeMap::new();
            for s in 0..self.len() {
                if let Some(node) = self.node(s).filter(|_| self.is_connected(s)) {
                    if node.is_leader() {
                        leaders.entry(node.term()).or_default().push(s);
                    }
                }
            }
            if let Some((term, ls)) = leaders.iter().find(|(_, ls)| ls.len() > 1) {
                return Err(self.fail(format!("term {term} has {} (>1) leaders", ls.len())));
            }
            if let Some((_, ls)) = leaders.last_key_value() {
                return Ok(ls[0]);
            }
        }
        Err(self.fail("expected one leader, got none"))
    }

    /// Every connected server reports the same term; returns it.
    pub fn check_terms(&self) -> Result<Term, Failure> {
        let mut term = None;
        for s in 0..self.len() {
            if let Some(node) = self.node(s).filter(|_| self.is_connected(s)) {
                match term {
                    None => term = Some(node.term()),
                    Some(t) if t != node.term() => {
                        return Err(self.fail("servers disagree on term"));
                    }
                    Some(_) => {}
                }
            }
        }
        term.ok_or_else(|| self.fail("no connected server to ask for its term"))
    }

    /// No connected server claims leadership.
    pub fn check_no_leader(&self) -> Result<(), Failure> {
        for s in 0..self.len() {
            if self.live_and_connected(s) && self.node(s).is_some_and(|n| n.is_leader()) {
                return Err(self.fail(format!("expected no leader, but {} claims to be", s + 1)));
            }
        }
        Ok(())
    }

    /// The lab's `one`: proposes `command` at the connected servers in turn until one accepts,
    /// then waits up to 2 s for `expected` servers to apply it at that index; with `retry`,
    /// tries again until 10 s have passed. Returns the index.
    pub fn one(
        &mut self,
        command: impl Into<Payload>,
        expected: usize,
        retry: bool,
    ) -> Result<Index, Failure> {
        let mut task = One::new(self, command.into(), expected, retry);
        loop {
            match task.poll(self)? {
                Poll::Ready(index) => return Ok(index),
                Poll::Pending(at) => self.run_until(at)?,
            }
        }
    }

    /// The lab's `wait`: backs off from 10 ms to 1 s, 30 rounds, until `n` servers applied
    /// `index`. Returns `None` ("term changed") as soon as a live server's term exceeds
    /// `start_term`.
    pub fn wait(
        &mut self,
        index: Index,
        n: usize,
        start_term: Option<Term>,
    ) -> Result<Option<Payload>, Failure> {
        let mut pause = 10 * MS;
        for _ in 0..30 {
            if self.n_committed(index).0 >= n {
                break;
            }
            self.sleep(pause)?;
            if pause < SECOND {
                pause *= 2;
            }
            if let Some(start) = start_term {
                if (0..self.len()).any(|s| self.node(s).is_some_and(|n| n.term() > start)) {
                    return Ok(None);
                }
            }
        }
        let (nd, command) = self.n_committed(index);
        if nd < n {
            return Err(self.fail(format!("only {nd} decided for index {index}; wanted {n}")));
        }
        Ok(command)
    }
}

enum Poll<T> {
    Ready(T),
    /// Call again at this time.
    Pending(u64),
}

/// The state of one `one()` call, so that several can run at once (UnreliableAgree).
struct One {
    command: Payload,
    expected: usize,
    retry: bool,
    started: u64,
    starts: usize,
    waiting: Option<(Index, u64)>,
}

impl One {
    fn new(sim: &Sim, command: Payload, expected: usize, retry: bool) -> Self {
        Self {
            command,
            expected,
            retry,
            started: sim.now(),
            starts: 0,
            waiting: None,
        }
    }

    fn poll(&mut self, sim: &mut Sim) -> Result<Poll<Index>, Failure> {
        let failed = |sim: &Sim, this: &Self| {
            sim.fail(format!(
                "one({:?}) failed to reach agreement on {} servers",
                as_command(&this.command),
                this.expected
            ))
        };
        if let Some((index, since)) = self.waiting {
            let (nd, command) = sim.n_committed(index);
            if nd > 0 && nd >= self.expected && command.as_ref() == Some(&self.command) {
                return Ok(Poll::Ready(index));
            }
            if sim.now() - since < 2 * SECOND {
                return Ok(Poll::Pending(sim.now() + 20 * MS));
            }
            if !self.retry {
                return Err(failed(sim, self));
            }
            self.waiting = None;
        }
        if sim.now() - self.started >= 10 * SECOND {
            return Err(failed(sim, self));
        }
        for _ in 0..sim.len() {
            self.starts = (self.starts + 1) % sim.len();
            if sim.is_connected(self.starts) {
                if let Some((index, _)) = sim.propose(self.starts, self.command.clone()) {
                    self.waiting = Some((index, sim.now()));
                    return Ok(Poll::Pending(sim.now()));
                }
            }
        }
        Ok(Poll::Pending(sim.now() + 50 * MS))
    }
}

/// A churn client: proposes random values everywhere, and records those it sees committed.
struct ChurnClient {
    me: u64,
    seen: Vec<u64>,
    /// The value proposed and its index, and the pauses still to wait for it.
    pending: Option<(u64, Index, usize)>,
}

const CHURN_PAUSES: [u64; 5] = [10, 20, 50, 100, 200];

impl ChurnClient {
    /// Stops proposing; finishes waiting for the last value, and returns the values seen.
    fn finish(mut self, sim: &mut Sim) -> Result<Vec<u64>, Failure> {
        if let Some((x, index, mut round)) = self.pending.take() {
            loop {
                let (nd, command) = sim.n_committed(index);
                if nd > 0 {
                    if command.as_ref().and_then(as_command) == Some(x) {
                        self.seen.push(x);
                    }
                    break;
                }
                if round >= CHURN_PAUSES.len() {
                    break;
                }
                sim.sleep(CHURN_PAUSES[round] * MS)?;
                round += 1;
            }
        }
        Ok(self.seen)
    }

    fn poll(&mut self, sim: &mut Sim, rng: &mut Rng) -> u64 {
        if let Some((x, index, round)) = self.pending {
            let (nd, command) = sim.n_committed(index);
            if nd > 0 {
                if command.as_ref().and_then(as_command) == Some(x) {
                    self.seen.push(x);
                }
                self.pending = None;
            } else if round < CHURN_PAUSES.len() {
                self.pending = Some((x, index, round + 1));
                return sim.now() + CHURN_PAUSES[round] * MS;
            } else {
                self.pending = None;
            }
        }
        let x = rng.next_u64() >> 1;
        let mut accepted = None;
        for s in 0..sim.len() {
            if let Some((index, _)) = sim.propose(s, command(x)) {
                accepted = Some(index);
            }
        }
        match accepted {
            Some(index) => {
                self.pending = Some((x, index, 0));
                sim.now()
            }
            None => sim.now() + (79 + self.me * 17) * MS,
        }
    }
}

/// Runs the `One` tasks in `background` (dropping those that finish) until `until`.
fn run_background(
    sim: &mut Sim,
    background: &mut Vec<(One, u64)>,
    until: u64,
) -> Result<(), Failure> {
    loop {
        let next = background
            .iter()
            .map(|(_, at)| *at)
            .min()
            .unwrap_or(u64::MAX);
        if next > until {
            return sim.run_until(until);
        }
        sim.run_until(next)?;
        let mut i = 0;
        while i < background.len() {
            if background[i].1 <= sim.now() {
                match background[i].0.poll(sim)? {
                    Poll::Ready(_) => {
                        background.swap_remove(i);
                        continue;
                    }
                    Poll::Pending(at) => background[i].1 = at,
                }
            }
            i += 1;
        }
    }
}

// --- 2A: election -----------------------------------------------------------------------------

fn initial_election(sim: &mut Sim, _: &mut Rng) -> Result<(), Failure> {
    sim.check_one_leader()?;
    sim.sleep(50 * MS)?;
    let term1 = sim.check_terms()?;
    if term1 < 1 {
        return Err(sim.fail(format!("term is {term1}, but should be at least 1")));
    }
    // Does the leader stay leader (and the term the same) with no failure? Only a warning in
    // the lab.
    sim.sleep(2 * ELECTION_TIMEOUT)?;
    let _term2 = sim.check_terms()?;
    sim.check_one_leader()?;
    Ok(())
}

fn re_election(sim: &mut Sim, _: &mut Rng) -> Result<(), Failure> {
    let n = sim.len();
    let leader1 = sim.check_one_leader()?;
    sim.disconnect(leader1);
    sim.check_one_leader()?;
    sim.connect(leader1);
    let leader2 = sim.check_one_leader()?;
    sim.disconnect(leader2);
    sim.disconnect((leader2 + 1) % n);
    sim.sleep(2 * ELECTION_TIMEOUT)?;
    sim.check_no_leader()?;
    sim.connect((leader2 + 1) % n);
    sim.check_one_leader()?;
    sim.connect(leader2);
    sim.check_one_leader()?;
    Ok(())
}

fn many_elections(sim: &mut Sim, rng: &mut Rng) -> Result<(), Failure> {
    let n = sim.len() as u64;
    sim.check_one_leader()?;
    for _ in 1..10 {
        let picks = [rng.range(0, n), rng.range(0, n), rng.range(0, n)].map(|x| x as usize);
        picks.iter().for_each(|&s| sim.disconnect(s));
        sim.check_one_leader()?;
        picks.iter().for_each(|&s| sim.connect(s));
    }
    sim.check_one_leader()?;
    Ok(())
}

// --- 2B: agreement ----------------------------------------------------------------------------

fn basic_agree(sim: &mut Sim, _: &mut Rng) -> Result<(), Failure> {
    for index in 1..=3 {
        if sim.n_committed(index).0 > 0 {
            return Err(sim.fail("some have committed before Start()"));
        }
        let got = sim.one(command(index * 100), 3, false)?;
        if got != index {
            return Err(sim.fail(format!("got index {got} but expected {index}")));
        }
    }
    Ok(())
}

fn rpc_bytes(sim: &mut Sim, rng: &mut Rng) -> Result<(), Failure> {
    sim.one(command(99), 3, false)?;
    let bytes0 = sim.counters().bytes;
    let mut sent = 0u64;
    for index in 2..12 {
        let payload: Vec<u8> = (0..5000).map(|_| b'a' + (rng.range(0, 26) as u8)).collect();
        sent += payload.len() as u64;
        let got = sim.one(payload, 3, false)?;
        if got != index {
            return Err(sim.fail(format!("got index {got} but expected {index}")));
        }
    }
    let got = sim.counters().bytes - bytes0;
    let expected = 3 * sent;
    if got > expected + 50_000 {
        return Err(sim.fail(format!(
            "too many RPC bytes; got {got}, expected {expected} (+50000)"
        )));
    }
    Ok(())
}

fn follower_failure(sim: &mut Sim, _: &mut Rng) -> Result<(), Failure> {
    let n = sim.len();
    sim.one(command(101), 3, false)?;
    let leader1 = sim.check_one_leader()?;
    sim.disconnect((leader1 + 1) % n);
    sim.one(command(102), 2, false)?;
    sim.sleep(ELECTION_TIMEOUT)?;
    sim.one(command(103), 2, false)?;
    let leader2 = sim.check_one_leader()?;
    sim.disconnect((leader2 + 1) % n);
    sim.disconnect((leader2 + 2) % n);
    let Some((index, _)) = sim.propose(leader2, command(104)) else {
        return Err(sim.fail("leader rejected Start()"));
    };
    if index != 4 {
        return Err(sim.fail(format!("expected index 4, got {index}")));
    }
    sim.sleep(2 * ELECTION_TIMEOUT)?;
    if sim.n_committed(index).0 > 0 {
        return Err(sim.fail(format!("{index} committed but no majority")));
    }
    Ok(())
}

fn leader_failure(sim: &mut Sim, _: &mut Rng) -> Result<(), Failure> {
    sim.one(command(101), 3, false)?;
    let leader1 = sim.check_one_leader()?;
    sim.disconnect(leader1);
    sim.one(command(102), 2, false)?;
    sim.sleep(ELECTION_TIMEOUT)?;
    sim.one(command(103), 2, false)?;
    let leader2 = sim.check_one_leader()?;
    sim.disconnect(leader2);
    for s in 0..sim.len() {
        let _ = sim.propose(s, command(104));
    }
    sim.sleep(2 * ELECTION_TIMEOUT)?;
    if sim.n_committed(4).0 > 0 {
        return Err(sim.fail("4 committed but no majority"));
    }
    Ok(())
}

fn fail_agree(sim: &mut Sim, _: &mut Rng) -> Result<(), Failure> {
    let n = sim.len();
    sim.one(command(101), 3, false)?;
    let leader = sim.check_one_leader()?;
    sim.disconnect((leader + 1) % n);
    sim.one(command(102), 2, false)?;
    sim.one(command(103), 2, false)?;
    sim.sleep(ELECTION_TIMEOUT)?;
    sim.one(command(104), 2, false)?;
    sim.one(command(105), 2, false)?;
    sim.connect((leader + 1) % n);
    sim.one(command(106), 3, true)?;
    sim.sleep(ELECTION_TIMEOUT)?;
    sim.one(command(107), 3, true)?;
    Ok(())
}

fn fail_no_agree(sim: &mut Sim, _: &mut Rng) -> Result<(), Failure> {
    let n = sim.len();
    sim.one(command(10), n, false)?;
    let leader = sim.check_one_leader()?;
    for k in 1..=3 {
        sim.disconnect((leader + k) % n);
    }
    let Some((index, _)) = sim.propose(leader, command(20)) else {
        return Err(sim.fail("leader rejected Start()"));
    };
    if index != 2 {
        return Err(sim.fail(format!("expected index 2, got {index}")));
    }
    sim.sleep(2 * ELECTION_TIMEOUT)?;
    let (nd, _) = sim.n_committed(index);
    if nd > 0 {
        return Err(sim.fail(format!("{nd} committed but no majority")));
    }
    for k in 1..=3 {
        sim.connect((leader + k) % n);
    }
    let leader2 = sim.check_one_leader()?;
    let Some((index2, _)) = sim.propose(leader2, command(30)) else {
        return Err(sim.fail("leader2 rejected Start()"));
    };
    if !(2..=3).contains(&index2) {
        return Err(sim.fail(format!("unexpected index {index2}")));
    }
    sim.one(command(1000), n, true)?;
    Ok(())
}

fn concurrent_starts(sim: &mut Sim, _: &mut Rng) -> Result<(), Failure> {
    'tries: for attempt in 0..5 {
        if attempt > 0 {
            // Give the solution some time to settle.
            sim.sleep(3 * SECOND)?;
        }
        let leader = sim.check_one_leader()?;
        let Some((_, term)) = sim.propose(leader, command(1)) else {
            continue;
        };
        let mut indexes = Vec::new();
        for i in 0..5 {
            match sim.propose(leader, command(100 + i)) {
                Some((index, t)) if t == term => indexes.push(index),
                _ => {}
            }
        }
        if (0..sim.len()).any(|s| sim.node(s).is_some_and(|n| n.term() != term)) {
            continue; // term changed: can't expect low RPC counts
        }
        let mut commands = Vec::new();
        for index in indexes {
            match sim.wait(index, sim.len(), Some(term))? {
                Some(c) => commands.extend(as_command(&c)),
                None => continue 'tries, // peers have moved on to later terms
            }
        }
        for i in 0..5 {
            if !commands.contains(&(100 + i)) {
                return Err(sim.fail(format!("cmd {} missing in {commands:?}", 100 + i)));
            }
        }
        return Ok(());
    }
    Err(sim.fail("term changed too often"))
}

fn rejoin(sim: &mut Sim, _: &mut Rng) -> Result<(), Failure> {
    sim.one(command(101), 3, true)?;
    let leader1 = sim.check_one_leader()?;
    sim.disconnect(leader1);
    for c in [102, 103, 104] {
        let _ = sim.propose(leader1, command(c));
    }
    sim.one(command(103), 2, true)?;
    let leader2 = sim.check_one_leader()?;
    sim.disconnect(leader2);
    sim.connect(leader1);
    sim.one(command(104), 2, true)?;
    sim.connect(leader2);
    sim.one(command(105), 3, true)?;
    Ok(())
}

fn backup(sim: &mut Sim, rng: &mut Rng) -> Result<(), Failure> {
    let n = sim.len();
    sim.one(command(rng.next_u64()), n, true)?;
    let leader1 = sim.check_one_leader()?;
    for k in 2..=4 {
        sim.disconnect((leader1 + k) % n);
    }
    for _ in 0..50 {
        let _ = sim.propose(leader1, command(rng.next_u64()));
    }
    sim.sleep(ELECTION_TIMEOUT / 2)?;
    sim.disconnect(leader1 % n);
    sim.disconnect((leader1 + 1) % n);
    for k in 2..=4 {
        sim.connect((leader1 + k) % n);
    }
    for _ in 0..50 {
        sim.one(command(rng.next_u64()), 3, true)?;
    }
    let leader2 = sim.check_one_leader()?;
    let mut other = (leader1 + 2) % n;
    if leader2 == other {
        other = (leader2 + 1) % n;
    }
    sim.disconnect(other);
    for _ in 0..50 {
        let _ = sim.propose(leader2, command(rng.next_u64()));
    }
    sim.sleep(ELECTION_TIMEOUT / 2)?;
    for s in 0..n {
        sim.disconnect(s);
    }
    sim.connect(leader1 % n);
    sim.connect((leader1 + 1) % n);
    sim.connect(other);
    for _ in 0..50 {
        sim.one(command(rng.next_u64()), 3, true)?;
    }
    for s in 0..n {
        sim.connect(s);
    }
    sim.one(command(rng.next_u64()), n, true)?;
    Ok(())
}

fn count(sim: &mut Sim, rng: &mut Rng) -> Result<(), Failure> {
    let n = sim.len();
    let rpcs = |sim: &Sim| (0..n).map(|s| sim.requests_received(s)).sum::<u64>();
    sim.check_one_leader()?;
    let total1 = rpcs(sim);
    if !(1..=30).contains(&total1) {
        return Err(sim.fail(format!(
            "too many or few RPCs ({total1}) to elect initial leader"
        )));
    }
    let mut total2 = 0;
    let mut success = false;
    'tries: for attempt in 0..5 {
        if attempt > 0 {
            sim.sleep(3 * SECOND)?;
        }
        let leader = sim.check_one_leader()?;
        let total1 = rpcs(sim);
        let iters = 10;
        let Some((start_index, term)) = sim.propose(leader, command(1)) else {
            continue;
        };
        let mut commands = Vec::new();
        for i in 1..iters + 2 {
            let x = rng.next_u64() >> 1;
            commands.push(x);
            match sim.propose(leader, command(x)) {
                Some((index, t)) if t == term => {
                    if index != start_index + i {
                        return Err(sim.fail("Start() failed"));
                    }
                }
                _ => continue 'tries,
            }
        }
        for i in 1..iters + 1 {
            match sim.wait(start_index + i, n, Some(term))? {
                None => continue 'tries,
                Some(c) if as_command(&c) == Some(commands[i as usize - 1]) => {}
                Some(_) => {
                    return Err(sim.fail(format!(
                        "wrong value committed for index {}",
                        start_index + i
                    )))
                }
            }
        }
        if (0..n).any(|s| sim.node(s).is_some_and(|node| node.term() != term)) {
            continue;
        }
        total2 = rpcs(sim);
        if total2 - total1 > (iters + 1 + 3) * 3 {
            return Err(sim.fail(format!(
                "too many RPCs ({}) for {iters} entries",
                total2 - total1
            )));
        }
        success = true;
        break;
    }
    if !success {
        return Err(sim.fail("term changed too often"));
    }
    sim.sleep(ELECTION_TIMEOUT)?;
    let total3 = rpcs(sim);
    if total3 - total2 > 3 * 20 {
        return Err(sim.fail(format!(
            "too many RPCs ({}) for 1 second of idleness",
            total3 - total2
        )));
    }
    Ok(())
}

// --- 2C: persistence --------------------------------------------------------------------------

fn persist1(sim: &mut Sim, _: &mut Rng) -> Result<(), Failure> {
    let n = sim.len();
    sim.one(command(11), n, true)?;
    // Crash and restart all servers.
    for s in 0..n {
        sim.start(s);
    }
    for s in 0..n {
        sim.connect(s);
    }
    sim.one(command(12), n, true)?;
    let leader1 = sim.check_one_leader()?;
    sim.start(leader1);
    sim.connect(leader1);
    sim.one(command(13), n, true)?;
    let leader2 = sim.check_one_leader()?;
    sim.disconnect(leader2);
    sim.one(command(14), n - 1, true)?;
    sim.start(leader2);
    sim.connect(leader2);
    // Wait for leader2 to join before killing i3.
    sim.wait(4, n, None)?;
    let i3 = (sim.check_one_leader()? + 1) % n;
    sim.disconnect(i3);
    sim.one(command(15), n - 1, true)?;
    sim.start(i3);
    sim.connect(i3);
    sim.one(command(16), n, true)?;
    Ok(())
}

fn persist2(sim: &mut Sim, _: &mut Rng) -> Result<(), Failure> {
    let n = sim.len();
    let mut index = 1;
    for _ in 0..5 {
        sim.one(command(10 + index), n, true)?;
        index += 1;
        let leader1 = sim.check_one_leader()?;
        sim.disconnect((leader1 + 1) % n);
        sim.disconnect((leader1 + 2) % n);
        sim.one(command(10 + index), n - 2, true)?;
        index += 1;
        sim.disconnect(leader1 % n);
        sim.disconnect((leader1 + 3) % n);
        sim.disconnect((leader1 + 4) % n);
        sim.start((leader1 + 1) % n);
        sim.start((leader1 + 2) % n);
        sim.connect((leader1 + 1) % n);
        sim.connect((leader1 + 2) % n);
        sim.sleep(ELECTION_TIMEOUT)?;
        sim.start((leader1 + 3) % n);
        sim.connect((leader1 + 3) % n);
        sim.one(command(10 + index), n - 2, true)?;
        index += 1;
        sim.connect((leader1 + 4) % n);
        sim.connect(leader1 % n);
    }
    sim.one(command(1000), n, true)?;
    Ok(())
}

fn persist3(sim: &mut Sim, _: &mut Rng) -> Result<(), Failure> {
    let n = sim.len();
    sim.one(command(101), 3, true)?;
    let leader = sim.check_one_leader()?;
    sim.disconnect((leader + 2) % n);
    sim.one(command(102), 2, true)?;
    sim.crash(leader % n);
    sim.crash((leader + 1) % n);
    sim.connect((leader + 2) % n);
    sim.start(leader % n);
    sim.connect(leader % n);
    sim.one(command(103), 2, true)?;
    sim.start((leader + 1) % n);
    sim.connect((leader + 1) % n);
    sim.one(command(104), n, true)?;
    Ok(())
}

fn figure8(sim: &mut Sim, rng: &mut Rng) -> Result<(), Failure> {
    let n = sim.len();
    sim.one(command(rng.next_u64()), 1, true)?;
    let mut up = n;
    for _ in 0..1000 {
        let mut leader = None;
        for s in 0..n {
            if sim.is_alive(s) && sim.propose(s, command(rng.next_u64())).is_some() {
                leader = Some(s);
            }
        }
        sim.sleep(figure8_pause(rng))?;
        if let Some(leader) = leader {
            sim.crash(leader);
            up -= 1;
        }
        if up < 3 {
            let s = rng.range(0, n as u64) as usize;
            if !sim.is_alive(s) {
                sim.start(s);
                sim.connect(s);
                up += 1;
            }
        }
    }
    for s in 0..n {
        if !sim.is_alive(s) {
            sim.start(s);
            sim.connect(s);
        }
    }
    sim.one(command(rng.next_u64()), n, true)?;
    Ok(())
}

/// The Figure 8 scenarios' pause between rounds: usually under 13 ms, one time in ten up to
/// half an election timeout.
fn figure8_pause(rng: &mut Rng) -> u64 {
    if rng.chance(100, 1000) {
        rng.range(0, ELECTION_TIMEOUT / 2)
    } else {
        rng.range(0, 13 * MS)
    }
}

fn unreliable_agree(sim: &mut Sim, _: &mut Rng) -> Result<(), Failure> {
    let n = sim.len();
    let mut background: Vec<(One, u64)> = Vec::new();
    for iters in 1..50u64 {
        for j in 0..4 {
            let task = One::new(sim, command(100 * iters + j), 1, true);
            background.push((task, sim.now()));
        }
        // The sequential one() runs while the four above go on concurrently.
        let mut task = One::new(sim, command(iters), 1, true);
        loop {
            match task.poll(sim)? {
                Poll::Ready(_) => break,
                Poll::Pending(at) => run_background(sim, &mut background, at)?,
            }
        }
    }
    sim.set_reliable(true);
    while !background.is_empty() {
        let until = sim.now() + 20 * MS;
        run_background(sim, &mut background, until)?;
    }
    sim.one(command(100), n, true)?;
    Ok(())
}

fn figure8_unreliable(sim: &mut Sim, rng: &mut Rng) -> Result<(), Failure> {
    let n = sim.len();
    sim.one(command(rng.range(0, 10_000)), 1, true)?;
    let mut up = n;
    for iters in 0..1000 {
        if iters == 200 {
            sim.set_long_reordering(true);
        }
        let mut leader = None;
        for s in 0..n {
            if sim.propose(s, command(rng.range(0, 10_000))).is_some() && sim.is_connected(s) {
                leader = Some(s);
            }
        }
        sim.sleep(figure8_pause(rng))?;
        if let Some(leader) = leader {
            if rng.chance(500, 1000) {
                sim.disconnect(leader);
                up -= 1;
            }
        }
        if up < 3 {
            let s = rng.range(0, n as u64) as usize;
            if !sim.is_connected(s) {
                sim.connect(s);
                up += 1;
            }
        }
    }
    for s in 0..n {
        if !sim.is_connected(s) {
            sim.connect(s);
        }
    }
    sim.one(command(rng.range(0, 10_000)), n, true)?;
    Ok(())
}

fn reliable_churn(sim: &mut Sim, rng: &mut Rng) -> Result<(), Failure> {
    churn(sim, rng, false)
}

fn unreliable_churn(sim: &mut Sim, rng: &mut Rng) -> Result<(), Failure> {
    churn(sim, rng, true)
}

fn churn(sim: &mut Sim, rng: &mut Rng, unreliable: bool) -> Result<(), Failure> {
    let n = sim.len();
    sim.set_reliable(!unreliable);
    let mut clients: Vec<(ChurnClient, u64)> = (0..3)
        .map(|me| {
            let client = ChurnClient {
                me,
                seen: Vec::new(),
                pending: None,
            };
            (client, sim.now())
        })
        .collect();
    let mut client_rng = Rng::new(rng.next_u64());
    let mut run_clients = |sim: &mut Sim, clients: &mut Vec<(ChurnClient, u64)>, until: u64| loop {
        let next = clients.iter().map(|c| c.1).min().unwrap_or(u64::MAX);
        if next > until {
            return sim.run_until(until);
        }
        sim.run_until(next)?;
        for (client, at) in clients.iter_mut() {
            if *at <= sim.now() {
                *at = client.poll(sim, &mut client_rng);
            }
        }
    };
    for _ in 0..20 {
        if rng.chance(200, 1000) {
            sim.disconnect(rng.range(0, n as u64) as usize);
        }
        if rng.chance(500, 1000) {
            let s = rng.range(0, n as u64) as usize;
            if !sim.is_alive(s) {
                sim.start(s);
            }
            sim.connect(s);
        }
        if rng.chance(200, 1000) {
            let s = rng.range(0, n as u64) as usize;
            if sim.is_alive(s) {
                sim.crash(s);
            }
        }
        let until = sim.now() + ELECTION_TIMEOUT * 7 / 10;
        run_clients(sim, &mut clients, until)?;
    }
    let until = sim.now() + ELECTION_TIMEOUT;
    run_clients(sim, &mut clients, until)?;
    sim.set_reliable(true);
    for s in 0..n {
        if !sim.is_alive(s) {
            sim.start(s);
        }
        sim.connect(s);
    }
    // Stop the clients; a client waiting on a value finishes that wait first.
    let mut values = Vec::new();
    for (client, _) in clients {
        values.extend(client.finish(sim)?);
    }
    sim.sleep(ELECTION_TIMEOUT)?;
    let last_index = sim.one(command(rng.next_u64() >> 1), n, true)?;
    let mut really = Vec::new();
    for index in 1..=last_index {
        match sim.wait(index, n, None)? {
            Some(c) => really.extend(as_command(&c)),
            None => return Err(sim.fail(format!("nothing applied at index {index}"))),
        }
    }
    for v in values {
        if !really.contains(&v) {
            return Err(sim.fail(format!("didn't find a value ({v}) a client saw committed")));
        }
    }
    Ok(())
}

// --- 2D: snapshots ----------------------------------------------------------------------------

impl Sim {
    /// The largest persisted Raft state (hard state and log, without the snapshot) of any
    /// server, in bytes of our encoding.
    pub fn max_persisted_size(&self) -> usize {
        (0..self.len())
            .map(|s| self.persisted_size(s))
            .max()
            .unwrap_or(0)
    }
}

/// The lab's `snapcommon`: 30 rounds of proposals, with a victim disconnected or crashed for
/// a round when asked, the persisted Raft state staying under [`MAX_LOG_SIZE`].
fn snap_common(sim: &mut Sim, rng: &mut Rng, disconnect: bool, crash: bool) -> Result<(), Failure> {
    let n = sim.len();
    sim.one(command(rng.next_u64() >> 1), n, true)?;
    let mut leader1 = sim.check_one_leader()?;
    for i in 0..30 {
        let (sender, victim) = if i % 3 == 1 {
            ((leader1 + 1) % n, leader1)
        } else {
            (leader1, (leader1 + 1) % n)
        };
        if disconnect {
            sim.disconnect(victim);
            sim.one(command(rng.next_u64() >> 1), n - 1, true)?;
        }
        if crash {
            sim.crash(victim);
            sim.one(command(rng.next_u64() >> 1), n - 1, true)?;
        }
        // Perhaps send enough to get a snapshot.
        let count = SNAPSHOT_INTERVAL / 2 + rng.range(0, SNAPSHOT_INTERVAL);
        for _ in 0..count {
            let _ = sim.propose(sender, command(rng.next_u64() >> 1));
        }
        // Let the appliers catch up with the proposals.
        if !disconnect && !crash {
            // Make sure every follower caught up, so that no InstallSnapshot is needed for
            // snapshot_basic.
            sim.one(command(rng.next_u64() >> 1), n, true)?;
        } else {
            sim.one(command(rng.next_u64() >> 1), n - 1, true)?;
        }
        let size = sim.max_persisted_size();
        if size >= MAX_LOG_SIZE {
            let state: Vec<String> = (0..n)
                .map(|s| {
                    sim.node(s).map_or(String::from("down"), |node| {
                        format!(
                            "{}: snapshot {} last {} applied {}",
                            s + 1,
                            node.snapshot_index(),
                            node.last_log_index(),
                            node.applied_index()
                        )
                    })
                })
                .collect();
            return Err(sim.fail(format!(
                "log size too large: {size} bytes ({})",
                state.join("; ")
            )));
        }
        if disconnect {
            // Reconnect a follower, who may be behind and need a snapshot to catch up.
            sim.connect(victim);
            sim.one(command(rng.next_u64() >> 1), n, true)?;
            leader1 = sim.check_one_leader()?;
        }
        if crash {
            sim.start(victim);
            sim.connect(victim);
            sim.one(command(rng.next_u64() >> 1), n, true)?;
            leader1 = sim.check_one_leader()?;
        }
    }
    Ok(())
}

fn snapshot_basic(sim: &mut Sim, rng: &mut Rng) -> Result<(), Failure> {
    snap_common(sim, rng, false, false)
}

fn snapshot_install(sim: &mut Sim, rng: &mut Rng) -> Result<(), Failure> {
    snap_common(sim, rng, true, false)
}

fn snapshot_install_unreliable(sim: &mut Sim, rng: &mut Rng) -> Result<(), Failure> {
    snap_common(sim, rng, true, false)
}

fn snapshot_install_crash(sim: &mut Sim, rng: &mut Rng) -> Result<(), Failure> {
    snap_common(sim, rng, false, true)
}

fn snapshot_install_uncrash(sim: &mut Sim, rng: &mut Rng) -> Result<(), Failure> {
    snap_common(sim, rng, false, true)
}

fn crash_and_revive_all(sim: &mut Sim) {
    for s in 0..sim.len() {
        sim.crash(s);
    }
    for s in 0..sim.len() {
        sim.start(s);
        sim.connect(s);
    }
}

fn snapshot_all_crash(sim: &mut Sim, rng: &mut Rng) -> Result<(), Failure> {
    let n = sim.len();
    sim.one(command(rng.next_u64() >> 1), n, true)?;
    for _ in 0..5 {
        // Perhaps enough to get a snapshot.
        let count = SNAPSHOT_INTERVAL / 2 + rng.range(0, SNAPSHOT_INTERVAL);
        for _ in 0..count {
            sim.one(command(rng.next_u64() >> 1), n, true)?;
        }
        let index1 = sim.one(command(rng.next_u64() >> 1), n, true)?;
        crash_and_revive_all(sim);
        let index2 = sim.one(command(rng.next_u64() >> 1), n, true)?;
        if index2 < index1 + 1 {
            return Err(sim.fail(format!("index decreased from {index1} to {index2}")));
        }
    }
    Ok(())
}

fn snapshot_init(sim: &mut Sim, rng: &mut Rng) -> Result<(), Failure> {
    let n = sim.len();
    sim.one(command(rng.next_u64() >> 1), n, true)?;
    // Enough operations to make a snapshot.
    for _ in 0..SNAPSHOT_INTERVAL + 1 {
        sim.one(command(rng.next_u64() >> 1), n, true)?;
    }
    crash_and_revive_all(sim);
    // A single operation, to get something written back to persistent storage.
    sim.one(command(rng.next_u64() >> 1), n, true)?;
    crash_and_revive_all(sim);
    // Another operation, to trigger a potential bug.
    sim.one(command(rng.next_u64() >> 1), n, true)?;
    Ok(())
}
