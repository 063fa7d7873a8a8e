//! The exhaustive explorer: a correct cluster shows no violation within a bound, and classic
//! bugs injected on purpose are found, each by a shortest path that replays to the same
//! verdict. (The larger bounds are in the README; these stay small enough for every test run.)

use raft_proto::sim::explore::{explore, replay, replay_positions, Choice, ExploreOptions};
use raft_proto::InjectedBugs;

/// Three nodes without pre-vote and check-quorum (elections take fewer events), no proposals,
/// no losses, one crash per path.
fn elections_only(depth: usize) -> ExploreOptions {
    let mut options = ExploreOptions::new(3, depth);
    options.sim.pre_vote = false;
    options.sim.check_quorum = false;
    options.proposals = 0;
    options.losses = 0;
    options
}

/// Explores with `bugs` injected; returns the violation's path after checking that it
/// replays to the same verdict.
fn finds(mut options: ExploreOptions, bugs: InjectedBugs, expected: &str) -> Vec<Choice> {
    options.sim.bugs = bugs;
    let report = explore(&options);
    let violation = report
        .violation
        .unwrap_or_else(|| panic!("{bugs:?} not found within depth {}", options.depth));
    assert!(
        violation.failure.message.contains(expected),
        "{}",
        violation.failure.message
    );
    let again = replay(&options, &violation.path).expect_err("the path fails again");
    assert_eq!(again.message, violation.failure.message);
    let (outcome, path) =
        replay_positions(&options, &violation.positions).expect("the positions fit");
    assert_eq!(path, violation.path);
    assert_eq!(
        outcome.expect_err("fails again").message,
        violation.failure.message
    );
    for (i, choice) in violation.path.iter().enumerate() {
        eprintln!("{:>3}. {choice}", i + 1);
    }
    violation.path
}

#[test]
fn a_correct_cluster_shows_no_violation_within_six_events() {
    let report = explore(&ExploreOptions::new(3, 6));
    assert!(report.violation.is_none(), "{:?}", report.violation);
    assert!(report.complete);
    assert_eq!(report.depth, 6);
    // Every interleaving of six events from the start: many paths, fewer states.
    assert!(report.distinct > 10_000, "{report:?}");
    assert!(report.visited > report.distinct, "{report:?}");
}

#[test]
fn the_same_bound_gives_the_same_states() {
    let first = explore(&ExploreOptions::new(3, 5));
    let second = explore(&ExploreOptions::new(3, 5));
    assert_eq!(first.distinct, second.distinct);
    assert_eq!(first.visited, second.visited);
}

#[test]
fn a_vote_granted_before_it_is_durable_is_found() {
    let bugs = InjectedBugs {
        grant_vote_before_persist: true,
        ..InjectedBugs::default()
    };
    let path = finds(elections_only(10), bugs, "Election Safety");
    // Two elections around a voter's crash that loses its vote.
    assert_eq!(path.len(), 10);
    assert!(path
        .iter()
        .any(|c| matches!(c, Choice::Crash { keep: 0, .. })));
    // Without the bug, the same bound holds no violation.
    let report = explore(&elections_only(10));
    assert!(report.violation.is_none(), "{:?}", report.violation);
}

#[test]
fn forgetting_the_vote_on_step_down_is_found() {
    let bugs = InjectedBugs {
        forget_vote_on_step_down: true,
        ..InjectedBugs::default()
    };
    let mut options = elections_only(11);
    options.crashes = 0;
    let path = finds(options, bugs, "Election Safety");
    assert_eq!(path.len(), 11);
}

#[test]
fn acknowledging_entries_before_they_are_durable_is_found() {
    let bugs = InjectedBugs {
        accept_append_before_persist: true,
        ..InjectedBugs::default()
    };
    let mut options = elections_only(11);
    options.crashes = 0;
    options.proposals = 1;
    let path = finds(options, bugs, "Durability");
    assert_eq!(path.len(), 11);
}

#[test]
fn a_read_served_from_local_state_is_found() {
    let bugs = InjectedBugs {
        serve_reads_locally: true,
        ..InjectedBugs::default()
    };
    let mut options = elections_only(6);
    options.from_leader = true;
    options.crashes = 0;
    options.proposals = 1;
    options.reads = 1;
    let path = finds(options, bugs, "Read Safety");
    // The leader commits a new entry; a follower that has not heard of it serves a read.
    assert_eq!(path.len(), 6);
    assert!(matches!(path.last(), Some(Choice::Read { .. })));
}
