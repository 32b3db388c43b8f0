//! The harness itself: the worlds it builds are wired as documented, and it
//! leaves nothing behind. Needs root.

use std::io::ErrorKind;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use causeway_tests::fixtures::{netns_list, ping, root_state, PING_TIMEOUT};
use causeway_tests::harness::{veth, wait_until, Clusterset, Netns};

#[test]
fn two_site_world_is_wired_like_two_clusters_without_causeway() {
    let set = Clusterset::new(2).expect("build two sites");
    let [a, b] = set.sites() else {
        panic!("expected two sites, got {}", set.sites().len());
    };

    // Inside a site: pod ↔ worker, gateway node → worker's pods, v4 and v6.
    ping(&a.pod, a.spec.worker_pod_gateway_ip());
    ping(&a.pod, a.spec.worker_pod_gateway_ip6());
    ping(&a.pod, a.spec.worker_node_ip());
    ping(&a.gateway, a.spec.pod_ip());
    ping(&a.gateway, a.spec.pod_ip6());
    ping(&b.gateway, b.spec.pod_ip());

    // Across the WAN, gateway to gateway.
    ping(&a.gateway, b.spec.underlay_ip());
    ping(&b.gateway, a.spec.underlay_ip());

    // Nothing joins the pod networks yet: that is Causeway's job.
    let err = a
        .pod
        .ping(b.spec.pod_ip().into(), 1, PING_TIMEOUT)
        .expect_err("pods of different sites must not reach each other before Causeway runs");
    assert!(
        matches!(err.kind(), ErrorKind::HostUnreachable | ErrorKind::TimedOut),
        "{err}"
    );
}

#[test]
fn a_second_gateway_candidate_shares_the_node_network_and_the_wan() {
    let before = root_state();
    let set = Clusterset::with_candidates(2, 2).expect("build two sites with two candidates");
    let [a, b] = set.sites() else {
        panic!("expected two sites, got {}", set.sites().len());
    };
    let names = set.namespace_names();
    assert_eq!(names.len(), 9, "wan + 4 per site: {names:?}");
    assert_eq!(a.candidates().len(), 2);
    assert_eq!(a.candidate(0).map(Netns::name), Some(a.gateway.name()));
    assert!(a.candidate(2).is_none());
    let a2 = a.candidate(1).expect("site-a has candidate 1");
    let b2 = b.candidate(1).expect("site-b has candidate 1");
    let (ca1, cb1) = (a.spec.candidate(1), b.spec.candidate(1));

    // On the node bridge: candidate 1 ↔ worker ↔ candidate 0, v4 and v6.
    ping(a2, a.spec.worker_node_ip());
    ping(a2, a.spec.worker_node_ip6());
    ping(a2, a.spec.gateway_node_ip());
    ping(&a.gateway, ca1.node_ip());
    ping(&a.gateway, ca1.node_ip6());
    ping(&a.worker, ca1.node_ip());
    // Like candidate 0, candidate 1 knows where the worker's pods are.
    ping(a2, a.spec.pod_ip());
    ping(a2, a.spec.pod_ip6());

    // Across the WAN, every candidate reaches every other one, v4 and v6.
    ping(a2, b.spec.underlay_ip());
    ping(a2, b.spec.underlay_ip6());
    ping(&b.gateway, ca1.underlay_ip());
    ping(b2, ca1.underlay_ip());
    ping(b2, ca1.underlay_ip6());
    ping(a2, cb1.underlay_ip());

    // Still nothing between the sites' pods.
    assert!(a2.ping(b.spec.pod_ip().into(), 1, PING_TIMEOUT).is_err());

    drop(set);
    let left: Vec<_> = netns_list()
        .into_iter()
        .filter(|n| names.contains(n))
        .collect();
    assert!(left.is_empty(), "namespaces left behind: {left:?}");
    assert_eq!(before, root_state(), "root namespace changed");
}

#[test]
fn run_opens_sockets_inside_the_namespace() {
    let set = Clusterset::new(1).expect("build one site");
    let site = &set.sites()[0];
    let pod_addr = SocketAddr::new(site.spec.pod_ip().into(), 0);

    // The pod's address exists only inside the pod namespace, so binding it
    // proves the socket was created there.
    let receiver = site
        .pod
        .run(|| UdpSocket::bind(pod_addr))
        .expect("bind UDP in the pod");
    assert!(
        UdpSocket::bind(pod_addr).is_err(),
        "the pod's address must not exist in the test's own namespace"
    );
    let target = receiver.local_addr().expect("receiver address");
    receiver
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("set read timeout");

    let sent_from = site
        .worker
        .run(|| -> std::io::Result<SocketAddr> {
            let sender = UdpSocket::bind("0.0.0.0:0")?;
            sender.send_to(b"hello pod", target)?;
            sender.local_addr()
        })
        .expect("send from the worker");

    let mut buf = [0u8; 64];
    let (len, from) = receiver
        .recv_from(&mut buf)
        .expect("datagram from the worker within 5 s");
    assert_eq!(&buf[..len], b"hello pod");
    assert_eq!(from.ip(), IpAddr::from(site.spec.worker_pod_gateway_ip()));
    assert_eq!(from.port(), sent_from.port());
}

#[test]
fn dropping_the_world_removes_its_namespaces_and_leaves_root_alone() {
    let before = root_state();
    let set = Clusterset::new(2).expect("build two sites");
    let names = set.namespace_names();
    assert_eq!(names.len(), 7, "wan + 3 per site: {names:?}");
    let listed = netns_list();
    for name in &names {
        assert!(listed.contains(name), "{name} missing from {listed:?}");
    }
    // Building the world must not have touched root either.
    assert_eq!(
        before,
        root_state(),
        "root namespace changed while building"
    );

    drop(set);
    let left: Vec<_> = netns_list()
        .into_iter()
        .filter(|n| names.contains(n))
        .collect();
    assert!(left.is_empty(), "namespaces left behind: {left:?}");
    assert_eq!(before, root_state(), "root namespace changed");
}

#[test]
fn invalid_worlds_are_refused() {
    assert!(Clusterset::new(0).is_err());
    assert!(Clusterset::new(27).is_err());
    assert!(Clusterset::with_candidates(1, 0).is_err());
    assert!(Clusterset::with_candidates(1, 3).is_err());
    let ns = Netns::new("ifname").expect("namespace");
    let err = veth(&ns, "much-too-long-name", None, &ns, "b", None).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
    assert!(err.to_string().contains("15"), "{err}");
}

fn proc_exists(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

#[test]
fn child_guard_stops_its_process_on_drop() {
    let ns = Netns::new("child").expect("namespace");
    let mut child = ns
        .spawn(Command::new("sleep").arg("1000"))
        .expect("spawn sleep");
    let pid = child.pid();
    assert!(child.is_running());

    // `ip netns exec` execs the program, so the PID is the program's and it
    // sits in the test's namespace.
    wait_until(
        "sleep to replace `ip netns exec`",
        Duration::from_secs(5),
        || {
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
            (comm.trim() == "sleep").then_some(())
        },
    )
    .unwrap();
    let inside = std::fs::metadata(format!("/proc/{pid}/ns/net")).expect("child netns");
    let expected = std::fs::metadata(ns.path()).expect("namespace file");
    assert_eq!(
        inside.ino(),
        expected.ino(),
        "child is not in {}",
        ns.name()
    );

    drop(child);
    assert!(!proc_exists(pid), "pid {pid} still exists after drop");
}

#[test]
fn terminate_falls_back_to_sigkill() {
    let ns = Netns::new("stubborn").expect("namespace");
    let mut child = ns
        .spawn(Command::new("sh").args(["-c", "trap '' TERM; exec sleep 1000"]))
        .expect("spawn");
    let pid = child.pid();
    // Until `sleep` runs, SIGTERM might reach the shell before its trap is set.
    wait_until(
        "the TERM-ignoring sleep to start",
        Duration::from_secs(5),
        || {
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
            (comm.trim() == "sleep").then_some(())
        },
    )
    .unwrap();
    let status = child
        .terminate_and_wait(Duration::from_millis(200))
        .expect("terminate");
    assert_eq!(status.signal(), Some(libc::SIGKILL), "{status:?}");
    assert!(!child.is_running());
    assert!(!proc_exists(pid));
}

#[test]
fn spawned_output_lands_in_the_log() {
    let ns = Netns::new("log").expect("namespace");
    let mut child = ns
        .spawn(
            Command::new("sh")
                .args(["-c", "echo \"out $GREETING\"; echo err >&2"])
                .env("GREETING", "hello"),
        )
        .expect("spawn");
    let status = wait_until("sh to exit", Duration::from_secs(5), || {
        child.try_status().ok().flatten()
    })
    .unwrap();
    assert!(status.success(), "{status:?}");
    let tail = child.log_tail(2);
    assert_eq!(tail, "out hello\nerr", "log was:\n{}", child.log_tail(10));
}

/// What a confined datapath process may do, tried for real from inside one: it holds
/// exactly the chart's capabilities, cannot write its root filesystem or /proc/sys, and
/// can still open /dev/net/tun and write /dev/null. The mount changes stay inside it.
#[test]
fn a_confined_process_holds_only_the_charts_powers() {
    use causeway_tests::harness::confine::Confinement;

    let ns = Netns::new("confine").expect("namespace");
    let probe = ns.log_dir().join("written-by-confined");
    let script = format!(
        "grep -E '^Cap(Eff|Bnd|Prm):' /proc/self/status
         grep '^NoNewPrivs:' /proc/self/status
         touch {probe} 2>&1 && echo WROTE-ROOT
         echo 1 > /proc/sys/net/ipv4/ip_forward 2>&1 && echo WROTE-SYSCTL
         exec 3<>/dev/net/tun && echo TUN-OPENED
         echo x > /dev/null && echo DEV-NULL-OK",
        probe = probe.display()
    );
    let mut sh = Command::new("sh");
    sh.args(["-c", &script]);
    let cmd = Confinement::chart_datapath().wrap(&sh);
    let out = ns
        .exec(
            cmd.get_program().to_str().expect("program"),
            cmd.get_args().map(|a| a.to_owned()),
        )
        .expect("run the confined shell");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    // CAP_NET_ADMIN is bit 12.
    for line in [
        "CapEff:\t0000000000001000",
        "CapBnd:\t0000000000001000",
        "NoNewPrivs:\t1",
    ] {
        assert!(text.contains(line), "no {line:?} in:\n{text}");
    }
    assert!(
        !text.contains("WROTE-ROOT"),
        "wrote the root filesystem:\n{text}"
    );
    assert!(text.contains("Read-only file system"), "{text}");
    assert!(!text.contains("WROTE-SYSCTL"), "wrote /proc/sys:\n{text}");
    assert!(
        text.contains("TUN-OPENED") && text.contains("DEV-NULL-OK"),
        "{text}"
    );
    assert!(!probe.exists(), "{} exists", probe.display());
    // Outside, nothing changed: the same file can be written, forwarding is still off.
    std::fs::write(&probe, b"outside").expect("the test itself still writes /tmp");
    assert_eq!(
        ns.exec_ok("sysctl", ["-n", "net.ipv4.ip_forward"])
            .unwrap()
            .trim(),
        "0"
    );
}
