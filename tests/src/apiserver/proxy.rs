//! The pod proxy subresource, `/api/v1/namespaces/{ns}/pods/{name}[:{port}]/proxy/{path}`,
//! what `kubectl get --raw` and `kubectl port-forward`-less tools use to reach a pod's HTTP
//! server: the Pod is looked up, `status.podIP:port` is dialled (from the network
//! namespace given in [`super::ApiServerOptions::pod_netns`], where test pods live), the
//! request is forwarded and the response streamed back as it comes.

use std::convert::Infallible;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::sync::mpsc;

use super::error::ApiError;
use super::http::{Body, ServerState};
use super::resource::Gvr;

/// How long dialling a pod may take, as the real server's dial timeout bounds it.
const DIAL_TIMEOUT: Duration = Duration::from_secs(5);

/// A pod proxy request: the pod, the port (`None`: the pod's first port) and the path.
#[derive(Debug, PartialEq, Eq)]
pub struct ProxyTarget {
    /// The pod's namespace.
    pub namespace: String,
    /// The pod's name.
    pub name: String,
    /// The port, as a number or a container port's name.
    pub port: Option<String>,
    /// The path on the pod, starting with `/`.
    pub path: String,
}

/// Recognises a pod proxy path (pure).
pub fn parse(path: &str) -> Option<ProxyTarget> {
    let rest = path.strip_prefix("/api/v1/namespaces/")?;
    let (namespace, rest) = rest.split_once('/')?;
    let rest = rest.strip_prefix("pods/")?;
    let (pod, rest) = rest.split_once('/')?;
    let tail = rest.strip_prefix("proxy")?;
    if !(tail.is_empty() || tail.starts_with('/')) {
        return None;
    }
    let (name, port) = match pod.split_once(':') {
        Some((name, port)) => (name, Some(port.to_owned())),
        None => (pod, None),
    };
    Some(ProxyTarget {
        namespace: namespace.to_owned(),
        name: name.to_owned(),
        port,
        path: if tail.is_empty() {
            "/".into()
        } else {
            tail.to_owned()
        },
    })
}

/// The pod's address and the port to dial, from the stored Pod (pure).
fn address(pod: &Value, target: &ProxyTarget) -> Result<SocketAddr, ApiError> {
    let ip: IpAddr = pod["status"]["podIP"]
        .as_str()
        .and_then(|ip| ip.parse().ok())
        .ok_or_else(|| {
            ApiError::plain(
                503,
                "ServiceUnavailable",
                format!("pod {} has no IP address yet", target.name),
            )
        })?;
    let ports: Vec<&Value> = pod["spec"]["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|c| c["ports"].as_array().into_iter().flatten())
        .collect();
    let port = match &target.port {
        Some(p) => match p.parse::<u16>() {
            Ok(n) => Some(n),
            Err(_) => ports
                .iter()
                .find(|c| c["name"].as_str() == Some(p))
                .and_then(|c| c["containerPort"].as_u64())
                .and_then(|n| u16::try_from(n).ok()),
        },
        None => ports
            .first()
            .and_then(|c| c["containerPort"].as_u64())
            .and_then(|n| u16::try_from(n).ok()),
    }
    .ok_or_else(|| {
        ApiError::bad_request(format!(
            "pod {} has no port {}",
            target.name,
            target.port.as_deref().unwrap_or("(none declared)")
        ))
    })?;
    Ok(SocketAddr::new(ip, port))
}

/// Dials `addr` from inside `netns` (a thread of its own enters it; the socket stays there).
async fn dial(netns: Option<PathBuf>, addr: SocketAddr) -> io::Result<tokio::net::TcpStream> {
    let stream = tokio::task::spawn_blocking(move || dial_blocking(netns.as_deref(), addr))
        .await
        .map_err(|_| io::Error::other("dialling thread panicked"))??;
    stream.set_nonblocking(true)?;
    tokio::net::TcpStream::from_std(stream)
}

fn dial_blocking(netns: Option<&Path>, addr: SocketAddr) -> io::Result<std::net::TcpStream> {
    let Some(netns) = netns else {
        return std::net::TcpStream::connect_timeout(&addr, DIAL_TIMEOUT);
    };
    let file = std::fs::File::open(netns)?;
    std::thread::scope(|scope| {
        std::thread::Builder::new()
            .name("apiserver-pod-dial".into())
            .spawn_scoped(scope, move || {
                // Only this short-lived thread changes namespace.
                nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)?;
                std::net::TcpStream::connect_timeout(&addr, DIAL_TIMEOUT)
            })?
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("dialling thread panicked")))
    })
}

/// Forwards `req` to the pod and streams its answer back.
pub async fn forward(
    state: &ServerState,
    target: ProxyTarget,
    req: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let pod = state.store.read(|s| {
        s.get(
            &Gvr::new("", "v1", "pods"),
            Some(&target.namespace),
            &target.name,
        )
    })?;
    let addr = address(&pod, &target)?;
    let unreachable = |e: &dyn std::fmt::Display| {
        ApiError::plain(
            503,
            "ServiceUnavailable",
            format!("error trying to reach service: dial tcp {addr}: {e}"),
        )
    };
    let stream = dial(state.pod_netns.clone(), addr)
        .await
        .map_err(|e| unreachable(&e))?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| unreachable(&e))?;
    tokio::spawn(connection);

    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map_err(|e| ApiError::bad_request(format!("cannot read request body: {e}")))?
        .to_bytes();
    let path_and_query = match parts.uri.query() {
        Some(q) => format!("{}?{q}", target.path),
        None => target.path.clone(),
    };
    let mut forwarded = Request::builder()
        .method(parts.method)
        .uri(path_and_query)
        .header(hyper::header::HOST, addr.to_string());
    for (name, value) in &parts.headers {
        if name != hyper::header::HOST && name != hyper::header::AUTHORIZATION {
            forwarded = forwarded.header(name, value);
        }
    }
    let forwarded = forwarded
        .body(Full::new(body))
        .map_err(|e| ApiError::bad_request(format!("cannot forward the request: {e}")))?;
    let response = sender
        .send_request(forwarded)
        .await
        .map_err(|e| unreachable(&e))?;
    let (parts, mut incoming) = response.into_parts();
    // Frames go out as they come, so a streaming answer (NDJSON progress) streams.
    let (tx, rx) = mpsc::channel::<Bytes>(16);
    tokio::spawn(async move {
        while let Some(Ok(frame)) = incoming.frame().await {
            if let Ok(data) = frame.into_data() {
                if tx.send(data).await.is_err() {
                    return;
                }
            }
        }
    });
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|data| (Ok::<_, Infallible>(Frame::data(data)), rx))
    });
    let mut out = Response::new(BodyExt::boxed_unsync(StreamBody::new(stream)));
    *out.status_mut() = parts.status;
    for name in [hyper::header::CONTENT_TYPE, hyper::header::CACHE_CONTROL] {
        if let Some(value) = parts.headers.get(&name) {
            out.headers_mut().insert(name, value.clone());
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn proxy_paths_name_pod_port_and_path() {
        assert_eq!(
            parse("/api/v1/namespaces/causeway/pods/gw-x:9469/proxy/verify"),
            Some(ProxyTarget {
                namespace: "causeway".into(),
                name: "gw-x".into(),
                port: Some("9469".into()),
                path: "/verify".into()
            })
        );
        let t = parse("/api/v1/namespaces/ns/pods/p/proxy").unwrap();
        assert_eq!((t.port, t.path.as_str()), (None, "/"));
        assert_eq!(parse("/api/v1/namespaces/ns/pods/p"), None);
        assert_eq!(parse("/api/v1/namespaces/ns/pods/p/proxyx"), None);
        assert_eq!(parse("/api/v1/namespaces/ns/services/p/proxy/x"), None);
    }

    #[test]
    fn ports_resolve_by_number_name_or_first() {
        let pod = json!({
            "spec": {"containers": [{"ports": [
                {"name": "wireguard", "containerPort": 51820},
                {"name": "metrics", "containerPort": 9469}]}]},
            "status": {"podIP": "198.19.1.1"}
        });
        let target = |port: Option<&str>| ProxyTarget {
            namespace: "ns".into(),
            name: "p".into(),
            port: port.map(str::to_owned),
            path: "/".into(),
        };
        let addr = |port| address(&pod, &target(port)).map(|a| a.to_string());
        assert_eq!(addr(Some("metrics")).unwrap(), "198.19.1.1:9469");
        assert_eq!(addr(Some("8080")).unwrap(), "198.19.1.1:8080");
        assert_eq!(addr(None).unwrap(), "198.19.1.1:51820");
        assert_eq!(addr(Some("nope")).unwrap_err().code, 400);
        let no_ip = json!({"spec": {}});
        assert_eq!(address(&no_ip, &target(None)).unwrap_err().code, 503);
    }
}
