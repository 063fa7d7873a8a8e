//! The long-search runner: lab scenarios or random fault schedules over many seeds, on every
//! core, with a progress bar. Ends with `N passed, M failed` and exits non-zero on any failure,
//! printing for each failure a command that replays exactly that seed.
//!
//! ```text
//! cargo run --release -p raft-proto --example simulate -- --scenario figure8_unreliable --seeds 1000
//! cargo run --release -p raft-proto --example simulate -- --random --seeds 100000 --nodes 5
//! cargo run --release -p raft-proto --example simulate -- --explore --nodes 3 --depth 8
//! ```

use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};
use raft_proto::sim::{random, scenarios, Failure, FailureKind, SimOptions};

#[derive(Parser, Debug)]
#[command(about = "Run the Raft core under the deterministic simulator over many seeds")]
struct Args {
    /// A lab scenario by name (see --list).
    #[arg(long, conflicts_with = "random")]
    scenario: Option<String>,
    /// Random fault schedules instead of a scenario.
    #[arg(long)]
    random: bool,
    /// Every lab scenario, one after the other.
    #[arg(long, conflicts_with_all = ["random", "scenario"])]
    all: bool,
    /// Explore every interleaving of a small cluster up to --depth events (depth first,
    /// deepening one event at a time, the judge checking every state), instead of seeds.
    #[arg(long, conflicts_with_all = ["random", "scenario", "all"])]
    explore: bool,
    /// The most events on an explored path.
    #[arg(long, default_value_t = 10)]
    depth: usize,
    /// Stop exploring once this many distinct states are known.
    #[arg(long, default_value_t = 5_000_000)]
    max_states: usize,
    /// Crashes per explored path.
    #[arg(long, default_value_t = 1)]
    crashes: usize,
    /// Proposals per explored path.
    #[arg(long, default_value_t = 1)]
    proposals: usize,
    /// Messages lost or duplicated per explored path.
    #[arg(long, default_value_t = 1)]
    losses: usize,
    /// Linearizable reads asked per explored path.
    #[arg(long, default_value_t = 0)]
    reads: usize,
    /// Membership changes asked per explored path.
    #[arg(long, default_value_t = 0)]
    changes: usize,
    /// Explore from a cluster with a leader and a command applied everywhere.
    #[arg(long)]
    from_leader: bool,
    /// With --explore: search from the end of this path (positions, as --replay takes them)
    /// instead of from the start; --depth counts the events after it.
    #[arg(long)]
    after: Option<String>,
    /// With --explore: disks sync every write at once (no sync events, and a crash loses
    /// nothing).
    #[arg(long)]
    sync_at_once: bool,
    /// With --explore: each application snapshots after applying every index i with
    /// (i + 1) % N == 0 (1: after every entry).
    #[arg(long)]
    snapshot_interval: Option<u64>,
    /// With --explore: stream snapshots in chunks of --snapshot-chunk bytes.
    #[arg(long)]
    stream_snapshots: bool,
    /// With --explore: the most bytes of a snapshot chunk.
    #[arg(long, default_value_t = 64)]
    snapshot_chunk: usize,
    /// With --explore: a follower this many entries or more behind the leader's first entry
    /// is sent a snapshot.
    #[arg(long)]
    snapshot_catchup: Option<u64>,
    /// With --explore: how many of the --nodes servers are voters from the start (the others
    /// are spares a membership change may add); all by default.
    #[arg(long)]
    voters: Option<usize>,
    /// With --explore: instead of searching, replay the path an exploration printed (the
    /// positions of its choices, `3.0.5...`), with the same options; a path without a
    /// violation lists the choices open after it (`--replay ""` those at the start).
    #[arg(long)]
    replay: Option<String>,
    /// How many seeds to run.
    #[arg(long, default_value_t = 100)]
    seeds: u64,
    /// The first seed.
    #[arg(long, default_value_t = 0)]
    first_seed: u64,
    /// Cluster size for --random.
    #[arg(long, default_value_t = 5)]
    nodes: usize,
    /// Minimum simulator events per random seed.
    #[arg(long, default_value_t = 1000)]
    events: u64,
    /// Worker threads (default: all cores; with --explore, 1).
    #[arg(long)]
    threads: Option<usize>,
    /// List the scenarios and exit.
    #[arg(long)]
    list: bool,
    /// Inject a deliberate bug into every node, to see the judge catch it:
    /// commit-earlier-term, vote-before-persist, forget-vote, append-before-persist,
    /// commit-joint-new-only, serve-reads-locally, serve-reads-before-applied,
    /// keep-truncated-membership or stage-after-persist.
    #[arg(long)]
    inject_bug: Option<String>,
    /// Print every failure in full (by default the first three are).
    #[arg(long)]
    verbose: bool,
    /// Print one hash over every event delivered to a node and every action it emitted, over
    /// all seeds (per job and in total): the same digest before and after a refactoring
    /// proves the nodes behaved exactly the same.
    #[arg(long)]
    digest: bool,
    /// Run the scenarios with pre-vote off (the random search draws it per seed).
    #[arg(long)]
    no_pre_vote: bool,
    /// Run the scenarios with check-quorum off (the random search draws it per seed).
    #[arg(long)]
    no_check_quorum: bool,
    /// Set clocks this many parts per million apart in the scenarios that drift them
    /// (`lease_read`: the leader's slow, the others' fast); 400000 breaks the lease's bound.
    #[arg(long)]
    clock_drift_ppm: Option<i64>,
    /// Do not check each read against the commit index when it was asked: only the
    /// linearizability checker judges what clients saw.
    #[arg(long)]
    no_read_floor: bool,
    /// The key-value model's clients write without sessions: a retried write may take effect
    /// twice (the judge must catch it).
    #[arg(long)]
    no_sessions: bool,
}

/// The bugs `--inject-bug` knows.
const BUGS: [&str; 9] = [
    "commit-earlier-term",
    "vote-before-persist",
    "forget-vote",
    "append-before-persist",
    "commit-joint-new-only",
    "serve-reads-locally",
    "serve-reads-before-applied",
    "keep-truncated-membership",
    "stage-after-persist",
];

/// The options of one run as the command line asks: a bug injected, a digest kept, features
/// switched off.
fn configure(mut options: SimOptions, args: &Args) -> SimOptions {
    options.digest = args.digest;
    if args.no_pre_vote {
        options.pre_vote = false;
    }
    if args.no_check_quorum {
        options.check_quorum = false;
    }
    if let Some(ppm) = args.clock_drift_ppm {
        options.clock_drift_ppm = ppm;
    }
    if args.no_read_floor {
        options.check_read_floor = false;
    }
    if args.no_sessions {
        options.client_sessions = false;
    }
    match args.inject_bug.as_deref() {
        Some("commit-earlier-term") => options.bugs.commit_earlier_term_by_counting = true,
        Some("vote-before-persist") => options.bugs.grant_vote_before_persist = true,
        Some("forget-vote") => options.bugs.forget_vote_on_step_down = true,
        Some("append-before-persist") => options.bugs.accept_append_before_persist = true,
        Some("commit-joint-new-only") => options.bugs.commit_joint_with_new_voters_only = true,
        Some("serve-reads-locally") => options.bugs.serve_reads_locally = true,
        Some("serve-reads-before-applied") => options.bugs.serve_reads_before_applied = true,
        Some("keep-truncated-membership") => options.bugs.keep_truncated_membership = true,
        Some("stage-after-persist") => {
            options.bugs.stage_snapshot_chunks_after_persists = true;
        }
        _ => {}
    }
    options
}

enum Job {
    Scenario(&'static scenarios::Scenario),
    Random { nodes: usize, events: u64 },
}

impl Job {
    fn name(&self) -> String {
        match self {
            Self::Scenario(s) => s.name.to_string(),
            Self::Random { .. } => "random".to_string(),
        }
    }

    fn replay(&self, seed: u64, args: &Args) -> String {
        let mut what = match self {
            Self::Scenario(s) => format!("--scenario {}", s.name),
            Self::Random { nodes, events } => format!("--random --nodes {nodes} --events {events}"),
        };
        if let Some(bug) = &args.inject_bug {
            what += &format!(" --inject-bug {bug}");
        }
        if args.no_pre_vote {
            what += " --no-pre-vote";
        }
        if args.no_check_quorum {
            what += " --no-check-quorum";
        }
        format!(
            "cargo run --release -p raft-proto --example simulate -- {what} --seeds 1 --first-seed {seed}"
        )
    }

    /// Runs one seed; returns the events it processed and its digest (0 unless `--digest`).
    fn run(&self, seed: u64, args: &Args) -> Result<(u64, u64), Failure> {
        match self {
            Self::Scenario(s) => s
                .run_with(configure(s.options(seed), args))
                .map(|r| (r.counters.events, r.digest)),
            Self::Random { nodes, events } => {
                random::run(configure(SimOptions::new(*nodes, seed), args), *events)
                    .map(|r| (r.events, r.digest))
            }
        }
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    if args.list {
        for s in scenarios::ALL {
            println!(
                "{} ({} servers{})",
                s.name,
                s.nodes,
                if s.unreliable { ", unreliable" } else { "" }
            );
        }
        return ExitCode::SUCCESS;
    }
    if let Some(bug) = &args.inject_bug {
        if !BUGS.contains(&bug.as_str()) {
            eprintln!("unknown bug {bug:?}");
            return ExitCode::from(2);
        }
    }
    let explore_only = args.after.is_some()
        || args.sync_at_once
        || args.snapshot_interval.is_some()
        || args.stream_snapshots
        || args.snapshot_catchup.is_some()
        || args.voters.is_some()
        || args.replay.is_some()
        || args.from_leader;
    if explore_only && !args.explore {
        eprintln!(
            "--after, --sync-at-once, --snapshot-*, --stream-snapshots, --voters, --replay and \
             --from-leader go with --explore"
        );
        return ExitCode::from(2);
    }
    if args.explore {
        return run_explore(&args);
    }
    let jobs: Vec<Job> = if args.random {
        vec![Job::Random {
            nodes: args.nodes,
            events: args.events,
        }]
    } else if args.all {
        scenarios::ALL.iter().map(Job::Scenario).collect()
    } else if let Some(name) = &args.scenario {
        match scenarios::find(name) {
            Some(s) => vec![Job::Scenario(s)],
            None => {
                eprintln!("unknown scenario {name:?}; --list shows them");
                return ExitCode::from(2);
            }
        }
    } else {
        eprintln!("say --scenario NAME, --all or --random (see --help)");
        return ExitCode::from(2);
    };
    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let mut passed = 0u64;
    let mut failed = 0u64;
    let mut digest = Fold::default();
    for job in &jobs {
        let (p, f, d) = run_job(job, &args, threads);
        passed += p;
        failed += f;
        digest.add(d);
    }
    if args.digest {
        println!("digest: {:016x}", digest.0);
    }
    println!("{passed} passed, {failed} failed");
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Combines digests in a fixed order.
struct Fold(u64);

impl Default for Fold {
    fn default() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }
}

impl Fold {
    fn add(&mut self, value: u64) {
        for b in value.to_le_bytes() {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
}

/// Runs every seed of `job`; returns passed, failed, and the digest over the seeds in order.
fn run_job(job: &Job, args: &Args, threads: usize) -> (u64, u64, u64) {
    let bar = ProgressBar::new(args.seeds);
    bar.set_style(
        ProgressStyle::with_template(
            "{prefix:>20} [{elapsed_precise}] {wide_bar} {pos}/{len} {msg}",
        )
        .expect("valid template"),
    );
    bar.set_prefix(job.name());
    let next = AtomicU64::new(0);
    let events = AtomicU64::new(0);
    let failures: Mutex<Vec<(u64, Failure)>> = Mutex::new(Vec::new());
    let digests: Mutex<Vec<(u64, u64)>> = Mutex::new(Vec::new());
    let started = Instant::now();
    std::thread::scope(|scope| {
        for _ in 0..threads.max(1) {
            scope.spawn(|| loop {
                let k = next.fetch_add(1, Ordering::Relaxed);
                if k >= args.seeds {
                    break;
                }
                let seed = args.first_seed + k;
                match job.run(seed, args) {
                    Ok((e, d)) => {
                        events.fetch_add(e, Ordering::Relaxed);
                        if args.digest {
                            let mut list =
                                digests.lock().expect("no panics while holding the lock");
                            list.push((seed, d));
                        }
                    }
                    Err(f) => {
                        let mut list = failures.lock().expect("no panics while holding the lock");
                        list.push((seed, f));
                        bar.set_message(format!("{} failed", list.len()));
                    }
                }
                bar.inc(1);
            });
        }
    });
    bar.finish();
    let elapsed = started.elapsed().as_secs_f64();
    let mut failures = failures
        .into_inner()
        .expect("no panics while holding the lock");
    failures.sort_by_key(|(seed, _)| *seed);
    let failed = failures.len() as u64;
    let total_events = events.load(Ordering::Relaxed);
    print!("{}: {} seeds in {elapsed:.1} s", job.name(), args.seeds);
    if total_events > 0 {
        print!(
            ", {total_events} events, {:.0} events/s",
            total_events as f64 / elapsed
        );
    }
    println!();
    let mut digests = digests
        .into_inner()
        .expect("no panics while holding the lock");
    digests.sort_unstable();
    let mut digest = Fold::default();
    for (_, d) in &digests {
        digest.add(*d);
    }
    if args.digest {
        println!("{}: digest {:016x}", job.name(), digest.0);
    }
    for (i, (seed, failure)) in failures.iter().enumerate() {
        if args.verbose || i < 3 {
            println!("{failure}");
        } else {
            println!("seed {seed}: {}", failure.message);
        }
        println!("replay: {}", job.replay(*seed, args));
    }
    (args.seeds - failed, failed, digest.0)
}

/// Positions separated by dots (`3.0.5`; empty: none).
fn parse_positions(text: &str) -> Option<Vec<usize>> {
    text.split('.')
        .filter(|p| !p.is_empty())
        .map(|p| p.parse().ok())
        .collect()
}

/// What `--explore` sets beyond its budgets, as the header line says it.
fn explore_setup(args: &Args) -> String {
    let mut setup = String::new();
    if let Some(voters) = args.voters {
        setup += &format!(", {voters} of them voters");
    }
    if let Some(after) = &args.after {
        setup += &format!(", after {after}");
    }
    if args.sync_at_once {
        setup += ", disks syncing at once";
    }
    if let Some(interval) = args.snapshot_interval {
        setup += &format!(", snapshots every {interval} entries");
        if args.stream_snapshots {
            setup += &format!(", streamed in chunks of {} bytes", args.snapshot_chunk);
        }
        if let Some(entries) = args.snapshot_catchup {
            setup += &format!(", sent to a follower {entries} or more entries behind");
        }
    }
    if args.no_pre_vote {
        setup += ", no pre-vote";
    }
    if args.no_check_quorum {
        setup += ", no check-quorum";
    }
    if let Some(bug) = &args.inject_bug {
        setup += &format!(", bug {bug} injected");
    }
    setup
}

/// Why `--explore` cannot run with these arguments, if it cannot.
fn explore_misuse(args: &Args) -> Option<String> {
    let voters = args.voters.unwrap_or(args.nodes);
    if args.nodes == 0 {
        return Some("--nodes must be at least 1".into());
    }
    if voters == 0 || voters > args.nodes {
        return Some(format!(
            "--voters must be between 1 and --nodes ({})",
            args.nodes
        ));
    }
    if args.snapshot_interval == Some(0) {
        return Some("--snapshot-interval must be at least 1".into());
    }
    if args.snapshot_chunk == 0 {
        return Some("--snapshot-chunk must be at least 1".into());
    }
    if args.stream_snapshots && args.snapshot_interval.is_none() {
        return Some("--stream-snapshots needs --snapshot-interval".into());
    }
    None
}

/// `--explore`: one exploration (depth first, deepening), its figures, and the shortest path
/// to a violation if it finds one (replayed to confirm it).
fn run_explore(args: &Args) -> ExitCode {
    if let Some(misuse) = explore_misuse(args) {
        eprintln!("{misuse}");
        return ExitCode::from(2);
    }
    use raft_proto::sim::explore::{
        explore_with, open_choices, replay, replay_positions, ExploreOptions,
    };
    let mut options = ExploreOptions::new(args.nodes, args.depth);
    options.max_states = args.max_states;
    options.crashes = args.crashes;
    options.proposals = args.proposals;
    options.losses = args.losses;
    options.reads = args.reads;
    options.changes = args.changes;
    options.from_leader = args.from_leader;
    options.sim = configure(options.sim.clone(), args);
    options.sim.initial_voters = args.voters;
    options.sync_at_once = args.sync_at_once;
    // One thread unless asked: the figures of a run are then the same to the last digit.
    options.threads = args.threads.unwrap_or(1);
    options.sim.snapshot_interval = args.snapshot_interval;
    options.sim.stream_snapshots = args.stream_snapshots;
    options.sim.snapshot_chunk = args.snapshot_chunk;
    if let Some(entries) = args.snapshot_catchup {
        options.sim.snapshot_catchup_entries = entries;
    }
    println!(
        "exploring {} nodes{} to depth {} (per path: {} crash(es), {} proposal(s), {} lost or duplicated message(s), {} read(s), {} membership change(s); at most {} states){}",
        args.nodes,
        if args.from_leader { " from a leader" } else { "" },
        args.depth,
        args.crashes,
        args.proposals,
        args.losses,
        args.reads,
        args.changes,
        args.max_states,
        explore_setup(args)
    );
    if let Some(after) = &args.after {
        let Some(prefix) = parse_positions(after) else {
            eprintln!("--after takes positions separated by dots: 3.0.5");
            return ExitCode::from(2);
        };
        if replay_positions(&options, &prefix).is_none() {
            eprintln!("the path of --after does not fit these options");
            return ExitCode::from(2);
        }
        options.prefix = prefix;
    }
    if let Some(positions) = &args.replay {
        let Some(positions) = parse_positions(positions) else {
            eprintln!("--replay takes positions separated by dots: 3.0.5");
            return ExitCode::from(2);
        };
        return match replay_positions(&options, &positions) {
            None => {
                eprintln!("that path does not fit these options");
                ExitCode::from(2)
            }
            Some((outcome, path)) => {
                for (i, choice) in path.iter().enumerate() {
                    println!("  {:>3}. {choice}", i + 1);
                }
                match outcome {
                    Err(failure) => {
                        println!("VIOLATION: {}", failure.message);
                        ExitCode::FAILURE
                    }
                    Ok(_) => {
                        println!("no violation on this path; open next:");
                        for (i, choice) in open_choices(&options, &positions)
                            .unwrap_or_default()
                            .iter()
                            .enumerate()
                        {
                            println!("  [{i}] {choice}");
                        }
                        ExitCode::SUCCESS
                    }
                }
            }
        };
    }
    let started = Instant::now();
    let report = explore_with(&options, |level| {
        println!(
            "  depth {:>3}: {:>10} distinct states, {:>11} visited, {:>7.1} s ({:.0} states/s; {:.1} s in all)",
            level.depth,
            level.distinct,
            level.visited,
            level.seconds,
            level.visited as f64 / level.seconds.max(1e-9),
            started.elapsed().as_secs_f64()
        );
    });
    println!(
        "{} states visited over all depths, {} distinct at the last, depth {} searched completely{}, {:.1} s, {:.0} states/s",
        report.visited,
        report.distinct,
        report.depth,
        if report.complete { "" } else { " (cut short by --max-states)" },
        report.seconds,
        report.visited as f64 / report.seconds.max(1e-9)
    );
    match report.violation {
        None => {
            println!("no violation");
            ExitCode::SUCCESS
        }
        Some(violation) => {
            let what = match violation.failure.kind {
                FailureKind::Safety => "VIOLATION",
                _ => "WARM-UP FAILED",
            };
            println!(
                "{what} after {} events: {}",
                violation.path.len(),
                violation.failure.message
            );
            for (i, choice) in violation.path.iter().enumerate() {
                println!("  {:>3}. {choice}", i + 1);
            }
            match replay(&options, &violation.path) {
                Err(failure) => println!("replayed: fails again ({})", failure.message),
                Ok(_) => println!("replayed: did NOT fail again"),
            }
            let positions: Vec<String> = violation.positions.iter().map(usize::to_string).collect();
            println!(
                "replay it with the same options (--after included or not) and --replay {}",
                positions.join(".")
            );
            ExitCode::FAILURE
        }
    }
}
