//! The ports Causeway's parts listen on. The gateway's host filter lets a remote peer
//! reach only some of them on the tunnel address, so they are named in one place.

/// WireGuard's UDP port (the default a candidate listens on).
pub const WIREGUARD: u16 = 51820;
/// UDP port of the tunnel round-trip probes on a gateway's health-check address.
pub const PROBE: u16 = 51821;
/// UDP port on which gateway candidates ask each other who is alive, on private IPs.
pub const LIVENESS: u16 = 51822;
/// TCP port of the benchmark sink on a gateway's health-check address.
pub const BENCHMARK: u16 = 51823;
