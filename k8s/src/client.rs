//! API clients that explain a refusal: a 403 that persists is logged, once a minute per
//! request kind, naming what was refused, which of the chart's roles grants it
//! ([`causeway_crds::rbac`]) and the fix, so a component on a cluster whose RBAC is not its
//! release's says why instead of failing quietly in a retry loop.
//!
//! "Persists": refused again [`PERSISTS`] after the first refusal. A kube-apiserver that
//! has just started serves requests before its RBAC caches are filled and refuses them for
//! a moment; that is no misconfiguration and is not reported.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use causeway_crds::rbac::{explain_forbidden, parse_request, Identity};
use kube::client::ClientBuilder;
use kube::{Client, Config};
use tower::{Layer, Service};

/// How often the same refusal is logged again while it goes on.
const REPEAT: Duration = Duration::from_secs(60);
/// How long a refusal must go on before it is reported.
pub const PERSISTS: Duration = Duration::from_secs(5);
/// A refusal not seen again for this long starts afresh.
const FORGET: Duration = Duration::from_secs(30);

/// When one kind of refusal was first and last seen in its current run, and last logged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal {
    first: Instant,
    last: Instant,
    logged: Option<Instant>,
}

/// Whether a refusal seen at `now` is to be logged, and what to remember of it.
pub fn on_refusal(previous: Option<Refusal>, now: Instant) -> (bool, Refusal) {
    let run = match previous {
        Some(p) if now.duration_since(p.last) < FORGET => p,
        _ => Refusal {
            first: now,
            last: now,
            logged: None,
        },
    };
    let due = now.duration_since(run.first) >= PERSISTS
        && run.logged.is_none_or(|at| now.duration_since(at) >= REPEAT);
    let next = Refusal {
        last: now,
        logged: if due { Some(now) } else { run.logged },
        ..run
    };
    (due, next)
}

/// A client for `config` acting as `identity`, whose Roles live in `role_namespace` (the
/// release namespace, or the broker namespace at the broker), for a member at the broker
/// speaking for cluster `member`; refusals are explained in the log.
pub fn client(
    config: Config,
    identity: &'static Identity,
    role_namespace: &str,
    member: Option<&str>,
) -> Result<Client, kube::Error> {
    let layer = ExplainRefusals {
        identity,
        role_namespace: Arc::from(role_namespace),
        member: member.map(Arc::from),
        logged: Arc::new(Mutex::new(HashMap::new())),
    };
    Ok(ClientBuilder::try_from(config)?.with_layer(&layer).build())
}

/// The tower layer behind [`client`].
#[derive(Clone)]
pub struct ExplainRefusals {
    identity: &'static Identity,
    role_namespace: Arc<str>,
    member: Option<Arc<str>>,
    /// Each kind of refusal (its explanation) seen so far.
    logged: Arc<Mutex<HashMap<String, Refusal>>>,
}

impl ExplainRefusals {
    fn refused(&self, method: &str, path: &str) {
        let Some(request) = parse_request(method, path) else {
            tracing::error!(
                method,
                path,
                "forbidden: the API server refused a non-resource request"
            );
            return;
        };
        let explanation = explain_forbidden(
            self.identity,
            &request,
            &self.role_namespace,
            self.member.as_deref(),
        );
        // A poisoned map only loses the rate limit; the refusal is still judged.
        let mut logged = self.logged.lock().unwrap_or_else(|e| e.into_inner());
        let (due, refusal) = on_refusal(logged.get(&explanation).copied(), Instant::now());
        logged.insert(explanation.clone(), refusal);
        if due {
            tracing::error!(
                verb = %request.verb,
                resource = %request.resource,
                group = %request.api_group,
                namespace = request.namespace.as_deref().unwrap_or(""),
                "{explanation}"
            );
        }
    }
}

impl<S> Layer<S> for ExplainRefusals {
    type Service = ExplainRefusalsService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ExplainRefusalsService {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service [`ExplainRefusals`] wraps around kube's client stack.
#[derive(Clone)]
pub struct ExplainRefusalsService<S> {
    inner: S,
    layer: ExplainRefusals,
}

impl<S, ReqBody, ResBody> Service<http::Request<ReqBody>> for ExplainRefusalsService<S>
where
    S: Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        let method = request.method().to_string();
        let path = request
            .uri()
            .path_and_query()
            .map_or_else(|| request.uri().path().to_string(), ToString::to_string);
        let layer = self.layer.clone();
        let response = self.inner.call(request);
        Box::pin(async move {
            let response = response.await?;
            if response.status() == http::StatusCode::FORBIDDEN {
                layer.refused(&method, &path);
            }
            Ok(response)
        })
    }
}

/// Why no client configuration could be made.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The kubeconfig file could not be read or parsed.
    #[error("cannot read kubeconfig {path}: {source}")]
    Read {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        source: kube::config::KubeconfigError,
    },
    /// The kubeconfig was read but names nothing usable (no context, a bad server URL, ...).
    #[error("kubeconfig {path} is not usable: {source}")]
    Unusable {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        source: kube::config::KubeconfigError,
    },
    /// No kubeconfig was given and none could be inferred.
    #[error("no kubeconfig: not in a pod and no usable ~/.kube/config; pass --kubeconfig ({0})")]
    Infer(#[source] kube::config::InferConfigError),
}

/// The client configuration of kubeconfig `path` (its current context), or, without one,
/// the pod's own (in-cluster) or the user's default kubeconfig.
pub async fn load(path: Option<&std::path::Path>) -> Result<Config, ConfigError> {
    use kube::config::{KubeConfigOptions, Kubeconfig};
    match path {
        Some(path) => {
            let kubeconfig = Kubeconfig::read_from(path).map_err(|source| ConfigError::Read {
                path: path.to_path_buf(),
                source,
            })?;
            Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
                .await
                .map_err(|source| ConfigError::Unusable {
                    path: path.to_path_buf(),
                    source,
                })
        }
        None => Config::infer().await.map_err(ConfigError::Infer),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_refusal_that_persists_is_logged_and_then_once_a_minute() {
        let t0 = Instant::now();
        let at = |secs: u64| t0 + Duration::from_secs(secs);
        // (seconds since t0 of each refusal, logged?)
        let cases: &[(&str, &[(u64, bool)])] = &[
            (
                "a moment after a restart",
                &[(0, false), (1, false), (2, false)],
            ),
            (
                "stale RBAC",
                &[
                    (0, false),
                    (3, false),
                    (5, true),
                    (6, false),
                    (30, false),
                    (50, false),
                    (64, false),
                    (65, true),
                ],
            ),
            (
                "every 20 s",
                &[(0, false), (20, true), (40, false), (60, false), (80, true)],
            ),
            // 40 s without a refusal: the next one starts a new run.
            (
                "two episodes",
                &[(0, false), (5, true), (45, false), (50, true)],
            ),
        ];
        for (name, seen) in cases {
            let mut state = None;
            for (secs, want) in *seen {
                let (logged, next) = on_refusal(state, at(*secs));
                assert_eq!(logged, *want, "{name}: at {secs} s");
                state = Some(next);
            }
        }
    }
}
