//! The MIT 6.824 Raft lab scenarios (2A election, 2B agreement, 2C persistence), each run over
//! several seeds in the deterministic simulator, with every safety property checked after
//! every event. `cargo run --release -p raft-proto --example simulate -- --scenario NAME
//! --seeds N` runs many more.

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

macro_rules! lab_tests {
    ($($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                run(stringify!($name));
            }
        )*

        #[test]
        fn every_scenario_has_a_test() {
            let tested = [$(stringify!($name)),*];
            for s in scenarios::ALL {
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
);
