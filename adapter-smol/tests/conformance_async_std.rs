//! The adapters' conformance suite (written once in `adapter-common`), with adapter-smol's
//! tasks spawned on async-std's executor.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use adapter_common::conformance::{Harness, TestNode};
use adapter_smol::transport::TcpTransport;
use adapter_smol::{
    BoxFuture, NodeHandle, NodeOptions, ProposeError, ReadError, Status, TcpConfig, TransferError,
    WaitError,
};
use raft_proto::{Membership, MembershipChange};

fn async_std_spawner(future: BoxFuture) {
    async_std::task::spawn(future);
}

struct AsyncStd;

struct Node {
    handle: NodeHandle,
    transport: Mutex<Option<Arc<TcpTransport>>>,
}

impl TestNode for Node {
    fn propose(&self, command: Vec<u8>, timeout: Duration) -> Result<Vec<u8>, ProposeError> {
        async_std::task::block_on(async {
            async_std::future::timeout(timeout, self.handle.propose(command))
                .await
                .unwrap_or(Err(ProposeError::TimedOut))
        })
    }
    fn status(&self) -> Option<Status> {
        async_std::task::block_on(self.handle.status())
    }
    fn change_membership(
        &self,
        change: MembershipChange,
        timeout: Duration,
    ) -> Result<Membership, ProposeError> {
        async_std::task::block_on(async {
            async_std::future::timeout(timeout, self.handle.change_membership(change))
                .await
                .unwrap_or(Err(ProposeError::TimedOut))
        })
    }
    fn membership(&self) -> Option<Membership> {
        async_std::task::block_on(self.handle.membership())
    }
    fn read_index(&self, timeout: Duration) -> Result<u64, ReadError> {
        async_std::task::block_on(async {
            async_std::future::timeout(timeout, self.handle.read_index())
                .await
                .unwrap_or(Err(ReadError::TimedOut))
        })
    }
    fn transfer_leadership(&self, to: u64, timeout: Duration) -> Result<(), TransferError> {
        async_std::task::block_on(async {
            async_std::future::timeout(timeout, self.handle.transfer_leadership(to))
                .await
                .unwrap_or(Err(TransferError::Aborted))
        })
    }
    fn wait_applied(&self, index: u64, timeout: Duration) -> Result<Status, WaitError> {
        async_std::task::block_on(async {
            async_std::future::timeout(timeout, self.handle.wait_applied(index))
                .await
                .unwrap_or(Err(WaitError::TimedOut))
        })
    }
    fn shutdown(&self) {
        async_std::task::block_on(self.handle.shutdown());
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

impl Harness for AsyncStd {
    fn start(&self, options: NodeOptions, tcp: TcpConfig) -> Box<dyn TestNode> {
        let (tx, rx) = async_channel::bounded(4096);
        let transport = Arc::new(
            async_std::task::block_on(TcpTransport::start_with(tcp, None, tx, async_std_spawner))
                .expect("listens"),
        );
        let handle = adapter_smol::start_with(
            options,
            adapter_common::conformance::machine(),
            Arc::clone(&transport),
            rx,
            &async_std_spawner,
        )
        .expect("starts");
        Box::new(Node {
            handle,
            transport: Mutex::new(Some(transport)),
        })
    }
}

adapter_common::conformance_tests!(AsyncStd);
