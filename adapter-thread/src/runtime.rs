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
            .send(Command::Propose(
                command,
                Box::new(move |answer| {
                    let _ = reply.send(answer);
                }),
            ))
            .map_err(|_| ProposeError::ShutDown)?;
        match answer.recv_timeout(timeout) {
            Ok(result) => result,
            Err(RecvTimeoutError::Timeout) => Err(ProposeError::TimedOut),
            Err(RecvTimeoutError::Disconnected) => Err(ProposeError::ShutDown),
        }
    }

    /// Asks the cluster for a membership change (send it to the leader) and blocks until it
    /// is committed (when the voters change, until the cluster has left the joint membership)
    /// with the membership it led to, refused, or `timeout` passes.
    pub fn change_membership(
        &self,
        change: MembershipChange,
        timeout: Duration,
    ) -> Result<Membership, ProposeError> {
        let (reply, answer) = bounded(1);
        let reply = Box::new(move |answer| {
            let _ = reply.send(answer);
        });
        self.commands
            .send(Command::ChangeMembership(change, reply))
            .map_err(|_| ProposeError::ShutDown)?;
        match answer.recv_timeout(timeout) {
            Ok(result) => result,
            Err(RecvTimeoutError::Timeout) => Err(ProposeError::TimedOut),
            Err(RecvTimeoutError::Disconnected) => Err(ProposeError::ShutDown),
        }
    }

    /// Adds node `id`, reachable at `address`, as a learner (see
    /// [`change_membership`](Self::change_membership)).
    pub fn add_learner(
        &self,
        id: NodeId,
        address: std::net::SocketAddr,
        timeout: Duration,
    ) -> Result<Membership, ProposeError> {
        let data = address.to_string().into_bytes().into();
        self.change_membership(MembershipChange::AddLearner { id, data }, timeout)
    }

    /// Blocks until a linearizable read may be served: the state machine has applied every
    /// entry up to the returned read index, which covers every write acknowledged before the
    /// call (thesis §6.4: ReadIndex at the leader, a lease when the core runs with lease reads,
    /// or the leader's read index at a follower). Read the state machine's state after it
    /// returns. Fails when no quorum confirms it, or after `timeout` ([`ReadError::TimedOut`]).
    pub fn read_index(&self, timeout: Duration) -> Result<Index, ReadError> {
        let (reply, answer) = bounded(1);
        let reply = Box::new(move |answer| {
            let _ = reply.send(answer);
        });
        self.commands
            .send(Command::Read(reply))
            .map_err(|_| ReadError::ShutDown)?;
        match answer.recv_timeout(timeout) {
            Ok(result) => result,
            Err(RecvTimeoutError::Timeout) => Err(ReadError::TimedOut),
            Err(RecvTimeoutError::Disconnected) => Err(ReadError::ShutDown),
        }
    }

    /// Asks this node, the leader, to hand leadership over to voter `to` (thesis §3.10), and
    /// blocks until it stepped down and knows the new leader, the transfer failed, or
    /// `timeout` passes. Proposals are refused with [`ProposeError::Transferring`] meanwhile.
    pub fn transfer_leadership(&self, to: NodeId, timeout: Duration) -> Result<(), TransferError> {
        let (reply, answer) = bounded(1);
        let reply = Box::new(move |answer| {
            let _ = reply.send(answer);
        });
        self.commands
            .send(Command::TransferLeadership(to, reply))
            .map_err(|_| TransferError::ShutDown)?;
        match answer.recv_timeout(timeout) {
            Ok(result) => result,
            Err(RecvTimeoutError::Timeout) => Err(TransferError::Aborted),
            Err(RecvTimeoutError::Disconnected) => Err(TransferError::ShutDown),
        }
    }

    /// Blocks until this node's state machine has applied `index` (returns at once if it
    /// has), with the node's status then: for waiting until a restarted node has replayed its
    /// log, or a follower has caught up with an index the leader returned, without polling
    /// [`status`](Self::status). Fails after `timeout` ([`WaitError::TimedOut`]) or when the
    /// node shuts down.
    pub fn wait_applied(&self, index: Index, timeout: Duration) -> Result<Status, WaitError> {
        let (reply, answer) = bounded(1);
        let reply = Box::new(move |answer| {
            let _ = reply.send(answer);
        });
        self.commands
            .send(Command::WaitApplied(index, reply))
            .map_err(|_| WaitError::ShutDown)?;
        match answer.recv_timeout(timeout) {
            Ok(result) => result,
            Err(RecvTimeoutError::Timeout) => Err(WaitError::TimedOut),
            Err(RecvTimeoutError::Disconnected) => Err(WaitError::ShutDown),
        }
    }

    /// The membership in force at this node, or None once it is shut down.
    pub fn membership(&self) -> Option<Membership> {
        let (reply, answer) = bounded(1);
        let reply = Box::new(move |membership| {
            let _ = reply.send(membership);
        });
        self.commands.send(Command::Membership(reply)).ok()?;
        answer.recv_timeout(Duration::from_secs(5)).ok()
    }

    /// The node's current state, or None once it is shut down.
    pub fn status(&self) -> Option<Status> {
        let (reply, answer) = bounded(1);
        let reply = Box::new(move |status| {
            let _ = reply.send(status);
        });
        self.commands.send(Command::Status(reply)).ok()?;
        answer.recv_timeout(Duration::from_secs(5)).ok()
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
