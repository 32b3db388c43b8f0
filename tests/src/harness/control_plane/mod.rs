//! A real Kubernetes control plane for the tests: etcd, kube-apiserver and
//! kube-controller-manager built from their upstream Go modules by `scripts/kube build`,
//! with certificates, `--authorization-mode=Node,RBAC` and ServiceAccount token signing,
//! so RBAC, TokenRequest, admission, CRD schemas and the real controllers all apply.
//!
//! One etcd serves every API server of a test world, each under its own `--etcd-prefix`,
//! over a Unix socket (so API servers in different network namespaces share it without a
//! network between them). Each API server runs inside a network namespace of the test's:
//! a site's lives on its worker node (so its pod proxy reaches the node network), the
//! broker's in a namespace of its own. The test itself reaches them through
//! [`Forwarder`]s on loopback of its own namespace.
//!
//! ```text
//!   etcd (unix socket) ◄── kube-apiserver site-a (worker ns, :6443) ◄── kube-controller-manager
//!                      ◄── kube-apiserver site-b (worker ns, :6443) ◄── kube-controller-manager
//!                      ◄── kube-apiserver broker (broker ns, :6443) ◄── kube-controller-manager
//! ```

pub mod apiserver;
pub mod audit;
pub mod cluster;
pub mod forward;
pub mod install;
pub mod pki;
pub mod workload;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub use apiserver::{ApiServerSpec, Credentials, KubeApiServer, Writes};
pub use cluster::{ClusterKind, TestCluster};
pub use forward::Forwarder;

use super::netns::Netns;
use super::process::ChildGuard;
use super::{io_context, HarnessError};

/// The binaries `scripts/kube build` made.
#[derive(Debug, Clone)]
pub struct Binaries {
    /// `kube-apiserver`.
    pub kube_apiserver: PathBuf,
    /// `kube-controller-manager`.
    pub kube_controller_manager: PathBuf,
    /// `kubectl`, the client the tests install with and run the plugin through.
    pub kubectl: PathBuf,
    /// `etcd`.
    pub etcd: PathBuf,
}

/// The workspace's root directory (where `scripts/` lives).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

/// Where `scripts/kube build` left the control plane's binaries: `$CAUSEWAY_KUBE_BIN` if
/// set, else what `scripts/kube path` says. Looked up once per process.
pub fn binaries() -> Result<Binaries, HarnessError> {
    static FOUND: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let dir = FOUND.get_or_init(|| {
        if let Some(dir) = std::env::var_os("CAUSEWAY_KUBE_BIN") {
            return Ok(PathBuf::from(dir));
        }
        let script = workspace_root().join("scripts/kube");
        let out = Command::new(&script)
            .arg("path")
            .output()
            .map_err(|e| format!("cannot run {}: {e}", script.display()))?;
        match out.status.success() {
            true => Ok(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())),
            false => Err(String::from_utf8_lossy(&out.stderr).trim().to_string()),
        }
    });
    let dir = dir.clone().map_err(|reason| {
        HarnessError::ControlPlane(format!(
            "the real Kubernetes control plane is not available ({reason}); build it with \
             `scripts/kube build` (scripts/test does), or point CAUSEWAY_KUBE_BIN at its bin directory"
        ))
    })?;
    let binary = |name: &str| -> Result<PathBuf, HarnessError> {
        let path = dir.join(name);
        match path.is_file() {
            true => Ok(path),
            false => Err(HarnessError::ControlPlane(format!(
                "{} is missing; run `scripts/kube build`",
                path.display()
            ))),
        }
    };
    Ok(Binaries {
        kube_apiserver: binary("kube-apiserver")?,
        kube_controller_manager: binary("kube-controller-manager")?,
        kubectl: binary("kubectl")?,
        etcd: binary("etcd")?,
    })
}

/// `kubectl causeway` as users run it: the real kubectl, finding the plugin
/// (`kubectl-causeway`, built by this workspace) on `PATH` by its own plugin discovery.
/// Nothing of the developer's kubeconfig: callers pass `--kubeconfig` to the plugin.
pub fn kubectl_causeway() -> Result<Command, HarnessError> {
    let plugin = super::find_workspace_binary("kubectl-causeway")?;
    let dir = plugin
        .parent()
        .ok_or_else(|| HarnessError::Topology(format!("{} has no parent", plugin.display())))?;
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut dirs = vec![dir.to_path_buf()];
    dirs.extend(std::env::split_paths(&path));
    let joined = std::env::join_paths(dirs)
        .map_err(|e| HarnessError::Topology(format!("PATH with {}: {e}", dir.display())))?;
    let mut cmd = Command::new(binaries()?.kubectl);
    cmd.env("PATH", joined)
        .env_remove("KUBECONFIG")
        .arg("causeway");
    Ok(cmd)
}

/// How long etcd may take to accept connections on its socket.
const ETCD_READY: Duration = Duration::from_secs(20);

/// One etcd for a whole test world, listening on a Unix socket in its data directory.
#[derive(Debug)]
pub struct Etcd {
    child: ChildGuard,
    socket: PathBuf,
}

impl Etcd {
    /// Starts etcd inside `netns` (its peer port stays on that namespace's loopback), with
    /// its data and socket under `dir`, and waits until it answers.
    pub fn start(netns: &Netns, dir: &Path) -> Result<Etcd, HarnessError> {
        let bin = binaries()?;
        let data = dir.join("etcd-data");
        let socket = dir.join("etcd.sock");
        let client_url = format!("unix://{}", socket.display());
        let mut cmd = Command::new(&bin.etcd);
        cmd.arg("--name")
            .arg("causeway-tests")
            .arg("--data-dir")
            .arg(&data)
            .arg("--listen-client-urls")
            .arg(&client_url)
            // Only informational for a single member; etcd wants host:port here.
            .arg("--advertise-client-urls")
            .arg("http://127.0.0.1:2379")
            .arg("--listen-peer-urls")
            .arg("http://127.0.0.1:2380")
            .arg("--initial-advertise-peer-urls")
            .arg("http://127.0.0.1:2380")
            .arg("--initial-cluster")
            .arg("causeway-tests=http://127.0.0.1:2380")
            // A test's data need not survive a power cut; fsync on a busy disk costs seconds.
            .arg("--unsafe-no-fsync")
            .arg("--log-level")
            .arg("warn");
        let log = dir.join("etcd.log");
        let mut child = netns
            .spawn_logged(&mut cmd, &log)
            .map_err(io_context("start etcd"))?;
        let deadline = Instant::now() + ETCD_READY;
        loop {
            if std::os::unix::net::UnixStream::connect(&socket).is_ok() {
                break;
            }
            if let Some(status) = child.try_status().map_err(io_context("wait for etcd"))? {
                return Err(HarnessError::Exited {
                    process: "etcd".into(),
                    status: status.to_string(),
                    log_tail: child.log_tail(20),
                });
            }
            if Instant::now() > deadline {
                return Err(HarnessError::ControlPlane(format!(
                    "etcd did not listen on {} within {ETCD_READY:?}; its log:\n{}",
                    socket.display(),
                    child.log_tail(20)
                )));
            }
            std::thread::sleep(super::POLL_MIN);
        }
        Ok(Etcd { child, socket })
    }

    /// The URL API servers reach it at (`--etcd-servers`).
    pub fn url(&self) -> String {
        format!("unix://{}", self.socket.display())
    }

    /// Whether etcd still runs.
    pub fn is_running(&mut self) -> bool {
        self.child.is_running()
    }
}

/// Runs `make()`'s future to completion on a thread of its own with its own runtime, so
/// harness code may use async clients from plain threads and from inside async tests alike.
pub fn block_on_thread<F, T>(make: impl FnOnce() -> F + Send) -> T
where
    F: std::future::Future<Output = T>,
    T: Send,
{
    std::thread::scope(|scope| {
        let handle = scope.spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a current-thread runtime");
            runtime.block_on(make())
        });
        match handle.join() {
            Ok(value) => value,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    })
}
