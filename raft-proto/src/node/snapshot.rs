//! Snapshots: compacting the log on the application's snapshot, sending a snapshot to a
//! lagging follower in flow-controlled chunks, and assembling and installing one received
//! from the leader.

use alloc::vec::Vec;

use super::Node;
use crate::io::{Action, SnapshotChunkRequest};
use crate::membership::Membership;
use crate::message::{AppendOutcome, MessageBody};
use crate::types::{Index, NodeId, Payload, Role, Snapshot, SnapshotMeta, Term};

#[derive(Debug, Clone)]
pub(super) struct IncomingSnapshot {
    leader: NodeId,
    term: Term,
    meta: SnapshotMeta,
    /// The bytes received so far, in order.
    received: u64,
    /// Those bytes, unless snapshots are streamed (then they are staged by the embedding).
    data: Vec<u8>,
}

impl Node {
    pub(super) fn on_snapshot_chunk(
        &mut self,
        leader: NodeId,
        meta: SnapshotMeta,
        membership: Membership,
        offset: u64,
        data: Payload,
        done: bool,
    ) {
        if self.role == Role::Leader
            || meta.last_term > self.hard_state.term
            || !membership.is_consistent()
        {
            // A second leader in this term, a snapshot of entries from the future, or a
            // membership no leader makes.
            self.stats.invalid += 1;
            return;
        }
        self.follow(leader);
        if meta.last_index <= self.commit_index {
            // Everything it covers is committed here already: nothing to install.
            self.incoming = None;
            let body = MessageBody::AppendResponse {
                outcome: AppendOutcome::Accepted {
                    match_index: meta.last_index,
                },
            };
            return self.send_when_durable(leader, body);
        }
        // A transfer belongs to one leader, in one term, of one snapshot: bytes from anyone
        // else never continue it (two leaders' snapshots of the same index may differ byte for
        // byte). A chunk of another transfer restarts it, from its first chunk.
        let term = self.hard_state.term;
        if self.too_large == Some((leader, term, meta)) {
            // A transfer already found too large: its chunks are neither held nor answered,
            // so the leader's transfer stays in probing (one chunk per heartbeat) instead of
            // restarting at full speed.
            self.stats.snapshot_too_large += 1;
            return;
        }
        let same = self
            .incoming
            .as_ref()
            .is_some_and(|i| i.leader == leader && i.term == term && i.meta == meta);
        if !same {
            self.incoming = (offset == 0).then(|| IncomingSnapshot {
                leader,
                term,
                meta,
                received: 0,
                data: Vec::new(),
            });
        }
        let too_large = self.incoming.as_ref().is_some_and(|i| {
            i.received == offset
                && offset.saturating_add(data.len() as u64) > self.config.max_snapshot_bytes
        });
        if too_large {
            // Not buffered, and not answered; this transfer's later chunks are dropped too
            // (above).
            self.incoming = None;
            self.too_large = Some((leader, term, meta));
            self.stats.snapshot_too_large += 1;
            return;
        }
        let streamed = self.config.stream_snapshots;
        let stage_late = self.bugs().stage_snapshot_chunks_after_persists;
        let received = match self.incoming.as_mut() {
            Some(incoming) if incoming.received == offset => {
                incoming.received += data.len() as u64;
                if streamed {
                    // With the persists, ahead of the one that installs the snapshot.
                    let stage = Action::StageSnapshotChunk { meta, offset, data };
                    if stage_late {
                        self.actions.push(stage);
                    } else {
                        self.persists.push(stage);
                    }
                } else {
                    incoming.data.extend_from_slice(&data);
                }
                if done {
                    let data = Payload::from(core::mem::take(&mut incoming.data));
                    self.incoming = None;
                    self.install_snapshot(Snapshot {
                        meta,
                        membership,
                        data,
                    });
                    let body = MessageBody::AppendResponse {
                        outcome: AppendOutcome::Accepted {
                            match_index: meta.last_index,
                        },
                    };
                    return self.send_when_durable(leader, body);
                }
                incoming.received
            }
            // A gap or a duplicate: say where we are.
            Some(incoming) => incoming.received,
            // A later chunk of a transfer we do not hold: start over.
            None => 0,
        };
        let body = MessageBody::SnapshotAck {
            last_index: meta.last_index,
            received,
        };
        self.send_when_durable(leader, body);
    }

    /// Installs a snapshot received from the leader: the log keeps the entries after it if they
    /// match, the state machine is replaced, and storage gets both in one atomic persist.
    pub(super) fn install_snapshot(&mut self, snapshot: Snapshot) {
        let meta = snapshot.meta;
        if !self.write.is_empty() {
            self.flush_write();
        }
        let old_base = self.log.base_index();
        let kept = self.log.compact_to(meta.last_index, meta.last_term);
        if !kept {
            self.write.truncate_from = Some(old_base + 1);
            self.stable_index = self.stable_index.min(old_base);
        }
        self.memberships
            .install(meta.last_index, snapshot.membership.clone(), kept);
        self.on_membership_changed();
        self.commit_index = self.commit_index.max(meta.last_index);
        if meta.last_index > self.applied_index {
            self.applied_index = meta.last_index;
            self.actions.push(Action::RestoreSnapshot(snapshot.clone()));
        }
        self.write.snapshot = Some(snapshot.clone());
        self.snapshot = Some(snapshot);
    }

    pub(super) fn on_snapshot_ack(&mut self, follower: NodeId, last_index: Index, received: u64) {
        if self.role != Role::Leader {
            self.stats.stale_response += 1;
            return;
        }
        let Some(pos) = self.progress.iter().position(|p| p.id == follower) else {
            return;
        };
        let limit = self.config.max_snapshot_bytes;
        if self.progress[pos].on_snapshot_ack(last_index, received, limit) {
            self.replicate_to(pos);
        } else {
            self.stats.stale_response += 1;
        }
    }

    pub(super) fn on_snapshot_taken(&mut self, last_index: Index, data: Payload) {
        if last_index <= self.snapshot_index() || last_index > self.applied_index {
            return;
        }
        let Some(last_term) = self.log.term(last_index) else {
            return;
        };
        let membership = self.memberships.at(last_index).clone();
        if membership.is_empty() {
            // A joining node that has not learned the membership yet: a snapshot must carry it.
            return;
        }
        // Streamed, the bytes are the embedding's: the core keeps none.
        let data = if self.config.stream_snapshots {
            Payload::from(&[][..])
        } else {
            data
        };
        if !self.write.is_empty() {
            self.flush_write();
        }
        // A leader keeps a few entries before the snapshot for followers slightly behind.
        let slowest = self.progress.iter().map(|p| p.match_index).min();
        let keep_from = slowest.map_or(last_index, |m| {
            m.max(last_index.saturating_sub(self.config.snapshot_catchup_entries))
        });
        let compact_to = last_index.min(keep_from);
        if let Some(term) = self.log.term(compact_to) {
            self.log.compact_to(compact_to, term);
            self.memberships.compact_to(compact_to);
        }
        let snapshot = Snapshot {
            meta: SnapshotMeta {
                last_index,
                last_term,
            },
            membership,
            data,
        };
        self.write.snapshot = Some(snapshot.clone());
        self.snapshot = Some(snapshot);
    }

    /// A streamed snapshot up to `last_index` can no longer be read: its transfers start over
    /// with the current snapshot, if that is newer.
    pub(super) fn on_snapshot_unavailable(&mut self, last_index: Index) {
        let Some(current) = self.snapshot.clone() else {
            return;
        };
        if self.role != Role::Leader
            || !self.config.stream_snapshots
            || current.meta.last_index <= last_index
        {
            return;
        }
        for pos in 0..self.progress.len() {
            let gone = self.progress[pos]
                .transfer
                .as_ref()
                .is_some_and(|t| t.snapshot.meta.last_index <= last_index);
            if gone {
                self.progress[pos].send_snapshot(current.clone(), true);
                self.send_snapshot_chunks(pos);
            }
        }
    }

    /// Sends the next chunks of the snapshot transfer to follower `pos`, keeping at most
    /// `max_inflight_appends` chunks unacknowledged (one while the follower is silent).
    pub(super) fn send_snapshot_chunks(&mut self, pos: usize) {
        let chunk = self.config.max_snapshot_chunk as u64;
        let chunks = self.config.max_inflight_appends as u64;
        let to = self.progress[pos].id;
        loop {
            let Some(t) = self.progress[pos].transfer.as_mut() else {
                return;
            };
            if t.done_sent || t.sent - t.acked >= t.window(chunk, chunks) {
                return;
            }
            if self.config.stream_snapshots {
                // The length is the embedding's to know: it marks the last chunk, and drops
                // requests past the end.
                let request = SnapshotChunkRequest {
                    from: self.config.id,
                    to,
                    term: self.hard_state.term,
                    meta: t.snapshot.meta,
                    membership: t.snapshot.membership.clone(),
                    offset: t.sent,
                    max_len: self.config.max_snapshot_chunk,
                };
                t.sent = t.sent.saturating_add(chunk);
                self.actions.push(Action::SendSnapshotChunk(request));
                continue;
            }
            let len = t.snapshot.data.len() as u64;
            let end = (t.sent + chunk).min(len);
            let done = end == len;
            let body = MessageBody::SnapshotChunk {
                meta: t.snapshot.meta,
                membership: t.snapshot.membership.clone(),
                offset: t.sent,
                data: Payload::from(&t.snapshot.data[t.sent as usize..end as usize]),
                done,
            };
            t.sent = end;
            t.done_sent = done;
            self.send_now(to, body);
        }
    }
}
