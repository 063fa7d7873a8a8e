//! The node loop on OS threads: wait for the next input or deadline, feed the shared
//! [`Driver`], carry out its [`Effects`].
//!
//! Per node, besides the transport's own threads:
//! - the **node thread** owns the [`Driver`] (the core and the [`StateMachine`]). It waits for
//!   a peer message, a command from a [`NodeHandle`], a durability acknowledgement or the
//!   core's next deadline, feeds everything that is ready (bounded per wake-up, all waiting
//!   proposals as one batch), then hands the writes to the storage worker and the messages to
//!   the transport;
//! - the **storage worker** ([`StorageWorker`]) writes each batch with one write and one fsync
//!   and only then acknowledges it.

use std::thread::JoinHandle;
use std::time::Duration;

use adapter_common::storage::FileStorage;
use adapter_common::writer::StorageWorker;
use adapter_common::{
    Driver, Effects, NodeOptions, ProposeError, StartError, StateMachine, Status, Transport,
};
use crossbeam_channel::{bounded, select, unbounded, Receiver, RecvTimeoutError, Sender};
use raft_proto::{Message, NodeId};

type Answer = Result<Vec<u8>, ProposeError>;

enum Command {
    Propose(Vec<u8>, Sender<Answer>),
    Status(Sender<Status>),
    Shutdown,
}

/// The application's handle on a running node. Cloneable; every clone talks to the same node.
#[derive(Clone)]
pub struct NodeHandle {
    commands: Sender<Command>,
    id: NodeId,
    threads: std::sync::Arc<std::sync::Mutex<Vec<JoinHandle<()>>>>,
}

impl std::fmt::Debug for NodeHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeHandle").field("id", &self.id).finish()
    }
}

impl NodeHandle {
    /// Proposes `command` and blocks until it is committed and applied (returning the state
    /// machine's answer), refused, or `timeout` passes.
    pub fn propose(&self, command: Vec<u8>, timeout: Duration) -> Result<Vec<u8>, ProposeError> {
        let (reply, answer) = bounded(1);
        self.commands
            .send(Command::Propose(command, reply))
            .map_err(|_| ProposeError::ShutDown)?;
        match answer.recv_timeout(timeout) {
            Ok(result) => result,
            Err(RecvTimeoutError::Timeout) => Err(ProposeError::TimedOut),
            Err(RecvTimeoutError::Disconnected) => Err(ProposeError::ShutDown),
        }
    }

    /// The node's current state, or None once it is shut down.
    pub fn status(&self) -> Option<Status> {
        let (reply, answer) = bounded(1);
        self.commands.send(Command::Status(reply)).ok()?;
        answer.recv_timeout(Duration::from_secs(5)).ok()
    }

    /// The node's id.
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// Stops the node: proposals still waiting fail with [`ProposeError::ShutDown`], writes
    /// already issued are completed (nothing acknowledged is lost), and the node's threads
    /// are joined.
    pub fn shutdown(&self) {
        let _ = self.commands.send(Command::Shutdown);
        let threads: Vec<JoinHandle<()>> = match self.threads.lock() {
            Ok(mut threads) => threads.drain(..).collect(),
            Err(_) => return,
        };
        for thread in threads {
            let _ = thread.join();
        }
    }
}

/// Starts a node: recovers its state from `options.data_dir`, restores the state machine from
/// the latest snapshot, and runs it with `transport` for outgoing messages and `inbound` for
/// incoming ones (the transport's receiving side).
pub fn start<S: StateMachine, T: Transport>(
    options: NodeOptions,
    state_machine: S,
    transport: T,
    inbound: Receiver<Message>,
) -> Result<NodeHandle, StartError> {
    let (storage, durable, report) = FileStorage::open(&options.data_dir)?;
    if report.repaired_bytes > 0 {
        tracing::warn!(
            repaired_bytes = report.repaired_bytes,
            "cut a torn tail off the log (an unacknowledged write)"
        );
    }
    let driver = Driver::new(&options, state_machine, durable)?;
    let id = driver.id();
    let (commands_tx, commands_rx) = unbounded();
    let (durable_tx, durable_rx) = unbounded();
    let worker = StorageWorker::spawn(storage, format!("raft-{id}-storage"), move |result| {
        let _ = durable_tx.send(result);
    })?;
    let node_thread = std::thread::Builder::new()
        .name(format!("raft-{id}-node"))
        .spawn(move || {
            run(
                driver,
                worker,
                &transport,
                &inbound,
                &commands_rx,
                &durable_rx,
            )
        })?;
    Ok(NodeHandle {
        commands: commands_tx,
        id,
        threads: std::sync::Arc::new(std::sync::Mutex::new(vec![node_thread])),
    })
}

/// How much input one wake-up takes before stepping the timers again.
const MAX_INPUTS_PER_WAKE: usize = 4096;

fn run<S: StateMachine, T: Transport>(
    mut driver: Driver<S>,
    worker: StorageWorker,
    transport: &T,
    inbound: &Receiver<Message>,
    commands: &Receiver<Command>,
    durable: &Receiver<Result<u64, String>>,
) {
    let never = crossbeam_channel::never();
    let mut inbound = inbound;
    let mut effects = Effects::default();
    let mut stop = false;
    while !stop {
        select! {
            recv(inbound) -> message => match message {
                Ok(message) => driver.on_message(message, &mut effects),
                // The transport is gone: no more messages, but the handle is still served.
                Err(_) => inbound = &never,
            },
            recv(commands) -> command => match command {
                Ok(command) => stop = on_command(&mut driver, command, &mut effects),
                Err(_) => stop = true,
            },
            recv(durable) -> seq => match seq {
                Ok(Ok(seq)) => driver.on_persisted(seq, &mut effects),
                _ => {
                    tracing::error!(id = driver.id(), "storage failed; stopping");
                    break;
                }
            },
            default(driver.time_to_deadline()) => {}
        }
        // Take whatever else is ready, bounded, so a busy node still keeps its timers.
        for _ in 0..MAX_INPUTS_PER_WAKE {
            if stop {
                break;
            }
            if let Ok(result) = durable.try_recv() {
                match result {
                    Ok(seq) => driver.on_persisted(seq, &mut effects),
                    Err(error) => {
                        tracing::error!(id = driver.id(), %error, "storage failed; stopping");
                        stop = true;
                    }
                }
            } else if let Ok(command) = commands.try_recv() {
                stop = on_command(&mut driver, command, &mut effects);
            } else if let Ok(message) = inbound.try_recv() {
                driver.on_message(message, &mut effects);
            } else {
                break;
            }
        }
        if stop {
            // Queued proposals are answered, not proposed; what the inputs above caused is
            // still written and sent below.
            driver.shut_down();
        }
        driver.flush(&mut effects);
        if !worker.write(std::mem::take(&mut effects.writes)) {
            tracing::error!(id = driver.id(), "the storage worker is gone; stopping");
            break;
        }
        for message in effects.messages.drain(..) {
            transport.send(message);
        }
    }
    driver.shut_down();
    // Every write handed over is completed before the thread ends.
    worker.finish();
}

/// Handles a command; true when the node must stop.
fn on_command<S: StateMachine>(
    driver: &mut Driver<S>,
    command: Command,
    effects: &mut Effects,
) -> bool {
    match command {
        Command::Propose(data, reply) => {
            driver.propose(
                data,
                Box::new(move |answer| {
                    let _ = reply.send(answer);
                }),
                effects,
            );
            false
        }
        Command::Status(reply) => {
            let _ = reply.send(driver.status());
            false
        }
        Command::Shutdown => true,
    }
}
