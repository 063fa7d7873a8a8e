//! The core on its own: the persistence contract, the commit rule, fast backtracking, and
//! robustness against any peer input.

use raft_proto::{
    Action, AppendOutcome, Config, DurableState, Entry, EntryKind, Event, HardState, Membership,
    Message, MessageBody, Node, Payload, ProposalOutcome, Role, SnapshotMeta, StartError,
};

mod common;
use common::{msg, persist_seq, sends};

/// The lab's behaviour: elections without pre-vote, leaders without check-quorum (the tests
/// of those are at the end).
fn config(id: u64) -> Config {
    let mut c = Config::new(id, vec![1, 2, 3]);
    c.seed = 7;
    c.pre_vote = false;
    c.check_quorum = false;
    c
}

/// Node 1 elected leader of term 1 with node 2's vote; every write acknowledged.
fn leader() -> (Node, u64) {
    let mut node = Node::new(config(1), 0).unwrap();
    let now = node.next_deadline();
    let actions = node.step(now, Event::Tick);
    let seq = persist_seq(&actions).unwrap();
    let _ = node.step(now, Event::Persisted { seq });
    let _ = node.step(
        now,
        msg(2, 1, 1, MessageBody::VoteResponse { granted: true }),
    );
    assert!(node.is_leader());
    // Both followers answer the first probe (their logs are empty), so replication pipelines.
    for follower in [2, 3] {
        let accepted = MessageBody::AppendResponse {
            outcome: AppendOutcome::Accepted { match_index: 0 },
        };
        let _ = node.step(now, msg(follower, 1, 1, accepted));
    }
    (node, now)
}

#[test]
fn a_candidate_asks_for_votes_only_once_its_term_is_durable() {
    let mut node = Node::new(config(1), 0).unwrap();
    let now = node.next_deadline();
    let actions = node.step(now, Event::Tick);
    assert_eq!(node.role(), Role::Candidate);
    assert!(
        sends(&actions).is_empty(),
        "vote requests before the vote is durable"
    );
    let seq = persist_seq(&actions).expect("term and vote persisted");
    let actions = node.step(now, Event::Persisted { seq });
    let requests = sends(&actions);
    assert_eq!(requests.len(), 2);
    assert!(requests
        .iter()
        .all(|m| matches!(m.body, MessageBody::VoteRequest { .. }) && m.term == 1));
}

#[test]
fn a_vote_is_granted_only_once_durable_and_only_once_per_term() {
    let mut node = Node::new(config(1), 0).unwrap();
    let request = |from| {
        msg(
            from,
            1,
            5,
            MessageBody::VoteRequest {
                last_log_index: 0,
                last_log_term: 0,
                transfer: false,
            },
        )
    };
    let actions = node.step(1, request(2));
    assert!(sends(&actions).is_empty());
    let seq = persist_seq(&actions).unwrap();
    let actions = node.step(1, Event::Persisted { seq });
    assert!(matches!(
        sends(&actions)[0].body,
        MessageBody::VoteResponse { granted: true }
    ));
    // Another candidate of the same term is refused.
    let actions = node.step(2, request(3));
    assert!(matches!(
        sends(&actions)[0].body,
        MessageBody::VoteResponse { granted: false }
    ));
    assert_eq!(node.voted_for(), Some(2));
}

#[test]
fn the_leader_replicates_before_its_own_write_is_durable_but_counts_itself_only_after() {
    let (mut node, now) = leader();
    let actions = node.step(now, Event::Propose(vec![b"a".to_vec().into()]));
    assert!(actions.iter().any(|a| matches!(
        a,
        Action::ProposalOutcome(ProposalOutcome::Accepted {
            first_index: 1,
            last_index: 1,
            term: 1
        })
    )));
    let seq = persist_seq(&actions).unwrap();
    let appends = sends(&actions);
    assert_eq!(
        appends.len(),
        2,
        "appends leave before the leader's write is durable"
    );
    // One follower accepts: with the leader's own write pending, that is not a quorum.
    let accepted = MessageBody::AppendResponse {
        outcome: AppendOutcome::Accepted { match_index: 1 },
    };
    let _ = node.step(now, msg(2, 1, 1, accepted));
    assert_eq!(node.commit_index(), 0);
    let actions = node.step(now, Event::Persisted { seq });
    assert_eq!(node.commit_index(), 1);
    assert!(actions
        .iter()
        .any(|a| matches!(a, Action::Apply { first_index: 1, entries } if entries.len() == 1)));
}

#[test]
fn entries_of_an_earlier_term_are_not_committed_by_counting() {
    // Node 1 restarts with an entry of term 1 and becomes leader of term 3.
    let durable = DurableState {
        hard_state: HardState {
            term: 2,
            voted_for: None,
        },
        snapshot: None,
        log: vec![Entry::command(1, b"old".to_vec())],
    };
    let mut node = Node::restore(config(1), durable, 0).unwrap();
    let now = node.next_deadline();
    let seq = persist_seq(&node.step(now, Event::Tick)).unwrap();
    let _ = node.step(now, Event::Persisted { seq });
    let _ = node.step(
        now,
        msg(2, 1, 3, MessageBody::VoteResponse { granted: true }),
    );
    assert!(node.is_leader());
    let accepted = MessageBody::AppendResponse {
        outcome: AppendOutcome::Accepted { match_index: 1 },
    };
    let _ = node.step(now, msg(2, 1, 3, accepted));
    assert_eq!(
        node.commit_index(),
        0,
        "a term-1 entry committed by counting in term 3"
    );
    // A current-term entry after it commits both.
    let seq = persist_seq(&node.step(now, Event::Propose(vec![b"new".to_vec().into()]))).unwrap();
    let _ = node.step(now, Event::Persisted { seq });
    let accepted = MessageBody::AppendResponse {
        outcome: AppendOutcome::Accepted { match_index: 2 },
    };
    let _ = node.step(now, msg(2, 1, 3, accepted));
    assert_eq!(node.commit_index(), 2);
}

#[test]
fn a_reordered_shorter_append_does_not_truncate() {
    let mut node = Node::new(config(2), 0).unwrap();
    let entries: Vec<Entry> = (0..3).map(|i| Entry::command(1, vec![i])).collect();
    let append = |entries: Vec<Entry>| {
        msg(
            1,
            2,
            1,
            MessageBody::AppendRequest {
                prev_log_index: 0,
                prev_log_term: 0,
                entries,
                leader_commit: 0,
            },
        )
    };
    let _ = node.step(1, append(entries.clone()));
    assert_eq!(node.last_log_index(), 3);
    let _ = node.step(2, append(entries[..1].to_vec()));
    assert_eq!(node.last_log_index(), 3);
}

#[test]
fn a_rejection_carries_the_conflicting_term_and_its_first_index() {
    let durable = DurableState {
        hard_state: HardState {
            term: 3,
            voted_for: None,
        },
        snapshot: None,
        log: [1, 2, 2, 2, 3]
            .iter()
            .map(|&t| Entry::command(t, vec![]))
            .collect(),
    };
    let mut node = Node::restore(config(2), durable, 0).unwrap();
    let actions = node.step(
        1,
        msg(
            1,
            2,
            4,
            MessageBody::AppendRequest {
                prev_log_index: 4,
                prev_log_term: 4,
                entries: vec![],
                leader_commit: 0,
            },
        ),
    );
    let seq = persist_seq(&actions).unwrap();
    let actions = node.step(1, Event::Persisted { seq });
    match sends(&actions)[0].body {
        MessageBody::AppendResponse {
            outcome:
                AppendOutcome::Rejected {
                    rejected_prev,
                    hint_index,
                    conflict_term,
                },
        } => {
            assert_eq!((rejected_prev, hint_index, conflict_term), (4, 2, Some(2)));
        }
        ref other => panic!("expected a rejection, got {other:?}"),
    }
}

#[test]
fn a_follower_names_the_leader_when_refusing_a_proposal() {
    let mut node = Node::new(config(2), 0).unwrap();
    let heartbeat = MessageBody::AppendRequest {
        prev_log_index: 0,
        prev_log_term: 0,
        entries: vec![],
        leader_commit: 0,
    };
    let _ = node.step(1, msg(3, 2, 1, heartbeat));
    let actions = node.step(2, Event::Propose(vec![b"x".to_vec().into()]));
    assert!(
        actions.contains(&Action::ProposalOutcome(ProposalOutcome::NotLeader {
            count: 1,
            leader_hint: Some(3),
        }))
    );
}

#[test]
fn inconsistent_durable_state_is_refused() {
    let durable = DurableState {
        hard_state: HardState {
            term: 1,
            voted_for: None,
        },
        snapshot: None,
        log: vec![Entry::command(2, vec![])],
    };
    assert_eq!(
        Node::restore(config(1), durable, 0).unwrap_err(),
        StartError::InconsistentState { index: 1 }
    );
    assert!(Node::new(Config::new(9, vec![1, 2]), 0).is_err());
}

#[test]
fn the_same_seed_and_events_give_the_same_actions() {
    let run = || {
        let (mut node, now) = leader();
        let mut all = Vec::new();
        for i in 0..20u64 {
            all.extend(node.step(now + i * 150, Event::Tick));
            all.extend(node.step(now + i * 150, Event::Propose(vec![vec![i as u8].into()])));
        }
        all
    };
    assert_eq!(run(), run());
}

/// A tiny generator for the garbage test (no dependency needed).
struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 11
    }
    fn pick(&mut self, choices: &[u64]) -> u64 {
        choices[(self.next() % choices.len() as u64) as usize]
    }
}

#[test]
fn no_peer_input_makes_the_node_panic_or_go_back() {
    let odd = [0, 1, 2, 3, 4, 5, 7, 100, u64::MAX - 1, u64::MAX];
    let ids = [0, 1, 2, 3, 4, u64::MAX];
    for seed in 0..200 {
        let mut rng = Lcg(seed);
        let (mut node, mut now) = if seed % 2 == 0 {
            leader()
        } else {
            (Node::new(config(1), 0).unwrap(), 0)
        };
        let mut last_term = node.term();
        let mut last_commit = node.commit_index();
        for _ in 0..2000 {
            now += rng.next() % 50;
            let body = match rng.next() % 7 {
                0 => MessageBody::VoteRequest {
                    last_log_index: rng.pick(&odd),
                    last_log_term: rng.pick(&odd),
                    transfer: rng.pick(&odd).is_multiple_of(2),
                },
                1 => MessageBody::VoteResponse {
                    granted: rng.next().is_multiple_of(2),
                },
                2 => MessageBody::AppendRequest {
                    prev_log_index: rng.pick(&odd),
                    prev_log_term: rng.pick(&odd),
                    entries: (0..rng.next() % 4)
                        .map(|_| Entry::command(rng.pick(&odd), vec![1]))
                        .collect(),
                    leader_commit: rng.pick(&odd),
                },
                3 => MessageBody::AppendResponse {
                    outcome: AppendOutcome::Accepted {
                        match_index: rng.pick(&odd),
                    },
                },
                4 => MessageBody::SnapshotChunk {
                    membership: raft_proto::Membership::new([1, 2, 3]),
                    meta: SnapshotMeta {
                        last_index: rng.pick(&odd),
                        last_term: rng.pick(&odd),
                    },
                    offset: rng.pick(&odd),
                    data: vec![1, 2, 3].into(),
                    done: rng.next().is_multiple_of(2),
                },
                5 => MessageBody::SnapshotAck {
                    last_index: rng.pick(&odd),
                    received: rng.pick(&odd),
                },
                _ => MessageBody::AppendResponse {
                    outcome: AppendOutcome::Rejected {
                        rejected_prev: rng.pick(&odd),
                        hint_index: rng.pick(&odd),
                        conflict_term: Some(rng.pick(&odd))
                            .filter(|_| rng.next().is_multiple_of(2)),
                    },
                },
            };
            let event = match rng.next() % 8 {
                0 => Event::Tick,
                1 => Event::Persisted {
                    seq: rng.pick(&odd),
                },
                2 => Event::Propose(vec![vec![7].into()]),
                3 => Event::SnapshotTaken {
                    last_index: rng.pick(&odd),
                    data: vec![9].into(),
                },
                _ => msg(rng.pick(&ids), rng.pick(&ids), rng.pick(&odd), body),
            };
            let _ = node.step(now, event);
            assert!(node.term() >= last_term, "term went back");
            assert!(node.commit_index() >= last_commit, "commit index went back");
            assert!(node.commit_index() <= node.last_log_index().max(last_commit));
            last_term = node.term();
            last_commit = node.commit_index();
        }
        let stats = node.stats();
        assert!(stats.misaddressed + stats.unknown_sender + stats.stale_term > 0);
    }
}

#[test]
fn messages_round_trip_through_postcard() {
    let messages = [
        MessageBody::VoteRequest {
            last_log_index: 3,
            last_log_term: 2,
            transfer: false,
        },
        MessageBody::VoteResponse { granted: true },
        MessageBody::AppendRequest {
            prev_log_index: u64::MAX,
            prev_log_term: 1,
            entries: vec![Entry::command(2, b"abc".to_vec()), Entry::noop(2)],
            leader_commit: 9,
        },
        MessageBody::AppendResponse {
            outcome: AppendOutcome::Rejected {
                rejected_prev: 4,
                hint_index: 2,
                conflict_term: Some(2),
            },
        },
    ];
    for body in messages {
        let message = Message {
            from: 1,
            to: 2,
            term: 7,
            body,
        };
        let bytes = postcard::to_allocvec(&message).unwrap();
        let back: Message = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(back, message);
    }
}

/// One frame with an absurd term (corrupt or hostile) must not use up the term space: a node
/// that adopted `u64::MAX` could never campaign again, and would spread that term to everyone.
#[test]
fn a_frame_with_an_absurd_term_does_not_stop_elections() {
    use raft_proto::sim::{Sim, SimOptions, SECOND};
    for seed in 0..20 {
        let mut sim = Sim::new(SimOptions::new(3, seed));
        let leader = sim.check_one_leader().unwrap();
        let term = sim.node(leader).unwrap().term();
        for (s, absurd) in [(0, u64::MAX), (1, (1 << 62) - 1), (2, term + (1 << 33))] {
            let to = s as u64 + 1;
            let from = (to % 3) + 1;
            let body = MessageBody::VoteRequest {
                last_log_index: u64::MAX >> 3,
                last_log_term: absurd,
                transfer: false,
            };
            sim.inject(
                s,
                Message {
                    from,
                    to,
                    term: absurd,
                    body,
                },
            );
            let node = sim.node(s).unwrap();
            assert_eq!(node.term(), term, "node {to} adopted the term {absurd}");
            assert!(node.stats().invalid > 0);
        }
        // The cluster keeps electing leaders and committing.
        for round in 0..3 {
            let leader = sim.check_one_leader().unwrap();
            sim.disconnect(leader);
            sim.sleep(2 * SECOND).unwrap();
            let next = sim.check_one_leader().unwrap();
            assert_ne!(next, leader, "seed {seed} round {round}: no new leader");
            sim.connect(leader);
            sim.one(vec![round as u8 + 1], 3, true).unwrap();
        }
    }
}

/// The io contract promises exactly one outcome per proposal, an empty one included.
#[test]
fn an_empty_proposal_is_answered() {
    use raft_proto::ProposalRefusal;
    let (mut leader, now) = leader();
    let follower = &mut Node::new(config(2), 0).unwrap();
    for node in [&mut leader, follower] {
        let actions = node.step(now, Event::Propose(Vec::new()));
        let outcomes: Vec<_> = actions
            .iter()
            .filter_map(|a| match a {
                Action::ProposalOutcome(o) => Some(*o),
                _ => None,
            })
            .collect();
        assert_eq!(
            outcomes,
            vec![ProposalOutcome::Refused {
                count: 0,
                reason: ProposalRefusal::Empty
            }]
        );
        assert!(!actions.iter().any(|a| matches!(a, Action::Persist(_))));
    }
}

/// A pre-vote changes nothing durable anywhere: the pre-candidate keeps its term and vote
/// and asks at once for term + 1; a voter grants it only without a recent leader, without
/// taking the term or persisting anything; a majority of pre-votes starts the real election.
#[test]
fn pre_vote_changes_nothing_until_a_majority_grants_it() {
    let mut c = config(1);
    c.pre_vote = true;
    let mut node = Node::new(c, 0).unwrap();
    let now = node.next_deadline();
    let actions = node.step(now, Event::Tick);
    assert_eq!(node.role(), Role::PreCandidate);
    assert_eq!((node.term(), node.voted_for()), (0, None));
    assert!(
        persist_seq(&actions).is_none(),
        "a pre-vote persisted something"
    );
    let requests = sends(&actions);
    assert_eq!(requests.len(), 2);
    assert!(requests
        .iter()
        .all(|m| matches!(m.body, MessageBody::PreVoteRequest { .. }) && m.term == 1));

    // A voter that never heard from a leader grants it, taking nothing.
    let mut voter = Node::new(config(2), 0).unwrap();
    let request = requests[0].clone();
    let actions = voter.step(
        1,
        Event::Message(Message {
            to: 2,
            ..request.clone()
        }),
    );
    assert!(persist_seq(&actions).is_none());
    assert_eq!((voter.term(), voter.voted_for()), (0, None));
    let answer = sends(&actions)[0].clone();
    assert_eq!(answer.body, MessageBody::PreVoteResponse { granted: true });
    assert_eq!(
        answer.term, 1,
        "a granted pre-vote carries the requested term"
    );

    // A voter that just heard from its leader refuses.
    let mut follower = Node::new(config(3), 0).unwrap();
    let heartbeat = MessageBody::AppendRequest {
        prev_log_index: 0,
        prev_log_term: 0,
        entries: vec![],
        leader_commit: 0,
    };
    let _ = follower.step(1, msg(2, 3, 0, heartbeat));
    let actions = follower.step(2, Event::Message(Message { to: 3, ..request }));
    let refusal = sends(&actions)
        .into_iter()
        .find(|m| matches!(m.body, MessageBody::PreVoteResponse { .. }))
        .cloned()
        .expect("answered");
    assert_eq!(
        refusal.body,
        MessageBody::PreVoteResponse { granted: false }
    );
    assert_eq!(follower.term(), 0);

    // The granted pre-vote makes a majority: now the real election, term 1, vote durable first.
    let actions = node.step(now, Event::Message(answer));
    assert_eq!(node.role(), Role::Candidate);
    assert_eq!((node.term(), node.voted_for()), (1, Some(1)));
    assert!(sends(&actions).is_empty());
    let seq = persist_seq(&actions).expect("term and vote persisted");
    let actions = node.step(now, Event::Persisted { seq });
    assert!(sends(&actions)
        .iter()
        .all(|m| matches!(m.body, MessageBody::VoteRequest { .. }) && m.term == 1));
}

/// With check-quorum, a follower that heard from its leader within the minimum election
/// timeout refuses a vote for a higher term and does not take that term; later it does.
#[test]
fn a_follower_with_a_recent_leader_ignores_disruptive_votes() {
    let mut c = config(3);
    c.check_quorum = true;
    let mut follower = Node::new(c, 0).unwrap();
    let heartbeat = MessageBody::AppendRequest {
        prev_log_index: 0,
        prev_log_term: 0,
        entries: vec![],
        leader_commit: 0,
    };
    let _ = follower.step(10, msg(1, 3, 1, heartbeat));
    assert_eq!(follower.leader(), Some(1));
    let vote = MessageBody::VoteRequest {
        last_log_index: 5,
        last_log_term: 1,
        transfer: false,
    };
    let actions = follower.step(20, msg(2, 3, 2, vote.clone()));
    assert_eq!(follower.term(), 1, "took the disruptive term");
    assert!(sends(&actions).is_empty() && persist_seq(&actions).is_none());
    assert_eq!(follower.stats().disruptive_votes, 1);
    // Past the minimum election timeout without a word from the leader, the vote is normal.
    let later = 10 + follower.config().election_timeout_min;
    let actions = follower.step(later, msg(2, 3, 2, vote));
    assert_eq!(follower.term(), 2);
    let seq = persist_seq(&actions).expect("term and vote persisted");
    let actions = follower.step(later, Event::Persisted { seq });
    assert!(sends(&actions)
        .iter()
        .any(|m| m.body == MessageBody::VoteResponse { granted: true } && m.term == 2));
}

/// With check-quorum, a leader that hears from nobody steps down within two election
/// timeouts; one that hears from a majority stays.
#[test]
fn check_quorum_steps_a_lonely_leader_down() {
    let (mut leader, now) = leader();
    let mut c = leader.config().clone();
    c.check_quorum = true;
    // Rebuild the same leader with check-quorum on.
    let durable = DurableState {
        hard_state: HardState {
            term: leader.term(),
            voted_for: Some(1),
        },
        snapshot: None,
        log: vec![],
    };
    leader = Node::restore(c, durable, now).unwrap();
    let mut t = leader.next_deadline();
    let seq = persist_seq(&leader.step(t, Event::Tick)).unwrap();
    let _ = leader.step(t, Event::Persisted { seq });
    let _ = leader.step(t, msg(2, 1, 2, MessageBody::VoteResponse { granted: true }));
    assert!(leader.is_leader());
    let timeout = leader.config().election_timeout_max;
    let elected = t;
    // Node 2 keeps answering: the leader stays.
    while t < elected + 3 * timeout {
        t = leader.next_deadline();
        let _ = leader.step(t, Event::Tick);
        let ack = MessageBody::AppendResponse {
            outcome: AppendOutcome::Accepted { match_index: 0 },
        };
        let _ = leader.step(t, msg(2, 1, 2, ack));
        assert!(leader.is_leader(), "stepped down while a majority answers");
    }
    // Silence: it steps down within two timeouts and refuses proposals.
    let silent_from = t;
    while leader.is_leader() {
        t = leader.next_deadline();
        let _ = leader.step(t, Event::Tick);
        assert!(t <= silent_from + 2 * timeout, "still leader at {t}");
    }
    let actions = leader.step(t, Event::Propose(vec![b"x".to_vec().into()]));
    assert!(actions.iter().any(|a| matches!(
        a,
        Action::ProposalOutcome(ProposalOutcome::NotLeader { .. })
    )));
}

/// A single voter wins its election with its own vote, but must not lead (send appends of its
/// term) before that vote is durable: a crash could make it lead the same term twice, with
/// different entries.
#[test]
fn a_single_voter_leads_only_once_its_vote_is_durable() {
    let mut node = Node::new(Config::new(1, vec![1]), 0).unwrap();
    let now = node.next_deadline();
    let actions = node.step(now, Event::Tick);
    assert_eq!(node.role(), Role::Candidate);
    assert_eq!(node.term(), 1);
    let seq = persist_seq(&actions).expect("term and vote persisted");
    let actions = node.step(now, Event::Propose(vec![b"x".to_vec().into()]));
    assert!(actions.iter().any(|a| matches!(
        a,
        Action::ProposalOutcome(ProposalOutcome::NotLeader { .. })
    )));
    let _ = node.step(now, Event::Persisted { seq });
    assert!(node.is_leader());
}

/// A membership entry carrying `membership`, created in `term`.
fn membership_entry(term: u64, membership: &Membership) -> Entry {
    Entry {
        term,
        kind: EntryKind::Membership,
        data: Payload::from(membership.encode()),
    }
}

/// Applies every persist among `actions` to `durable`, as storage would.
fn persist_all(actions: &[Action], durable: &mut DurableState) {
    for action in actions {
        if let Action::Persist(write) = action {
            write.apply_to(durable);
        }
    }
}

/// A peer's append request with a membership entry whose bytes do not decode is dropped
/// whole and counted, before anything changes (not even the term): accepted, it would be
/// persisted, and the node could never restart from its storage.
#[test]
fn an_append_with_a_membership_entry_that_does_not_decode_is_dropped() {
    let mut node = Node::new(config(2), 0).unwrap();
    let mut durable = DurableState::default();
    let append = |entries: Vec<Entry>| {
        msg(
            1,
            2,
            1,
            MessageBody::AppendRequest {
                prev_log_index: 0,
                prev_log_term: 0,
                entries,
                leader_commit: 0,
            },
        )
    };
    let garbage = Entry {
        term: 1,
        kind: EntryKind::Membership,
        data: Payload::from(&[0xff, 0x01, 0x02][..]),
    };
    let actions = node.step(1, append(vec![Entry::command(1, vec![7]), garbage]));
    persist_all(&actions, &mut durable);
    assert!(actions.is_empty(), "acted on a forged append: {actions:?}");
    assert_eq!(node.stats().invalid, 1);
    assert_eq!((node.term(), node.last_log_index()), (0, 0));
    assert_eq!(node.leader(), None);

    // The same leader's well-formed entries are taken, and storage restarts the node.
    let next = Membership::new([1, 2, 3, 4]);
    let actions = node.step(
        2,
        append(vec![Entry::command(1, vec![7]), membership_entry(1, &next)]),
    );
    persist_all(&actions, &mut durable);
    assert_eq!(node.last_log_index(), 2);
    assert_eq!(node.membership(), &next);
    let restored = Node::restore(config(2), durable, 3).expect("restarts from its storage");
    assert_eq!(restored.last_log_index(), 2);
    assert_eq!(restored.membership(), &next);
}

/// Vote and pre-vote answers from nodes that are not voters are counted and ignored: a flood
/// of forged answers neither elects a candidate nor grows what it keeps per answer.
#[test]
fn vote_answers_from_non_voters_are_ignored() {
    for pre_vote in [false, true] {
        let mut c = config(1);
        c.pre_vote = pre_vote;
        let mut node = Node::new(c, 0).unwrap();
        let now = node.next_deadline();
        let actions = node.step(now, Event::Tick);
        if let Some(seq) = persist_seq(&actions) {
            let _ = node.step(now, Event::Persisted { seq });
        }
        let (role, term) = if pre_vote {
            (Role::PreCandidate, node.term() + 1)
        } else {
            (Role::Candidate, node.term())
        };
        assert_eq!(node.role(), role);
        let answer = |from| {
            let body = if pre_vote {
                MessageBody::PreVoteResponse { granted: true }
            } else {
                MessageBody::VoteResponse { granted: true }
            };
            msg(from, 1, term, body)
        };
        for from in 4..1004 {
            let _ = node.step(now, answer(from));
        }
        assert_eq!(
            node.role(),
            role,
            "won with forged votes (pre-vote {pre_vote})"
        );
        assert_eq!(node.stats().unknown_sender, 1000);
        // One real voter's answer is a majority with its own vote.
        let _ = node.step(now, answer(2));
        let next = if pre_vote {
            Role::Candidate
        } else {
            Role::Leader
        };
        assert_eq!(node.role(), next);
        assert_eq!(node.stats().unknown_sender, 1000);
    }
}

/// The durable state `node` would restart from had every write it asked for been durable:
/// its term and vote, and its whole log (no snapshot).
fn durable_of(node: &Node) -> DurableState {
    DurableState {
        hard_state: HardState {
            term: node.term(),
            voted_for: node.voted_for(),
        },
        snapshot: None,
        log: (1..=node.last_log_index())
            .map(|i| node.log_entry(i).unwrap().clone())
            .collect(),
    }
}

/// Elects `node` (restarted, with `config`'s lab behaviour: no pre-vote) in the next term
/// with the votes of `voters`; every write it asks for meanwhile is durable.
fn elect(node: &mut Node, now: u64, voters: &[u64]) {
    let actions = node.step(now, Event::Tick);
    assert_eq!(node.role(), Role::Candidate);
    ack_persists(node, now, &actions);
    for &voter in voters {
        let granted = MessageBody::VoteResponse { granted: true };
        let actions = node.step(now, msg(voter, node.id(), node.term(), granted));
        ack_persists(node, now, &actions);
    }
    assert!(node.is_leader());
}

/// Every persist among `actions` is reported durable to `node`.
fn ack_persists(node: &mut Node, now: u64, actions: &[Action]) {
    for action in actions {
        if let Action::Persist(write) = action {
            let _ = node.step(now, Event::Persisted { seq: write.seq });
        }
    }
}

/// `follower` holds the leader's whole log.
fn caught_up(node: &mut Node, now: u64, follower: u64) -> Vec<Action> {
    let match_index = node.last_log_index();
    let body = MessageBody::AppendResponse {
        outcome: AppendOutcome::Accepted { match_index },
    };
    node.step(now, msg(follower, node.id(), node.term(), body))
}

/// With `leader_noop` off, a leader elected with a membership in force that is not committed
/// appends a no-op anyway: otherwise nothing of its term would follow that membership, so it
/// would never commit without a client's proposal, and every membership change would be
/// refused meanwhile.
#[test]
fn a_new_leader_commits_a_pending_membership_without_a_proposal() {
    let (mut node, now) = leader();
    let add = raft_proto::MembershipChange::AddLearner {
        id: 4,
        data: Payload::from(&b"addr-4"[..]),
    };
    let _ = node.step(now, Event::ChangeMembership(add));
    assert_eq!((node.last_log_index(), node.commit_index()), (1, 0));
    // It crashes before the entry commits; restarted, it is elected again.
    let mut node = Node::restore(config(1), durable_of(&node), now).unwrap();
    let now = node.next_deadline();
    elect(&mut node, now, &[2]);
    assert_eq!(node.last_log_index(), 2, "no entry of the new term");
    let actions = caught_up(&mut node, now, 2);
    ack_persists(&mut node, now, &actions);
    assert_eq!(node.commit_index(), 2);
    let promote = raft_proto::MembershipChange::PromoteLearner { id: 4 };
    let actions = node.step(now, Event::ChangeMembership(promote));
    assert!(
        actions.iter().any(|a| matches!(
            a,
            Action::MembershipOutcome(raft_proto::MembershipOutcome::Accepted { .. })
        )),
        "{actions:?}"
    );
}

/// A leader that removed itself crashes once the joint membership committed and before the
/// new one did; restarted, it may campaign (it votes in the joint membership) and win. Without
/// a proposal, and with `leader_noop` off, it must still commit its removal and step down.
#[test]
fn a_removed_leader_elected_again_steps_down_without_a_proposal() {
    let (mut node, now) = leader();
    let remove = raft_proto::MembershipChange::Remove { id: 1 };
    let actions = node.step(now, Event::ChangeMembership(remove));
    ack_persists(&mut node, now, &actions);
    assert!(node.membership().is_joint());
    for follower in [2, 3] {
        let _ = caught_up(&mut node, now, follower);
    }
    // The joint membership committed; the leader appended the new voters' alone.
    assert_eq!((node.commit_index(), node.last_log_index()), (1, 2));
    assert_eq!(node.membership(), &Membership::new([2, 3]));
    let mut node = Node::restore(config(1), durable_of(&node), now).unwrap();
    let mut now = node.next_deadline();
    elect(&mut node, now, &[2, 3]);
    for follower in [2, 3] {
        let _ = caught_up(&mut node, now, follower);
    }
    for _ in 0..10 {
        now = node.next_deadline();
        let _ = node.step(now, Event::Tick);
        if !node.is_leader() {
            break;
        }
    }
    assert!(!node.is_leader(), "the removed leader leads on");
    assert!(node.commit_index() >= 2);
    assert_eq!(node.membership(), &Membership::new([2, 3]));
}
