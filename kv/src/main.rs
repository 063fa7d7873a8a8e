//! `raft-kv`: a replicated key-value store on [`adapter_thread`], and the project's demo.
//!
//! ```text
//! raft-kv demo                      # 3 processes on 127.0.0.1, load, leader SIGKILL, verification
//! raft-kv serve --id 1 --peers 1=127.0.0.1:7001,2=127.0.0.1:7002,3=127.0.0.1:7003 \
//!               --client-addr 127.0.0.1:8001 --data-dir data/node-1
//! raft-kv serve --id 4 --raft-addr 127.0.0.1:7004 --join 127.0.0.1:8001 \
//!               --client-addr 127.0.0.1:8004 --data-dir data/node-4
//! raft-kv members list --cluster 127.0.0.1:8001
//! raft-kv members promote --cluster 127.0.0.1:8001 --id 4
//! raft-kv put greeting hello --cluster 127.0.0.1:8001,127.0.0.1:8002
//! raft-kv get greeting --cluster 127.0.0.1:8001
//! raft-kv status --cluster 127.0.0.1:8001,127.0.0.1:8002,127.0.0.1:8003
//! raft-kv bench-reads --read-modes log,index,lease
//! raft-kv bench-failover --rounds 5
//! ```

mod bench;
mod demo;
mod exporter;
mod history;
mod members;
mod nemesis;
mod protocol;
mod runtime;
mod server;
mod store;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use raft_proto::NodeId;

#[derive(Parser, Debug)]
#[command(about = "A replicated key-value store on Raft")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
    #[command(flatten)]
    tls: TlsArgs,
}

/// Mutual TLS: for `serve`, on the Raft port and the client port; for the client commands,
/// on their connections. All three files or none.
#[derive(clap::Args, Debug, Default)]
struct TlsArgs {
    /// This member's (or client's) certificate chain, PEM; a member's names it with the DNS
    /// name `node-ID` (see `raft-kv certs`).
    #[arg(long, global = true, requires_all = ["tls_key", "tls_ca"])]
    tls_cert: Option<PathBuf>,
    /// Its private key, PEM.
    #[arg(long, global = true, requires_all = ["tls_cert", "tls_ca"])]
    tls_key: Option<PathBuf>,
    /// The cluster CA's certificate, PEM: the only one trusted.
    #[arg(long, global = true, requires_all = ["tls_cert", "tls_key"])]
    tls_ca: Option<PathBuf>,
}

impl TlsArgs {
    fn load(&self) -> Result<Option<adapter_common::tls::TlsConfig>, String> {
        match (&self.tls_cert, &self.tls_key, &self.tls_ca) {
            (Some(cert), Some(key), Some(ca)) => {
                adapter_common::tls::TlsConfig::from_pem_files(cert, key, ca)
                    .map(Some)
                    .map_err(|e| format!("TLS: {e}"))
            }
            _ => Ok(None),
        }
    }
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Run one replica.
    Serve {
        /// This node's id.
        #[arg(long)]
        id: NodeId,
        /// For a new cluster: every member's Raft address, this one included, optionally with
        /// its client address (so that clients are redirected to the leader):
        /// `1=127.0.0.1:7001/127.0.0.1:8001,2=...`.
        #[arg(long, value_parser = parse_peers, required_unless_present = "join")]
        peers: Option<Peers>,
        /// To join an existing cluster: client addresses of some of its members (the node
        /// starts empty and asks to be added as a learner).
        #[arg(long, value_delimiter = ',', conflicts_with = "peers")]
        join: Option<Vec<SocketAddr>>,
        /// Where this node listens for its peers (default: its entry in --peers).
        #[arg(long, required_unless_present = "peers")]
        raft_addr: Option<SocketAddr>,
        /// Where clients connect.
        #[arg(long)]
        client_addr: SocketAddr,
        /// The node's data directory.
        #[arg(long)]
        data_dir: PathBuf,
        /// Members of another cluster id are refused.
        #[arg(long, default_value_t = 7)]
        cluster_id: u64,
        /// Snapshot the store every this many applied entries.
        #[arg(long, default_value_t = 1000)]
        snapshot_every: u64,
        /// Exit when standard input closes (the parent process died).
        #[arg(long)]
        exit_with_parent: bool,
        /// Stream snapshots through files (`Config::stream_snapshots`) instead of memory.
        #[arg(long)]
        stream_snapshots: bool,
        /// Which adapter runs the node.
        #[arg(long, value_enum, default_value_t = runtime::Runtime::Thread)]
        runtime: runtime::Runtime,
        /// How reads (`get`) are served: ReadIndex, lease, or through the log.
        #[arg(long, value_enum, default_value_t = server::ReadMode::Index)]
        read_mode: server::ReadMode,
        /// Serve the node's metrics in Prometheus's text format at http://ADDR/metrics.
        #[arg(long)]
        metrics_addr: Option<SocketAddr>,
        /// Obey a client's request to shut the node down (refused otherwise: anyone who
        /// reaches the client port could stop the node). The demo's clusters use it.
        #[arg(long)]
        allow_remote_shutdown: bool,
    },
    /// Make a cluster CA and certificates signed by it for mutual TLS: `ca.pem`,
    /// `node-ID.pem` and `node-ID-key.pem` for each node, `client.pem` and `client-key.pem`
    /// (the CA's key is not kept: make new certificates with a new CA).
    Certs {
        /// Where to write them.
        #[arg(long)]
        dir: PathBuf,
        /// The node ids: `1,2,3`.
        #[arg(long, value_delimiter = ',', required = true)]
        nodes: Vec<NodeId>,
    },
    /// Set KEY to VALUE (through the leader, found from --cluster).
    Put {
        /// The key.
        key: String,
        /// The value.
        value: String,
        /// Client addresses of members: `127.0.0.1:8001,127.0.0.1:8002`.
        #[arg(long, value_delimiter = ',', required = true)]
        cluster: Vec<SocketAddr>,
    },
    /// Print KEY's value (a linearizable read, served as the nodes' read mode says).
    Get {
        /// The key.
        key: String,
        /// Client addresses of members.
        #[arg(long, value_delimiter = ',', required = true)]
        cluster: Vec<SocketAddr>,
    },
    /// Remove KEY.
    Delete {
        /// The key.
        key: String,
        /// Client addresses of members.
        #[arg(long, value_delimiter = ',', required = true)]
        cluster: Vec<SocketAddr>,
    },
    /// Print each node's role, term, leader, commit and applied index.
    Status {
        /// Client addresses of members.
        #[arg(long, value_delimiter = ',', required = true)]
        cluster: Vec<SocketAddr>,
    },
    /// Ask one node to shut down (a leader hands leadership over first); refused unless that
    /// node was started with --allow-remote-shutdown.
    Shutdown {
        /// The node's client address.
        #[arg(long)]
        node: SocketAddr,
    },
    /// Look at or change the membership of a running cluster (the leader is found from
    /// the addresses given).
    Members {
        #[command(subcommand)]
        action: MembersCmd,
    },
    /// Write `count` keys `key-0000000`... (value `value-N`) through the leader.
    Fill {
        /// Client addresses of members.
        #[arg(long, value_delimiter = ',', required = true)]
        cluster: Vec<SocketAddr>,
        /// How many keys.
        #[arg(long, default_value_t = 1)]
        count: usize,
        /// The first key's number.
        #[arg(long, default_value_t = 0)]
        from: usize,
    },
    /// Read keys `from..from+count` back through the leader (through the log) and check
    /// their values; with --node, check what that replica holds instead.
    Check {
        /// Client addresses of members.
        #[arg(long, value_delimiter = ',', required = true)]
        cluster: Vec<SocketAddr>,
        /// How many keys.
        #[arg(long)]
        count: usize,
        /// The first key's number.
        #[arg(long, default_value_t = 0)]
        from: usize,
        /// Check the replica at this client address (its applied state) instead.
        #[arg(long)]
        node: Option<SocketAddr>,
    },
    /// Start a 3-node cluster as child processes, drive a load, kill the leader, verify.
    Demo {
        /// Where the nodes keep their data (emptied first).
        #[arg(long, default_value = "target/raft-kv-demo")]
        dir: PathBuf,
        /// How many writes.
        #[arg(long, default_value_t = 20_000)]
        writes: usize,
        /// Concurrent clients.
        #[arg(long, default_value_t = 32)]
        clients: usize,
        /// Which adapter runs the nodes.
        #[arg(long, value_enum, default_value_t = runtime::Runtime::Thread)]
        runtime: runtime::Runtime,
        /// How the nodes serve reads.
        #[arg(long, value_enum, default_value_t = server::ReadMode::Index)]
        read_mode: server::ReadMode,
        /// Mutual TLS between the nodes and with the clients (certificates made for the run,
        /// in DIR/tls).
        #[arg(long)]
        tls: bool,
    },
    /// The TLS benchmark: the demo's load without the kill, on fresh clusters with and
    /// without mutual TLS in turn; prints throughput and latency of each.
    BenchTls {
        /// Where the nodes keep their data (emptied first).
        #[arg(long, default_value = "target/raft-kv-bench-tls")]
        dir: PathBuf,
        /// Writes per run.
        #[arg(long, default_value_t = 20_000)]
        writes: usize,
        /// Concurrent clients.
        #[arg(long, default_value_t = 32)]
        clients: usize,
        /// Runs of each kind (alternating, plain first).
        #[arg(long, default_value_t = 2)]
        rounds: usize,
        /// Which adapter runs the nodes.
        #[arg(long, value_enum, default_value_t = runtime::Runtime::Thread)]
        runtime: runtime::Runtime,
    },
    /// The crash test: SIGKILL nodes at random moments under load, restart them, and check
    /// that every acknowledged write survives on every node.
    Chaos {
        /// Where the nodes keep their data (emptied first).
        #[arg(long, default_value = "target/raft-kv-chaos")]
        dir: PathBuf,
        /// How many kills.
        #[arg(long, default_value_t = 10)]
        rounds: usize,
        /// Concurrent clients.
        #[arg(long, default_value_t = 8)]
        clients: usize,
        /// Seeds the choice of victims and pauses.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Which adapter runs the nodes.
        #[arg(long, value_enum, default_value_t = runtime::Runtime::Thread)]
        runtime: runtime::Runtime,
        /// Each round replaces a random voter by a fresh node (new id, empty directory)
        /// instead of crashing nodes.
        #[arg(long)]
        membership: bool,
        /// How the nodes serve reads.
        #[arg(long, value_enum, default_value_t = server::ReadMode::Index)]
        read_mode: server::ReadMode,
        /// The faults each round picks from. `kill` alone is the crash test; with any other,
        /// every peer link goes through a proxy that cuts (`partition`, `one-way`), delays
        /// (`delay`) or throttles (`slow`) it, and `pause` stops a process with SIGSTOP.
        #[arg(long, value_enum, value_delimiter = ',', default_value = "kill")]
        faults: Vec<nemesis::Fault>,
        /// The nodes stream their snapshots through files (`serve --stream-snapshots`).
        #[arg(long)]
        stream_snapshots: bool,
    },
    /// The read benchmark: for each read mode, a fresh 3-process cluster, keys written, then
    /// clients reading at the leader for a while; prints reads per second and latencies.
    BenchReads {
        /// Where the nodes keep their data (emptied first).
        #[arg(long, default_value = "target/raft-kv-bench")]
        dir: PathBuf,
        /// The read modes to measure, one after the other.
        #[arg(
            long,
            value_enum,
            value_delimiter = ',',
            default_value = "log,index,lease"
        )]
        read_modes: Vec<server::ReadMode>,
        /// Concurrent readers.
        #[arg(long, default_value_t = 16)]
        clients: usize,
        /// How long each mode is measured, in seconds.
        #[arg(long, default_value_t = 5)]
        seconds: u64,
        /// Which adapter runs the nodes.
        #[arg(long, value_enum, default_value_t = runtime::Runtime::Thread)]
        runtime: runtime::Runtime,
    },
    /// The failover benchmark: stop the leader with SIGTERM (it hands leadership over) or
    /// SIGKILL (the others wait for an election timeout), under a write load; prints how long
    /// the cluster had no leader and how long writes stalled.
    BenchFailover {
        /// Where the nodes keep their data (emptied first).
        #[arg(long, default_value = "target/raft-kv-failover")]
        dir: PathBuf,
        /// Leader stops per signal.
        #[arg(long, default_value_t = 5)]
        rounds: usize,
        /// Which adapter runs the nodes.
        #[arg(long, value_enum, default_value_t = runtime::Runtime::Thread)]
        runtime: runtime::Runtime,
    },
    /// The memory benchmark: writers overwrite a fixed set of keys while each node's resident
    /// memory is sampled; prints it after a warm-up, at the end, and at its peak.
    BenchMemory {
        /// Where the nodes keep their data (emptied first).
        #[arg(long, default_value = "target/raft-kv-memory")]
        dir: PathBuf,
        /// Concurrent writers.
        #[arg(long, default_value_t = 64)]
        clients: usize,
        /// How long to run, in seconds.
        #[arg(long, default_value_t = 600)]
        seconds: u64,
        /// Snapshot every this many entries.
        #[arg(long, default_value_t = 10_000)]
        snapshot_every: u64,
        /// Which adapter runs the nodes.
        #[arg(long, value_enum, default_value_t = runtime::Runtime::Thread)]
        runtime: runtime::Runtime,
    },
}

#[derive(Subcommand, Debug)]
enum MembersCmd {
    /// Print the voters and learners with their addresses.
    List {
        /// Client addresses of members: `127.0.0.1:8001,127.0.0.1:8002`.
        #[arg(long, value_delimiter = ',', required = true)]
        cluster: Vec<SocketAddr>,
    },
    /// Add a node (started with `serve --join` or empty `serve --raft-addr`), as a voter or,
    /// with --learner, as a learner.
    Add {
        /// Client addresses of members.
        #[arg(long, value_delimiter = ',', required = true)]
        cluster: Vec<SocketAddr>,
        /// The new node's id.
        #[arg(long)]
        id: NodeId,
        /// The new node's Raft address.
        #[arg(long)]
        raft_addr: SocketAddr,
        /// The new node's client address.
        #[arg(long)]
        client_addr: SocketAddr,
        /// Add it as a learner (it does not vote).
        #[arg(long)]
        learner: bool,
    },
    /// Make a learner a voter.
    Promote {
        /// Client addresses of members.
        #[arg(long, value_delimiter = ',', required = true)]
        cluster: Vec<SocketAddr>,
        /// The learner's id.
        #[arg(long)]
        id: NodeId,
    },
    /// Remove a voter or a learner.
    Remove {
        /// Client addresses of members.
        #[arg(long, value_delimiter = ',', required = true)]
        cluster: Vec<SocketAddr>,
        /// The member's id.
        #[arg(long)]
        id: NodeId,
    },
}

/// `--peers`: each member's Raft address and, if given, its client address.
#[derive(Debug, Clone, Default)]
struct Peers(BTreeMap<NodeId, (SocketAddr, Option<SocketAddr>)>);

fn parse_peers(s: &str) -> Result<Peers, String> {
    let parse = |addr: &str| {
        addr.parse::<SocketAddr>()
            .map_err(|e| format!("bad address {addr:?}: {e}"))
    };
    s.split(',')
        .map(|part| {
            let (id, addrs) = part
                .split_once('=')
                .ok_or_else(|| format!("{part:?} is not ID=RAFT_ADDRESS[/CLIENT_ADDRESS]"))?;
            let id = id.parse().map_err(|e| format!("bad id {id:?}: {e}"))?;
            let (raft, client) = match addrs.split_once('/') {
                Some((raft, client)) => (parse(raft)?, Some(parse(client)?)),
                None => (parse(addrs)?, None),
            };
            Ok((id, (raft, client)))
        })
        .collect::<Result<_, String>>()
        .map(Peers)
}

fn check_keys(
    cluster: &[SocketAddr],
    count: usize,
    from: usize,
    node: Option<SocketAddr>,
) -> Result<(), String> {
    let mut wrong = 0;
    if let Some(node) = node {
        let (pairs, applied) = members::dump(node)?;
        let map: BTreeMap<String, Vec<u8>> = pairs.into_iter().collect();
        for i in from..from + count {
            if map.get(&demo::key(i)) != Some(&demo::value(i)) {
                wrong += 1;
            }
        }
        println!(
            "{node}: {} of {count} keys present with their values (applied index {applied}, {} keys in all)",
            count - wrong,
            map.len()
        );
    } else {
        for i in from..from + count {
            let command = store::KvCommand::Get { key: demo::key(i) };
            let answer = members::execute(cluster, command, std::time::Duration::from_secs(30))?;
            if answer != Some(demo::value(i)) {
                wrong += 1;
            }
        }
        println!(
            "read {} of {count} keys back with their values",
            count - wrong
        );
    }
    if wrong == 0 {
        Ok(())
    } else {
        Err(format!("{wrong} keys missing or wrong"))
    }
}

/// Runs one client command through the cluster and prints its answer with `show`.
fn client_command(
    cluster: &[SocketAddr],
    command: store::KvCommand,
    show: impl FnOnce(Option<Vec<u8>>) -> String,
) -> Result<(), String> {
    let answer = members::execute(cluster, command, std::time::Duration::from_secs(5))?;
    println!("{}", show(answer));
    Ok(())
}

fn run_members(action: MembersCmd) -> Result<(), String> {
    use crate::protocol::MemberChange;
    let limit = std::time::Duration::from_secs(60);
    let members = match action {
        MembersCmd::List { cluster } => members::list(&cluster)?,
        MembersCmd::Add {
            cluster,
            id,
            raft_addr,
            client_addr,
            learner,
        } => {
            let data = server::member_data(raft_addr, client_addr);
            let change = if learner {
                MemberChange::AddLearner { id, data }
            } else {
                MemberChange::AddVoter { id, data }
            };
            members::change(&cluster, change, limit)?
        }
        MembersCmd::Promote { cluster, id } => {
            members::change(&cluster, MemberChange::Promote { id }, limit)?
        }
        MembersCmd::Remove { cluster, id } => {
            members::change(&cluster, MemberChange::Remove { id }, limit)?
        }
    };
    members::print(&members);
    Ok(())
}

/// This executable, which the demo and the benchmarks start as their nodes.
fn this_exe() -> Result<PathBuf, String> {
    std::env::current_exe().map_err(|e| format!("cannot find this executable: {e}"))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let tls = match cli.tls.load() {
        Ok(tls) => tls,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    protocol::set_client_tls(tls.clone());
    let result = match cli.command {
        Cmd::Serve {
            id,
            peers,
            join,
            raft_addr,
            client_addr,
            data_dir,
            cluster_id,
            snapshot_every,
            exit_with_parent,
            stream_snapshots,
            runtime,
            read_mode,
            metrics_addr,
            allow_remote_shutdown,
        } => {
            if exit_with_parent {
                std::thread::spawn(|| {
                    let mut sink = Vec::new();
                    let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut sink);
                    // The parent is gone: stop as a crash would (nothing acknowledged is lost).
                    std::process::exit(3);
                });
            }
            tracing_subscriber::fmt()
                .with_env_filter(
                    tracing_subscriber::EnvFilter::try_from_default_env()
                        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
                )
                .init();
            let Peers(all) = peers.unwrap_or_default();
            let peers: BTreeMap<NodeId, SocketAddr> =
                all.iter().map(|(&i, &(raft, _))| (i, raft)).collect();
            let peer_clients = all
                .iter()
                .filter_map(|(&i, &(_, client))| Some((i, client?)))
                .collect();
            match raft_addr.or_else(|| peers.get(&id).copied()) {
                None => Err(format!(
                    "node {id} has no Raft address: give --raft-addr or list it in --peers"
                )),
                Some(raft_addr) => server::serve(server::ServeConfig {
                    id,
                    cluster_id,
                    raft_addr,
                    peers,
                    peer_clients,
                    join: join.unwrap_or_default(),
                    client_addr,
                    data_dir,
                    snapshot_every,
                    stream_snapshots,
                    runtime,
                    read_mode,
                    metrics_addr,
                    allow_remote_shutdown,
                    tls,
                }),
            }
        }
        Cmd::Members { action } => run_members(action),
        // A name of its own, so that a certificate of another CA made here is told apart by
        // its issuer's name, not only by its signature.
        Cmd::Certs { dir, nodes } => adapter_common::tls::generate::ClusterCa::new(&format!(
            "raft-kv cluster CA {:x}",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos())
        ))
        .map_err(|e| format!("cannot make a CA: {e}"))
        .and_then(|ca| {
            ca.write_cluster(&dir, &nodes)
                .map_err(|e| format!("cannot write into {}: {e}", dir.display()))
        })
        .map(|()| {
            println!(
                "wrote ca.pem, node-ID.pem/-key.pem for {nodes:?}, client.pem/-key.pem into {}",
                dir.display()
            )
        }),
        Cmd::Put {
            key,
            value,
            cluster,
        } => client_command(
            &cluster,
            store::KvCommand::Put {
                key,
                value: value.into_bytes(),
            },
            |previous| match previous {
                Some(old) => format!("ok (previous value: {})", String::from_utf8_lossy(&old)),
                None => "ok".to_string(),
            },
        ),
        Cmd::Get { key, cluster } => client_command(
            &cluster,
            store::KvCommand::Get { key },
            |value| match value {
                Some(value) => String::from_utf8_lossy(&value).into_owned(),
                None => "(not found)".to_string(),
            },
        ),
        Cmd::Delete { key, cluster } => client_command(
            &cluster,
            store::KvCommand::Delete { key },
            |previous| match previous {
                Some(_) => "deleted".to_string(),
                None => "(not found)".to_string(),
            },
        ),
        Cmd::Status { cluster } => members::status(&cluster).map(|lines| {
            for line in lines {
                println!("{line}");
            }
        }),
        Cmd::Shutdown { node } => {
            let mut conn = protocol::Connection::new(node, std::time::Duration::from_secs(5));
            match conn.call(&protocol::Request::Shutdown) {
                Ok(protocol::Response::Done(_)) => {
                    println!("{node} is shutting down");
                    Ok(())
                }
                Ok(protocol::Response::Refused(why)) => Err(format!("{node} refused: {why}")),
                Ok(other) => Err(format!("{node}: unexpected answer {other:?}")),
                Err(e) => Err(format!("{node} unreachable: {e}")),
            }
        }
        Cmd::Fill {
            cluster,
            count,
            from,
        } => {
            // One client session for all the writes.
            let mut writer = members::Writer::new(&cluster);
            (from..from + count)
                .try_for_each(|i| {
                    let command = store::KvCommand::Put {
                        key: demo::key(i),
                        value: demo::value(i),
                    };
                    writer
                        .write(command, std::time::Duration::from_secs(30))
                        .map(|_| ())
                })
                .map(|()| println!("wrote {count} keys from {}", demo::key(from)))
        }
        Cmd::Check {
            cluster,
            count,
            from,
            node,
        } => check_keys(&cluster, count, from, node),
        Cmd::Demo {
            dir,
            writes,
            clients,
            runtime,
            read_mode,
            tls,
        } => this_exe()
            .and_then(|exe| {
                demo::run(
                    exe,
                    &demo::DemoConfig {
                        dir,
                        writes,
                        clients,
                        kill_at: Some(0.5),
                        quiet: false,
                        runtime,
                        read_mode,
                        tls,
                    },
                )
            })
            .map(|_| ()),
        Cmd::BenchTls {
            dir,
            writes,
            clients,
            rounds,
            runtime,
        } => this_exe().and_then(|exe| {
            bench::tls(&bench::TlsBench {
                exe,
                dir,
                writes,
                clients,
                rounds,
                runtime,
            })
        }),
        Cmd::Chaos {
            dir,
            rounds,
            clients,
            seed,
            runtime,
            membership,
            read_mode,
            faults,
            stream_snapshots,
        } => this_exe()
            .and_then(|exe| {
                demo::chaos(
                    exe,
                    &demo::ChaosConfig {
                        dir,
                        rounds,
                        clients,
                        seed,
                        runtime,
                        membership,
                        read_mode,
                        faults,
                        stream_snapshots,
                    },
                )
            })
            .map(|report| {
                let gap = report.longest_gap.map_or_else(String::new, |gap| {
                    format!("; at most {} ms without a commit", gap.as_millis())
                });
                println!(
                    "chaos passed: {} rounds, {} acknowledged writes present on all {} nodes{gap}",
                    report.rounds, report.acknowledged, report.nodes
                )
            }),
        Cmd::BenchReads {
            dir,
            read_modes,
            clients,
            seconds,
            runtime,
        } => this_exe().and_then(|exe| {
            bench::reads(&bench::ReadBench {
                exe,
                dir,
                read_modes,
                clients,
                duration: std::time::Duration::from_secs(seconds),
                runtime,
            })
        }),
        Cmd::BenchFailover {
            dir,
            rounds,
            runtime,
        } => this_exe().and_then(|exe| bench::failover(exe, &dir, rounds, runtime)),
        Cmd::BenchMemory {
            dir,
            clients,
            seconds,
            snapshot_every,
            runtime,
        } => this_exe().and_then(|exe| {
            bench::memory(&bench::MemoryBench {
                exe,
                dir,
                clients,
                duration: std::time::Duration::from_secs(seconds),
                runtime,
                snapshot_every,
            })
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
