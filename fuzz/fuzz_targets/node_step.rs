//! A structured sequence of events into one node (reads and leadership transfers included),
//! pre-vote, check-quorum and lease reads each on or off: no panic, and its local invariants
//! hold after every step: the term and the commit index never go back, applied ≤ commit, a
//! vote once cast is kept for the rest of its term, and a read is served only once applied up
//! to its index.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use raft_proto::{
    AppendOutcome, Config, Entry, Event, Message, MessageBody, Node, Payload, SnapshotMeta,
};

#[derive(Arbitrary, Debug)]
enum Body {
    VoteRequest { last_log_index: u16, last_log_term: u8, transfer: bool },
    VoteResponse(bool),
    Append { prev: u16, prev_term: u8, terms: Vec<u8>, commit: u16 },
    Accepted(u16),
    Rejected { prev: u16, hint: u16, conflict: Option<u8> },
    Chunk { last_index: u16, last_term: u8, offset: u16, data: Vec<u8>, done: bool },
    Ack { last_index: u16, received: u16 },
    PreVoteRequest { last_log_index: u16, last_log_term: u8 },
    PreVoteResponse(bool),
    ReadIndexRequest(u8),
    ReadIndexResponse { id: u8, index: Option<u16> },
    ConfirmLeader(u8),
    LeaderConfirmed(u8),
    TimeoutNow,
}

#[derive(Arbitrary, Debug)]
enum Op {
    Tick(u16),
    Persisted(u8),
    Propose(u8),
    SnapshotTaken(u16),
    Read(u8),
    Transfer(u8),
    Message { from: u8, to: u8, term: u8, body: Body },
    SnapshotUnavailable(u16),
}

fn body(body: Body) -> MessageBody {
    let i = u64::from;
    match body {
        Body::VoteRequest { last_log_index, last_log_term, transfer } => MessageBody::VoteRequest {
            last_log_index: i(last_log_index),
            last_log_term: u64::from(last_log_term),
            transfer,
        },
        Body::VoteResponse(granted) => MessageBody::VoteResponse { granted },
        Body::Append { prev, prev_term, terms, commit } => MessageBody::AppendRequest {
            prev_log_index: i(prev),
            prev_log_term: u64::from(prev_term),
            entries: terms.into_iter().map(|t| Entry::command(u64::from(t), vec![t])).collect(),
            leader_commit: i(commit),
        },
        Body::Accepted(m) => MessageBody::AppendResponse {
            outcome: AppendOutcome::Accepted { match_index: i(m) },
        },
        Body::Rejected { prev, hint, conflict } => MessageBody::AppendResponse {
            outcome: AppendOutcome::Rejected {
                rejected_prev: i(prev),
                hint_index: i(hint),
                conflict_term: conflict.map(u64::from),
            },
        },
        Body::Chunk { last_index, last_term, offset, data, done } => MessageBody::SnapshotChunk {
            membership: raft_proto::Membership::new([1, 2, 3]),
            meta: SnapshotMeta {
                last_index: i(last_index),
                last_term: u64::from(last_term),
            },
            offset: i(offset),
            data: Payload::from(data),
            done,
        },
        Body::Ack { last_index, received } => MessageBody::SnapshotAck {
            last_index: i(last_index),
            received: i(received),
        },
        Body::PreVoteRequest { last_log_index, last_log_term } => MessageBody::PreVoteRequest {
            last_log_index: i(last_log_index),
            last_log_term: u64::from(last_log_term),
        },
        Body::PreVoteResponse(granted) => MessageBody::PreVoteResponse { granted },
        Body::ReadIndexRequest(id) => MessageBody::ReadIndexRequest { id: u64::from(id) },
        Body::ReadIndexResponse { id, index } => MessageBody::ReadIndexResponse {
            id: u64::from(id),
            index: index.map(i),
        },
        Body::ConfirmLeader(round) => MessageBody::ConfirmLeader { round: u64::from(round) },
        Body::LeaderConfirmed(round) => MessageBody::LeaderConfirmed { round: u64::from(round) },
        Body::TimeoutNow => MessageBody::TimeoutNow,
    }
}

fuzz_target!(|input: (bool, bool, bool, bool, Vec<Op>)| {
    let (pre_vote, check_quorum, lease_reads, streamed, ops) = input;
    let mut config = Config::new(1, vec![1, 2, 3]);
    config.max_snapshot_chunk = 4;
    config.pre_vote = pre_vote;
    config.check_quorum = check_quorum;
    config.lease_reads = lease_reads && check_quorum;
    config.stream_snapshots = streamed;
    let mut node = Node::new(config, 0).expect("a valid config");
    let mut now = 0u64;
    let mut actions = Vec::new();
    let (mut term, mut commit, mut vote) = (node.term(), node.commit_index(), node.voted_for());
    for op in ops.into_iter().take(512) {
        let event = match op {
            Op::Tick(dt) => {
                now += u64::from(dt);
                Event::Tick
            }
            Op::Persisted(seq) => Event::Persisted { seq: u64::from(seq) },
            Op::Propose(n) => Event::Propose((0..n % 8).map(|k| Payload::from(vec![k])).collect()),
            Op::SnapshotTaken(index) => Event::SnapshotTaken {
                last_index: u64::from(index),
                data: Payload::from(&b"state"[..]),
            },
            Op::Read(context) => Event::Read { context: u64::from(context) },
            Op::Transfer(to) => Event::TransferLeadership { to: u64::from(to % 5) },
            Op::SnapshotUnavailable(index) => {
                Event::SnapshotUnavailable { last_index: u64::from(index) }
            }
            Op::Message { from, to, term, body: b } => Event::Message(Message {
                from: u64::from(from % 5),
                to: u64::from(to % 4),
                term: u64::from(term),
                body: body(b),
            }),
        };
        node.step_into(now, event, &mut actions);
        for action in actions.drain(..) {
            // A read is served only once applied up to its index.
            if let raft_proto::Action::ReadReady { index, .. } = action {
                assert!(index <= node.applied_index(), "read served before applied");
            }
        }
        assert!(node.term() >= term, "the term went back");
        assert!(node.commit_index() >= commit, "the commit index went back");
        assert!(node.applied_index() <= node.commit_index());
        if node.term() == term && vote.is_some() {
            assert_eq!(node.voted_for(), vote, "voted twice in term {term}");
        }
        (term, commit, vote) = (node.term(), node.commit_index(), node.voted_for());
    }
});
