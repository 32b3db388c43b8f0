//! Builds throw-away multi-site worlds in network namespaces and tears them
//! down even when a test fails.
//!
//! Everything here runs as root and touches only namespaces it created: the
//! root network namespace is never modified.

pub mod confine;
pub mod control_plane;
pub mod kube;
pub mod leak;
pub mod mesh;
pub mod netns;
pub mod postgres;
pub mod process;
pub mod spoof;
pub mod topology;
pub mod traffic;
pub mod wait;
pub mod wan;

use std::path::{Path, PathBuf};
use std::time::Duration;

pub use netns::{veth, Netns, Profile};
pub use process::ChildGuard;
pub use topology::{
    fetch_metrics, find_workspace_binary, http_get, workspace_binary, CandidateSpec, Clusterset,
    Site, SiteSpec,
};
pub use wait::{wait_until, wait_until_ok, WaitError};

/// Everything that can go wrong while building or probing a test world.
#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    /// A command exited unsuccessfully; `stderr` usually says why.
    #[error("`{command}` failed ({status}): {stderr}")]
    Command {
        /// The command line.
        command: String,
        /// How it exited.
        status: String,
        /// What it printed on stderr.
        stderr: String,
    },
    /// An I/O operation failed; `context` names what was being done.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// A condition did not become true in time.
    #[error(transparent)]
    Wait(#[from] WaitError),
    /// A workspace binary has not been built for this profile.
    #[error("binary `{name}` not found in {dir}; build it first with `cargo build --bins`")]
    MissingBinary {
        /// The binary's name.
        name: String,
        /// Where it was looked for.
        dir: PathBuf,
    },
    /// The requested world cannot be built as asked.
    #[error("invalid topology: {0}")]
    Topology(String),
    /// A process under test exited while it was expected to keep running.
    #[error("{process} exited ({status}); last lines of its log:\n{log_tail}")]
    Exited {
        /// Which process.
        process: String,
        /// How it exited.
        status: String,
        /// The end of its log.
        log_tail: String,
    },
    /// The real Kubernetes control plane could not be built, started or used.
    #[error("Kubernetes control plane: {0}")]
    ControlPlane(String),
    /// An HTTP exchange with a process under test went wrong.
    #[error("HTTP GET {url}: {reason}")]
    Http {
        /// What was asked, and where from.
        url: String,
        /// What went wrong.
        reason: String,
    },
}

impl From<std::io::Error> for HarnessError {
    fn from(source: std::io::Error) -> Self {
        // An io::Error that merely wraps one of ours is unwrapped so the
        // message is not prefixed twice.
        match source.downcast::<HarnessError>() {
            Ok(inner) => inner,
            Err(source) => HarnessError::Io {
                context: "I/O".into(),
                source,
            },
        }
    }
}

/// Adds a description of what was being done to an I/O error.
pub(crate) fn io_context(
    context: impl Into<String>,
) -> impl FnOnce(std::io::Error) -> HarnessError {
    let context = context.into();
    move |source| HarnessError::Io { context, source }
}

/// A temporary directory that is kept, and announced on stderr, when it is
/// dropped during a panic so the logs of a failed test can be read afterwards.
#[derive(Debug)]
pub struct ScratchDir {
    dir: tempfile::TempDir,
}

impl ScratchDir {
    /// Creates a fresh directory under the system temp dir whose name starts with `prefix`.
    pub fn new(prefix: &str) -> std::io::Result<ScratchDir> {
        let dir = tempfile::Builder::new().prefix(prefix).tempdir()?;
        Ok(ScratchDir { dir })
    }

    /// The directory's path.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        if std::thread::panicking() || std::env::var_os("CAUSEWAY_KEEP_LOGS").is_some() {
            self.dir.disable_cleanup(true);
            eprintln!("causeway-tests: kept {}", self.dir.path().display());
        }
    }
}

/// A process's log as written; panics naming the file if it cannot be read, so an
/// unread log never passes a check for what is absent from it.
pub fn read_log(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("read log {}: {e}", path.display()))
}

/// How often a poll loop re-checks at first and at most.
pub(crate) const POLL_MIN: Duration = Duration::from_millis(10);
pub(crate) const POLL_MAX: Duration = Duration::from_millis(100);
