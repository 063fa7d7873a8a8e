//! The randomized fault search: a random schedule of crashes (losing unsynced writes),
//! restarts, disconnections, two-group partitions, one-way link cuts, partial partitions,
//! paused nodes, unreliable periods, long reordering and proposals, derived entirely from the
//! seed, with every safety property checked after every event and a final liveness check once
//! the cluster is healed.

use std::format;

use std::vec::Vec;

use super::kv::{KvOptions, ReadMode, Target};
use super::{Failure, Sim, SimOptions, Timing, MS, SECOND};
use crate::membership::MembershipChange;
use crate::rng::Rng;
use crate::types::Index;

/// What one random run did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RandomReport {
    /// Simulator events processed.
    pub events: u64,
    /// Virtual time the run took, in microseconds.
    pub virtual_time: u64,
    /// The log index the final agreement reached.
    pub final_index: Index,
    /// Faults injected (crashes, disconnections, partitions, network changes).
    pub faults: u64,
    /// Snapshots installed from a leader.
    pub snapshots_installed: u64,
    /// The run's digest, when [`SimOptions::digest`] was on (0 otherwise).
    pub digest: u64,
}

/// Runs one random schedule of at least `min_events` simulator events against a cluster set
/// up by `options` (`options.seed` determines everything).
///
/// The seed also picks the run's profile: the lab's timing or a tight one that provokes split
/// votes, disks that sometimes stall (widening the window in which a crash loses writes), and
/// crash points (reboots right after a node sent messages while its writes were pending), an
/// unreliable start, the leader's no-op entry on or off, and snapshots (every 2 to 29 applied
/// entries, sent in chunks of 7, 64 or 1024 bytes, with 0, 5 or 64 catch-up entries kept and
/// 1, 4 or 256 entries per append; streamed in half the seeds) or none, and pre-vote and
/// check-quorum each on or off.
/// Half the seeds also change the membership (the cluster starts with 1 to `n` voters; the
/// other servers join when added; learners are added, promoted and removed, voters removed
/// and replaced), with pre-vote or check-quorum on.
///
/// A third of the seeds run the key-value model ([`super::kv`]) throughout: clients reading
/// (by ReadIndex or through the log, at the leader, at followers or anywhere) and writing a
/// few keys, their history judged linearizable at the end; in half of those the nodes serve
/// lease reads (check-quorum on), with every clock running at its own rate, up to 5 % off,
/// within the drift bound. These choices come from their own generator, so the other seeds
/// run exactly as before.
pub fn run(mut options: SimOptions, min_events: u64) -> Result<RandomReport, Failure> {
    let n = options.nodes;
    let mut rng = Rng::new(options.seed ^ 0xF417_F417);
    options.pre_vote = rng.chance(1, 2);
    options.check_quorum = rng.chance(1, 2);
    if rng.chance(1, 2) {
        options.timing = Timing::TIGHT;
    }
    options.disk_stalls = rng.chance(1, 2);
    options.unreliable = rng.chance(1, 2);
    options.leader_noop = rng.chance(1, 2);
    if rng.chance(2, 3) {
        options.snapshot_interval = Some(rng.range(2, 30));
        options.snapshot_chunk = [7, 64, 1024][rng.range(0, 3) as usize];
        options.snapshot_catchup_entries = [0, 5, 64][rng.range(0, 3) as usize];
        options.max_entries_per_append = [1, 4, 256][rng.range(0, 3) as usize];
        // Half of those stream their snapshots (from a generator of its own, so that the
        // seeds' other choices stay as they were).
        options.stream_snapshots = Rng::new(options.seed ^ 0x5743_5743).chance(1, 2);
    }
    if rng.chance(1, 2) {
        options.crash_point_odds = 4;
    }
    // Half the seeds change the membership: the cluster starts with some of the servers, the
    // others join when added.
    let membership_changes = rng.chance(1, 2);
    if membership_changes {
        options.initial_voters = Some(rng.range(1, n as u64 + 1) as usize);
        // A removed server that never learns of its removal campaigns for ever; without
        // pre-vote or check-quorum it deposes the leaders of the members again and again
        // (thesis §4.2.3), which is a liveness failure by design, not a bug to look for.
        if !options.pre_vote && !options.check_quorum {
            options.pre_vote = true;
        }
    }
    let workload = kv_profile(&mut options);
    let with_kv = workload.is_some();
    let mut sim = Sim::new(options);
    if let Some((kv, clock_ppm)) = workload {
        for (s, ppm) in clock_ppm.into_iter().enumerate() {
            sim.set_clock_rate(s, ppm);
        }
        sim.start_kv(kv);
    }
    let mut faults = 0;
    let mut next_command = 1u64;
    let mut actions = 0;
    // The clients' traffic counts as events too: with them, also at least 60 fault actions.
    while sim.counters().events < min_events || (with_kv && actions < 60) {
        actions += 1;
        let s = rng.range(0, n as u64) as usize;
        let t = rng.range(0, n as u64) as usize;
        let top = if membership_changes { 122 } else { 112 };
        match rng.range(0, top) {
            0..=39 => {
                // Proposals at one or at every live server.
                let everywhere = rng.chance(1, 4);
                for t in 0..n {
                    if (everywhere || t == s) && sim.is_alive(t) {
                        let _ = sim.propose(t, super::scenarios::command(next_command));
                        next_command += 1;
                    }
                }
            }
            40..=44 => {
                sim.crash(s);
                faults += 1;
            }
            45..=49 => {
                // Reboot at the worst moment: a node whose latest writes are not durable yet
                // crashes (losing some of them) and comes straight back.
                let victim = (0..n).find(|&t| sim.has_unsynced_writes(t)).unwrap_or(s);
                sim.restart(victim);
                faults += 1;
            }
            50..=59 => {
                if !sim.is_alive(s) {
                    sim.start(s);
                }
                sim.connect(s);
            }
            60..=67 => {
                sim.disconnect(s);
                faults += 1;
            }
            68..=77 => sim.connect(s),
            78..=82 => {
                let side: std::vec::Vec<usize> = (0..n).filter(|_| rng.chance(1, 2)).collect();
                sim.partition(&side);
                faults += 1;
            }
            83..=87 => sim.heal_partition(),
            88..=93 => {
                sim.set_reliable(rng.chance(1, 2));
                faults += 1;
            }
            94..=96 => {
                sim.set_long_reordering(rng.chance(1, 3));
                faults += 1;
            }
            97..=99 => {}
            100..=102 if s != t => {
                sim.cut_link(s, t);
                faults += 1;
            }
            103..=104 if s != t => {
                sim.cut_between(s, t);
                faults += 1;
            }
            105..=107 => sim.heal_links(),
            108..=109 => {
                sim.pause(s);
                faults += 1;
            }
            110..=111 => sim.resume(s),
            112..=121 => {
                if let Some(change) = random_change(&sim, &mut rng) {
                    if let Some(leader) = sim.current_leader() {
                        let _ = sim.change_membership(leader, change);
                    }
                }
            }
            _ => {}
        }
        let pause = if rng.chance(1, 10) {
            rng.range(0, SECOND)
        } else {
            rng.range(0, 50 * MS)
        };
        sim.sleep(pause)?;
    }
    // Heal everything: a majority that can talk must agree again.
    sim.set_crash_point_odds(0);
    sim.set_reliable(true);
    sim.set_long_reordering(false);
    sim.heal_partition();
    sim.heal_links();
    for s in 0..n {
        sim.resume(s);
        if !sim.is_alive(s) {
            sim.start(s);
        }
        sim.connect(s);
    }
    let expected = if membership_changes {
        // Wait for the membership to settle, then stop the servers that are not members
        // (removed ones, and ones never added): they are not asked to agree.
        let members = final_members(&mut sim).map_err(|mut f| {
            f.message = format!("after healing the cluster: {}", f.message);
            f
        })?;
        for s in 0..n {
            if !members.contains(&(s as u64 + 1)) {
                sim.crash(s);
            }
        }
        members.len()
    } else {
        n
    };
    let final_index = sim
        .one(super::scenarios::command(u64::MAX), expected, true)
        .map_err(|mut f| {
            f.message = format!("after healing the cluster: {}", f.message);
            if membership_changes {
                f.message += &describe_memberships(&sim);
            }
            f
        })?;
    if with_kv {
        sim.finish_kv()?;
    }
    Ok(RandomReport {
        events: sim.counters().events,
        virtual_time: sim.now(),
        final_index,
        faults,
        snapshots_installed: sim.counters().snapshots_installed,
        digest: sim.digest(),
    })
}

/// Whether this seed runs the key-value model, and how (its own generator, so that the
/// other seeds' runs do not change): the workload and each server's clock rate.
fn kv_profile(options: &mut SimOptions) -> Option<(KvOptions, Vec<i64>)> {
    let mut rng = Rng::new(options.seed ^ 0x4B56_4B56);
    if !rng.chance(1, 3) {
        return None;
    }
    let mode = if rng.chance(2, 3) {
        ReadMode::ReadIndex
    } else {
        ReadMode::Log
    };
    let mut kv = KvOptions::new(rng.range(2, 7) as usize, rng.range(1, 5), mode);
    let targets = [Target::Leader, Target::Followers, Target::Any];
    kv.reads_at = targets[rng.range(0, 3) as usize];
    kv.writes_at = targets[rng.range(0, 3) as usize];
    kv.timeout = options.timing.election_timeout_max * 3;
    kv.think = 60 * MS;
    let mut clock_ppm = Vec::new();
    if mode == ReadMode::ReadIndex && rng.chance(1, 2) {
        // Leases: a drift bound of a sixth of the minimum election timeout, clocks up to 5 %
        // apart from true time (so at most 10 % from each other).
        options.lease_reads = true;
        options.check_quorum = true;
        options.clock_drift_bound = options.timing.election_timeout_min / 6;
        clock_ppm = (0..options.nodes)
            .map(|_| rng.range(0, 100_001) as i64 - 50_000)
            .collect();
    }
    Some((kv, clock_ppm))
}

/// A membership change drawn from `rng` against the current leader's membership: add a
/// learner or a voter among the servers that are not members, promote a learner, remove a
/// member, or replace the voters by a random non-empty set of servers.
fn random_change(sim: &Sim, rng: &mut Rng) -> Option<MembershipChange> {
    let leader = sim.current_leader()?;
    let membership = sim.node(leader)?.membership().clone();
    let n = sim.len() as u64;
    let id = rng.range(1, n + 1);
    let data = super::reconfig::member_data;
    Some(match rng.range(0, 5) {
        0 => MembershipChange::AddLearner { id, data: data(id) },
        1 => MembershipChange::AddVoter { id, data: data(id) },
        2 => MembershipChange::PromoteLearner {
            id: membership.learners().iter().next().copied().unwrap_or(id),
        },
        3 => MembershipChange::Remove { id },
        _ => {
            let voters: Vec<(u64, crate::types::Payload)> = (1..=n)
                .filter(|_| rng.chance(1, 2))
                .map(|id| (id, data(id)))
                .collect();
            let learners = (1..=n)
                .filter(|id| membership.contains(*id) && !voters.iter().any(|(v, _)| v == id))
                .filter(|_| rng.chance(1, 2))
                .map(|id| (id, data(id)))
                .collect();
            MembershipChange::Replace { voters, learners }
        }
    })
}

/// The members once the membership has settled at a leader (committed, not joint).
fn final_members(sim: &mut Sim) -> Result<Vec<u64>, Failure> {
    let membership = super::reconfig::settle(sim, 0)?;
    Ok(membership.members())
}

/// Each running server's membership, role, term and log position, to explain a failure.
fn describe_memberships(sim: &Sim) -> std::string::String {
    let mut out = std::string::String::from("; servers:");
    for s in 0..sim.len() {
        if let Some(node) = sim.node(s) {
            let m = node.membership();
            out += &format!(
                " [{} {:?} term {} last {} commit {} applied {} voters {:?} outgoing {:?} \
                 learners {:?} at {}]",
                s + 1,
                node.role(),
                node.term(),
                node.last_log_index(),
                node.commit_index(),
                sim.applied_len(s),
                m.voters(),
                m.outgoing_voters(),
                m.learners(),
                node.membership_index()
            );
        }
    }
    out
}
