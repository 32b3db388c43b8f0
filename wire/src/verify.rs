//! What a gateway's `GET /verify` answers (`kubectl causeway verify` and `diagnose`'s
//! live DNS check read it).

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Round-trip figures over a set of probes, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RttFigures {
    /// Fastest round trip.
    pub min_ms: f64,
    /// Mean round trip.
    pub avg_ms: f64,
    /// 99th percentile (nearest rank).
    pub p99_ms: f64,
    /// Slowest round trip.
    pub max_ms: f64,
    /// How many probes were answered.
    pub samples: usize,
}

impl RttFigures {
    /// The figures of `samples`; `None` when there are none.
    pub fn from_samples(samples: &[Duration]) -> Option<RttFigures> {
        if samples.is_empty() {
            return None;
        }
        let mut sorted: Vec<Duration> = samples.to_vec();
        sorted.sort();
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        let total: Duration = sorted.iter().sum();
        // Nearest rank: the smallest sample with at least 99% of samples at or below it.
        let rank = (sorted.len() * 99).div_ceil(100).max(1);
        Some(RttFigures {
            min_ms: ms(sorted[0]),
            avg_ms: ms(total / sorted.len() as u32),
            p99_ms: ms(sorted[rank - 1]),
            max_ms: ms(sorted[sorted.len() - 1]),
            samples: sorted.len(),
        })
    }
}

/// What a gateway's `GET /verify` answers.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentVerify {
    /// Whether this gateway has its tunnel open (it is its cluster's active gateway).
    pub active: bool,
    /// The gateway's own address inside the tunnel, where probes come from.
    pub health_check_ip: Option<String>,
    /// One entry per remote cluster the gateway peers with.
    pub peers: Vec<AgentPeer>,
    /// One entry per name asked with `?dns=`.
    pub dns: Vec<AgentDns>,
}

/// One remote cluster as a gateway sees it now.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentPeer {
    /// The remote cluster's ID.
    pub cluster: String,
    /// The remote gateway's UDP endpoint, if one is known.
    pub endpoint: Option<String>,
    /// Seconds since the last completed WireGuard handshake; `None`: never.
    pub last_handshake_seconds: Option<f64>,
    /// Where the probes went (`healthCheckIP:51821`); `None`: the cluster publishes none.
    pub probe_target: Option<String>,
    /// Probes sent just now.
    pub probes_sent: u32,
    /// Round trips of the answered ones.
    pub rtt: Option<RttFigures>,
}

/// One DNS name resolved by a gateway with its cluster's DNS.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentDns {
    /// The name asked.
    pub name: String,
    /// The DNS server asked (`ip:port`).
    pub server: String,
    /// The response code (`NoError`, `NXDomain`, …), when an answer came.
    pub rcode: Option<String>,
    /// A and AAAA answers.
    pub addresses: Vec<String>,
    /// Why there is no answer (timeout, unreachable server).
    pub error: Option<String>,
    /// The TCP connect to the first address, when a port was asked.
    pub tcp: Option<AgentTcp>,
}

/// A bounded TCP connect from the gateway's healthCheckIP.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentTcp {
    /// `ip:port` connected to.
    pub address: String,
    /// How long the connect took, when it succeeded.
    pub connect_ms: Option<f64>,
    /// Why it failed.
    pub error: Option<String>,
}
