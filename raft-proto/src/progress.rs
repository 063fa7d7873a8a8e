//! What a leader knows about one follower's log, and how it paces replication to it.

use alloc::collections::VecDeque;

use crate::types::{Index, NodeId, Snapshot};

/// How the leader currently talks to a follower.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// The follower's match point is unknown: one append at a time, waiting for its answer (or
    /// the next heartbeat) before sending another.
    Probe,
    /// The follower is known to match up to `match_index`: appends are pipelined, at most
    /// `max_inflight_appends` in flight.
    Replicate,
    /// The follower needs entries the leader has compacted away: it is sent a snapshot in
    /// chunks.
    Snapshot,
}

/// A snapshot on its way to a follower.
#[derive(Debug, Clone)]
pub(crate) struct SnapshotTransfer {
    pub(crate) snapshot: Snapshot,
    /// Bytes the follower acknowledged holding.
    pub(crate) acked: u64,
    /// Bytes sent so far (from `acked` on, they may be in flight or lost).
    pub(crate) sent: u64,
    /// Whether the snapshot is streamed: its bytes, and so its length, are the embedding's.
    pub(crate) streamed: bool,
    /// Whether the final chunk has been sent since the last rewind.
    pub(crate) done_sent: bool,
    /// The follower went silent: one chunk per heartbeat round probes it, instead of the
    /// whole window, until it answers.
    pub(crate) probing: bool,
    /// A gap the follower reported has been answered by resending from `acked`; further
    /// reports of it are ignored until the follower progresses.
    pub(crate) gap_resent: bool,
}

impl SnapshotTransfer {
    /// Presumes everything unacknowledged lost: the next chunk sent is the first one the
    /// follower lacks, and only it, until the follower answers.
    pub(crate) fn rewind_to_probe(&mut self) {
        self.sent = self.acked;
        self.done_sent = false;
        self.probing = true;
        self.gap_resent = false;
    }

    /// How many bytes may be unacknowledged: a window of chunks, or one chunk while probing.
    pub(crate) fn window(&self, chunk: u64, chunks: u64) -> u64 {
        if self.probing {
            chunk
        } else {
            chunk.saturating_mul(chunks)
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Progress {
    pub(crate) id: NodeId,
    /// Highest index known to be durable and matching on the follower.
    pub(crate) match_index: Index,
    /// Next index to send.
    pub(crate) next_index: Index,
    pub(crate) mode: Mode,
    /// Last index of each append in flight (Replicate mode), oldest first.
    pub(crate) inflight: VecDeque<Index>,
    /// A probe was sent and not yet answered (Probe mode).
    pub(crate) probe_sent: bool,
    /// The follower's `match_index` (or its snapshot transfer) advanced since the last
    /// heartbeat round.
    pub(crate) progressed: bool,
    /// The snapshot being sent (Snapshot mode).
    pub(crate) transfer: Option<SnapshotTransfer>,
    /// Something sent was awaiting an answer at the last heartbeat round: if it still is at
    /// the next one, with no progress in between, it is presumed lost.
    pub(crate) waiting: bool,
    /// Where the pipeline was last rewound to after a gap, until the follower progresses.
    pub(crate) rewound_to: Option<Index>,
    /// A message from the follower arrived since the last check-quorum round.
    pub(crate) recent_active: bool,
}

impl Progress {
    pub(crate) fn new(id: NodeId, last_index: Index) -> Self {
        Self {
            id,
            match_index: 0,
            next_index: last_index + 1,
            mode: Mode::Probe,
            inflight: VecDeque::new(),
            probe_sent: false,
            progressed: false,
            transfer: None,
            waiting: false,
            rewound_to: None,
            recent_active: false,
        }
    }

    /// The follower accepted entries up to `index`.
    pub(crate) fn on_accepted(&mut self, index: Index) {
        if index > self.match_index {
            self.match_index = index;
            self.progressed = true;
            self.rewound_to = None;
        }
        while self.inflight.front().is_some_and(|&last| last <= index) {
            self.inflight.pop_front();
        }
        match self.mode {
            Mode::Probe => self.start_replicating(),
            Mode::Snapshot => {
                let installed = self
                    .transfer
                    .as_ref()
                    .is_none_or(|t| index >= t.snapshot.meta.last_index);
                if installed {
                    self.start_replicating();
                }
            }
            Mode::Replicate => self.next_index = self.next_index.max(self.match_index + 1),
        }
    }

    fn start_replicating(&mut self) {
        self.mode = Mode::Replicate;
        self.next_index = self.match_index + 1;
        self.inflight.clear();
        self.probe_sent = false;
        self.transfer = None;
    }

    /// Starts sending `snapshot`.
    pub(crate) fn send_snapshot(&mut self, snapshot: Snapshot, streamed: bool) {
        self.mode = Mode::Snapshot;
        self.inflight.clear();
        self.probe_sent = false;
        self.transfer = Some(SnapshotTransfer {
            snapshot,
            acked: 0,
            sent: 0,
            streamed,
            done_sent: false,
            probing: false,
            gap_resent: false,
        });
    }

    /// The follower holds the first `received` bytes of the snapshot ending at `last_index`.
    /// A streamed snapshot's length is unknown here: `received` is then bounded by
    /// `streamed_limit` ([`Config::max_snapshot_bytes`](crate::Config)), which no follower
    /// accepts more than.
    pub(crate) fn on_snapshot_ack(
        &mut self,
        last_index: Index,
        received: u64,
        streamed_limit: u64,
    ) -> bool {
        let Some(t) = self.transfer.as_mut() else {
            return false;
        };
        let len = if t.streamed {
            streamed_limit
        } else {
            t.snapshot.data.len() as u64
        };
        if t.snapshot.meta.last_index != last_index || received > len {
            return false;
        }
        if received > t.acked {
            // Progress: the whole window is open again.
            t.acked = received;
            t.sent = t.sent.max(received);
            t.probing = false;
            t.gap_resent = false;
            self.progressed = true;
            return true;
        }
        if received == t.acked {
            // The follower got a chunk that does not follow what it holds (the one at `acked`
            // was lost or overtaken), or a duplicate. Resend from `acked`, once: the other
            // chunks of the same window report the same gap, and resending for each of them
            // would multiply the chunks in flight with every reordering.
            if t.gap_resent || (t.sent == t.acked && !t.done_sent) {
                return false;
            }
            t.sent = t.acked;
            t.done_sent = false;
            t.gap_resent = true;
            return true;
        }
        // The follower holds less than it once said. Either this answer is stale (overtaken by
        // a later one) or the follower lost its partial transfer (it restarted, or took a
        // chunk of another transfer). Outside probing it is taken for stale: acting on every
        // stale answer with a window of chunks is what turns reordering into a storm, and a
        // follower that really lost its bytes stops progressing, so the next heartbeat round
        // probes it from `acked`. A probe's answer is believed: one chunk per answer.
        if !t.probing {
            return false;
        }
        t.acked = received;
        t.sent = received;
        t.done_sent = false;
        t.gap_resent = false;
        true
    }

    /// Resends from `next_index` on, still pipelining: appends in flight from there on are
    /// superseded.
    pub(crate) fn rewind_to(&mut self, next_index: Index) {
        self.next_index = next_index.max(self.match_index + 1).min(self.next_index);
        let next = self.next_index;
        self.inflight.retain(|&last| last < next);
        self.rewound_to = Some(next_index);
    }

    /// Falls back to probing from `next_index`.
    pub(crate) fn probe_from(&mut self, next_index: Index) {
        self.mode = Mode::Probe;
        self.next_index = next_index.max(self.match_index + 1);
        self.inflight.clear();
        self.probe_sent = false;
        self.transfer = None;
    }

    /// Whether something sent awaits an answer.
    pub(crate) fn awaiting_answer(&self) -> bool {
        match self.mode {
            Mode::Probe => self.probe_sent,
            Mode::Replicate => !self.inflight.is_empty(),
            Mode::Snapshot => self
                .transfer
                .as_ref()
                .is_some_and(|t| t.sent > t.acked || t.done_sent),
        }
    }

    /// Whether a rejection of an append whose previous index was `rejected_prev` refers to the
    /// current state of the conversation (not a stale or reordered reply).
    pub(crate) fn rejection_is_current(&self, rejected_prev: Index) -> bool {
        match self.mode {
            Mode::Replicate => rejected_prev > self.match_index,
            Mode::Probe => self.next_index.checked_sub(1) == Some(rejected_prev),
            Mode::Snapshot => false,
        }
    }
}
