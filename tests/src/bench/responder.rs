//! Simulated remote gateways for the handshake test: one UDP socket per peer,
//! each driven by its own boringtun `noise::Tunn`, answering the Causeway
//! gateway's handshake initiations like a real WireGuard peer would.

use std::net::{SocketAddr, UdpSocket};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use boringtun::noise::{Tunn, TunnResult};
use boringtun::x25519::{PublicKey, StaticSecret};

use crate::harness::Netns;

/// One simulated peer: where it listens and its static private key.
#[derive(Debug, Clone)]
pub struct SimulatedPeer {
    /// The UDP address it answers on (must be an address inside the namespace).
    pub addr: SocketAddr,
    /// Its WireGuard static private key.
    pub private_key: [u8; 32],
}

/// Handshake responders running on a background thread; stopped on drop.
pub struct Responder {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
    first_reply: Arc<Mutex<Vec<Option<Instant>>>>,
}

impl Responder {
    /// Binds every peer's socket inside `ns` and starts answering handshakes from the
    /// gateway whose public key is `gateway_public`; the thread ends after `limit` at the latest.
    pub fn start(
        ns: &Netns,
        peers: &[SimulatedPeer],
        gateway_public: [u8; 32],
        limit: Duration,
    ) -> Result<Responder> {
        let sockets = ns
            .try_run(|| {
                peers
                    .iter()
                    .map(|p| {
                        let sock = UdpSocket::bind(p.addr)
                            .with_context(|| format!("binding responder socket {}", p.addr))?;
                        sock.set_nonblocking(true)?;
                        Ok(sock)
                    })
                    .collect::<Result<Vec<_>>>()
            })
            .context("entering namespace B for the responders")??;
        let keys: Vec<[u8; 32]> = peers.iter().map(|p| p.private_key).collect();
        let first_reply = Arc::new(Mutex::new(vec![None; peers.len()]));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let replies = Arc::clone(&first_reply);
        let thread = std::thread::Builder::new()
            .name("bench-responder".into())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        eprintln!("causeway-bench: responder runtime: {e}");
                        return;
                    }
                };
                runtime.block_on(async move {
                    let mut tasks = Vec::with_capacity(sockets.len());
                    for (i, (sock, key)) in sockets.into_iter().zip(keys).enumerate() {
                        let sock = match tokio::net::UdpSocket::from_std(sock) {
                            Ok(s) => s,
                            Err(e) => {
                                eprintln!("causeway-bench: responder socket: {e}");
                                return;
                            }
                        };
                        let tunn = Tunn::new(
                            StaticSecret::from(key),
                            PublicKey::from(gateway_public),
                            None,
                            None,
                            u32::try_from(i + 1).unwrap_or(u32::MAX),
                            None,
                        );
                        tasks.push(serve_peer(sock, tunn, i, Arc::clone(&replies)));
                    }
                    tokio::select! {
                        _ = futures::future::join_all(tasks) => {}
                        _ = stopped => {}
                        _ = tokio::time::sleep(limit) => {}
                    }
                });
            })
            .context("starting the responder thread")?;
        Ok(Responder {
            stop: Some(stop),
            thread: Some(thread),
            first_reply,
        })
    }

    /// When each peer first sent a handshake response (`None`: not yet).
    pub fn first_replies(&self) -> Vec<Option<Instant>> {
        self.first_reply
            .lock()
            .map(|v| v.clone())
            .unwrap_or_default()
    }

    /// The latest first-response time over all peers, once every peer has answered.
    pub fn all_answered_at(&self) -> Option<Instant> {
        self.first_replies()
            .into_iter()
            .try_fold(None::<Instant>, |latest, t| Some(latest.max(Some(t?))))
            .flatten()
    }

    /// Stops the responders and waits for their thread.
    pub fn stop(mut self) -> Result<()> {
        self.stop_inner()
    }

    fn stop_inner(&mut self) -> Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            thread
                .join()
                .map_err(|_| anyhow!("the responder thread panicked"))?;
        }
        Ok(())
    }
}

impl Drop for Responder {
    fn drop(&mut self) {
        if let Err(e) = self.stop_inner() {
            eprintln!("causeway-bench: {e}");
        }
    }
}

/// Answers one peer's datagrams until the socket fails; ticks its timers every second.
async fn serve_peer(
    sock: tokio::net::UdpSocket,
    mut tunn: Tunn,
    slot: usize,
    first_reply: Arc<Mutex<Vec<Option<Instant>>>>,
) {
    let mut buf = vec![0u8; 65_536];
    let mut out = vec![0u8; 65_536];
    let mut last_from: Option<SocketAddr> = None;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        let (mut result, to) = tokio::select! {
            received = sock.recv_from(&mut buf) => {
                let Ok((n, from)) = received else { return };
                last_from = Some(from);
                (tunn.decapsulate(Some(from.ip()), &buf[..n], &mut out), from)
            }
            _ = tick.tick() => {
                let Some(to) = last_from else { continue };
                (tunn.update_timers(&mut out), to)
            }
        };
        // A handshake response, then anything boringtun queued behind it.
        while let TunnResult::WriteToNetwork(packet) = result {
            if sock.send_to(packet, to).await.is_err() {
                return;
            }
            if let Ok(mut replies) = first_reply.lock() {
                replies[slot].get_or_insert_with(Instant::now);
            }
            result = tunn.decapsulate(None, &[], &mut out);
        }
    }
}
