//! What a leader knows about one follower's log, and how it paces replication to it.

use alloc::collections::VecDeque;

use crate::types::{Index, NodeId};

/// How the leader currently talks to a follower.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// The follower's match point is unknown: one append at a time, waiting for its answer (or
    /// the next heartbeat) before sending another.
    Probe,
    /// The follower is known to match up to `match_index`: appends are pipelined, at most
    /// `max_inflight_appends` in flight.
    Replicate,
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
    /// The follower's `match_index` advanced since the last heartbeat round.
    pub(crate) progressed: bool,
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
        }
    }

    /// The follower accepted entries up to `index`.
    pub(crate) fn on_accepted(&mut self, index: Index) {
        if index > self.match_index {
            self.match_index = index;
            self.progressed = true;
        }
        while self.inflight.front().is_some_and(|&last| last <= index) {
            self.inflight.pop_front();
        }
        match self.mode {
            Mode::Probe => {
                self.mode = Mode::Replicate;
                self.next_index = self.match_index + 1;
                self.inflight.clear();
                self.probe_sent = false;
            }
            Mode::Replicate => self.next_index = self.next_index.max(self.match_index + 1),
        }
    }

    /// Falls back to probing from `next_index`.
    pub(crate) fn probe_from(&mut self, next_index: Index) {
        self.mode = Mode::Probe;
        self.next_index = next_index.max(self.match_index + 1);
        self.inflight.clear();
        self.probe_sent = false;
    }

    /// Whether a rejection of an append whose previous index was `rejected_prev` refers to the
    /// current state of the conversation (not a stale or reordered reply).
    pub(crate) fn rejection_is_current(&self, rejected_prev: Index) -> bool {
        match self.mode {
            Mode::Replicate => rejected_prev > self.match_index,
            Mode::Probe => self.next_index.checked_sub(1) == Some(rejected_prev),
        }
    }
}
