//! The membership scenarios of ../shared/SCENARIOS-BEYOND.md: learners, promotion, removal of
//! a follower and of the leader, replacing every server, growing from one, and crashes,
//! partitions and refused changes around joint consensus. Servers beyond the bootstrap ones
//! start empty and join when a change adds them; member data is `b"addr-<id>"`.

use std::format;
use std::vec::Vec;

use super::scenarios::command;
use super::{Failure, Sim, MS, SECOND};
use crate::io::MembershipOutcome;
use crate::membership::{Membership, MembershipChange, MembershipError};
use crate::rng::Rng;
use crate::types::{Index, NodeId, Payload};

/// The bytes every member carries in these scenarios.
pub(super) fn member_data(id: NodeId) -> Payload {
    Payload::from(format!("addr-{id}").into_bytes())
}

/// Server `s`'s id.
fn id(s: usize) -> NodeId {
    s as NodeId + 1
}

/// Asks the leader for `change` until it accepts it (retrying while another change is in
/// progress or no leader is known), then waits until the membership it leads to is committed
/// and no longer joint. Returns that membership.
pub(super) fn change(sim: &mut Sim, change: MembershipChange) -> Result<Membership, Failure> {
    let start = sim.now();
    let accepted = loop {
        if sim.now() - start > 10 * SECOND {
            return Err(sim.fail(format!(
                "the change {change:?} was not accepted within 10 s"
            )));
        }
        if let Some(leader) = sim.current_leader() {
            match sim.change_membership(leader, change.clone()) {
                Some(MembershipOutcome::Accepted { index, .. }) => break index,
                Some(MembershipOutcome::Refused(
                    MembershipError::ChangeInProgress | MembershipError::NotLeader { .. },
                ))
                | None => {}
                Some(other) => return Err(sim.fail(format!("{change:?} refused: {other:?}"))),
            }
        }
        sim.sleep(50 * MS)?;
    };
    settle(sim, accepted)
}

/// Waits until the leader's membership, at or after `index`, is committed and not joint; a
/// proposal now and then lets a new leader commit an entry of its term. The leader must be
/// of the highest term any server has and have committed an entry of its own term, so that
/// no stale leader's view is taken for the cluster's.
pub(super) fn settle(sim: &mut Sim, index: Index) -> Result<Membership, Failure> {
    let start = sim.now();
    let mut nudge = 0;
    while sim.now() - start < 10 * SECOND {
        if let Some(node) = sim.current_leader().and_then(|l| sim.node(l)) {
            // The highest term among the members (a removed server may have raised its own).
            let max_term = (0..sim.len())
                .filter(|&s| node.membership().contains(id(s)))
                .filter_map(|s| sim.node(s).map(|n| n.term()))
                .max()
                .unwrap_or(0);
            let done = node.term() >= max_term
                && node.log_term(node.commit_index()) == Some(node.term())
                && node.membership_index() >= index
                && node.commit_index() >= node.membership_index()
                && !node.membership().is_joint();
            if done {
                return Ok(node.membership().clone());
            }
        }
        nudge += 1;
        if nudge % 20 == 0 {
            if let Some(leader) = sim.current_leader() {
                let _ = sim.propose(leader, command(u64::MAX - nudge));
            }
        }
        sim.sleep(20 * MS)?;
    }
    Err(sim.fail(format!(
        "the membership from index {index} was not committed and settled within 10 s"
    )))
}

/// `count` proposals committed on `expected` servers.
fn commit_many(sim: &mut Sim, count: u64, expected: usize, base: u64) -> Result<Index, Failure> {
    let mut last = 0;
    for i in 0..count {
        last = sim.one(command(base + i), expected, true)?;
    }
    Ok(last)
}

/// Proposes at the leader and checks that nothing commits within 2 s.
fn nothing_commits(sim: &mut Sim, value: u64, why: &str) -> Result<(), Failure> {
    let Some(leader) = sim.current_leader() else {
        sim.sleep(2 * SECOND)?;
        return Ok(());
    };
    let Some((index, _)) = sim.propose(leader, command(value)) else {
        return Err(sim.fail("the leader refused a proposal"));
    };
    sim.sleep(2 * SECOND)?;
    if sim.n_committed(index).0 > 0 {
        return Err(sim.fail(format!("index {index} committed {why}")));
    }
    Ok(())
}

/// Fails unless server `s` held the whole committed log (applied up to `index`) within 5 s.
fn catches_up(sim: &mut Sim, s: usize, index: Index) -> Result<(), Failure> {
    let start = sim.now();
    while sim.applied_len(s) < index {
        if sim.now() - start > 5 * SECOND {
            return Err(sim.fail(format!(
                "server {} applied {} of {index} after 5 s",
                id(s),
                sim.applied_len(s)
            )));
        }
        sim.sleep(20 * MS)?;
    }
    Ok(())
}

/// 500 entries on {1,2,3} (snapshots every 100), then an empty learner 4: it catches up by
/// snapshot and tail, never votes or campaigns, and does not count for commitment.
pub(super) fn add_learner(sim: &mut Sim, _: &mut Rng) -> Result<(), Failure> {
    add_learner_steps(sim)
}

fn add_learner_steps(sim: &mut Sim) -> Result<(), Failure> {
    sim.check_one_leader()?;
    let last = commit_many(sim, 500, 3, 1)?;
    change(
        sim,
        MembershipChange::AddLearner {
            id: 4,
            data: member_data(4),
        },
    )?;
    catches_up(sim, 3, last)?;
    if sim.counters().snapshots_installed == 0 {
        return Err(sim.fail("the learner caught up without a snapshot"));
    }
    let last = sim.one(command(600), 4, true)?;
    catches_up(sim, 3, last)?;
    if sim.votes_granted(3) > 0 || sim.campaigns(3) > 0 {
        return Err(sim.fail(format!(
            "the learner granted {} votes and campaigned {} times",
            sim.votes_granted(3),
            sim.campaigns(3)
        )));
    }
    // With two voters cut off, nothing commits, although the learner is up.
    let leader = sim.check_one_leader()?;
    let cut: Vec<usize> = (0..3).filter(|&s| s != leader).collect();
    for &s in &cut {
        sim.disconnect(s);
    }
    nothing_commits(sim, 601, "with two of three voters cut off")?;
    for &s in &cut {
        sim.connect(s);
    }
    sim.one(command(602), 4, true)?;
    Ok(())
}

/// After `add_learner`, the learner becomes a voter: with 2 of the 4 voters cut off nothing
/// commits, with 1 cut off proposals commit.
pub(super) fn promote_learner(sim: &mut Sim, _: &mut Rng) -> Result<(), Failure> {
    add_learner_steps(sim)?;
    let membership = change(sim, MembershipChange::PromoteLearner { id: 4 })?;
    if membership.voters().len() != 4 {
        return Err(sim.fail(format!("after promotion: {membership:?}")));
    }
    let leader = sim.check_one_leader()?;
    let others: Vec<usize> = (0..4).filter(|&s| s != leader).collect();
    sim.disconnect(others[0]);
    sim.disconnect(others[1]);
    nothing_commits(sim, 700, "with two of four voters cut off")?;
    sim.connect(others[1]);
    sim.one(command(701), 3, true)?;
    sim.connect(others[0]);
    sim.one(command(702), 4, true)?;
    Ok(())
}

/// Removing a follower of five: the other four commit with three of them, and the removed
/// server gets no more appends and raises no term.
pub(super) fn remove_follower(sim: &mut Sim, rng: &mut Rng) -> Result<(), Failure> {
    let leader = sim.check_one_leader()?;
    sim.one(command(800), 5, true)?;
    let removed = (leader + 1 + rng.range(0, 4) as usize) % 5;
    change(sim, MembershipChange::Remove { id: id(removed) })?;
    sim.sleep(300 * MS)?;
    let received = sim.requests_received(removed);
    let term = (0..5)
        .filter(|&s| s != removed)
        .filter_map(|s| sim.node(s).map(|n| n.term()))
        .max()
        .unwrap_or(0);
    let leader = sim.check_one_leader()?;
    let cut = (0..5).find(|&s| s != leader && s != removed).unwrap_or(0);
    sim.disconnect(cut);
    sim.one(command(801), 3, true)?;
    sim.connect(cut);
    sim.sleep(3 * SECOND)?;
    sim.one(command(802), 4, true)?;
    let appends = sim.requests_received(removed) - received;
    if appends > 0 {
        return Err(sim.fail(format!("the removed server received {appends} requests")));
    }
    let now = (0..5)
        .filter(|&s| s != removed)
        .filter_map(|s| sim.node(s).map(|n| n.term()))
        .max()
        .unwrap_or(0);
    if now != term {
        return Err(sim.fail(format!("the members' term went from {term} to {now}")));
    }
    Ok(())
}

/// The leader removes itself: it replicates until the change commits, then steps down; a
/// new leader follows within a few seconds; nothing committed is lost.
pub(super) fn remove_leader(sim: &mut Sim, _: &mut Rng) -> Result<(), Failure> {
    let leader = sim.check_one_leader()?;
    let before = sim.one(command(900), 5, true)?;
    let Some(MembershipOutcome::Accepted { index, .. }) =
        sim.change_membership(leader, MembershipChange::Remove { id: id(leader) })
    else {
        return Err(sim.fail("the leader refused to remove itself"));
    };
    let start = sim.now();
    loop {
        let node = sim
            .node(leader)
            .ok_or_else(|| sim.fail("the old leader is down"))?;
        let committed = !node.membership().is_joint()
            && node.membership_index() > index
            && node.commit_index() >= node.membership_index();
        if !node.is_leader() {
            if !committed {
                return Err(sim.fail("the leader stepped down before the change committed"));
            }
            break;
        }
        if committed {
            return Err(sim.fail("the leader still leads after its removal committed"));
        }
        if sim.now() - start > 5 * SECOND {
            return Err(sim.fail("the removal did not commit within 5 s"));
        }
        sim.sleep(MS)?;
    }
    let stepped_down = sim.now();
    loop {
        if let Some(new) = sim.current_leader().filter(|&l| l != leader) {
            if sim
                .node(new)
                .is_some_and(|n| n.membership().contains(id(new)))
            {
                break;
            }
        }
        if sim.now() - stepped_down > 5 * SECOND {
            return Err(sim.fail("no new leader within 5 s of the old one stepping down"));
        }
        sim.sleep(10 * MS)?;
    }
    let after = sim.one(command(901), 4, true)?;
    if after <= before {
        return Err(sim.fail(format!("index went from {before} to {after}")));
    }
    Ok(())
}

/// {1,2,3} replaced by {4,5,6}: learners first, then one joint change, proposals every 20 ms
/// throughout; no gap without a commit longer than 2 s, and every acknowledged entry on the
/// new servers at the end.
pub(super) fn replace_all(sim: &mut Sim, _: &mut Rng) -> Result<(), Failure> {
    sim.check_one_leader()?;
    let steps = [
        MembershipChange::AddLearner {
            id: 4,
            data: member_data(4),
        },
        MembershipChange::AddLearner {
            id: 5,
            data: member_data(5),
        },
        MembershipChange::AddLearner {
            id: 6,
            data: member_data(6),
        },
        MembershipChange::Replace {
            voters: (4..=6).map(|i| (i, member_data(i))).collect(),
            learners: Vec::new(),
        },
    ];
    let mut step = 0;
    let mut pending: Option<Index> = None;
    let mut last_commit_at = sim.now();
    let mut highest = 0;
    let mut value = 1000;
    let start = sim.now();
    loop {
        if sim.now() - start > 60 * SECOND {
            return Err(sim.fail("the replacement did not finish within 60 s"));
        }
        if let Some(leader) = sim.current_leader() {
            let _ = sim.propose(leader, command(value));
            value += 1;
        }
        let applied = (0..6).map(|s| sim.applied_len(s)).max().unwrap_or(0);
        if applied > highest {
            highest = applied;
            last_commit_at = sim.now();
        } else if sim.now() - last_commit_at > 2 * SECOND {
            return Err(sim.fail("no commit for more than 2 s during the replacement"));
        }
        let done = |sim: &Sim, index: Index| {
            sim.current_leader()
                .and_then(|l| sim.node(l))
                .is_some_and(|n| {
                    n.membership_index() >= index
                        && n.commit_index() >= n.membership_index()
                        && !n.membership().is_joint()
                })
        };
        match pending {
            Some(index) if done(sim, index) => {
                pending = None;
                step += 1;
            }
            Some(_) => {}
            None if step == steps.len() => break,
            None => {
                if let Some(leader) = sim.current_leader() {
                    if let Some(MembershipOutcome::Accepted { index, .. }) =
                        sim.change_membership(leader, steps[step].clone())
                    {
                        pending = Some(index);
                    }
                }
            }
        }
        sim.sleep(20 * MS)?;
    }
    let last = sim.one(command(value), 3, true)?;
    for s in 3..6 {
        catches_up(sim, s, last)?;
    }
    let leader = sim.check_one_leader()?;
    if leader < 3 {
        return Err(sim.fail(format!("server {} still leads", id(leader))));
    }
    Ok(())
}

/// One voter grows to three: each stage commits, and the three agree.
pub(super) fn grow_from_one(sim: &mut Sim, _: &mut Rng) -> Result<(), Failure> {
    sim.check_one_leader()?;
    sim.one(command(1100), 1, true)?;
    for (k, new) in [(2, 2), (3, 3)] {
        change(
            sim,
            MembershipChange::AddVoter {
                id: new,
                data: member_data(new),
            },
        )?;
        sim.one(command(1100 + new), k, true)?;
    }
    sim.one(command(1199), 3, true)?;
    Ok(())
}

/// The leader crashes after the joint membership commits and before the new one does, and
/// restarts 1 s later: the change completes.
pub(super) fn crash_in_joint(sim: &mut Sim, _: &mut Rng) -> Result<(), Failure> {
    let leader = sim.check_one_leader()?;
    sim.one(command(1200), 5, true)?;
    let new_voters: Vec<(NodeId, Payload)> = (0..5)
        .filter(|&s| s != (leader + 1) % 5)
        .map(|s| (id(s), member_data(id(s))))
        .collect();
    let Some(MembershipOutcome::Accepted { index, .. }) = sim.change_membership(
        leader,
        MembershipChange::Replace {
            voters: new_voters,
            learners: Vec::new(),
        },
    ) else {
        return Err(sim.fail("the leader refused the change"));
    };
    let start = sim.now();
    while sim.node(leader).is_some_and(|n| n.commit_index() < index) {
        if sim.now() - start > 5 * SECOND {
            return Err(sim.fail("the joint membership did not commit within 5 s"));
        }
        sim.sleep(MS / 4)?;
    }
    sim.crash(leader);
    sim.sleep(SECOND)?;
    sim.start(leader);
    sim.connect(leader);
    let membership = settle(sim, index)?;
    if membership.voters().len() != 4 {
        return Err(sim.fail(format!("the change ended as {membership:?}")));
    }
    sim.one(command(1201), 4, true)?;
    Ok(())
}

/// Partitioned while joint so that one side holds a majority of the old voters only: that
/// side commits nothing new; healed, the change completes.
pub(super) fn partition_in_joint(sim: &mut Sim, _: &mut Rng) -> Result<(), Failure> {
    sim.check_one_leader()?;
    sim.one(command(1300), 3, true)?;
    for learner in [4, 5] {
        change(
            sim,
            MembershipChange::AddLearner {
                id: learner,
                data: member_data(learner),
            },
        )?;
    }
    let leader = sim.check_one_leader()?;
    let other_old = (0..3).find(|&s| s != leader).unwrap_or(0);
    let stays = (0..3).find(|&s| s != leader && s != other_old).unwrap_or(0);
    let Some(MembershipOutcome::Accepted { index, .. }) = sim.change_membership(
        leader,
        MembershipChange::Replace {
            voters: [stays, 3, 4]
                .iter()
                .map(|&s| (id(s), member_data(id(s))))
                .collect(),
            learners: Vec::new(),
        },
    ) else {
        return Err(sim.fail("the leader refused the change"));
    };
    // The leader's side holds a majority of the old voters, none of the new.
    sim.partition(&[leader, other_old]);
    let applied: Vec<Index> = (0..5).map(|s| sim.applied_len(s)).collect();
    for v in 0..5 {
        if let Some(l) = sim.current_leader() {
            let _ = sim.propose(l, command(1310 + v));
        }
        sim.sleep(600 * MS)?;
    }
    for side in [leader, other_old] {
        if sim.applied_len(side) > applied[side] {
            return Err(sim.fail(format!(
                "server {} applied up to {} while its side held no majority of the new voters",
                id(side),
                sim.applied_len(side)
            )));
        }
    }
    sim.heal_partition();
    let membership = settle(sim, index)?;
    let members: Vec<usize> = membership
        .voters()
        .iter()
        .map(|&i| i as usize - 1)
        .collect();
    let last = sim.one(command(1320), 3, true)?;
    for s in members {
        catches_up(sim, s, last)?;
    }
    Ok(())
}

/// Changes that cannot be made are refused, each with its own error, and append nothing.
pub(super) fn bad_changes(sim: &mut Sim, _: &mut Rng) -> Result<(), Failure> {
    let leader = sim.check_one_leader()?;
    sim.one(command(1400), 3, true)?;
    let follower = (leader + 1) % 3;
    let cases = [
        (
            leader,
            MembershipChange::Replace {
                voters: Vec::new(),
                learners: Vec::new(),
            },
            MembershipError::NoVoters,
        ),
        (
            leader,
            MembershipChange::AddLearner {
                id: id(follower),
                data: member_data(id(follower)),
            },
            MembershipError::AlreadyMember(id(follower)),
        ),
        (
            leader,
            MembershipChange::Remove { id: 9 },
            MembershipError::NotMember(9),
        ),
        (
            leader,
            MembershipChange::PromoteLearner { id: id(follower) },
            MembershipError::NotLearner(id(follower)),
        ),
        (
            follower,
            MembershipChange::AddLearner {
                id: 9,
                data: member_data(9),
            },
            MembershipError::NotLeader {
                leader_hint: Some(id(leader)),
            },
        ),
    ];
    for (at, change, expected) in cases {
        refused(sim, at, change, expected)?;
    }
    // A second change while one is in progress.
    let first = MembershipChange::AddLearner {
        id: 9,
        data: member_data(9),
    };
    if !matches!(
        sim.change_membership(leader, first),
        Some(MembershipOutcome::Accepted { .. })
    ) {
        return Err(sim.fail("the first change was refused"));
    }
    refused(
        sim,
        leader,
        MembershipChange::AddLearner {
            id: 10,
            data: member_data(10),
        },
        MembershipError::ChangeInProgress,
    )
}

/// Fails unless server `s` refuses `change` with `expected`, appending nothing.
fn refused(
    sim: &mut Sim,
    s: usize,
    change: MembershipChange,
    expected: MembershipError,
) -> Result<(), Failure> {
    let last = sim.node(s).map_or(0, |n| n.last_log_index());
    let outcome = sim.change_membership(s, change.clone());
    if outcome != Some(MembershipOutcome::Refused(expected)) {
        return Err(sim.fail(format!(
            "{change:?} at {} gave {outcome:?}, not {expected:?}",
            id(s)
        )));
    }
    if sim.node(s).map_or(0, |n| n.last_log_index()) != last {
        return Err(sim.fail(format!("the refused {change:?} appended an entry")));
    }
    Ok(())
}
