//! The node as a tokio task: wait for the next input or deadline, feed the shared
//! [`Driver`], carry out its [`Effects`]. Disk writes and syncs run on the storage worker's
//! own thread ([`StorageWorker`]), never on the runtime's threads.

use std::sync::{Arc, Mutex, PoisonError};

use adapter_common::storage::FileStorage;
use adapter_common::writer::StorageWorker;
use adapter_common::{
    Driver, Effects, NodeOptions, ProposeError, StartError, StateMachine, Status, Transport,
};
use raft_proto::{Message, NodeId};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

type Answer = Result<Vec<u8>, ProposeError>;

enum Command {
    Propose(Vec<u8>, oneshot::Sender<Answer>),
    Status(oneshot::Sender<Status>),
    Shutdown,
}

/// The application's handle on a running node. Cloneable; every clone talks to the same node.
#[derive(Clone)]
pub struct NodeHandle {
    commands: mpsc::UnboundedSender<Command>,
    id: NodeId,
    task: Arc<Mutex<Option<JoinHandle<()>>>>,
}

impl std::fmt::Debug for NodeHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeHandle").field("id", &self.id).finish()
    }
}

impl NodeHandle {
    /// Proposes `command`; resolves when it is committed and applied (with the state
    /// machine's answer) or refused.
    ///
    /// Cancellation-safe: dropping the future abandons the wait, nothing else. The command
    /// may still commit; its answer is then discarded, and no state is kept for it.
    pub async fn propose(&self, command: Vec<u8>) -> Result<Vec<u8>, ProposeError> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(Command::Propose(command, reply))
            .map_err(|_| ProposeError::ShutDown)?;
        answer.await.unwrap_or(Err(ProposeError::ShutDown))
    }

    /// The node's current state, or None once it is shut down.
    pub async fn status(&self) -> Option<Status> {
        let (reply, answer) = oneshot::channel();
        self.commands.send(Command::Status(reply)).ok()?;
        answer.await.ok()
    }

    /// The node's id.
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// Stops the node: waiting proposals fail with [`ProposeError::ShutDown`], writes already
    /// issued are completed (nothing acknowledged is lost), and the node's task ends.
    pub async fn shutdown(&self) {
        let _ = self.commands.send(Command::Shutdown);
        let task = self
            .task
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(task) = task {
            let _ = task.await;
        }
    }
}

/// Starts a node as a task of the current tokio runtime: recovers its state from
/// `options.data_dir`, restores the state machine from the latest snapshot, and runs it with
/// `transport` for outgoing messages and `inbound` for incoming ones.
///
/// Must be called from within a tokio runtime.
pub fn start<S: StateMachine, T: Transport>(
    options: NodeOptions,
    state_machine: S,
    transport: T,
    inbound: mpsc::Receiver<Message>,
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
    let (commands_tx, commands_rx) = mpsc::unbounded_channel();
    let (durable_tx, durable_rx) = mpsc::unbounded_channel();
    let worker = StorageWorker::spawn(storage, format!("raft-{id}-storage"), move |result| {
        let _ = durable_tx.send(result);
    })?;
    let task = tokio::spawn(run(
        driver,
        worker,
        transport,
        inbound,
        commands_rx,
        durable_rx,
    ));
    Ok(NodeHandle {
        commands: commands_tx,
        id,
        task: Arc::new(Mutex::new(Some(task))),
    })
}

/// How much input one wake-up takes before stepping the timers again.
const MAX_INPUTS_PER_WAKE: usize = 4096;

async fn run<S: StateMachine, T: Transport>(
    mut driver: Driver<S>,
    worker: StorageWorker,
    transport: T,
    mut inbound: mpsc::Receiver<Message>,
    mut commands: mpsc::UnboundedReceiver<Command>,
    mut durable: mpsc::UnboundedReceiver<Result<u64, String>>,
) {
    let mut effects = Effects::default();
    let mut inbound_open = true;
    let mut stop = false;
    while !stop {
        tokio::select! {
            message = inbound.recv(), if inbound_open => match message {
                Some(message) => driver.on_message(message, &mut effects),
                None => inbound_open = false,
            },
            command = commands.recv() => match command {
                Some(command) => stop = on_command(&mut driver, command, &mut effects),
                None => stop = true,
            },
            seq = durable.recv() => match seq {
                Some(Ok(seq)) => driver.on_persisted(seq, &mut effects),
                _ => {
                    tracing::error!(id = driver.id(), "storage failed; stopping");
                    break;
                }
            },
            () = tokio::time::sleep(driver.time_to_deadline()) => {}
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
    // Completing the writes handed over joins a thread: do it off the runtime's threads.
    let _ = tokio::task::spawn_blocking(move || worker.finish()).await;
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
