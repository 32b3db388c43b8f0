//! Network namespaces owned by one test, and the links, addresses and routes
//! inside them.

use std::ffi::OsStr;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::net::{IpAddr, Ipv6Addr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use ipnet::IpNet;
use nix::errno::Errno;
use nix::sched::{setns, CloneFlags};
use nix::sys::socket::{
    recvfrom, sendto, setsockopt, socket, sockopt, AddressFamily, MsgFlags, SockFlag, SockProtocol,
    SockType, SockaddrIn, SockaddrIn6, SockaddrStorage,
};
use nix::sys::time::{TimeVal, TimeValLike};

use super::process::ChildGuard;
use super::{HarnessError, ScratchDir};

/// Where `ip netns add` publishes a namespace so it can be opened by name.
const NETNS_RUN_DIR: &str = "/var/run/netns";

/// The kernel's limit on interface names, excluding the terminating NUL.
pub const IFNAMSIZ_MAX: usize = 15;

/// Kernel settings every test namespace gets beyond the kernel's defaults:
/// its IPv6 addresses work at once instead of after duplicate detection.
/// Forwarding and reverse-path filtering keep the kernel's defaults (off,
/// off) unless the namespace is built as a [`Profile::Node`] or a
/// [`Profile::Router`].
const BASE_SYSCTLS: &[&str] = &[
    "net.ipv6.conf.all.accept_dad=0",
    "net.ipv6.conf.default.accept_dad=0",
];

/// What a namespace stands for, and so which kernel settings it gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    /// A pod, a host or a process's own namespace: the kernel's defaults, no forwarding.
    Host,
    /// A Kubernetes node: forwards (kubelet requires it) and filters reverse
    /// paths strictly, as RHEL-family nodes do by default. Strict is the
    /// harshest setting a node ships with, so whatever works here works
    /// under Debian's loose filter too.
    Node,
    /// A router on the underlay: forwards, kernel-default reverse-path filter.
    Router,
}

impl Profile {
    fn sysctls(self) -> &'static [&'static str] {
        match self {
            Profile::Host => &[],
            Profile::Node => &[
                "net.ipv4.ip_forward=1",
                "net.ipv6.conf.all.forwarding=1",
                "net.ipv4.conf.all.rp_filter=1",
                "net.ipv4.conf.default.rp_filter=1",
            ],
            Profile::Router => &["net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1"],
        }
    }
}

static NEXT_ID: AtomicU32 = AtomicU32::new(0);

/// A network namespace created for one test; dropping it deletes the namespace.
#[derive(Debug)]
pub struct Netns {
    name: String,
    logs: ScratchDir,
}

impl Netns {
    /// Creates `cw-<pid>-<n>-<role>` with `lo` up and the kernel's defaults: a [`Profile::Host`].
    pub fn new(role: &str) -> io::Result<Netns> {
        Netns::with_profile(role, Profile::Host)
    }

    /// Creates `cw-<pid>-<n>-<role>` with `lo` up and `profile`'s kernel settings.
    pub fn with_profile(role: &str, profile: Profile) -> io::Result<Netns> {
        if role.is_empty()
            || !role
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "namespace role {role:?} must be non-empty ASCII letters, digits, '-' or '_'"
                ),
            ));
        }
        let n = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        let name = format!("cw-{}-{n}-{role}", std::process::id());
        let logs = ScratchDir::new(&format!("{name}-"))?;
        run_ok(Command::new("ip").args(["netns", "add", &name]))?;
        // From here on the guard exists, so an early return deletes the namespace.
        let ns = Netns { name, logs };
        ns.ip(["link", "set", "lo", "up"])?;
        ns.exec_ok(
            "sysctl",
            ["-q", "-w"]
                .iter()
                .chain(BASE_SYSCTLS)
                .chain(profile.sysctls()),
        )?;
        Ok(ns)
    }

    /// Turns reverse-path filtering off on every interface there is now: a hostile
    /// site's own nodes, whose operator lets spoofed sources out on purpose.
    pub fn disable_reverse_path_filter(&self) -> io::Result<()> {
        self.exec_ok(
            "sh",
            [
                "-c",
                "for f in /proc/sys/net/ipv4/conf/*/rp_filter; do echo 0 > \"$f\"; done",
            ],
        )
        .map(drop)
    }

    /// The namespace's name as `ip netns list` shows it.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The bind-mounted namespace file that `setns` opens.
    pub fn path(&self) -> PathBuf {
        Path::new(NETNS_RUN_DIR).join(&self.name)
    }

    /// The directory holding logs of processes spawned in this namespace.
    pub fn log_dir(&self) -> &Path {
        self.logs.path()
    }

    /// Runs `program args` inside the namespace and returns its output, whatever the exit status.
    pub fn exec<I, S>(&self, program: &str, args: I) -> io::Result<Output>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.exec_command(program, args)
            .stdin(Stdio::null())
            .output()
    }

    /// Runs `program args` inside the namespace; its stdout on success, else an error with stderr.
    pub fn exec_ok<I, S>(&self, program: &str, args: I) -> io::Result<String>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        run_ok(&mut self.exec_command(program, args))
    }

    /// Runs `ip -n <this> args` (no mount-namespace setup, so cheaper than `exec`).
    pub fn ip<I, S>(&self, args: I) -> io::Result<String>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        run_ok(Command::new("ip").args(["-n", &self.name]).args(args))
    }

    fn exec_command<I, S>(&self, program: &str, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name, program]).args(args);
        cmd
    }

    /// Runs `f` on a fresh thread that has joined this namespace; sockets it opens stay here.
    ///
    /// Panics if the namespace cannot be joined; see [`Netns::try_run`].
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        match self.try_run(f) {
            Ok(value) => value,
            Err(e) => panic!("cannot enter network namespace {}: {e}", self.name),
        }
    }

    /// Like [`Netns::run`], but reports a failure to join the namespace as an error.
    pub fn try_run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> io::Result<T> {
        let path = self.path();
        let file = File::open(&path)
            .map_err(|e| io::Error::new(e.kind(), format!("open {}: {e}", path.display())))?;
        std::thread::scope(|scope| {
            let handle = std::thread::Builder::new()
                .name(format!("in-{}", self.name))
                .spawn_scoped(scope, move || -> io::Result<T> {
                    // Only this thread moves; the test's other threads stay in
                    // their namespaces, and the thread ends with the closure.
                    setns(file.as_fd(), CloneFlags::CLONE_NEWNET)?;
                    Ok(f())
                })?;
            match handle.join() {
                Ok(result) => result,
                Err(panic) => std::panic::resume_unwind(panic),
            }
        })
    }

    /// Starts `cmd` inside the namespace with output captured to a log in [`Netns::log_dir`].
    pub fn spawn(&self, cmd: &mut Command) -> io::Result<ChildGuard> {
        let program = Path::new(cmd.get_program())
            .file_name()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "process".into());
        let n = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        let log = self.log_dir().join(format!("{program}-{n}.log"));
        self.spawn_logged(cmd, &log)
    }

    /// Starts `cmd` inside the namespace with stdout and stderr appended to `log`.
    pub fn spawn_logged(&self, cmd: &mut Command, log: &Path) -> io::Result<ChildGuard> {
        spawn_logged_in(&self.name, cmd, log)
    }

    /// Adds `addr` to interface `dev` (IPv6 without duplicate address detection).
    pub fn add_addr(&self, dev: &str, addr: IpNet) -> io::Result<()> {
        let addr = addr.to_string();
        let mut args = vec!["addr", "add", &addr, "dev", dev];
        if addr.contains(':') {
            args.push("nodad");
        }
        self.ip(args).map(drop)
    }

    /// Brings interface `dev` up.
    pub fn link_up(&self, dev: &str) -> io::Result<()> {
        self.ip(["link", "set", "dev", dev, "up"]).map(drop)
    }

    /// Routes `dst` via the gateway `via` (use `0.0.0.0/0` or `::/0` for a default route).
    pub fn add_route(&self, dst: IpNet, via: IpAddr) -> io::Result<()> {
        let family = if dst.addr().is_ipv6() { "-6" } else { "-4" };
        self.ip([
            family,
            "route",
            "add",
            &dst.to_string(),
            "via",
            &via.to_string(),
        ])
        .map(drop)
    }

    /// Creates bridge `name` and brings it up.
    pub fn bridge(&self, name: &str) -> io::Result<()> {
        check_ifname(name)?;
        // Without an MLD querier, snooping may stop flooding IPv6 neighbour discovery
        // to a port whose membership it learned once; a test switch must just flood.
        self.ip(["link", "add", name, "type", "bridge", "mcast_snooping", "0"])?;
        self.link_up(name)
    }

    /// Enslaves interface `dev` to bridge `bridge`.
    pub fn attach_to_bridge(&self, dev: &str, bridge: &str) -> io::Result<()> {
        self.ip(["link", "set", "dev", dev, "master", bridge])
            .map(drop)
    }

    /// Sets the MTU of interface `dev`.
    pub fn set_mtu(&self, dev: &str, mtu: u32) -> io::Result<()> {
        self.ip(["link", "set", "dev", dev, "mtu", &mtu.to_string()])
            .map(drop)
    }

    /// Sends up to `count` ICMP echo requests to `dst` from inside the namespace,
    /// waiting up to `timeout` for each; the round-trip time of the first reply.
    ///
    /// Done in-process with a raw socket so tests need no `ping` binary.
    pub fn ping(&self, dst: IpAddr, count: u32, timeout: Duration) -> io::Result<Duration> {
        self.try_run(|| {
            let mut last = io::Error::new(io::ErrorKind::InvalidInput, "ping count is 0");
            for _ in 0..count {
                match echo(dst, timeout) {
                    Ok(rtt) => return Ok(rtt),
                    Err(e) => last = e,
                }
            }
            Err(io::Error::new(
                last.kind(),
                format!("ping {dst} from {} ({count} tries): {last}", self.name),
            ))
        })?
    }

    /// Sends `count` ICMP echo requests to `dst` from one thread inside the namespace,
    /// each as soon as the previous one was answered (or timed out after `timeout`);
    /// the round-trip times of the replies, in order.
    pub fn ping_back_to_back(
        &self,
        dst: IpAddr,
        count: u32,
        timeout: Duration,
    ) -> io::Result<Vec<Duration>> {
        self.try_run(|| (0..count).filter_map(|_| echo(dst, timeout).ok()).collect())
    }
}

impl Netns {
    /// Deletes every connection-tracking entry in the namespace, IPv4 and IPv6 (what
    /// `conntrack -F` does), over ctnetlink, so the tests need no conntrack tool.
    pub fn flush_conntrack(&self) -> io::Result<()> {
        self.try_run(|| {
            for family in [libc::AF_INET, libc::AF_INET6] {
                ctnetlink_flush(family as u8)?;
            }
            Ok(())
        })?
    }
}

/// Sends one `IPCTNL_MSG_CT_DELETE` without attributes (a flush) and waits for its ack.
fn ctnetlink_flush(family: u8) -> io::Result<()> {
    const NFNL_SUBSYS_CTNETLINK: u16 = 1;
    const IPCTNL_MSG_CT_DELETE: u16 = 2;
    const NLMSG_HDR_LEN: usize = 16;
    // SAFETY: a plain socket call; the descriptor is owned (and closed) by `fd` below.
    let raw = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::NETLINK_NETFILTER,
        )
    };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `raw` is a fresh descriptor nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    let mut msg = [0u8; NLMSG_HDR_LEN + 4];
    let kind = (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_DELETE;
    let flags = (libc::NLM_F_REQUEST | libc::NLM_F_ACK) as u16;
    let len = msg.len() as u32;
    msg[0..4].copy_from_slice(&len.to_ne_bytes());
    msg[4..6].copy_from_slice(&kind.to_ne_bytes());
    msg[6..8].copy_from_slice(&flags.to_ne_bytes());
    msg[8..12].copy_from_slice(&1u32.to_ne_bytes());
    // nfgenmsg: family, version 0 (NFNETLINK_V0), resource id 0.
    msg[NLMSG_HDR_LEN] = family;
    // SAFETY: sockaddr_nl is plain data; all-zero is "the kernel".
    let mut kernel: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    kernel.nl_family = libc::AF_NETLINK as libc::sa_family_t;
    // SAFETY: `msg` and `kernel` are live for the call and their lengths are passed.
    let sent = unsafe {
        libc::sendto(
            fd.as_raw_fd(),
            msg.as_ptr().cast(),
            msg.len(),
            0,
            (&kernel as *const libc::sockaddr_nl).cast(),
            size_of::<libc::sockaddr_nl>() as libc::socklen_t,
        )
    };
    if sent < 0 {
        return Err(io::Error::last_os_error());
    }
    setsockopt(&fd, sockopt::ReceiveTimeout, &TimeVal::seconds(5))?;
    let mut reply = [0u8; 512];
    // SAFETY: `reply` is writable for its whole length.
    let n = unsafe { libc::recv(fd.as_raw_fd(), reply.as_mut_ptr().cast(), reply.len(), 0) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let n = n as usize;
    if n < NLMSG_HDR_LEN + 4 || u16::from_ne_bytes([reply[4], reply[5]]) != libc::NLMSG_ERROR as u16
    {
        return Err(io::Error::other("ctnetlink flush: unexpected reply"));
    }
    let errno = i32::from_ne_bytes([reply[16], reply[17], reply[18], reply[19]]);
    match -errno {
        // Nothing tracked is nothing to flush.
        0 | libc::ENOENT => Ok(()),
        e => Err(io::Error::from_raw_os_error(e)),
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // A process still inside keeps the namespace alive after its name is
        // gone; say so, since it means a ChildGuard outlived its namespace.
        if let Ok(pids) = run_ok(Command::new("ip").args(["netns", "pids", &self.name])) {
            if !pids.trim().is_empty() {
                eprintln!(
                    "causeway-tests: namespace {} still has processes: {}",
                    self.name,
                    pids.split_whitespace().collect::<Vec<_>>().join(" ")
                );
            }
        }
        if let Err(e) = run_ok(Command::new("ip").args(["netns", "del", &self.name])) {
            eprintln!("causeway-tests: {e}");
        }
    }
}

/// `cmd` run by `wrapper` (a program that execs what follows its own arguments, such
/// as `ip netns exec NS` or `setpriv ... --`): `cmd`'s program and arguments appended,
/// its environment and working directory carried over.
pub fn run_through(mut wrapper: Command, cmd: &Command) -> Command {
    wrapper.arg(cmd.get_program()).args(cmd.get_args());
    for (key, value) in cmd.get_envs() {
        match value {
            Some(value) => wrapper.env(key, value),
            None => wrapper.env_remove(key),
        };
    }
    if let Some(dir) = cmd.get_current_dir() {
        wrapper.current_dir(dir);
    }
    wrapper
}

/// Starts `cmd` inside the namespace named `netns` (as `ip netns list` shows it) with stdout
/// and stderr appended to `log`: for a holder of the name that outlives a borrow of [`Netns`].
pub fn spawn_logged_in(netns: &str, cmd: &mut Command, log: &Path) -> io::Result<ChildGuard> {
    let mut ip = Command::new("ip");
    ip.args(["netns", "exec", netns]);
    let mut wrapped = run_through(ip, cmd);
    let line = command_line(&wrapped);
    let mut out = OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(|e| io::Error::new(e.kind(), format!("open log {}: {e}", log.display())))?;
    writeln!(out, "# {line}")?;
    let err = out.try_clone()?;
    let child = wrapped
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .map_err(|e| io::Error::new(e.kind(), format!("spawn `{line}`: {e}")))?;
    Ok(ChildGuard::new(child, line, log.to_path_buf()))
}

/// Creates a veth pair inside `a` and moves its peer into `b`, then addresses both ends and brings them up.
///
/// The pair never exists in the root namespace, not even briefly.
pub fn veth(
    a: &Netns,
    a_if: &str,
    a_addrs: impl IntoIterator<Item = IpNet>,
    b: &Netns,
    b_if: &str,
    b_addrs: impl IntoIterator<Item = IpNet>,
) -> io::Result<()> {
    check_ifname(a_if)?;
    check_ifname(b_if)?;
    a.ip([
        "link", "add", a_if, "type", "veth", "peer", "name", b_if, "netns", &b.name,
    ])?;
    for addr in a_addrs {
        a.add_addr(a_if, addr)?;
    }
    for addr in b_addrs {
        b.add_addr(b_if, addr)?;
    }
    a.link_up(a_if)?;
    b.link_up(b_if)
}

/// Refuses interface names the kernel would reject, with a message that says why.
pub fn check_ifname(name: &str) -> io::Result<()> {
    if name.is_empty()
        || name.len() > IFNAMSIZ_MAX
        || name
            .bytes()
            .any(|b| b == b'/' || b == b':' || b.is_ascii_whitespace())
    {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "interface name {name:?} is invalid: 1..={IFNAMSIZ_MAX} bytes without '/', ':' or spaces"
            ),
        ));
    }
    Ok(())
}

/// Runs `cmd`; its stdout on success, else an error naming the command line and its stderr.
pub fn run_ok(cmd: &mut Command) -> io::Result<String> {
    let line = command_line(cmd);
    let output = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| io::Error::new(e.kind(), format!("run `{line}`: {e}")))?;
    if !output.status.success() {
        return Err(io::Error::other(HarnessError::Command {
            command: line,
            status: output.status.to_string(),
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
        }));
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

fn command_line(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|s| s.to_string_lossy())
        .collect::<Vec<_>>()
        .join(" ")
}

static NEXT_ECHO_ID: AtomicU32 = AtomicU32::new(0);

const ICMP_ECHO_REPLY: u8 = 0;
const ICMP_UNREACHABLE: u8 = 3;
const ICMP_ECHO_REQUEST: u8 = 8;
const ICMP6_UNREACHABLE: u8 = 1;
const ICMP6_ECHO_REQUEST: u8 = 128;
const ICMP6_ECHO_REPLY: u8 = 129;
const IPV6_HEADER_LEN: usize = 40;

/// One echo request and its reply, in the calling thread's namespace.
fn echo(dst: IpAddr, timeout: Duration) -> io::Result<Duration> {
    // Raw sockets see every ICMP packet in the namespace, so the identifier
    // tells this exchange apart from concurrent ones.
    let ident = (std::process::id() as u16)
        ^ (NEXT_ECHO_ID.fetch_add(1, Ordering::Relaxed) as u16).rotate_left(8);
    let seq: u16 = 1;
    let (fd, request_type, reply_type, unreachable_type) = match dst {
        IpAddr::V4(_) => (
            raw_icmp_socket(AddressFamily::Inet, SockProtocol::Icmp)?,
            ICMP_ECHO_REQUEST,
            ICMP_ECHO_REPLY,
            ICMP_UNREACHABLE,
        ),
        IpAddr::V6(_) => (
            raw_icmp_socket(AddressFamily::Inet6, SockProtocol::IcmpV6)?,
            ICMP6_ECHO_REQUEST,
            ICMP6_ECHO_REPLY,
            ICMP6_UNREACHABLE,
        ),
    };
    let mut packet = [0u8; 24];
    packet[0] = request_type;
    packet[4..6].copy_from_slice(&ident.to_be_bytes());
    packet[6..8].copy_from_slice(&seq.to_be_bytes());
    packet[8..].copy_from_slice(b"causeway-harness");
    if dst.is_ipv4() {
        // The kernel fills in ICMPv6 checksums itself, but not ICMPv4 ones.
        let sum = inet_checksum(&packet);
        packet[2..4].copy_from_slice(&sum.to_be_bytes());
    }
    let sent = Instant::now();
    match dst {
        IpAddr::V4(ip) => sendto(
            fd.as_raw_fd(),
            &packet,
            &SockaddrIn::from(SocketAddrV4::new(ip, 0)),
            MsgFlags::empty(),
        ),
        IpAddr::V6(ip) => sendto(
            fd.as_raw_fd(),
            &packet,
            &SockaddrIn6::from(SocketAddrV6::new(ip, 0, 0, 0)),
            MsgFlags::empty(),
        ),
    }
    .map_err(|e| io::Error::new(io::Error::from(e).kind(), format!("send echo: {e}")))?;

    let deadline = sent + timeout;
    let mut buf = [0u8; 1500];
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("no echo reply within {timeout:?}"),
            ));
        }
        // A zero timeval means "block forever", so never pass one.
        let micros = i64::try_from(remaining.as_micros())
            .unwrap_or(i64::MAX)
            .max(1);
        setsockopt(&fd, sockopt::ReceiveTimeout, &TimeVal::microseconds(micros))?;
        let (len, from) = match recvfrom::<SockaddrStorage>(fd.as_raw_fd(), &mut buf) {
            Ok(got) => got,
            Err(Errno::EAGAIN | Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        };
        let from = from.and_then(|a| sockaddr_ip(&a));
        let icmp = match dst {
            // IPv4 raw sockets deliver the IP header too; IPv6 ones do not.
            IpAddr::V4(_) => {
                let ihl = usize::from(buf[0] & 0x0f) * 4;
                buf.get(ihl..len).unwrap_or(&[])
            }
            IpAddr::V6(_) => &buf[..len],
        };
        if icmp.len() < 8 {
            continue;
        }
        let matches_us = |id: &[u8]| id == ident.to_be_bytes().as_slice();
        if icmp[0] == reply_type && from == Some(dst) && matches_us(&icmp[4..6]) {
            return Ok(sent.elapsed());
        }
        if icmp[0] == unreachable_type {
            // The error quotes our request after its own 8-byte header.
            let quoted = &icmp[8..];
            let inner_icmp = match dst {
                IpAddr::V4(_) => quoted
                    .first()
                    .and_then(|b| quoted.get(usize::from(b & 0x0f) * 4..)),
                IpAddr::V6(_) => quoted.get(IPV6_HEADER_LEN..),
            };
            if let Some(inner) = inner_icmp.filter(|i| i.len() >= 8) {
                if inner[0] == request_type && matches_us(&inner[4..6]) {
                    let by = from.map_or_else(|| "?".into(), |ip| ip.to_string());
                    return Err(io::Error::new(
                        io::ErrorKind::HostUnreachable,
                        format!(
                            "destination unreachable (code {}, reported by {by})",
                            icmp[1]
                        ),
                    ));
                }
            }
        }
    }
}

fn raw_icmp_socket(family: AddressFamily, protocol: SockProtocol) -> io::Result<OwnedFd> {
    socket(family, SockType::Raw, SockFlag::SOCK_CLOEXEC, protocol)
        .map_err(|e| io::Error::new(io::Error::from(e).kind(), format!("raw ICMP socket: {e}")))
}

fn sockaddr_ip(addr: &SockaddrStorage) -> Option<IpAddr> {
    if let Some(v4) = addr.as_sockaddr_in() {
        return Some(IpAddr::V4(v4.ip()));
    }
    addr.as_sockaddr_in6().map(|v6| {
        let ip: Ipv6Addr = v6.ip();
        // Replies from a v4-mapped source are still IPv4 peers.
        ip.to_ipv4_mapped().map_or(IpAddr::V6(ip), IpAddr::V4)
    })
}

fn inet_checksum(data: &[u8]) -> u16 {
    use causeway_datapath::offload::{checksum_add, fold};
    !fold(checksum_add(data, 0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksum_matches_rfc1071_example() {
        // RFC 1071 section 3 sums 0001 f203 f4f5 f6f7 to ddf2; the checksum is its complement.
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(inet_checksum(&data), !0xddf2);
    }

    #[test]
    fn interface_names_longer_than_15_bytes_are_refused() {
        assert!(check_ifname("wan0").is_ok());
        assert!(check_ifname("exactly15bytes_").is_ok());
        assert!(check_ifname("sixteen-bytes-xx").is_err());
        assert!(check_ifname("").is_err());
        assert!(check_ifname("a/b").is_err());
    }
}
