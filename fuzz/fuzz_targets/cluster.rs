//! An arbitrary fault schedule (crashes, partitions, one-way and two-way link cuts, pauses,
//! membership changes, pre-vote and check-quorum on or off) and proposals into the
//! simulator: every safety property is checked after every simulated event; a violation is a
//! crash.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use raft_proto::sim::{FailureKind, Sim, SimOptions, MS};
use raft_proto::MembershipChange;

#[derive(Arbitrary, Debug)]
enum Op {
    Propose(u8),
    Crash(u8),
    Start(u8),
    Restart(u8),
    Disconnect(u8),
    Connect(u8),
    Partition(u8),
    Heal,
    Reliable(bool),
    LongReordering(bool),
    Sleep(u8),
    CutLink(u8, u8),
    CutBetween(u8, u8),
    HealLinks,
    Pause(u8),
    Resume(u8),
    AddLearner(u8),
    AddVoter(u8),
    Promote(u8),
    Remove(u8),
}

#[derive(Arbitrary, Debug)]
struct Schedule {
    nodes: u8,
    seed: u64,
    snapshot_interval: Option<u8>,
    crash_points: bool,
    initial_voters: Option<u8>,
    pre_vote: bool,
    check_quorum: bool,
    ops: Vec<Op>,
}

fuzz_target!(|schedule: Schedule| {
    let n = 3 + usize::from(schedule.nodes % 3);
    let mut options = SimOptions::new(n, schedule.seed);
    options.snapshot_interval = schedule.snapshot_interval.map(|i| 2 + u64::from(i % 20));
    options.snapshot_chunk = 16;
    options.crash_point_odds = if schedule.crash_points { 10 } else { 0 };
    options.max_events = 200_000;
    options.initial_voters = schedule.initial_voters.map(|k| 1 + usize::from(k) % n);
    options.pre_vote = schedule.pre_vote;
    options.check_quorum = schedule.check_quorum;
    options.stream_snapshots = schedule.seed % 2 == 1;
    let mut sim = Sim::new(options);
    let mut command = 0u64;
    for op in schedule.ops.into_iter().take(128) {
        match op {
            Op::Propose(s) => {
                command += 1;
                let _ = sim.propose(usize::from(s) % n, command.to_le_bytes().to_vec());
            }
            Op::Crash(s) => sim.crash(usize::from(s) % n),
            Op::Start(s) => {
                let s = usize::from(s) % n;
                if !sim.is_alive(s) {
                    sim.start(s);
                    sim.connect(s);
                }
            }
            Op::Restart(s) => sim.restart(usize::from(s) % n),
            Op::Disconnect(s) => sim.disconnect(usize::from(s) % n),
            Op::Connect(s) => sim.connect(usize::from(s) % n),
            Op::Partition(mask) => {
                let side: Vec<usize> = (0..n).filter(|s| mask & (1 << s) != 0).collect();
                sim.partition(&side);
            }
            Op::Heal => sim.heal_partition(),
            Op::Reliable(on) => sim.set_reliable(on),
            Op::LongReordering(on) => sim.set_long_reordering(on),
            Op::CutLink(a, b) => sim.cut_link(usize::from(a) % n, usize::from(b) % n),
            Op::CutBetween(a, b) => sim.cut_between(usize::from(a) % n, usize::from(b) % n),
            Op::HealLinks => sim.heal_links(),
            Op::Pause(s) => sim.pause(usize::from(s) % n),
            Op::Resume(s) => sim.resume(usize::from(s) % n),
            Op::AddLearner(id) | Op::AddVoter(id) | Op::Promote(id) | Op::Remove(id) => {
                let id = 1 + u64::from(id) % n as u64;
                let data = id.to_le_bytes().to_vec().into();
                let change = match op {
                    Op::AddLearner(_) => MembershipChange::AddLearner { id, data },
                    Op::AddVoter(_) => MembershipChange::AddVoter { id, data },
                    Op::Promote(_) => MembershipChange::PromoteLearner { id },
                    _ => MembershipChange::Remove { id },
                };
                if let Some(leader) = sim.current_leader() {
                    let _ = sim.change_membership(leader, change);
                }
            }
            Op::Sleep(ms) => {
                if let Err(failure) = sim.sleep(u64::from(ms) * 4 * MS) {
                    assert!(failure.kind != FailureKind::Safety, "{failure}");
                    return;
                }
            }
        }
    }
    if let Err(failure) = sim.sleep(2000 * MS) {
        assert!(failure.kind != FailureKind::Safety, "{failure}");
    }
});
