//! The adapters' conformance suite (written once in `adapter-common`), on OS threads.

use std::sync::Arc;
use std::time::Duration;

use adapter_common::conformance::{Harness, TestNode};
use adapter_thread::transport::TcpTransport;
use adapter_thread::{
    NodeHandle, NodeOptions, ProposeError, ReadError, Status, TcpConfig, TransferError, WaitError,
};
use raft_proto::{Membership, MembershipChange};

struct Threads;

struct Node {
    handle: NodeHandle,
    transport: std::sync::Mutex<Option<Arc<TcpTransport>>>,
}

impl TestNode for Node {
    fn propose(&self, command: Vec<u8>, timeout: Duration) -> Result<Vec<u8>, ProposeError> {
        self.handle.propose_timeout(command, timeout)
    }
    fn status(&self) -> Option<Status> {
        self.handle.status()
    }
    fn change_membership(
        &self,
        change: MembershipChange,
        timeout: Duration,
    ) -> Result<Membership, ProposeError> {
        self.handle.change_membership_timeout(change, timeout)
    }
    fn membership(&self) -> Option<Membership> {
        self.handle.membership()
    }
    fn read_index(&self, timeout: Duration) -> Result<u64, ReadError> {
        self.handle.read_index_timeout(timeout)
    }
    fn transfer_leadership(&self, to: u64, timeout: Duration) -> Result<(), TransferError> {
        self.handle.transfer_leadership_timeout(to, timeout)
    }
    fn wait_applied(&self, index: u64, timeout: Duration) -> Result<Status, WaitError> {
        self.handle.wait_applied_timeout(index, timeout)
    }
    fn shutdown(&self) {
        self.handle.shutdown();
        let transport = self
            .transport
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(transport) = transport.and_then(|t| Arc::try_unwrap(t).ok()) {
            transport.shutdown();
        }
    }
}

impl Harness for Threads {
    fn start(&self, options: NodeOptions, tcp: TcpConfig) -> Box<dyn TestNode> {
        let (tx, rx) = crossbeam_channel::bounded(4096);
        let transport = Arc::new(TcpTransport::start(tcp, tx).expect("listens"));
        let handle = adapter_thread::start(
            options,
            adapter_common::conformance::machine(),
            Arc::clone(&transport),
            rx,
        )
        .expect("starts");
        Box::new(Node {
            handle,
            transport: std::sync::Mutex::new(Some(transport)),
        })
    }
}

adapter_common::conformance_tests!(Threads);

/// The check `slow_apply_on_its_own_thread` can fail: with the state machine on the node's
/// loop, the same stall costs the leader its leadership.
#[test]
fn a_stalled_state_machine_on_the_loop_costs_the_leadership() {
    assert!(!adapter_common::conformance::leader_survives_a_stalled_state_machine(&Threads, false));
}

/// The whole suite again, with streamed snapshots and the state machine on its own thread.
mod streamed_on_thread {
    use super::Threads;
    use adapter_common::conformance::{ApplyOnThread, StreamSnapshots};

    adapter_common::conformance_tests!(ApplyOnThread(StreamSnapshots(Threads)));
}
