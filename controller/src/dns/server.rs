//! The DNS server: hickory-server on UDP and TCP at one address, answering every
//! query from the zone currently in a [`SharedZone`].
//!
//! The zone is swapped whole by the feed; a query loads the current one without a
//! lock and keeps that `Arc` until its response is sent, so a rebuild is seen by
//! the next query and never half-way through one.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use hickory_server::net::runtime::Time;
use hickory_server::proto::op::{
    Edns, Header, HeaderCounts, MessageType, Metadata, OpCode, ResponseCode,
};
use hickory_server::proto::rr::{DNSClass, Record};
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::{MessageResponse, MessageResponseBuilder};
use hickory_server::Server;
use tokio::net::{TcpListener, UdpSocket};
use tracing::{debug, warn};

use super::zone::{Lookup, Zone};
use super::DnsError;

/// The zone the server answers from; `None` until the first build, answered SERVFAIL
/// (a resolver retries that soon, where an empty zone's NXDOMAIN would be cached).
pub type SharedZone = Arc<ArcSwapOption<Zone>>;

/// Largest UDP response, whatever a client advertises: 1232 bytes fit any path's
/// MTU without IP fragmentation (DNS flag day 2020); larger answers go over TCP.
const MAX_UDP_PAYLOAD: u16 = 1232;
/// A TCP connection that sends no query for this long is closed.
const TCP_IDLE: Duration = Duration::from_secs(10);
/// Responses queued per TCP connection.
const TCP_RESPONSE_BUFFER: usize = 32;
/// Tries at one port for UDP and TCP together when the configured port is 0.
const BIND_TRIES: usize = 16;

mod front;

/// A running DNS server: UDP and TCP on the same address.
pub struct DnsServer {
    server: Server<Handler>,
    addr: SocketAddr,
    /// Stops the bounded TCP front (see [`front`]).
    stop_front: tokio::sync::watch::Sender<bool>,
}

impl std::fmt::Debug for DnsServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DnsServer")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl DnsServer {
    /// Binds UDP and TCP at `listen` (port 0: one free port for both) and starts answering from `zone`.
    pub async fn bind(listen: SocketAddr, zone: SharedZone) -> Result<DnsServer, DnsError> {
        let (udp, tcp) = bind_both(listen).await?;
        let addr = udp.local_addr().map_err(|source| DnsError::Bind {
            protocol: "UDP",
            addr: listen,
            source,
        })?;
        let mut server = Server::new(Handler {
            zone,
            turn: AtomicUsize::new(0),
        });
        server.register_socket(udp);
        // hickory's own TCP listener takes every connection; it listens on loopback
        // only, behind a front that bounds how many clients hold.
        let loopback = SocketAddr::new(std::net::Ipv4Addr::LOCALHOST.into(), 0);
        let inner_error = |source| DnsError::Bind {
            protocol: "TCP (loopback, for the DNS server itself)",
            addr: loopback,
            source,
        };
        let inner = TcpListener::bind(loopback).await.map_err(inner_error)?;
        let inner_addr = inner.local_addr().map_err(inner_error)?;
        server.register_listener(inner, TCP_IDLE, TCP_RESPONSE_BUFFER);
        let (stop_front, front_stopped) = tokio::sync::watch::channel(false);
        tokio::spawn(front::serve(tcp, inner_addr, front_stopped));
        Ok(DnsServer {
            server,
            addr,
            stop_front,
        })
    }

    /// The address the server answers at (UDP and TCP).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Resolves only when a listener stops on its own, with the reason.
    pub async fn failed(&mut self) -> DnsError {
        let reason = match self.server.block_until_done().await {
            Ok(()) => "every listener ended".to_owned(),
            Err(error) => error.to_string(),
        };
        DnsError::Serve {
            addr: self.addr,
            reason,
        }
    }

    /// Stops accepting queries and waits for the listeners to end.
    pub async fn shutdown(mut self) {
        let _ = self.stop_front.send(true);
        if let Err(error) = self.server.shutdown_gracefully().await {
            debug!(%error, "DNS listener ended with an error while shutting down");
        }
    }
}

async fn bind_both(listen: SocketAddr) -> Result<(UdpSocket, TcpListener), DnsError> {
    let udp_error = |source| DnsError::Bind {
        protocol: "UDP",
        addr: listen,
        source,
    };
    let tcp_error = |source| DnsError::Bind {
        protocol: "TCP",
        addr: listen,
        source,
    };
    let tries = if listen.port() == 0 { BIND_TRIES } else { 1 };
    let mut last = None;
    for _ in 0..tries {
        let udp = UdpSocket::bind(listen).await.map_err(udp_error)?;
        let addr = udp.local_addr().map_err(udp_error)?;
        match TcpListener::bind(addr).await {
            Ok(tcp) => return Ok((udp, tcp)),
            // The free UDP port may be taken for TCP: try another one.
            Err(error) if error.kind() == io::ErrorKind::AddrInUse => last = Some(error),
            Err(error) => return Err(tcp_error(error)),
        }
    }
    Err(tcp_error(last.unwrap_or_else(|| {
        io::Error::new(
            io::ErrorKind::AddrInUse,
            "no port free for both UDP and TCP",
        )
    })))
}

/// Answers queries from the shared zone.
struct Handler {
    zone: SharedZone,
    /// Rotates multi-record answers, so clients taking the first address spread
    /// over every endpoint (the zone itself is sorted).
    turn: AtomicUsize,
}

#[async_trait::async_trait]
impl RequestHandler for Handler {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        mut response: R,
    ) -> ResponseInfo {
        // A client that sent EDNS gets it back (RFC 6891); without it hickory caps
        // the UDP response at 512 bytes and sets TC, and the client retries on TCP.
        let edns = request.edns.as_ref().map(|asked| {
            let mut edns = Edns::new();
            edns.set_max_payload(asked.max_payload().clamp(512, MAX_UDP_PAYLOAD));
            edns.set_version(0);
            edns
        });
        let builder = MessageResponseBuilder::new(&request.queries, edns.as_ref());
        let failure = if request.metadata.message_type != MessageType::Query {
            Some(ResponseCode::FormErr)
        } else if request.edns.as_ref().is_some_and(|e| e.version() > 0) {
            Some(ResponseCode::BADVERS)
        } else if request.metadata.op_code != OpCode::Query {
            // No NOTIFY, UPDATE or zone transfers: the zone is built, not edited.
            Some(ResponseCode::NotImp)
        } else {
            None
        };
        if let Some(code) = failure {
            return send(
                &mut response,
                builder.error_msg(&request.metadata, code),
                request,
            )
            .await;
        }
        let Ok(info) = request.request_info() else {
            // Not exactly one question.
            let reply = builder.error_msg(&request.metadata, ResponseCode::FormErr);
            return send(&mut response, reply, request).await;
        };
        let query = info.query;
        if query.query_class() != DNSClass::IN {
            let reply = builder.error_msg(&request.metadata, ResponseCode::Refused);
            return send(&mut response, reply, request).await;
        }
        let Some(zone) = self.zone.load_full() else {
            let reply = builder.error_msg(&request.metadata, ResponseCode::ServFail);
            return send(&mut response, reply, request).await;
        };
        let mut metadata = Metadata::response_from_request(&request.metadata);
        metadata.authoritative = true;
        let (answers, soa): (Vec<&Record>, Option<&Record>) =
            match zone.lookup(query.name(), query.query_type()) {
                Lookup::Answer(mut records) => {
                    let turn = self.turn.fetch_add(1, Ordering::Relaxed);
                    let len = records.len();
                    records.rotate_left(turn % len);
                    (records, None)
                }
                Lookup::NoData => (Vec::new(), Some(zone.soa())),
                Lookup::NxDomain => {
                    metadata.response_code = ResponseCode::NXDomain;
                    (Vec::new(), Some(zone.soa()))
                }
                Lookup::Refused => {
                    // Not a resolver: names outside clusterset.local are someone else's.
                    let reply = builder.error_msg(&request.metadata, ResponseCode::Refused);
                    return send(&mut response, reply, request).await;
                }
            };
        let reply = builder.build(metadata, answers, [], soa, []);
        send(&mut response, reply, request).await
    }
}

async fn send<'a, R: ResponseHandler>(
    response: &mut R,
    reply: MessageResponse<
        '_,
        'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
    >,
    request: &Request,
) -> ResponseInfo {
    match response.send_response(reply).await {
        Ok(info) => info,
        Err(error) => {
            // The client went away or the socket failed; nothing more to tell it.
            warn!(client = %request.src(), %error, "cannot send a DNS response");
            let mut metadata = Metadata::response_from_request(&request.metadata);
            metadata.response_code = ResponseCode::ServFail;
            Header {
                metadata,
                counts: HeaderCounts::default(),
            }
            .into()
        }
    }
}

#[cfg(test)]
mod tests;
