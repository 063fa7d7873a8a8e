//! The scenarios of ../shared/SCENARIOS-BEYOND.md that go past the labs, with its bounds:
//! pre-vote and check-quorum under link faults (one-way loss, partial partitions, paused
//! nodes). They run with pre-vote and check-quorum on, with every safety property checked
//! after every event as always, and check their own properties at the end.

use std::format;

use super::scenarios::command;
use super::{Failure, Sim, MS, SECOND};
use crate::io::ProposalOutcome;
use crate::rng::Rng;
use crate::types::Term;

/// Fails unless no running server's term went above `term`, and `leader` still leads it.
fn same_term_and_leader(sim: &mut Sim, leader: usize, term: Term) -> Result<(), Failure> {
    let max = sim.max_term();
    if max > term {
        return Err(sim.fail(format!(
            "terms grew by {} after the first election (from {term} to {max})",
            max - term
        )));
    }
    let now = sim.check_one_leader()?;
    if now != leader {
        return Err(sim.fail(format!(
            "the leader changed from {} to {} within term {term}",
            leader + 1,
            now + 1
        )));
    }
    Ok(())
}

/// A follower other than `leader`, drawn from `rng`.
fn follower(sim: &Sim, leader: usize, rng: &mut Rng) -> usize {
    (leader + 1 + rng.range(0, sim.len() as u64 - 1) as usize) % sim.len()
}

/// The first leader and the term everyone agrees on once it is known.
fn first_leader(sim: &mut Sim) -> Result<(usize, Term), Failure> {
    let leader = sim.check_one_leader()?;
    sim.sleep(200 * MS)?;
    let term = sim.check_terms()?;
    Ok((leader, term))
}

/// A follower cut off for 5 s times out over and over; back, it must not raise any term or
/// depose the leader, and 10 proposals commit everywhere. Fails without pre-vote.
pub(super) fn prevote_rejoin(sim: &mut Sim, rng: &mut Rng) -> Result<(), Failure> {
    let (leader, term) = first_leader(sim)?;
    let lost = follower(sim, leader, rng);
    sim.disconnect(lost);
    sim.sleep(5 * SECOND)?;
    sim.connect(lost);
    for i in 0..10 {
        sim.one(command(100 + i), sim.len(), true)?;
    }
    same_term_and_leader(sim, leader, term)
}

/// Two followers cut off from the leader and the two others for 5 s: back, no term grew and
/// the leader is the same.
pub(super) fn prevote_minority_partition(sim: &mut Sim, rng: &mut Rng) -> Result<(), Failure> {
    let (leader, term) = first_leader(sim)?;
    let a = follower(sim, leader, rng);
    let b = loop {
        let b = follower(sim, leader, rng);
        if b != a {
            break b;
        }
    };
    sim.partition(&[a, b]);
    sim.sleep(5 * SECOND)?;
    sim.heal_partition();
    for i in 0..10 {
        sim.one(command(200 + i), sim.len(), true)?;
    }
    same_term_and_leader(sim, leader, term)
}

/// A leader cut off from everyone stops leading within 2 × election_timeout_max; the others
/// elect a new one; a proposal to the old one is answered NotLeader. Fails without
/// check-quorum (it stays leader).
pub(super) fn checkquorum_isolated_leader(sim: &mut Sim, _: &mut Rng) -> Result<(), Failure> {
    let (leader, _) = first_leader(sim)?;
    sim.disconnect(leader);
    let bound = 2 * sim.timing().election_timeout_max;
    let cut_at = sim.now();
    while sim.node(leader).is_some_and(|n| n.is_leader()) {
        if sim.now() - cut_at > bound {
            return Err(sim.fail(format!(
                "the isolated leader {} still leads {} ms after losing every follower",
                leader + 1,
                (sim.now() - cut_at) / MS
            )));
        }
        sim.sleep(5 * MS)?;
    }
    let next = sim.check_one_leader()?;
    if next == leader {
        return Err(sim.fail("the isolated server leads again"));
    }
    match sim.propose_outcome(leader, command(300)) {
        Some(ProposalOutcome::NotLeader { .. }) => {}
        other => {
            return Err(sim.fail(format!(
                "the old leader answered a proposal with {other:?}, not NotLeader"
            )))
        }
    }
    sim.one(command(301), sim.len() - 1, true)?;
    Ok(())
}

/// Only the link between the leader and follower C is cut, both ways; the leader still
/// reaches B. For 5 s the leader keeps leading, no term grows (B refuses C: it hears from
/// the leader), and proposals commit on the leader and B.
pub(super) fn checkquorum_sticky_leader(sim: &mut Sim, rng: &mut Rng) -> Result<(), Failure> {
    let (leader, term) = first_leader(sim)?;
    let c = follower(sim, leader, rng);
    sim.cut_between(leader, c);
    let start = sim.now();
    let mut i = 0;
    while sim.now() - start < 5 * SECOND {
        sim.one(command(400 + i), 2, false)?;
        i += 1;
        sim.sleep(300 * MS)?;
    }
    same_term_and_leader(sim, leader, term)?;
    sim.heal_links();
    sim.one(command(499), sim.len(), true)?;
    Ok(())
}

/// Messages from the leader to C are dropped while C's still reach the leader, for 5 s:
/// proposals keep committing on the leader and B; once healed, C has every committed entry.
pub(super) fn one_way_link(sim: &mut Sim, rng: &mut Rng) -> Result<(), Failure> {
    let (leader, _) = first_leader(sim)?;
    let c = follower(sim, leader, rng);
    sim.cut_link(leader, c);
    let start = sim.now();
    let mut i = 0;
    while sim.now() - start < 5 * SECOND {
        sim.one(command(500 + i), 2, true)?;
        i += 1;
        sim.sleep(300 * MS)?;
    }
    sim.heal_links();
    let last = sim.one(command(599), sim.len(), true)?;
    if sim.applied_len(c) < last {
        return Err(sim.fail(format!(
            "after healing, C applied up to {} of {last}",
            sim.applied_len(c)
        )));
    }
    Ok(())
}

/// The leader is paused for 3 s while the others elect a new one, then resumes. A proposal
/// it accepts right away, in its old term, never commits; it learns the new term and follows.
pub(super) fn paused_leader(sim: &mut Sim, _: &mut Rng) -> Result<(), Failure> {
    let (old, old_term) = first_leader(sim)?;
    sim.pause(old);
    sim.sleep(3 * SECOND)?;
    let new = sim.check_one_leader()?;
    let new_term = sim.node(new).map_or(0, |n| n.term());
    if new == old || new_term <= old_term {
        return Err(sim.fail("no new leader while the old one was paused"));
    }
    sim.resume(old);
    let stale = command(600);
    let accepted = sim.propose(old, stale.clone());
    sim.sleep(2 * SECOND)?;
    if let Some((index, term)) = accepted {
        let (n, committed) = sim.n_committed(index);
        if n > 0 && committed.as_ref() == Some(&stale) {
            return Err(sim.fail(format!(
                "the resumed old leader committed its term-{term} proposal at index {index}"
            )));
        }
    }
    let current = sim.check_one_leader()?;
    let current_term = sim.node(current).map_or(0, |n| n.term());
    let Some(node) = sim.node(old) else {
        return Err(sim.fail("the old leader is gone"));
    };
    let (role, term, leader) = (node.role(), node.term(), node.leader());
    if current == old || term != current_term || leader != Some(current as u64 + 1) {
        return Err(sim.fail(format!(
            "the resumed old leader is {role:?} of term {term} following {leader:?}, \
             not a follower of {} in term {current_term}",
            current + 1
        )));
    }
    sim.one(command(601), sim.len(), true)?;
    Ok(())
}
