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
