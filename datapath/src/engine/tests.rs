//! The datapath against a real boringtun peer, in a throw-away network namespace.

use super::*;
use crate::testing::in_fresh_netns;
use std::time::Instant;

fn wait_for<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Feeds the peer every datagram the gateway sent it until `done` holds, answering as it goes.
fn pump(w: &mut World, mut done: impl FnMut(&mut Tunn) -> bool) {
    let mut buf = [0u8; 2048];
    let mut out = [0u8; 2048];
    let deadline = Instant::now() + Duration::from_secs(5);
    w.peer_socket
        .set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    while !done(&mut w.peer) {
        assert!(
            Instant::now() < deadline,
            "the peer never got what it waited for"
        );
        let Ok((n, from)) = w.peer_socket.recv_from(&mut buf) else {
            continue;
        };
        let mut result = w.peer.decapsulate(Some(from.ip()), &buf[..n], &mut out);
        while let TunnResult::WriteToNetwork(reply) = result {
            w.peer_socket.send_to(reply, w.gateway).unwrap();
            result = w.peer.decapsulate(None, &[], &mut out);
        }
    }
}

/// Encrypts `packet` on the peer side; the peer must hold a session it may send on.
fn seal(w: &mut World, packet: &[u8]) -> Vec<u8> {
    let mut out = [0u8; 2048];
    match w.peer.encapsulate(packet, &mut out) {
        TunnResult::WriteToNetwork(d) if d[0] == MSG_DATA => d.to_vec(),
        other => panic!("the peer has no session to send on: {other:?}"),
    }
}

/// Makes the peer the initiator of a fresh handshake, so it may send data at once.
fn peer_initiates(w: &mut World) {
    let mut buf = [0u8; 2048];
    let TunnResult::WriteToNetwork(init) = w.peer.format_handshake_initiation(&mut buf, true)
    else {
        panic!("no initiation");
    };
    w.peer_socket.send_to(init, w.gateway).unwrap();
    // The response completes the peer's session; a keepalive then confirms it to the gateway.
    pump(w, |peer| {
        let mut out = [0u8; 2048];
        matches!(peer.encapsulate(&[], &mut out), TunnResult::WriteToNetwork(d) if d[0] == MSG_DATA)
    });
}

struct World {
    datapath: Datapath,
    gateway: SocketAddr,
    peer: Tunn,
    peer_socket: UdpSocket,
}

/// A datapath with one peer, "b", whose handshake has completed.
fn world() -> World {
    let (mut w, init) = configured();
    respond(&mut w, &init);
    wait_for("the handshake to complete", || {
        w.datapath.peer_snapshots()[0].last_handshake.map(|_| ())
    });
    w
}

/// The peer answers the gateway's handshake initiation `init`.
fn respond(w: &mut World, init: &[u8]) {
    let mut out = [0u8; 2048];
    match w.peer.decapsulate(Some(w.gateway.ip()), init, &mut out) {
        TunnResult::WriteToNetwork(response) => {
            w.peer_socket.send_to(response, w.gateway).unwrap();
        }
        other => panic!("peer could not answer: {other:?}"),
    }
}

/// A datapath with one peer, "b", and the handshake initiation it sent the peer at once
/// (not answered yet).
fn configured() -> (World, Vec<u8>) {
    let tun = Tun::open("cwdp0").expect("TUN");
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    let gateway = udp.local_addr().unwrap();
    let datapath = Datapath::start(tun, udp, crate::keys::generate_private_key()).unwrap();
    let secret = StaticSecret::random_from_rng(rand_core::OsRng);
    let public = PublicKey::from(&secret).to_bytes();
    let peer_socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    peer_socket
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    datapath.set_local_cidrs(&["10.1.0.0/16".parse().unwrap()]);
    datapath.set_peers(&[PeerSpec {
        cluster_id: "b".into(),
        public_key: public,
        endpoint: Some(peer_socket.local_addr().unwrap()),
        standbys: Vec::new(),
        cidrs: vec!["10.2.0.0/16".parse().unwrap()],
        persistent_keepalive: None,
    }]);
    let peer = Tunn::new(
        secret,
        PublicKey::from(datapath.public_key()),
        None,
        None,
        1,
        None,
    );
    let mut buf = [0u8; 2048];
    let (n, _) = peer_socket
        .recv_from(&mut buf)
        .expect("handshake initiation from the gateway");
    let world = World {
        datapath,
        gateway,
        peer,
        peer_socket,
    };
    (world, buf[..n].to_vec())
}

#[test]
fn unanswered_initiations_are_counted_until_a_handshake_completes() {
    in_fresh_netns(|| {
        let (mut w, init) = configured();
        assert_eq!(init[0], MSG_INIT);
        assert_eq!(
            w.datapath.peer_snapshots()[0].unanswered_initiations,
            1,
            "the initiation sent when the peer was configured"
        );
        respond(&mut w, &init);
        wait_for("the count to clear once the handshake completed", || {
            let s = &w.datapath.peer_snapshots()[0];
            (s.last_handshake.is_some() && s.unanswered_initiations == 0).then_some(())
        });
    });
}

#[test]
fn replayed_handshakes_from_elsewhere_do_not_move_the_endpoint_but_real_roaming_does() {
    in_fresh_netns(|| {
        let mut w = world();
        let home = w.peer_socket.local_addr().unwrap();
        let mut buf = [0u8; 2048];
        let TunnResult::WriteToNetwork(init) = w.peer.format_handshake_initiation(&mut buf, true)
        else {
            panic!("no initiation");
        };
        let init = init.to_vec();
        w.peer_socket.send_to(&init, w.gateway).unwrap();
        pump(&mut w, |peer| {
            let mut out = [0u8; 2048];
            matches!(peer.encapsulate(&[], &mut out), TunnResult::WriteToNetwork(d) if d[0] == MSG_DATA)
        });

        // An attacker who captured that initiation replays it, enough to trip the rate limiter.
        let attacker = UdpSocket::bind("127.0.0.1:0").unwrap();
        attacker
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        const REPLAYS: u64 = 400;
        // In bursts, each accounted for before the next: a burst larger than the socket's
        // receive buffer would lose datagrams in the kernel, and those are neither refused
        // nor answered.
        const BURST: u64 = 20;
        // Refused: as a replay (invalid), or before that by the source's own budget.
        let dropped = |d: &Datapath, reason: DropReason| {
            d.drops()
                .iter()
                .find(|(r, _)| *r == reason)
                .map(|(_, n)| *n)
                .unwrap_or_else(|| panic!("no drop counter {reason}"))
        };
        let invalid = |d: &Datapath| {
            dropped(d, DropReason::Invalid) + dropped(d, DropReason::HandshakeRateLimited)
        };
        let mut cookies = 0u64;
        for sent in (BURST..=REPLAYS).step_by(BURST as usize) {
            for _ in 0..BURST {
                attacker.send_to(&init, w.gateway).unwrap();
            }
            wait_for(
                "every replay to be refused or answered with a cookie",
                || {
                    while let Ok((n, _)) = attacker.recv_from(&mut buf) {
                        assert_eq!(
                            buf[0], MSG_COOKIE_REPLY,
                            "the attacker got something other than a cookie ({n} bytes)"
                        );
                        cookies += 1;
                    }
                    (invalid(&w.datapath) + cookies >= sent).then_some(())
                },
            );
        }
        assert!(cookies > 0, "the rate limiter never engaged");
        assert!(
            dropped(&w.datapath, DropReason::HandshakeRateLimited) > 0,
            "one source's {REPLAYS} initiations never met its own budget"
        );
        assert_eq!(
            w.datapath.peer_snapshots()[0].endpoint,
            Some(home),
            "a replay moved the endpoint"
        );

        // The real peer moves to a new address and sends an authenticated packet: followed.
        let moved = UdpSocket::bind("127.0.0.1:0").unwrap();
        let mut packet = [0u8; 28];
        packet[0] = 0x45;
        packet[2..4].copy_from_slice(&28u16.to_be_bytes());
        packet[8] = 64;
        packet[9] = 17;
        packet[12..16].copy_from_slice(&[10, 2, 0, 5]);
        packet[16..20].copy_from_slice(&[10, 1, 0, 5]);
        let datagram = seal(&mut w, &packet);
        moved.send_to(&datagram, w.gateway).unwrap();
        let new_home = moved.local_addr().unwrap();
        wait_for("the endpoint to follow the roaming peer", || {
            (w.datapath.peer_snapshots()[0].endpoint == Some(new_home)).then_some(())
        });
    });
}

#[test]
fn a_source_outside_the_peers_cidrs_is_dropped() {
    in_fresh_netns(|| {
        let mut w = world();
        peer_initiates(&mut w);
        let mut packet = [0u8; 28];
        packet[0] = 0x45;
        packet[2..4].copy_from_slice(&28u16.to_be_bytes());
        packet[8] = 64;
        packet[9] = 17;
        packet[12..16].copy_from_slice(&[10, 3, 0, 5]); // not b's 10.2.0.0/16
        packet[16..20].copy_from_slice(&[10, 1, 0, 5]);
        let datagram = seal(&mut w, &packet);
        w.peer_socket.send_to(&datagram, w.gateway).unwrap();
        wait_for("the spoofed packet to be counted", || {
            w.datapath
                .drops()
                .iter()
                .any(|(r, n)| *r == DropReason::SourceNotAllowed && *n == 1)
                .then_some(())
        });
        assert_eq!(w.datapath.peer_snapshots()[0].rx_packets, 0);
    });
}

#[test]
fn a_peer_cannot_reach_addresses_outside_this_clusters_cidrs() {
    in_fresh_netns(|| {
        let mut w = world();
        peer_initiates(&mut w);
        let packet = |dst: [u8; 4]| {
            let mut p = [0u8; 28];
            p[0] = 0x45;
            p[2..4].copy_from_slice(&28u16.to_be_bytes());
            p[8] = 64;
            p[9] = 17;
            p[12..16].copy_from_slice(&[10, 2, 0, 5]);
            p[16..20].copy_from_slice(&dst);
            p
        };
        // The gateway node's own network, not part of the clusterset.
        let datagram = seal(&mut w, &packet([198, 19, 1, 1]));
        w.peer_socket.send_to(&datagram, w.gateway).unwrap();
        let count = |d: &Datapath, reason| {
            d.drops()
                .iter()
                .find(|(r, _)| *r == reason)
                .map_or(0, |(_, n)| *n)
        };
        wait_for("the packet to the node network to be dropped", || {
            (count(&w.datapath, DropReason::DestinationNotAllowed) == 1).then_some(())
        });
        // A pod of this cluster is fine.
        let datagram = seal(&mut w, &packet([10, 1, 0, 5]));
        w.peer_socket.send_to(&datagram, w.gateway).unwrap();
        wait_for("the packet to a local pod to be delivered", || {
            (w.datapath.peer_snapshots()[0].rx_packets == 1).then_some(())
        });
        assert_eq!(count(&w.datapath, DropReason::DestinationNotAllowed), 1);
    });
}

/// Answers everything `socket` receives with `peer` until `done`, sending to `gateway`.
fn answer(
    peer: &mut Tunn,
    socket: &UdpSocket,
    gateway: SocketAddr,
    mut done: impl FnMut(&mut Tunn) -> bool,
) {
    let mut buf = [0u8; 2048];
    let mut out = [0u8; 2048];
    let deadline = Instant::now() + Duration::from_secs(5);
    socket
        .set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    while !done(peer) {
        assert!(
            Instant::now() < deadline,
            "the peer never got what it waited for"
        );
        let Ok((n, from)) = socket.recv_from(&mut buf) else {
            continue;
        };
        let mut result = peer.decapsulate(Some(from.ip()), &buf[..n], &mut out);
        while let TunnResult::WriteToNetwork(reply) = result {
            socket.send_to(reply, gateway).unwrap();
            result = peer.decapsulate(None, &[], &mut out);
        }
    }
}

fn has_session(peer: &mut Tunn) -> bool {
    let mut out = [0u8; 2048];
    matches!(peer.encapsulate(&[], &mut out), TunnResult::WriteToNetwork(d) if d[0] == MSG_DATA)
}

#[test]
fn a_standby_candidate_that_initiates_becomes_current_and_a_rotated_key_takes_over() {
    in_fresh_netns(|| {
        let tun = Tun::open("cwdp1").expect("TUN");
        let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
        let gateway = udp.local_addr().unwrap();
        let datapath = Datapath::start(tun, udp, crate::keys::generate_private_key()).unwrap();
        let candidate = || {
            let secret = StaticSecret::random_from_rng(rand_core::OsRng);
            let public = PublicKey::from(&secret).to_bytes();
            (secret, public, UdpSocket::bind("127.0.0.1:0").unwrap())
        };
        let (secret1, public1, socket1) = candidate();
        let (secret2, public2, socket2) = candidate();
        let secret2_again = secret2.clone();
        datapath.set_local_cidrs(&["10.1.0.0/16".parse().unwrap()]);
        let spec = PeerSpec {
            cluster_id: "b".into(),
            public_key: public1,
            endpoint: Some(socket1.local_addr().unwrap()),
            standbys: vec![peers::RemoteGateway {
                public_key: public2,
                endpoint: Some(socket2.local_addr().unwrap()),
            }],
            cidrs: vec!["10.2.0.0/16".parse().unwrap()],
            persistent_keepalive: None,
        };
        datapath.set_peers(std::slice::from_ref(&spec));
        let own = PublicKey::from(datapath.public_key());
        let mut active = Tunn::new(secret1, own, None, None, 1, None);
        // The gateway knocked on both candidates; the active one answers.
        answer(&mut active, &socket1, gateway, |_| {
            datapath.peer_snapshots()[0].last_handshake.is_some()
        });
        assert_eq!(
            datapath.peer_snapshots()[0].endpoint,
            socket1.local_addr().ok()
        );

        // The standby takes over: it initiates, and once its handshake is confirmed the
        // gateway sends through it — no new configuration needed.
        let mut standby = Tunn::new(secret2, own, None, None, 2, None);
        let mut buf = [0u8; 2048];
        let TunnResult::WriteToNetwork(init) = standby.format_handshake_initiation(&mut buf, true)
        else {
            panic!("no initiation");
        };
        socket2.send_to(init, gateway).unwrap();
        answer(&mut standby, &socket2, gateway, has_session);
        wait_for("the gateway to switch to the standby candidate", || {
            (datapath.peer_snapshots()[0].endpoint == socket2.local_addr().ok()).then_some(())
        });

        // Our key rotates: the old session keeps serving until the remote side completes a
        // handshake under the new key, which it initiates once it has learned that key.
        let old_public = datapath.public_key();
        assert!(datapath.set_private_key(crate::keys::generate_private_key()));
        let new_public = PublicKey::from(datapath.public_key());
        assert_ne!(new_public.to_bytes(), old_public);
        assert_eq!(
            datapath.peer_snapshots()[0].endpoint,
            socket2.local_addr().ok()
        );
        let mut remote_new = Tunn::new(secret2_again, new_public, None, None, 3, None);
        let TunnResult::WriteToNetwork(init) =
            remote_new.format_handshake_initiation(&mut buf, true)
        else {
            panic!("no initiation");
        };
        socket2.send_to(init, gateway).unwrap();
        answer(&mut remote_new, &socket2, gateway, has_session);
        wait_for("the old key to be retired", || {
            datapath.shared.keys.load().retiring.is_none().then_some(())
        });
        let state = datapath.shared.table.load().peers[0]
            .state
            .lock()
            .sessions
            .len();
        assert_eq!(state, 2, "one session per candidate, all under the new key");
    });
}
