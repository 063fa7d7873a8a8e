//! Helpers shared by the tests that drive one core step by step.

use raft_proto::{Action, Event, Message, MessageBody};

/// A message from `from` to `to` in `term`, as an input event.
pub(crate) fn msg(from: u64, to: u64, term: u64, body: MessageBody) -> Event {
    Event::Message(Message {
        from,
        to,
        term,
        body,
    })
}

/// The messages among `actions`, in order.
pub(crate) fn sends(actions: &[Action]) -> Vec<&Message> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Send(m) => Some(m),
            _ => None,
        })
        .collect()
}

/// The sequence number of the first persist among `actions`.
pub(crate) fn persist_seq(actions: &[Action]) -> Option<u64> {
    actions.iter().find_map(|a| match a {
        Action::Persist(p) => Some(p.seq),
        _ => None,
    })
}
