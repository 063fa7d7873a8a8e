//! The random fault search over a few hundred seeds (the long run is
//! `cargo run --release -p raft-proto --example simulate -- --random --seeds 100000`).

use raft_proto::sim::{random, SimOptions};

fn search(nodes: usize, seeds: std::ops::Range<u64>) {
    for seed in seeds {
        match random::run(SimOptions::new(nodes, seed), 1000) {
            Ok(report) => assert!(report.events >= 1000),
            Err(failure) => panic!(
                "{failure}\nreplay: cargo run --release -p raft-proto --example simulate -- \
                 --random --nodes {nodes} --events 1000 --seeds 1 --first-seed {seed}"
            ),
        }
    }
}

#[test]
fn random_faults_three_nodes() {
    search(3, 0..3000);
}

#[test]
fn random_faults_five_nodes() {
    search(5, 0..3000);
}

#[test]
fn random_runs_are_deterministic() {
    let a = random::run(SimOptions::new(5, 77), 2000).expect("passes");
    let b = random::run(SimOptions::new(5, 77), 2000).expect("passes");
    assert_eq!(a, b);
}
