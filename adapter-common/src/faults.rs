//! A fault-injecting TCP proxy for tests (feature `fault-proxy`): put one on each direction
//! of a peer link (the connections node A dials to node B) by giving A the proxy's address
//! for B, then cut the link, delay it with jitter, or throttle it while the cluster runs. It
//! needs no privileges and no tool outside the test process.
//!
//! A TCP link cannot lose single messages, so "dropping" is done the way a network partition
//! shows to TCP: the connections are cut and new ones are refused while the link is down
//! (the transports then drop what they queue for that peer). Delay and throttling hold
//! bytes back in order; a throttled link pushes back on its sender once a bounded buffer
//! (about 1 MiB per direction of a connection) is full, as a slow network does, so a proxy never grows
//! memory without bound.
//!
//! Not for production traffic: every connection costs two threads.
//!
//! ```
//! use std::io::{Read, Write};
//! use std::net::{TcpListener, TcpStream};
//! use std::time::Duration;
//! use adapter_common::faults::{FaultyLink, LinkFaults};
//!
//! let target = TcpListener::bind("127.0.0.1:0").unwrap();
//! let link = FaultyLink::start(target.local_addr().unwrap(), 7).unwrap();
//! link.set(LinkFaults { delay: Duration::from_millis(30), ..LinkFaults::default() });
//! let mut client = TcpStream::connect(link.addr()).unwrap();
//! let (mut server, _) = target.accept().unwrap();
//! let sent = std::time::Instant::now();
//! client.write_all(b"ping").unwrap();
//! let mut got = [0; 4];
//! server.read_exact(&mut got).unwrap();
//! assert_eq!(&got, b"ping");
//! assert!(sent.elapsed() >= Duration::from_millis(30));
//! link.stop();
//! ```

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// What a link does to its traffic now. The default is a healthy link.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LinkFaults {
    /// The link is down: its connections are cut and new ones refused.
    pub cut: bool,
    /// Every chunk of bytes is held back this long...
    pub delay: Duration,
    /// ...plus a uniformly random extra of up to this much (order is kept).
    pub jitter: Duration,
    /// At most this many bytes a second pass, in each direction of each connection.
    pub bytes_per_second: Option<u64>,
}

impl LinkFaults {
    /// A link that is down.
    pub fn cut() -> Self {
        Self {
            cut: true,
            ..Self::default()
        }
    }

    /// A link that holds every chunk `delay` plus up to `jitter` back.
    pub fn delayed(delay: Duration, jitter: Duration) -> Self {
        Self {
            delay,
            jitter,
            ..Self::default()
        }
    }

    /// A link that passes at most `bytes_per_second`.
    pub fn throttled(bytes_per_second: u64) -> Self {
        Self {
            bytes_per_second: Some(bytes_per_second),
            ..Self::default()
        }
    }
}

/// How many bytes a pump reads at once.
const CHUNK: usize = 16 * 1024;
/// How many chunks a connection's direction holds back at most (about 1 MiB).
const HELD_CHUNKS: usize = 64;
/// How often the accept loop looks at the stop flag.
const POLL: Duration = Duration::from_millis(5);

struct LinkState {
    target: SocketAddr,
    faults: Mutex<LinkFaults>,
    stopped: AtomicBool,
    /// Both sockets of every open connection, by connection number, to cut them.
    open: Mutex<BTreeMap<u64, [TcpStream; 2]>>,
    next_connection: AtomicU64,
    /// The jitter's random state (xorshift).
    random: AtomicU64,
}

impl LinkState {
    fn faults(&self) -> LinkFaults {
        *self.faults.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn cut_all(&self) {
        let open = std::mem::take(&mut *self.open.lock().unwrap_or_else(PoisonError::into_inner));
        for stream in open.into_values().flatten() {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }

    /// A random duration in `[0, max]`.
    fn jitter(&self, max: Duration) -> Duration {
        if max.is_zero() {
            return max;
        }
        let mut x = self.random.load(Ordering::Relaxed);
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.random.store(x, Ordering::Relaxed);
        let nanos = u64::try_from(max.as_nanos()).unwrap_or(u64::MAX);
        Duration::from_nanos(x % nanos.saturating_add(1))
    }
}

/// One direction of a peer link through a local proxy whose faults the test sets.
pub struct FaultyLink {
    addr: SocketAddr,
    state: Arc<LinkState>,
}

impl std::fmt::Debug for FaultyLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FaultyLink")
            .field("addr", &self.addr)
            .field("target", &self.state.target)
            .field("faults", &self.state.faults())
            .finish()
    }
}

impl FaultyLink {
    /// Listens on a free port of 127.0.0.1 and forwards every connection to `target`,
    /// healthy at first; `seed` drives the jitter.
    pub fn start(target: SocketAddr, seed: u64) -> io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let state = Arc::new(LinkState {
            target,
            faults: Mutex::new(LinkFaults::default()),
            stopped: AtomicBool::new(false),
            open: Mutex::new(BTreeMap::new()),
            next_connection: AtomicU64::new(0),
            random: AtomicU64::new(seed | 1),
        });
        let addr = listener.local_addr()?;
        let accepting = Arc::clone(&state);
        std::thread::Builder::new()
            .name(format!("proxy-{addr}"))
            .spawn(move || accept_loop(&listener, &accepting))?;
        Ok(Self { addr, state })
    }

    /// Where the link accepts connections: the address to give the dialing node.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The faults in force.
    pub fn faults(&self) -> LinkFaults {
        self.state.faults()
    }

    /// Sets the faults from now on; cutting the link closes its open connections.
    pub fn set(&self, faults: LinkFaults) {
        *self
            .state
            .faults
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = faults;
        if faults.cut {
            self.state.cut_all();
        }
    }

    /// Makes the link healthy again (bytes already held back still go out late).
    pub fn heal(&self) {
        self.set(LinkFaults::default());
    }

    /// Stops the proxy: its connections close and it accepts no more. Dropping it does the
    /// same.
    pub fn stop(&self) {
        self.state.stopped.store(true, Ordering::Relaxed);
        self.state.cut_all();
    }
}

impl Drop for FaultyLink {
    fn drop(&mut self) {
        self.stop();
    }
}

fn accept_loop(listener: &TcpListener, state: &Arc<LinkState>) {
    while !state.stopped.load(Ordering::Relaxed) {
        let inbound = match listener.accept() {
            Ok((inbound, _)) => inbound,
            Err(_) => {
                std::thread::sleep(POLL);
                continue;
            }
        };
        if state.faults().cut {
            continue; // Refused: closed at once.
        }
        let _ = inbound.set_nonblocking(false);
        let Ok(outbound) = TcpStream::connect_timeout(&state.target, Duration::from_secs(1)) else {
            continue;
        };
        let _ = (inbound.set_nodelay(true), outbound.set_nodelay(true));
        let id = state.next_connection.fetch_add(1, Ordering::Relaxed);
        let (Ok(a), Ok(b)) = (inbound.try_clone(), outbound.try_clone()) else {
            continue;
        };
        state
            .open
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id, [a, b]);
        // The four pump threads of the connection; the last one out forgets it.
        let live = Arc::new(AtomicUsize::new(4));
        for (from, to) in [(&inbound, &outbound), (&outbound, &inbound)] {
            // Created first: if anything below fails, dropping them still counts down.
            let reading = Done::new(state, id, &live);
            let writing = Done::new(state, id, &live);
            let (Ok(from), Ok(to)) = (from.try_clone(), to.try_clone()) else {
                let _ = (
                    inbound.shutdown(Shutdown::Both),
                    outbound.shutdown(Shutdown::Both),
                );
                continue;
            };
            let (held, release) = sync_channel(HELD_CHUNKS);
            let spawned = std::thread::Builder::new()
                .spawn(move || read_side(from, &held, &reading))
                .and_then(|_| {
                    std::thread::Builder::new().spawn(move || write_side(to, &release, &writing))
                });
            if spawned.is_err() {
                let _ = (
                    inbound.shutdown(Shutdown::Both),
                    outbound.shutdown(Shutdown::Both),
                );
            }
        }
    }
}

/// A pump thread's share of its connection: when the last of the four ends (or is never
/// started), the connection is closed and forgotten.
struct Done {
    state: Arc<LinkState>,
    id: u64,
    live: Arc<AtomicUsize>,
}

impl Done {
    fn new(state: &Arc<LinkState>, id: u64, live: &Arc<AtomicUsize>) -> Self {
        Self {
            state: Arc::clone(state),
            id,
            live: Arc::clone(live),
        }
    }
}

impl std::ops::Deref for Done {
    type Target = LinkState;
    fn deref(&self) -> &LinkState {
        &self.state
    }
}

impl Drop for Done {
    fn drop(&mut self) {
        if self.live.fetch_sub(1, Ordering::AcqRel) == 1 {
            let closed = self
                .state
                .open
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(&self.id);
            for stream in closed.into_iter().flatten() {
                let _ = stream.shutdown(Shutdown::Both);
            }
        }
    }
}

/// Reads chunks and stamps each with the time it may go out (never before the previous
/// one's: order is kept). Ends at end of stream or when the link is cut.
fn read_side(mut from: TcpStream, held: &SyncSender<(Instant, Vec<u8>)>, state: &LinkState) {
    let mut last_due = Instant::now();
    let mut buf = vec![0; CHUNK];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let faults = state.faults();
        if faults.cut {
            break;
        }
        let due = (Instant::now() + faults.delay + state.jitter(faults.jitter)).max(last_due);
        last_due = due;
        if held.send((due, buf[..n].to_vec())).is_err() {
            break;
        }
    }
    let _ = from.shutdown(Shutdown::Both);
}

/// Writes each chunk once it is due, at the link's bandwidth.
fn write_side(mut to: TcpStream, release: &Receiver<(Instant, Vec<u8>)>, state: &LinkState) {
    while let Ok((due, bytes)) = release.recv() {
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        }
        if state.faults().cut || to.write_all(&bytes).is_err() {
            break;
        }
        if let Some(rate) = state.faults().bytes_per_second.filter(|&r| r > 0) {
            let nanos = (bytes.len() as u128 * 1_000_000_000) / u128::from(rate);
            std::thread::sleep(Duration::from_nanos(
                u64::try_from(nanos).unwrap_or(u64::MAX),
            ));
        }
    }
    let _ = to.shutdown(Shutdown::Both);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(link: &FaultyLink, target: &TcpListener) -> (TcpStream, TcpStream) {
        let client = TcpStream::connect(link.addr()).expect("connects");
        let (server, _) = target.accept().expect("forwarded");
        (client, server)
    }

    fn closed(stream: &mut TcpStream) -> bool {
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let mut byte = [0; 1];
        matches!(stream.read(&mut byte), Ok(0) | Err(_))
    }

    #[test]
    fn a_cut_link_closes_its_connections_and_refuses_new_ones_until_healed() {
        let target = TcpListener::bind("127.0.0.1:0").unwrap();
        let link = FaultyLink::start(target.local_addr().unwrap(), 1).unwrap();
        let (mut client, mut server) = pair(&link, &target);
        client.write_all(b"up").unwrap();
        let mut got = [0; 2];
        server.read_exact(&mut got).unwrap();
        link.set(LinkFaults::cut());
        assert!(closed(&mut server) && closed(&mut client));
        let mut refused = TcpStream::connect(link.addr()).unwrap();
        assert!(closed(&mut refused));
        target.set_nonblocking(true).unwrap();
        assert!(target.accept().is_err(), "nothing reached the target");
        target.set_nonblocking(false).unwrap();
        link.heal();
        let (mut client, mut server) = pair(&link, &target);
        client.write_all(b"back").unwrap();
        let mut got = [0; 4];
        server.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"back");
        // The answer direction passes too.
        server.write_all(b"ok").unwrap();
        let mut got = [0; 2];
        client.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"ok");
        assert_eq!(
            link.state.open.lock().unwrap().len(),
            1,
            "the cut connection is forgotten"
        );
    }

    #[test]
    fn a_throttled_link_passes_bytes_at_its_rate_in_order() {
        let target = TcpListener::bind("127.0.0.1:0").unwrap();
        let link = FaultyLink::start(target.local_addr().unwrap(), 2).unwrap();
        link.set(LinkFaults::throttled(64 * 1024));
        let (mut client, mut server) = pair(&link, &target);
        let sent: Vec<u8> = (0..128 * 1024u32).map(|i| (i % 251) as u8).collect();
        let start = Instant::now();
        let writer = std::thread::spawn(move || client.write_all(&sent).map(|()| sent));
        let mut got = vec![0; 128 * 1024];
        server.read_exact(&mut got).unwrap();
        let elapsed = start.elapsed();
        assert_eq!(got, writer.join().unwrap().unwrap());
        // 128 KiB at 64 KiB/s: about 2 s (the first chunk goes out at once).
        assert!(elapsed >= Duration::from_millis(1500), "{elapsed:?}");
    }

    #[test]
    fn jitter_keeps_the_order_of_bytes() {
        let target = TcpListener::bind("127.0.0.1:0").unwrap();
        let link = FaultyLink::start(target.local_addr().unwrap(), 3).unwrap();
        link.set(LinkFaults::delayed(
            Duration::from_millis(1),
            Duration::from_millis(20),
        ));
        let (mut client, mut server) = pair(&link, &target);
        let writer = std::thread::spawn(move || {
            for i in 0..200u8 {
                client.write_all(&[i]).unwrap();
                std::thread::sleep(Duration::from_micros(200));
            }
        });
        let mut got = vec![0; 200];
        server.read_exact(&mut got).unwrap();
        writer.join().unwrap();
        assert_eq!(got, (0..200u8).collect::<Vec<_>>());
    }
}
