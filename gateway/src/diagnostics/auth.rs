//! Who may call the agent's `/verify` and `/benchmark` in Kubernetes mode.
//!
//! Both act from the gateway node's own network (`/verify?dns=` resolves and connects,
//! `/benchmark` loads the WAN for up to a minute), and the metrics port they share is
//! reachable by every pod, so reaching it proves nothing. A caller shows a token of the
//! ServiceAccount [`AGENT_CLIENT_ACCOUNT`] minted for [`AGENT_TOKEN_AUDIENCE`]: whoever may
//! create such tokens (the chart's Role `causeway-operator`) may call, and the API server
//! says which tokens are real (TokenReview). `kubectl causeway` mints one per run, so this
//! works whatever credentials its user has (client certificates included), and the token
//! is good for nothing but this agent.
//!
//! `/metrics` and `/healthz` stay open: the kubelet's probes and annotation-driven
//! Prometheus scrapes carry no credentials.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use blake2::{Blake2s256, Digest};
use causeway_crds::names::{AGENT_CLIENT_ACCOUNT, AGENT_TOKEN_AUDIENCE, AGENT_TOKEN_HEADER};
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec, TokenReviewStatus};
use kube::api::{Api, PostParams};
use kube::Client;
use parking_lot::Mutex;

use causeway_datapath::limiter::{SourceLimiter, TokenBucket};

/// How long an accepted token is taken without asking the API server again. Tokens
/// `kubectl causeway` mints live 10 minutes; this bounds how long a deleted
/// ServiceAccount's tokens still work here.
pub const ACCEPTED_FOR: Duration = Duration::from_secs(60);
/// TokenReviews a second the agent asks for one source's tokens it has not accepted yet
/// (IPv6 sources by /64): a pod flooding made-up tokens is held to this, and requests
/// through the pod proxy (the API server's source) keep theirs.
pub const REVIEWS_PER_SECOND: f64 = 5.0;
/// TokenReviews one source may have asked at once before [`REVIEWS_PER_SECOND`] applies.
pub const REVIEW_BURST: f64 = 10.0;
/// TokenReviews a second the agent asks at most, whatever the sources: what a flood from
/// many addresses costs the API server.
pub const ALL_REVIEWS_PER_SECOND: f64 = 50.0;
/// Accepted tokens remembered at most (each run of the plugin mints one).
const MAX_ACCEPTED: usize = 256;

/// Who the agent's guarded endpoints answer.
pub enum Access {
    /// Anyone who reaches the port (standalone mode: the operator chose where it listens).
    Open,
    /// Callers holding a token the API server vouches for (Kubernetes mode).
    Reviewed(Box<Reviewer>),
}

/// Asks the API server about callers' tokens and remembers the accepted ones.
pub struct Reviewer {
    client: Client,
    namespace: String,
    cache: Mutex<Cache>,
}

struct Cache {
    accepted: HashMap<[u8; 32], Instant>,
    per_source: SourceLimiter,
    all: TokenBucket,
}

/// What the agent makes of a caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// A token the API server vouched for, of the right account and audience.
    Allowed,
    /// No token.
    Missing,
    /// A token that is not one (why, for the log; the caller is told only that it is not).
    Refused(String),
    /// Too many unknown tokens lately; try again in a second.
    Busy,
    /// The API server could not be asked.
    Unavailable(String),
}

impl Reviewer {
    /// A reviewer for the agent of Causeway's `namespace`.
    pub fn new(client: Client, namespace: &str) -> Reviewer {
        Reviewer {
            client,
            namespace: namespace.to_owned(),
            cache: Mutex::new(Cache {
                accepted: HashMap::new(),
                per_source: SourceLimiter::new(REVIEWS_PER_SECOND, REVIEW_BURST),
                all: TokenBucket::full(ALL_REVIEWS_PER_SECOND, Instant::now()),
            }),
        }
    }

    /// The user name the API server gives [`AGENT_CLIENT_ACCOUNT`]'s tokens.
    fn expected_user(&self) -> String {
        format!(
            "system:serviceaccount:{}:{AGENT_CLIENT_ACCOUNT}",
            self.namespace
        )
    }

    /// Judges the token a caller at `source` shows, asking the API server unless it was
    /// accepted lately.
    pub async fn check(&self, source: IpAddr, token: Option<&str>) -> Verdict {
        let Some(token) = token else {
            return Verdict::Missing;
        };
        let digest: [u8; 32] = Blake2s256::digest(token.as_bytes()).into();
        let now = Instant::now();
        {
            let mut cache = self.cache.lock();
            if cache
                .accepted
                .get(&digest)
                .is_some_and(|until| *until > now)
            {
                return Verdict::Allowed;
            }
            let per_source = cache.per_source.allow(source, now);
            if !per_source
                || !cache
                    .all
                    .take(now, ALL_REVIEWS_PER_SECOND, ALL_REVIEWS_PER_SECOND)
            {
                return Verdict::Busy;
            }
        }
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: Some(token.to_owned()),
                audiences: Some(vec![AGENT_TOKEN_AUDIENCE.to_owned()]),
            },
            ..TokenReview::default()
        };
        let answer = match Api::<TokenReview>::all(self.client.clone())
            .create(&PostParams::default(), &review)
            .await
        {
            Ok(answer) => answer,
            Err(e) => return Verdict::Unavailable(e.to_string()),
        };
        match judge(answer.status.as_ref(), &self.expected_user()) {
            Ok(()) => {
                let mut cache = self.cache.lock();
                let now = Instant::now();
                cache.accepted.retain(|_, until| *until > now);
                if cache.accepted.len() >= MAX_ACCEPTED {
                    cache.accepted.clear();
                }
                cache.accepted.insert(digest, now + ACCEPTED_FOR);
                Verdict::Allowed
            }
            Err(reason) => Verdict::Refused(reason),
        }
    }
}

/// The caller's token: [`AGENT_TOKEN_HEADER`] (through the pod proxy), else a bearer
/// `Authorization` (straight to the port).
pub fn token_from(headers: &HeaderMap) -> Option<&str> {
    let own = headers
        .get(AGENT_TOKEN_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|t| !t.is_empty());
    let bearer = || {
        headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty())
    };
    own.or_else(bearer)
}

/// Whether a TokenReview's answer vouches for a token of `expected_user` for the agent's
/// audience (pure).
pub fn judge(status: Option<&TokenReviewStatus>, expected_user: &str) -> Result<(), String> {
    let Some(status) = status else {
        return Err("the API server's TokenReview had no status".into());
    };
    if status.authenticated != Some(true) {
        return Err(format!(
            "the API server did not authenticate it: {}",
            status.error.as_deref().unwrap_or("no reason given")
        ));
    }
    let user = status
        .user
        .as_ref()
        .and_then(|u| u.username.as_deref())
        .unwrap_or("");
    if user != expected_user {
        return Err(format!("it is {user:?}'s, not {expected_user:?}'s"));
    }
    // An API server that ignores the asked audiences answers with its own.
    let audiences = status.audiences.as_deref().unwrap_or_default();
    if !audiences.iter().any(|a| a == AGENT_TOKEN_AUDIENCE) {
        return Err(format!(
            "it is for {audiences:?}, not {AGENT_TOKEN_AUDIENCE:?}"
        ));
    }
    Ok(())
}

/// Lets a request through to `/verify` or `/benchmark` only if [`Access`] allows it.
pub async fn guard(
    State(access): State<Arc<Access>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request,
    next: Next,
) -> Response {
    let reviewer = match access.as_ref() {
        Access::Open => return next.run(request).await,
        Access::Reviewed(reviewer) => reviewer,
    };
    let verdict = reviewer
        .check(peer.ip(), token_from(request.headers()))
        .await;
    let refuse = |status: StatusCode, why: &str| {
        let namespace = &reviewer.namespace;
        (
            status,
            format!(
                "{why}; this agent answers only tokens of ServiceAccount {namespace}/{AGENT_CLIENT_ACCOUNT} for audience {AGENT_TOKEN_AUDIENCE} (header {AGENT_TOKEN_HEADER}). `kubectl causeway verify` and `benchmark` mint one if you may create serviceaccounts/token for it: bind Role causeway-operator (`kubectl -n {namespace} create rolebinding <name> --role=causeway-operator --user=<you>`)\n"
            ),
        )
            .into_response()
    };
    match verdict {
        Verdict::Allowed => next.run(request).await,
        Verdict::Missing => refuse(StatusCode::UNAUTHORIZED, "no token"),
        Verdict::Refused(reason) => {
            tracing::debug!(path = %request.uri().path(), %reason, "agent request refused");
            refuse(StatusCode::UNAUTHORIZED, "token refused")
        }
        Verdict::Busy => (
            StatusCode::TOO_MANY_REQUESTS,
            "too many unknown tokens lately; try again in a second\n",
        )
            .into_response(),
        Verdict::Unavailable(reason) => {
            tracing::warn!(%reason, "cannot ask the API server about an agent caller's token");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                format!("cannot check the token with the API server: {reason}; the gateway needs create on tokenreviews.authentication.k8s.io (chart ClusterRole causeway-gateway-<namespace>)\n"),
            )
                .into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;
    use k8s_openapi::api::authentication::v1::UserInfo;

    const USER: &str = "system:serviceaccount:causeway-system:causeway-agent-client";

    fn status(authenticated: bool, user: &str, audiences: &[&str]) -> TokenReviewStatus {
        TokenReviewStatus {
            authenticated: Some(authenticated),
            user: Some(UserInfo {
                username: Some(user.into()),
                ..UserInfo::default()
            }),
            audiences: Some(audiences.iter().map(|a| a.to_string()).collect()),
            error: None,
        }
    }

    #[test]
    fn only_the_client_accounts_tokens_for_the_agent_audience_pass() {
        assert_eq!(
            judge(Some(&status(true, USER, &[AGENT_TOKEN_AUDIENCE])), USER),
            Ok(())
        );
        let refused = [
            (None, "no status"),
            (
                Some(status(false, USER, &[AGENT_TOKEN_AUDIENCE])),
                "not authenticate",
            ),
            (
                Some(status(
                    true,
                    "system:serviceaccount:causeway-system:causeway-route-agent",
                    &[AGENT_TOKEN_AUDIENCE],
                )),
                "causeway-route-agent",
            ),
            (
                Some(status(true, USER, &["https://kubernetes.default.svc"])),
                "kubernetes.default.svc",
            ),
            (Some(status(true, USER, &[])), "not \"causeway.dev/agent\""),
        ];
        for (status, says) in refused {
            let reason = judge(status.as_ref(), USER).expect_err(says);
            assert!(reason.contains(says), "{reason:?} should say {says:?}");
        }
    }

    #[test]
    fn the_token_comes_from_our_header_else_a_bearer_authorization() {
        let mut headers = HeaderMap::new();
        assert_eq!(token_from(&headers), None);
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic abc"));
        assert_eq!(token_from(&headers), None);
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer direct"),
        );
        assert_eq!(token_from(&headers), Some("direct"));
        headers.insert(AGENT_TOKEN_HEADER, HeaderValue::from_static(" proxied "));
        assert_eq!(token_from(&headers), Some("proxied"));
        headers.insert(AGENT_TOKEN_HEADER, HeaderValue::from_static(""));
        assert_eq!(token_from(&headers), Some("direct"));
    }
}
