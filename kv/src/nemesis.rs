//! `raft-kv chaos --faults …`: faults between real processes, under load, with the history
//! checked at the end. Every peer link of the three-node cluster goes through a proxy
//! ([`adapter_common::faults::FaultyLink`]) that this driver cuts (both ways or one way),
//! delays with jitter or throttles; processes are paused (SIGSTOP, then SIGCONT: a stopped
//! leader wakes up believing it still leads) and killed (SIGKILL, then restarted). Each round
//! picks one fault from the seed (each kind once every as many rounds as there are kinds), holds
//! it for a while, and heals it. At the end everything
//! is healed and the run fails unless the recorded clients' history is linearizable, every
//! acknowledged write is on every node, the nodes converged, and no process panicked.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::RwLock;
use std::time::{Duration, Instant};

use adapter_common::faults::LinkFaults;
use raft_proto::NodeId;

use crate::demo::{
    random_below, spawn_recorded, verify, ChaosConfig, ChaosReport, Cluster, StopOnDrop, Writes,
};

/// A kind of fault the chaos driver injects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum)]
pub(crate) enum Fault {
    /// SIGKILL a node (the leader one time in two), restart it a moment later.
    Kill,
    /// Cut a node off from the others, both ways.
    Partition,
    /// Cut one direction only: a node that cannot send, or one that cannot hear.
    OneWay,
    /// Delay every link of a node by 20–200 ms, with up to 100 ms of jitter.
    Delay,
    /// Throttle every link of a node to 16–128 KiB/s.
    Slow,
    /// SIGSTOP a node (the leader one time in two), SIGCONT it later.
    Pause,
}

/// How long a fault other than a kill lasts, at most (it lasts at least 300 ms).
const LONGEST_FAULT_MS: u64 = 1500;

/// Runs the fault chaos (see the module's documentation).
pub(crate) fn run(exe: PathBuf, config: &ChaosConfig) -> Result<ChaosReport, String> {
    let mut cluster = Cluster::start_chaos(exe, config, Some(config.seed))?;
    cluster
        .wait_for_leader(0, Duration::from_secs(10))
        .ok_or("no leader was elected within 10 s")?;
    let mut random = random_below(config.seed);
    let stop = AtomicBool::new(false);
    let writes = Writes::default();
    let recorder = crate::history::Recorder::new();
    let addrs = RwLock::new(cluster.client_addrs());
    let mut injected: BTreeMap<Fault, usize> = BTreeMap::new();
    let started = Instant::now();
    std::thread::scope(|scope| -> Result<(), String> {
        let _stop_clients = StopOnDrop(&stop);
        spawn_recorded(scope, &recorder, &stop, &addrs);
        writes.spawn_writers(scope, &cluster, config.clients, &stop);
        // Every fault once per deal, in a random order: any `faults.len()` rounds in a row
        // inject each kind.
        let mut deck: Vec<Fault> = Vec::new();
        for _ in 0..config.rounds {
            std::thread::sleep(Duration::from_millis(100 + random(400)));
            if deck.is_empty() {
                deck = config.faults.clone();
                deck.sort_unstable();
                deck.dedup();
            }
            let fault = deck.swap_remove(random(deck.len() as u64) as usize);
            let victim = match cluster.leader() {
                Some((leader, _)) if random(2) == 0 => leader,
                _ => cluster.ids()[random(cluster.ids().len() as u64) as usize],
            };
            *injected.entry(fault).or_default() += 1;
            let hold = Duration::from_millis(300 + random(LONGEST_FAULT_MS - 300));
            inject(&mut cluster, fault, victim, hold, &mut random)?;
        }
        // Heal everything, and let the load run on a healthy cluster for a moment.
        cluster.heal_links();
        cluster.resume_all()?;
        std::thread::sleep(Duration::from_millis(500));
        Ok(())
    })?;
    let acked = writes.in_order();
    let mut longest = Duration::ZERO;
    let mut previous = started;
    for &(_, at) in &acked {
        longest = longest.max(at.saturating_duration_since(previous));
        previous = at;
    }
    let kinds: Vec<String> = injected.iter().map(|(f, n)| format!("{f:?} {n}")).collect();
    println!(
        "faults injected: {}; longest time without an acknowledged write: {} ms",
        kinds.join(", "),
        longest.as_millis()
    );
    let writes: Vec<usize> = acked.iter().map(|&(i, _)| i).collect();
    let mut report = verify(cluster, &writes, config.rounds, &recorder)?;
    report.longest_gap = Some(longest);
    Ok(report)
}

/// Injects `fault` at `victim`, holds it for `hold`, and heals it.
fn inject(
    cluster: &mut Cluster,
    fault: Fault,
    victim: NodeId,
    hold: Duration,
    random: &mut impl FnMut(u64) -> u64,
) -> Result<(), String> {
    let others: Vec<NodeId> = cluster.ids().into_iter().filter(|&i| i != victim).collect();
    match fault {
        Fault::Kill => {
            cluster.kill(victim);
            std::thread::sleep(Duration::from_millis(random(300)));
            cluster.spawn(victim)?;
            return Ok(());
        }
        Fault::Pause => {
            cluster.pause(victim)?;
            std::thread::sleep(hold);
            return cluster.resume(victim);
        }
        Fault::Partition => {
            for link in cluster.links_of(victim) {
                link.set(LinkFaults::cut());
            }
        }
        Fault::OneWay => {
            // Either the victim cannot send (it may still hear the others), or it cannot
            // hear (its messages still arrive).
            let sends = random(2) == 0;
            for &other in &others {
                let (from, to) = if sends {
                    (victim, other)
                } else {
                    (other, victim)
                };
                if let Some(link) = cluster.link(from, to) {
                    link.set(LinkFaults::cut());
                }
            }
        }
        Fault::Delay => {
            let delay = Duration::from_millis(20 + random(180));
            let jitter = Duration::from_millis(random(100));
            for link in cluster.links_of(victim) {
                link.set(LinkFaults::delayed(delay, jitter));
            }
        }
        Fault::Slow => {
            let rate = (16 + random(112)) * 1024;
            for link in cluster.links_of(victim) {
                link.set(LinkFaults::throttled(rate));
            }
        }
    }
    std::thread::sleep(hold);
    cluster.heal_links();
    Ok(())
}
