//! Snapshots and compaction in the core: taking one, installing one from the leader (in
//! chunks, keeping a matching suffix, never moving the applied index back), recovering from
//! snapshot + log tail, and memory bounded by the snapshot interval over a long run.

use raft_proto::sim::{scenarios, Sim, SimOptions};
use raft_proto::{
    Action, AppendOutcome, Config, DurableState, Entry, Event, HardState, Membership, Message,
    MessageBody, Node, Payload, Snapshot, SnapshotMeta,
};

fn follower(log_terms: &[u64], term: u64) -> Node {
    let durable = DurableState {
        hard_state: HardState {
            term,
            voted_for: None,
        },
        snapshot: None,
        log: log_terms
            .iter()
            .map(|&t| Entry::command(t, vec![t as u8]))
            .collect(),
    };
    Node::restore(Config::new(2, vec![1, 2, 3]), durable, 0).unwrap()
}

fn chunk(term: u64, meta: SnapshotMeta, offset: u64, data: &[u8], done: bool) -> Event {
    chunk_from(1, term, meta, offset, data, done)
}

fn chunk_from(
    from: u64,
    term: u64,
    meta: SnapshotMeta,
    offset: u64,
    data: &[u8],
    done: bool,
) -> Event {
    Event::Message(Message {
        from,
        to: 2,
        term,
        body: MessageBody::SnapshotChunk {
            meta,
            membership: Membership::new([1, 2, 3]),
            offset,
            data: Payload::from(data),
            done,
        },
    })
}

/// Steps, acknowledging every persist, and returns all actions.
fn step_durably(node: &mut Node, event: Event) -> Vec<Action> {
    step_durably_at(node, 1, event)
}

fn sent(actions: &[Action]) -> Vec<MessageBody> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Send(m) => Some(m.body.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn an_installed_snapshot_keeps_the_matching_suffix() {
    let mut node = follower(&[1, 1, 1, 1, 1], 1);
    let meta = SnapshotMeta {
        last_index: 3,
        last_term: 1,
    };
    let actions = step_durably(&mut node, chunk(1, meta, 0, b"state", true));
    assert_eq!(node.snapshot_index(), 3);
    assert_eq!(
        node.last_log_index(),
        5,
        "entries 4 and 5 match and are kept"
    );
    assert_eq!(node.applied_index(), 3);
    assert!(actions.iter().any(
        |a| matches!(a, Action::RestoreSnapshot(s) if s.meta == meta && &s.data[..] == b"state")
    ));
    let persist = actions.iter().find_map(|a| match a {
        Action::Persist(p) => Some(p.clone()),
        _ => None,
    });
    let persist = persist.expect("the snapshot is persisted");
    assert_eq!(persist.truncate_from, None);
    assert!(sent(&actions).contains(&MessageBody::AppendResponse {
        outcome: AppendOutcome::Accepted { match_index: 3 }
    }));
}

#[test]
fn an_installed_snapshot_replaces_a_conflicting_log_atomically() {
    let mut node = follower(&[1, 1, 2], 3);
    let meta = SnapshotMeta {
        last_index: 3,
        last_term: 3,
    };
    let actions = step_durably(&mut node, chunk(3, meta, 0, b"s", true));
    assert_eq!((node.snapshot_index(), node.last_log_index()), (3, 3));
    assert_eq!(node.log_term(3), Some(3));
    let persists: Vec<_> = actions
        .iter()
        .filter_map(|a| match a {
            Action::Persist(p) => Some(p.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(
        persists.len(),
        1,
        "truncation and snapshot in one atomic write"
    );
    assert_eq!(persists[0].truncate_from, Some(1));
    // Storage semantics: the stored state is the snapshot alone.
    let mut stored = DurableState {
        log: [1, 1, 2]
            .iter()
            .map(|&t| Entry::command(t, vec![]))
            .collect(),
        ..DurableState::default()
    };
    persists[0].apply_to(&mut stored);
    assert!(stored.log.is_empty());
    assert_eq!(stored.last_index(), 3);
}

#[test]
fn chunks_are_assembled_in_order_whatever_arrives() {
    let mut node = follower(&[], 1);
    let meta = SnapshotMeta {
        last_index: 9,
        last_term: 1,
    };
    let ack = |actions: &[Action]| {
        sent(actions).into_iter().find_map(|b| match b {
            MessageBody::SnapshotAck { received, .. } => Some(received),
            _ => None,
        })
    };
    // A chunk from the middle first: nothing is held yet.
    assert_eq!(
        ack(&step_durably(&mut node, chunk(1, meta, 4, b"5678", false))),
        Some(0)
    );
    assert_eq!(
        ack(&step_durably(&mut node, chunk(1, meta, 0, b"1234", false))),
        Some(4)
    );
    // A duplicate of the first chunk restarts nothing.
    assert_eq!(
        ack(&step_durably(&mut node, chunk(1, meta, 0, b"1234", false))),
        Some(4)
    );
    assert_eq!(
        ack(&step_durably(&mut node, chunk(1, meta, 4, b"5678", false))),
        Some(8)
    );
    let actions = step_durably(&mut node, chunk(1, meta, 8, b"9", true));
    assert!(actions
        .iter()
        .any(|a| matches!(a, Action::RestoreSnapshot(s) if &s.data[..] == b"123456789")));
    assert_eq!(node.applied_index(), 9);
    // A retried transfer of the same snapshot after installing is answered, not re-installed.
    let again = step_durably(&mut node, chunk(1, meta, 0, b"1234", false));
    assert!(!again
        .iter()
        .any(|a| matches!(a, Action::RestoreSnapshot(_))));
    assert!(sent(&again).contains(&MessageBody::AppendResponse {
        outcome: AppendOutcome::Accepted { match_index: 9 }
    }));
}

/// Two leaders' snapshots of the same index may differ byte for byte (a non-canonical
/// serialization): a transfer from leader 1 in term 1 must never be continued by leader 3's
/// chunks in term 2, even for the same `(last_index, last_term)`.
#[test]
fn a_transfer_is_never_continued_by_another_leader() {
    let mut node = follower(&[], 1);
    let meta = SnapshotMeta {
        last_index: 5,
        last_term: 1,
    };
    let ack_to = |actions: &[Action], to: u64| {
        actions.iter().find_map(|a| match a {
            Action::Send(Message {
                to: t,
                body: MessageBody::SnapshotAck { received, .. },
                ..
            }) if *t == to => Some(*received),
            _ => None,
        })
    };
    let first = step_durably(&mut node, chunk_from(1, 1, meta, 0, b"AAAA", false));
    assert_eq!(ack_to(&first, 1), Some(4));
    // Leader 3 of term 2 sends its last chunk while its first one is lost or late.
    let spliced = step_durably(&mut node, chunk_from(3, 2, meta, 4, b"bbbb", true));
    assert!(
        !spliced
            .iter()
            .any(|a| matches!(a, Action::RestoreSnapshot(_))),
        "a snapshot spliced from two leaders was installed"
    );
    assert_eq!(node.snapshot_index(), 0);
    assert_eq!(
        ack_to(&spliced, 3),
        Some(0),
        "leader 3 must be told to start over, not that 4 bytes are held"
    );
    // Leader 3's own transfer from the start installs its bytes only.
    let actions = step_durably(&mut node, chunk_from(3, 2, meta, 0, b"aaaa", false));
    assert_eq!(ack_to(&actions, 3), Some(4));
    let actions = step_durably(&mut node, chunk_from(3, 2, meta, 4, b"bbbb", true));
    assert!(actions
        .iter()
        .any(|a| matches!(a, Action::RestoreSnapshot(s) if &s.data[..] == b"aaaabbbb")));
    assert_eq!(node.snapshot_index(), 5);
}

#[test]
fn a_snapshot_never_moves_the_applied_index_back() {
    // The follower has committed and applied up to 4.
    let mut node = follower(&[], 1);
    let entries: Vec<Entry> = (0..4).map(|i| Entry::command(1, vec![i])).collect();
    let append = Event::Message(Message {
        from: 1,
        to: 2,
        term: 1,
        body: MessageBody::AppendRequest {
            prev_log_index: 0,
            prev_log_term: 0,
            entries,
            leader_commit: 4,
        },
    });
    let _ = step_durably(&mut node, append);
    assert_eq!(node.applied_index(), 4);
    let meta = SnapshotMeta {
        last_index: 2,
        last_term: 1,
    };
    let actions = step_durably(&mut node, chunk(1, meta, 0, b"old", true));
    assert!(!actions
        .iter()
        .any(|a| matches!(a, Action::RestoreSnapshot(_))));
    assert_eq!(node.applied_index(), 4);
    assert_eq!(node.last_log_index(), 4);
}

#[test]
fn a_node_recovers_from_snapshot_and_log_tail() {
    let durable = DurableState {
        hard_state: HardState {
            term: 2,
            voted_for: Some(1),
        },
        snapshot: Some(Snapshot {
            membership: Membership::new([1, 2, 3]),
            meta: SnapshotMeta {
                last_index: 10,
                last_term: 1,
            },
            data: Payload::from(&b"app"[..]),
        }),
        log: vec![Entry::command(2, vec![11]), Entry::command(2, vec![12])],
    };
    let node = Node::restore(Config::new(2, vec![1, 2, 3]), durable, 0).unwrap();
    assert_eq!(node.snapshot_index(), 10);
    assert_eq!((node.commit_index(), node.applied_index()), (10, 10));
    assert_eq!(node.last_log_index(), 12);
    assert_eq!(node.log_term(10), Some(1));
    assert_eq!(node.log_term(9), None);
}

#[test]
fn taking_a_snapshot_compacts_the_log_and_persists_it() {
    let mut node = Node::new(Config::new(1, vec![1]), 0).unwrap();
    let now = node.next_deadline();
    // A single voter campaigns, and leads once its vote is durable.
    let actions = node.step(now, Event::Tick);
    for action in actions {
        if let Action::Persist(p) = action {
            let _ = node.step(now, Event::Persisted { seq: p.seq });
        }
    }
    assert!(node.is_leader());
    let commands: Vec<Payload> = (0..5u8).map(|i| Payload::from(&[i][..])).collect();
    let _ = step_durably(&mut node, Event::Propose(commands));
    assert_eq!(node.applied_index(), 5);
    let actions = step_durably(
        &mut node,
        Event::SnapshotTaken {
            last_index: 3,
            data: Payload::from(&b"upto3"[..]),
        },
    );
    assert_eq!(node.snapshot_index(), 3);
    assert_eq!(node.first_log_index(), 4);
    assert!(actions.iter().any(|a| matches!(
        a,
        Action::Persist(p) if p.snapshot.as_ref().is_some_and(|s| s.meta.last_index == 3)
    )));
    // Stale or premature snapshots are ignored.
    let stale = Event::SnapshotTaken {
        last_index: 2,
        data: Payload::from(&b"x"[..]),
    };
    assert!(node.step(now, stale).is_empty());
    let premature = Event::SnapshotTaken {
        last_index: 9,
        data: Payload::from(&b"x"[..]),
    };
    assert!(node.step(now, premature).is_empty());
}

#[test]
fn memory_is_bounded_by_the_snapshot_interval_not_by_history() {
    let mut options = SimOptions::new(3, 5);
    options.snapshot_interval = Some(10);
    let mut sim = Sim::new(options);
    let entries = 2000;
    for i in 0..entries {
        sim.one(scenarios::command(i), 3, true).expect("agreement");
    }
    for s in 0..3 {
        let node = sim.node(s).expect("running");
        let retained = node.last_log_index() + 1 - node.first_log_index();
        // At most one interval since the last snapshot, plus the catch-up entries a leader
        // keeps (5 in the simulator), plus what is not applied yet.
        assert!(
            retained <= 10 + 5 + 2,
            "server {s} retains {retained} entries after {entries} commits"
        );
        assert!(node.last_log_index() >= entries);
        assert!(
            sim.persisted_size(s) < 300,
            "persisted state {}",
            sim.persisted_size(s)
        );
    }
}

/// A follower that goes silent during a snapshot transfer is probed with one chunk per
/// heartbeat round, not sent the whole window again every round.
#[test]
fn a_silent_snapshot_follower_gets_one_chunk_per_heartbeat() {
    use raft_proto::sim::{MS, SECOND};
    let mut options = SimOptions::new(3, 7);
    options.snapshot_interval = Some(10);
    options.snapshot_chunk = 16;
    let mut sim = Sim::new(options);
    let leader = sim.check_one_leader().unwrap();
    let lagging = (leader + 1) % 3;
    sim.disconnect(lagging);
    for i in 0..60u8 {
        sim.one(vec![i; 64], 2, true).unwrap();
    }
    // Reconnect until the transfer starts, then cut the follower off again.
    sim.connect(lagging);
    let before = sim.counters().snapshot_chunks;
    for _ in 0..30_000 {
        if sim.counters().snapshot_chunks > before {
            break;
        }
        sim.sleep(MS / 10).unwrap();
    }
    assert!(
        sim.counters().snapshot_chunks > before,
        "no transfer started"
    );
    sim.disconnect(lagging);
    sim.sleep(200 * MS).unwrap();
    let start = sim.counters().snapshot_chunks;
    sim.sleep(2 * SECOND).unwrap();
    let sent = sim.counters().snapshot_chunks - start;
    // 100 ms heartbeats: about 20 rounds in 2 s, one chunk each (a window is 8 chunks).
    assert!(
        (15..=25).contains(&sent),
        "{sent} chunks sent to a silent follower in 20 heartbeat rounds"
    );
    // When it comes back, the transfer completes.
    sim.connect(lagging);
    sim.one(vec![99], 3, true).unwrap();
}

/// On a network that reorders, drops and duplicates, a snapshot sent in many small chunks
/// reaches a lagging follower without multiplying the chunks in flight: every chunk that
/// overtakes another makes the follower report a gap, and answering each report (or each
/// overtaken, stale answer) with a whole window again once turned one transfer into a storm of
/// millions of messages.
#[test]
fn reordering_does_not_multiply_snapshot_chunks() {
    use raft_proto::sim::{MS, SECOND};
    const ENTRIES: usize = 120;
    for seed in 0..4 {
        let mut options = SimOptions::new(3, seed);
        options.snapshot_interval = Some(10);
        options.snapshot_chunk = 7;
        let mut sim = Sim::new(options);
        let leader = sim.check_one_leader().unwrap();
        let lagging = (leader + 1) % 3;
        sim.disconnect(lagging);
        for i in 0..ENTRIES {
            sim.one(vec![i as u8; 64], 2, true).unwrap();
        }
        let target = sim.applied_len(leader);
        sim.set_reliable(false);
        sim.set_long_reordering(true);
        let before = sim.counters().snapshot_chunks;
        sim.connect(lagging);
        sim.sleep(3 * SECOND).unwrap();
        sim.set_long_reordering(false);
        for _ in 0..6_000 {
            if sim.applied_len(lagging) >= target {
                break;
            }
            sim.sleep(10 * MS).unwrap();
        }
        let sent = sim.counters().snapshot_chunks - before;
        assert!(
            sim.applied_len(lagging) >= target,
            "seed {seed}: never caught up"
        );
        // The snapshot is about 120 × 64 bytes, 1,100 chunks of 7 bytes. A network that
        // reorders every chunk costs several passes over it (about 9,500 chunks here, in some
        // 14 s); the storm sent 820,000.
        assert!(
            sent < 40_000,
            "seed {seed}: {sent} snapshot chunks sent to catch up one follower"
        );
    }
}

/// A follower never buffers more of an incoming snapshot than `max_snapshot_bytes`: the chunk
/// that would go past it drops the transfer, and every later chunk of that transfer is
/// dropped too, unanswered, so that the leader does not restart it at full speed; within the
/// limit the same chunks install.
#[test]
fn an_incoming_snapshot_is_bounded_by_max_snapshot_bytes() {
    let meta = SnapshotMeta {
        last_index: 9,
        last_term: 1,
    };
    let bounded = |limit: u64| {
        let durable = DurableState {
            hard_state: HardState {
                term: 1,
                voted_for: None,
            },
            snapshot: None,
            log: Vec::new(),
        };
        let mut config = Config::new(2, vec![1, 2, 3]);
        config.max_snapshot_bytes = limit;
        Node::restore(config, durable, 0).unwrap()
    };
    let mut node = bounded(10);
    step_durably(&mut node, chunk(1, meta, 0, b"12345678", false));
    // 8 + 4 > 10: dropped, unanswered, and the 8 bytes held are let go.
    let actions = step_durably(&mut node, chunk(1, meta, 8, b"9abc", false));
    assert!(sent(&actions).is_empty(), "{actions:?}");
    assert_eq!(node.stats().snapshot_too_large, 1);
    // Every later chunk of that transfer, from the start or not, is dropped unanswered.
    for _ in 0..100 {
        for (offset, data) in [(0, &b"12345678"[..]), (8, b"9abc"), (12, b"d")] {
            let actions = step_durably(&mut node, chunk(1, meta, offset, data, offset == 12));
            assert!(sent(&actions).is_empty(), "{actions:?}");
        }
    }
    assert_eq!(node.stats().snapshot_too_large, 301);
    assert_eq!(node.applied_index(), 0);
    // A later snapshot is a new transfer; a first chunk alone larger than the limit drops it.
    let later = SnapshotMeta {
        last_index: 12,
        last_term: 1,
    };
    step_durably(&mut node, chunk(1, later, 0, b"0123456789a", false));
    assert_eq!(node.stats().snapshot_too_large, 302);
    assert_eq!(node.applied_index(), 0);

    let mut node = bounded(13);
    step_durably(&mut node, chunk(1, meta, 0, b"12345678", false));
    step_durably(&mut node, chunk(1, meta, 8, b"9abc", false));
    let actions = step_durably(&mut node, chunk(1, meta, 12, b"d", true));
    assert!(actions
        .iter()
        .any(|a| matches!(a, Action::RestoreSnapshot(s) if &s.data[..] == b"123456789abcd")));
    assert_eq!(node.stats().snapshot_too_large, 0);
}

/// Streamed snapshots, follower side: each chunk goes to staging, ahead of the persist that
/// installs the snapshot, which (like the restore) names it without bytes.
#[test]
fn a_streamed_snapshot_is_staged_chunk_by_chunk_and_installed_by_name() {
    let mut config = Config::new(2, vec![1, 2, 3]);
    config.stream_snapshots = true;
    let mut node = Node::new(config, 0).unwrap();
    let meta = SnapshotMeta {
        last_index: 9,
        last_term: 1,
    };
    let staged = |actions: &[Action]| -> Vec<(u64, Vec<u8>)> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::StageSnapshotChunk {
                    meta: m,
                    offset,
                    data,
                } if *m == meta => Some((*offset, data.to_vec())),
                _ => None,
            })
            .collect()
    };
    let first = step_durably(&mut node, chunk(1, meta, 0, b"1234", false));
    assert_eq!(staged(&first), vec![(0, b"1234".to_vec())]);
    // A gap is not staged.
    let gap = step_durably(&mut node, chunk(1, meta, 8, b"9", true));
    assert!(staged(&gap).is_empty());
    let second = step_durably(&mut node, chunk(1, meta, 4, b"5678", false));
    assert_eq!(staged(&second), vec![(4, b"5678".to_vec())]);
    let last = node.step(1, chunk(1, meta, 8, b"9", true));
    let stage_at = last
        .iter()
        .position(|a| matches!(a, Action::StageSnapshotChunk { offset: 8, .. }))
        .expect("the last chunk is staged");
    let install_at = last
        .iter()
        .position(|a| matches!(a, Action::Persist(p) if p.snapshot.is_some()))
        .expect("the snapshot is installed");
    assert!(stage_at < install_at, "staged after the install: {last:?}");
    assert!(last.iter().any(|a| matches!(
        a,
        Action::Persist(p) if p.snapshot.as_ref().is_some_and(|s| s.meta == meta && s.data.is_empty())
    )));
    assert!(last
        .iter()
        .any(|a| matches!(a, Action::RestoreSnapshot(s) if s.meta == meta && s.data.is_empty())));
    assert_eq!(node.applied_index(), 9);
}

/// Streamed snapshots, leader side: the core keeps no bytes of a snapshot it is told of, and
/// asks for a lagging follower's chunks by offset, a window at a time.
#[test]
fn a_streamed_snapshot_is_sent_as_chunk_requests() {
    let mut config = Config::new(1, vec![1, 2, 3]);
    config.stream_snapshots = true;
    config.max_snapshot_chunk = 100;
    config.max_inflight_appends = 3;
    config.snapshot_catchup_entries = 0;
    config.pre_vote = false;
    let mut node = Node::new(config, 0).unwrap();
    let now = node.next_deadline();
    let _ = step_durably_at(&mut node, now, Event::Tick);
    let term = node.term();
    let from_2 = |body| {
        Event::Message(Message {
            from: 2,
            to: 1,
            term,
            body,
        })
    };
    let _ = step_durably_at(
        &mut node,
        now,
        from_2(MessageBody::VoteResponse { granted: true }),
    );
    assert!(node.is_leader());
    // Node 2 keeps up; node 3 is silent.
    let _ = step_durably_at(
        &mut node,
        now,
        Event::Propose(vec![Payload::from(&b"a"[..])]),
    );
    let accepted = MessageBody::AppendResponse {
        outcome: AppendOutcome::Accepted { match_index: 1 },
    };
    let _ = step_durably_at(&mut node, now, from_2(accepted));
    assert_eq!(node.applied_index(), 1);
    let taken = step_durably_at(
        &mut node,
        now,
        Event::SnapshotTaken {
            last_index: 1,
            data: Payload::from(&b"ignored: the bytes are stored"[..]),
        },
    );
    assert!(taken.iter().any(|a| matches!(
        a,
        Action::Persist(p) if p.snapshot.as_ref().is_some_and(|s| s.data.is_empty())
    )));
    // Node 3 never answered: the entry it lacks is in the snapshot now, so the same step
    // starts sending it the snapshot.
    let out = taken;
    let offsets: Vec<u64> = out
        .iter()
        .filter_map(|a| match a {
            Action::SendSnapshotChunk(r) if r.to == 3 && r.meta.last_index == 1 => {
                assert_eq!(r.max_len, 100);
                Some(r.offset)
            }
            _ => None,
        })
        .collect();
    assert_eq!(
        offsets,
        vec![0, 100, 200],
        "a window of three chunk requests"
    );
    assert!(!out.iter().any(|a| matches!(
        a,
        Action::Send(m) if matches!(m.body, MessageBody::SnapshotChunk { .. })
    )));
    // A newer snapshot does not disturb the transfer under way (the embedding keeps the file
    // it reads open)...
    let _ = step_durably_at(
        &mut node,
        now,
        Event::Propose(vec![Payload::from(&b"b"[..])]),
    );
    let accepted = MessageBody::AppendResponse {
        outcome: AppendOutcome::Accepted { match_index: 2 },
    };
    let _ = step_durably_at(&mut node, now, from_2(accepted));
    let newer = step_durably_at(
        &mut node,
        now,
        Event::SnapshotTaken {
            last_index: 2,
            data: Payload::from(&[][..]),
        },
    );
    assert_eq!(node.snapshot_index(), 2);
    assert!(!newer
        .iter()
        .any(|a| matches!(a, Action::SendSnapshotChunk(_))));
    // ... but once the old one cannot be read, the transfer starts over with the new one.
    let restarted = step_durably_at(&mut node, now, Event::SnapshotUnavailable { last_index: 1 });
    let requests: Vec<(u64, u64)> = restarted
        .iter()
        .filter_map(|a| match a {
            Action::SendSnapshotChunk(r) if r.to == 3 => Some((r.meta.last_index, r.offset)),
            _ => None,
        })
        .collect();
    assert_eq!(requests, vec![(2, 0), (2, 100), (2, 200)]);
    // A follower that claims to hold more than any snapshot may be is not believed (and
    // nothing overflows).
    for received in [u64::MAX - 5, u64::MAX] {
        let lying = Event::Message(Message {
            from: 3,
            to: 1,
            term,
            body: MessageBody::SnapshotAck {
                last_index: 2,
                received,
            },
        });
        let out = step_durably_at(&mut node, now, lying);
        assert!(!out
            .iter()
            .any(|a| matches!(a, Action::SendSnapshotChunk(r) if r.offset > 1 << 40)));
    }
}

/// Steps at `now`, acknowledging every persist, and returns all actions.
fn step_durably_at(node: &mut Node, now: u64, event: Event) -> Vec<Action> {
    let mut all = node.step(now, event);
    let seqs: Vec<u64> = all
        .iter()
        .filter_map(|a| match a {
            Action::Persist(p) => Some(p.seq),
            _ => None,
        })
        .collect();
    for seq in seqs {
        all.extend(node.step(now, Event::Persisted { seq }));
    }
    all
}
