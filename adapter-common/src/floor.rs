//! The machine's floor for a commit: what no replicated write can beat on this disk and this
//! loopback, measured where the nodes run, so that a commit latency can be read as a ratio to
//! it (fsync and round-trip times differ five-fold between machines).
//!
//! ```no_run
//! let floor = adapter_common::floor::Floor::measure(std::path::Path::new("data"), 200)?;
//! println!("{floor}");
//! # Ok::<(), std::io::Error>(())
//! ```

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

/// The machine's floor for one commit of a 3-node cluster, measured where the nodes run:
/// a commit needs at least the leader's fsync and one round trip to a follower (whose fsync
/// overlaps the leader's).
#[derive(Debug, Clone, Copy)]
pub struct Floor {
    /// Median time of appending 4 KiB to a file and `fdatasync`ing it, in the directory the
    /// nodes keep their data in.
    pub fsync: Duration,
    /// Median time of a 64-byte TCP ping-pong over 127.0.0.1 (Nagle off).
    pub round_trip: Duration,
}

impl Floor {
    /// Measures both, `samples` times each (at least once), the fsync in a file of its own
    /// (removed afterwards) in `dir`: put it where the nodes keep their data.
    pub fn measure(dir: &Path, samples: usize) -> std::io::Result<Self> {
        let samples = samples.max(1);
        Ok(Self {
            fsync: median(fsync_times(dir, samples)?),
            round_trip: median(round_trip_times(samples)?),
        })
    }

    /// fsync + round trip: no commit can be faster.
    pub fn total(&self) -> Duration {
        self.fsync + self.round_trip
    }
}

impl std::fmt::Display for Floor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "floor {:.3} ms = fsync (4 KiB append + fdatasync, median) {:.3} ms + TCP round trip \
             (127.0.0.1, median) {:.3} ms",
            millis(self.total()),
            millis(self.fsync),
            millis(self.round_trip)
        )
    }
}

/// The median of `times` (zero when empty).
fn median(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times.get(times.len() / 2).copied().unwrap_or_default()
}

fn fsync_times(dir: &Path, samples: usize) -> std::io::Result<Vec<Duration>> {
    let path = dir.join(format!("raft-bench-floor-{}", std::process::id()));
    let mut file = std::fs::File::create(&path)?;
    let block = [0x5au8; 4096];
    let mut times = Vec::with_capacity(samples);
    let result = (0..samples).try_for_each(|_| {
        let start = Instant::now();
        file.write_all(&block)?;
        file.sync_data()?;
        times.push(start.elapsed());
        Ok(())
    });
    let _ = std::fs::remove_file(&path);
    result.map(|()| times)
}

fn round_trip_times(samples: usize) -> std::io::Result<Vec<Duration>> {
    const TIMEOUT: Duration = Duration::from_secs(5);
    let listener = TcpListener::bind("127.0.0.1:0")?;
    // Connected before accepted (the kernel completes it), so nothing is left waiting if
    // either fails; and no read waits for ever.
    let mut stream = TcpStream::connect(listener.local_addr()?)?;
    let (mut echo_end, _) = listener.accept()?;
    drop(listener);
    for end in [&stream, &echo_end] {
        end.set_nodelay(true)?;
        end.set_read_timeout(Some(TIMEOUT))?;
        end.set_write_timeout(Some(TIMEOUT))?;
    }
    let echo = std::thread::spawn(move || {
        let mut buffer = [0u8; 64];
        while echo_end.read_exact(&mut buffer).is_ok() {
            if echo_end.write_all(&buffer).is_err() {
                break;
            }
        }
    });
    let mut buffer = [7u8; 64];
    let mut times = Vec::with_capacity(samples);
    let result = (0..samples).try_for_each(|_| {
        let start = Instant::now();
        stream.write_all(&buffer)?;
        stream.read_exact(&mut buffer)?;
        times.push(start.elapsed());
        Ok(())
    });
    drop(stream);
    let _ = echo.join();
    result.map(|()| times)
}

fn millis(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}
