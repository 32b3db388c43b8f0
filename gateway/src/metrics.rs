//! What `/metrics` shows, as Prometheus text.
//!
//! The datapath keeps its own per-peer atomic counters so the packet path
//! never takes a shared lock; this module only sees them as a [`Snapshot`]
//! taken at scrape time. [`encode`] is a pure function of that snapshot, and
//! [`crate::http`] is the thin HTTP shell around it.

use causeway_datapath::stats::{DropReason, PeerSnapshot};
use std::fmt;
use std::time::SystemTime;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};

/// Content type of `/metrics`: prometheus-client writes OpenMetrics text (with `# EOF`).
pub const METRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Everything /metrics shows.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    /// One entry per remote cluster.
    pub peers: Vec<PeerSnapshot>,
    /// Drop counts by reason; missing reasons show as zero, repeated ones are summed.
    pub drops: Vec<(DropReason, u64)>,
    /// Routes Causeway currently holds in the kernel.
    pub routes: u64,
    /// Netlink requests sent to change routes or links.
    pub netlink_writes: u64,
    /// Configuration reloads applied.
    pub config_reloads: u64,
    /// Configuration reloads rejected.
    pub config_errors: u64,
    /// Whether this gateway carries its cluster's traffic; `None` on a node that never can.
    pub gateway_active: Option<bool>,
}

/// Where the HTTP server gets its figures and health.
pub trait MetricsSource: Send + Sync + 'static {
    /// Reads the current counters; called once per scrape.
    fn snapshot(&self) -> Snapshot;
    /// `Ok` when the gateway is healthy, otherwise a reason a person can act on.
    fn health(&self) -> Result<(), String>;
}

/// Encodes a snapshot as Prometheus text (pure; unit-tested).
pub fn encode(snapshot: &Snapshot, now: SystemTime) -> String {
    encode_owned(snapshot.clone(), now)
}

/// Like [`encode`], without the copy: a registered collector must own its data.
pub fn encode_owned(snapshot: Snapshot, now: SystemTime) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(SnapshotCollector { snapshot, now }));
    let mut out = String::new();
    // The writer is a String and the collector only forwards writer errors,
    // so this cannot fail.
    prometheus_client::encoding::text::encode(&mut out, &registry)
        .expect("encoding metrics into a String cannot fail");
    out
}

/// A one-scrape collector: prometheus-client's hook for values we do not own.
#[derive(Debug)]
struct SnapshotCollector {
    snapshot: Snapshot,
    now: SystemTime,
}

/// A per-peer counter family: name (before `_<unit>_total`), help, unit, field.
type PeerCounter = (
    &'static str,
    &'static str,
    Option<Unit>,
    fn(&PeerSnapshot) -> u64,
);

impl Collector for SnapshotCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        let peers = &self.snapshot.peers;

        // prometheus-client appends `_<unit>` and, for counters, `_total`.
        let peer_counters: [PeerCounter; 5] = [
            (
                "causeway_peer_rx",
                "Bytes received from the remote cluster through its WireGuard tunnel.",
                Some(Unit::Bytes),
                |p| p.rx_bytes,
            ),
            (
                "causeway_peer_tx",
                "Bytes sent to the remote cluster through its WireGuard tunnel.",
                Some(Unit::Bytes),
                |p| p.tx_bytes,
            ),
            (
                "causeway_peer_rx_packets",
                "Packets received from the remote cluster through its WireGuard tunnel.",
                None,
                |p| p.rx_packets,
            ),
            (
                "causeway_peer_tx_packets",
                "Packets sent to the remote cluster through its WireGuard tunnel.",
                None,
                |p| p.tx_packets,
            ),
            (
                "causeway_peer_handshakes",
                "WireGuard handshakes completed with the remote cluster.",
                None,
                |p| p.handshakes,
            ),
        ];
        for (name, help, unit, value) in &peer_counters {
            let mut family =
                encoder.encode_descriptor(name, help, unit.as_ref(), MetricType::Counter)?;
            for peer in peers {
                let labels = [("remote_cluster", peer.cluster_id.as_str())];
                ConstCounter::new(value(peer)).encode(family.encode_family(&labels)?)?;
            }
        }

        let mut family = encoder.encode_descriptor(
            "causeway_peer_unanswered_initiations",
            "WireGuard handshake initiations sent to the remote cluster's gateway since the last \
             completed handshake; growing means its UDP port is not reachable.",
            None,
            MetricType::Gauge,
        )?;
        for peer in peers {
            let labels = [("remote_cluster", peer.cluster_id.as_str())];
            ConstGauge::new(peer.unanswered_initiations as i64)
                .encode(family.encode_family(&labels)?)?;
        }

        let mut family = encoder.encode_descriptor(
            "causeway_peer_last_handshake",
            "Seconds since the last completed WireGuard handshake with the remote cluster; \
             absent if none has completed. WireGuard re-handshakes about every 2 minutes while traffic flows.",
            Some(&Unit::Seconds),
            MetricType::Gauge,
        )?;
        for peer in peers {
            let Some(at) = peer.last_handshake else {
                continue;
            };
            // A handshake stamped after `now` means the clock stepped back; 0 beats negative.
            let age = self.now.duration_since(at).map_or(0.0, |d| d.as_secs_f64());
            let labels = [("remote_cluster", peer.cluster_id.as_str())];
            ConstGauge::new(age).encode(family.encode_family(&labels)?)?;
        }

        let mut family = encoder.encode_descriptor(
            "causeway_peer_rtt",
            "Round-trip time of health probes through the tunnel to the remote cluster's gateway over the last minute (stat: min, avg, max, last); absent until a probe is answered.",
            Some(&Unit::Seconds),
            MetricType::Gauge,
        )?;
        for peer in peers {
            let Some(rtt) = peer.rtt else {
                continue;
            };
            for (stat, value) in [
                ("min", rtt.min),
                ("avg", rtt.avg),
                ("max", rtt.max),
                ("last", rtt.last),
            ] {
                let labels = [("remote_cluster", peer.cluster_id.as_str()), ("stat", stat)];
                ConstGauge::new(value.as_secs_f64()).encode(family.encode_family(&labels)?)?;
            }
        }

        // A gauge fixed at 1 rather than an OpenMetrics `info`, so the name
        // stays `causeway_peer_info` in either exposition format.
        let mut family = encoder.encode_descriptor(
            "causeway_peer_info",
            "Remote clusters this gateway peers with, and each one's current UDP endpoint \
             (empty if unknown); always 1.",
            None,
            MetricType::Gauge,
        )?;
        for peer in peers {
            let endpoint = peer.endpoint.map(|e| e.to_string()).unwrap_or_default();
            let labels = [
                ("remote_cluster", peer.cluster_id.as_str()),
                ("endpoint", endpoint.as_str()),
            ];
            ConstGauge::new(1i64).encode(family.encode_family(&labels)?)?;
        }

        let mut family = encoder.encode_descriptor(
            "causeway_datapath_drops",
            "Packets the gateway datapath dropped, by reason.",
            None,
            MetricType::Counter,
        )?;
        for reason in DropReason::ALL {
            // Summed because several datapath workers may each report the same reason.
            let count = self
                .snapshot
                .drops
                .iter()
                .filter(|(r, _)| *r == reason)
                .fold(0u64, |sum, (_, n)| sum.saturating_add(*n));
            let labels = [("reason", reason.as_str())];
            ConstCounter::new(count).encode(family.encode_family(&labels)?)?;
        }

        let family = encoder.encode_descriptor(
            "causeway_routes",
            "Routes to remote clusters that Causeway currently holds in the kernel.",
            None,
            MetricType::Gauge,
        )?;
        ConstGauge::new(self.snapshot.routes).encode(family)?;

        if let Some(active) = self.snapshot.gateway_active {
            let family = encoder.encode_descriptor(
                "causeway_gateway_active",
                "1 while this gateway holds its cluster's gateway Lease and carries the traffic, 0 while it is a passive candidate.",
                None,
                MetricType::Gauge,
            )?;
            ConstGauge::new(i64::from(active)).encode(family)?;
        }

        let scalar_counters = [
            (
                "causeway_netlink_writes",
                "Netlink requests the gateway sent to change kernel routes or links.",
                self.snapshot.netlink_writes,
            ),
            (
                "causeway_config_reloads",
                "Configuration reloads the gateway applied.",
                self.snapshot.config_reloads,
            ),
            (
                "causeway_config_errors",
                "Configuration reloads the gateway rejected as invalid.",
                self.snapshot.config_errors,
            ),
        ];
        for (name, help, value) in scalar_counters {
            let family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            ConstCounter::new(value).encode(family)?;
        }
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::collections::{BTreeMap, BTreeSet, HashMap};
    use std::time::Duration;

    pub(crate) type Labels = BTreeMap<String, String>;

    /// Parses exposition text into `(name, labels) -> value`, failing on duplicates.
    pub(crate) fn parse_samples(text: &str) -> HashMap<(String, Labels), f64> {
        let mut samples = HashMap::new();
        for line in text.lines() {
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (name, rest) = match line.find(['{', ' ']) {
                Some(i) => line.split_at(i),
                None => panic!("sample line without value: {line:?}"),
            };
            let mut labels = Labels::new();
            let value_part = if let Some(body) = rest.strip_prefix('{') {
                let mut chars = body.chars();
                loop {
                    let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
                    assert_eq!(chars.next(), Some('"'), "bad label in {line:?}");
                    let mut value = String::new();
                    loop {
                        match chars.next().expect("unterminated label value") {
                            '\\' => match chars.next() {
                                Some('n') => value.push('\n'),
                                Some(c) => value.push(c),
                                None => panic!("dangling escape in {line:?}"),
                            },
                            '"' => break,
                            c => value.push(c),
                        }
                    }
                    assert!(
                        labels.insert(key, value).is_none(),
                        "repeated label {line:?}"
                    );
                    match chars.next() {
                        Some(',') => continue,
                        Some('}') => break,
                        other => panic!("unexpected {other:?} in {line:?}"),
                    }
                }
                chars.as_str().to_string()
            } else {
                rest.to_string()
            };
            let value_str = value_part.trim();
            let value: f64 = value_str
                .parse()
                .unwrap_or_else(|e| panic!("bad value {value_str:?} in {line:?}: {e}"));
            let key = (name.to_string(), labels);
            assert!(
                samples.insert(key, value).is_none(),
                "duplicate series: {line:?}"
            );
        }
        samples
    }

    pub(crate) fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    pub(crate) fn sample(
        samples: &HashMap<(String, Labels), f64>,
        name: &str,
        pairs: &[(&str, &str)],
    ) -> Option<f64> {
        samples.get(&(name.to_string(), labels(pairs))).copied()
    }

    pub(crate) fn now() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000)
    }

    pub(crate) fn two_peer_snapshot() -> Snapshot {
        Snapshot {
            peers: vec![
                PeerSnapshot {
                    cluster_id: "site-b".into(),
                    endpoint: Some("192.0.2.10:51820".parse().unwrap()),
                    rx_bytes: 1_000_001,
                    tx_bytes: 2_000_002,
                    rx_packets: 301,
                    tx_packets: 402,
                    handshakes: 7,
                    last_handshake: Some(now() - Duration::from_millis(42_500)),
                    unanswered_initiations: 0,
                    rtt: Some(causeway_datapath::stats::RttStats {
                        min: Duration::from_micros(250),
                        avg: Duration::from_micros(400),
                        max: Duration::from_micros(1_500),
                        last: Duration::from_micros(300),
                        samples: 60,
                    }),
                },
                PeerSnapshot {
                    cluster_id: "site-c".into(),
                    endpoint: None,
                    rx_bytes: 0,
                    tx_bytes: 148,
                    rx_packets: 0,
                    tx_packets: 1,
                    handshakes: 0,
                    last_handshake: None,
                    unanswered_initiations: 3,
                    rtt: None,
                },
            ],
            drops: vec![
                (DropReason::NoPeer, 3),
                (DropReason::Malformed, 11),
                (DropReason::NoPeer, 2),
            ],
            routes: 4,
            netlink_writes: 9,
            config_reloads: 2,
            config_errors: 1,
            gateway_active: Some(true),
        }
    }

    const EXPOSED_NAMES: [&str; 15] = [
        "causeway_gateway_active",
        "causeway_peer_rtt_seconds",
        "causeway_peer_rx_bytes_total",
        "causeway_peer_tx_bytes_total",
        "causeway_peer_rx_packets_total",
        "causeway_peer_tx_packets_total",
        "causeway_peer_handshakes_total",
        "causeway_peer_unanswered_initiations",
        "causeway_peer_last_handshake_seconds",
        "causeway_peer_info",
        "causeway_datapath_drops_total",
        "causeway_routes",
        "causeway_netlink_writes_total",
        "causeway_config_reloads_total",
        "causeway_config_errors_total",
    ];

    #[test]
    fn encode_two_peers() {
        let text = encode(&two_peer_snapshot(), now());
        let s = parse_samples(&text);

        let names: BTreeSet<&str> = s.keys().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, EXPOSED_NAMES.into_iter().collect(), "{text}");

        let b = [("remote_cluster", "site-b")];
        let c = [("remote_cluster", "site-c")];
        let per_peer = [
            ("causeway_peer_rx_bytes_total", 1_000_001.0, 0.0),
            ("causeway_peer_tx_bytes_total", 2_000_002.0, 148.0),
            ("causeway_peer_rx_packets_total", 301.0, 0.0),
            ("causeway_peer_tx_packets_total", 402.0, 1.0),
            ("causeway_peer_handshakes_total", 7.0, 0.0),
            ("causeway_peer_unanswered_initiations", 0.0, 3.0),
        ];
        for (name, vb, vc) in per_peer {
            assert_eq!(sample(&s, name, &b), Some(vb), "{name} site-b");
            assert_eq!(sample(&s, name, &c), Some(vc), "{name} site-c");
        }
        for (stat, seconds) in [
            ("min", 0.00025),
            ("avg", 0.0004),
            ("max", 0.0015),
            ("last", 0.0003),
        ] {
            let labels = [("remote_cluster", "site-b"), ("stat", stat)];
            assert_eq!(
                sample(&s, "causeway_peer_rtt_seconds", &labels),
                Some(seconds),
                "rtt {stat}"
            );
            let labels = [("remote_cluster", "site-c"), ("stat", stat)];
            assert_eq!(
                sample(&s, "causeway_peer_rtt_seconds", &labels),
                None,
                "site-c never answered"
            );
        }

        assert_eq!(
            sample(&s, "causeway_peer_last_handshake_seconds", &b),
            Some(42.5)
        );
        assert_eq!(
            sample(
                &s,
                "causeway_peer_info",
                &[
                    ("remote_cluster", "site-b"),
                    ("endpoint", "192.0.2.10:51820")
                ]
            ),
            Some(1.0)
        );
        assert_eq!(
            sample(
                &s,
                "causeway_peer_info",
                &[("remote_cluster", "site-c"), ("endpoint", "")]
            ),
            Some(1.0)
        );

        assert_eq!(sample(&s, "causeway_routes", &[]), Some(4.0));
        assert_eq!(sample(&s, "causeway_netlink_writes_total", &[]), Some(9.0));
        assert_eq!(sample(&s, "causeway_config_reloads_total", &[]), Some(2.0));
        assert_eq!(sample(&s, "causeway_config_errors_total", &[]), Some(1.0));
        assert_eq!(sample(&s, "causeway_gateway_active", &[]), Some(1.0));

        // Every family is described, under its exposed name (minus `_total`).
        for line in [
            "# TYPE causeway_peer_rx_bytes counter",
            "# UNIT causeway_peer_rx_bytes bytes",
            "# TYPE causeway_peer_last_handshake_seconds gauge",
            "# TYPE causeway_peer_info gauge",
            "# TYPE causeway_datapath_drops counter",
            "# TYPE causeway_routes gauge",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
        let helps = text.lines().filter(|l| l.starts_with("# HELP ")).count();
        assert_eq!(helps, EXPOSED_NAMES.len(), "{text}");
        assert!(text.ends_with("# EOF\n"));
    }

    #[test]
    fn never_handshaked_peer_has_no_last_handshake_sample() {
        let s = parse_samples(&encode(&two_peer_snapshot(), now()));
        let series: Vec<&Labels> = s
            .keys()
            .filter(|(n, _)| n == "causeway_peer_last_handshake_seconds")
            .map(|(_, l)| l)
            .collect();
        assert_eq!(series, vec![&labels(&[("remote_cluster", "site-b")])]);
    }

    #[test]
    fn handshake_in_the_future_reads_zero() {
        let snapshot = Snapshot {
            peers: vec![PeerSnapshot {
                cluster_id: "site-b".into(),
                last_handshake: Some(now() + Duration::from_secs(3)),
                ..Default::default()
            }],
            ..Default::default()
        };
        let s = parse_samples(&encode(&snapshot, now()));
        assert_eq!(
            sample(
                &s,
                "causeway_peer_last_handshake_seconds",
                &[("remote_cluster", "site-b")]
            ),
            Some(0.0)
        );
    }

    #[test]
    fn gateway_active_only_where_a_node_can_be_active() {
        let passive = Snapshot {
            gateway_active: Some(false),
            ..Default::default()
        };
        let s = parse_samples(&encode(&passive, now()));
        assert_eq!(sample(&s, "causeway_gateway_active", &[]), Some(0.0));
        let agent = parse_samples(&encode(&Snapshot::default(), now()));
        assert_eq!(sample(&agent, "causeway_gateway_active", &[]), None);
    }

    #[test]
    fn drops_cover_every_reason_with_zeros() {
        let s = parse_samples(&encode(&two_peer_snapshot(), now()));
        let drops: BTreeMap<String, f64> = s
            .iter()
            .filter(|((n, _), _)| n == "causeway_datapath_drops_total")
            .map(|((_, l), v)| (l["reason"].clone(), *v))
            .collect();
        let expected: BTreeMap<String, f64> = DropReason::ALL
            .iter()
            .map(|r| {
                let v = match r {
                    DropReason::NoPeer => 5.0,
                    DropReason::Malformed => 11.0,
                    _ => 0.0,
                };
                (r.as_str().to_string(), v)
            })
            .collect();
        assert_eq!(drops, expected);

        // An empty snapshot still shows every reason.
        let empty = parse_samples(&encode(&Snapshot::default(), now()));
        for r in DropReason::ALL {
            assert_eq!(
                sample(
                    &empty,
                    "causeway_datapath_drops_total",
                    &[("reason", r.as_str())]
                ),
                Some(0.0),
                "{r}"
            );
        }
    }

    #[test]
    fn drop_reason_labels_are_distinct_snake_case() {
        let names: BTreeSet<&str> = DropReason::ALL.iter().map(DropReason::as_str).collect();
        assert_eq!(names.len(), DropReason::ALL.len());
        for n in names {
            assert!(n.chars().all(|c| c.is_ascii_lowercase() || c == '_'), "{n}");
        }
    }

    #[test]
    fn label_values_are_escaped() {
        let snapshot = Snapshot {
            peers: vec![PeerSnapshot {
                cluster_id: "we\"ird\\id".into(),
                ..Default::default()
            }],
            ..Default::default()
        };
        let s = parse_samples(&encode(&snapshot, now()));
        assert_eq!(
            sample(
                &s,
                "causeway_peer_rx_bytes_total",
                &[("remote_cluster", "we\"ird\\id")]
            ),
            Some(0.0)
        );
    }
}
