//! `GET /verify[?dns=<name>[:<port>]…]`: per remote cluster the handshake age and a fresh
//! RTT from a few probes sent now through the tunnel; per name, the answer of the
//! cluster's DNS (`--dns-server`, else the first nameserver of /etc/resolv.conf) and a
//! bounded TCP connect to the first address.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{RawQuery, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use causeway_wire::verify::{AgentDns, AgentPeer, AgentTcp, AgentVerify, RttFigures};
use hickory_proto::op::{Message, Query};
use hickory_proto::rr::{Name, RData, RecordType};
use tokio::net::{TcpStream, UdpSocket};

use super::Diagnostics;
use crate::rtt_probe::probe_burst;

/// Names one `/verify` resolves at most.
pub const MAX_DNS_NAMES: usize = 32;
/// Probes per peer of one `/verify`.
const VERIFY_PROBES: u32 = 5;
const VERIFY_PROBE_SPACING: Duration = Duration::from_millis(20);
const DNS_TIMEOUT: Duration = Duration::from_secs(2);
pub(super) const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// The first `nameserver` of a resolv.conf (pure).
pub fn first_nameserver(resolv_conf: &str) -> Option<IpAddr> {
    resolv_conf.lines().find_map(|line| {
        let mut words = line.split_whitespace();
        match words.next() {
            Some("nameserver") => words.next()?.parse().ok(),
            _ => None,
        }
    })
}

/// The DNS server `/verify` asks: `configured` (`--dns-server`), else the first
/// nameserver of /etc/resolv.conf.
fn dns_server(configured: Option<SocketAddr>) -> Result<SocketAddr, String> {
    if let Some(server) = configured {
        return Ok(server);
    }
    let text = std::fs::read_to_string("/etc/resolv.conf")
        .map_err(|e| format!("no --dns-server and /etc/resolv.conf unreadable: {e}"))?;
    first_nameserver(&text)
        .map(|ip| SocketAddr::new(ip, 53))
        .ok_or_else(|| "no --dns-server and no nameserver in /etc/resolv.conf".to_owned())
}

/// A name to resolve and the port to connect to (`name` or `name:port`; pure).
pub fn parse_dns_param(param: &str) -> Option<(String, Option<u16>)> {
    let (name, port) = match param.rsplit_once(':') {
        Some((name, port)) => (name, Some(port.parse().ok()?)),
        None => (param, None),
    };
    let name = name.trim_end_matches('.');
    (!name.is_empty() && name.len() <= 253).then(|| (name.to_owned(), port))
}

/// Asks `server` for the A and AAAA records of `name` over UDP.
async fn resolve(server: SocketAddr, name: &str) -> AgentDns {
    let mut out = AgentDns {
        name: name.to_owned(),
        server: server.to_string(),
        ..AgentDns::default()
    };
    let parsed = match Name::from_str(&format!("{name}.")) {
        Ok(n) => n,
        Err(e) => {
            out.error = Some(format!("not a DNS name: {e}"));
            return out;
        }
    };
    for (i, qtype) in [RecordType::A, RecordType::AAAA].into_iter().enumerate() {
        match ask(server, &parsed, qtype, i as u16 + 1).await {
            Ok(message) => {
                out.rcode = Some(format!("{:?}", message.metadata.response_code));
                out.addresses
                    .extend(message.answers.iter().filter_map(|r| match &r.data {
                        RData::A(a) => Some(a.0.to_string()),
                        RData::AAAA(a) => Some(a.0.to_string()),
                        _ => None,
                    }));
            }
            Err(e) => {
                out.error = Some(e);
                return out;
            }
        }
    }
    out
}

async fn ask(
    server: SocketAddr,
    name: &Name,
    qtype: RecordType,
    id: u16,
) -> Result<Message, String> {
    let mut query = Message::query();
    query.metadata.id = id;
    query.metadata.recursion_desired = true;
    query.add_query(Query::query(name.clone(), qtype));
    let bytes = query.to_vec().map_err(|e| e.to_string())?;
    let bind: SocketAddr = match server {
        SocketAddr::V4(_) => (std::net::Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (std::net::Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let socket = UdpSocket::bind(bind).await.map_err(|e| e.to_string())?;
    socket
        .connect(server)
        .await
        .map_err(|e| format!("cannot reach {server}: {e}"))?;
    socket
        .send(&bytes)
        .await
        .map_err(|e| format!("cannot send to {server}: {e}"))?;
    let mut buf = vec![0u8; 4096];
    let exchange = async {
        loop {
            let n = socket.recv(&mut buf).await.map_err(|e| e.to_string())?;
            // A stray datagram with another ID is not our answer: keep waiting.
            if let Ok(m) = Message::from_vec(&buf[..n]) {
                if m.metadata.id == id {
                    return Ok(m);
                }
            }
        }
    };
    tokio::time::timeout(DNS_TIMEOUT, exchange)
        .await
        .map_err(|_| format!("no answer from {server} within {DNS_TIMEOUT:?}"))?
}

/// Connects to a service's address. The kernel picks the source: for a remote cluster's
/// address the route into the tunnel interface gives the healthCheckIP (its only
/// address), so the answer comes back through the tunnel; for one of this cluster's own,
/// the node's address, which its pods can route back to.
async fn tcp_check(to: SocketAddr) -> AgentTcp {
    let start = Instant::now();
    let result = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(to)).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no answer within {CONNECT_TIMEOUT:?}")),
    };
    AgentTcp {
        address: to.to_string(),
        connect_ms: result
            .as_ref()
            .ok()
            .map(|_| start.elapsed().as_secs_f64() * 1e3),
        error: result.err(),
    }
}

/// `GET /verify`.
pub async fn verify_handler(
    State(diagnostics): State<Arc<Diagnostics>>,
    RawQuery(query): RawQuery,
) -> Response {
    let names: Vec<(String, Option<u16>)> =
        form_urlencoded::parse(query.unwrap_or_default().as_bytes())
            .filter(|(k, _)| k == "dns")
            .filter_map(|(_, v)| parse_dns_param(&v))
            .collect();
    if names.len() > MAX_DNS_NAMES {
        return (
            StatusCode::BAD_REQUEST,
            format!(
                "{} dns names asked; ask at most {MAX_DNS_NAMES} at once\n",
                names.len()
            ),
        )
            .into_response();
    }
    let answer = verify(&diagnostics, &names).await;
    match serde_json::to_string(&answer) {
        Ok(body) => ([(header::CONTENT_TYPE, "application/json")], body).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response(),
    }
}

async fn verify(diagnostics: &Diagnostics, names: &[(String, Option<u16>)]) -> AgentVerify {
    let snapshot = diagnostics.source.snapshot();
    let Some(local_ip) = diagnostics.tunnel_address(&snapshot) else {
        return AgentVerify::default();
    };
    let targets = diagnostics.probes.targets();
    let now = std::time::SystemTime::now();
    let mut peers: BTreeMap<String, AgentPeer> = BTreeMap::new();
    for p in &snapshot.peers {
        peers.insert(
            p.cluster_id.clone(),
            AgentPeer {
                cluster: p.cluster_id.clone(),
                endpoint: p.endpoint.map(|e| e.to_string()),
                last_handshake_seconds: p
                    .last_handshake
                    .map(|at| now.duration_since(at).map_or(0.0, |d| d.as_secs_f64())),
                ..AgentPeer::default()
            },
        );
    }
    for (cluster, addr) in &targets {
        let peer = peers.entry(cluster.clone()).or_insert_with(|| AgentPeer {
            cluster: cluster.clone(),
            ..AgentPeer::default()
        });
        peer.probe_target = Some(addr.to_string());
        peer.probes_sent = VERIFY_PROBES;
    }
    let probing = probe_burst(local_ip, &targets, VERIFY_PROBES, VERIFY_PROBE_SPACING);
    let server = dns_server(diagnostics.dns_server);
    let lookups = names.iter().map(|(name, port)| {
        let server = server.clone();
        async move {
            let server = match server {
                Ok(s) => s,
                Err(e) => {
                    return AgentDns {
                        name: name.clone(),
                        error: Some(e),
                        ..AgentDns::default()
                    }
                }
            };
            let mut answer = resolve(server, name).await;
            let first = answer
                .addresses
                .first()
                .and_then(|a| a.parse::<IpAddr>().ok());
            if let (Some(ip), Some(port)) = (first, port) {
                answer.tcp = Some(tcp_check(SocketAddr::new(ip, *port)).await);
            }
            answer
        }
    });
    let (rtts, dns) = tokio::join!(probing, futures::future::join_all(lookups));
    match rtts {
        Ok(rtts) => {
            for (cluster, samples) in rtts {
                if let Some(peer) = peers.get_mut(&cluster) {
                    peer.rtt = RttFigures::from_samples(&samples);
                }
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, local = %local_ip, "verify: cannot bind a probe socket")
        }
    }
    AgentVerify {
        active: true,
        health_check_ip: Some(local_ip.to_string()),
        peers: peers.into_values().collect(),
        dns,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolv_conf_first_nameserver() {
        let text = "# generated\nsearch causeway.svc.cluster.local\nnameserver 10.96.0.10\nnameserver 8.8.8.8\n";
        assert_eq!(first_nameserver(text), Some("10.96.0.10".parse().unwrap()));
        assert_eq!(
            first_nameserver("nameserver fd00::a\n"),
            Some("fd00::a".parse().unwrap())
        );
        assert_eq!(first_nameserver("options ndots:5\n"), None);
    }

    #[test]
    fn dns_params_carry_an_optional_port() {
        assert_eq!(
            parse_dns_param("db.prod.svc.clusterset.local:5432"),
            Some(("db.prod.svc.clusterset.local".into(), Some(5432)))
        );
        assert_eq!(
            parse_dns_param("db.prod.svc.clusterset.local."),
            Some(("db.prod.svc.clusterset.local".into(), None))
        );
        assert_eq!(parse_dns_param("db:http"), None);
        assert_eq!(parse_dns_param(""), None);
    }
}
