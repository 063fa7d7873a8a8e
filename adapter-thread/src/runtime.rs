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

use adapter_common::writer::StorageWorker;
use adapter_common::{
    Command, Driver, Effects, Input, NodeOptions, ProposeError, ReadError, StartError,
    StateMachine, Status, TransferError, Transport, WaitError,
};
use crossbeam_channel::{bounded, select, unbounded, Receiver, RecvTimeoutError, Sender};
use raft_proto::{Index, Membership, MembershipChange, Message, NodeId};

/// The application's handle on a running node. Cloneable; every clone talks to the same node.
#[derive(Clone)]
pub struct NodeHandle {
    commands: Sender<Command>,
    id: NodeId,
    threads: std::sync::Arc<std::sync::Mutex<Vec<JoinHandle<()>>>>,
}

/// Why a blocking call got no answer from the node.
enum Unanswered {
    TimedOut,
    ShutDown,
}

impl From<Unanswered> for ProposeError {
    fn from(reason: Unanswered) -> Self {
        match reason {
            Unanswered::TimedOut => Self::TimedOut,
            Unanswered::ShutDown => Self::ShutDown,
        }
    }
}

impl std::fmt::Debug for NodeHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeHandle").field("id", &self.id).finish()
    }
}

impl NodeHandle {
    /// Hands `command`, built around a reply callback, to the node's loop and blocks for the
    /// reply, at most `timeout` (None: until the node answers or stops).
    fn ask<T: Send + 'static>(
        &self,
        command: impl FnOnce(Box<dyn FnOnce(T) + Send>) -> Command,
        timeout: Option<Duration>,
    ) -> Result<T, Unanswered> {
        let (reply, answer) = bounded(1);
        let reply = Box::new(move |answer| {
            let _ = reply.send(answer);
        });
        self.commands
            .send(command(reply))
            .map_err(|_| Unanswered::ShutDown)?;
        match timeout {
            None => answer.recv().map_err(|_| Unanswered::ShutDown),
            Some(timeout) => answer.recv_timeout(timeout).map_err(|e| match e {
                RecvTimeoutError::Timeout => Unanswered::TimedOut,
                RecvTimeoutError::Disconnected => Unanswered::ShutDown,
            }),
        }
    }

    /// Proposes `command` and blocks until it is committed and applied (returning the state
    /// machine's answer) or refused. The node answers every proposal that does not commit
    /// within [`NodeOptions::proposal_timeout`] with [`ProposeError::TimedOut`]; one that
    /// committed is answered once the state machine applied it (on the node's loop that is
    /// at once; with [`NodeOptions::apply_on_thread`] it waits for that thread). For a
    /// shorter bound see [`propose_timeout`](Self::propose_timeout).
    pub fn propose(&self, command: Vec<u8>) -> Result<Vec<u8>, ProposeError> {
        self.propose_within(command, None)
    }

    /// [`propose`](Self::propose), giving up after `timeout` with [`ProposeError::TimedOut`]
    /// (the command may still commit).
    pub fn propose_timeout(
        &self,
        command: Vec<u8>,
        timeout: Duration,
    ) -> Result<Vec<u8>, ProposeError> {
        self.propose_within(command, Some(timeout))
    }

    fn propose_within(
        &self,
        command: Vec<u8>,
        timeout: Option<Duration>,
    ) -> Result<Vec<u8>, ProposeError> {
        self.ask(|reply| Command::Propose(command, reply), timeout)
            .unwrap_or_else(|e| Err(e.into()))
    }

    /// Asks the cluster for a membership change (send it to the leader) and blocks until it
    /// is committed (when the voters change, until the cluster has left the joint membership)
    /// with the membership it led to, or refused; at the latest after
    /// [`NodeOptions::proposal_timeout`].
    pub fn change_membership(&self, change: MembershipChange) -> Result<Membership, ProposeError> {
        self.change_membership_within(change, None)
    }

    /// [`change_membership`](Self::change_membership), giving up after `timeout` with
    /// [`ProposeError::TimedOut`] (the change may still complete).
    pub fn change_membership_timeout(
        &self,
        change: MembershipChange,
        timeout: Duration,
    ) -> Result<Membership, ProposeError> {
        self.change_membership_within(change, Some(timeout))
    }

    fn change_membership_within(
        &self,
        change: MembershipChange,
        timeout: Option<Duration>,
    ) -> Result<Membership, ProposeError> {
        self.ask(|reply| Command::ChangeMembership(change, reply), timeout)
            .unwrap_or_else(|e| Err(e.into()))
    }

    /// Adds node `id`, reachable at `address`, as a learner (see
    /// [`change_membership`](Self::change_membership)).
    pub fn add_learner(
        &self,
        id: NodeId,
        address: std::net::SocketAddr,
    ) -> Result<Membership, ProposeError> {
        let data = address.to_string().into_bytes().into();
        self.change_membership(MembershipChange::AddLearner { id, data })
    }

    /// Blocks until a linearizable read may be served: the state machine has applied every
    /// entry up to the returned read index, which covers every write acknowledged before the
    /// call (thesis §6.4: ReadIndex at the leader, a lease when the core runs with lease reads,
    /// or the leader's read index at a follower). Read the state machine's state after it
    /// returns. Fails when no quorum confirms it within an election timeout.
    pub fn read_index(&self) -> Result<Index, ReadError> {
        self.read_index_within(None)
    }

    /// [`read_index`](Self::read_index), giving up after `timeout` with
    /// [`ReadError::TimedOut`].
    pub fn read_index_timeout(&self, timeout: Duration) -> Result<Index, ReadError> {
        self.read_index_within(Some(timeout))
    }

    fn read_index_within(&self, timeout: Option<Duration>) -> Result<Index, ReadError> {
        self.ask(Command::Read, timeout).unwrap_or_else(|e| {
            Err(match e {
                Unanswered::TimedOut => ReadError::TimedOut,
                Unanswered::ShutDown => ReadError::ShutDown,
            })
        })
    }

    /// Asks this node, the leader, to hand leadership over to voter `to` (thesis §3.10), and
    /// blocks until it stepped down and knows the new leader, or the transfer failed (it is
    /// aborted after an election timeout). Proposals are refused with
    /// [`ProposeError::Transferring`] meanwhile.
    pub fn transfer_leadership(&self, to: NodeId) -> Result<(), TransferError> {
        self.transfer_leadership_within(to, None)
    }

    /// [`transfer_leadership`](Self::transfer_leadership), giving up after `timeout` with
    /// [`TransferError::Aborted`] (the transfer may still complete).
    pub fn transfer_leadership_timeout(
        &self,
        to: NodeId,
        timeout: Duration,
    ) -> Result<(), TransferError> {
        self.transfer_leadership_within(to, Some(timeout))
    }

    fn transfer_leadership_within(
        &self,
        to: NodeId,
        timeout: Option<Duration>,
    ) -> Result<(), TransferError> {
        self.ask(|reply| Command::TransferLeadership(to, reply), timeout)
            .unwrap_or_else(|e| {
                Err(match e {
                    Unanswered::TimedOut => TransferError::Aborted,
                    Unanswered::ShutDown => TransferError::ShutDown,
                })
            })
    }

    /// Blocks until this node's state machine has applied `index` (returns at once if it
    /// has), with the node's status then: for waiting until a restarted node has replayed its
    /// log, or a follower has caught up with an index the leader returned, without polling
    /// [`status`](Self::status). Fails only when the node shuts down: an index that is never
    /// reached blocks for ever, so bound the wait with
    /// [`wait_applied_timeout`](Self::wait_applied_timeout) unless the index is known to exist.
    pub fn wait_applied(&self, index: Index) -> Result<Status, WaitError> {
        self.wait_applied_within(index, None)
    }

    /// [`wait_applied`](Self::wait_applied), giving up after `timeout` with
    /// [`WaitError::TimedOut`].
    pub fn wait_applied_timeout(
        &self,
        index: Index,
        timeout: Duration,
    ) -> Result<Status, WaitError> {
        self.wait_applied_within(index, Some(timeout))
    }

    fn wait_applied_within(
        &self,
        index: Index,
        timeout: Option<Duration>,
    ) -> Result<Status, WaitError> {
        self.ask(|reply| Command::WaitApplied(index, reply), timeout)
            .unwrap_or_else(|e| {
                Err(match e {
                    Unanswered::TimedOut => WaitError::TimedOut,
                    Unanswered::ShutDown => WaitError::ShutDown,
                })
            })
    }

    /// The membership in force at this node, or None once it is shut down.
    pub fn membership(&self) -> Option<Membership> {
        self.ask(Command::Membership, None).ok()
    }

    /// The node's current state, or None once it is shut down.
    pub fn status(&self) -> Option<Status> {
        self.ask(Command::Status, None).ok()
    }

    /// The node's id.
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// Stops the node: a leader first hands leadership over to its most up-to-date voter
    /// (at most an election timeout; see [`NodeOptions::transfer_on_shutdown`]), proposals
    /// still waiting fail with [`ProposeError::ShutDown`], writes already issued are completed
    /// (nothing acknowledged is lost), and the node's threads are joined.
    ///
    /// The transport is not stopped: its messages to peers (a leader's hand-over among them)
    /// go out until you shut it down, after this returns. Calling this again, or after the
    /// node stopped on its own (storage failed), returns at once; the other calls then fail
    /// with their `ShutDown` error (`status` and `membership` return `None`).
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
    let (commands_tx, commands_rx) = unbounded();
    let (reports_tx, reports_rx) = unbounded();
    let (mut driver, worker) = Driver::open(&options, state_machine, move |report| {
        let _ = reports_tx.send(report);
    })?;
    driver.check_transport(&transport);
    let id = driver.id();
    let node_thread = std::thread::Builder::new()
        .name(format!("raft-{id}-node"))
        .spawn(move || {
            run(
                driver,
                worker,
                &transport,
                &inbound,
                &commands_rx,
                &reports_rx,
            )
        })?;
    Ok(NodeHandle {
        commands: commands_tx,
        id,
        threads: std::sync::Arc::new(std::sync::Mutex::new(vec![node_thread])),
    })
}

fn run<S: StateMachine, T: Transport>(
    mut driver: Driver<S>,
    worker: StorageWorker,
    transport: &T,
    inbound: &Receiver<Message>,
    commands: &Receiver<Command>,
    reports: &Receiver<Input>,
) {
    let never = crossbeam_channel::never();
    let mut inbound = inbound;
    let no_commands = crossbeam_channel::never();
    let mut commands = commands;
    let mut effects = Effects::default();
    loop {
        let input = select! {
            recv(inbound) -> message => match message {
                Ok(message) => Some(Input::Message(message)),
                // The transport is gone: no more messages, but the handle is still served.
                Err(_) => {
                    inbound = &never;
                    None
                }
            },
            recv(commands) -> command => match command {
                Ok(command) => Some(Input::Command(command)),
                // Every handle is gone: stop (once).
                Err(_) => {
                    commands = &no_commands;
                    Some(Input::Command(Command::Shutdown))
                }
            },
            recv(reports) -> report => Some(
                report.unwrap_or_else(|_| Input::Durable(Err("the storage worker is gone".into()))),
            ),
            default(driver.time_to_deadline()) => None,
        };
        let stop = input.is_some_and(|input| driver.on_input(input, &mut effects));
        let next = || {
            reports
                .try_recv()
                .ok()
                .or_else(|| commands.try_recv().ok().map(Input::Command))
                .or_else(|| inbound.try_recv().ok().map(Input::Message))
        };
        if !driver.finish_wake(stop, next, &mut effects, &worker, transport) {
            break;
        }
    }
    // Every write handed over is completed, and every entry applied, before the thread ends.
    worker.finish();
    driver.finish();
}
