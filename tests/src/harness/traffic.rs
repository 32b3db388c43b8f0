//! Test traffic between pods: echo servers and bounded round-trips, all opened inside
//! the test's own namespaces, so no packet can leave them.

use super::netns::Netns;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

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
