//! The "Reads and leadership transfer" scenarios of ../shared/SCENARIOS-BEYOND.md. The read
//! scenarios run the key-value model ([`super::kv`]) with clients reading and writing
//! concurrently, and end by judging the clients' history with the linearizability checker;
//! on top of that, every read served anywhere is checked when it is served (at or above every
//! index committed before it was asked, and only once applied up to its index). The transfer
//! scenarios check the leader's hand-over: how fast, what happens to proposals meanwhile, and
//! the abort.

use std::format;

use super::kv::{KvOptions, KvReport, ReadMode, Target};
use super::scenarios::command;
use super::{Failure, Sim, SimOptions, MS, SECOND};
use crate::io::{ProposalOutcome, ProposalRefusal, TransferOutcome};
use crate::rng::Rng;
use crate::types::Role;

/// The options every read scenario shares: leaders append a no-op (a deployment's setting),
/// so a new leader serves reads without waiting for a client's write.
pub(super) fn read_setup(options: &mut SimOptions) {
    options.leader_noop = true;
}

/// The lease scenario's: lease reads on, with a drift bound of 50 ms against a minimum
/// election timeout of 300 ms, and clocks set 4 % apart (the leader's slow, the others'
/// fast): within the bound.
pub(super) fn lease_setup(options: &mut SimOptions) {
    read_setup(options);
    options.lease_reads = true;
    options.clock_drift_bound = 50 * MS;
    options.clock_drift_ppm = 40_000;
}

/// A follower other than `leader`.
fn follower(sim: &Sim, leader: usize, rng: &mut Rng) -> usize {
    (leader + 1 + rng.range(0, sim.len() as u64 - 1) as usize) % sim.len()
}

/// Disconnects the leader (if there is one) for `duration`, then reconnects it.
fn cut_leader_off(sim: &mut Sim, duration: u64) -> Result<(), Failure> {
    if let Some(leader) = sim.current_leader() {
        sim.disconnect(leader);
        sim.sleep(duration)?;
        sim.connect(leader);
    }
    Ok(())
}

/// Fails unless the workload answered at least `reads` reads and acknowledged `writes` writes.
fn made_progress(sim: &Sim, report: &KvReport, reads: u64, writes: u64) -> Result<(), Failure> {
    if report.reads_served < reads || report.writes_acked < writes {
        return Err(sim.fail(format!(
            "too little progress: {} reads served (want {reads}), {} writes acknowledged (want \
             {writes}); {report:?}",
            report.reads_served, report.writes_acked
        )));
    }
    Ok(())
}

/// Clients read (ReadIndex at the leader) and write concurrently over a few keys, on an
/// unreliable network, while the leader is cut off for 1.5 s once. The history is
/// linearizable, both reads and writes made progress, and no read was served without a round
/// of confirmations (none at the instant it was asked).
pub(super) fn read_index(sim: &mut Sim, _rng: &mut Rng) -> Result<(), Failure> {
    sim.check_one_leader()?;
    sim.start_kv(KvOptions::new(5, 4, ReadMode::ReadIndex));
    sim.sleep(2 * SECOND)?;
    cut_leader_off(sim, 1500 * MS)?;
    sim.sleep(2 * SECOND)?;
    let report = sim.finish_kv()?;
    made_progress(sim, &report, 50, 50)?;
    if report.instant_reads > 0 {
        return Err(sim.fail(format!(
            "{} reads were served at the instant they were asked, without confirmation",
            report.instant_reads
        )));
    }
    Ok(())
}

/// Five servers; clients read at the leader and write through whoever leads. The leader is
/// isolated: clients keep reading from it while a new leader takes writes. The old leader must
/// serve no read once the new leader's first write committed, and the history is
/// linearizable. Fails with reads served from local state (the stale read is caught).
pub(super) fn read_deposed_leader(sim: &mut Sim, _rng: &mut Rng) -> Result<(), Failure> {
    let old = sim.check_one_leader()?;
    deposed_leader_reads(sim, old, 6).map(drop)
}

/// The core of the deposed-leader scenarios: clients read at `old` (the leader) and write
/// through the leader, `old` is isolated for 3 s, and must serve no read after the new leader's
/// first commit.
fn deposed_leader_reads(sim: &mut Sim, old: usize, clients: usize) -> Result<KvReport, Failure> {
    let old_term = sim.node(old).map_or(0, |n| n.term());
    let mut options = KvOptions::new(clients, 3, ReadMode::ReadIndex);
    options.reads_at = Target::Server(old);
    options.timeout = 500 * MS;
    sim.start_kv(options);
    sim.sleep(SECOND)?;
    let served_before = sim.reads_served_by(old, 0);
    sim.disconnect(old);
    sim.sleep(3 * SECOND)?;
    let new = sim.current_leader().filter(|&s| s != old);
    let new_term = new.and_then(|s| sim.node(s)).map_or(0, |n| n.term());
    let Some(first_commit) = (new_term > old_term)
        .then(|| sim.first_commit_at(new_term))
        .flatten()
    else {
        return Err(sim.fail("no new leader committed while the old one was isolated"));
    };
    // Reads `old` serves once back (as a follower of the new leader) are fine: count only
    // those of the isolation.
    let stale = sim.reads_served_by(old, first_commit);
    sim.connect(old);
    let report = sim.finish_kv()?;
    if served_before == 0 {
        return Err(sim.fail("the leader served no read before it was isolated"));
    }
    if stale > 0 {
        return Err(sim.fail(format!(
            "the deposed leader served {stale} reads after the new leader's first commit"
        )));
    }
    made_progress(sim, &report, 20, 20)?;
    Ok(report)
}

/// Lease reads with clocks drifting within the bound (the leader's 4 % slow, the others' 4 %
/// fast): the deposed-leader script again, with reads served under the lease; linearizable,
/// and the lease was used. Beyond the bound (the negative test sets the clocks 40 % apart),
/// the checker reports the stale read.
pub(super) fn lease_read(sim: &mut Sim, _rng: &mut Rng) -> Result<(), Failure> {
    let old = sim.check_one_leader()?;
    let drift = sim.options.clock_drift_ppm;
    for s in 0..sim.len() {
        let ppm = if s == old { -drift } else { drift };
        sim.set_clock_rate(s, ppm);
    }
    let report = deposed_leader_reads(sim, old, 6)?;
    if report.instant_reads == 0 {
        return Err(sim.fail("no read was served under the lease"));
    }
    Ok(())
}

/// Clients read at followers (which ask the leader for the read index and serve once applied
/// up to it) and write through the leader, on an unreliable network, with the leader cut off
/// for 1.5 s once. Linearizable, and every read served was applied up to its index (checked at
/// each read).
pub(super) fn follower_read(sim: &mut Sim, _rng: &mut Rng) -> Result<(), Failure> {
    sim.check_one_leader()?;
    let mut options = KvOptions::new(5, 4, ReadMode::ReadIndex);
    options.reads_at = Target::Followers;
    sim.start_kv(options);
    sim.sleep(2 * SECOND)?;
    cut_leader_off(sim, 1500 * MS)?;
    sim.sleep(2 * SECOND)?;
    let report = sim.finish_kv()?;
    made_progress(sim, &report, 50, 50)
}

/// Runs in steps of 1 ms until `done` holds, for at most `limit`; returns the time it took.
fn within(
    sim: &mut Sim,
    limit: u64,
    mut done: impl FnMut(&Sim) -> bool,
) -> Result<Option<u64>, Failure> {
    let start = sim.now();
    while sim.now() - start <= limit {
        if done(sim) {
            return Ok(Some(sim.now() - start));
        }
        sim.sleep(MS)?;
    }
    Ok(None)
}

/// Asks `leader` to hand over to `to`; fails unless the transfer started.
fn start_transfer(sim: &mut Sim, leader: usize, to: usize) -> Result<(), Failure> {
    match sim.transfer_leadership(leader, to) {
        Some(TransferOutcome::Started { .. }) => Ok(()),
        other => Err(sim.fail(format!("transfer to {} did not start: {other:?}", to + 1))),
    }
}

/// Transfer to a caught-up follower: it leads within two heartbeat intervals (no election
/// timeout), in the next term, and a command then commits everywhere.
pub(super) fn transfer_up_to_date(sim: &mut Sim, rng: &mut Rng) -> Result<(), Failure> {
    let leader = sim.check_one_leader()?;
    for i in 0..3 {
        sim.one(command(300 + i), sim.len(), false)?;
    }
    sim.sleep(200 * MS)?;
    let term = sim.node(leader).map_or(0, |n| n.term());
    let target = follower(sim, leader, rng);
    start_transfer(sim, leader, target)?;
    let bound = 2 * sim.timing().heartbeat_interval;
    let took = within(sim, bound, |sim| {
        sim.node(target).is_some_and(|n| n.is_leader())
    })?;
    if took.is_none() {
        return Err(sim.fail(format!(
            "{} did not lead within two heartbeat intervals of the transfer",
            target + 1
        )));
    }
    let new_term = sim.node(target).map_or(0, |n| n.term());
    if new_term != term + 1 {
        return Err(sim.fail(format!(
            "the transfer took term {new_term}, not {} (an election timed out meanwhile?)",
            term + 1
        )));
    }
    sim.one(command(310), sim.len(), false)?;
    Ok(())
}

/// Transfer to a follower 1,000 entries behind: the leader catches it up, then hands over.
/// Proposals during the transfer get the typed refusal, none is lost: every entry accepted
/// before the transfer is committed on every server afterwards.
pub(super) fn transfer_lagging(sim: &mut Sim, rng: &mut Rng) -> Result<(), Failure> {
    let leader = sim.check_one_leader()?;
    let target = follower(sim, leader, rng);
    sim.disconnect(target);
    let mut last = 0;
    for i in 0..1000 {
        match sim.propose(leader, command(1000 + i)) {
            Some((index, _)) => last = index,
            None => return Err(sim.fail("the leader refused a proposal before the transfer")),
        }
    }
    sim.wait(last, 2, None)?;
    sim.connect(target);
    start_transfer(sim, leader, target)?;
    // Until the target leads, a proposal every 5 ms at the old leader: refused with the
    // transfer's answer while it leads, then redirected.
    let (start, limit) = (sim.now(), sim.timing().election_timeout_max);
    let mut refused = 0;
    while !sim.node(target).is_some_and(|n| n.is_leader()) {
        if sim.now() - start > limit {
            return Err(sim.fail(format!(
                "{} did not lead within an election timeout of the transfer",
                target + 1
            )));
        }
        if sim.node(leader).is_some_and(|n| n.is_leader()) {
            expect_refused(sim, leader)?;
            refused += 1;
        }
        sim.sleep(5 * MS)?;
    }
    if refused == 0 {
        return Err(sim.fail("the transfer ended before any proposal could be tried"));
    }
    for i in 1..=last {
        let (n, _) = sim.n_committed(i);
        if n < 2 {
            return Err(sim.fail(format!("entry {i}, accepted before the transfer, was lost")));
        }
    }
    sim.one(command(2000), sim.len(), true)?;
    let (n, _) = sim.n_committed(last);
    if n != sim.len() {
        return Err(sim.fail(format!("entry {last} is on {n} servers only")));
    }
    Ok(())
}

/// The target crashes during the transfer (while the leader still catches it up): the leader
/// aborts after an election timeout, refusing proposals meanwhile, then takes them again in
/// the same term.
pub(super) fn transfer_target_crash(sim: &mut Sim, rng: &mut Rng) -> Result<(), Failure> {
    let leader = sim.check_one_leader()?;
    let term = sim.node(leader).map_or(0, |n| n.term());
    let target = follower(sim, leader, rng);
    sim.disconnect(target);
    let mut last = 0;
    for i in 0..50 {
        if let Some((index, _)) = sim.propose(leader, command(3000 + i)) {
            last = index;
        }
    }
    sim.wait(last, 2, None)?;
    start_transfer(sim, leader, target)?;
    let started = sim.now();
    sim.sleep(rng.range(1, 100) * MS)?;
    sim.crash(target);
    expect_refused(sim, leader)?;
    let aborted = within(sim, sim.timing().election_timeout_max + 50 * MS, |sim| {
        sim.transfer_outcomes()
            .iter()
            .any(|(s, o)| *s == leader && matches!(o, TransferOutcome::Aborted { .. }))
    })?;
    if aborted.is_none() {
        return Err(sim.fail("the leader did not abort the transfer within an election timeout"));
    }
    let took = sim.now() - started;
    if took < sim.timing().election_timeout_min {
        return Err(sim.fail(format!(
            "the transfer was aborted after {} ms, before an election timeout",
            took / MS
        )));
    }
    let node = sim.node(leader);
    if !node.is_some_and(|n| n.role() == Role::Leader && n.term() == term) {
        return Err(sim.fail("the leader did not keep leading its term after the abort"));
    }
    match sim.propose_outcome(leader, command(3100)) {
        Some(ProposalOutcome::Accepted { .. }) => {}
        other => {
            return Err(sim.fail(format!(
                "the leader refused a proposal after the abort: {other:?}"
            )))
        }
    }
    sim.start(target);
    sim.connect(target);
    sim.one(command(3101), sim.len(), true)?;
    Ok(())
}

/// A proposal at `leader` now must be refused because a transfer runs.
fn expect_refused(sim: &mut Sim, leader: usize) -> Result<(), Failure> {
    match sim.propose_outcome(leader, command(9999)) {
        Some(ProposalOutcome::Refused {
            reason: ProposalRefusal::TransferInProgress,
            ..
        }) => Ok(()),
        other => Err(sim.fail(format!(
            "a proposal during the transfer got {other:?}, not the transfer refusal"
        ))),
    }
}

/// Three servers on an unreliable network, clients writing at any server with a short
/// timeout, the leader cut off three times: many writes end in doubt and are retried with the
/// same bytes through the clients' sessions. No server may apply a write twice (the judge
/// checks every application), and the history is linearizable. Fails with the sessions off.
pub(super) fn retried_writes(sim: &mut Sim, _rng: &mut Rng) -> Result<(), Failure> {
    sim.check_one_leader()?;
    let mut options = KvOptions::new(4, 3, ReadMode::ReadIndex);
    options.timeout = 40 * MS;
    options.retries = 4;
    options.writes_at = Target::Any;
    sim.start_kv(options);
    for _ in 0..3 {
        sim.sleep(SECOND)?;
        cut_leader_off(sim, 300 * MS)?;
    }
    sim.sleep(SECOND)?;
    let report = sim.finish_kv()?;
    made_progress(sim, &report, 20, 20)?;
    if report.retried == 0 {
        return Err(sim.fail("no write was retried: the scenario tests nothing"));
    }
    Ok(())
}
