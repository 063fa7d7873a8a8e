//! Log replication: proposals appended at the leader, append requests and their answers,
//! heartbeat rounds, and the flow control towards each follower (probe, pipeline, retransmit
//! on loss, fast backtracking).

use alloc::vec::Vec;

use super::Node;
use crate::io::{Action, ProposalOutcome, ProposalRefusal};
use crate::message::{AppendOutcome, MessageBody};
use crate::progress::Mode;
use crate::types::{Entry, Index, NodeId, Payload, Role, Term};

impl Node {
    pub(super) fn on_propose(&mut self, commands: Vec<Payload>) {
        if commands.is_empty() {
            let refusal = ProposalOutcome::Refused {
                count: 0,
                reason: ProposalRefusal::Empty,
            };
            return self.actions.push(Action::ProposalOutcome(refusal));
        }
        if self.role != Role::Leader {
            self.actions
                .push(Action::ProposalOutcome(ProposalOutcome::NotLeader {
                    count: commands.len(),
                    leader_hint: self.leader,
                }));
            return;
        }
        if self.transfer.is_some() {
            let refusal = ProposalOutcome::Refused {
                count: commands.len(),
                reason: ProposalRefusal::TransferInProgress,
            };
            return self.actions.push(Action::ProposalOutcome(refusal));
        }
        let term = self.hard_state.term;
        let first_index = self.log.last_index() + 1;
        self.reserve_log(commands.len());
        for data in commands {
            self.append_to_log(Entry::command(term, data));
        }
        self.actions
            .push(Action::ProposalOutcome(ProposalOutcome::Accepted {
                first_index,
                last_index: self.log.last_index(),
                term,
            }));
    }

    pub(super) fn on_append_request(
        &mut self,
        leader: NodeId,
        prev_log_index: Index,
        prev_log_term: Term,
        entries: Vec<Entry>,
        leader_commit: Index,
    ) {
        if self.role == Role::Leader {
            // Two leaders in one term cannot happen in a correct cluster.
            self.stats.invalid += 1;
            return;
        }
        self.follow(leader);

        let (prev_log_index, prev_log_term, entries) =
            match self.skip_snapshotted(prev_log_index, prev_log_term, entries) {
                Ok(rest) => rest,
                Err(match_index) => {
                    let body = MessageBody::AppendResponse {
                        outcome: AppendOutcome::Accepted { match_index },
                    };
                    return self.send_when_durable(leader, body);
                }
            };
        let reject = |node: &Self, hint_index: Index, conflict_term: Option<Term>| {
            MessageBody::AppendResponse {
                outcome: AppendOutcome::Rejected {
                    rejected_prev: prev_log_index,
                    hint_index: hint_index.max(node.commit_index + 1).max(1),
                    conflict_term,
                },
            }
        };
        match self.log.term(prev_log_index) {
            None => {
                let body = reject(self, self.log.last_index() + 1, None);
                return self.send_when_durable(leader, body);
            }
            Some(term) if term != prev_log_term => {
                let first = self.log.first_index_of_term(term, prev_log_index);
                let body = reject(self, first, Some(term));
                return self.send_when_durable(leader, body);
            }
            Some(_) => {}
        }

        // The logs match up to prev_log_index. Append what is new; truncate only on a real
        // conflict, never because a (reordered) request carries fewer entries than we hold.
        let Some(match_index) = prev_log_index.checked_add(entries.len() as Index) else {
            self.stats.invalid += 1;
            return;
        };
        let mut index = prev_log_index;
        self.reserve_log(entries.len());
        for entry in entries {
            index += 1;
            match self.log.term(index) {
                Some(term) if term == entry.term => continue,
                Some(_) => {
                    if index <= self.commit_index || entry.term > self.hard_state.term {
                        self.stats.invalid += 1;
                        return;
                    }
                    self.truncate_log(index);
                }
                None => {}
            }
            if entry.term > self.hard_state.term || entry.term < self.log.last_term() {
                self.stats.invalid += 1;
                return;
            }
            self.append_to_log(entry);
        }
        // Commit only what is known to match the leader's log.
        self.commit_index = self.commit_index.max(leader_commit.min(match_index));
        let body = MessageBody::AppendResponse {
            outcome: AppendOutcome::Accepted { match_index },
        };
        if self.bugs().accept_append_before_persist {
            self.send_now(leader, body);
        } else {
            self.send_when_durable(leader, body);
        }
    }

    pub(super) fn on_append_response(&mut self, follower: NodeId, outcome: AppendOutcome) {
        if self.role != Role::Leader {
            self.stats.stale_response += 1;
            return;
        }
        let last_index = self.log.last_index();
        let Some(pos) = self.progress.iter().position(|p| p.id == follower) else {
            return;
        };
        match outcome {
            AppendOutcome::Accepted { match_index } => {
                if match_index > last_index {
                    self.stats.invalid += 1;
                    return;
                }
                self.progress[pos].on_accepted(match_index);
            }
            AppendOutcome::Rejected {
                rejected_prev,
                hint_index,
                conflict_term,
            } => {
                let base = self.log.base_index();
                let progress = &mut self.progress[pos];
                if !progress.rejection_is_current(rejected_prev) {
                    self.stats.stale_response += 1;
                    return;
                }
                if progress.mode == Mode::Replicate
                    && conflict_term.is_none()
                    && hint_index > progress.match_index
                    && hint_index > base
                {
                    // Not a conflict: the follower's log ends before this append (an earlier
                    // one was reordered or lost). Keep pipelining, resending once from where
                    // its log ends; the other rejections of the same gap are then stale.
                    if progress.rewound_to != Some(hint_index) {
                        progress.rewind_to(hint_index);
                        self.replicate_to(pos);
                    } else {
                        self.stats.stale_response += 1;
                    }
                    return;
                }
                // Skip the whole conflicting term at once (fast backtracking): past the last
                // entry of that term in our log if we have it, else to the follower's hint.
                let next = match conflict_term.and_then(|t| self.log.last_index_of_term(t)) {
                    Some(last_of_term) => last_of_term + 1,
                    None => hint_index,
                };
                let progress = &mut self.progress[pos];
                progress.probe_from(next.min(rejected_prev).min(last_index + 1));
            }
        }
        self.replicate_to(pos);
    }

    /// Drops the entries of an append request that our snapshot already covers (they are
    /// committed, so they match). `Err(match_index)` when nothing is left to look at.
    pub(super) fn skip_snapshotted(
        &self,
        prev_log_index: Index,
        prev_log_term: Term,
        mut entries: Vec<Entry>,
    ) -> Result<(Index, Term, Vec<Entry>), Index> {
        let base = self.log.base_index();
        if prev_log_index >= base {
            return Ok((prev_log_index, prev_log_term, entries));
        }
        let skip = base - prev_log_index;
        if (entries.len() as Index) < skip {
            return Err(prev_log_index + entries.len() as Index);
        }
        let at_base = entries.drain(..skip as usize).next_back();
        let term = at_base.map_or(prev_log_term, |e| e.term);
        Ok((base, term, entries))
    }

    /// A heartbeat round: each follower gets an append (or, while it receives a snapshot, the
    /// next chunks). What was sent before the previous round and is still unanswered, with no
    /// progress since, is presumed lost and sent again: a probe is repeated, a pipelined
    /// follower restarts from its match point, a snapshot transfer from its last acknowledged
    /// byte with a single chunk per round until the follower answers again.
    pub(super) fn heartbeat(&mut self) {
        for pos in 0..self.progress.len() {
            let progress = &mut self.progress[pos];
            let lost = progress.waiting && progress.awaiting_answer() && !progress.progressed;
            match progress.mode {
                Mode::Probe => progress.probe_sent = false,
                Mode::Replicate if lost => {
                    let next = progress.match_index + 1;
                    progress.probe_from(next);
                }
                Mode::Replicate => {}
                Mode::Snapshot => {
                    if let Some(t) = progress.transfer.as_mut().filter(|_| lost) {
                        t.rewind_to_probe();
                    }
                }
            }
            let progress = &mut self.progress[pos];
            progress.progressed = false;
            if progress.mode == Mode::Replicate {
                // Prove liveness and carry the commit index; prev = match point (or our
                // snapshot, which the follower needs if it lacks it), so a follower that keeps
                // up never rejects it.
                let prev = progress.match_index.max(self.log.base_index());
                self.send_append(pos, prev, Vec::new());
            } else {
                self.replicate_to(pos);
            }
            let progress = &mut self.progress[pos];
            progress.waiting = progress.awaiting_answer();
        }
    }

    /// Sends whatever each follower is due.
    pub(super) fn replicate(&mut self) {
        for pos in 0..self.progress.len() {
            self.replicate_to(pos);
        }
    }

    pub(super) fn replicate_to(&mut self, pos: usize) {
        let last = self.log.last_index();
        if self.progress[pos].mode != Mode::Snapshot
            && self.progress[pos].next_index <= self.log.base_index()
        {
            // The entries it needs are compacted away.
            match self.snapshot.clone() {
                Some(snapshot) => {
                    let streamed = self.config.stream_snapshots;
                    self.progress[pos].send_snapshot(snapshot, streamed);
                }
                None => return,
            }
        }
        if self.progress[pos].mode == Mode::Snapshot {
            return self.send_snapshot_chunks(pos);
        }
        loop {
            let progress = &self.progress[pos];
            let next = progress.next_index;
            match progress.mode {
                Mode::Probe if progress.probe_sent => return,
                Mode::Snapshot => return,
                Mode::Replicate
                    if next > last
                        || progress.inflight.len() >= self.config.max_inflight_appends =>
                {
                    return
                }
                _ => {}
            }
            let entries = self.log.slice(
                next,
                self.config.max_entries_per_append,
                self.config.max_bytes_per_append,
            );
            let sent_last = next - 1 + entries.len() as Index;
            self.send_append(pos, next - 1, entries);
            let progress = &mut self.progress[pos];
            match progress.mode {
                Mode::Probe => {
                    progress.probe_sent = true;
                    return;
                }
                Mode::Replicate => {
                    progress.inflight.push_back(sent_last);
                    progress.next_index = sent_last + 1;
                }
                Mode::Snapshot => return,
            }
        }
    }

    pub(super) fn send_append(&mut self, pos: usize, prev_log_index: Index, entries: Vec<Entry>) {
        let Some(prev_log_term) = self.log.term(prev_log_index) else {
            // Only reachable once compaction exists; the index is always in the log today.
            return;
        };
        let to = self.progress[pos].id;
        let body = MessageBody::AppendRequest {
            prev_log_index,
            prev_log_term,
            entries,
            leader_commit: self.commit_index,
        };
        self.send_now(to, body);
    }
}
