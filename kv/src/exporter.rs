//! `serve --metrics-addr`: the node's metrics (what `adapter_common::metrics` records) in
//! Prometheus's text format, over a minimal HTTP/1.1 endpoint on a thread of its own.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use adapter_common::metrics::{LATENCY_BUCKETS as SECONDS, SIZE_BUCKETS as SIZES};

/// Installs the Prometheus recorder for this process and serves `GET /metrics` on `addr`.
pub(crate) fn serve(addr: SocketAddr) -> Result<(), String> {
    let listener =
        TcpListener::bind(addr).map_err(|e| format!("cannot listen for metrics on {addr}: {e}"))?;
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &SECONDS)
        .and_then(|b| b.set_buckets_for_metric(Matcher::Suffix("_size".into()), &SIZES))
        .and_then(|b| b.set_buckets_for_metric(Matcher::Suffix("_entries".into()), &SIZES))
        .map_err(|e| format!("cannot configure the metrics: {e}"))?
        .install_recorder()
        .map_err(|e| format!("cannot install the metrics recorder: {e}"))?;
    // Histograms keep their samples until drained: drain them every second whether or not
    // anyone scrapes, so that memory stays flat.
    let upkeep = handle.clone();
    std::thread::Builder::new()
        .name("metrics-upkeep".into())
        .spawn(move || loop {
            std::thread::sleep(Duration::from_secs(1));
            upkeep.run_upkeep();
        })
        .map_err(|e| format!("cannot start the metrics thread: {e}"))?;
    std::thread::Builder::new()
        .name("metrics".into())
        .spawn(move || {
            for stream in listener.incoming() {
                match stream {
                    // One scrape at a time, each given 2 s in all to send its request, so a
                    // slow or silent client holds the endpoint for 2 s at most.
                    Ok(stream) => {
                        if let Err(error) = answer(stream, &handle) {
                            tracing::debug!(%error, "a metrics request failed");
                        }
                    }
                    // Out of file descriptors, say: do not spin.
                    Err(_) => std::thread::sleep(Duration::from_millis(50)),
                }
            }
        })
        .map_err(|e| format!("cannot start the metrics thread: {e}"))?;
    Ok(())
}

/// How long a client has to send its request, in all.
const REQUEST_TIME: Duration = Duration::from_secs(2);

/// Reads from a connection until a deadline, however the bytes trickle in.
struct Deadline<'a> {
    stream: &'a TcpStream,
    until: Instant,
}

impl Read for Deadline<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let left = self.until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(std::io::ErrorKind::TimedOut.into());
        }
        self.stream.set_read_timeout(Some(left))?;
        (&mut &*self.stream).read(buf)
    }
}

fn answer(stream: TcpStream, handle: &PrometheusHandle) -> std::io::Result<()> {
    stream.set_write_timeout(Some(REQUEST_TIME))?;
    let mut reader = BufReader::new(Deadline {
        stream: &stream,
        until: Instant::now() + REQUEST_TIME,
    });
    let mut request_line = String::new();
    // At most 8 KiB of request line and headers; the rest is not read.
    let mut limited = (&mut reader).take(8192);
    limited.read_line(&mut request_line)?;
    loop {
        let mut header = String::new();
        if limited.read_line(&mut header)? == 0 || header == "\r\n" || header == "\n" {
            break;
        }
    }
    let mut parts = request_line.split_whitespace();
    let (method, path) = (parts.next(), parts.next());
    let (status, body) = match (method, path) {
        (Some("GET"), Some("/metrics")) => ("200 OK", handle.render()),
        (Some("GET"), _) => ("404 Not Found", "try /metrics\n".to_string()),
        _ => ("405 Method Not Allowed", "GET /metrics\n".to_string()),
    };
    let mut stream = stream;
    write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    stream.flush()
}
