//! The public TCP side of the DNS server, with bounds hickory's listener lacks.
//!
//! hickory-server accepts every TCP connection and keeps each until it idles out, so a
//! client opening thousands would take the controller's file descriptors (and with them
//! its API connections). This front accepts at most [`MAX_CONNECTIONS`] at once, and
//! [`MAX_PER_SOURCE`] from one address (IPv6 by /64); beyond that a connection is closed
//! as soon as it is accepted. A kept connection is spliced to hickory's listener on
//! loopback, which answers it as any other.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use causeway_wire::net::source_group;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tracing::{debug, warn};

/// TCP connections served at once, from all clients together.
pub const MAX_CONNECTIONS: usize = 128;
/// TCP connections served at once from one address (an IPv6 /64 counts as one).
pub const MAX_PER_SOURCE: usize = 16;

/// Who holds how many of the connections.
#[derive(Debug, Default)]
struct Held {
    total: usize,
    by_source: HashMap<IpAddr, usize>,
}

/// One address's claim on the bounds, given back on drop.
struct Claim {
    held: Arc<Mutex<Held>>,
    source: IpAddr,
}

impl Drop for Claim {
    fn drop(&mut self) {
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        held.total -= 1;
        if let Some(n) = held.by_source.get_mut(&self.source) {
            *n -= 1;
            if *n == 0 {
                held.by_source.remove(&self.source);
            }
        }
    }
}

/// Takes a place for a connection from `source`, if the bounds leave one.
fn claim(held: &Arc<Mutex<Held>>, source: IpAddr) -> Option<Claim> {
    let source = source_group(source);
    let mut h = held.lock().unwrap_or_else(|p| p.into_inner());
    let mine = h.by_source.get(&source).copied().unwrap_or(0);
    if h.total >= MAX_CONNECTIONS || mine >= MAX_PER_SOURCE {
        return None;
    }
    h.total += 1;
    *h.by_source.entry(source).or_insert(0) += 1;
    Some(Claim {
        held: Arc::clone(held),
        source,
    })
}

/// Accepts on `public` until `stop` fires, and splices each connection the bounds allow
/// to `inner` (hickory's listener on loopback).
pub async fn serve(public: TcpListener, inner: SocketAddr, mut stop: watch::Receiver<bool>) {
    let held = Arc::new(Mutex::new(Held::default()));
    let mut refused: u64 = 0;
    loop {
        let (client, from) = tokio::select! {
            accepted = public.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of descriptors or a connection reset before accept: the next
                    // accept may succeed; back off briefly so an error cannot spin.
                    debug!(%error, "DNS TCP accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                    continue;
                }
            },
            _ = stop.changed() => return,
        };
        let Some(claim) = claim(&held, from.ip()) else {
            refused += 1;
            if refused.is_power_of_two() {
                warn!(%from, refused, max = MAX_CONNECTIONS, per_source = MAX_PER_SOURCE, "DNS TCP connection refused: too many open (from this address, or in all); clients retry, and UDP is unaffected");
            }
            drop(client);
            continue;
        };
        tokio::spawn(async move {
            let _claim = claim;
            splice(client, inner).await;
        });
    }
}

async fn splice(mut client: TcpStream, inner: SocketAddr) {
    match TcpStream::connect(inner).await {
        // Ends when either side closes: hickory closes an idle connection itself.
        Ok(mut server) => {
            let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
        }
        Err(error) => warn!(%inner, %error, "cannot reach the DNS server's own TCP listener"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn places_are_bounded_per_source_and_in_all_and_given_back() {
        let held = Arc::new(Mutex::new(Held::default()));
        let a: IpAddr = "10.1.0.5".parse().unwrap();
        let claims: Vec<Claim> = (0..MAX_PER_SOURCE)
            .map(|_| claim(&held, a).expect("a place"))
            .collect();
        assert!(claim(&held, a).is_none(), "one source is capped");
        let other = claim(&held, "10.1.0.6".parse().unwrap());
        assert!(other.is_some(), "another source is not");
        drop(claims);
        drop(other);
        assert_eq!(held.lock().unwrap().total, 0);
        assert!(held.lock().unwrap().by_source.is_empty());
        assert!(claim(&held, a).is_some(), "places come back");

        // IPv6 by /64, and the total bound across many sources.
        let v6 = |i: u16| IpAddr::from([0xfd00, 1, 0, 0, 0, 0, 0, i]);
        let mine: Vec<Claim> = (0..MAX_PER_SOURCE as u16)
            .map(|i| claim(&held, v6(i)).expect("a place"))
            .collect();
        assert!(claim(&held, v6(999)).is_none(), "same /64");
        let many: Vec<Claim> = (0..=255u8)
            .flat_map(|i| (0..4).map(move |_| IpAddr::from([10, 9, 0, i])))
            .filter_map(|ip| claim(&held, ip))
            .collect();
        assert_eq!(many.len() + mine.len(), MAX_CONNECTIONS);
    }
}
