//! Clients whose every operation is recorded, and the judgement of what they saw: a few
//! clients read and write a handful of keys ("registers") while the demo or the chaos run
//! does its work; at the end the history goes through the linearizability checker
//! ([`lincheck`]).
//!
//! Each client writes through a client session of its own (registered when it starts): every
//! write is numbered, so the client retries it with the same number after any failure (a
//! timeout, a lost leader, a dropped connection) and the cluster applies it once. Only a write
//! still unanswered when its time is up, or whose session expired, is recorded with an unknown
//! outcome. A read that fails is simply not recorded (it had no effect).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use lincheck::{Budget, Input, Operation, Output, Verdict};

use crate::protocol::{Connection, Request, Response};
use crate::store::KvCommand;

/// How many keys the recorded clients share.
pub(crate) const REGISTERS: u64 = 8;
/// How long one operation may take before its outcome is unknown.
const OPERATION_TIMEOUT: Duration = Duration::from_secs(2);

fn register(key: u64) -> String {
    format!("reg-{key}")
}

/// The history of the recorded clients, with times in microseconds since it started.
pub(crate) struct Recorder {
    start: Instant,
    operations: Mutex<Vec<Operation<u64, u64>>>,
}

impl Recorder {
    pub(crate) fn new() -> Self {
        Self {
            start: Instant::now(),
            operations: Mutex::new(Vec::new()),
        }
    }

    fn now(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_micros()).unwrap_or(u64::MAX)
    }

    fn record(&self, operation: Operation<u64, u64>) {
        self.operations
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(operation);
    }

    /// Checks the history; `Ok` with the line the demo prints, or the violation.
    pub(crate) fn check(&self) -> Result<String, String> {
        let history = self.operations.lock().unwrap_or_else(|p| p.into_inner());
        let n = history.len();
        let unknown = history.iter().filter(|o| o.output.is_none()).count();
        match lincheck::check(&history, Budget::default()) {
            Verdict::Linearizable => Ok(format!(
                "history of {n} operations: linearizable ({unknown} writes of unknown outcome)"
            )),
            Verdict::Violation(v) => Err(format!(
                "history of {n} operations: NOT linearizable on key reg-{}: {:?} cannot be \
                 placed after {:?} (pending: {:?})",
                v.key,
                v.stuck,
                v.linearized.iter().rev().take(3).collect::<Vec<_>>(),
                v.pending
            )),
            _ => Err(format!(
                "history of {n} operations: undecided (the checker ran out of budget)"
            )),
        }
    }
}

/// What one attempt at a command came to.
enum Outcome {
    /// Answered.
    Done(Option<Vec<u8>>),
    /// Certainly not applied (refused before anything was appended).
    NotApplied,
    /// May or may not be applied.
    Unknown,
}

/// A recorded client: talks to one node at a time, starting from its guess of the leader.
struct RecordedClient {
    addrs: Vec<SocketAddr>,
    at: usize,
    /// Its session's id and the next write's number, once registered.
    session: Option<(u64, u64)>,
    /// Its open connection to each node (reopened after a failure): a connection per
    /// request would cost a TLS handshake each.
    connections: std::collections::BTreeMap<SocketAddr, Connection>,
}

impl RecordedClient {
    /// Sends `request` until it gets a final answer or `limit` passes, moving to the next node
    /// after any failure (every request sent here can be retried safely).
    fn call(&mut self, request: &Request, limit: Duration) -> Option<Response> {
        let start = Instant::now();
        while start.elapsed() < limit {
            let addr = self.addrs[self.at % self.addrs.len()];
            let conn = self
                .connections
                .entry(addr)
                .or_insert_with(|| Connection::new(addr, limit));
            if let Ok(
                answer @ (Response::Done(_) | Response::Registered(_) | Response::SessionExpired),
            ) = conn.call(request)
            {
                return Some(answer);
            }
            self.at += 1;
            std::thread::sleep(Duration::from_millis(5));
        }
        None
    }

    /// Runs `command` (a read, or a write through the session) until it is answered, or its
    /// time is up.
    fn run(&mut self, command: &KvCommand) -> Outcome {
        if matches!(command, KvCommand::Get { .. }) {
            return match self.call(&Request::Command(command.clone()), OPERATION_TIMEOUT) {
                Some(Response::Done(answer)) => Outcome::Done(answer),
                _ => Outcome::NotApplied,
            };
        }
        let (client, seq) = match self.session {
            Some(session) => session,
            None => match self.call(&Request::Register, OPERATION_TIMEOUT) {
                Some(Response::Registered(id)) => (id, 1),
                // Nothing of this write was sent.
                _ => return Outcome::NotApplied,
            },
        };
        self.session = Some((client, seq + 1));
        let request = Request::SessionCommand {
            client,
            seq,
            command: command.clone(),
        };
        match self.call(&request, OPERATION_TIMEOUT) {
            Some(Response::Done(answer)) => Outcome::Done(answer),
            Some(Response::SessionExpired) => {
                self.session = None;
                Outcome::Unknown
            }
            _ => Outcome::Unknown,
        }
    }
}

/// One recorded client's loop, until `stop`: reads and writes of random registers, each
/// recorded with its outcome. Values are unique: `client << 32 | sequence`.
pub(crate) fn client(
    id: u64,
    addrs: impl Fn() -> Vec<SocketAddr>,
    stop: &AtomicBool,
    recorder: &Recorder,
) {
    let mut rng = (id + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut next = move |bound: u64| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng % bound
    };
    let mut sequence = 0u64;
    let mut client = RecordedClient {
        addrs: addrs(),
        at: next(8) as usize,
        session: None,
        connections: std::collections::BTreeMap::new(),
    };
    while !stop.load(Ordering::Relaxed) {
        client.addrs = addrs();
        let key = next(REGISTERS);
        let call = recorder.now();
        if next(2) == 0 {
            sequence += 1;
            let value = id << 32 | sequence;
            let command = KvCommand::Put {
                key: register(key),
                value: value.to_string().into_bytes(),
            };
            let output = match client.run(&command) {
                Outcome::Done(_) => Some(Output::Done),
                Outcome::NotApplied => continue,
                Outcome::Unknown => None,
            };
            let ret = recorder.now();
            recorder.record(Operation::new(
                id,
                key,
                Input::Put(value),
                output,
                call,
                ret,
            ));
        } else {
            let command = KvCommand::Get { key: register(key) };
            let Outcome::Done(answer) = client.run(&command) else {
                continue;
            };
            let value = answer.and_then(|v| String::from_utf8(v).ok()?.parse().ok());
            let ret = recorder.now();
            let output = Some(Output::Value(value));
            recorder.record(Operation::new(id, key, Input::Get, output, call, ret));
        }
    }
}
