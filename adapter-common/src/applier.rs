//! Where the state machine runs: on the node's loop, or on a thread of its own
//! ([`NodeOptions::apply_on_thread`](crate::NodeOptions::apply_on_thread)).
//!
//! On its own thread the state machine receives the same calls in the same order — the
//! entries of every [`Action::Apply`](raft_proto::Action::Apply) and every snapshot restored,
//! in the order the core emitted them, and a request for a snapshot after the entries it
//! covers — and reports back to the node's loop through [`Input::Applied`](crate::Input):
//! how far it has applied, the snapshot it took, or that it failed. The loop answers reads
//! and waiters only once the thread has applied their index.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;

use raft_proto::{Entry, EntryKind, Index, Payload};

use crate::{Input, Reply, StateMachine};

/// What the apply thread tells the node's loop.
#[derive(Debug)]
#[non_exhaustive]
pub enum ApplierReport {
    /// The state machine has applied every entry up to this index (or restored a snapshot
    /// covering it).
    AppliedThrough(Index),
    /// The snapshot asked for: the state after applying every entry up to `last_index`.
    SnapshotTaken {
        /// The last entry the snapshot covers.
        last_index: Index,
        /// The state machine's serialized state.
        data: Vec<u8>,
    },
    /// The state machine panicked; the node stops.
    Failed(String),
}

/// The loop's way to report to itself from another thread (its input channel).
pub(crate) type Report = Arc<dyn Fn(Input) + Send + Sync>;

/// One piece of work for the apply thread, in the order the core emitted it.
enum Job {
    /// Apply consecutive committed entries; `replies` are the proposers waiting for some of
    /// them, in index order.
    Apply {
        first_index: Index,
        entries: Vec<Entry>,
        replies: Vec<(Index, Reply)>,
    },
    /// Replace the state with a snapshot covering `last_index`.
    Restore { last_index: Index, data: Payload },
    /// Replace the state with a streamed snapshot covering `last_index`.
    RestoreFrom {
        last_index: Index,
        reader: crate::snapfile::SnapshotReader,
    },
    /// Take a snapshot (every entry up to `last_index` was handed over before); streamed,
    /// into a file of that directory.
    Snapshot {
        last_index: Index,
        dir: Option<std::path::PathBuf>,
    },
}

/// The state machine on a thread of its own.
pub(crate) struct ApplyThread {
    jobs: Option<mpsc::Sender<Job>>,
    thread: Option<JoinHandle<()>>,
}

impl ApplyThread {
    /// Moves `state_machine` to a new thread named `name`.
    pub(crate) fn spawn<S: StateMachine>(
        mut state_machine: S,
        name: String,
        report: Report,
    ) -> std::io::Result<Self> {
        let (jobs, queue) = mpsc::channel::<Job>();
        let thread = std::thread::Builder::new().name(name).spawn(move || {
            let outcome = catch_unwind(AssertUnwindSafe(|| {
                while let Ok(job) = queue.recv() {
                    // Reported after every job: however fast jobs keep coming, the loop's
                    // view of what is applied (reads, waits, the busy limit) stays current.
                    match run(&mut state_machine, job, &report) {
                        Ok(Some(index)) => {
                            report(Input::Applied(ApplierReport::AppliedThrough(index)));
                        }
                        Ok(None) => {}
                        Err(why) => {
                            // Nothing more is applied on top of a state that failed.
                            tracing::error!(%why, "the state machine failed; the node stops");
                            report(Input::Applied(ApplierReport::Failed(why)));
                            return;
                        }
                    }
                }
            }));
            if let Err(panic) = outcome {
                let why = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "a panic".into());
                tracing::error!(%why, "the state machine panicked; the node stops");
                report(Input::Applied(ApplierReport::Failed(why)));
            }
        })?;
        Ok(Self {
            jobs: Some(jobs),
            thread: Some(thread),
        })
    }

    /// Hands consecutive committed entries over. Returns false if the thread is gone.
    pub(crate) fn apply(
        &self,
        first_index: Index,
        entries: Vec<Entry>,
        replies: Vec<(Index, Reply)>,
    ) -> bool {
        self.send(Job::Apply {
            first_index,
            entries,
            replies,
        })
    }

    /// Hands a snapshot to restore over.
    pub(crate) fn restore(&self, last_index: Index, data: Payload) -> bool {
        self.send(Job::Restore { last_index, data })
    }

    /// Hands a streamed snapshot to restore over.
    pub(crate) fn restore_from(
        &self,
        last_index: Index,
        reader: crate::snapfile::SnapshotReader,
    ) -> bool {
        self.send(Job::RestoreFrom { last_index, reader })
    }

    /// Asks for a snapshot once every entry up to `last_index` is applied; with `dir`, it is
    /// streamed into a snapshot file there and reported without its bytes.
    pub(crate) fn snapshot(&self, last_index: Index, dir: Option<std::path::PathBuf>) -> bool {
        self.send(Job::Snapshot { last_index, dir })
    }

    fn send(&self, job: Job) -> bool {
        self.jobs.as_ref().is_some_and(|j| j.send(job).is_ok())
    }

    /// Lets the thread finish every job handed over (answering its proposers), then joins it.
    pub(crate) fn finish(&mut self) {
        self.jobs = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for ApplyThread {
    fn drop(&mut self) {
        self.finish();
    }
}

/// Runs one job; returns the index applied through, if it moved, or why the state machine
/// cannot go on.
fn run<S: StateMachine>(
    state_machine: &mut S,
    job: Job,
    report: &Report,
) -> Result<Option<Index>, String> {
    match job {
        Job::Apply {
            first_index,
            entries,
            replies,
        } => {
            let mut replies = replies.into_iter().peekable();
            for (k, entry) in entries.iter().enumerate() {
                let index = first_index + k as Index;
                let answer = match entry.kind {
                    EntryKind::Command => state_machine.apply(index, &entry.data),
                    _ => Vec::new(),
                };
                if let Some((_, reply)) = replies.next_if(|(at, _)| *at == index) {
                    reply(Ok(answer));
                }
            }
            Ok(Some(first_index + entries.len() as Index - 1).filter(|_| !entries.is_empty()))
        }
        Job::Restore { last_index, data } => {
            state_machine.restore(&data);
            Ok(Some(last_index))
        }
        Job::RestoreFrom {
            last_index,
            mut reader,
        } => {
            state_machine
                .restore_from(&mut reader)
                .map_err(|error| format!("cannot restore snapshot {last_index}: {error}"))?;
            Ok(Some(last_index))
        }
        Job::Snapshot {
            last_index,
            dir: None,
        } => {
            let data = state_machine.snapshot();
            report(Input::Applied(ApplierReport::SnapshotTaken {
                last_index,
                data,
            }));
            Ok(None)
        }
        Job::Snapshot {
            last_index,
            dir: Some(dir),
        } => {
            let stored = crate::snapfile::store_taken(&dir, last_index, |out| {
                state_machine.snapshot_to(out)
            });
            match stored {
                Ok(_) => report(Input::Applied(ApplierReport::SnapshotTaken {
                    last_index,
                    data: Vec::new(),
                })),
                Err(error) => tracing::warn!(%error, "cannot store a snapshot"),
            }
            Ok(None)
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;

    /// Takes 2 ms per entry.
    struct Slow;

    impl StateMachine for Slow {
        fn apply(&mut self, _index: Index, _command: &[u8]) -> Vec<u8> {
            std::thread::sleep(Duration::from_millis(2));
            Vec::new()
        }
        fn snapshot(&self) -> Vec<u8> {
            Vec::new()
        }
        fn restore(&mut self, _snapshot: &[u8]) {}
    }

    /// Jobs arriving faster than the state machine applies them never leave the queue empty;
    /// progress must be reported anyway, not only once the queue drains.
    #[test]
    fn progress_is_reported_while_jobs_keep_coming() {
        let (reports, received) = std::sync::mpsc::channel();
        let report: Report = Arc::new(move |input| {
            let _ = reports.send(input);
        });
        let mut thread = ApplyThread::spawn(Slow, "apply-test".into(), report).unwrap();
        let start = Instant::now();
        let mut index = 0;
        while start.elapsed() < Duration::from_millis(300) {
            index += 1;
            assert!(thread.apply(index, vec![Entry::command(1, vec![1])], Vec::new()));
            std::thread::sleep(Duration::from_micros(1500));
        }
        let during: Vec<Index> = received
            .try_iter()
            .filter_map(|input| match input {
                Input::Applied(ApplierReport::AppliedThrough(index)) => Some(index),
                _ => None,
            })
            .collect();
        assert!(
            during.len() >= 20,
            "{} reports while {index} jobs came",
            during.len()
        );
        assert!(during.windows(2).all(|w| w[0] < w[1]), "{during:?}");
        thread.finish();
        let last = received.try_iter().last();
        assert!(
            matches!(last, Some(Input::Applied(ApplierReport::AppliedThrough(i))) if i == index),
            "{last:?}"
        );
    }
}
