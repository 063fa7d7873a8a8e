//! The pre-vote, check-quorum and membership scenarios of ../shared/SCENARIOS-BEYOND.md, each
//! over many seeds with pre-vote and check-quorum on; and for each row that says "fails
//! without X", the proof: the same scenario with X off fails its check on every seed tried.

use raft_proto::sim::scenarios;

/// Seeds per scenario in the test suite.
const SEEDS: u64 = 100;

fn run(name: &str) {
    let scenario = scenarios::find(name).expect("scenario exists");
    for seed in 0..SEEDS {
        if let Err(failure) = scenario.run(seed) {
            panic!(
                "{name} failed:\n{failure}\nreplay: cargo run --release -p raft-proto --example \
                 simulate -- --scenario {name} --seeds 1 --first-seed {seed}"
            );
        }
    }
}

macro_rules! beyond_tests {
    ($($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                run(stringify!($name));
            }
        )*

        #[test]
        fn every_beyond_scenario_has_a_test() {
            let tested = [$(stringify!($name)),*];
            for s in scenarios::ALL.iter().filter(|s| !s.lab) {
                assert!(tested.contains(&s.name), "scenario {} has no test", s.name);
            }
        }
    };
}

beyond_tests!(
    prevote_rejoin,
    prevote_minority_partition,
    checkquorum_isolated_leader,
    checkquorum_sticky_leader,
    one_way_link,
    paused_leader,
    add_learner,
    promote_learner,
    remove_follower,
    remove_leader,
    replace_all,
    grow_from_one,
    crash_in_joint,
    partition_in_joint,
    bad_changes,
    read_index,
    read_deposed_leader,
    lease_read,
    follower_read,
    transfer_up_to_date,
    transfer_lagging,
    transfer_target_crash,
    retried_writes,
    streamed_snapshot_install_unreliable,
    streamed_snapshot_install_crash,
    streamed_snapshot_all_crash,
);

/// Runs `name` over 20 seeds with `switch` applied; every seed must fail with a message
/// containing `check`. Returns the messages.
fn fails_without(
    name: &str,
    switch: fn(&mut raft_proto::sim::SimOptions),
    check: &str,
) -> Vec<String> {
    let scenario = scenarios::find(name).expect("scenario exists");
    (0..20)
        .map(|seed| {
            let mut options = scenario.options(seed);
            switch(&mut options);
            match scenario.run_with(options) {
                Ok(_) => panic!("{name} passed at seed {seed} with the feature off"),
                Err(failure) => {
                    assert!(
                        failure.message.contains(check),
                        "{name} at seed {seed} failed otherwise: {}",
                        failure.message
                    );
                    failure.message
                }
            }
        })
        .collect()
}

#[test]
fn prevote_rejoin_fails_without_pre_vote() {
    let messages = fails_without("prevote_rejoin", |o| o.pre_vote = false, "terms grew by");
    eprintln!("{}", messages[0]);
}

#[test]
fn checkquorum_isolated_leader_fails_without_check_quorum() {
    fails_without(
        "checkquorum_isolated_leader",
        |o| o.check_quorum = false,
        "still leads",
    );
}

#[test]
fn read_deposed_leader_fails_with_reads_served_from_local_state() {
    // The linearizability checker alone (the per-read check off) reports the stale read.
    let messages = fails_without(
        "read_deposed_leader",
        |o| {
            o.bugs.serve_reads_locally = true;
            o.check_read_floor = false;
        },
        "is not linearizable",
    );
    eprintln!("{}", messages[0]);
    // And the per-read check catches it as it happens.
    fails_without(
        "read_deposed_leader",
        |o| o.bugs.serve_reads_locally = true,
        "a stale read",
    );
}

#[test]
fn lease_read_fails_beyond_the_drift_bound() {
    // The bound is 50 ms of a 300 ms minimum election timeout (clocks may differ by 1/6);
    // with the leader's clock at 0.2 times true speed and the others' at 1.8 times, a
    // deposed leader's lease outlives the new leader's first commit.
    let messages = fails_without(
        "lease_read",
        |o| {
            o.clock_drift_ppm = 800_000;
            o.check_read_floor = false;
        },
        "is not linearizable",
    );
    eprintln!("{}", messages[0]);
}

#[test]
fn follower_read_fails_when_served_before_applied() {
    fails_without(
        "follower_read",
        |o| o.bugs.serve_reads_before_applied = true,
        "having applied only up to",
    );
}

#[test]
fn retried_writes_apply_twice_without_sessions() {
    let messages = fails_without(
        "retried_writes",
        |o| o.client_sessions = false,
        "twice: a retried command took effect again",
    );
    eprintln!("{}", messages[0]);
}

/// More clients than the key-value model's session table keeps (64): sessions expire, their
/// clients' writes are refused, never applied, and the clients register again. The history
/// stays linearizable (a refused write once counted as done made it fail).
#[test]
fn more_clients_than_sessions_stay_linearizable() {
    use raft_proto::sim::kv::{KvOptions, ReadMode};
    use raft_proto::sim::{Sim, SimOptions, SECOND};
    for seed in 0..5 {
        let mut options = SimOptions::new(3, seed);
        options.leader_noop = true;
        let mut sim = Sim::new(options);
        sim.check_one_leader().unwrap();
        sim.start_kv(KvOptions::new(80, 16, ReadMode::ReadIndex));
        sim.sleep(SECOND).unwrap();
        let report = sim
            .finish_kv()
            .unwrap_or_else(|f| panic!("seed {seed}: {f}"));
        assert!(report.writes_acked > 0, "seed {seed}: {report:?}");
    }
}
