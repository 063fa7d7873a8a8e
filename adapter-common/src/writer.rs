//! The storage worker: a dedicated OS thread that makes persists durable, so that disk writes
//! and syncs never run on a runtime's async threads (or on the node thread).

use std::sync::mpsc;
use std::thread::JoinHandle;

use raft_proto::Persist;

use crate::storage::FileStorage;

/// Feeds the storage thread. Batches are written in the order they are handed over; every
/// batch waiting when the thread wakes goes into one write and one fsync (group commit), and
/// only then is its last sequence number acknowledged.
///
/// With volatile storage ([`NodeOptions::volatile`](crate::NodeOptions::volatile)) there is
/// no thread: a batch handed over is acknowledged at once, and nothing is written.
pub struct StorageWorker {
    writes: Option<mpsc::Sender<Vec<Persist>>>,
    thread: Option<JoinHandle<()>>,
    volatile: Option<OnDurable>,
}

type OnDurable = Box<dyn Fn(Result<u64, String>) + Send + 'static>;

impl std::fmt::Debug for StorageWorker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StorageWorker")
            .field(
                "running",
                &(self.writes.is_some() || self.volatile.is_some()),
            )
            .field("volatile", &self.volatile.is_some())
            .finish()
    }
}

impl StorageWorker {
    /// Starts the thread. `on_durable` receives `Ok(seq)` once every persist up to `seq` is
    /// durable, or `Err` (once, after which the thread stops) if storage failed.
    pub fn spawn(
        storage: FileStorage,
        name: String,
        on_durable: impl Fn(Result<u64, String>) + Send + 'static,
    ) -> std::io::Result<Self> {
        Self::spawn_measured(storage, name, None, on_durable)
    }

    /// [`spawn`](Self::spawn), recording how long each group's write and sync takes in
    /// `fsync` when given.
    pub(crate) fn spawn_measured(
        mut storage: FileStorage,
        name: String,
        fsync: Option<metrics::Histogram>,
        on_durable: impl Fn(Result<u64, String>) + Send + 'static,
    ) -> std::io::Result<Self> {
        let (writes, batches) = mpsc::channel::<Vec<Persist>>();
        let thread = std::thread::Builder::new().name(name).spawn(move || {
            while let Ok(first) = batches.recv() {
                let mut batch = first;
                while let Ok(more) = batches.try_recv() {
                    batch.extend(more);
                }
                let Some(last_seq) = batch.last().map(|p| p.seq) else {
                    continue;
                };
                let started = fsync.as_ref().map(|_| std::time::Instant::now());
                let persisted = storage.persist(&batch);
                if let (Some(fsync), Some(started)) = (&fsync, started) {
                    fsync.record(started.elapsed().as_secs_f64());
                }
                match persisted {
                    Ok(()) => on_durable(Ok(last_seq)),
                    Err(e) => {
                        tracing::error!(error = %e, "storage failed; the node stops");
                        on_durable(Err(e.to_string()));
                        return;
                    }
                }
            }
        })?;
        Ok(Self {
            writes: Some(writes),
            thread: Some(thread),
            volatile: None,
        })
    }

    /// A worker for volatile storage: every batch handed over is acknowledged at once through
    /// `on_durable`, and nothing is kept (the core holds the log in memory already).
    /// `on_durable` then runs inside [`write`](Self::write), on the caller's thread (the
    /// node's loop): it must not block, or the loop that drains its channel stops.
    pub fn volatile(on_durable: impl Fn(Result<u64, String>) + Send + 'static) -> Self {
        Self {
            writes: None,
            thread: None,
            volatile: Some(Box::new(on_durable)),
        }
    }

    /// Hands over a batch of persists (in order). Returns false if the thread is gone.
    pub fn write(&self, batch: Vec<Persist>) -> bool {
        if batch.is_empty() {
            return true;
        }
        if let Some(on_durable) = &self.volatile {
            if let Some(last) = batch.last() {
                on_durable(Ok(last.seq));
            }
            return true;
        }
        self.writes.as_ref().is_some_and(|w| w.send(batch).is_ok())
    }

    /// Lets the thread finish every batch handed over, then joins it.
    pub fn finish(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        self.writes = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for StorageWorker {
    fn drop(&mut self) {
        self.stop();
    }
}
