//! The Linux TUN device: layer-3 packets in and out of the kernel through a file descriptor.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::time::Duration;

const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
/// Longest a write waits for room in the kernel's queue before the packet is dropped.
const SEND_WAIT: Duration = Duration::from_millis(100);
const TUNSETOFFLOAD: libc::c_ulong = 0x4004_54d0;
const IFF_VNET_HDR: libc::c_int = 0x4000;
const TUN_F_CSUM: libc::c_uint = 0x01;
const TUN_F_TSO4: libc::c_uint = 0x02;
const TUN_F_TSO6: libc::c_uint = 0x04;

/// An open TUN interface; the kernel deletes the interface when the last descriptor closes.
///
/// That is deliberate: a gateway that crashes leaves no interface behind, and the
/// kernel withdraws every route through it with it.
#[derive(Debug)]
pub struct Tun {
    file: File,
    name: String,
    offload: bool,
}

#[repr(C)]
struct IfReq {
    name: [u8; libc::IFNAMSIZ],
    flags: libc::c_short,
    _pad: [u8; 22],
}

impl Tun {
    /// Creates (or attaches to) the TUN interface `name`, without packet-information headers.
    ///
    /// Every packet read or written carries a `virtio_net_hdr` in front (see
    /// `datapath::offload`). TCP segmentation offload is enabled when the kernel allows it,
    /// so reads may return 64 KiB super-packets; [`Tun::offload`] says whether it did.
    pub fn open(name: &str) -> io::Result<Tun> {
        if name.is_empty() || name.len() >= libc::IFNAMSIZ {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("interface name {name:?} must be 1 to 15 bytes"),
            ));
        }
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_CLOEXEC | libc::O_NONBLOCK)
            .open("/dev/net/tun")
            .map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("opening /dev/net/tun: {e}; the gateway needs the TUN device and CAP_NET_ADMIN"),
                )
            })?;
        let mut req = IfReq {
            name: [0; libc::IFNAMSIZ],
            flags: (libc::IFF_TUN | libc::IFF_NO_PI | IFF_VNET_HDR) as libc::c_short,
            _pad: [0; 22],
        };
        req.name[..name.len()].copy_from_slice(name.as_bytes());
        // SAFETY: TUNSETIFF reads and writes an ifreq, which `req` is laid out as.
        let rc = unsafe { libc::ioctl(file.as_raw_fd(), TUNSETIFF, &mut req) };
        if rc < 0 {
            let e = io::Error::last_os_error();
            return Err(io::Error::new(
                e.kind(),
                format!("creating TUN interface {name:?}: {e}; is another process holding it?"),
            ));
        }
        // SAFETY: TUNSETOFFLOAD takes the flags by value.
        let offload = unsafe {
            libc::ioctl(
                file.as_raw_fd(),
                TUNSETOFFLOAD,
                (TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6) as libc::c_ulong,
            )
        } == 0;
        if !offload {
            tracing::warn!(interface = name, error = %io::Error::last_os_error(), "TUN segmentation offload unavailable; one packet per read");
        }
        Ok(Tun {
            file,
            name: name.to_owned(),
            offload,
        })
    }

    /// The descriptor, for polling.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }

    /// Whether the kernel hands over TCP super-packets (TSO) and accepts them back.
    pub fn offload(&self) -> bool {
        self.offload
    }

    /// The interface name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Reads one packet if one is waiting, vnet header first.
    pub fn try_recv(&self, buf: &mut [u8]) -> io::Result<Option<usize>> {
        // SAFETY: reading into a buffer we own, with its length.
        let n = unsafe { libc::read(self.file.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        match n {
            n if n >= 0 => Ok(Some(n as usize)),
            _ => match io::Error::last_os_error() {
                e if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
                e => Err(e),
            },
        }
    }

    /// Writes one packet to the kernel, vnet header first.
    ///
    /// A full kernel queue is waited out briefly rather than dropping at once; past
    /// [`SEND_WAIT`] the packet is given up (the caller counts it), so a stuck consumer
    /// can never stall the packet thread for good.
    pub fn send(&self, packet: &[u8]) -> io::Result<usize> {
        let deadline = std::time::Instant::now() + SEND_WAIT;
        loop {
            // SAFETY: writing from a buffer we own, with its length.
            let n =
                unsafe { libc::write(self.file.as_raw_fd(), packet.as_ptr().cast(), packet.len()) };
            if n >= 0 {
                return Ok(n as usize);
            }
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::WouldBlock {
                let left = deadline.saturating_duration_since(std::time::Instant::now());
                if left.is_zero() {
                    return Err(e);
                }
                wait_writable(self.file.as_fd(), left)?;
                continue;
            }
            return Err(e);
        }
    }
}

fn wait_writable(fd: BorrowedFd<'_>, timeout: Duration) -> io::Result<bool> {
    poll_one(fd, libc::POLLOUT, timeout)
}

fn poll_one(fd: BorrowedFd<'_>, events: libc::c_short, timeout: Duration) -> io::Result<bool> {
    Ok(wait_ready([(fd, events)], timeout)?[0])
}

/// Waits until any of `fds` has one of its events or the timeout passes; says which are ready.
/// An interrupted wait reports nothing ready.
pub fn wait_ready<const N: usize>(
    fds: [(BorrowedFd<'_>, libc::c_short); N],
    timeout: Duration,
) -> io::Result<[bool; N]> {
    let mut pfds = fds.map(|(fd, events)| libc::pollfd {
        fd: fd.as_raw_fd(),
        events,
        revents: 0,
    });
    let ms = timeout.as_millis().min(i32::MAX as u128) as libc::c_int;
    // SAFETY: N valid pollfds we own.
    let rc = unsafe { libc::poll(pfds.as_mut_ptr(), N as libc::nfds_t, ms) };
    if rc < 0 {
        return match io::Error::last_os_error() {
            e if e.kind() == io::ErrorKind::Interrupted => Ok([false; N]),
            e => Err(e),
        };
    }
    Ok(pfds.map(|p| p.revents != 0))
}
