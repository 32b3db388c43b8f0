//! The underlay UDP socket with segmentation offloads: one `sendmsg` carries up to 64
//! WireGuard datagrams (UDP GSO), one `recvmsg` returns a run of them (UDP GRO).

use nix::sys::socket::{
    recvmsg, sendmsg, setsockopt, sockopt, ControlMessage, ControlMessageOwned, MsgFlags,
    SockaddrStorage,
};
use std::io::{self, IoSlice, IoSliceMut};
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::sync::atomic::{AtomicBool, Ordering};

/// Most datagrams the kernel accepts in one GSO send (`UDP_MAX_SEGMENTS`).
pub const MAX_SEGMENTS: usize = 64;
/// Most bytes in one GSO send: the UDP length field bounds the super-datagram.
pub const MAX_GSO_BYTES: usize = 65_000;
/// Socket buffer size: a 64 KiB GSO burst is ~45 datagrams, and the default ~200 KiB
/// receive buffer overflows under a few of them (wireguard-go uses the same 7 MiB).
const SOCKET_BUFFER: usize = 7 << 20;

/// The gateway's UDP socket.
#[derive(Debug)]
pub struct Underlay {
    socket: UdpSocket,
    gso: AtomicBool,
    gro: bool,
}

/// One receive: `len` bytes holding datagrams of `segment` bytes each (the last may be shorter).
#[derive(Debug, Clone, Copy)]
pub struct Received {
    /// Bytes received.
    pub len: usize,
    /// Size of each datagram in the run.
    pub segment: usize,
    /// The sender.
    pub from: SocketAddr,
}

impl Underlay {
    /// Wraps a bound socket, enabling UDP GRO where the kernel supports it.
    pub fn new(socket: UdpSocket) -> io::Result<Underlay> {
        socket.set_nonblocking(true)?;
        // The FORCE variants pass net.core.[rw]mem_max when we have CAP_NET_ADMIN.
        if setsockopt(&socket, sockopt::RcvBufForce, &SOCKET_BUFFER).is_err() {
            let _ = setsockopt(&socket, sockopt::RcvBuf, &SOCKET_BUFFER);
        }
        if setsockopt(&socket, sockopt::SndBufForce, &SOCKET_BUFFER).is_err() {
            let _ = setsockopt(&socket, sockopt::SndBuf, &SOCKET_BUFFER);
        }
        let gro = setsockopt(&socket, sockopt::UdpGroSegment, &true).is_ok();
        let gso = nix::sys::socket::getsockopt(&socket, sockopt::UdpGsoSegment).is_ok();
        tracing::debug!(gro, gso, "underlay offloads");
        Ok(Underlay {
            socket,
            gso: AtomicBool::new(gso),
            gro,
        })
    }

    /// The socket, for polling.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.socket.as_fd()
    }

    /// The bound address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    /// Sends one datagram.
    pub fn send_one(&self, datagram: &[u8], to: SocketAddr) -> io::Result<()> {
        self.socket.send_to(datagram, to).map(|_| ())
    }

    /// Sends `buf` as datagrams of `segment` bytes (the last may be shorter) to `to`.
    pub fn send_segments(&self, buf: &[u8], segment: usize, to: SocketAddr) -> io::Result<()> {
        if buf.len() <= segment {
            return self.send_one(buf, to);
        }
        if self.gso.load(Ordering::Relaxed) {
            let seg = segment as u16;
            let cmsg = [ControlMessage::UdpGsoSegments(&seg)];
            let addr = SockaddrStorage::from(to);
            match sendmsg(
                self.socket.as_raw_fd(),
                &[IoSlice::new(buf)],
                &cmsg,
                MsgFlags::empty(),
                Some(&addr),
            ) {
                Ok(_) => return Ok(()),
                // EIO: the route's device cannot checksum GSO datagrams; stop trying.
                Err(nix::errno::Errno::EIO) | Err(nix::errno::Errno::EINVAL) => {
                    tracing::warn!("UDP segmentation offload refused by the kernel; sending datagrams one by one");
                    self.gso.store(false, Ordering::Relaxed);
                }
                Err(e) => return Err(e.into()),
            }
        }
        for datagram in buf.chunks(segment) {
            self.send_one(datagram, to)?;
        }
        Ok(())
    }

    /// Receives a run of datagrams; `Ok(None)` when nothing is waiting.
    pub fn recv(&self, buf: &mut [u8], cmsg: &mut [u8]) -> io::Result<Option<Received>> {
        let mut iov = [IoSliceMut::new(buf)];
        let msg = match recvmsg::<SockaddrStorage>(
            self.socket.as_raw_fd(),
            &mut iov,
            self.gro.then_some(cmsg),
            MsgFlags::MSG_DONTWAIT,
        ) {
            Ok(msg) => msg,
            Err(nix::errno::Errno::EAGAIN) => return Ok(None),
            // ICMP errors from earlier sends surface here; they concern one destination only.
            Err(nix::errno::Errno::ECONNREFUSED) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let mut segment = msg.bytes;
        if let Ok(cmsgs) = msg.cmsgs() {
            for c in cmsgs {
                if let ControlMessageOwned::UdpGroSegments(size) = c {
                    segment = size as usize;
                }
            }
        }
        let from = msg
            .address
            .and_then(|a| {
                a.as_sockaddr_in()
                    .map(|v4| SocketAddr::from((v4.ip(), v4.port())))
                    .or_else(|| {
                        a.as_sockaddr_in6()
                            .map(|v6| SocketAddr::from((v6.ip(), v6.port())))
                    })
            })
            .ok_or_else(|| io::Error::other("datagram without a source address"))?;
        let from = SocketAddr::new(from.ip().to_canonical(), from.port());
        Ok(Some(Received {
            len: msg.bytes,
            segment: segment.max(1),
            from,
        }))
    }

    /// Space for the control message carrying the GRO segment size.
    pub fn cmsg_buffer() -> Vec<u8> {
        nix::cmsg_space!(i32)
    }
}
