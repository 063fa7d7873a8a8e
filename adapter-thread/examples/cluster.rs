//! Three nodes on OS threads over TCP on 127.0.0.1, each with its own data directory: a word
//! counter as the replicated state machine, proposals from several tasks, every node waiting
//! until it applied the last write, then a clean restart of the whole cluster from disk showing
//! that the state came back.
//!
//! `cargo run --example cluster -p adapter-thread`

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use adapter_thread::transport::TcpTransport;
use adapter_thread::{
    inbound_channel, NodeHandle, NodeId, NodeOptions, ProposeError, StateMachine, TcpConfig,
};

/// How many times each word was proposed. Shared with the example so that it can print it;
/// the node is the only writer.
#[derive(Clone, Default)]
struct WordCount(Arc<Mutex<BTreeMap<String, u64>>>);

impl StateMachine for WordCount {
    fn apply(&mut self, _index: u64, command: &[u8]) -> Vec<u8> {
        let word = String::from_utf8_lossy(command).into_owned();
        let mut counts = self.0.lock().unwrap();
        let count = counts.entry(word).or_insert(0);
        *count += 1;
        count.to_le_bytes().to_vec()
    }
    fn snapshot(&self) -> Vec<u8> {
        let counts = self.0.lock().unwrap();
        counts
            .iter()
            .map(|(w, n)| format!("{w} {n}\n"))
            .collect::<String>()
            .into_bytes()
    }
    fn restore(&mut self, snapshot: &[u8]) {
        let text = String::from_utf8_lossy(snapshot);
        let mut counts = self.0.lock().unwrap();
        counts.clear();
        for line in text.lines() {
            if let Some((word, n)) = line.split_once(' ') {
                counts.insert(word.to_owned(), n.parse().unwrap_or(0));
            }
        }
    }
}

const IDS: [NodeId; 3] = [1, 2, 3];
const CLUSTER_ID: u64 = 42;

struct Member {
    node: NodeHandle,
    transport: Arc<TcpTransport>,
    state: WordCount,
}

/// Starts the three nodes on fresh ports (bound first, so that every node knows the others'
/// addresses), from whatever their data directories hold.
fn start_cluster(dirs: &[PathBuf]) -> Vec<Member> {
    let listeners: Vec<TcpListener> = IDS
        .iter()
        .map(|_| TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    let addresses: BTreeMap<NodeId, SocketAddr> = IDS
        .iter()
        .zip(&listeners)
        .map(|(&id, l)| (id, l.local_addr().unwrap()))
        .collect();
    let mut members = Vec::new();
    for ((&id, listener), dir) in IDS.iter().zip(listeners).zip(dirs) {
        // The same map for every node: a node skips itself.
        let tcp = TcpConfig::new(CLUSTER_ID, id, addresses[&id], addresses.clone());
        let (inbound_tx, inbound_rx) = inbound_channel();
        let transport = TcpTransport::start_with_listener(tcp, listener, inbound_tx).unwrap();
        let transport = Arc::new(transport);
        let mut options = NodeOptions::new(id, IDS.to_vec(), dir);
        options.snapshot_every = Some(50);
        let state = WordCount::default();
        let node =
            adapter_thread::start(options, state.clone(), Arc::clone(&transport), inbound_rx)
                .unwrap();
        members.push(Member {
            node,
            transport,
            state,
        });
    }
    members
}

/// Proposes `word` at whichever node leads, following the hints of the others.
fn propose(nodes: &[NodeHandle], word: &str) -> (u64, u64) {
    let mut at = 0;
    loop {
        match nodes[at].propose(word.as_bytes().to_vec()) {
            Ok(count) => {
                let status = nodes[at].status().unwrap();
                return (
                    u64::from_le_bytes(count.try_into().unwrap()),
                    status.applied_index,
                );
            }
            Err(ProposeError::NotLeader { leader_hint }) => {
                at = leader_hint
                    .and_then(|id| IDS.iter().position(|&i| i == id))
                    .unwrap_or((at + 1) % nodes.len());
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(error) => panic!("{word}: {error}"),
        }
    }
}

fn main() {
    let base = std::env::temp_dir().join(format!("adapter-thread-cluster-{}", std::process::id()));
    let dirs: Vec<PathBuf> = IDS
        .iter()
        .map(|id| base.join(format!("node-{id}")))
        .collect();

    let members = start_cluster(&dirs);
    let nodes: Arc<Vec<NodeHandle>> = Arc::new(members.iter().map(|m| m.node.clone()).collect());
    // Four writers, each proposing 40 words.
    let mut writers = Vec::new();
    for writer in 0..4 {
        let nodes = Arc::clone(&nodes);
        writers.push(std::thread::spawn(move || {
            let mut last = 0;
            for i in 0..40 {
                let word = ["raft", "log", "term", "vote", "quorum"][(writer + i) % 5];
                last = last.max(propose(&nodes, word).1);
            }
            last
        }));
    }
    let mut last_index = 0;
    for writer in writers {
        last_index = last_index.max(writer.join().unwrap());
    }
    println!("160 words committed; the leader had applied up to index {last_index} by then");
    for member in &members {
        let status = member.node.wait_applied(last_index).unwrap();
        println!(
            "node {} ({:?}, term {}): applied {}, {:?}",
            status.id,
            status.role,
            status.term,
            status.applied_index,
            member.state.0.lock().unwrap()
        );
    }
    let before = members[0].state.0.lock().unwrap().clone();

    // A clean stop: nodes first (a leader hands over), then their transports.
    for member in &members {
        member.node.shutdown();
        member.transport.shutdown();
    }
    println!("cluster stopped; restarting from disk");

    let members = start_cluster(&dirs);
    for member in &members {
        let status = member.node.wait_applied(last_index).unwrap();
        let state = member.state.0.lock().unwrap().clone();
        println!(
            "node {} after restart: applied {}, state {}",
            status.id,
            status.applied_index,
            if state == before {
                "as before"
            } else {
                "DIFFERENT"
            }
        );
        assert_eq!(state, before);
    }
    for member in &members {
        member.node.shutdown();
        member.transport.shutdown();
    }
    std::fs::remove_dir_all(&base).ok();
}
