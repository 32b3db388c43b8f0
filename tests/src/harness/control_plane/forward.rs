//! A TCP forwarder between network namespaces: connections accepted on an address in one
//! namespace are carried to an address in another, as a router between two networks
//! would. The test's own clients reach API servers that live inside a site's namespace
//! this way, and a site's controller reaches the broker; nothing in either namespace's
//! configuration changes (a listening socket is all).

use std::fs::File;
use std::io;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::thread::JoinHandle;
use std::time::Duration;

use nix::sched::{setns, CloneFlags};
use tokio::sync::oneshot;

use super::super::netns::Netns;

/// How long a forwarded connection waits for the far side to accept it.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A running forwarder; dropping it closes the listener and every forwarded connection.
pub struct Forwarder {
    addr: SocketAddr,
    target: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Forwarder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Forwarder({} -> {})", self.addr, self.target)
    }
}

impl Forwarder {
    /// Listens on `listen` inside `listen_ns` (the test's own namespace when `None`) and
    /// carries each connection to `target` inside `target_ns` (likewise).
    pub fn start(
        listen_ns: Option<&Netns>,
        listen: SocketAddr,
        target_ns: Option<&Netns>,
        target: SocketAddr,
    ) -> io::Result<Forwarder> {
        let listener = match listen_ns {
            Some(ns) => ns.try_run(|| TcpListener::bind(listen))??,
            None => TcpListener::bind(listen)?,
        };
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let target_file = target_ns.map(|ns| open_netns(ns.path())).transpose()?;
        let (stop, stopped) = oneshot::channel();
        let (started, ready) = std::sync::mpsc::channel();
        let thread = std::thread::Builder::new()
            .name(format!("forward-{}", addr.port()))
            .spawn(move || {
                // Every socket this thread opens, every connection to `target` included,
                // lives in the target namespace; the listener stays where it was bound.
                let outcome = (|| -> io::Result<tokio::runtime::Runtime> {
                    if let Some(file) = &target_file {
                        setns(file.as_fd(), CloneFlags::CLONE_NEWNET)?;
                    }
                    tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                })();
                let runtime = match outcome {
                    Ok(runtime) => {
                        let _ = started.send(Ok(()));
                        runtime
                    }
                    Err(e) => {
                        let _ = started.send(Err(e));
                        return;
                    }
                };
                runtime.block_on(serve(listener, target, stopped));
            })?;
        ready
            .recv()
            .map_err(|_| io::Error::other("the forwarder thread ended before it started"))??;
        Ok(Forwarder {
            addr,
            target,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// The address it listens on (with the port the kernel chose for port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn open_netns(path: PathBuf) -> io::Result<File> {
    File::open(&path).map_err(|e| io::Error::new(e.kind(), format!("open {}: {e}", path.display())))
}

async fn serve(listener: TcpListener, target: SocketAddr, mut stopped: oneshot::Receiver<()>) {
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(listener) => listener,
        Err(e) => {
            eprintln!("causeway-tests: forwarder to {target} cannot listen: {e}");
            return;
        }
    };
    // Connections are tasks of this runtime: when the loop ends the runtime is dropped
    // and every connection with it.
    loop {
        tokio::select! {
            _ = &mut stopped => return,
            accepted = listener.accept() => {
                let Ok((mut inbound, _)) = accepted else { continue };
                tokio::spawn(async move {
                    let connect = tokio::net::TcpStream::connect(target);
                    // A refused or unanswered far side closes the accepted connection,
                    // as a dead server would.
                    if let Ok(Ok(mut outbound)) = tokio::time::timeout(CONNECT_TIMEOUT, connect).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        }
    }
}
