//! The MIT 6.824 Raft lab scenarios (2A election, 2B agreement, 2C persistence, 2D
//! snapshots), each run over several seeds in the deterministic simulator, with every safety
//! property checked after every event: with pre-vote and check-quorum on (the default), and
//! again with both off. `cargo run --release -p raft-proto --example simulate -- --scenario
//! NAME --seeds N` runs many more.

use raft_proto::sim::scenarios;

/// Seeds per scenario in the test suite.
const SEEDS: u64 = 100;

fn run(name: &str, features: bool) {
    let scenario = scenarios::find(name).expect("scenario exists");
    for seed in 0..SEEDS {
        let mut options = scenario.options(seed);
        options.pre_vote = features;
        options.check_quorum = features;
        if let Err(failure) = scenario.run_with(options) {
            let flags = if features {
                ""
            } else {
                " --no-pre-vote --no-check-quorum"
            };
            panic!(
                "{name} failed:\n{failure}\nreplay: cargo run --release -p raft-proto --example \
                 simulate -- --scenario {name} --seeds 1 --first-seed {seed}{flags}"
            );
        }
    }
}

macro_rules! lab_tests {
    ($($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                run(stringify!($name), true);
            }
        )*

        /// The same scenarios with pre-vote and check-quorum off.
        mod without_pre_vote_and_check_quorum {
            $(
                #[test]
                fn $name() {
                    super::run(stringify!($name), false);
                }
            )*
        }

        #[test]
        fn every_lab_scenario_has_a_test() {
            let tested = [$(stringify!($name)),*];
            for s in scenarios::ALL.iter().filter(|s| s.lab) {
                assert!(tested.contains(&s.name), "scenario {} has no test", s.name);
            }
        }
    };
}

lab_tests!(
    // 2A
    initial_election,
    re_election,
    many_elections,
    // 2B
    basic_agree,
    rpc_bytes,
    follower_failure,
    leader_failure,
    fail_agree,
    fail_no_agree,
    concurrent_starts,
    rejoin,
    backup,
    count,
    // 2C
    persist1,
    persist2,
    persist3,
    figure8,
    unreliable_agree,
    figure8_unreliable,
    reliable_churn,
    unreliable_churn,
    // 2D
    snapshot_basic,
    snapshot_install,
    snapshot_install_unreliable,
    snapshot_install_crash,
    snapshot_install_uncrash,
    snapshot_all_crash,
    snapshot_init,
);

/// In the install scenarios the victim really catches up through InstallSnapshot, and in
/// SnapshotBasic the persisted Raft state stays under the lab's bound (checked every round by
/// the scenario itself; here the peak over the whole run).
#[test]
fn the_snapshot_scenarios_install_snapshots_and_keep_state_small() {
    for name in [
        "snapshot_install",
        "snapshot_install_unreliable",
        "snapshot_install_crash",
        "snapshot_install_uncrash",
    ] {
        let scenario = scenarios::find(name).expect("scenario exists");
        for seed in 0..20 {
            let report = scenario.run(seed).expect("passes");
            assert!(
                report.counters.snapshots_installed > 0,
                "{name} seed {seed}: no snapshot was installed"
            );
        }
    }
    let basic = scenarios::find("snapshot_basic").expect("scenario exists");
    for seed in 0..20 {
        let report = basic.run(seed).expect("passes");
        assert!(report.peak_persisted_size > 0);
        assert!(report.peak_persisted_size < scenarios::MAX_LOG_SIZE);
    }
}

/// Regression: a follower whose missing entries were compacted away, and whose pipeline was
/// lost, used to draw a storm of resent appends (growing exponentially with one entry per
/// append) instead of one snapshot.
#[test]
fn a_follower_behind_the_snapshot_gets_a_snapshot_not_a_storm() {
    use raft_proto::sim::{Sim, MS};
    for seed in 0..20 {
        let mut options = raft_proto::sim::SimOptions::new(3, seed);
        options.snapshot_interval = Some(10);
        options.max_entries_per_append = 1;
        options.max_events = 1_000_000;
        let mut sim = Sim::new(options);
        let leader = sim.check_one_leader().expect("a leader");
        for i in 0..18 {
            sim.one(scenarios::command(i), 3, true).expect("agreement");
        }
        let lagging = (leader + 1) % 3;
        sim.disconnect(lagging);
        for i in 0..16 {
            let _ = sim.propose(leader, scenarios::command(100 + i));
            sim.sleep(MS).expect("safe");
        }
        sim.connect(lagging);
        let before = sim.counters().requests_sent;
        sim.sleep(300 * MS)
            .unwrap_or_else(|f| panic!("seed {seed}: {f}"));
        let requests = sim.counters().requests_sent - before;
        assert!(requests < 200, "seed {seed}: {requests} requests in 300 ms");
        sim.one(scenarios::command(999), 3, true)
            .unwrap_or_else(|f| panic!("seed {seed}: {f}"));
    }
}
