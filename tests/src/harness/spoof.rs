//! What an attacker on a node or on the cluster network does, for hostile tests: send UDP
//! in another host's name, and record what others send.
//!
//! Both act only inside a namespace the test made, on addresses of its own world.

use super::Netns;
use nix::errno::Errno;
use nix::sys::socket::{
    bind, recvfrom, setsockopt, socket, sockopt, AddressFamily, LinkAddr, SockFlag, SockProtocol,
    SockType, SockaddrStorage,
};
use nix::sys::time::{TimeVal, TimeValLike};
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// A UDP socket bound to an address its namespace does not own (`IP_TRANSPARENT`, which a
/// process holding CAP_NET_ADMIN on a node may set), so what it sends carries that source.
#[derive(Debug)]
pub struct SpoofedSocket(UdpSocket);

impl SpoofedSocket {
    /// Opens the socket in `ns`, bound to `from`.
    pub fn bind(ns: &Netns, from: SocketAddr) -> io::Result<SpoofedSocket> {
        ns.run(|| {
            let family = match from {
                SocketAddr::V4(_) => AddressFamily::Inet,
                SocketAddr::V6(_) => AddressFamily::Inet6,
            };
            let fd = socket(family, SockType::Datagram, SockFlag::empty(), None)?;
            // Set before bind(2), which refuses a foreign address without it (and std's
            // own bind offers no way to set it first).
            match from {
                SocketAddr::V4(_) => setsockopt(&fd, sockopt::IpTransparent, &true)?,
                SocketAddr::V6(_) => ipv6_transparent(&fd)?,
            }
            bind(fd.as_raw_fd(), &SockaddrStorage::from(from))?;
            Ok(SpoofedSocket(UdpSocket::from(fd)))
        })
    }

    /// Sends `payload` to `to`.
    pub fn send_to(&self, payload: &[u8], to: SocketAddr) -> io::Result<usize> {
        self.0.send_to(payload, to)
    }
}

/// `IPV6_TRANSPARENT`, which nix does not wrap.
fn ipv6_transparent(fd: &OwnedFd) -> io::Result<()> {
    let on: libc::c_int = 1;
    // SAFETY: an int of the size passed, on a descriptor we own.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_IPV6,
            libc::IPV6_TRANSPARENT,
            (&on as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    match rc {
        0 => Ok(()),
        _ => Err(io::Error::last_os_error()),
    }
}

/// One UDP datagram a [`Sniffer`] saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Datagram {
    /// Its source.
    pub from: SocketAddr,
    /// Its destination.
    pub to: SocketAddr,
    /// Its payload.
    pub payload: Vec<u8>,
}

/// One IP packet a [`Sniffer`] kept, as it was on the wire (without the link header).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet {
    /// Its ethertype: 0x0800 IPv4, 0x86dd IPv6.
    pub ethertype: u16,
    /// The packet.
    pub bytes: Vec<u8>,
}

impl Packet {
    /// Its source and destination addresses, if it is IPv4 or IPv6.
    pub fn addresses(&self) -> Option<(IpAddr, IpAddr)> {
        let p = &self.bytes;
        match self.ethertype {
            0x0800 if p.len() >= 20 => Some((
                Ipv4Addr::from(<[u8; 4]>::try_from(&p[12..16]).ok()?).into(),
                Ipv4Addr::from(<[u8; 4]>::try_from(&p[16..20]).ok()?).into(),
            )),
            0x86dd if p.len() >= 40 => Some((
                Ipv6Addr::from(<[u8; 16]>::try_from(&p[8..24]).ok()?).into(),
                Ipv6Addr::from(<[u8; 16]>::try_from(&p[24..40]).ok()?).into(),
            )),
            _ => None,
        }
    }

    /// The UDP datagram it carries, if any.
    pub fn datagram(&self) -> Option<Datagram> {
        parse_udp(self.ethertype, &self.bytes)
    }
}

type Keep = Box<dyn Fn(&Packet) -> bool + Send>;

/// Records the IP packets that pass through a namespace's interfaces, in both directions
/// (a packet socket, as `tcpdump` uses), and that a filter keeps, on a thread of its own.
pub struct Sniffer {
    stop: Arc<AtomicBool>,
    seen: Arc<std::sync::Mutex<Vec<Packet>>>,
    thread: Option<JoinHandle<io::Result<()>>>,
}

impl std::fmt::Debug for Sniffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sniffer").finish_non_exhaustive()
    }
}

/// Datagrams a sniffer keeps at most; it stops recording beyond this.
pub const SNIFFER_LIMIT: usize = 10_000;
/// How long a sniffer runs at most, stopped or not.
pub const SNIFFER_LIFETIME: Duration = Duration::from_secs(120);

impl Sniffer {
    /// Starts recording, in `ns`, the UDP datagrams with `port` as source or destination.
    pub fn udp(ns: &Netns, port: u16) -> io::Result<Sniffer> {
        Sniffer::start(
            ns,
            Box::new(move |p: &Packet| {
                p.datagram()
                    .is_some_and(|d| d.from.port() == port || d.to.port() == port)
            }),
        )
    }

    /// Starts recording, in `ns`, every IP packet to or from an address in `nets`.
    pub fn addresses(ns: &Netns, nets: Vec<ipnet::IpNet>) -> io::Result<Sniffer> {
        Sniffer::start(
            ns,
            Box::new(move |p: &Packet| {
                p.addresses().is_some_and(|(src, dst)| {
                    nets.iter().any(|n| n.contains(&src) || n.contains(&dst))
                })
            }),
        )
    }

    fn start(ns: &Netns, keep: Keep) -> io::Result<Sniffer> {
        let fd = ns.run(|| {
            socket(
                AddressFamily::Packet,
                SockType::Datagram,
                SockFlag::empty(),
                SockProtocol::EthAll,
            )
        })?;
        setsockopt(&fd, sockopt::ReceiveTimeout, &TimeVal::milliseconds(50))?;
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (stop_flag, record) = (Arc::clone(&stop), Arc::clone(&seen));
        let thread = std::thread::Builder::new().name("sniffer".into()).spawn(
            move || -> io::Result<()> {
                let until = Instant::now() + SNIFFER_LIFETIME;
                let mut buf = vec![0u8; 65_536];
                while !stop_flag.load(Ordering::Relaxed) && Instant::now() < until {
                    let (n, from) = match recvfrom::<LinkAddr>(fd.as_raw_fd(), &mut buf) {
                        Ok(received) => received,
                        Err(Errno::EAGAIN | Errno::EINTR) => continue,
                        Err(e) => return Err(e.into()),
                    };
                    let packet = Packet {
                        ethertype: from.map_or(0, |a| u16::from_be(a.protocol())),
                        bytes: buf[..n].to_vec(),
                    };
                    if keep(&packet) {
                        let mut seen = record.lock().unwrap_or_else(|p| p.into_inner());
                        if seen.len() < SNIFFER_LIMIT {
                            seen.push(packet);
                        }
                    }
                }
                Ok(())
            },
        )?;
        Ok(Sniffer {
            stop,
            seen,
            thread: Some(thread),
        })
    }

    /// What was recorded so far.
    pub fn seen(&self) -> Vec<Packet> {
        self.seen.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The UDP datagrams recorded so far.
    pub fn datagrams(&self) -> Vec<Datagram> {
        self.seen().iter().filter_map(Packet::datagram).collect()
    }

    /// Stops recording and returns everything recorded; an error if the capture failed.
    pub fn stop(mut self) -> io::Result<Vec<Packet>> {
        self.finish()?;
        Ok(std::mem::take(
            &mut *self.seen.lock().unwrap_or_else(|p| p.into_inner()),
        ))
    }

    fn finish(&mut self) -> io::Result<()> {
        self.stop.store(true, Ordering::Relaxed);
        match self.thread.take().map(JoinHandle::join) {
            Some(Ok(result)) => result,
            Some(Err(_)) => Err(io::Error::other("the sniffer thread panicked")),
            None => Ok(()),
        }
    }
}

impl Drop for Sniffer {
    fn drop(&mut self) {
        let _ = self.finish();
    }
}

/// The UDP datagram in an IPv4 or IPv6 packet (no extension headers, not a fragment).
fn parse_udp(ethertype: u16, p: &[u8]) -> Option<Datagram> {
    let (src, dst, udp): (IpAddr, IpAddr, &[u8]) = match ethertype {
        0x0800 if p.len() >= 20 && p[0] >> 4 == 4 && p[9] == 17 => {
            let ihl = usize::from(p[0] & 0x0f) * 4;
            let fragment = u16::from_be_bytes([p[6], p[7]]) & 0x3fff;
            if fragment != 0 {
                return None;
            }
            let src = Ipv4Addr::from(<[u8; 4]>::try_from(&p[12..16]).ok()?);
            let dst = Ipv4Addr::from(<[u8; 4]>::try_from(&p[16..20]).ok()?);
            (src.into(), dst.into(), p.get(ihl..)?)
        }
        0x86dd if p.len() >= 40 && p[0] >> 4 == 6 && p[6] == 17 => {
            let src = Ipv6Addr::from(<[u8; 16]>::try_from(&p[8..24]).ok()?);
            let dst = Ipv6Addr::from(<[u8; 16]>::try_from(&p[24..40]).ok()?);
            (src.into(), dst.into(), &p[40..])
        }
        _ => return None,
    };
    let len = usize::from(u16::from_be_bytes([*udp.get(4)?, *udp.get(5)?]));
    Some(Datagram {
        from: SocketAddr::new(src, u16::from_be_bytes([udp[0], udp[1]])),
        to: SocketAddr::new(dst, u16::from_be_bytes([udp[2], udp[3]])),
        payload: udp.get(8..len)?.to_vec(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn udp_in_ipv4_and_ipv6_is_read_and_anything_else_is_not() {
        let mut v4 = vec![
            0x45, 0, 0, 31, 0, 0, 0, 0, 64, 17, 0, 0, 198, 19, 0, 1, 198, 19, 0, 3,
        ];
        v4.extend_from_slice(&[0xca, 0x6e, 0x1f, 0x90, 0, 11, 0, 0, b'a', b'b', b'c']);
        let d = parse_udp(0x0800, &v4).expect("udp over ipv4");
        assert_eq!(d.from, "198.19.0.1:51822".parse().unwrap());
        assert_eq!(d.to, "198.19.0.3:8080".parse().unwrap());
        assert_eq!(d.payload, b"abc");
        let mut fragment = v4.clone();
        fragment[7] = 1;
        assert_eq!(parse_udp(0x0800, &fragment), None);
        let mut tcp = v4.clone();
        tcp[9] = 6;
        assert_eq!(parse_udp(0x0800, &tcp), None);

        let mut v6 = vec![0x60, 0, 0, 0, 0, 10, 17, 64];
        v6.extend_from_slice(&"fd00::1".parse::<Ipv6Addr>().unwrap().octets());
        v6.extend_from_slice(&"fd00::3".parse::<Ipv6Addr>().unwrap().octets());
        v6.extend_from_slice(&[0xca, 0x6e, 0xca, 0x6e, 0, 10, 0, 0, b'x', b'y']);
        let d = parse_udp(0x86dd, &v6).expect("udp over ipv6");
        assert_eq!(d.to, "[fd00::3]:51822".parse().unwrap());
        assert_eq!(d.payload, b"xy");
        assert_eq!(parse_udp(0x0806, &v4), None, "ARP");
        assert_eq!(parse_udp(0x0800, &v4[..25]), None, "truncated");
    }
}
