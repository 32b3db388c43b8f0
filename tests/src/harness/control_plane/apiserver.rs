//! One cluster's real control plane: kube-apiserver and kube-controller-manager inside a
//! network namespace, storing under their own prefix of a shared [`Etcd`].
//!
//! The API server serves `https://<advertise>:6443` inside its namespace and
//! [`KubeApiServer::url`] in the test's own (through a [`Forwarder`]). Every request but
//! the control plane's own is written to an audit log, which is how tests count writes
//! ([`KubeApiServer::writes_of`]) and check RBAC ([`KubeApiServer::requests`]).

use std::ffi::OsString;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use base64::Engine as _;
use ipnet::IpNet;

use super::audit::{AuditLog, Mark, Request};
use super::forward::Forwarder;
use super::pki::{CertPair, Pki};
use super::{binaries, block_on_thread, Etcd};
use crate::harness::netns::{spawn_logged_in, Netns};
use crate::harness::process::ChildGuard;
use crate::harness::{io_context, HarnessError};

/// The API server's port inside its namespace.
pub const API_PORT: u16 = 6443;
/// The user (client certificate, group `system:masters`) the test harness acts as.
pub const ADMIN_USER: &str = "causeway-tests-admin";
/// How long an API server may take to say it is ready (a cold start on two busy cores
/// takes 5 to 15 s).
pub const START_TIMEOUT: Duration = Duration::from_secs(90);
/// How long a stop waits after SIGTERM before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(10);
/// After a start, kube-apiserver serves before its RBAC caches are filled and refuses
/// requests it would allow; [`KubeApiServer::new_refusals`] overlooks this long after one.
pub const STARTUP_REFUSALS: Duration = Duration::from_secs(15);
/// The controllers kube-controller-manager runs: what a cluster without kubelets, cloud or
/// workloads controllers needs for namespaces, ownership, ServiceAccounts and their token
/// Secrets, and EndpointSlices built from Services and Pods.
const CONTROLLERS: &[&str] = &[
    "namespace-controller",
    "garbage-collector-controller",
    "serviceaccount-controller",
    "serviceaccount-token-controller",
    "endpointslice-controller",
    "endpointslice-mirroring-controller",
    "root-ca-certificate-publisher-controller",
];
/// The issuer of ServiceAccount tokens, as kubeadm sets it.
const SA_ISSUER: &str = "https://kubernetes.default.svc.cluster.local";

/// How a client proves who it is.
#[derive(Clone)]
pub enum Credentials {
    /// A client certificate (people, the harness, the controller manager).
    Cert(CertPair),
    /// A bearer token (ServiceAccounts).
    Token(String),
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credentials::Cert(_) => f.write_str("Credentials::Cert"),
            Credentials::Token(_) => f.write_str("Credentials::Token"),
        }
    }
}

/// What an API server is started with.
#[derive(Debug, Clone)]
pub struct ApiServerSpec {
    /// The cluster's name: its etcd prefix, its CA's name, its log files.
    pub name: String,
    /// An address of its namespace that the cluster's nodes reach it at (the `kubernetes`
    /// Service's endpoint).
    pub advertise: IpAddr,
    /// `--service-cluster-ip-range`.
    pub service_cidrs: Vec<IpNet>,
    /// Where its PKI, logs and audit log go.
    pub dir: PathBuf,
}

/// Write requests the audit log recorded, for counts and messages.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Writes(pub Vec<Request>);

impl Writes {
    /// How many.
    pub fn total(&self) -> u64 {
        self.0.len() as u64
    }
}

impl fmt::Display for Writes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for w in &self.0 {
            writeln!(f, "  {w}")?;
        }
        Ok(())
    }
}

/// A running (or stopped) kube-apiserver with its kube-controller-manager; see the module docs.
pub struct KubeApiServer {
    spec: ApiServerSpec,
    netns: String,
    pki: Pki,
    admin: CertPair,
    apiserver_args: Vec<OsString>,
    apiserver: Mutex<Option<ChildGuard>>,
    controller_manager: Mutex<Option<ChildGuard>>,
    forward: Forwarder,
    audit: AuditLog,
    mark: Mutex<Mark>,
    /// When kube-apiserver was started, each time.
    started: Mutex<Vec<k8s_openapi::jiff::Timestamp>>,
    /// How far [`KubeApiServer::new_refusals`] has read.
    refusals_read: Mutex<Mark>,
}

impl fmt::Debug for KubeApiServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KubeApiServer")
            .field("name", &self.spec.name)
            .field("url", &self.url())
            .field("netns", &self.netns)
            .finish_non_exhaustive()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding it leaves plain data behind; go on with it.
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

impl KubeApiServer {
    /// Starts kube-apiserver in `netns` on [`API_PORT`], waits until it is ready, then starts
    /// kube-controller-manager beside it and waits until it works (the `default`
    /// ServiceAccount appears).
    pub fn start(
        spec: ApiServerSpec,
        netns: &Netns,
        etcd: &Etcd,
    ) -> Result<KubeApiServer, HarnessError> {
        let bin = binaries()?;
        std::fs::create_dir_all(&spec.dir)
            .map_err(io_context(format!("create {}", spec.dir.display())))?;
        let pki = Pki::create(
            &spec.dir.join("pki"),
            &spec.name,
            &[IpAddr::V4(Ipv4Addr::LOCALHOST), spec.advertise],
        )?;
        let admin = pki.client(ADMIN_USER, Some("system:masters"))?;
        let controller_manager = pki.client("system:kube-controller-manager", None)?;
        let audit_policy = spec.dir.join("audit-policy.yaml");
        std::fs::write(&audit_policy, super::audit::POLICY)
            .map_err(io_context(format!("write {}", audit_policy.display())))?;
        let audit_log = spec.dir.join("audit.log");
        let cidrs: Vec<String> = spec.service_cidrs.iter().map(ToString::to_string).collect();

        let file = |name: &str| pki.path(name).into_os_string();
        let mut args: Vec<OsString> = Vec::new();
        let mut arg = |flag: &str, value: OsString| {
            let mut a = OsString::from(format!("--{flag}="));
            a.push(value);
            args.push(a);
        };
        arg("etcd-servers", etcd.url().into());
        arg(
            "etcd-prefix",
            format!("/causeway-tests/{}", spec.name).into(),
        );
        arg("bind-address", "0.0.0.0".into());
        arg("secure-port", API_PORT.to_string().into());
        arg("advertise-address", spec.advertise.to_string().into());
        arg("tls-cert-file", file("apiserver.crt"));
        arg("tls-private-key-file", file("apiserver.key"));
        arg("client-ca-file", file("ca.crt"));
        arg("service-account-issuer", SA_ISSUER.into());
        arg("service-account-key-file", file("sa.pub"));
        arg("service-account-signing-key-file", file("sa.key"));
        arg("service-cluster-ip-range", cidrs.join(",").into());
        arg("authorization-mode", "Node,RBAC".into());
        arg("audit-policy-file", audit_policy.into_os_string());
        arg("audit-log-path", audit_log.clone().into_os_string());
        arg("profiling", "false".into());

        let forward = Forwarder::start(
            None,
            SocketAddr::new(Ipv4Addr::LOCALHOST.into(), 0),
            Some(netns),
            SocketAddr::new(Ipv4Addr::LOCALHOST.into(), API_PORT),
        )
        .map_err(io_context(format!("forward to {}'s API server", spec.name)))?;

        let server = KubeApiServer {
            netns: netns.name().to_string(),
            pki,
            admin,
            apiserver_args: args,
            apiserver: Mutex::new(None),
            controller_manager: Mutex::new(None),
            forward,
            audit: AuditLog::new(&audit_log),
            mark: Mutex::new(Mark::default()),
            started: Mutex::new(Vec::new()),
            refusals_read: Mutex::new(Mark::default()),
            spec,
        };
        server.start_apiserver(&bin.kube_apiserver)?;

        // kube-controller-manager reaches the API server on loopback of their namespace.
        let kcm_kubeconfig = server.spec.dir.join("controller-manager.kubeconfig");
        server.write_kubeconfig(
            &kcm_kubeconfig,
            &server.url_in_netns(),
            &Credentials::Cert(controller_manager),
            "default",
        )?;
        let mut cmd = Command::new(&bin.kube_controller_manager);
        cmd.arg(format!("--kubeconfig={}", kcm_kubeconfig.display()))
            .arg(format!("--controllers={}", CONTROLLERS.join(",")))
            .arg(format!(
                "--service-account-private-key-file={}",
                server.pki.path("sa.key").display()
            ))
            .arg(format!(
                "--root-ca-file={}",
                server.pki.path("ca.crt").display()
            ))
            .arg("--leader-elect=false")
            // As kubeadm runs it: each controller with its own ServiceAccount and role.
            .arg("--use-service-account-credentials=true")
            // No serving: nothing scrapes it, and a port would be one more thing to clash.
            .arg("--secure-port=0");
        let log = server.spec.dir.join("kube-controller-manager.log");
        let child = spawn_logged_in(&server.netns, &mut cmd, &log).map_err(io_context(format!(
            "start {}'s kube-controller-manager",
            server.spec.name
        )))?;
        *lock(&server.controller_manager) = Some(child);
        server.wait_controller_manager()?;
        Ok(server)
    }

    fn start_apiserver(&self, program: &Path) -> Result<(), HarnessError> {
        let mut cmd = Command::new(program);
        cmd.args(&self.apiserver_args);
        let log = self.spec.dir.join("kube-apiserver.log");
        lock(&self.started).push(k8s_openapi::jiff::Timestamp::now());
        let child = spawn_logged_in(&self.netns, &mut cmd, &log).map_err(io_context(format!(
            "start {}'s kube-apiserver",
            self.spec.name
        )))?;
        *lock(&self.apiserver) = Some(child);
        self.wait_ready()
    }

    /// Polls `/readyz` until it answers `ok`, failing at once if kube-apiserver exits.
    fn wait_ready(&self) -> Result<(), HarnessError> {
        self.poll("kube-apiserver", &self.apiserver, |client| async move {
            let request = http::Request::get("/readyz")
                .body(Vec::new())
                .map_err(|e| e.to_string())?;
            match client.request_text(request).await {
                Ok(body) if body.trim() == "ok" => Ok(()),
                Ok(body) => Err(format!("/readyz: {body}")),
                Err(e) => Err(format!("/readyz: {e}")),
            }
        })
    }

    /// Waits until kube-controller-manager has made the `default` ServiceAccount of namespace
    /// `default` (its controllers run), failing at once if it exits.
    fn wait_controller_manager(&self) -> Result<(), HarnessError> {
        self.poll(
            "kube-controller-manager",
            &self.controller_manager,
            |client| async move {
                let accounts: kube::Api<k8s_openapi::api::core::v1::ServiceAccount> =
                    kube::Api::namespaced(client, "default");
                match accounts.get_opt("default").await {
                    Ok(Some(_)) => Ok(()),
                    Ok(None) => Err("no default ServiceAccount yet".to_string()),
                    Err(e) => Err(e.to_string()),
                }
            },
        )
    }

    /// Polls `check` (with a cluster-admin client) until it passes, for at most
    /// [`START_TIMEOUT`]; fails at once, quoting its log, if `process` (`what`) exits.
    fn poll<F>(
        &self,
        what: &str,
        process: &Mutex<Option<ChildGuard>>,
        check: impl Fn(kube::Client) -> F + Send + Sync,
    ) -> Result<(), HarnessError>
    where
        F: std::future::Future<Output = Result<(), String>>,
    {
        let config = self.admin_config("default");
        let name = &self.spec.name;
        block_on_thread(move || async move {
            let deadline = Instant::now() + START_TIMEOUT;
            let client = kube::Client::try_from(config).map_err(|e| {
                HarnessError::ControlPlane(format!("a client for {name}'s API server: {e}"))
            })?;
            loop {
                let last = match check(client.clone()).await {
                    Ok(()) => return Ok(()),
                    Err(last) => last,
                };
                if let Some(child) = lock(process).as_mut() {
                    if let Some(status) = child
                        .try_status()
                        .map_err(io_context(format!("wait for {what}")))?
                    {
                        return Err(HarnessError::Exited {
                            process: format!("{name}'s {what}"),
                            status: status.to_string(),
                            log_tail: child.log_tail(30),
                        });
                    }
                }
                if Instant::now() > deadline {
                    let tail = lock(process)
                        .as_ref()
                        .map(|c| c.log_tail(30))
                        .unwrap_or_default();
                    return Err(HarnessError::ControlPlane(format!(
                        "{name}'s {what} was not ready within {START_TIMEOUT:?} (last: {last}); its log:\n{tail}"
                    )));
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    }

    /// The cluster's name.
    pub fn name(&self) -> &str {
        &self.spec.name
    }

    /// The URL the test reaches it at, in its own namespace.
    pub fn url(&self) -> String {
        format!("https://{}", self.forward.addr())
    }

    /// The URL the cluster's nodes reach it at: its advertised address.
    pub fn url_in_cluster(&self) -> String {
        format!("https://{}", SocketAddr::new(self.spec.advertise, API_PORT))
    }

    /// The URL processes in its own namespace reach it at, on loopback.
    pub fn url_in_netns(&self) -> String {
        format!("https://127.0.0.1:{API_PORT}")
    }

    /// The cluster's CA certificate, PEM.
    pub fn ca_pem(&self) -> &str {
        self.pki.ca_pem()
    }

    /// The cluster's PKI, to issue more client certificates.
    pub fn pki(&self) -> &Pki {
        &self.pki
    }

    /// The harness's own (cluster-admin) credentials.
    pub fn admin(&self) -> Credentials {
        Credentials::Cert(self.admin.clone())
    }

    /// A client configuration for the test as cluster-admin, with `namespace` as default.
    pub fn admin_config(&self, namespace: &str) -> kube::Config {
        self.config(&self.url(), &self.admin(), namespace)
    }

    /// A client configuration for `url` (one of this server's) with `credentials`.
    pub fn config(&self, url: &str, credentials: &Credentials, namespace: &str) -> kube::Config {
        let url = match url.parse() {
            Ok(url) => url,
            Err(e) => panic!("{url} is not a URL: {e}"),
        };
        let mut config = kube::Config::new(url);
        config.default_namespace = namespace.to_string();
        config.root_cert = Some(vec![pem_der(self.ca_pem())]);
        match credentials {
            Credentials::Cert(pair) => {
                let b64 = base64::engine::general_purpose::STANDARD;
                config.auth_info.client_certificate_data = Some(b64.encode(&pair.cert_pem));
                config.auth_info.client_key_data = Some(b64.encode(&pair.key_pem).into());
            }
            Credentials::Token(token) => config.auth_info.token = Some(token.clone().into()),
        }
        config
    }

    /// A kubeconfig for `url` with `credentials`, one context named after the cluster.
    pub fn kubeconfig(&self, url: &str, credentials: &Credentials, namespace: &str) -> String {
        let name = &self.spec.name;
        kubeconfig_yaml(
            &[self.kubeconfig_context(name, url, credentials, namespace)],
            name,
        )
    }

    /// One context of a kubeconfig, named `name`, for `url` with `credentials`: to put
    /// several clusters in one kubeconfig with [`kubeconfig_yaml`].
    pub fn kubeconfig_context(
        &self,
        name: &str,
        url: &str,
        credentials: &Credentials,
        namespace: &str,
    ) -> KubeconfigContext {
        let b64 = base64::engine::general_purpose::STANDARD;
        let user = match credentials {
            Credentials::Cert(pair) => serde_json::json!({
                "client-certificate-data": b64.encode(&pair.cert_pem),
                "client-key-data": b64.encode(&pair.key_pem),
            }),
            Credentials::Token(token) => serde_json::json!({"token": token}),
        };
        KubeconfigContext {
            cluster: serde_json::json!({"name": name, "cluster": {
                "server": url,
                "certificate-authority-data": b64.encode(self.ca_pem()),
            }}),
            context: serde_json::json!({"name": name, "context": {
                "cluster": name, "user": name, "namespace": namespace,
            }}),
            user: serde_json::json!({"name": name, "user": user}),
        }
    }

    /// Writes [`KubeApiServer::kubeconfig`] to `path`, readable by its owner only.
    pub fn write_kubeconfig(
        &self,
        path: &Path,
        url: &str,
        credentials: &Credentials,
        namespace: &str,
    ) -> Result<(), HarnessError> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .mode(0o600)
            .open(path)
            .map_err(io_context(format!("write {}", path.display())))?;
        file.write_all(self.kubeconfig(url, credentials, namespace).as_bytes())
            .map_err(io_context(format!("write {}", path.display())))
    }

    /// The test's cluster-admin kubeconfig (for `kubectl` in the test's namespace).
    pub fn admin_kubeconfig(&self) -> Result<PathBuf, HarnessError> {
        let path = self.spec.dir.join("admin.kubeconfig");
        if !path.exists() {
            self.write_kubeconfig(&path, &self.url(), &self.admin(), "default")?;
        }
        Ok(path)
    }

    /// `kubectl` as cluster-admin of this cluster, from the test's namespace.
    pub fn kubectl(&self) -> Result<Command, HarnessError> {
        let mut cmd = Command::new(binaries()?.kubectl);
        cmd.env_remove("KUBECONFIG")
            .arg("--kubeconfig")
            .arg(self.admin_kubeconfig()?);
        Ok(cmd)
    }

    /// Runs `kubectl args` as cluster-admin; its stdout, or an error with its stderr.
    pub fn kubectl_ok(&self, args: &[&str], stdin: Option<&str>) -> Result<String, HarnessError> {
        use std::io::Write;
        let mut cmd = self.kubectl()?;
        cmd.args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let mut child = cmd.spawn().map_err(io_context("run kubectl"))?;
        if let Some(mut pipe) = child.stdin.take() {
            if let Some(text) = stdin {
                pipe.write_all(text.as_bytes())
                    .map_err(io_context("write kubectl's input"))?;
            }
        }
        let out = child
            .wait_with_output()
            .map_err(io_context("run kubectl"))?;
        match out.status.success() {
            true => Ok(String::from_utf8_lossy(&out.stdout).into_owned()),
            false => Err(HarnessError::Command {
                command: format!("kubectl {} (at {})", args.join(" "), self.spec.name),
                status: out.status.to_string(),
                stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            }),
        }
    }

    // ---- outages ----

    /// Whether kube-apiserver runs now.
    pub fn is_running(&self) -> bool {
        lock(&self.apiserver)
            .as_mut()
            .is_some_and(ChildGuard::is_running)
    }

    /// Stops kube-apiserver with SIGTERM (its watches end, clients see the server go).
    pub fn stop(&self) {
        if let Some(mut child) = lock(&self.apiserver).take() {
            if let Err(e) = child.terminate_and_wait(STOP_GRACE) {
                eprintln!(
                    "causeway-tests: stopping {}'s kube-apiserver: {e}",
                    self.spec.name
                );
            }
        }
    }

    /// Kills kube-apiserver with SIGKILL, as a crash would end it.
    pub fn kill(&self) {
        if let Some(mut child) = lock(&self.apiserver).take() {
            if let Err(e) = child.kill9() {
                eprintln!(
                    "causeway-tests: killing {}'s kube-apiserver: {e}",
                    self.spec.name
                );
            }
        }
    }

    /// Starts kube-apiserver again (after [`KubeApiServer::stop`] or [`KubeApiServer::kill`])
    /// with the same flags and data, and waits until it is ready.
    pub fn restart(&self) -> Result<(), HarnessError> {
        self.stop();
        self.start_apiserver(&binaries()?.kube_apiserver)
    }

    // ---- what clients did ----

    /// The audit log.
    pub fn audit(&self) -> &AuditLog {
        &self.audit
    }

    /// Forgets every request so far: counts start again from here.
    pub fn reset_counters(&self) {
        *lock(&self.mark) = self.audit.mark();
    }

    /// Every request since the last [`KubeApiServer::reset_counters`], by anyone but the
    /// harness and the control plane itself.
    pub fn requests(&self) -> Vec<Request> {
        let since = *lock(&self.mark);
        match self.audit.requests_since(since) {
            Ok(requests) => requests
                .into_iter()
                .filter(|r| r.user != ADMIN_USER)
                .collect(),
            Err(e) => panic!("cannot read {}: {e}", self.audit.path().display()),
        }
    }

    /// Writes to resources of type `K` since the last reset, by anyone but the harness.
    pub fn writes_of<K: kube::Resource<DynamicType = ()>>(&self) -> Writes {
        let plural = K::plural(&());
        let group = K::group(&());
        Writes(
            self.requests()
                .into_iter()
                .filter(|r| r.is_write() && r.resource == plural && r.api_group == group)
                .collect(),
        )
    }

    /// Requests of Causeway's identities that RBAC refused (403, the authorizer's decision
    /// `forbid`), logged since the last call; those within [`STARTUP_REFUSALS`] of a start
    /// of the server are overlooked.
    pub fn new_refusals(&self) -> Vec<Request> {
        let mut read = lock(&self.refusals_read);
        let (requests, next) = match self.audit.read_since(*read) {
            Ok(read) => read,
            Err(e) => panic!("cannot read {}: {e}", self.audit.path().display()),
        };
        *read = next;
        let started = lock(&self.started).clone();
        let window = k8s_openapi::jiff::SignedDuration::try_from(STARTUP_REFUSALS)
            .unwrap_or(k8s_openapi::jiff::SignedDuration::ZERO);
        let starting = |received: &str| {
            received
                .parse::<k8s_openapi::jiff::Timestamp>()
                .is_ok_and(|at| started.iter().any(|s| at >= *s && at < *s + window))
        };
        requests
            .into_iter()
            .filter(|r| r.code == 403 && r.decision == "forbid")
            .filter(|r| super::audit::identity_of(&r.user).is_some())
            .filter(|r| !starting(&r.received))
            .collect()
    }

    /// Every write since the last reset, by anyone but the harness.
    pub fn writes(&self) -> Writes {
        Writes(
            self.requests()
                .into_iter()
                .filter(Request::is_write)
                .collect(),
        )
    }
}

impl Drop for KubeApiServer {
    fn drop(&mut self) {
        // The controller manager first, so it does not log a failing API server for seconds.
        for slot in [&self.controller_manager, &self.apiserver] {
            if let Some(mut child) = lock(slot).take() {
                let _ = child.terminate();
                drop(child);
            }
        }
    }
}

/// A kubeconfig's cluster, context and user entries for one cluster.
#[derive(Debug, Clone)]
pub struct KubeconfigContext {
    cluster: serde_json::Value,
    context: serde_json::Value,
    user: serde_json::Value,
}

/// A kubeconfig holding `contexts`, with `current` as its current context.
pub fn kubeconfig_yaml(contexts: &[KubeconfigContext], current: &str) -> String {
    let config = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": contexts.iter().map(|c| &c.cluster).collect::<Vec<_>>(),
        "contexts": contexts.iter().map(|c| &c.context).collect::<Vec<_>>(),
        "users": contexts.iter().map(|c| &c.user).collect::<Vec<_>>(),
        "current-context": current,
    });
    match serde_yaml::to_string(&config) {
        Ok(text) => text,
        Err(e) => unreachable!("a JSON value always serializes: {e}"),
    }
}

/// The DER bytes of the first PEM block in `pem`.
fn pem_der(pem: &str) -> Vec<u8> {
    let body: String = pem
        .lines()
        .skip_while(|l| !l.starts_with("-----BEGIN"))
        .skip(1)
        .take_while(|l| !l.starts_with("-----END"))
        .collect();
    match base64::engine::general_purpose::STANDARD.decode(body) {
        Ok(der) => der,
        Err(e) => panic!("a PEM certificate this harness wrote does not decode: {e}"),
    }
}
