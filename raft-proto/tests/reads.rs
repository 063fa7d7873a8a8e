//! The core on its own: linearizable reads (ReadIndex, batching, the own-term rule, reads at
//! followers, leases) and leadership transfer, step by step.

use raft_proto::{
    Action, AppendOutcome, Config, ConfigError, DurableState, Entry, Event, HardState,
    MembershipChange, MembershipError, MembershipOutcome, MessageBody, Node, ProposalOutcome,
    ProposalRefusal, ReadRefusal, Role, StartError, TransferOutcome, TransferRefusal,
};

mod common;
use common::{msg, persist_seq, sends};

fn config(id: u64) -> Config {
    let mut c = Config::new(id, vec![1, 2, 3]);
    c.seed = 7;
    c.pre_vote = false;
    c
}

/// The round numbers of the `ConfirmLeader` messages sent, one per voter.
fn rounds(actions: &[Action]) -> Vec<u64> {
    let mut rounds: Vec<u64> = sends(actions)
        .iter()
        .filter_map(|m| match m.body {
            MessageBody::ConfirmLeader { round } => Some(round),
            _ => None,
        })
        .collect();
    rounds.dedup();
    rounds
}

fn ready(actions: &[Action]) -> Vec<(u64, u64)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::ReadReady { context, index } => Some((*context, *index)),
            _ => None,
        })
        .collect()
}

fn refused(actions: &[Action]) -> Vec<(u64, ReadRefusal)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::ReadRefused { context, reason } => Some((*context, *reason)),
            _ => None,
        })
        .collect()
}

fn read(context: u64) -> Event {
    Event::Read { context }
}

/// Node 1 of `c`'s cluster, restored from `durable` (term 1, maybe entries), elected leader of
/// the next term with node 2's vote, every write acknowledged, followers probed at `match_`.
fn elect(c: Config, durable: DurableState, match_: u64) -> (Node, u64) {
    let mut node = Node::restore(c, durable, 0).unwrap();
    let now = node.next_deadline();
    let actions = node.step(now, Event::Tick);
    let seq = persist_seq(&actions).unwrap();
    let _ = node.step(now, Event::Persisted { seq });
    let term = node.term();
    let _ = node.step(
        now,
        msg(2, 1, term, MessageBody::VoteResponse { granted: true }),
    );
    assert!(node.is_leader());
    for follower in [2, 3] {
        let accepted = MessageBody::AppendResponse {
            outcome: AppendOutcome::Accepted {
                match_index: match_,
            },
        };
        let _ = node.step(now, msg(follower, 1, term, accepted));
    }
    (node, now)
}

fn leader(c: Config) -> (Node, u64) {
    elect(c, DurableState::default(), 0)
}

#[test]
fn a_leader_read_waits_for_a_quorum_to_confirm_and_rounds_are_batched() {
    let (mut node, now) = leader(config(1));
    let actions = node.step(now, read(10));
    assert!(ready(&actions).is_empty(), "served without confirmation");
    let first = rounds(&actions);
    assert_eq!(first.len(), 1, "one round to the two voters");
    assert_eq!(sends(&actions).len(), 2);
    // More reads while the round is in flight: no new round yet.
    let actions = node.step(now, read(11));
    assert!(rounds(&actions).is_empty());
    let actions = node.step(now, read(12));
    assert!(rounds(&actions).is_empty());
    // One voter answers: with the leader, a quorum. Read 10 is served; 11 and 12 share the
    // next round.
    let confirmed = MessageBody::LeaderConfirmed { round: first[0] };
    let actions = node.step(now, msg(2, 1, 1, confirmed.clone()));
    assert_eq!(ready(&actions), vec![(10, 0)]);
    let second = rounds(&actions);
    assert_eq!(second.len(), 1);
    // A duplicate answer to the first round changes nothing.
    let actions = node.step(now, msg(3, 1, 1, confirmed));
    assert!(ready(&actions).is_empty());
    let actions = node.step(
        now,
        msg(3, 1, 1, MessageBody::LeaderConfirmed { round: second[0] }),
    );
    assert_eq!(ready(&actions), vec![(11, 0), (12, 0)]);
}

#[test]
fn a_new_leader_gives_no_read_index_before_it_commits_an_entry_of_its_term() {
    // Two entries of term 1 in the log, commit unknown: the new leader of term 2 cannot tell
    // whether they are committed until it commits an entry of its own.
    let durable = DurableState {
        hard_state: HardState {
            term: 1,
            voted_for: None,
        },
        snapshot: None,
        log: vec![
            Entry::command(1, b"a".to_vec()),
            Entry::command(1, b"b".to_vec()),
        ],
    };
    let (mut node, now) = elect(config(1), durable, 2);
    assert_eq!(node.term(), 2);
    assert_eq!(node.commit_index(), 0);
    let actions = node.step(now, read(1));
    assert!(ready(&actions).is_empty() && rounds(&actions).is_empty());
    // A proposal of term 2 at index 3, durable here and at node 2: committed.
    let actions = node.step(now, Event::Propose(vec![b"c".to_vec().into()]));
    let seq = persist_seq(&actions).unwrap();
    let _ = node.step(now, Event::Persisted { seq });
    let ack = MessageBody::AppendResponse {
        outcome: AppendOutcome::Accepted { match_index: 3 },
    };
    let actions = node.step(now, msg(2, 1, 2, ack));
    assert_eq!(node.commit_index(), 3);
    let round = rounds(&actions);
    assert_eq!(
        round.len(),
        1,
        "the read's round goes out once its index is known"
    );
    let actions = node.step(
        now,
        msg(3, 1, 2, MessageBody::LeaderConfirmed { round: round[0] }),
    );
    assert_eq!(ready(&actions), vec![(1, 3)]);
}

#[test]
fn a_leader_that_steps_down_refuses_its_reads_and_a_silent_quorum_times_them_out() {
    let (mut node, now) = leader(config(1));
    let _ = node.step(now, read(1));
    // A vote request for term 5 (check-quorum would ignore it while the leader is recent;
    // once the leader heard nothing for an election timeout, it is taken).
    let later = now + node.config().election_timeout_min;
    let vote = MessageBody::VoteRequest {
        last_log_index: 0,
        last_log_term: 0,
        transfer: true,
    };
    let actions = node.step(later, msg(3, 1, 5, vote));
    assert_eq!(node.role(), Role::Follower);
    assert_eq!(refused(&actions), vec![(1, ReadRefusal::LeadershipLost)]);

    let (mut node, now) = leader(config(1));
    let _ = node.step(now, read(2));
    let mut t = now;
    let mut outcome = Vec::new();
    while outcome.is_empty() && node.is_leader() {
        t = node.next_deadline();
        outcome = refused(&node.step(t, Event::Tick));
    }
    assert_eq!(outcome, vec![(2, ReadRefusal::TimedOut)]);
    assert!(t <= now + node.config().election_timeout_max);
}

#[test]
fn a_follower_asks_the_leader_and_serves_once_applied_up_to_the_read_index() {
    let mut node = Node::new(config(2), 0).unwrap();
    let actions = node.step(1, read(1));
    assert_eq!(refused(&actions), vec![(1, ReadRefusal::NoLeader)]);
    let append = MessageBody::AppendRequest {
        prev_log_index: 0,
        prev_log_term: 0,
        entries: vec![
            Entry::command(1, b"a".to_vec()),
            Entry::command(1, b"b".to_vec()),
        ],
        leader_commit: 0,
    };
    let actions = node.step(2, msg(1, 2, 1, append));
    let seq = persist_seq(&actions).unwrap();
    let _ = node.step(2, Event::Persisted { seq });
    let actions = node.step(3, read(7));
    let asked: Vec<_> = sends(&actions).into_iter().cloned().collect();
    assert_eq!(asked.len(), 1);
    assert_eq!(asked[0].to, 1);
    assert_eq!(asked[0].body, MessageBody::ReadIndexRequest { id: 7 });
    // The leader's answer: index 2. Nothing applied yet: the read waits.
    let answer = MessageBody::ReadIndexResponse {
        id: 7,
        index: Some(2),
    };
    let actions = node.step(4, msg(1, 2, 1, answer));
    assert!(ready(&actions).is_empty());
    // The leader's commit index reaches 2: the entries are applied, then the read is served.
    let heartbeat = MessageBody::AppendRequest {
        prev_log_index: 2,
        prev_log_term: 1,
        entries: vec![],
        leader_commit: 2,
    };
    let actions = node.step(5, msg(1, 2, 1, heartbeat));
    let apply = actions
        .iter()
        .position(|a| matches!(a, Action::Apply { .. }))
        .expect("applied");
    let served = actions
        .iter()
        .position(|a| {
            matches!(
                a,
                Action::ReadReady {
                    context: 7,
                    index: 2
                }
            )
        })
        .expect("served");
    assert!(
        apply < served,
        "served before the state machine had the entries"
    );
}

#[test]
fn a_forwarded_read_is_refused_when_the_leader_changes_or_cannot_confirm() {
    let mut node = Node::new(config(2), 0).unwrap();
    let heartbeat = MessageBody::AppendRequest {
        prev_log_index: 0,
        prev_log_term: 0,
        entries: vec![],
        leader_commit: 0,
    };
    let _ = node.step(1, msg(1, 2, 1, heartbeat.clone()));
    let _ = node.step(2, read(1));
    let _ = node.step(2, read(2));
    let actions = node.step(
        3,
        msg(
            1,
            2,
            1,
            MessageBody::ReadIndexResponse { id: 1, index: None },
        ),
    );
    assert_eq!(refused(&actions), vec![(1, ReadRefusal::LeadershipLost)]);
    // A new leader in term 2: read 2, asked of the old one, is refused.
    let actions = node.step(4, msg(3, 2, 2, heartbeat));
    assert_eq!(refused(&actions), vec![(2, ReadRefusal::LeadershipLost)]);
}

#[test]
fn a_voter_confirms_only_the_leader_of_its_term() {
    let mut node = Node::new(config(2), 0).unwrap();
    let actions = node.step(1, msg(1, 2, 1, MessageBody::ConfirmLeader { round: 4 }));
    // The term is taken (persisted) before the confirmation leaves.
    assert!(sends(&actions).is_empty());
    let seq = persist_seq(&actions).unwrap();
    let actions = node.step(1, Event::Persisted { seq });
    assert_eq!(
        sends(&actions)[0].body,
        MessageBody::LeaderConfirmed { round: 4 }
    );
    assert_eq!(node.leader(), Some(1));
    // A stale leader's round is not confirmed: the answer carries the newer term.
    let _ = node.step(2, msg(3, 2, 3, MessageBody::TimeoutNow));
    let actions = node.step(3, msg(1, 2, 1, MessageBody::ConfirmLeader { round: 5 }));
    assert!(sends(&actions).iter().all(|m| m.term > 1));
}

#[test]
fn lease_reads_need_check_quorum_and_a_drift_bound_below_the_election_timeout() {
    let mut c = config(1);
    c.lease_reads = true;
    c.check_quorum = false;
    assert_eq!(c.validate(), Err(ConfigError::BadLease));
    c.check_quorum = true;
    c.clock_drift_bound = c.election_timeout_min;
    assert!(matches!(
        Node::new(c, 0),
        Err(StartError::Config(ConfigError::BadLease))
    ));
}

#[test]
fn under_a_lease_a_leader_reads_without_a_round_until_the_lease_ends() {
    let mut c = config(1);
    c.lease_reads = true;
    let (mut node, now) = leader(c);
    // No lease yet: the read takes a round, and its confirmation starts the lease.
    let actions = node.step(now, read(1));
    let round = rounds(&actions)[0];
    let actions = node.step(
        now + 1,
        msg(2, 1, 1, MessageBody::LeaderConfirmed { round }),
    );
    assert_eq!(ready(&actions), vec![(1, 0)]);
    let actions = node.step(now + 2, read(2));
    assert_eq!(ready(&actions), vec![(2, 0)], "not served under the lease");
    assert!(rounds(&actions).is_empty());
    // The lease lasts election_timeout_min - clock_drift_bound from the round's sending.
    let end = now + node.config().election_timeout_min - node.config().clock_drift_bound;
    let actions = node.step(end, read(3));
    assert!(ready(&actions).is_empty(), "served after the lease ended");
}

#[test]
fn with_leases_a_restarted_node_refuses_to_depose_a_leader_for_an_election_timeout() {
    let mut c = config(2);
    c.check_quorum = true;
    c.lease_reads = true;
    let durable = DurableState {
        hard_state: HardState {
            term: 1,
            voted_for: Some(1),
        },
        snapshot: None,
        log: vec![],
    };
    let mut node = Node::restore(c.clone(), durable.clone(), 1000).unwrap();
    let vote = MessageBody::VoteRequest {
        last_log_index: 0,
        last_log_term: 0,
        transfer: false,
    };
    let _ = node.step(1001, msg(3, 2, 2, vote.clone()));
    assert_eq!(
        node.term(),
        1,
        "a vote right after restart could end a lease"
    );
    let _ = node.step(1000 + c.election_timeout_min, msg(3, 2, 2, vote.clone()));
    assert_eq!(node.term(), 2);
    // Without leases, no such wait.
    c.lease_reads = false;
    let mut node = Node::restore(c, durable, 1000).unwrap();
    let _ = node.step(1001, msg(3, 2, 2, vote));
    assert_eq!(node.term(), 2);
}

fn transfer(node: &mut Node, now: u64, to: u64) -> Vec<TransferOutcome> {
    node.step(now, Event::TransferLeadership { to })
        .into_iter()
        .filter_map(|a| match a {
            Action::TransferOutcome(o) => Some(o),
            _ => None,
        })
        .collect()
}

#[test]
fn transfers_are_refused_when_they_cannot_work() {
    let mut follower = Node::new(config(2), 0).unwrap();
    assert_eq!(
        transfer(&mut follower, 1, 3),
        vec![TransferOutcome::Refused(TransferRefusal::NotLeader {
            leader_hint: None
        })]
    );
    let (mut node, now) = leader(config(1));
    assert_eq!(
        transfer(&mut node, now, 1),
        vec![TransferOutcome::Refused(TransferRefusal::AlreadyLeader)]
    );
    assert_eq!(
        transfer(&mut node, now, 9),
        vec![TransferOutcome::Refused(TransferRefusal::NotAVoter(9))]
    );
    assert_eq!(
        transfer(&mut node, now, 2),
        vec![TransferOutcome::Started { to: 2 }]
    );
    assert_eq!(
        transfer(&mut node, now, 3),
        vec![TransferOutcome::Refused(TransferRefusal::InProgress)]
    );
}

#[test]
fn a_transferring_leader_refuses_changes_catches_the_target_up_then_tells_it_to_campaign() {
    let (mut node, now) = leader(config(1));
    let actions = node.step(now, Event::Propose(vec![b"x".to_vec().into()]));
    let seq = persist_seq(&actions).unwrap();
    let _ = node.step(now, Event::Persisted { seq });
    let outcome = transfer(&mut node, now, 2);
    assert_eq!(outcome, vec![TransferOutcome::Started { to: 2 }]);
    let actions = node.step(now, Event::Propose(vec![b"y".to_vec().into()]));
    assert!(actions.iter().any(|a| matches!(
        a,
        Action::ProposalOutcome(ProposalOutcome::Refused {
            count: 1,
            reason: ProposalRefusal::TransferInProgress
        })
    )));
    let actions = node.step(
        now,
        Event::ChangeMembership(MembershipChange::AddLearner {
            id: 4,
            data: Vec::new().into(),
        }),
    );
    assert!(actions.iter().any(|a| matches!(
        a,
        Action::MembershipOutcome(MembershipOutcome::Refused(
            MembershipError::TransferInProgress
        ))
    )));
    // Node 2 lacks entry 1: no TimeoutNow until it has it.
    assert!(!sends(&actions)
        .iter()
        .any(|m| m.body == MessageBody::TimeoutNow));
    let ack = MessageBody::AppendResponse {
        outcome: AppendOutcome::Accepted { match_index: 1 },
    };
    let actions = node.step(now + 1, msg(2, 1, 1, ack));
    let timeout_now: Vec<_> = sends(&actions)
        .into_iter()
        .filter(|m| m.body == MessageBody::TimeoutNow)
        .collect();
    assert_eq!(timeout_now.len(), 1);
    assert_eq!(timeout_now[0].to, 2);
}

#[test]
fn a_transfer_that_does_not_complete_is_aborted_after_an_election_timeout() {
    let (mut node, now) = leader(config(1));
    let _ = transfer(&mut node, now, 3);
    let mut t = now;
    let mut aborted = false;
    while !aborted {
        t = node.next_deadline();
        assert!(t <= now + node.config().election_timeout_max, "no abort");
        aborted = node.step(t, Event::Tick).iter().any(|a| {
            matches!(
                a,
                Action::TransferOutcome(TransferOutcome::Aborted { to: 3 })
            )
        });
    }
    assert_eq!(t, now + node.config().election_timeout_max);
    assert!(node.is_leader());
    let actions = node.step(t, Event::Propose(vec![b"z".to_vec().into()]));
    assert!(actions
        .iter()
        .any(|a| matches!(a, Action::ProposalOutcome(ProposalOutcome::Accepted { .. }))));
}

#[test]
fn the_target_campaigns_at_once_and_voters_grant_it_despite_a_recent_leader() {
    let mut target = Node::new(config(2), 0).unwrap();
    let actions = target.step(5, msg(1, 2, 1, MessageBody::TimeoutNow));
    assert_eq!(target.role(), Role::Candidate);
    assert_eq!(target.term(), 2);
    let seq = persist_seq(&actions).unwrap();
    let actions = target.step(5, Event::Persisted { seq });
    let requests = sends(&actions);
    assert_eq!(requests.len(), 2);
    assert!(requests
        .iter()
        .all(|m| matches!(m.body, MessageBody::VoteRequest { transfer: true, .. })));
    // A voter that just heard from the leader (check-quorum on) grants it, yet ignores the
    // same request without the transfer flag.
    let mut voter = Node::new(config(3), 0).unwrap();
    let heartbeat = MessageBody::AppendRequest {
        prev_log_index: 0,
        prev_log_term: 0,
        entries: vec![],
        leader_commit: 0,
    };
    let _ = voter.step(4, msg(1, 3, 1, heartbeat));
    let plain = MessageBody::VoteRequest {
        last_log_index: 0,
        last_log_term: 0,
        transfer: false,
    };
    let _ = voter.step(6, msg(2, 3, 2, plain));
    assert_eq!(voter.term(), 1);
    let to_voter = requests.iter().find(|m| m.to == 3).unwrap();
    let actions = voter.step(6, Event::Message((*to_voter).clone()));
    assert_eq!(voter.term(), 2);
    let seq = persist_seq(&actions).unwrap();
    let actions = voter.step(6, Event::Persisted { seq });
    assert!(sends(&actions)
        .iter()
        .any(|m| m.to == 2 && m.body == MessageBody::VoteResponse { granted: true }));
}

#[test]
fn only_voters_confirm_a_read_and_followers_reads_are_bounded() {
    let (mut node, now) = leader(config(1));
    let actions = node.step(now, read(1));
    let round = rounds(&actions)[0];
    // Node 9 is no member: its answer does not make a quorum.
    let actions = node.step(now, msg(9, 1, 1, MessageBody::LeaderConfirmed { round }));
    assert!(ready(&actions).is_empty());
    assert_eq!(node.stats().unknown_sender, 1);
    // A flood of followers' reads: past the bound, they are refused at once.
    let mut refused_now = 0;
    for id in 0..70_000u64 {
        let actions = node.step(now, msg(2, 1, 1, MessageBody::ReadIndexRequest { id }));
        refused_now += sends(&actions)
            .iter()
            .filter(|m| matches!(m.body, MessageBody::ReadIndexResponse { index: None, .. }))
            .count();
    }
    assert_eq!(refused_now, 70_000 - (1 << 16));
}
