//! What the datapath's kernel tests share: a throw-away network namespace per test.

use nix::sched::{unshare, CloneFlags};

use crate::route::{NextHop, Route};

/// Runs `test` on a new thread moved into a fresh network namespace with its loopback
/// up; the kernel destroys the namespace, with everything in it, when the thread exits,
/// so the root namespace is never touched. A panic in `test` fails the caller.
pub(crate) fn in_fresh_netns(test: impl FnOnce() + Send + 'static) {
    assert!(
        nix::unistd::geteuid().is_root(),
        "datapath tests must run as root: they create network namespaces, TUN interfaces \
         and routes (run them as root or in the CI container); refusing to skip silently"
    );
    let thread = std::thread::spawn(move || {
        unshare(CloneFlags::CLONE_NEWNET).expect("unshare(CLONE_NEWNET)");
        let up = std::process::Command::new("ip")
            .args(["link", "set", "lo", "up"])
            .status()
            .expect("run ip");
        assert!(up.success(), "ip link set lo up");
        test();
    });
    if let Err(panic) = thread.join() {
        std::panic::resume_unwind(panic);
    }
}

/// A route out of interface `ifindex`.
pub(crate) fn dev_route(dst: &str, ifindex: u32, mtu: Option<u32>, table: u32) -> Route {
    Route {
        dst: dst.parse().unwrap(),
        next_hop: NextHop::Dev { ifindex },
        mtu,
        table,
    }
}

/// A route through `gateway` on interface `ifindex`.
pub(crate) fn via_route(
    dst: &str,
    gateway: &str,
    ifindex: u32,
    mtu: Option<u32>,
    table: u32,
) -> Route {
    Route {
        dst: dst.parse().unwrap(),
        next_hop: NextHop::Via {
            gateway: gateway.parse().unwrap(),
            ifindex,
        },
        mtu,
        table,
    }
}
