//! Membership from the client side: `raft-kv members list|add|promote|remove`, and the
//! request a node started with `--join` sends. The tool finds the leader itself: it asks the
//! addresses it is given, follows leader hints, and learns the client addresses of members
//! from their membership data (`RAFT_ADDR CLIENT_ADDR`).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use raft_proto::NodeId;

use crate::protocol::{Connection, MemberChange, Members, Request, Response};

const CALL_TIMEOUT: Duration = Duration::from_secs(15);

/// The membership as the leader (or, failing that, the first node that answers) sees it.
pub(crate) fn list(cluster: &[SocketAddr]) -> Result<Members, String> {
    let mut first = None;
    for &addr in cluster {
        let mut conn = Connection::new(addr, Duration::from_secs(2));
        if let Ok(Response::Members(members)) = conn.call(&Request::Members) {
            if let Some(leader) = members.leader.and_then(|l| members.client_addr(l)) {
                let mut conn = Connection::new(leader, Duration::from_secs(2));
                if let Ok(Response::Members(from_leader)) = conn.call(&Request::Members) {
                    return Ok(from_leader);
                }
            }
            first.get_or_insert(members);
        }
    }
    first.ok_or_else(|| format!("no node of {cluster:?} answered"))
}

/// Sends `change` to the leader, looking for it among `cluster` and the members' client
/// addresses, for up to `limit`. A refusal after an attempt whose outcome is unknown (a lost
/// connection, a timeout) is taken as the change having gone through.
pub(crate) fn change(
    cluster: &[SocketAddr],
    change: MemberChange,
    limit: Duration,
) -> Result<Members, String> {
    let start = Instant::now();
    let mut known: Vec<SocketAddr> = cluster.to_vec();
    let mut attempted = false;
    let request = Request::ChangeMembership(change);
    while start.elapsed() < limit {
        let mut i = 0;
        while i < known.len() {
            let addr = known[i];
            i += 1;
            let mut conn = Connection::new(addr, CALL_TIMEOUT);
            match conn.call(&request) {
                Ok(Response::Members(members)) => return Ok(members),
                Ok(Response::Refused(reason)) if attempted => {
                    return list(&known).map_err(|e| format!("{reason}; then {e}"));
                }
                Ok(Response::Refused(reason)) if reason.contains("in progress") => {}
                Ok(Response::Refused(reason)) => return Err(reason),
                Ok(Response::NotLeader(_)) => learn_members(&mut conn, &mut known),
                Ok(_) | Err(_) => attempted = true,
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Err(format!("no leader completed the change within {limit:?}"))
}

/// Prints a membership.
pub(crate) fn print(members: &Members) {
    let describe = |id: &NodeId| {
        let data = members
            .data
            .iter()
            .find(|(i, _)| i == id)
            .map_or("", |(_, d)| d.as_str());
        format!("{id} {data}")
    };
    println!("leader: {:?}", members.leader);
    for id in &members.voters {
        println!("voter   {}", describe(id));
    }
    for id in &members.outgoing {
        if !members.voters.contains(id) {
            println!("leaving {}", describe(id));
        }
    }
    for id in &members.learners {
        println!("learner {}", describe(id));
    }
}

/// Runs `command` through the leader (found like [`change`] finds it) for up to `limit`. A
/// read may be answered by any node (it serves reads linearizably itself). A write goes
/// through a client session of its own, so that the retries never apply it twice. When no
/// node answers at all, the error says what each address did.
pub(crate) fn execute(
    cluster: &[SocketAddr],
    command: crate::store::KvCommand,
    limit: Duration,
) -> Result<Option<Vec<u8>>, String> {
    if let crate::store::KvCommand::Get { .. } = command {
        return match call(cluster, &Request::Command(command), limit)? {
            Response::Done(answer) => Ok(answer),
            other => Err(format!("unexpected answer {other:?}")),
        };
    }
    Writer::new(cluster).write(command, limit)
}

/// A client session for writes: each write is numbered, and retried with the same number
/// until it is answered (after a timeout, a lost leader or a dropped connection), so that it
/// is applied once.
pub(crate) struct Writer {
    cluster: Vec<SocketAddr>,
    /// The session's id and the next write's number, once registered.
    session: Option<(u64, u64)>,
}

impl Writer {
    pub(crate) fn new(cluster: &[SocketAddr]) -> Self {
        Self {
            cluster: cluster.to_vec(),
            session: None,
        }
    }

    /// Applies `command` once, through the leader, within `limit`: its answer, or why not
    /// (then its outcome is unknown).
    pub(crate) fn write(
        &mut self,
        command: crate::store::KvCommand,
        limit: Duration,
    ) -> Result<Option<Vec<u8>>, String> {
        let start = Instant::now();
        let (client, seq) = match self.session {
            Some(session) => session,
            None => match call(&self.cluster, &Request::Register, limit)? {
                Response::Registered(id) => (id, 1),
                other => return Err(format!("unexpected answer {other:?}")),
            },
        };
        self.session = Some((client, seq + 1));
        let request = Request::SessionCommand {
            client,
            seq,
            command,
        };
        match call(
            &self.cluster,
            &request,
            limit.saturating_sub(start.elapsed()),
        )? {
            Response::Done(answer) => Ok(answer),
            Response::SessionExpired => {
                self.session = None;
                Err("the client session expired; the write's outcome is unknown".into())
            }
            other => Err(format!("unexpected answer {other:?}")),
        }
    }
}

/// Sends `request` to the leader, following hints and retrying on any failure, until it gets
/// a final answer (done, registered, or the session expired) or `limit` passes. Only requests
/// that a retry cannot apply twice may go through here: reads, registrations, session writes.
fn call(cluster: &[SocketAddr], request: &Request, limit: Duration) -> Result<Response, String> {
    let start = Instant::now();
    let mut known: Vec<SocketAddr> = cluster.to_vec();
    let mut last: std::collections::BTreeMap<SocketAddr, String> = Default::default();
    // The nodes that failed TLS with this client.
    let mut refused = std::collections::BTreeSet::new();
    while start.elapsed() < limit && !known.iter().all(|a| refused.contains(a)) {
        let mut i = 0;
        while i < known.len() {
            let addr = known[i];
            i += 1;
            if refused.contains(&addr) {
                continue;
            }
            let mut conn = Connection::new(addr, CALL_TIMEOUT);
            match conn.call(request) {
                Ok(
                    answer @ (Response::Done(_)
                    | Response::Registered(_)
                    | Response::SessionExpired),
                ) => return Ok(answer),
                Ok(Response::NotLeader(hint)) => {
                    let why = match hint {
                        Some(leader) => format!(
                            "not the leader; node {leader} leads (list its client address in \
                             --cluster if it is not found)"
                        ),
                        None => "not the leader, and no leader is known".to_string(),
                    };
                    last.insert(addr, why);
                    learn_members(&mut conn, &mut known);
                }
                Ok(Response::Unavailable(why)) => {
                    last.insert(addr, why);
                }
                Ok(other) => {
                    last.insert(addr, format!("unexpected answer {other:?}"));
                }
                Err(e) if crate::protocol::is_tls_failure(&e) => {
                    // A certificate refused: asking that node again cannot help.
                    last.insert(addr, crate::protocol::describe_failure(&e));
                    refused.insert(addr);
                    if known.iter().all(|a| refused.contains(a)) {
                        break;
                    }
                }
                Err(e) => {
                    last.insert(addr, crate::protocol::describe_failure(&e));
                }
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let why: Vec<String> = last.iter().map(|(a, e)| format!("{a}: {e}")).collect();
    if known.iter().all(|a| refused.contains(a)) {
        return Err(format!("TLS failed with every node ({})", why.join("; ")));
    }
    Err(format!(
        "no leader answered within {limit:?} ({})",
        why.join("; ")
    ))
}

/// One node's status as `raft-kv status` prints it.
pub(crate) fn status(cluster: &[SocketAddr]) -> Result<Vec<String>, String> {
    let mut lines = Vec::new();
    let mut answered = 0;
    for &addr in cluster {
        let mut conn = Connection::new(addr, Duration::from_secs(2));
        match conn.call(&Request::Status) {
            Ok(Response::Status {
                id,
                role,
                term,
                leader,
                commit,
                applied,
                refused_by_peers,
            }) => {
                answered += 1;
                let leader = leader.map_or_else(|| "none".to_string(), |l| l.to_string());
                let refused = if refused_by_peers > 0 {
                    format!(
                        "  MISCONFIGURED: peers refused it {refused_by_peers} times (another cluster id, or its id taken; see its log)"
                    )
                } else {
                    String::new()
                };
                lines.push(format!(
                    "{addr}  node {id}  {role:<9} term {term}  leader {leader}  commit {commit}  applied {applied}{refused}"
                ));
            }
            Ok(Response::Unavailable(why)) => lines.push(format!("{addr}  unavailable: {why}")),
            Ok(other) => lines.push(format!("{addr}  unexpected answer {other:?}")),
            Err(e) => lines.push(format!("{addr}  unreachable: {e}")),
        }
    }
    if answered == 0 {
        return Err(format!("no node answered:\n{}", lines.join("\n")));
    }
    Ok(lines)
}

/// A replica's key-value pairs and its applied index.
pub(crate) type Dump = (Vec<(String, Vec<u8>)>, u64);

/// What the replica at `addr` holds, and its applied index.
pub(crate) fn dump(addr: SocketAddr) -> Result<Dump, String> {
    let mut conn = Connection::new(addr, CALL_TIMEOUT);
    match conn.call(&Request::Dump) {
        Ok(Response::Dump(pairs, applied)) => Ok((pairs, applied)),
        Ok(other) => Err(format!("{addr} answered {other:?}")),
        Err(e) => Err(format!("{addr}: {e}")),
    }
}

/// Asks the node behind `conn` for the membership and adds the members' client addresses to
/// `known`, so that the leader can be reached.
fn learn_members(conn: &mut Connection, known: &mut Vec<SocketAddr>) {
    if let Ok(Response::Members(members)) = conn.call(&Request::Members) {
        for (id, _) in &members.data {
            if let Some(client) = members.client_addr(*id) {
                if !known.contains(&client) {
                    known.push(client);
                }
            }
        }
    }
}
