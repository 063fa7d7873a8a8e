//! The adapters' conformance suite (written once in `adapter-common`), on smol.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use adapter_common::conformance::{Harness, TestNode};
use adapter_smol::transport::TcpTransport;
use adapter_smol::{
    NodeHandle, NodeOptions, ProposeError, ReadError, Status, TcpConfig, TransferError, WaitError,
};
use raft_proto::{Membership, MembershipChange};

struct Smol;

struct Node {
    handle: NodeHandle,
    transport: Mutex<Option<Arc<TcpTransport>>>,
}

impl TestNode for Node {
    fn propose(&self, command: Vec<u8>, timeout: Duration) -> Result<Vec<u8>, ProposeError> {
        smol::block_on(futures_lite::future::or(
            self.handle.propose(command),
            async {
                smol::Timer::after(timeout).await;
                Err(ProposeError::TimedOut)
            },
        ))
    }
    fn status(&self) -> Option<Status> {
        smol::block_on(self.handle.status())
    }
    fn change_membership(
        &self,
        change: MembershipChange,
        timeout: Duration,
    ) -> Result<Membership, ProposeError> {
        smol::block_on(futures_lite::future::or(
            self.handle.change_membership(change),
            async {
                smol::Timer::after(timeout).await;
                Err(ProposeError::TimedOut)
            },
        ))
    }
    fn membership(&self) -> Option<Membership> {
        smol::block_on(self.handle.membership())
    }
    fn read_index(&self, timeout: Duration) -> Result<u64, ReadError> {
        smol::block_on(futures_lite::future::or(self.handle.read_index(), async {
            smol::Timer::after(timeout).await;
            Err(ReadError::TimedOut)
        }))
    }
    fn transfer_leadership(&self, to: u64, timeout: Duration) -> Result<(), TransferError> {
        smol::block_on(futures_lite::future::or(
            self.handle.transfer_leadership(to),
            async {
                smol::Timer::after(timeout).await;
                Err(TransferError::Aborted)
            },
        ))
    }
    fn wait_applied(&self, index: u64, timeout: Duration) -> Result<Status, WaitError> {
        smol::block_on(futures_lite::future::or(
            self.handle.wait_applied(index),
            async {
                smol::Timer::after(timeout).await;
                Err(WaitError::TimedOut)
            },
        ))
    }
    fn shutdown(&self) {
        smol::block_on(self.handle.shutdown());
        if let Some(transport) = self
            .transport
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            transport.shutdown();
        }
    }
}

impl Harness for Smol {
    fn start(&self, options: NodeOptions, tcp: TcpConfig) -> Box<dyn TestNode> {
        let (tx, rx) = async_channel::bounded(4096);
        let transport = Arc::new(smol::block_on(TcpTransport::start(tcp, tx)).expect("listens"));
        let handle = adapter_smol::start(
            options,
            adapter_common::conformance::machine(),
            Arc::clone(&transport),
            rx,
        )
        .expect("starts");
        Box::new(Node {
            handle,
            transport: Mutex::new(Some(transport)),
        })
    }
}

adapter_common::conformance_tests!(Smol);

/// The whole suite again, with streamed snapshots (the state machine on the node's loop).
mod streamed {
    use super::Smol;
    use adapter_common::conformance::StreamSnapshots;

    adapter_common::conformance_tests!(StreamSnapshots(Smol));
}
