//! An arbitrary fault schedule and proposals into the simulator: every safety property is
//! checked after every simulated event; a violation is a crash.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use raft_proto::sim::{FailureKind, Sim, SimOptions, MS};

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
}

#[derive(Arbitrary, Debug)]
struct Schedule {
    nodes: u8,
    seed: u64,
    snapshot_interval: Option<u8>,
    crash_points: bool,
    ops: Vec<Op>,
}

fuzz_target!(|schedule: Schedule| {
    let n = 3 + usize::from(schedule.nodes % 3);
    let mut options = SimOptions::new(n, schedule.seed);
    options.snapshot_interval = schedule.snapshot_interval.map(|i| 2 + u64::from(i % 20));
    options.snapshot_chunk = 16;
    options.crash_point_odds = if schedule.crash_points { 10 } else { 0 };
    options.max_events = 200_000;
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
