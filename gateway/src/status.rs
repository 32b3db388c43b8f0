//! The `status` of this node's Gateway object: what it observes (pure, from the datapath's
//! and the prober's figures) and when that is worth a write (pure, [`plan_status`]).
//!
//! The active gateway checks about once a second, but a healthy clusterset writes nothing:
//! a write happens only when something a person or the controller acts on changed. Byte
//! counters, the latest handshake (WireGuard rekeys every two minutes) and the RTT figures
//! (which move with load) ride along with such a write and never cause one; their live
//! values are in `/metrics` and `kubectl causeway verify`. The one counter that does is the count of unanswered
//! handshake initiations, refreshed at most every [`COUNTER_REFRESH`]: it only moves
//! while a tunnel is down, and `diagnose` reads it.

use causeway_crds::{ConnectionState, ConnectionStatus, GatewayRole, GatewayStatus, RouteStatus};
use causeway_datapath::route::{route_tally, Route};
use causeway_datapath::stats::{PeerSnapshot, RttStats};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

/// A handshake older than this means the session is gone (WireGuard rekeys every 2 minutes).
pub const HANDSHAKE_FRESH: Duration = Duration::from_secs(180);
/// A health probe answered within this long means the tunnel carries traffic now.
pub const PROBE_FRESH: Duration = Duration::from_secs(5);
/// A growing count of unanswered initiations is written at most this often.
pub const COUNTER_REFRESH: Duration = Duration::from_secs(30);

/// WireGuard initiates a rekey this long after a handshake (REKEY_AFTER_TIME)…
const REKEY_AFTER: Duration = Duration::from_secs(120);
/// …and an initiation unanswered for this long is sent again (REKEY_TIMEOUT).
const REKEY_TIMEOUT: Duration = Duration::from_secs(5);

/// What the gateway knows about itself, beside its peers.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LocalObservation {
    /// MTU of the tunnel interface, while active.
    pub tunnel_mtu: Option<u32>,
    /// MTU of the underlay interface the tunnel's UDP leaves through, while active.
    pub underlay_mtu: Option<u32>,
    /// The routes this node should hold and how many the kernel took, if reconciled yet.
    pub routes: Option<RouteStatus>,
}

/// What the gateway knows about one remote cluster at one moment.
#[derive(Debug, Clone)]
pub struct PeerObservation {
    /// The datapath's counters, with the prober's RTT figures.
    pub snapshot: PeerSnapshot,
    /// The endpoint the remote cluster's ClusterEndpoint names.
    pub configured_endpoint: Option<SocketAddr>,
    /// Where its health probes go, if its gateway has a `healthCheckIP`.
    pub health_target: Option<SocketAddr>,
    /// How long ago it last answered a probe; `None` if it never did.
    pub since_last_reply: Option<Duration>,
    /// Handshake initiations sent since the last completed handshake; `None` when the
    /// datapath does not count them.
    pub unanswered_initiations: Option<u64>,
}

/// This gateway's status as observed now. `previous` is what the status says (written
/// last, or read at start): it carries when unanswered handshakes began.
pub fn observe(
    role: GatewayRole,
    local: &LocalObservation,
    peers: &[PeerObservation],
    previous: Option<&GatewayStatus>,
    now: SystemTime,
) -> GatewayStatus {
    let before = |id: &str| previous?.connections.iter().find(|c| c.cluster_id == id);
    let mut connections: Vec<ConnectionStatus> = peers
        .iter()
        .map(|p| connection(p, before(&p.snapshot.cluster_id), now))
        .collect();
    connections.sort_by(|a, b| a.cluster_id.cmp(&b.cluster_id));
    GatewayStatus {
        role: Some(role),
        connections,
        conditions: Vec::new(),
        version: Some(env!("CARGO_PKG_VERSION").to_owned()),
        tunnel_mtu: local.tunnel_mtu,
        underlay_mtu: local.underlay_mtu,
        routes: local.routes.clone(),
    }
}

/// Since when initiations to `endpoint` go unanswered, if they do: from the first
/// observation without any handshake (carried over in `previous` while nothing changes),
/// or from the rekey that a handshake is due for once one retry interval has passed
/// without it.
fn first_attempt(
    endpoint: Option<SocketAddr>,
    last_handshake: Option<SystemTime>,
    previous: Option<&ConnectionStatus>,
    now: SystemTime,
) -> Option<Time> {
    // Nothing is sent to a gateway whose endpoint is unknown.
    let endpoint = endpoint?;
    match last_handshake {
        None => previous
            .filter(|p| p.last_handshake.is_none())
            .filter(|p| p.endpoint.as_deref() == Some(endpoint.to_string().as_str()))
            .and_then(|p| p.first_attempt.clone())
            .or_else(|| whole_seconds(now)),
        Some(at) => {
            let due = at + REKEY_AFTER;
            (now > due + REKEY_TIMEOUT)
                .then(|| whole_seconds(due))
                .flatten()
        }
    }
}

fn connection(
    peer: &PeerObservation,
    previous: Option<&ConnectionStatus>,
    now: SystemTime,
) -> ConnectionStatus {
    let s = &peer.snapshot;
    let endpoint = s.endpoint.or(peer.configured_endpoint);
    let shown = endpoint.map_or_else(|| "the remote gateway".to_owned(), |e| e.to_string());
    let port = endpoint.map_or(51820, |e| e.port());
    // A handshake stamped in the future means the clock stepped back: count it as just now.
    let age = s
        .last_handshake
        .map(|at| now.duration_since(at).unwrap_or(Duration::ZERO));
    let probed = match (peer.health_target, peer.since_last_reply) {
        (None, _) => Ok(()),
        (Some(_), Some(ago)) if ago <= PROBE_FRESH => Ok(()),
        (Some(target), ago) => Err((target, ago)),
    };
    let (state, reason) = match (age, probed) {
        (None, _) => (
            ConnectionState::Connecting,
            Some(format!(
                "no handshake yet with {shown}: check that UDP {port} is reachable and the public key in ClusterEndpoint {} matches the remote gateway's key",
                s.cluster_id
            )),
        ),
        (Some(age), _) if age > HANDSHAKE_FRESH => (
            ConnectionState::Connecting,
            Some(format!(
                "last handshake with {shown} was {}s ago: the remote gateway stopped answering; check that it runs and that UDP {port} is reachable",
                age.as_secs()
            )),
        ),
        (Some(_), Err((target, None))) => (
            ConnectionState::Connecting,
            Some(format!(
                "handshake done, but health probes to {target} get no reply: check that the remote gateway answers on the healthCheckIP in ClusterEndpoint {}",
                s.cluster_id
            )),
        ),
        (Some(_), Err((target, Some(ago)))) => (
            ConnectionState::Connecting,
            Some(format!(
                "handshake done, but health probes to {target} got no reply for {}s: the tunnel carries no traffic; check the remote gateway and the path to {shown}",
                ago.as_secs()
            )),
        ),
        (Some(_), Ok(())) => (ConnectionState::Connected, None),
    };
    let rtt = s.rtt;
    let figure = |pick: fn(&RttStats) -> Duration| rtt.as_ref().map(|r| format_rtt(pick(r)));
    ConnectionStatus {
        cluster_id: s.cluster_id.clone(),
        endpoint: endpoint.map(|e| e.to_string()),
        state,
        reason,
        last_handshake: s.last_handshake.and_then(whole_seconds),
        rtt_min: figure(|r| r.min),
        rtt_avg: figure(|r| r.avg),
        rtt_max: figure(|r| r.max),
        rx_bytes: s.rx_bytes,
        tx_bytes: s.tx_bytes,
        first_attempt: first_attempt(endpoint, s.last_handshake, previous, now),
        handshake_attempts: peer.unanswered_initiations.filter(|&n| n > 0),
    }
}

/// A time as the API stores it (whole seconds), so a read-back compares equal.
fn whole_seconds(at: SystemTime) -> Option<Time> {
    let secs = at.duration_since(SystemTime::UNIX_EPOCH).ok()?.as_secs();
    k8s_openapi::jiff::Timestamp::from_second(i64::try_from(secs).ok()?)
        .ok()
        .map(Time)
}

/// A round trip for people: `312µs` below a millisecond, `41.2ms` below a second, else `1.25s`.
pub fn format_rtt(rtt: Duration) -> String {
    let micros = rtt.as_micros();
    if micros < 1_000 {
        format!("{micros}µs")
    } else if micros < 1_000_000 {
        format!("{:.1}ms", rtt.as_secs_f64() * 1e3)
    } else {
        format!("{:.2}s", rtt.as_secs_f64())
    }
}

/// Reads back what [`format_rtt`] wrote (also `us`); `None` for anything else.
pub fn parse_rtt(text: &str) -> Option<Duration> {
    let (number, scale) = if let Some(n) = text.strip_suffix("µs").or(text.strip_suffix("us")) {
        (n, 1e-6)
    } else if let Some(n) = text.strip_suffix("ms") {
        (n, 1e-3)
    } else if let Some(n) = text.strip_suffix('s') {
        (n, 1.0)
    } else {
        return None;
    };
    let value: f64 = number.trim().parse().ok()?;
    (value.is_finite() && value >= 0.0).then(|| Duration::from_secs_f64(value * scale))
}

/// What to write to the Gateway's status, if anything: `observed` when it differs
/// meaningfully from `previous` (what was last written, or read at start), else `None`.
///
/// Meaningful: the role, version, MTUs or route figures; a connection added or removed; a
/// connection's state, reason, endpoint or start of unanswered handshakes; its first
/// handshake; an RTT figure appearing or going (probes answered, or no longer); the count
/// of unanswered initiations appearing or going. That count growing is written once
/// `since_last_write` reaches 30 s. Byte counters, a newer handshake or RTT figures that
/// moved are not written alone: a steady tunnel, under load or not, makes no writes.
pub fn plan_status(
    previous: Option<&GatewayStatus>,
    observed: &GatewayStatus,
    since_last_write: Duration,
) -> Option<StatusWrite> {
    let write = |why: String| {
        Some(StatusWrite {
            status: observed.clone(),
            why,
        })
    };
    let Some(previous) = previous else {
        return write("nothing written yet".into());
    };
    let local = [
        ("role", previous.role != observed.role),
        ("version", previous.version != observed.version),
        ("tunnel MTU", previous.tunnel_mtu != observed.tunnel_mtu),
        (
            "underlay MTU",
            previous.underlay_mtu != observed.underlay_mtu,
        ),
        ("routes", previous.routes != observed.routes),
    ];
    if let Some((what, _)) = local.iter().find(|(_, changed)| *changed) {
        return write(format!("{what} changed"));
    }
    let before: BTreeMap<&str, &ConnectionStatus> = previous
        .connections
        .iter()
        .map(|c| (c.cluster_id.as_str(), c))
        .collect();
    let now: BTreeMap<&str, &ConnectionStatus> = observed
        .connections
        .iter()
        .map(|c| (c.cluster_id.as_str(), c))
        .collect();
    if before.keys().ne(now.keys()) {
        return write("the set of remote clusters changed".into());
    }
    let mut attempts_grew = None;
    for (id, new) in &now {
        let old = before[id];
        // The first handshake connects; later ones are rekeys, which ride along.
        let first_handshake = old.last_handshake.is_none() && new.last_handshake.is_some();
        let changes = [
            ("state", old.state != new.state),
            ("reason", old.reason != new.reason),
            ("endpoint", old.endpoint != new.endpoint),
            (
                "first unanswered attempt",
                old.first_attempt != new.first_attempt,
            ),
            (
                "unanswered attempts",
                old.handshake_attempts.is_some() != new.handshake_attempts.is_some(),
            ),
            ("first handshake", first_handshake),
            ("RTT min", old.rtt_min.is_some() != new.rtt_min.is_some()),
            ("RTT avg", old.rtt_avg.is_some() != new.rtt_avg.is_some()),
            ("RTT max", old.rtt_max.is_some() != new.rtt_max.is_some()),
        ];
        if let Some((what, _)) = changes.iter().find(|(_, changed)| *changed) {
            return write(format!("{id}: {what} changed"));
        }
        if old.handshake_attempts != new.handshake_attempts {
            attempts_grew = Some(*id);
        }
    }
    match attempts_grew {
        Some(id) if since_last_write >= COUNTER_REFRESH => {
            write(format!("{id}: unanswered attempts grew"))
        }
        _ => None,
    }
}

/// A status write [`plan_status`] decided on, and why (for the log).
#[derive(Debug, Clone, PartialEq)]
pub struct StatusWrite {
    /// What to write.
    pub status: GatewayStatus,
    /// What changed, e.g. `site-b: RTT avg changed`.
    pub why: String,
}

/// What a node's Gateway says about its routes after a reconcile: how many of `desired`
/// the kernel holds, given that the adds and replaces of `refused` failed, and the first
/// few destinations missing.
pub fn route_status(desired: &[Route], refused: &[Route]) -> RouteStatus {
    let tally = route_tally(desired, refused);
    let count = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
    RouteStatus {
        desired: count(tally.desired),
        installed: count(tally.installed()),
        missing: tally
            .missing
            .iter()
            .take(RouteStatus::MISSING_SHOWN)
            .map(ToString::to_string)
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;

    fn t0() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000)
    }

    fn rtt(min_us: u64, avg_us: u64, max_us: u64) -> RttStats {
        RttStats {
            min: Duration::from_micros(min_us),
            avg: Duration::from_micros(avg_us),
            max: Duration::from_micros(max_us),
            last: Duration::from_micros(avg_us),
            samples: 10,
        }
    }

    fn peer(handshake_ago: Option<u64>, reply_ago: Option<u64>, target: bool) -> PeerObservation {
        PeerObservation {
            snapshot: PeerSnapshot {
                cluster_id: "site-b".into(),
                endpoint: Some("198.18.0.2:51820".parse().unwrap()),
                rx_bytes: 100,
                tx_bytes: 200,
                last_handshake: handshake_ago.map(|s| t0() - Duration::from_millis(s * 1000 + 300)),
                rtt: reply_ago.map(|_| rtt(312, 41_234, 1_500_000)),
                ..PeerSnapshot::default()
            },
            configured_endpoint: Some("198.18.0.2:51820".parse().unwrap()),
            health_target: target.then(|| "10.2.0.1:51821".parse().unwrap()),
            since_last_reply: reply_ago.map(Duration::from_secs),
            unanswered_initiations: None,
        }
    }

    #[test]
    fn connection_states_and_reasons() {
        type Case = (
            Option<u64>,
            Option<u64>,
            bool,
            ConnectionState,
            Option<&'static str>,
        );
        let cases: &[Case] = &[
            (None, None, true, ConnectionState::Connecting, Some("no handshake yet with 198.18.0.2:51820: check that UDP 51820 is reachable and the public key in ClusterEndpoint site-b matches")),
            (Some(10), Some(1), true, ConnectionState::Connected, None),
            (Some(10), None, false, ConnectionState::Connected, None),
            (Some(10), Some(9), true, ConnectionState::Connecting, Some("got no reply for 9s")),
            (Some(10), None, true, ConnectionState::Connecting, Some("health probes to 10.2.0.1:51821 get no reply")),
            (Some(200), Some(1), true, ConnectionState::Connecting, Some("was 200s ago")),
            (Some(200), None, false, ConnectionState::Connecting, Some("stopped answering")),
        ];
        for (handshake, reply, target, state, reason) in cases {
            let status = observe(
                GatewayRole::Active,
                &LocalObservation::default(),
                &[peer(*handshake, *reply, *target)],
                None,
                t0(),
            );
            let c = &status.connections[0];
            assert_eq!(c.state, *state, "{handshake:?} {reply:?} {target}");
            match reason {
                None => assert_eq!(c.reason, None),
                Some(text) => assert!(
                    c.reason.as_deref().unwrap_or_default().contains(text),
                    "{:?} lacks {text:?}",
                    c.reason
                ),
            }
        }
    }

    #[test]
    fn observed_figures() {
        let status = observe(
            GatewayRole::Active,
            &LocalObservation::default(),
            &[peer(Some(10), Some(1), true)],
            None,
            t0(),
        );
        let c = &status.connections[0];
        assert_eq!(status.role, Some(GatewayRole::Active));
        assert_eq!(c.endpoint.as_deref(), Some("198.18.0.2:51820"));
        assert_eq!(c.rtt_min.as_deref(), Some("312µs"));
        assert_eq!(c.rtt_avg.as_deref(), Some("41.2ms"));
        assert_eq!(c.rtt_max.as_deref(), Some("1.50s"));
        assert_eq!((c.rx_bytes, c.tx_bytes), (100, 200));
        // Whole seconds, as the API server keeps it.
        let at = c.last_handshake.as_ref().unwrap().0.as_second();
        assert_eq!(at, 1_700_000_000 - 11);
        assert_eq!(
            observe(
                GatewayRole::Passive,
                &LocalObservation::default(),
                &[],
                None,
                t0()
            ),
            GatewayStatus {
                role: Some(GatewayRole::Passive),
                version: Some(env!("CARGO_PKG_VERSION").to_owned()),
                ..GatewayStatus::default()
            }
        );
    }

    #[test]
    fn unanswered_handshakes_are_dated_from_the_first_attempt() {
        let secs =
            |at: SystemTime| at.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs() as i64;
        let first = |p: &PeerObservation, previous: Option<&GatewayStatus>| {
            observe(
                GatewayRole::Active,
                &LocalObservation::default(),
                std::slice::from_ref(p),
                previous,
                t0(),
            )
            .connections[0]
                .first_attempt
                .as_ref()
                .map(|t| t.0.as_second())
        };
        let never = peer(None, None, true);
        assert_eq!(first(&never, None), Some(secs(t0())), "first seen now");
        let mut earlier = observe(
            GatewayRole::Active,
            &LocalObservation::default(),
            std::slice::from_ref(&never),
            None,
            t0() - Duration::from_secs(60),
        );
        assert_eq!(
            first(&never, Some(&earlier)),
            Some(secs(t0()) - 60),
            "carried over while still unanswered"
        );
        earlier.connections[0].endpoint = Some("198.18.0.9:51820".into());
        assert_eq!(
            first(&never, Some(&earlier)),
            Some(secs(t0())),
            "another endpoint starts over"
        );
        assert_eq!(
            first(&peer(Some(10), Some(1), true), None),
            None,
            "answered"
        );
        // The rekey 120 s after the handshake 200.3 s ago went unanswered.
        assert_eq!(
            first(&peer(Some(200), None, false), None),
            Some(secs(t0()) - 201 + 120)
        );
        assert_eq!(
            first(&peer(Some(124), None, false), None),
            None,
            "the rekey may still be answered"
        );
        let mut unknown = peer(None, None, true);
        unknown.snapshot.endpoint = None;
        unknown.configured_endpoint = None;
        assert_eq!(first(&unknown, None), None, "nothing is sent anywhere");

        let mut counted = peer(None, None, true);
        counted.unanswered_initiations = Some(12);
        let status = observe(
            GatewayRole::Active,
            &LocalObservation::default(),
            &[counted.clone()],
            None,
            t0(),
        );
        assert_eq!(status.connections[0].handshake_attempts, Some(12));
        counted.unanswered_initiations = Some(0);
        let status = observe(
            GatewayRole::Active,
            &LocalObservation::default(),
            &[counted],
            None,
            t0(),
        );
        assert_eq!(status.connections[0].handshake_attempts, None);
    }

    #[test]
    fn local_figures_and_version_are_reported() {
        let local = LocalObservation {
            tunnel_mtu: Some(1420),
            underlay_mtu: Some(1500),
            routes: Some(RouteStatus {
                desired: 3,
                installed: 2,
                missing: vec!["10.2.0.0/16".into()],
            }),
        };
        let status = observe(GatewayRole::Active, &local, &[], None, t0());
        assert_eq!(status.tunnel_mtu, Some(1420));
        assert_eq!(status.underlay_mtu, Some(1500));
        assert_eq!(status.routes, local.routes);
        assert_eq!(status.version.as_deref(), Some(env!("CARGO_PKG_VERSION")));
    }

    #[test]
    fn rtt_text_round_trips() {
        for (d, text) in [
            (Duration::from_micros(312), "312µs"),
            (Duration::from_micros(41_234), "41.2ms"),
            (Duration::from_millis(1_250), "1.25s"),
            (Duration::ZERO, "0µs"),
        ] {
            assert_eq!(format_rtt(d), text);
            let back = parse_rtt(text).unwrap();
            assert!(back.abs_diff(d) < Duration::from_micros(100), "{text}");
        }
        assert_eq!(parse_rtt("12us"), Some(Duration::from_micros(12)));
        for bad in ["", "fast", "-1ms", "1h", "ms"] {
            assert_eq!(parse_rtt(bad), None, "{bad}");
        }
    }

    /// One connection in a known state; the tests change one field at a time.
    fn base() -> GatewayStatus {
        observe(
            GatewayRole::Active,
            &LocalObservation::default(),
            &[peer(Some(10), Some(1), true)],
            None,
            t0(),
        )
    }

    #[test]
    fn writes_only_meaningful_changes() {
        type Change = fn(&mut GatewayStatus);
        let second: Change = |s| {
            let mut c = s.connections[0].clone();
            c.cluster_id = "site-c".into();
            s.connections.push(c);
        };
        let cases: &[(&str, Change, Duration, bool)] = &[
            ("nothing", |_| {}, Duration::from_secs(600), false),
            (
                "role",
                |s| s.role = Some(GatewayRole::Passive),
                Duration::ZERO,
                true,
            ),
            ("connection added", second, Duration::ZERO, true),
            (
                "connection removed",
                |s| s.connections.clear(),
                Duration::ZERO,
                true,
            ),
            (
                "state",
                |s| s.connections[0].state = ConnectionState::Connecting,
                Duration::ZERO,
                true,
            ),
            (
                "reason",
                |s| s.connections[0].reason = Some("x".into()),
                Duration::ZERO,
                true,
            ),
            (
                "endpoint",
                |s| s.connections[0].endpoint = Some("198.18.0.9:51820".into()),
                Duration::ZERO,
                true,
            ),
            // A rekey: no write, however long since the last one.
            (
                "newer handshake",
                |s| {
                    let t = s.connections[0].last_handshake.as_ref().unwrap().0;
                    s.connections[0].last_handshake =
                        Some(Time(t + k8s_openapi::jiff::SignedDuration::from_secs(120)));
                },
                Duration::from_secs(3600),
                false,
            ),
            (
                "handshake lost",
                |s| s.connections[0].last_handshake = None,
                Duration::ZERO,
                false,
            ),
            // Load moves RTT; it rides along with the next meaningful write.
            (
                "rtt moved",
                |s| s.connections[0].rtt_avg = Some("60.0ms".into()),
                Duration::from_secs(3600),
                false,
            ),
            (
                "rtt gone",
                |s| s.connections[0].rtt_max = None,
                Duration::ZERO,
                true,
            ),
            (
                "version",
                |s| s.version = Some("9.9.9".into()),
                Duration::ZERO,
                true,
            ),
            (
                "tunnel mtu",
                |s| s.tunnel_mtu = Some(1380),
                Duration::ZERO,
                true,
            ),
            (
                "underlay mtu",
                |s| s.underlay_mtu = Some(9000),
                Duration::ZERO,
                true,
            ),
            (
                "routes",
                |s| {
                    s.routes = Some(RouteStatus {
                        desired: 2,
                        installed: 1,
                        missing: vec!["10.2.0.0/16".into()],
                    })
                },
                Duration::ZERO,
                true,
            ),
            (
                "first unanswered attempt",
                |s| {
                    s.connections[0].first_attempt =
                        Some(Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH))
                },
                Duration::ZERO,
                true,
            ),
            (
                "attempts counted",
                |s| s.connections[0].handshake_attempts = Some(3),
                Duration::ZERO,
                true,
            ),
            (
                "bytes",
                |s| s.connections[0].rx_bytes += 1,
                Duration::from_secs(3600),
                false,
            ),
            (
                "conditions are not ours",
                |s| {
                    s.conditions.push(Condition {
                        type_: "Ready".into(),
                        status: "True".into(),
                        reason: "Ready".into(),
                        message: String::new(),
                        last_transition_time: Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH),
                        observed_generation: None,
                    })
                },
                Duration::ZERO,
                false,
            ),
        ];
        for (name, change, since, write) in cases {
            let previous = base();
            let mut observed = base();
            change(&mut observed);
            let plan = plan_status(Some(&previous), &observed, *since);
            assert_eq!(plan.is_some(), *write, "{name}");
            if let Some(written) = plan {
                assert_eq!(written.status, observed, "{name}: writes what it observed");
                assert!(!written.why.is_empty(), "{name}: says why");
            }
        }
        let status = |p: Option<StatusWrite>| p.map(|w| w.status);
        assert_eq!(
            status(plan_status(None, &base(), Duration::ZERO)),
            Some(base())
        );
        // The first handshake is written (the connection came up), a rekey rides along.
        let mut unconnected = base();
        unconnected.connections[0].last_handshake = None;
        let plan = plan_status(Some(&unconnected), &base(), Duration::ZERO);
        assert_eq!(
            plan.as_ref().map(|w| w.why.as_str()),
            Some("site-b: first handshake changed")
        );
        assert_eq!(status(plan), Some(base()));
        // A growing count of unanswered initiations is a counter: refreshed like bytes.
        let mut counting = base();
        counting.connections[0].handshake_attempts = Some(3);
        let mut more = counting.clone();
        more.connections[0].handshake_attempts = Some(9);
        assert_eq!(
            plan_status(Some(&counting), &more, Duration::from_secs(29)),
            None
        );
        assert_eq!(
            status(plan_status(Some(&counting), &more, COUNTER_REFRESH)),
            Some(more)
        );
    }

    #[test]
    fn route_status_shows_the_first_missing_routes_only() {
        let many: Vec<Route> = (0..8)
            .map(|i| Route {
                dst: format!("10.{i}.0.0/16").parse().unwrap(),
                next_hop: causeway_datapath::route::NextHop::Dev { ifindex: 4 },
                mtu: None,
                table: 254,
            })
            .collect();
        let status = route_status(&many, &many);
        assert_eq!((status.desired, status.installed), (8, 0));
        assert_eq!(status.missing.len(), RouteStatus::MISSING_SHOWN);
        assert_eq!(status.missing[0], "10.0.0.0/16");
    }
}
