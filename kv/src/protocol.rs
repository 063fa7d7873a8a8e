//! The client protocol: one request, one response, as length-prefixed postcard frames, over
//! TCP or mutual TLS.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::{PoisonError, RwLock};
use std::time::Duration;

use adapter_common::tls::TlsConfig;

use raft_proto::wire::{encode_frame, FrameDecoder};
use raft_proto::NodeId;
use serde::{Deserialize, Serialize};

use crate::store::KvCommand;

/// Frames larger than this are refused (a full dump of a large store must fit).
pub(crate) const MAX_FRAME: usize = 64 << 20;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum Request {
    /// Replicate a command and answer its result.
    Command(KvCommand),
    /// What this replica has applied (not linearizable: for checking).
    Dump,
    /// The node's Raft status.
    Status,
    /// Stop the node cleanly and exit.
    Shutdown,
    /// The membership in force at this node.
    Members,
    /// Change the membership (the leader only); answered with the resulting membership.
    ChangeMembership(MemberChange),
    /// Open a client session (a log entry); answered with its id.
    Register,
    /// A write numbered within a client session: retrying it with the same numbers after an
    /// unknown outcome never applies it twice.
    SessionCommand {
        /// The session's id, from `Register`.
        client: u64,
        /// The write's number in the session: 1, 2, 3, … (one write at a time).
        seq: u64,
        /// The write.
        command: KvCommand,
    },
}

/// A membership change as clients send it. Member data is `RAFT_ADDR CLIENT_ADDR`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum MemberChange {
    AddLearner {
        id: NodeId,
        data: String,
    },
    AddVoter {
        id: NodeId,
        data: String,
    },
    Promote {
        id: NodeId,
    },
    Remove {
        id: NodeId,
    },
    Replace {
        voters: Vec<(NodeId, String)>,
        learners: Vec<(NodeId, String)>,
    },
}

impl MemberChange {
    pub(crate) fn into_core(self) -> raft_proto::MembershipChange {
        use raft_proto::MembershipChange as C;
        let data = |s: String| raft_proto::Payload::from(s.into_bytes());
        let list = |v: Vec<(NodeId, String)>| v.into_iter().map(|(i, s)| (i, data(s))).collect();
        match self {
            Self::AddLearner { id, data: d } => C::AddLearner { id, data: data(d) },
            Self::AddVoter { id, data: d } => C::AddVoter { id, data: data(d) },
            Self::Promote { id } => C::PromoteLearner { id },
            Self::Remove { id } => C::Remove { id },
            Self::Replace { voters, learners } => C::Replace {
                voters: list(voters),
                learners: list(learners),
            },
        }
    }
}

/// A membership as clients see it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Members {
    pub(crate) voters: Vec<NodeId>,
    /// While joint: the old voters.
    pub(crate) outgoing: Vec<NodeId>,
    pub(crate) learners: Vec<NodeId>,
    /// Each member's data (`RAFT_ADDR CLIENT_ADDR`), where it has some.
    pub(crate) data: Vec<(NodeId, String)>,
    /// The leader the answering node knows of.
    pub(crate) leader: Option<NodeId>,
}

impl Members {
    pub(crate) fn from_core(m: &raft_proto::Membership, leader: Option<NodeId>) -> Self {
        let data = m
            .members()
            .into_iter()
            .filter_map(|id| {
                let d = m.data(id)?;
                Some((id, String::from_utf8_lossy(d).into_owned()))
            })
            .collect();
        Self {
            voters: m.voters().iter().copied().collect(),
            outgoing: m.outgoing_voters().iter().copied().collect(),
            learners: m.learners().iter().copied().collect(),
            data,
            leader,
        }
    }

    /// The client address a member's data names (after the Raft address).
    pub(crate) fn client_addr(&self, id: NodeId) -> Option<SocketAddr> {
        let (_, data) = self.data.iter().find(|(i, _)| *i == id)?;
        data.split(' ').nth(1)?.parse().ok()
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum Response {
    /// The command committed and was applied; its answer.
    Done(Option<Vec<u8>>),
    /// Not the leader; try this one.
    NotLeader(Option<NodeId>),
    /// The command may or may not have committed (timeout, lost to a new leader, shutdown).
    Unavailable(String),
    /// The replica's key-value pairs and its applied index.
    Dump(Vec<(String, Vec<u8>)>, u64),
    /// The node's status.
    Status {
        /// The node's id.
        id: NodeId,
        /// "Leader", "Follower" or "Candidate".
        role: String,
        term: u64,
        leader: Option<NodeId>,
        commit: u64,
        applied: u64,
        /// Connections its peers refused (a wrong cluster id, or its id taken): non-zero
        /// means a misconfigured cluster.
        refused_by_peers: u64,
    },
    /// A membership (in force, or the one a change led to).
    Members(Members),
    /// The membership change was refused: why.
    Refused(String),
    /// The session `Register` opened.
    Registered(u64),
    /// The session is expired or unknown: the write was not applied now (an earlier attempt
    /// may have been); register again.
    SessionExpired,
}

/// The TLS setup this process's client connections use (none: plain TCP).
static CLIENT_TLS: RwLock<Option<TlsConfig>> = RwLock::new(None);

/// From now on, this process's client connections ([`Connection`]) use mutual TLS with
/// `tls` (a client certificate of the cluster's CA), or plain TCP with `None`.
pub(crate) fn set_client_tls(tls: Option<TlsConfig>) {
    *CLIENT_TLS.write().unwrap_or_else(PoisonError::into_inner) = tls;
}

fn client_tls() -> Option<TlsConfig> {
    CLIENT_TLS
        .read()
        .unwrap_or_else(PoisonError::into_inner)
        .clone()
}

/// A client connection, either side, plain or TLS.
pub(crate) enum Stream {
    /// Plain TCP.
    Plain(TcpStream),
    /// A client's TLS connection to a node.
    Client(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
    /// A node's TLS connection from a client.
    Server(Box<rustls::StreamOwned<rustls::ServerConnection, TcpStream>>),
}

impl Stream {
    /// The connection's TCP socket.
    pub(crate) fn tcp(&self) -> &TcpStream {
        match self {
            Self::Plain(tcp) => tcp,
            Self::Client(tls) => tls.get_ref(),
            Self::Server(tls) => tls.get_ref(),
        }
    }

    /// A node's side of a connection a client opened: TLS with `tls` (a client certificate
    /// of the cluster's CA required), or plain.
    pub(crate) fn accepted(tcp: TcpStream, tls: Option<&TlsConfig>) -> std::io::Result<Self> {
        Ok(match tls {
            None => Self::Plain(tcp),
            Some(tls) => {
                let session = rustls::ServerConnection::new(tls.server_config())
                    .map_err(std::io::Error::other)?;
                Self::Server(Box::new(rustls::StreamOwned::new(session, tcp)))
            }
        })
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Self::Plain(tcp) => tcp.read(buf),
            Self::Client(tls) => tls.read(buf),
            Self::Server(tls) => tls.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Self::Plain(tcp) => tcp.write(buf),
            Self::Client(tls) => tls.write(buf),
            Self::Server(tls) => tls.write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Self::Plain(tcp) => tcp.flush(),
            Self::Client(tls) => tls.flush(),
            Self::Server(tls) => tls.flush(),
        }
    }
}

/// Whether `error` is a TLS failure (a certificate refused by either side, not TLS at all):
/// trying again cannot help.
pub(crate) fn is_tls_failure(error: &std::io::Error) -> bool {
    error
        .get_ref()
        .is_some_and(|inner| inner.downcast_ref::<rustls::Error>().is_some())
}

/// Says what went wrong with a call to a node: a TLS failure as such, and for a connection
/// the node closed at once, the likely reason.
pub(crate) fn describe_failure(error: &std::io::Error) -> String {
    if is_tls_failure(error) {
        format!("TLS: {error}")
    } else if error.kind() == std::io::ErrorKind::UnexpectedEof && client_tls().is_none() {
        format!("{error} (if the node uses TLS, give --tls-cert, --tls-key and --tls-ca)")
    } else {
        error.to_string()
    }
}

/// Writes one frame.
pub(crate) fn write_frame<T: Serialize>(stream: &mut impl Write, value: &T) -> std::io::Result<()> {
    let mut out = Vec::new();
    encode_frame(value, MAX_FRAME, &mut out)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string()))?;
    stream.write_all(&out)?;
    stream.flush()
}

/// Reads one frame (blocking, with the stream's timeout).
pub(crate) fn read_frame<T: Serialize + serde::de::DeserializeOwned>(
    stream: &mut impl Read,
    decoder: &mut FrameDecoder,
) -> std::io::Result<T> {
    let mut buf = [0u8; 16 * 1024];
    loop {
        match decoder.next_frame::<T>() {
            Ok(Some(value)) => return Ok(value),
            Ok(None) => {}
            Err(e) => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    e.to_string(),
                ))
            }
        }
        let n = stream.read(&mut buf)?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        decoder.extend(&buf[..n]);
    }
}

/// A connection to one node's client port, reopened on error.
pub(crate) struct Connection {
    addr: SocketAddr,
    stream: Option<(Stream, FrameDecoder)>,
    timeout: Duration,
}

impl Connection {
    pub(crate) fn new(addr: SocketAddr, timeout: Duration) -> Self {
        Self {
            addr,
            stream: None,
            timeout,
        }
    }

    /// Sends `request` and waits for the response.
    pub(crate) fn call(&mut self, request: &Request) -> std::io::Result<Response> {
        if self.stream.is_none() {
            let tcp = TcpStream::connect_timeout(&self.addr, self.timeout)?;
            tcp.set_read_timeout(Some(self.timeout))?;
            tcp.set_write_timeout(Some(self.timeout))?;
            tcp.set_nodelay(true)?;
            let stream = match client_tls() {
                None => Stream::Plain(tcp),
                Some(tls) => {
                    // Any member's certificate of the CA will do: the name is a placeholder.
                    let name = rustls::pki_types::ServerName::try_from("raft-kv")
                        .map_err(std::io::Error::other)?;
                    let session =
                        rustls::ClientConnection::new(tls.client_config_for_any_member(), name)
                            .map_err(std::io::Error::other)?;
                    Stream::Client(Box::new(rustls::StreamOwned::new(session, tcp)))
                }
            };
            self.stream = Some((stream, FrameDecoder::new(MAX_FRAME)));
        }
        let result = match self.stream.as_mut() {
            Some((stream, decoder)) => {
                write_frame(stream, request).and_then(|()| read_frame(stream, decoder))
            }
            None => Err(std::io::ErrorKind::NotConnected.into()),
        };
        if result.is_err() {
            self.stream = None;
        }
        result
    }
}
