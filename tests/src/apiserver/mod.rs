//! An in-memory stand-in for a Kubernetes API server, for tests and the lab.
//!
//! **This is not a Kubernetes API server.** No kube-apiserver can be
//! installed on these machines, so tests use this instead: it speaks the
//! Kubernetes REST and watch protocol over plain HTTP (JSON only) well enough
//! for the real `kube` client, `kube_runtime::watcher`, controllers and
//! `kube::Discovery` to work unchanged against it. It keeps every object as
//! JSON in memory, with no authentication, authorization, admission,
//! OpenAPI validation or defaulting.
//!
//! What behaves like the real server:
//! - paths `/api/v1/...` and `/apis/{group}/{version}/...`, namespaced and
//!   cluster-wide; discovery (`/api`, `/apis`, `/api/v1`, `/apis/{g}/{v}`,
//!   aggregated discovery, `/version`);
//! - get, list (`labelSelector`, `fieldSelector` on `metadata.name` and
//!   `metadata.namespace`, `limit`/`continue`), watch from a resourceVersion
//!   with bookmarks, `sendInitialEvents` and `timeoutSeconds`, and 410 Gone
//!   (`Expired`) when that version is older than the retained history;
//! - create (`generateName`, 409 AlreadyExists, 404 for a missing
//!   namespace, 422 for an invalid name), replace (409 Conflict on a stale
//!   `resourceVersion`), merge / JSON / apply patches, delete (preconditions,
//!   finalizers), deletecollection, `dryRun=All`;
//! - status subresources, `metadata.generation`, one global
//!   resourceVersion counter, writes that change nothing are not writes;
//! - deleting a namespace deletes its contents; deleting an owner deletes
//!   dependents that have no other owner (background garbage collection);
//!   creating a CustomResourceDefinition serves its resources.
//!
//! Simplified on purpose:
//! - strategic merge patch is applied as a JSON merge patch;
//! - server-side apply treats lists as atomic and tracks ownership only for
//!   `Apply` managers (see [`patch`]);
//! - lists are always served from the latest state: `resourceVersion` and
//!   `resourceVersionMatch` on a list are accepted but not honoured, and
//!   later pages of a paged list see the state at the time they are asked for;
//! - namespace deletion is immediate (no `Terminating` phase), and ignores
//!   finalizers of the objects inside; `propagationPolicy` is ignored
//!   (always background);
//! - no protobuf, no HTTP/2, no TLS, no field validation of object bodies;
//! - the only subresource besides `status` is the pod proxy ([`proxy`]), which dials
//!   `status.podIP` from [`ApiServerOptions::pod_netns`].
//!
//! One store can be served on several listeners at once, each possibly in
//! another network namespace ([`ApiServer::add_listener`]); `stop` and
//! `restart` act on all of them.
//!
//! ```no_run
//! use causeway_tests::apiserver::ApiServer;
//! let server = ApiServer::start(std::net::TcpListener::bind("127.0.0.1:0").unwrap());
//! server.write_kubeconfig("/tmp/kubeconfig", "default").unwrap();
//! ```

pub mod discovery;
pub mod error;
mod http;
pub mod patch;
pub mod proxy;
pub mod resource;
pub mod selector;
pub mod store;
pub mod traffic;

use std::io;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::sync::oneshot;

pub use error::ApiError;
pub use resource::{Gvr, ResourceType};
pub use store::{SharedStore, Store};
pub use traffic::{RequestRecord, WriteCounts};

use http::ServerState;
use traffic::Traffic;

/// Tunables of an [`ApiServer`].
#[derive(Debug, Clone)]
pub struct ApiServerOptions {
    /// Changes kept for watches resuming from a resourceVersion; a watch
    /// from before the oldest kept change gets 410 Gone.
    pub history_limit: usize,
    /// How often a watch with `allowWatchBookmarks` gets a BOOKMARK (the real
    /// server waits about a minute; tests want to see them quickly).
    pub bookmark_interval: Duration,
    /// The network namespace (its file, e.g. `/var/run/netns/<name>`) where pod IPs are
    /// reachable: the pod proxy dials from there. `None`: from the server's own.
    pub pod_netns: Option<std::path::PathBuf>,
}

impl Default for ApiServerOptions {
    fn default() -> Self {
        ApiServerOptions {
            history_limit: store::DEFAULT_HISTORY_LIMIT,
            bookmark_interval: Duration::from_secs(1),
            pod_netns: None,
        }
    }
}

/// A running (or stopped) in-memory API server; see the module docs.
///
/// Serves on its own thread with its own tokio runtime, so it works from
/// plain threads and from inside any async test alike. Dropping it stops it.
///
/// One store can be served on several listeners, e.g. one in the test's own
/// network namespace and one inside each namespace where a process under
/// test runs ([`ApiServer::add_listener`]); they all stop and restart together.
pub struct ApiServer {
    /// The first listener's address, what [`ApiServer::addr`] reports.
    addr: SocketAddr,
    state: Arc<ServerState>,
    listeners: Mutex<Vec<Listener>>,
}

/// One address the server is reachable on.
struct Listener {
    addr: SocketAddr,
    /// The network namespace the listener was bound in, so that `restart`
    /// binds the same address in the same namespace.
    netns: Option<OwnedFd>,
    /// `None` while the server is stopped.
    running: Option<Running>,
}

struct Running {
    shutdown: oneshot::Sender<()>,
    thread: JoinHandle<()>,
}

impl Running {
    /// Stops serving; returns once every connection of this listener is gone.
    fn stop(self) {
        let _ = self.shutdown.send(());
        // The thread drops its runtime, and with it every connection,
        // before it ends: after this, nothing is served.
        let _ = self.thread.join();
    }
}

impl ApiServer {
    /// Serves on `listener` with default options.
    ///
    /// Bind the listener wherever the server should be reachable (for
    /// example inside a test network namespace with `Netns::run`); the
    /// server itself runs on an ordinary thread.
    ///
    /// Panics if the serving thread or its runtime cannot be created.
    pub fn start(listener: TcpListener) -> ApiServer {
        Self::start_with(listener, ApiServerOptions::default())
    }

    /// Serves on `listener` with the given options; panics like [`ApiServer::start`].
    pub fn start_with(listener: TcpListener, options: ApiServerOptions) -> ApiServer {
        match Self::try_start_with(listener, options) {
            Ok(server) => server,
            Err(e) => panic!("cannot start the in-memory API server: {e}"),
        }
    }

    /// Like [`ApiServer::start_with`], reporting failures instead of panicking.
    pub fn try_start_with(
        listener: TcpListener,
        options: ApiServerOptions,
    ) -> io::Result<ApiServer> {
        let addr = listener.local_addr()?;
        let state = Arc::new(ServerState {
            store: Arc::new(SharedStore::new(options.history_limit)),
            traffic: Mutex::new(Traffic::default()),
            bookmark_interval: options.bookmark_interval,
            pod_netns: options.pod_netns,
        });
        let netns = socket_netns(&listener);
        let running = spawn(listener, state.clone())?;
        Ok(ApiServer {
            addr,
            state,
            listeners: Mutex::new(vec![Listener {
                addr,
                netns,
                running: Some(running),
            }]),
        })
    }

    /// Serves the same objects on `listener` too (bound in whatever network
    /// namespace it was created in); it stops and restarts with the others.
    ///
    /// While the server is stopped the listener is only remembered: its socket
    /// is closed, so that connections are refused rather than left queued, and
    /// [`ApiServer::restart`] binds its address again.
    pub fn add_listener(&self, listener: TcpListener) -> io::Result<()> {
        let addr = listener.local_addr()?;
        let netns = socket_netns(&listener);
        let mut listeners = self.listeners_slot();
        // All listeners share one state: running or not is the first one's.
        let running = match listeners.first().is_some_and(|l| l.running.is_some()) {
            true => Some(spawn(listener, self.state.clone())?),
            false => None,
        };
        listeners.push(Listener {
            addr,
            netns,
            running,
        });
        Ok(())
    }

    /// The address of the first listener (also while stopped: `restart` reuses it).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The address of every listener, the first one first (each in its own namespace).
    pub fn addrs(&self) -> Vec<SocketAddr> {
        self.listeners_slot().iter().map(|l| l.addr).collect()
    }

    /// `http://ADDR` of the first listener, the cluster URL clients use.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Whether the server is accepting connections.
    pub fn is_running(&self) -> bool {
        self.listeners_slot().iter().any(|l| l.running.is_some())
    }

    /// Stops accepting on every listener and drops every connection (watches
    /// included); the objects are kept. Clients see connection errors until
    /// [`ApiServer::restart`].
    pub fn stop(&self) {
        let running: Vec<Running> = self
            .listeners_slot()
            .iter_mut()
            .filter_map(|l| l.running.take())
            .collect();
        // Signal every listener first so they wind down in parallel.
        let mut threads = Vec::with_capacity(running.len());
        for r in running {
            let _ = r.shutdown.send(());
            threads.push(r.thread);
        }
        for thread in threads {
            let _ = thread.join();
        }
    }

    /// Serves again on every listener's address, each in its own network
    /// namespace, with the same objects. Listeners already running are left
    /// alone. If one address cannot be bound, none is started.
    pub fn restart(&self) -> io::Result<()> {
        let mut listeners = self.listeners_slot();
        // Bind everything before serving anything, so a failure leaves the
        // server as stopped as it was.
        let mut bound = Vec::new();
        for (i, l) in listeners.iter().enumerate() {
            if l.running.is_none() {
                let socket = bind_in(l.netns.as_ref(), l.addr).map_err(|e| {
                    io::Error::new(e.kind(), format!("rebind listener {}: {e}", l.addr))
                })?;
                bound.push((i, socket));
            }
        }
        let mut started = Vec::with_capacity(bound.len());
        for (i, socket) in bound {
            match spawn(socket, self.state.clone()) {
                Ok(running) => started.push((i, running)),
                Err(e) => {
                    for (_, running) in started {
                        running.stop();
                    }
                    return Err(e);
                }
            }
        }
        for (i, running) in started {
            listeners[i].running = Some(running);
        }
        Ok(())
    }

    /// The object store, for seeding and inspecting objects without HTTP.
    pub fn store(&self) -> Arc<SharedStore> {
        self.state.store.clone()
    }

    /// Write requests (POST, PUT, PATCH, DELETE) received for one resource type.
    pub fn writes(&self, gvr: &Gvr) -> WriteCounts {
        self.traffic().writes(gvr)
    }

    /// Write requests received for the resource type of `K`.
    pub fn writes_of<K: kube::Resource<DynamicType = ()>>(&self) -> WriteCounts {
        self.writes(&Gvr::of::<K>())
    }

    /// Write requests received for every resource type together.
    pub fn total_writes(&self) -> u64 {
        self.traffic().total_writes()
    }

    /// Every request received (up to the last [`traffic::REQUEST_LOG_LIMIT`]).
    pub fn requests(&self) -> Vec<RequestRecord> {
        self.traffic().requests()
    }

    /// Forgets write counts and the request log, e.g. before a reconcile that should write nothing.
    pub fn reset_counters(&self) {
        self.traffic().reset();
    }

    /// A kubeconfig for this server (no TLS, no credentials) whose context
    /// uses `namespace` by default; it points at the first listener.
    pub fn kubeconfig(&self, namespace: &str) -> String {
        self.kubeconfig_at(self.addr, namespace)
    }

    /// Like [`ApiServer::kubeconfig`], pointing at `addr`: another listener's
    /// address as seen from inside its network namespace.
    pub fn kubeconfig_at(&self, addr: SocketAddr, namespace: &str) -> String {
        format!(
            "apiVersion: v1
kind: Config
clusters:
- name: causeway-test
  cluster:
    server: http://{addr}
contexts:
- name: causeway-test
  context:
    cluster: causeway-test
    user: causeway-test
    namespace: {namespace}
current-context: causeway-test
users:
- name: causeway-test
  user: {{}}
"
        )
    }

    /// Writes [`ApiServer::kubeconfig`] to `path`.
    pub fn write_kubeconfig(&self, path: impl AsRef<Path>, namespace: &str) -> io::Result<()> {
        std::fs::write(path, self.kubeconfig(namespace))
    }

    /// A `kube::Config` for this server with `namespace` as default namespace.
    pub fn client_config(&self, namespace: &str) -> kube::Config {
        let url = self
            .url()
            .parse()
            .unwrap_or_else(|e| unreachable!("http://ip:port is a valid URI: {e}"));
        let mut config = kube::Config::new(url);
        config.default_namespace = namespace.to_string();
        config
    }

    fn listeners_slot(&self) -> std::sync::MutexGuard<'_, Vec<Listener>> {
        self.listeners.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn traffic(&self) -> std::sync::MutexGuard<'_, Traffic> {
        self.state.traffic.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        self.stop();
    }
}

impl std::fmt::Debug for ApiServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiServer")
            .field("addrs", &self.addrs())
            .field("running", &self.is_running())
            .finish()
    }
}

/// Runs the HTTP server on a thread of its own with a single-threaded runtime.
fn spawn(listener: TcpListener, state: Arc<ServerState>) -> io::Result<Running> {
    listener.set_nonblocking(true)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (shutdown, shutdown_rx) = oneshot::channel();
    let addr = listener.local_addr()?;
    let thread = std::thread::Builder::new()
        .name(format!("apiserver-{}", addr.port()))
        .spawn(move || {
            runtime.block_on(async move {
                match tokio::net::TcpListener::from_std(listener) {
                    Ok(listener) => http::serve(listener, state, shutdown_rx).await,
                    Err(e) => eprintln!("in-memory API server on {addr}: cannot listen: {e}"),
                }
            });
            // Dropping the runtime here drops every connection task.
            drop(runtime);
        })?;
    Ok(Running { shutdown, thread })
}

/// `SIOCGSKNS`: an fd for the network namespace a socket belongs to.
const SIOCGSKNS: libc::c_ulong = 0x894C;

fn socket_netns(listener: &TcpListener) -> Option<OwnedFd> {
    // SAFETY: ioctl on a socket fd we own; SIOCGSKNS takes no argument and
    // returns a new file descriptor (or -1), which we then own.
    let fd = unsafe { libc::ioctl(listener.as_raw_fd(), SIOCGSKNS as _) };
    // SAFETY: fd is a fresh descriptor returned to us by the kernel.
    (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd) })
}

fn same_netns(netns: &OwnedFd) -> io::Result<bool> {
    let ours = std::fs::metadata("/proc/thread-self/ns/net")?;
    let theirs = std::fs::File::from(netns.try_clone()?).metadata()?;
    Ok(ours.dev() == theirs.dev() && ours.ino() == theirs.ino())
}

/// Binds `addr` in `netns` (the caller's namespace when `None` or the same).
fn bind_in(netns: Option<&OwnedFd>, addr: SocketAddr) -> io::Result<TcpListener> {
    let Some(netns) = netns else {
        return TcpListener::bind(addr);
    };
    if same_netns(netns)? {
        return TcpListener::bind(addr);
    }
    let netns = netns.try_clone()?;
    std::thread::scope(|scope| {
        let bound = std::thread::Builder::new()
            .name("apiserver-rebind".into())
            .spawn_scoped(scope, move || {
                // Only this short-lived thread changes namespace.
                nix::sched::setns(&netns, nix::sched::CloneFlags::CLONE_NEWNET)?;
                TcpListener::bind(addr)
            })?
            .join();
        match bound {
            Ok(result) => result,
            Err(_) => Err(io::Error::other("rebinding thread panicked")),
        }
    })
}
