//! The node as an async task on smol's building blocks: wait for the next input or deadline
//! (async-channel, async-io timers), feed the shared [`Driver`], carry out its [`Effects`].
//! Disk writes and syncs run on the storage worker's own thread ([`StorageWorker`]).

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::time::Duration;

use adapter_common::writer::StorageWorker;
use adapter_common::{
    Command, Driver, Effects, Input, NodeOptions, ProposeError, ReadError, StartError,
    StateMachine, Status, TransferError, Transport, WaitError,
};
use async_channel::{Receiver, Sender};
use futures_lite::future;
use raft_proto::{Index, Membership, MembershipChange, Message, NodeId};

/// A future an executor runs to completion.
pub type BoxFuture = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// Starts futures on an executor: smol's ([`SmolSpawner`]), async-std's
/// (`|f| { async_std::task::spawn(f); }`), or any other. Everything the adapter spawns is
/// built on async-io and async-channel, which run under any executor.
pub trait Spawn: Send + Sync + 'static {
    /// Runs `future` in the background.
    fn spawn(&self, future: BoxFuture);
}

/// Spawns on smol's global executor.
#[derive(Debug, Clone, Copy, Default)]
pub struct SmolSpawner;

impl Spawn for SmolSpawner {
    fn spawn(&self, future: BoxFuture) {
        smol::spawn(future).detach();
    }
}

impl<F: Fn(BoxFuture) + Send + Sync + 'static> Spawn for F {
    fn spawn(&self, future: BoxFuture) {
        self(future);
    }
}

/// The application's handle on a running node. Cloneable; every clone talks to the same node.
#[derive(Clone)]
pub struct NodeHandle {
    commands: Sender<Command>,
    done: Receiver<()>,
    id: NodeId,
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
        let (reply, answer) = async_channel::bounded(1);
        self.commands
            .send(Command::Propose(
                command,
                Box::new(move |answer| {
                    let _ = reply.try_send(answer);
                }),
            ))
            .await
            .map_err(|_| ProposeError::ShutDown)?;
        answer.recv().await.unwrap_or(Err(ProposeError::ShutDown))
    }

    /// Asks the cluster for a membership change (send it to the leader); resolves with the
    /// membership it led to once committed (when the voters change, once the cluster has left
    /// the joint membership), or with the refusal.
    pub async fn change_membership(
        &self,
        change: MembershipChange,
    ) -> Result<Membership, ProposeError> {
        let (reply, answer) = async_channel::bounded(1);
        let reply = Box::new(move |answer| {
            let _ = reply.try_send(answer);
        });
        self.commands
            .send(Command::ChangeMembership(change, reply))
            .await
            .map_err(|_| ProposeError::ShutDown)?;
        answer.recv().await.unwrap_or(Err(ProposeError::ShutDown))
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
        let (reply, answer) = async_channel::bounded(1);
        let reply = Box::new(move |answer| {
            let _ = reply.try_send(answer);
        });
        self.commands
            .send(Command::Read(reply))
            .await
            .map_err(|_| ReadError::ShutDown)?;
        answer.recv().await.unwrap_or(Err(ReadError::ShutDown))
    }

    /// Asks this node, the leader, to hand leadership over to voter `to` (thesis §3.10);
    /// resolves once it stepped down and knows the new leader, or with the reason it did not
    /// (aborted after an election timeout). Proposals are refused with
    /// [`ProposeError::Transferring`] meanwhile.
    pub async fn transfer_leadership(&self, to: NodeId) -> Result<(), TransferError> {
        let (reply, answer) = async_channel::bounded(1);
        let reply = Box::new(move |answer| {
            let _ = reply.try_send(answer);
        });
        self.commands
            .send(Command::TransferLeadership(to, reply))
            .await
            .map_err(|_| TransferError::ShutDown)?;
        answer.recv().await.unwrap_or(Err(TransferError::ShutDown))
    }

    /// Resolves once this node's state machine has applied `index` (at once if it has), with
    /// the node's status then: for waiting until a restarted node has replayed its log, or a
    /// follower has caught up with an index the leader returned, without polling
    /// [`status`](Self::status). Fails only when the node shuts down; bound the wait with
    /// your runtime's timeout.
    ///
    /// Cancellation-safe: dropping the future abandons the wait.
    pub async fn wait_applied(&self, index: Index) -> Result<Status, WaitError> {
        let (reply, answer) = async_channel::bounded(1);
        let reply = Box::new(move |answer| {
            let _ = reply.try_send(answer);
        });
        self.commands
            .send(Command::WaitApplied(index, reply))
            .await
            .map_err(|_| WaitError::ShutDown)?;
        answer.recv().await.unwrap_or(Err(WaitError::ShutDown))
    }

    /// The membership in force at this node, or None once it is shut down.
    pub async fn membership(&self) -> Option<Membership> {
        let (reply, answer) = async_channel::bounded(1);
        let reply = Box::new(move |membership| {
            let _ = reply.try_send(membership);
        });
        self.commands.send(Command::Membership(reply)).await.ok()?;
        answer.recv().await.ok()
    }

    /// The node's current state, or None once it is shut down.
    pub async fn status(&self) -> Option<Status> {
        let (reply, answer) = async_channel::bounded(1);
        let reply = Box::new(move |status| {
            let _ = reply.try_send(status);
        });
        self.commands.send(Command::Status(reply)).await.ok()?;
        answer.recv().await.ok()
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
        let _ = self.commands.send(Command::Shutdown).await;
        // The task closes `done` when it ends.
        let _ = self.done.recv().await;
    }
}

/// Starts a node on smol's global executor; see [`start_with`].
pub fn start<S: StateMachine, T: Transport>(
    options: NodeOptions,
    state_machine: S,
    transport: T,
    inbound: Receiver<Message>,
) -> Result<NodeHandle, StartError> {
    start_with(options, state_machine, transport, inbound, &SmolSpawner)
}

/// Starts a node as a task spawned by `spawner`: recovers its state from `options.data_dir`,
/// restores the state machine from the latest snapshot, and runs it with `transport` for
/// outgoing messages and `inbound` for incoming ones.
pub fn start_with<S: StateMachine, T: Transport>(
    options: NodeOptions,
    state_machine: S,
    transport: T,
    inbound: Receiver<Message>,
    spawner: &impl Spawn,
) -> Result<NodeHandle, StartError> {
    let (commands_tx, commands_rx) = async_channel::unbounded();
    let (reports_tx, reports_rx) = async_channel::unbounded();
    let (done_tx, done_rx) = async_channel::bounded::<()>(1);
    let (mut driver, worker) = Driver::open(&options, state_machine, move |report| {
        let _ = reports_tx.send_blocking(report);
    })?;
    driver.check_transport(&transport);
    let id = driver.id();
    spawner.spawn(Box::pin(async move {
        run(driver, worker, transport, inbound, commands_rx, reports_rx).await;
        drop(done_tx);
    }));
    Ok(NodeHandle {
        commands: commands_tx,
        done: done_rx,
        id,
    })
}

enum Wake {
    Input(Input),
    InboundClosed,
    /// Every handle is gone: stop (once).
    CommandsClosed,
    Deadline,
}

async fn run<S: StateMachine, T: Transport>(
    mut driver: Driver<S>,
    worker: StorageWorker,
    transport: T,
    inbound: Receiver<Message>,
    commands: Receiver<Command>,
    reports: Receiver<Input>,
) {
    let mut effects = Effects::default();
    let mut inbound_open = true;
    let mut commands_open = true;
    loop {
        let deadline = driver.time_to_deadline();
        let wake = future::or(
            future::or(
                async {
                    if !commands_open {
                        future::pending::<()>().await;
                    }
                    match commands.recv().await {
                        Ok(command) => Wake::Input(Input::Command(command)),
                        Err(_) => Wake::CommandsClosed,
                    }
                },
                async {
                    Wake::Input(reports.recv().await.unwrap_or_else(|_| {
                        Input::Durable(Err("the storage worker is gone".into()))
                    }))
                },
            ),
            future::or(
                async {
                    if !inbound_open {
                        future::pending::<()>().await;
                    }
                    match inbound.recv().await {
                        Ok(message) => Wake::Input(Input::Message(message)),
                        Err(_) => Wake::InboundClosed,
                    }
                },
                async {
                    sleep(deadline).await;
                    Wake::Deadline
                },
            ),
        )
        .await;
        let input = match wake {
            Wake::Input(input) => Some(input),
            // The transport is gone: no more messages, but the handle is still served.
            Wake::InboundClosed => {
                inbound_open = false;
                None
            }
            Wake::CommandsClosed => {
                commands_open = false;
                Some(Input::Command(Command::Shutdown))
            }
            Wake::Deadline => None,
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
    // executor's threads.
    smol::unblock(move || {
        worker.finish();
        driver.finish();
    })
    .await;
}

/// Waits `duration` on async-io's timer (any executor).
pub(crate) async fn sleep(duration: Duration) {
    smol::Timer::after(duration).await;
}
