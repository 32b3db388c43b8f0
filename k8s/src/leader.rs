//! Leader election through a `coordination.k8s.io` Lease: of a cluster's controllers,
//! only the holder writes to the broker and mirrors, so two replicas never fight.
//!
//! The Lease itself is managed by `kube-lease-manager` (server-side apply with conflict
//! detection); this module turns it into "wait until I lead" and "wait until I don't".

use kube::Client;
use kube_lease_manager::{LeaseManagerBuilder, LeaseManagerError};
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Why the election could not be joined.
#[derive(Debug, thiserror::Error)]
pub enum LeaderError {
    /// The Lease could not be read or created.
    #[error("cannot use Lease {namespace}/{name}: {source}; the controller needs get, create and patch on coordination.k8s.io leases in namespace {namespace}")]
    Lease {
        /// Namespace of the Lease.
        namespace: String,
        /// Name of the Lease.
        name: String,
        /// What the Lease manager said.
        #[source]
        source: LeaseManagerError,
    },
}

/// How a contender campaigns.
#[derive(Debug, Clone)]
pub struct Campaign {
    /// Namespace of the Lease.
    pub namespace: String,
    /// Name of the Lease (one per cluster and role).
    pub name: String,
    /// This contender's identity, unique among them (e.g. the pod name).
    pub identity: String,
    /// How long a lock holds without renewal.
    pub duration: Duration,
    /// How long before expiry the holder renews.
    pub grace: Duration,
}

/// This process's standing in the election; the lock is released when it is dropped.
pub struct Leadership {
    state: watch::Receiver<bool>,
    task: JoinHandle<Result<kube_lease_manager::LeaseManager, LeaseManagerError>>,
}

/// Joins the election; the returned handle follows this contender's standing.
pub async fn campaign(client: Client, how: &Campaign) -> Result<Leadership, LeaderError> {
    let manager = LeaseManagerBuilder::new(client, how.name.clone())
        .with_namespace(how.namespace.clone())
        .with_identity(how.identity.clone())
        .with_duration(how.duration.as_secs().max(2))
        .with_grace(how.grace.as_secs().max(1))
        .build()
        .await
        .map_err(|source| LeaderError::Lease {
            namespace: how.namespace.clone(),
            name: how.name.clone(),
            source,
        })?;
    let (state, task) = manager.watch().await;
    Ok(Leadership { state, task })
}

impl Leadership {
    /// Whether this process holds the lock now.
    pub fn is_leader(&self) -> bool {
        *self.state.borrow()
    }

    /// Resolves once this process holds the lock.
    pub async fn until_leader(&mut self) {
        // An error means the manager task is gone; then this never leads again.
        if self.state.wait_for(|leading| *leading).await.is_err() {
            std::future::pending::<()>().await;
        }
    }

    /// Resolves once this process no longer holds the lock.
    pub async fn until_lost(&mut self) {
        let _ = self.state.wait_for(|leading| !*leading).await;
    }

    /// Gives the lock up now, so another contender takes over without waiting for expiry.
    pub async fn resign(self) {
        let Leadership { state, task } = self;
        // Closing the channel makes the manager release the Lease and stop.
        drop(state);
        match task.await {
            Ok(Ok(_)) => tracing::info!("leadership released"),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "releasing leadership failed; it expires on its own")
            }
            Err(e) => tracing::warn!(error = %e, "lease task ended abnormally"),
        }
    }
}
