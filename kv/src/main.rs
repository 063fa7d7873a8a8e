//! `raft-kv`: a replicated key-value store on [`adapter_thread`], and the project's demo.
//!
//! ```text
//! raft-kv demo                      # 3 processes on 127.0.0.1, load, leader SIGKILL, verification
//! raft-kv serve --id 1 --peers 1=127.0.0.1:7001,2=127.0.0.1:7002,3=127.0.0.1:7003 \
//!               --client-addr 127.0.0.1:8001 --data-dir data/node-1
//! ```

mod demo;
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
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Run one replica.
    Serve {
        /// This node's id.
        #[arg(long)]
        id: NodeId,
        /// Every member's Raft address, this one included: `1=127.0.0.1:7001,2=...`.
        #[arg(long, value_parser = parse_peers)]
        peers: BTreeMap<NodeId, SocketAddr>,
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
        /// Which adapter runs the node.
        #[arg(long, value_enum, default_value_t = runtime::Runtime::Thread)]
        runtime: runtime::Runtime,
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
    },
}

fn parse_peers(s: &str) -> Result<BTreeMap<NodeId, SocketAddr>, String> {
    s.split(',')
        .map(|part| {
            let (id, addr) = part
                .split_once('=')
                .ok_or_else(|| format!("{part:?} is not ID=ADDRESS"))?;
            let id = id.parse().map_err(|e| format!("bad id {id:?}: {e}"))?;
            let addr = addr
                .parse()
                .map_err(|e| format!("bad address {addr:?}: {e}"))?;
            Ok((id, addr))
        })
        .collect()
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Cmd::Serve {
            id,
            peers,
            client_addr,
            data_dir,
            cluster_id,
            snapshot_every,
            exit_with_parent,
            runtime,
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
            server::serve(server::ServeConfig {
                id,
                cluster_id,
                peers,
                client_addr,
                data_dir,
                snapshot_every,
                runtime,
            })
        }
        Cmd::Demo {
            dir,
            writes,
            clients,
            runtime,
        } => std::env::current_exe()
            .map_err(|e| format!("cannot find this executable: {e}"))
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
                    },
                )
            })
            .map(|_| ()),
        Cmd::Chaos {
            dir,
            rounds,
            clients,
            seed,
            runtime,
        } => std::env::current_exe()
            .map_err(|e| format!("cannot find this executable: {e}"))
            .and_then(|exe| {
                demo::chaos(
                    exe,
                    &demo::ChaosConfig {
                        dir,
                        rounds,
                        clients,
                        seed,
                        runtime,
                    },
                )
            })
            .map(|acked| {
                println!("chaos passed: {acked} acknowledged writes survived on every node")
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
