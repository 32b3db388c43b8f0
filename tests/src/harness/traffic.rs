//! Test traffic between pods: echo servers and bounded round-trips, all opened inside
//! the test's own namespaces, so no packet can leave them.

use super::netns::Netns;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Timeout of one socket operation in a round-trip.
pub const IO_TIMEOUT: Duration = Duration::from_secs(2);

/// A TCP and UDP echo server on one address inside a namespace; stops on drop.
pub struct Echo {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    addr: SocketAddr,
}

impl Echo {
    /// Listens on `addr` (TCP and UDP) inside `ns`.
    pub fn start(ns: &Netns, addr: SocketAddr) -> io::Result<Echo> {
        let (tcp, udp) = ns.try_run(|| -> io::Result<(TcpListener, UdpSocket)> {
            Ok((TcpListener::bind(addr)?, UdpSocket::bind(addr)?))
        })??;
        let stop = Arc::new(AtomicBool::new(false));
        tcp.set_nonblocking(true)?;
        udp.set_read_timeout(Some(Duration::from_millis(100)))?;
        let tcp_stop = Arc::clone(&stop);
        let tcp_thread = std::thread::spawn(move || {
            let mut conns: Vec<JoinHandle<()>> = Vec::new();
            while !tcp_stop.load(Ordering::Relaxed) {
                match tcp.accept() {
                    Ok((conn, _)) => {
                        let stop = Arc::clone(&tcp_stop);
                        conns.push(std::thread::spawn(move || echo_tcp(conn, &stop)));
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(10))
                    }
                    Err(_) => break,
                }
            }
            for c in conns {
                let _ = c.join();
            }
        });
        let udp_stop = Arc::clone(&stop);
        let udp_thread = std::thread::spawn(move || {
            let mut buf = vec![0u8; 65_536];
            while !udp_stop.load(Ordering::Relaxed) {
                if let Ok((n, from)) = udp.recv_from(&mut buf) {
                    let _ = udp.send_to(&buf[..n], from);
                }
            }
        });
        Ok(Echo {
            stop,
            threads: vec![tcp_thread, udp_thread],
            addr,
        })
    }

    /// The address served.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

fn echo_tcp(mut conn: TcpStream, stop: &AtomicBool) {
    let _ = conn.set_read_timeout(Some(Duration::from_millis(100)));
    let mut buf = vec![0u8; 65_536];
    while !stop.load(Ordering::Relaxed) {
        match conn.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => {
                if conn.write_all(&buf[..n]).is_err() {
                    return;
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return,
        }
    }
}

impl Drop for Echo {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Connects from inside `ns` to `to`, sends `payload`, and returns what came back.
pub fn tcp_roundtrip(ns: &Netns, to: SocketAddr, payload: &[u8]) -> io::Result<Vec<u8>> {
    let mut conn = tcp_connect(ns, to)?;
    conn.write_all(payload)?;
    let mut back = vec![0u8; payload.len()];
    conn.read_exact(&mut back)?;
    Ok(back)
}

/// Opens a TCP connection from inside `ns`, with socket timeouts set.
pub fn tcp_connect(ns: &Netns, to: SocketAddr) -> io::Result<TcpStream> {
    let conn = ns.try_run(|| TcpStream::connect_timeout(&to, IO_TIMEOUT))??;
    conn.set_read_timeout(Some(IO_TIMEOUT))?;
    conn.set_write_timeout(Some(IO_TIMEOUT))?;
    conn.set_nodelay(true)?;
    Ok(conn)
}

/// Sends one datagram from inside `ns` to an echo server and returns the reply.
pub fn udp_roundtrip(ns: &Netns, to: SocketAddr, payload: &[u8]) -> io::Result<Vec<u8>> {
    let any: SocketAddr = if to.is_ipv4() {
        "0.0.0.0:0".parse().expect("literal")
    } else {
        "[::]:0".parse().expect("literal")
    };
    let sock = ns.try_run(|| UdpSocket::bind(any))??;
    sock.set_read_timeout(Some(Duration::from_millis(500)))?;
    sock.send_to(payload, to)?;
    let mut buf = vec![0u8; payload.len() + 1];
    let (n, from) = sock.recv_from(&mut buf)?;
    if from != to {
        return Err(io::Error::other(format!(
            "reply from {from}, expected {to}"
        )));
    }
    buf.truncate(n);
    Ok(buf)
}

/// A payload whose bytes depend on their position, so reordering or corruption shows.
pub fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

/// A bounded TCP stream from a pod to an echo server: 16 KiB chunks sent and read
/// back one at a time and verified, until stopped, [`Stream::MAX_CHUNKS`] or
/// [`Stream::MAX_TIME`]. Proves a connection stays unbroken across a change.
pub struct Stream {
    stop: Arc<AtomicBool>,
    chunks: Arc<AtomicU64>,
    thread: Option<JoinHandle<Result<u64, String>>>,
}

impl Stream {
    /// The most chunks one stream sends.
    pub const MAX_CHUNKS: u64 = 200_000;
    /// The longest one stream runs.
    pub const MAX_TIME: Duration = Duration::from_secs(120);
    /// Size of one chunk.
    pub const CHUNK: usize = 16 * 1024;

    /// Connects from `ns` to `to` and starts streaming; a read may wait up to [`IO_TIMEOUT`].
    pub fn start(ns: &Netns, to: SocketAddr) -> io::Result<Stream> {
        Self::start_with_timeout(ns, to, IO_TIMEOUT)
    }

    /// Like [`Stream::start`], with each read and write allowed `timeout` (to ride out a gap).
    pub fn start_with_timeout(ns: &Netns, to: SocketAddr, timeout: Duration) -> io::Result<Stream> {
        Self::start_paced(ns, to, timeout, Duration::ZERO)
    }

    /// Like [`Stream::start_with_timeout`], sending at most one chunk per `pace`: a live
    /// connection that leaves the CPU to what is being measured.
    pub fn start_paced(
        ns: &Netns,
        to: SocketAddr,
        timeout: Duration,
        pace: Duration,
    ) -> io::Result<Stream> {
        let mut conn = tcp_connect(ns, to)?;
        conn.set_read_timeout(Some(timeout))?;
        conn.set_write_timeout(Some(timeout))?;
        let stop = Arc::new(AtomicBool::new(false));
        let chunks = Arc::new(AtomicU64::new(0));
        let (s, c) = (Arc::clone(&stop), Arc::clone(&chunks));
        let thread = std::thread::Builder::new()
            .name("test-stream".into())
            .spawn(move || {
                let started = Instant::now();
                let mut n = 0u64;
                let mut back = vec![0u8; Self::CHUNK];
                while !s.load(Ordering::Relaxed)
                    && n < Self::MAX_CHUNKS
                    && started.elapsed() < Self::MAX_TIME
                {
                    let sent = Instant::now();
                    let chunk = pattern(Self::CHUNK, n as u8);
                    conn.write_all(&chunk)
                        .map_err(|e| format!("write chunk {n}: {e}"))?;
                    conn.read_exact(&mut back)
                        .map_err(|e| format!("read chunk {n}: {e}"))?;
                    if back != chunk {
                        return Err(format!("chunk {n} corrupted"));
                    }
                    n += 1;
                    c.store(n, Ordering::Relaxed);
                    if let Some(rest) = pace.checked_sub(sent.elapsed()) {
                        std::thread::sleep(rest);
                    }
                }
                Ok(n)
            })?;
        Ok(Stream {
            stop,
            chunks,
            thread: Some(thread),
        })
    }

    /// Chunks sent and verified so far.
    pub fn chunks(&self) -> u64 {
        self.chunks.load(Ordering::Relaxed)
    }

    /// Whether the stream has ended (broken, or reached a bound).
    pub fn ended(&self) -> bool {
        self.thread.as_ref().is_none_or(|t| t.is_finished())
    }

    /// Stops the stream; the verified chunk count, or why the connection broke.
    pub fn finish(mut self) -> Result<u64, String> {
        self.stop.store(true, Ordering::Relaxed);
        match self.thread.take() {
            Some(t) => t.join().map_err(|_| "stream thread panicked".to_string())?,
            None => Err("stream already finished".to_string()),
        }
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// What a [`UdpProbe`] saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbeReport {
    /// Datagrams sent.
    pub sent: u64,
    /// Echoes received.
    pub received: u64,
    /// The longest time between two consecutive echoes (or from the last echo to the
    /// probe's end): the datapath's gap, both directions together.
    pub largest_gap: Duration,
    /// When the largest gap began, as time since the probe started.
    pub gap_started: Duration,
}

impl std::fmt::Display for ProbeReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} sent, {} echoed, largest gap {:?} (from {:?} after the start)",
            self.sent, self.received, self.largest_gap, self.gap_started
        )
    }
}

/// A UDP probe across the clusterset: from inside a namespace it sends a numbered
/// datagram every [`UdpProbe::INTERVAL`] to an echo server and times the echoes, so the
/// largest gap between two of them is the datapath's gap (both directions). Bounded by
/// [`UdpProbe::MAX_PACKETS`] and [`UdpProbe::MAX_TIME`].
pub struct UdpProbe {
    stop: Arc<AtomicBool>,
    received: Arc<AtomicU64>,
    sender: Option<JoinHandle<u64>>,
    receiver: Option<JoinHandle<(u64, Duration, Duration)>>,
}

impl UdpProbe {
    /// Time between two datagrams.
    pub const INTERVAL: Duration = Duration::from_millis(10);
    /// The most datagrams one probe sends.
    pub const MAX_PACKETS: u64 = 12_000;
    /// The longest one probe runs.
    pub const MAX_TIME: Duration = Duration::from_secs(120);

    /// Starts probing `to` (an [`Echo`] server) from inside `ns`.
    pub fn start(ns: &Netns, to: SocketAddr) -> io::Result<UdpProbe> {
        let any: SocketAddr = if to.is_ipv4() {
            "0.0.0.0:0".parse().expect("literal")
        } else {
            "[::]:0".parse().expect("literal")
        };
        let socket = ns.try_run(|| UdpSocket::bind(any))??;
        socket.set_read_timeout(Some(Duration::from_millis(20)))?;
        let rx = socket.try_clone()?;
        let stop = Arc::new(AtomicBool::new(false));
        let received = Arc::new(AtomicU64::new(0));
        let started = Instant::now();
        let (s, r) = (Arc::clone(&stop), Arc::clone(&received));
        let receiver = std::thread::Builder::new()
            .name("test-probe-rx".into())
            .spawn(move || {
                let mut buf = [0u8; 64];
                let (mut n, mut last, mut gap, mut gap_at) =
                    (0u64, None::<Instant>, Duration::ZERO, Duration::ZERO);
                while !s.load(Ordering::Relaxed)
                    && started.elapsed() < Self::MAX_TIME + Duration::from_secs(1)
                {
                    match rx.recv_from(&mut buf) {
                        Ok((len, from)) if from == to && len == 8 => {
                            let now = Instant::now();
                            if let Some(prev) = last {
                                if now - prev > gap {
                                    gap = now - prev;
                                    gap_at = prev - started;
                                }
                            }
                            last = Some(now);
                            n += 1;
                            r.store(n, Ordering::Relaxed);
                        }
                        _ => {}
                    }
                }
                // Echoes that stopped and never resumed are a gap too.
                if let Some(prev) = last {
                    let tail = Instant::now().saturating_duration_since(prev);
                    if tail > gap {
                        gap = tail;
                        gap_at = prev - started;
                    }
                }
                (n, gap, gap_at)
            })?;
        let s = Arc::clone(&stop);
        let sender = std::thread::Builder::new()
            .name("test-probe-tx".into())
            .spawn(move || {
                let mut sent = 0u64;
                let mut next = Instant::now();
                while !s.load(Ordering::Relaxed)
                    && sent < Self::MAX_PACKETS
                    && started.elapsed() < Self::MAX_TIME
                {
                    // A datagram that cannot be sent (no route for a moment) is a lost one.
                    let _ = socket.send_to(&sent.to_be_bytes(), to);
                    sent += 1;
                    next += Self::INTERVAL;
                    let now = Instant::now();
                    if next > now {
                        std::thread::sleep(next - now);
                    } else {
                        // Late (a loaded machine): carry on from now rather than burst.
                        next = now;
                    }
                }
                sent
            })?;
        Ok(UdpProbe {
            stop,
            received,
            sender: Some(sender),
            receiver: Some(receiver),
        })
    }

    /// Echoes received so far.
    pub fn received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }

    /// Stops the probe (after a last [`UdpProbe::INTERVAL`]-spaced echo has had time to
    /// come back) and reports.
    ///
    /// Panics if the sender or receiver thread panicked: a probe that stopped measuring must
    /// not report a gap of zero.
    pub fn finish(mut self) -> ProbeReport {
        self.stop.store(true, Ordering::Relaxed);
        let sent = self.sender.take().map_or(0, |t| joined("sender", t.join()));
        let (received, largest_gap, gap_started) = self
            .receiver
            .take()
            .map_or((0, Duration::ZERO, Duration::ZERO), |t| {
                joined("receiver", t.join())
            });
        ProbeReport {
            sent,
            received,
            largest_gap,
            gap_started,
        }
    }
}

impl Drop for UdpProbe {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.sender.take() {
            let _ = t.join();
        }
        if let Some(t) = self.receiver.take() {
            let _ = t.join();
        }
    }
}

/// A probe thread's result; panics, saying why, if the thread panicked.
fn joined<T>(what: &str, result: std::thread::Result<T>) -> T {
    match result {
        Ok(value) => value,
        Err(panic) => {
            let why = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            panic!("the UDP probe's {what} thread panicked: {why}")
        }
    }
}
