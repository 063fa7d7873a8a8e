//! The adapters' conformance suite (written once in `adapter-common`), on tokio.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use adapter_common::conformance::{Harness, TestNode};
use adapter_tokio::transport::TcpTransport;
use adapter_tokio::{
    NodeHandle, NodeOptions, ProposeError, ReadError, Status, TcpConfig, TransferError, WaitError,
};
use raft_proto::{Membership, MembershipChange};

struct Tokio {
    runtime: tokio::runtime::Runtime,
}

impl Tokio {
    fn new() -> Self {
        Self {
            runtime: tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("a runtime"),
        }
    }
}

struct Node {
    runtime: tokio::runtime::Handle,
    handle: NodeHandle,
    transport: Mutex<Option<Arc<TcpTransport>>>,
}

impl TestNode for Node {
    fn propose(&self, command: Vec<u8>, timeout: Duration) -> Result<Vec<u8>, ProposeError> {
        self.runtime.block_on(async {
            tokio::time::timeout(timeout, self.handle.propose(command))
                .await
                .unwrap_or(Err(ProposeError::TimedOut))
        })
    }
    fn status(&self) -> Option<Status> {
        self.runtime.block_on(self.handle.status())
    }
    fn change_membership(
        &self,
        change: MembershipChange,
        timeout: Duration,
    ) -> Result<Membership, ProposeError> {
        self.runtime.block_on(async {
            tokio::time::timeout(timeout, self.handle.change_membership(change))
                .await
                .unwrap_or(Err(ProposeError::TimedOut))
        })
    }
    fn membership(&self) -> Option<Membership> {
        self.runtime.block_on(self.handle.membership())
    }
    fn read_index(&self, timeout: Duration) -> Result<u64, ReadError> {
        self.runtime.block_on(async {
            tokio::time::timeout(timeout, self.handle.read_index())
                .await
                .unwrap_or(Err(ReadError::TimedOut))
        })
    }
    fn transfer_leadership(&self, to: u64, timeout: Duration) -> Result<(), TransferError> {
        self.runtime.block_on(async {
            tokio::time::timeout(timeout, self.handle.transfer_leadership(to))
                .await
                .unwrap_or(Err(TransferError::Aborted))
        })
    }
    fn wait_applied(&self, index: u64, timeout: Duration) -> Result<Status, WaitError> {
        self.runtime.block_on(async {
            tokio::time::timeout(timeout, self.handle.wait_applied(index))
                .await
                .unwrap_or(Err(WaitError::TimedOut))
        })
    }
    fn shutdown(&self) {
        self.runtime.block_on(self.handle.shutdown());
        let transport = self
            .transport
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(transport) = transport.and_then(|t| Arc::try_unwrap(t).ok()) {
            self.runtime.block_on(transport.shutdown());
        }
    }
}

impl Harness for Tokio {
    fn start(&self, options: NodeOptions, tcp: TcpConfig) -> Box<dyn TestNode> {
        let runtime = self.runtime.handle().clone();
        let (transport, handle) = runtime.block_on(async {
            let (tx, rx) = tokio::sync::mpsc::channel(4096);
            let transport = Arc::new(TcpTransport::start(tcp, tx).await.expect("listens"));
            let handle = adapter_tokio::start(
                options,
                adapter_common::conformance::machine(),
                Arc::clone(&transport),
                rx,
            )
            .expect("starts");
            (transport, handle)
        });
        Box::new(Node {
            runtime,
            handle,
            transport: Mutex::new(Some(transport)),
        })
    }
}

adapter_common::conformance_tests!(Tokio::new());

/// The whole suite again, with every node's state machine on a thread of its own.
mod apply_on_thread {
    use super::Tokio;
    use adapter_common::conformance::ApplyOnThread;

    adapter_common::conformance_tests!(ApplyOnThread(Tokio::new()));
}
