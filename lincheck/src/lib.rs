//! A linearizability checker for key-value histories.
//!
//! A history is what clients observed: for each operation, when it was invoked and when it
//! returned (in any one clock shared by all clients, or a virtual one), what it asked and what
//! it answered, or that its outcome is unknown (it timed out, its connection was lost). The
//! history is **linearizable** when every operation can be given one instant between its
//! invocation and its return such that, taken in that order, the answers are those of a single
//! key-value map (Herlihy and Wing).
//!
//! Keys are independent, so the history is checked key by key (Porcupine's partitioning). For
//! each key the checker runs the Wing–Gong search with Lowe's memoization: it walks the
//! invocations and returns in time order, linearizes an operation whose invocation it meets if
//! the register allows its answer, backtracks when it meets the return of an operation it has
//! not linearized, and never explores the same (set of linearized operations, register value)
//! twice. An operation whose outcome is unknown may take effect at any instant after its
//! invocation, or never: a read of unknown outcome constrains nothing and is dropped, a write of
//! unknown outcome never returns (and is dropped when no read returned its value: taking
//! effect never is then as good as any other choice).
//!
//! The search is exponential in the worst case, so it has a budget of steps per key: a key it
//! cannot decide within the budget makes the verdict [`Verdict::Undecided`], never a pass.
//!
//! ```
//! use lincheck::{check, Budget, Input, Operation, Output, Verdict};
//!
//! // Client 1 writes 1 to key "x"; client 2 reads it afterwards but sees nothing: stale.
//! let history = vec![
//!     Operation::new(1, "x", Input::Put(1), Some(Output::Done), 0, 10),
//!     Operation::new(2, "x", Input::Get, Some(Output::Value(None)), 20, 30),
//! ];
//! let Verdict::Violation(violation) = check(&history, Budget::default()) else {
//!     panic!("a stale read must be found");
//! };
//! assert_eq!(violation.key, "x");
//! assert_eq!(violation.stuck.client, 2);
//! ```

#![forbid(unsafe_code)]

use std::collections::{BTreeMap, HashSet};
use std::fmt::Debug;
use std::hash::Hash;

/// What an operation asks of one key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Input<V> {
    /// Read the key's value.
    Get,
    /// Set the key's value.
    Put(V),
    /// Remove the key.
    Delete,
}

/// What an operation answered.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Output<V> {
    /// A read's answer: the value, or `None` when the key was absent.
    Value(Option<V>),
    /// A write's acknowledgement.
    Done,
}

/// One operation of a history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Operation<K, V> {
    /// Who issued it (a client issues one operation at a time).
    pub client: u64,
    /// The key it is about.
    pub key: K,
    /// What it asked.
    pub input: Input<V>,
    /// What it answered, or `None` when the outcome is unknown.
    pub output: Option<Output<V>>,
    /// When it was invoked.
    pub call: u64,
    /// When it returned (for an unknown outcome: when the client gave up; not used).
    pub ret: u64,
}

impl<K, V> Operation<K, V> {
    /// An operation of `client` on `key`, invoked at `call`, returned at `ret`.
    pub fn new(
        client: u64,
        key: K,
        input: Input<V>,
        output: Option<Output<V>>,
        call: u64,
        ret: u64,
    ) -> Self {
        Self {
            client,
            key,
            input,
            output,
            call,
            ret,
        }
    }
}

/// How much search the checker may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    /// Search steps per key (one step: looking at one invocation or return).
    pub steps_per_key: u64,
}

impl Default for Budget {
    /// Ten million steps per key.
    fn default() -> Self {
        Self {
            steps_per_key: 10_000_000,
        }
    }
}

/// Why a key's history is not linearizable: the longest linearization the search found, and
/// the operation that had returned before it could be placed after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation<K, V> {
    /// The key.
    pub key: K,
    /// Operations of the key in an order that explains all their answers.
    pub linearized: Vec<Operation<K, V>>,
    /// An operation that returned while it could not be linearized after those, with any of
    /// the operations still pending.
    pub stuck: Operation<K, V>,
    /// The operations pending at that moment (invoked before `stuck` returned, not
    /// linearized): none of them, placed first, makes room for `stuck`.
    pub pending: Vec<Operation<K, V>>,
}

/// The checker's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Verdict<K, V> {
    /// Every key's history is linearizable.
    Linearizable,
    /// A key's history is not.
    Violation(Box<Violation<K, V>>),
    /// The search for this key ran out of budget: nothing is concluded.
    Undecided {
        /// The key.
        key: K,
    },
}

/// Checks `history` key by key; the first violation (or undecided key) is the verdict.
pub fn check<K, V>(history: &[Operation<K, V>], budget: Budget) -> Verdict<K, V>
where
    K: Ord + Clone + Debug,
    V: Eq + Hash + Clone + Debug,
{
    // The values some read returned, per key.
    let mut observed: BTreeMap<&K, HashSet<&V>> = BTreeMap::new();
    for op in history {
        if let Some(Output::Value(Some(v))) = &op.output {
            observed.entry(&op.key).or_default().insert(v);
        }
    }
    let mut by_key: BTreeMap<&K, Vec<&Operation<K, V>>> = BTreeMap::new();
    for op in history {
        match (&op.input, &op.output) {
            // A read whose answer is unknown constrains nothing.
            (Input::Get, None) => continue,
            // A write of unknown outcome whose value no read returned may as well never
            // have happened (the outcome it is allowed): dropping it changes no verdict, and
            // spares the search a branch at every step from its invocation on.
            (Input::Put(v), None)
                if !observed.get(&op.key).is_some_and(|seen| seen.contains(v)) =>
            {
                continue
            }
            _ => {}
        }
        by_key.entry(&op.key).or_default().push(op);
    }
    let mut undecided = None;
    for (key, ops) in by_key {
        match check_key(&ops, budget) {
            KeyVerdict::Linearizable => {}
            KeyVerdict::Undecided => {
                undecided.get_or_insert_with(|| key.clone());
            }
            KeyVerdict::Violation {
                linearized,
                stuck,
                pending,
            } => {
                let take = |i: usize| ops[i].clone();
                return Verdict::Violation(Box::new(Violation {
                    key: key.clone(),
                    linearized: linearized.into_iter().map(take).collect(),
                    stuck: take(stuck),
                    pending: pending.into_iter().map(take).collect(),
                }));
            }
        }
    }
    match undecided {
        Some(key) => Verdict::Undecided { key },
        None => Verdict::Linearizable,
    }
}

enum KeyVerdict {
    Linearizable,
    Undecided,
    Violation {
        linearized: Vec<usize>,
        stuck: usize,
        pending: Vec<usize>,
    },
}

/// One invocation or return in the time-ordered list the search walks.
#[derive(Clone, Copy)]
struct Event {
    op: usize,
    call: bool,
    /// The index of the operation's other event.
    other: usize,
}

/// The register after `op`, if `op`'s answer is possible in `state`.
fn step<K, V: Eq + Clone>(state: &Option<V>, op: &Operation<K, V>) -> Option<Option<V>> {
    match (&op.input, &op.output) {
        (Input::Get, Some(Output::Value(seen))) => (seen == state).then(|| state.clone()),
        (Input::Put(value), Some(Output::Done) | None) => Some(Some(value.clone())),
        (Input::Delete, Some(Output::Done) | None) => Some(None),
        _ => None,
    }
}

/// The Wing–Gong–Lowe search over one key's operations.
fn check_key<K, V: Eq + Hash + Clone>(ops: &[&Operation<K, V>], budget: Budget) -> KeyVerdict {
    let n = ops.len();
    // Invocations and returns in time order; at equal times invocations first (operations that
    // touch at an instant overlap). An unknown outcome never returns.
    let mut order: Vec<(u64, bool, usize)> = Vec::with_capacity(2 * n);
    for (i, op) in ops.iter().enumerate() {
        order.push((op.call, false, i));
        let ret = if op.output.is_some() {
            op.ret
        } else {
            u64::MAX
        };
        order.push((ret.max(op.call), true, i));
    }
    order.sort_unstable_by_key(|&(time, is_return, i)| (time, is_return, i));
    let mut events: Vec<Event> = order
        .iter()
        .map(|&(_, is_return, op)| Event {
            op,
            call: !is_return,
            other: 0,
        })
        .collect();
    let mut position = vec![[0usize; 2]; n];
    for (k, e) in events.iter().enumerate() {
        position[e.op][usize::from(!e.call)] = k;
    }
    for e in &mut events {
        e.other = position[e.op][usize::from(e.call)];
    }
    // A doubly linked list over the events, with a sentinel at index `len`.
    let len = events.len();
    if len == 0 {
        return KeyVerdict::Linearizable;
    }
    let head = len;
    let mut next: Vec<usize> = (1..=len + 1).collect();
    let mut prev: Vec<usize> = (0..=len).map(|k| k.wrapping_sub(1)).collect();
    prev[0] = head;
    next[head] = 0;
    prev[head] = len - 1;
    let unlink = |k: usize, next: &mut [usize], prev: &mut [usize]| {
        let (p, q) = (prev[k], next[k]);
        next[p] = q;
        prev[q] = p;
    };
    let relink = |k: usize, next: &mut [usize], prev: &mut [usize]| {
        let (p, q) = (prev[k], next[k]);
        next[p] = k;
        prev[q] = k;
    };

    let words = n.div_ceil(64);
    let mut linearized = vec![0u64; words];
    let mut cache: HashSet<(Vec<u64>, Option<V>)> = HashSet::new();
    let mut state: Option<V> = None;
    let mut stack: Vec<(usize, Option<V>)> = Vec::new();
    // The deepest point the search reached: what it had linearized, and what stopped it.
    let mut best: (usize, Vec<usize>, usize) = (0, Vec::new(), 0);
    let mut entry = next[head];
    let mut steps = 0u64;
    while next[head] != head {
        steps += 1;
        if steps > budget.steps_per_key {
            return KeyVerdict::Undecided;
        }
        let event = events[entry];
        if event.call {
            if let Some(new_state) = step(&state, ops[event.op]) {
                linearized[event.op / 64] |= 1 << (event.op % 64);
                if cache.insert((linearized.clone(), new_state.clone())) {
                    stack.push((entry, state));
                    state = new_state;
                    // Lift the operation out of the list: its return first, then its call.
                    unlink(event.other, &mut next, &mut prev);
                    unlink(entry, &mut next, &mut prev);
                    entry = next[head];
                    continue;
                }
                linearized[event.op / 64] &= !(1 << (event.op % 64));
            }
            entry = next[entry];
        } else {
            // The return of an operation not linearized: this branch is dead.
            if stack.len() >= best.0 {
                best = (
                    stack.len(),
                    stack.iter().map(|&(k, _)| events[k].op).collect(),
                    event.op,
                );
            }
            let Some((call, old_state)) = stack.pop() else {
                let (_, linearized, stuck) = best;
                let stuck_call = ops[stuck].call;
                let stuck_ret = ops[stuck].ret;
                let pending = (0..n)
                    .filter(|i| !linearized.contains(i) && *i != stuck)
                    .filter(|&i| ops[i].call <= stuck_ret && ops[i].ret >= stuck_call)
                    .collect();
                return KeyVerdict::Violation {
                    linearized,
                    stuck,
                    pending,
                };
            };
            let op = events[call].op;
            linearized[op / 64] &= !(1 << (op % 64));
            state = old_state;
            relink(call, &mut next, &mut prev);
            relink(events[call].other, &mut next, &mut prev);
            entry = next[call];
        }
    }
    KeyVerdict::Linearizable
}

/// Histories for tests and benchmarks: what clients of a real (atomic) key-value map would
/// observe, so that they are linearizable by construction.
pub mod generate {
    use super::{Input, Operation, Output};

    /// `clients` clients each run `ops_per_client` operations one after the other on keys
    /// `0..keys` (half writes of fresh values, half reads); every operation takes effect at a
    /// random instant inside its interval, on one map. Deterministic in `seed`.
    pub fn linearizable(
        seed: u64,
        clients: u64,
        ops_per_client: usize,
        keys: u64,
    ) -> Vec<Operation<u64, u64>> {
        let mut rng = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let mut random = |bound: u64| {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng % bound.max(1)
        };
        let mut history = Vec::with_capacity(clients as usize * ops_per_client);
        let mut effects = Vec::with_capacity(history.capacity());
        let mut value = 0u64;
        for client in 0..clients {
            let mut t = random(10);
            for _ in 0..ops_per_client {
                let call = t;
                let ret = call + 1 + random(40);
                let at = call + random(ret - call + 1);
                let key = random(keys);
                let input = if random(2) == 0 {
                    value += 1;
                    Input::Put(value)
                } else {
                    Input::Get
                };
                effects.push((at, history.len()));
                history.push(Operation::new(
                    client,
                    key,
                    input,
                    Some(Output::Done),
                    call,
                    ret,
                ));
                t = ret + 1 + random(10);
            }
        }
        effects.sort_unstable();
        let mut map = std::collections::HashMap::new();
        for (_, i) in effects {
            let op: &mut Operation<u64, u64> = &mut history[i];
            match op.input {
                Input::Put(v) => {
                    map.insert(op.key, v);
                }
                _ => op.output = Some(Output::Value(map.get(&op.key).copied())),
            }
        }
        history
    }

    /// A read by `client`, after every operation of `history`, that returns the first value
    /// ever written to a key written more than once: a stale read, so `history` plus it is
    /// not linearizable. `None` if no key was written twice.
    pub fn stale_read(history: &[Operation<u64, u64>], client: u64) -> Option<Operation<u64, u64>> {
        let end = history.iter().map(|o| o.ret).max().unwrap_or(0);
        let writes = |key| {
            history
                .iter()
                .filter(move |o| o.key == key && matches!(o.input, Input::Put(_)))
        };
        let (key, first) = history.iter().find_map(|o| match o.input {
            Input::Put(v) if writes(o.key).count() > 1 => Some((o.key, v)),
            _ => None,
        })?;
        Some(Operation::new(
            client,
            key,
            Input::Get,
            Some(Output::Value(Some(first))),
            end + 1,
            end + 2,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Op = Operation<&'static str, u32>;

    fn put(client: u64, v: u32, call: u64, ret: u64) -> Op {
        Operation::new(client, "k", Input::Put(v), Some(Output::Done), call, ret)
    }

    fn get(client: u64, seen: Option<u32>, call: u64, ret: u64) -> Op {
        Operation::new(
            client,
            "k",
            Input::Get,
            Some(Output::Value(seen)),
            call,
            ret,
        )
    }

    fn verdict(history: &[Op]) -> Verdict<&'static str, u32> {
        check(history, Budget::default())
    }

    #[test]
    fn sequential_histories() {
        assert_eq!(verdict(&[]), Verdict::Linearizable);
        let ok = [
            put(1, 1, 0, 1),
            get(2, Some(1), 2, 3),
            put(1, 2, 4, 5),
            get(2, Some(2), 6, 7),
        ];
        assert_eq!(verdict(&ok), Verdict::Linearizable);
        let stale = [put(1, 1, 0, 1), put(1, 2, 2, 3), get(2, Some(1), 4, 5)];
        let Verdict::Violation(v) = verdict(&stale) else {
            panic!("a stale read passed");
        };
        assert_eq!(v.stuck, stale[2]);
        assert_eq!(v.linearized, vec![stale[0].clone(), stale[1].clone()]);
    }

    #[test]
    fn concurrent_operations_may_take_effect_in_either_order() {
        // A read overlapping a write may see the old or the new value.
        let old = [put(1, 1, 0, 1), put(1, 2, 2, 10), get(2, Some(1), 3, 4)];
        let new = [put(1, 1, 0, 1), put(1, 2, 2, 10), get(2, Some(2), 3, 4)];
        assert_eq!(verdict(&old), Verdict::Linearizable);
        assert_eq!(verdict(&new), Verdict::Linearizable);
        // But two reads cannot see the new value and then the old one.
        let flip = [
            put(1, 1, 0, 1),
            put(1, 2, 2, 10),
            get(2, Some(2), 3, 4),
            get(3, Some(1), 5, 6),
        ];
        assert!(matches!(verdict(&flip), Verdict::Violation(_)));
    }

    #[test]
    fn unknown_outcomes_may_or_may_not_take_effect() {
        let maybe = Operation::new(1, "k", Input::Put(7), None, 0, 5);
        // Seen, or not seen: both fine.
        assert_eq!(
            verdict(&[maybe.clone(), get(2, Some(7), 10, 11)]),
            Verdict::Linearizable
        );
        assert_eq!(
            verdict(&[maybe.clone(), get(2, None, 10, 11)]),
            Verdict::Linearizable
        );
        // But not taken back once seen.
        let flip = [maybe, get(2, Some(7), 10, 11), get(2, None, 12, 13)];
        assert!(matches!(verdict(&flip), Verdict::Violation(_)));
        // A read of unknown outcome says nothing.
        let blind = Operation::new(3, "k", Input::Get, None, 0, 1);
        assert_eq!(verdict(&[blind]), Verdict::Linearizable);
    }

    #[test]
    fn many_unknown_writes_nobody_read_are_decided_at_once() {
        // Forty writes of unknown outcome overlapping everything: without dropping those no
        // read saw, the search would branch on each of them at every step.
        let mut history: Vec<Op> = (0..40)
            .map(|v| Operation::new(10 + v as u64, "k", Input::Put(1000 + v), None, 0, 1))
            .collect();
        for i in 0..200u32 {
            let t = 10 + 4 * u64::from(i);
            history.push(put(1, i, t, t + 1));
            history.push(get(2, Some(i), t + 2, t + 3));
        }
        let tight = Budget {
            steps_per_key: 10_000,
        };
        assert_eq!(check(&history, tight), Verdict::Linearizable);
        // One of them seen, then overwritten, then seen again: still caught (it cannot take
        // effect twice).
        history.push(get(3, Some(1005), 2, 3));
        history.push(get(3, Some(1005), 2000, 2001));
        let v = check(&history, Budget::default());
        assert!(matches!(v, Verdict::Violation(_)), "{v:?}");
    }

    #[test]
    fn keys_are_independent_and_deletes_count() {
        let history = vec![
            Operation::new(1, "a", Input::Put(1), Some(Output::Done), 0, 1),
            Operation::new(1, "b", Input::Put(2), Some(Output::Done), 2, 3),
            Operation::new(2, "a", Input::Delete, Some(Output::Done), 4, 5),
            Operation::new(2, "b", Input::Get, Some(Output::Value(Some(2))), 6, 7),
            Operation::new(3, "a", Input::Get, Some(Output::Value(Some(1))), 8, 9),
        ];
        let Verdict::Violation(v) = check(&history, Budget::default()) else {
            panic!("a read after the delete saw the value");
        };
        assert_eq!(v.key, "a");
        assert_eq!(v.stuck.call, 8);
    }

    #[test]
    fn generated_histories_pass_and_a_planted_stale_read_is_found() {
        let mut history = generate::linearizable(3, 16, 200, 10);
        assert_eq!(check(&history, Budget::default()), Verdict::Linearizable);
        history.push(generate::stale_read(&history, 99).expect("a key written twice"));
        let Verdict::Violation(v) = check(&history, Budget::default()) else {
            panic!("the planted stale read was missed");
        };
        assert_eq!(v.stuck.client, 99);
    }

    #[test]
    fn out_of_budget_is_undecided_not_passed() {
        // Many concurrent writes and reads: the search needs more than a handful of steps.
        let mut history = Vec::new();
        for c in 0..8u32 {
            history.push(put(u64::from(c), c, 0, 100));
        }
        history.push(get(9, Some(3), 50, 60));
        assert_eq!(
            check(&history, Budget { steps_per_key: 3 }),
            Verdict::Undecided { key: "k" }
        );
        assert_eq!(verdict(&history), Verdict::Linearizable);
    }

    /// Random histories of a real register with one stale read planted: every clean history
    /// passes and every planted one is caught.
    #[test]
    fn random_histories_and_planted_stale_reads() {
        let mut seed = 0x5EED_u64;
        let mut random = |bound: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % bound
        };
        for round in 0..200 {
            // Clients run operations one at a time; each takes effect at an instant inside
            // its interval, on a real register.
            let mut history: Vec<Op> = Vec::new();
            let mut effects: Vec<(u64, usize)> = Vec::new();
            let mut next = 1u32;
            for client in 0..6u64 {
                let mut t = random(5);
                for _ in 0..8 {
                    let call = t;
                    let ret = call + 1 + random(20);
                    let at = call + random(ret - call + 1);
                    let op = if random(2) == 0 {
                        next += 1;
                        put(client, next, call, ret)
                    } else {
                        get(client, None, call, ret)
                    };
                    effects.push((at * 1000 + history.len() as u64, history.len()));
                    history.push(op);
                    t = ret + 1 + random(5);
                }
            }
            effects.sort_unstable();
            let mut register = None;
            for &(_, i) in &effects {
                match history[i].input {
                    Input::Put(v) => register = Some(v),
                    _ => history[i].output = Some(Output::Value(register)),
                }
            }
            assert_eq!(verdict(&history), Verdict::Linearizable, "round {round}");
            // Plant a stale read: a read after everything returned that sees a value that
            // was overwritten (or none at all).
            let end = history.iter().map(|o| o.ret).max().unwrap_or(0);
            let stale = if register == Some(2) || register.is_none() {
                None
            } else {
                Some(2)
            };
            history.push(get(99, stale, end + 1, end + 2));
            assert!(
                matches!(verdict(&history), Verdict::Violation(_)),
                "round {round}: planted stale read missed"
            );
        }
    }
}
