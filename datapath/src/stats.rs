//! What the datapath counts, as the gateway's metrics and status read it.

use std::fmt;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

/// Why the datapath dropped a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// No peer owns the packet's destination address.
    NoPeer,
    /// A peer sent a packet from an address outside its allowed CIDRs.
    SourceNotAllowed,
    /// A WireGuard message came from a key we do not know.
    UnknownPeer,
    /// WireGuard rejected the message as invalid (e.g. failed authentication or a replay).
    Invalid,
    /// The peer has no known UDP endpoint to send to yet.
    NoEndpoint,
    /// The packet could not be parsed as IP.
    Malformed,
    /// An internal queue was full and the packet was shed.
    QueueFull,
    /// The kernel refused to send the encrypted datagram (full socket buffer, no route).
    SendFailed,
    /// A peer sent a packet to an address outside this cluster's own CIDRs.
    DestinationNotAllowed,
    /// A source sent handshake initiations faster than its own budget allows.
    HandshakeRateLimited,
    /// A peer sent a packet to the gateway node's own tunnel address, to a port other
    /// than the health probe's and the benchmark's (a host service).
    HostPortNotAllowed,
}

impl DropReason {
    /// Every reason, so `/metrics` can show a zero for each one never seen.
    pub const ALL: [DropReason; 11] = [
        DropReason::NoPeer,
        DropReason::SourceNotAllowed,
        DropReason::UnknownPeer,
        DropReason::Invalid,
        DropReason::NoEndpoint,
        DropReason::Malformed,
        DropReason::QueueFull,
        DropReason::SendFailed,
        DropReason::DestinationNotAllowed,
        DropReason::HandshakeRateLimited,
        DropReason::HostPortNotAllowed,
    ];

    /// The `reason` label value, in snake_case.
    pub fn as_str(&self) -> &'static str {
        match self {
            DropReason::NoPeer => "no_peer",
            DropReason::SourceNotAllowed => "source_not_allowed",
            DropReason::UnknownPeer => "unknown_peer",
            DropReason::Invalid => "invalid",
            DropReason::NoEndpoint => "no_endpoint",
            DropReason::Malformed => "malformed",
            DropReason::QueueFull => "queue_full",
            DropReason::SendFailed => "send_failed",
            DropReason::DestinationNotAllowed => "destination_not_allowed",
            DropReason::HandshakeRateLimited => "handshake_rate_limited",
            DropReason::HostPortNotAllowed => "host_port_not_allowed",
        }
    }
}

impl fmt::Display for DropReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One remote cluster's counters at scrape time.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PeerSnapshot {
    /// The remote cluster's id, used as the `remote_cluster` label.
    pub cluster_id: String,
    /// The peer's current UDP endpoint, if one is known.
    pub endpoint: Option<SocketAddr>,
    /// Bytes received from the peer on the tunnel.
    pub rx_bytes: u64,
    /// Bytes sent to the peer on the tunnel.
    pub tx_bytes: u64,
    /// Packets received from the peer.
    pub rx_packets: u64,
    /// Packets sent to the peer.
    pub tx_packets: u64,
    /// Completed WireGuard handshakes with the peer.
    pub handshakes: u64,
    /// When the last handshake completed; `None` if none ever did.
    pub last_handshake: Option<SystemTime>,
    /// Handshake initiations sent since the last completed handshake.
    pub unanswered_initiations: u64,
    /// Round trips of health probes through the tunnel; `None` until one is answered.
    pub rtt: Option<RttStats>,
}

/// Round-trip statistics over the recent probes of one peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RttStats {
    /// Smallest round trip.
    pub min: Duration,
    /// Mean round trip.
    pub avg: Duration,
    /// Largest round trip.
    pub max: Duration,
    /// The latest round trip.
    pub last: Duration,
    /// How many probes the figures cover.
    pub samples: usize,
}
