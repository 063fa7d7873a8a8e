//! What a node records through the [`metrics`] facade when
//! [`NodeOptions::metrics`](crate::NodeOptions::metrics) is on. The library installs no
//! recorder and depends on no exporter: the application installs one (`raft-kv serve
//! --metrics-addr` installs a Prometheus one), and without one the calls cost next to nothing.
//!
//! Every metric carries the label `node` (the node's id), so that several nodes in one process
//! stay apart. Names and meanings:
//!
//! | metric | kind | what |
//! |---|---|---|
//! | `raft_term` | gauge | the current term |
//! | `raft_role{role}` | gauge | 1 for the node's role (`follower`, `pre_candidate`, `candidate`, `leader`), 0 for the others; all 0 once the node's loop has stopped |
//! | `raft_leader` | gauge | the leader's id as this node knows it (0: none known) |
//! | `raft_last_log_index`, `raft_commit_index`, `raft_applied_index`, `raft_snapshot_index` | gauge | the indexes of [`Status`] |
//! | `raft_proposals_total` | counter | proposals handed to the core (a node that does not lead refuses them) |
//! | `raft_proposals_refused_total` | counter | proposals answered with an error before or after proposing (not leader, busy, lost, timed out, shut down) |
//! | `raft_commits_total` | counter | proposals of this node answered as applied |
//! | `raft_commit_latency_seconds` | histogram | from the node's loop taking a proposal off its channel to its answer, for the applied ones (the wait in the channel is not included) |
//! | `raft_proposal_batch_size` | histogram | proposals stepped together (one log append at the leader) |
//! | `raft_append_batch_entries` | histogram | entries per write handed to storage |
//! | `raft_fsync_seconds` | histogram | one write and sync of the storage thread (a group of writes) |
//! | `raft_messages_sent_total{kind}`, `raft_messages_received_total{kind}` | counter | messages handed to the transport and received from it, per kind |
//! | `raft_transport_{sent,received,dropped,refused_connections,bad_frames,refused_by_peers,tls_failures}_total` | counter | the transport's [`TransportStats`] |
//! | `raft_transport_bytes_sent_total`, `raft_transport_bytes_received_total` | counter | bytes framed for peers (those of a write that then failed included), bytes read from them |
//! | `raft_dropped_inputs_total{reason}` | counter | the core's [`NodeStats`]: inputs it ignored, per reason |
//! | `raft_snapshots_taken_total`, `raft_snapshots_installed_total` | counter | snapshots of this node's state machine, snapshots received and restored |
//!
//! Snapshot transfers show as the `snapshot_chunk` and `snapshot_ack` kinds of the message
//! counters.
//!
//! The counters copied from running totals (`raft_transport_*`, `raft_dropped_inputs_total`)
//! never go down under recorders that keep the maximum (Prometheus's does): a node restarted
//! with the same id in the same process shows its old totals until the new ones pass them.

use std::time::Instant;

use metrics::{counter, gauge, histogram, Counter, Gauge, Histogram};
use raft_proto::{MessageBody, NodeId, NodeStats, Role};

use crate::driver::Reply;
use crate::{Status, TransportStats};

/// Suggested buckets for the latency histograms (`…_seconds`), in seconds: 50 µs to 5 s.
/// Exporters that keep histograms as quantile summaries by default (Prometheus's does) spend
/// far more per sample than with buckets.
pub const LATENCY_BUCKETS: [f64; 16] = [
    0.000_05, 0.000_1, 0.000_2, 0.000_5, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0,
    2.0, 5.0,
];

/// Suggested buckets for the batch-size histograms (`…_size`, `…_entries`).
pub const SIZE_BUCKETS: [f64; 12] = [
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 4096.0,
];

/// The kinds of messages counted apart; anything newer counts as `other`.
const KINDS: [&str; 14] = [
    "vote_request",
    "vote_response",
    "append_request",
    "append_response",
    "snapshot_chunk",
    "snapshot_ack",
    "pre_vote_request",
    "pre_vote_response",
    "read_index_request",
    "read_index_response",
    "confirm_leader",
    "leader_confirmed",
    "timeout_now",
    "other",
];

fn kind(body: &MessageBody) -> usize {
    match body {
        MessageBody::VoteRequest { .. } => 0,
        MessageBody::VoteResponse { .. } => 1,
        MessageBody::AppendRequest { .. } => 2,
        MessageBody::AppendResponse { .. } => 3,
        MessageBody::SnapshotChunk { .. } => 4,
        MessageBody::SnapshotAck { .. } => 5,
        MessageBody::PreVoteRequest { .. } => 6,
        MessageBody::PreVoteResponse { .. } => 7,
        MessageBody::ReadIndexRequest { .. } => 8,
        MessageBody::ReadIndexResponse { .. } => 9,
        MessageBody::ConfirmLeader { .. } => 10,
        MessageBody::LeaderConfirmed { .. } => 11,
        MessageBody::TimeoutNow => 12,
        _ => 13,
    }
}

const ROLES: [(Role, &str); 4] = [
    (Role::Follower, "follower"),
    (Role::PreCandidate, "pre_candidate"),
    (Role::Candidate, "candidate"),
    (Role::Leader, "leader"),
];

/// One node's metric handles, registered once.
pub(crate) struct NodeMetrics {
    term: Gauge,
    roles: [Gauge; 4],
    leader: Gauge,
    last_log_index: Gauge,
    commit_index: Gauge,
    applied_index: Gauge,
    snapshot_index: Gauge,
    proposals: Counter,
    refused: Counter,
    commits: Counter,
    commit_latency: Histogram,
    proposal_batch: Histogram,
    append_batch: Histogram,
    sent: Vec<Counter>,
    received: Vec<Counter>,
    transport: [Counter; 9],
    dropped: [Counter; 7],
    pub(crate) snapshots_taken: Counter,
    pub(crate) snapshots_installed: Counter,
    /// When the gauges were last set, in the driver's milliseconds (`None`: never).
    observed: Option<u64>,
}

impl std::fmt::Debug for NodeMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NodeMetrics")
    }
}

impl NodeMetrics {
    pub(crate) fn new(id: NodeId) -> Self {
        let node = id.to_string();
        let per_kind = |name: &'static str| -> Vec<Counter> {
            KINDS
                .iter()
                .map(|kind| counter!(name, "node" => node.clone(), "kind" => *kind))
                .collect()
        };
        let transport = [
            "raft_transport_sent_total",
            "raft_transport_received_total",
            "raft_transport_dropped_total",
            "raft_transport_refused_connections_total",
            "raft_transport_bad_frames_total",
            "raft_transport_refused_by_peers_total",
            "raft_transport_bytes_sent_total",
            "raft_transport_bytes_received_total",
            "raft_transport_tls_failures_total",
        ]
        .map(|name| counter!(name, "node" => node.clone()));
        let dropped = [
            "misaddressed",
            "unknown_sender",
            "stale_term",
            "stale_response",
            "disruptive_votes",
            "invalid",
            "snapshot_too_large",
        ]
        .map(|reason| counter!("raft_dropped_inputs_total", "node" => node.clone(), "reason" => reason));
        Self {
            term: gauge!("raft_term", "node" => node.clone()),
            roles: ROLES
                .map(|(_, role)| gauge!("raft_role", "node" => node.clone(), "role" => role)),
            leader: gauge!("raft_leader", "node" => node.clone()),
            last_log_index: gauge!("raft_last_log_index", "node" => node.clone()),
            commit_index: gauge!("raft_commit_index", "node" => node.clone()),
            applied_index: gauge!("raft_applied_index", "node" => node.clone()),
            snapshot_index: gauge!("raft_snapshot_index", "node" => node.clone()),
            proposals: counter!("raft_proposals_total", "node" => node.clone()),
            refused: counter!("raft_proposals_refused_total", "node" => node.clone()),
            commits: counter!("raft_commits_total", "node" => node.clone()),
            commit_latency: histogram!("raft_commit_latency_seconds", "node" => node.clone()),
            proposal_batch: histogram!("raft_proposal_batch_size", "node" => node.clone()),
            append_batch: histogram!("raft_append_batch_entries", "node" => node.clone()),
            sent: per_kind("raft_messages_sent_total"),
            received: per_kind("raft_messages_received_total"),
            transport,
            dropped,
            snapshots_taken: counter!("raft_snapshots_taken_total", "node" => node.clone()),
            snapshots_installed: counter!("raft_snapshots_installed_total", "node" => node),
            observed: None,
        }
    }

    /// The node's loop ended: it holds no role any more (its other gauges keep their last
    /// values).
    pub(crate) fn stopped(&self) {
        for gauge in &self.roles {
            gauge.set(0.0);
        }
        self.leader.set(0.0);
    }

    /// Whether the gauges are due at `now` (milliseconds): every 100 ms; the call counts as
    /// setting them.
    pub(crate) fn due(&mut self, now: u64) -> bool {
        let due = self
            .observed
            .is_none_or(|last| now >= last.saturating_add(100));
        if due {
            self.observed = Some(now);
        }
        due
    }

    /// The fsync histogram, for the storage thread.
    pub(crate) fn fsync(id: NodeId) -> Histogram {
        histogram!("raft_fsync_seconds", "node" => id.to_string())
    }

    /// Sets the gauges from a status, the transport's and the core's counters.
    pub(crate) fn observe(&self, status: &Status, core: &NodeStats) {
        self.term.set(status.term as f64);
        for (gauge, (role, _)) in self.roles.iter().zip(ROLES) {
            gauge.set(if status.role == role { 1.0 } else { 0.0 });
        }
        self.leader.set(status.leader.unwrap_or(0) as f64);
        self.last_log_index.set(status.last_log_index as f64);
        self.commit_index.set(status.commit_index as f64);
        self.applied_index.set(status.applied_index as f64);
        self.snapshot_index.set(status.snapshot_index as f64);
        if let Some(t) = &status.transport {
            self.observe_transport(t);
        }
        let dropped = [
            core.misaddressed,
            core.unknown_sender,
            core.stale_term,
            core.stale_response,
            core.disruptive_votes,
            core.invalid,
            core.snapshot_too_large,
        ];
        for (counter, value) in self.dropped.iter().zip(dropped) {
            counter.absolute(value);
        }
    }

    fn observe_transport(&self, t: &TransportStats) {
        let values = [
            t.sent,
            t.received,
            t.dropped,
            t.refused_connections,
            t.bad_frames,
            t.refused_by_peers,
            t.bytes_sent,
            t.bytes_received,
            t.tls_failures,
        ];
        for (counter, value) in self.transport.iter().zip(values) {
            counter.absolute(value);
        }
    }

    pub(crate) fn sent(&self, body: &MessageBody) {
        self.sent[kind(body)].increment(1);
    }

    pub(crate) fn received(&self, body: &MessageBody) {
        self.received[kind(body)].increment(1);
    }

    /// A batch of `proposals` stepped at once.
    pub(crate) fn proposed(&self, proposals: usize) {
        self.proposals.increment(proposals as u64);
        self.proposal_batch.record(proposals as f64);
    }

    /// A write of `entries` handed to storage.
    pub(crate) fn write(&self, entries: usize) {
        self.append_batch.record(entries as f64);
    }

    /// `reply`, counting its answer and timing it from now.
    pub(crate) fn timed(&self, reply: Reply) -> Reply {
        let (commits, refused) = (self.commits.clone(), self.refused.clone());
        let latency = self.commit_latency.clone();
        let since = Instant::now();
        Box::new(move |answer| {
            if answer.is_ok() {
                commits.increment(1);
                latency.record(since.elapsed().as_secs_f64());
            } else {
                refused.increment(1);
            }
            reply(answer)
        })
    }
}
