//! Proof that the judge can fail: classic Raft bugs, injected on purpose, must each be
//! reported as a safety violation by the lab scenarios or the random search within a stated
//! number of seeds. A judge that cannot fail proves nothing.

use raft_proto::sim::{random, scenarios, FailureKind, SimOptions};
use raft_proto::InjectedBugs;

/// Runs random schedules (3 and 5 nodes alternating) with `bugs` until one fails on safety;
/// returns the seed, or panics after `max_seeds`.
fn random_search_catches(bugs: InjectedBugs, max_seeds: u64) -> u64 {
    for seed in 0..max_seeds {
        let nodes = if seed % 2 == 0 { 3 } else { 5 };
        let mut options = SimOptions::new(nodes, seed);
        options.bugs = bugs;
        if let Err(failure) = random::run(options, 1000) {
            if failure.kind == FailureKind::Safety {
                eprintln!("caught at seed {seed}: {}", failure.message);
                return seed;
            }
        }
    }
    panic!("the random search missed {bugs:?} in {max_seeds} seeds");
}

/// How many of the random schedules of seeds `0..seeds` (5 nodes) fail on safety with `bugs`.
fn random_search_failures(bugs: InjectedBugs, seeds: u64) -> u64 {
    (0..seeds)
        .filter(|&seed| {
            let mut options = SimOptions::new(5, seed);
            options.bugs = bugs;
            random::run(options, 1000).is_err_and(|f| f.kind == FailureKind::Safety)
        })
        .count() as u64
}

/// Runs the scenario over seeds until one fails on safety.
fn scenario_catches(name: &str, bugs: InjectedBugs, max_seeds: u64) -> u64 {
    let scenario = scenarios::find(name).expect("scenario exists");
    for seed in 0..max_seeds {
        let mut options = scenario.options(seed);
        options.bugs = bugs;
        if let Err(failure) = scenario.run_with(options) {
            if failure.kind == FailureKind::Safety {
                eprintln!("{name} caught it at seed {seed}: {}", failure.message);
                return seed;
            }
        }
    }
    panic!("{name} missed {bugs:?} in {max_seeds} seeds");
}

#[test]
fn committing_an_earlier_term_entry_by_counting_is_caught() {
    let bugs = InjectedBugs {
        commit_earlier_term_by_counting: true,
        ..InjectedBugs::default()
    };
    // Figure 8 (unreliable) is the lab's scenario for exactly this bug.
    scenario_catches("figure8_unreliable", bugs, 300);
    random_search_catches(bugs, 10_000);
}

#[test]
fn granting_a_vote_before_it_is_durable_is_caught() {
    let bugs = InjectedBugs {
        grant_vote_before_persist: true,
        ..InjectedBugs::default()
    };
    random_search_catches(bugs, 30_000);
}

#[test]
fn forgetting_the_vote_on_step_down_is_caught() {
    let bugs = InjectedBugs {
        forget_vote_on_step_down: true,
        ..InjectedBugs::default()
    };
    random_search_catches(bugs, 1000);
}

#[test]
fn accepting_entries_before_they_are_durable_is_caught() {
    let bugs = InjectedBugs {
        accept_append_before_persist: true,
        ..InjectedBugs::default()
    };
    random_search_catches(bugs, 3000);
}

#[test]
fn committing_with_the_new_voters_only_while_joint_is_caught() {
    let bugs = InjectedBugs {
        commit_joint_with_new_voters_only: true,
        ..InjectedBugs::default()
    };
    scenario_catches("replace_all", bugs, 300);
    random_search_catches(bugs, 3000);
    // A leader that commits its joint membership leaves it within the same step, so the judge
    // also holds the commit to the membership the leader stepped with: judged against the
    // membership after the step only, just 6 of these 400 seeds failed (37 with both).
    let failures = random_search_failures(bugs, 400);
    assert!(
        failures >= 20,
        "only {failures} of 400 seeds caught {bugs:?}"
    );
}

#[test]
fn keeping_a_truncated_membership_in_force_is_caught() {
    let bugs = InjectedBugs {
        keep_truncated_membership: true,
        ..InjectedBugs::default()
    };
    // Only the judge's own account of each log's memberships sees it (none of 3000 seeds
    // failed without it).
    random_search_catches(bugs, 3000);
}

#[test]
fn installing_a_streamed_snapshot_before_its_last_chunk_is_staged_is_caught() {
    let bugs = InjectedBugs {
        stage_snapshot_chunks_after_persists: true,
        ..InjectedBugs::default()
    };
    // The simulated storage checks that staged chunks continue each other and that an
    // installed snapshot's bytes restore the applied state.
    scenario_catches("streamed_snapshot_install_unreliable", bugs, 20);
    random_search_catches(bugs, 3000);
}
