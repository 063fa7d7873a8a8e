//! The node as a tokio task: wait for the next input or deadline, feed the shared
//! [`Driver`], carry out its [`Effects`]. Disk writes and syncs run on the storage worker's
//! own thread ([`StorageWorker`]), never on the runtime's threads.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};

use adapter_common::writer::StorageWorker;
use adapter_common::{
    Command, Driver, Effects, Input, NodeOptions, ProposeError, ReadError, StartError,
    StateMachine, Status, TransferError, Transport, WaitError,
};
use raft_proto::{Index, Membership, MembershipChange, Message, NodeId};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

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
            .send(Command::Propose(
                command,
                Box::new(move |answer| {
                    let _ = reply.send(answer);
                }),
            ))
            .map_err(|_| ProposeError::ShutDown)?;
        answer.await.unwrap_or(Err(ProposeError::ShutDown))
    }

    /// Asks the cluster for a membership change (send it to the leader); resolves with the
    /// membership it led to once committed (when the voters change, once the cluster has left
    /// the joint membership), or with the refusal.
    pub async fn change_membership(
        &self,
        change: MembershipChange,
    ) -> Result<Membership, ProposeError> {
        let (reply, answer) = oneshot::channel();
        let reply = Box::new(move |answer| {
            let _ = reply.send(answer);
        });
        self.commands
            .send(Command::ChangeMembership(change, reply))
            .map_err(|_| ProposeError::ShutDown)?;
        answer.await.unwrap_or(Err(ProposeError::ShutDown))
    }

    /// Adds node `id`, reachable at `address`, as a learner (see
    /// [`change_membership`](Self::change_membership)).
    pub async fn add_learner(
        &self,
        id: NodeId,
        address: SocketAddr,
    ) -> Result<Membership, ProposeError> {
        let data = address.to_string().into_bytes().into();
        self.change_membership(MembershipChange::AddLearner { id, data })
            .await
    }

    /// Resolves when a linearizable read may be served: the state machine has applied every
    /// entry up to the returned read index, which covers every write acknowledged before the
    /// call (thesis §6.4: ReadIndex at the leader, a lease when the core runs with lease reads,
    /// or the leader's read index at a follower). Read the state machine's state after it
    /// resolves. Fails when no quorum confirms it within an election timeout.
    ///
    /// Cancellation-safe: dropping the future abandons the read.
    pub async fn read_index(&self) -> Result<Index, ReadError> {
        let (reply, answer) = oneshot::channel();
        let reply = Box::new(move |answer| {
            let _ = reply.send(answer);
        });
        self.commands
            .send(Command::Read(reply))
            .map_err(|_| ReadError::ShutDown)?;
        answer.await.unwrap_or(Err(ReadError::ShutDown))
    }

    /// Asks this node, the leader, to hand leadership over to voter `to` (thesis §3.10);
    /// resolves once it stepped down and knows the new leader, or with the reason it did not
    /// (aborted after an election timeout). Proposals are refused with
    /// [`ProposeError::Transferring`] meanwhile.
    pub async fn transfer_leadership(&self, to: NodeId) -> Result<(), TransferError> {
        let (reply, answer) = oneshot::channel();
        let reply = Box::new(move |answer| {
            let _ = reply.send(answer);
        });
        self.commands
            .send(Command::TransferLeadership(to, reply))
            .map_err(|_| TransferError::ShutDown)?;
        answer.await.unwrap_or(Err(TransferError::ShutDown))
    }

    /// Resolves once this node's state machine has applied `index` (at once if it has), with
    /// the node's status then: for waiting until a restarted node has replayed its log, or a
    /// follower has caught up with an index the leader returned, without polling
    /// [`status`](Self::status). Fails only when the node shuts down; bound the wait with
    /// your runtime's timeout.
    ///
    /// Cancellation-safe: dropping the future abandons the wait.
    pub async fn wait_applied(&self, index: Index) -> Result<Status, WaitError> {
        let (reply, answer) = oneshot::channel();
        let reply = Box::new(move |answer| {
            let _ = reply.send(answer);
        });
        self.commands
            .send(Command::WaitApplied(index, reply))
            .map_err(|_| WaitError::ShutDown)?;
        answer.await.unwrap_or(Err(WaitError::ShutDown))
    }

    /// The membership in force at this node, or None once it is shut down.
    pub async fn membership(&self) -> Option<Membership> {
        let (reply, answer) = oneshot::channel();
        let reply = Box::new(move |membership| {
            let _ = reply.send(membership);
        });
        self.commands.send(Command::Membership(reply)).ok()?;
        answer.await.ok()
    }

    /// The node's current state, or None once it is shut down.
    pub async fn status(&self) -> Option<Status> {
        let (reply, answer) = oneshot::channel();
        let reply = Box::new(move |status| {
            let _ = reply.send(status);
        });
        self.commands.send(Command::Status(reply)).ok()?;
        answer.await.ok()
    }

    /// The node's id.
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// Stops the node: a leader first hands leadership over to its most up-to-date voter (at
    /// most an election timeout; see [`NodeOptions::transfer_on_shutdown`]), waiting
    /// proposals fail with [`ProposeError::ShutDown`], writes already issued are completed
    /// (nothing acknowledged is lost), and the node's task ends.
    ///
    /// The transport is not stopped: its messages to peers (a leader's hand-over among them)
    /// go out until you shut it down, after this returns. Calling this again, or after the
    /// node stopped on its own (storage failed), returns at once; the other calls then fail
    /// with their `ShutDown` error (`status` and `membership` return `None`).
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
    let (commands_tx, commands_rx) = mpsc::unbounded_channel();
    let (reports_tx, reports_rx) = mpsc::unbounded_channel();
    let (mut driver, worker) = Driver::open(&options, state_machine, move |report| {
        let _ = reports_tx.send(report);
    })?;
    driver.check_transport(&transport);
    let id = driver.id();
    let task = tokio::spawn(run(
        driver,
        worker,
        transport,
        inbound,
        commands_rx,
        reports_rx,
    ));
    Ok(NodeHandle {
        commands: commands_tx,
        id,
        task: Arc::new(Mutex::new(Some(task))),
    })
}

async fn run<S: StateMachine, T: Transport>(
    mut driver: Driver<S>,
    worker: StorageWorker,
    transport: T,
    mut inbound: mpsc::Receiver<Message>,
    mut commands: mpsc::UnboundedReceiver<Command>,
    mut reports: mpsc::UnboundedReceiver<Input>,
) {
    let mut effects = Effects::default();
    let mut inbound_open = true;
    let mut commands_open = true;
    loop {
        let input = tokio::select! {
            message = inbound.recv(), if inbound_open => match message {
                Some(message) => Some(Input::Message(message)),
                // The transport is gone: no more messages, but the handle is still served.
                None => {
                    inbound_open = false;
                    None
                }
            },
            command = commands.recv(), if commands_open => match command {
                Some(command) => Some(Input::Command(command)),
                // Every handle is gone: stop (once).
                None => {
                    commands_open = false;
                    Some(Input::Command(Command::Shutdown))
                }
            },
            report = reports.recv() => Some(report.unwrap_or_else(|| {
                Input::Durable(Err("the storage worker is gone".into()))
            })),
            () = tokio::time::sleep(driver.time_to_deadline()) => None,
        };
        let stop = input.is_some_and(|input| driver.on_input(input, &mut effects));
        let next = || {
            reports
                .try_recv()
                .ok()
                .or_else(|| commands.try_recv().ok().map(Input::Command))
                .or_else(|| inbound.try_recv().ok().map(Input::Message))
        };
        if !driver.finish_wake(stop, next, &mut effects, &worker, &transport) {
            break;
        }
    }
    // Completing the writes and the entries handed over joins threads: do it off the
    // runtime's threads.
    let _ = tokio::task::spawn_blocking(move || {
        worker.finish();
        driver.finish();
    })
    .await;
}
