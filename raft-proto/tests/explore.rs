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

/// As [`elections_only`], from a cluster with a leader and no crashes.
fn from_a_leader(depth: usize) -> ExploreOptions {
    let mut options = elections_only(depth);
    options.from_leader = true;
    options.crashes = 0;
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

/// Without a bug, the whole bound is searched and holds no violation.
fn clean(options: &ExploreOptions) {
    let report = explore(options);
    assert!(report.violation.is_none(), "{:?}", report.violation);
    assert!(report.complete, "{report:?}");
    assert_eq!(report.depth, options.depth);
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
    clean(&elections_only(10));
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
    assert_eq!(path.len(), 10);
}

#[test]
fn a_read_served_from_local_state_is_found() {
    let bugs = InjectedBugs {
        serve_reads_locally: true,
        ..InjectedBugs::default()
    };
    let mut options = from_a_leader(6);
    options.proposals = 1;
    options.reads = 1;
    let path = finds(options, bugs, "Read Safety");
    // The leader commits a new entry; a follower that has not heard of it serves a read.
    assert_eq!(path.len(), 6);
    assert!(matches!(path.last(), Some(Choice::Read { .. })));
}

#[test]
fn a_membership_kept_after_its_entry_is_truncated_is_found() {
    let bugs = InjectedBugs {
        keep_truncated_membership: true,
        ..InjectedBugs::default()
    };
    let mut options = from_a_leader(7);
    options.sync_at_once = true;
    options.proposals = 1;
    options.changes = 1;
    let path = finds(options.clone(), bugs, "as the newest membership");
    // Another leader is elected while the change is still on the old leader alone; its own
    // entry overwrites the change there.
    assert_eq!(path.len(), 7);
    assert!(path
        .iter()
        .any(|c| matches!(c, Choice::ChangeMembership { .. })));
    clean(&options);
}

#[test]
fn a_streamed_snapshot_installed_before_its_last_chunk_is_staged_is_found() {
    let bugs = InjectedBugs {
        stage_snapshot_chunks_after_persists: true,
        ..InjectedBugs::default()
    };
    // Four servers, three of them voters; every applied entry snapshotted, and a follower
    // one entry behind sent a snapshot, streamed in chunks of 64 bytes.
    let mut options = from_a_leader(4);
    options.nodes = 4;
    options.sim.initial_voters = Some(3);
    options.sim.snapshot_interval = Some(1);
    options.sim.stream_snapshots = true;
    options.sim.snapshot_chunk = 64;
    options.sim.snapshot_catchup_entries = 0;
    options.sync_at_once = true;
    options.changes = 1;
    let path = finds(options.clone(), bugs, "neither stored nor staged");
    // The leader adds the spare, which is sent the snapshot and installs it.
    assert_eq!(path.len(), 4);
    clean(&options);
}

/// The first 13 events of a shortest path to the Figure 8 problem (3 nodes from a leader,
/// disks syncing at once): the old leader appends an entry alone; a second node is elected
/// and appends its own; the old leader is elected again and gets its entry to the third
/// node, where counting replicas commits it.
const FIGURE_8_PREFIX: [usize; 13] = [3, 1, 6, 5, 6, 8, 1, 9, 9, 10, 10, 10, 10];

#[test]
fn committing_an_earlier_term_by_counting_is_found_after_a_prefix() {
    let bugs = InjectedBugs {
        commit_earlier_term_by_counting: true,
        ..InjectedBugs::default()
    };
    let mut options = from_a_leader(4);
    options.sync_at_once = true;
    options.proposals = 2;
    options.prefix = FIGURE_8_PREFIX.to_vec();
    let (_, prefix) = replay_positions(&options, &FIGURE_8_PREFIX).expect("the prefix fits");
    assert!(
        matches!(prefix[0], Choice::Propose { server: 2 }),
        "{prefix:?}"
    );
    let path = finds(options.clone(), bugs, "Leader Completeness");
    // The second node learns the newer term, is elected again by the third node (its entry
    // is of a later term) and lacks the entry counted committed.
    assert_eq!(path.len(), 17);
    assert_eq!(path[..13], prefix[..]);
    clean(&options);
}

#[test]
fn two_threads_search_the_same_bound() {
    // A correct cluster: no violation, and about as many states as on one thread (not
    // exactly: states told apart only by their clocks are explored from the first met, and
    // which is first depends on the threads' timing).
    let one = explore(&ExploreOptions::new(3, 6));
    let mut options = ExploreOptions::new(3, 6);
    options.threads = 2;
    let two = explore(&options);
    assert!(two.violation.is_none(), "{:?}", two.violation);
    assert!(two.complete);
    assert_eq!(two.depth, 6);
    let ratio = two.distinct as f64 / one.distinct as f64;
    assert!((0.8..1.2).contains(&ratio), "{one:?} {two:?}");
    // A bug: found, and the path replays to the same verdict.
    let bugs = InjectedBugs {
        serve_reads_locally: true,
        ..InjectedBugs::default()
    };
    let mut options = from_a_leader(6);
    options.proposals = 1;
    options.reads = 1;
    options.threads = 2;
    finds(options, bugs, "Read Safety");
}

#[test]
fn a_read_served_before_its_index_is_applied_is_found_after_a_prefix() {
    let bugs = InjectedBugs {
        serve_reads_before_applied: true,
        ..InjectedBugs::default()
    };
    // From a leader: a follower is asked for a read, then the leader for a command; the
    // search goes on from there (the whole path, 8 events, is found without the prefix in
    // the README's bound).
    let mut options = from_a_leader(6);
    options.sync_at_once = true;
    options.proposals = 1;
    options.reads = 1;
    options.prefix = vec![3, 4];
    let (_, prefix) = replay_positions(&options, &options.prefix).expect("the prefix fits");
    assert!(matches!(prefix[0], Choice::Read { .. }), "{prefix:?}");
    assert!(matches!(prefix[1], Choice::Propose { .. }), "{prefix:?}");
    let path = finds(options.clone(), bugs, "having applied only up to");
    assert_eq!(path.len(), 8);
    clean(&options);
}

#[test]
fn committing_with_the_new_voters_only_while_joint_is_found() {
    let bugs = InjectedBugs {
        commit_joint_with_new_voters_only: true,
        ..InjectedBugs::default()
    };
    // Four servers, three of them voters, from a leader (pre-vote and check-quorum on).
    let mut options = ExploreOptions::new(4, 5);
    options.sim.initial_voters = Some(3);
    options.from_leader = true;
    options.sync_at_once = true;
    options.crashes = 0;
    options.losses = 0;
    options.changes = 1;
    let path = finds(options.clone(), bugs, "Durability");
    // The leader replaces a voter by the spare and commits the joint entry with the spare
    // alone besides itself: a majority of the new voters, not of the old.
    assert_eq!(path.len(), 5);
    assert!(matches!(
        path[0],
        Choice::ChangeMembership {
            change: raft_proto::sim::explore::Change::Replace { .. },
            ..
        }
    ));
    clean(&options);
}
