//! `kubectl causeway verify` and `benchmark`, run through the real kubectl's plugin
//! discovery, against a two-site clusterset in Kubernetes mode on real API servers
//! (`KubeWorld`): the plugin, in the test's own namespace and as a person bound only to the
//! chart's viewer roles, reaches each site's active gateway only through that site's API
//! server's pod proxy, as it would from an operator's laptop. Also the binary's flag
//! handling and exit codes.

use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use causeway_controller::plugin::benchmark::BenchResult;
use causeway_controller::plugin::verify::{Outcome, VerifyRow};
use causeway_crds::{ServiceExport, ServiceImport};
use causeway_tests::fixtures::{create_namespace, fail, object};
use causeway_tests::harness::control_plane::kubectl_causeway;
use causeway_tests::harness::kube::{
    Component, KubeWorld, CANDIDATES, CONTROLLER_DNS_PORT, READY_TIMEOUT,
};
use causeway_tests::harness::ScratchDir;
use k8s_openapi::api::core::v1::Service;
use kube::api::{Api, DeleteParams, PostParams};
use serde_json::{json, Value};

const A: usize = 0;
const B: usize = 1;
const NS: &str = "prod";
const SVC: &str = "echo";
const PORT: u16 = 7000;
const WAIT: Duration = Duration::from_secs(30);
/// One plugin run's bound: verify takes about a second, a benchmark its seconds plus a few.
const RUN_TIMEOUT: Duration = Duration::from_secs(40);

/// `kubectl causeway`, through kubectl's plugin discovery.
fn plugin() -> Command {
    kubectl_causeway().unwrap_or_else(|e| panic!("{e}; run `cargo build --bins` first"))
}

/// Runs the plugin with `args`, bounded by [`RUN_TIMEOUT`].
fn run(kubeconfig: &Path, args: &[&str]) -> Output {
    let mut cmd = plugin();
    cmd.arg("--kubeconfig").arg(kubeconfig).args(args);
    run_bounded(cmd, args)
}

fn run_bounded(mut cmd: Command, args: &[&str]) -> Output {
    let mut child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start kubectl-causeway");
    let deadline = Instant::now() + RUN_TIMEOUT;
    while child
        .try_wait()
        .expect("wait for kubectl-causeway")
        .is_none()
    {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("kubectl-causeway {args:?} ran longer than {RUN_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child
        .wait_with_output()
        .expect("collect kubectl-causeway output")
}

fn text(out: &[u8]) -> String {
    String::from_utf8_lossy(out).into_owned()
}

fn describe(out: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}--- stderr\n{}",
        out.status.code(),
        text(&out.stdout),
        text(&out.stderr)
    )
}

/// A kubeconfig naming both sites' API servers, as an operator's would: a person bound only
/// to the chart's viewer roles.
fn kubeconfig(kube: &KubeWorld, dir: &Path) -> std::path::PathBuf {
    let path = dir.join("operator.kubeconfig");
    kube.write_operator_kubeconfig(&path)
        .unwrap_or_else(|e| panic!("the operator's kubeconfig: {e}"));
    path
}

/// `verify -o json` over both contexts: its exit code and rows, or what it said instead.
fn verify_rows(kubeconfig: &Path, extra: &[&str]) -> Result<(i32, Vec<VerifyRow>), String> {
    let mut args = vec![
        "--context",
        "site-a",
        "--context",
        "site-b",
        "verify",
        "-o",
        "json",
    ];
    args.extend_from_slice(extra);
    let out = run(kubeconfig, &args);
    let rows = serde_json::from_slice(&out.stdout)
        .map_err(|e| format!("verify -o json is not rows ({e}):\n{}", describe(&out)))?;
    Ok((out.status.code().unwrap_or(-1), rows))
}

fn row<'a>(rows: &'a [VerifyRow], from: &str, check: &str) -> &'a VerifyRow {
    rows.iter()
        .find(|r| r.from == from && r.check == check)
        .unwrap_or_else(|| panic!("no {check} row from {from} in {rows:#?}"))
}

#[test]
fn verify_and_benchmark_through_the_pod_proxy() {
    let mut kube = KubeWorld::new(2).unwrap_or_else(|e| fail(e));
    for i in [A, B] {
        let listen = format!("0.0.0.0:{CONTROLLER_DNS_PORT}");
        kube.set_extra_args(Component::Controller(i), &["--dns-listen", &listen]);
        kube.start_site(i).unwrap_or_else(|e| fail(e));
    }
    kube.wait_ready(READY_TIMEOUT).unwrap_or_else(|e| fail(e));
    let scratch = ScratchDir::new("cw-verify").expect("scratch dir");
    let config = kubeconfig(&kube, scratch.path());

    // Site A serves `echo` from its pod (a listener the kernel completes handshakes for)
    // and exports it; both sites have the namespace (namespace sameness).
    let pod_ip = kube.spec(A).pod_ip();
    let _listener: TcpListener = kube
        .site(A)
        .pod
        .try_run(|| TcpListener::bind(SocketAddr::new(pod_ip.into(), PORT)))
        .expect("enter site-a's pod")
        .expect("listen in site-a's pod");
    let pp = PostParams::default();
    for i in [A, B] {
        create_namespace(&kube, i, NS);
    }
    let a = kube.cluster_client(A);
    let service: Service = object(json!({
        "metadata": {"name": SVC, "namespace": NS},
        "spec": {"clusterIP": "None", "selector": {"app": SVC},
                 "ports": [{"name": "echo", "port": PORT, "protocol": "TCP"}]}
    }));
    kube.block_on(Api::<Service>::namespaced(a.clone(), NS).create(&pp, &service))
        .expect("create Service");
    kube.back_service_with_pod(A, NS, SVC, None)
        .unwrap_or_else(|e| fail(e));
    let exports: Api<ServiceExport> = Api::namespaced(a.clone(), NS);
    kube.block_on(exports.create(&pp, &ServiceExport::new(SVC, Default::default())))
        .expect("create ServiceExport");
    let imports_b: Api<ServiceImport> = Api::namespaced(kube.cluster_client(B), NS);
    kube.wait_for("site-b to import prod/echo", WAIT, |k| {
        k.block_on(imports_b.get(SVC)).map_err(|e| e.to_string())
    })
    .unwrap_or_else(|e| fail(e));

    // Healthy: every check passes once site-b's DNS has the name (within a second or so).
    let dns_check = format!("dns {SVC}.{NS}.svc.clusterset.local");
    let rows = kube
        .wait_for("verify to pass every check", WAIT, |_| {
            match verify_rows(&config, &[])? {
                (0, rows) => Ok(rows),
                (code, rows) => Err(format!("exit {code}: {rows:#?}")),
            }
        })
        .unwrap_or_else(|e| fail(e));
    for (from, to) in [("site-a", "site-b"), ("site-b", "site-a")] {
        let tunnel = row(&rows, from, "tunnel");
        assert_eq!((tunnel.to.as_str(), tunnel.outcome), (to, Outcome::Ok));
        assert!(tunnel.detail.starts_with("handshake "), "{tunnel:?}");
        let rtt = row(&rows, from, "rtt");
        assert!(rtt.detail.contains(" ms ("), "a fresh RTT: {rtt:?}");
    }
    let dns = row(&rows, "site-b", &dns_check);
    assert_eq!(dns.to, "site-a");
    assert!(
        dns.detail
            .contains(&format!("{pod_ip}; tcp {pod_ip}:{PORT} connected")),
        "site-b resolves site-a's export and connects to it: {dns:?}"
    );
    let table = run(
        &config,
        &["--context", "site-a", "--context", "site-b", "verify"],
    );
    assert!(table.status.success(), "{}", describe(&table));
    let table_text = text(&table.stdout);
    assert!(table_text.starts_with("FROM "), "{table_text}");
    eprintln!("verify, healthy:\n{table_text}");

    // Benchmark from site-b to site-a: progress lines (stderr is no terminal), figures.
    let out = run(
        &config,
        &[
            "--context",
            "site-b",
            "benchmark",
            "site-b",
            "site-a",
            "--seconds",
            "2",
            "--streams",
            "2",
        ],
    );
    assert!(out.status.success(), "{}", describe(&out));
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(
        stderr.contains("site-b -> site-a: "),
        "no progress line:\n{stderr}"
    );
    assert!(stderr.contains("idle rtt: min "), "{stderr}");
    assert!(
        stdout.contains("throughput: ") && stdout.contains("Gbit/s"),
        "{stdout}"
    );
    eprintln!("benchmark:\n{stderr}{stdout}");
    // What site-a's active gateway itself counts sending to site-b over the run: the
    // benchmark's bytes must have crossed the tunnel, not a shortcut or a made-up figure.
    let tx_to_b = |kube: &KubeWorld| {
        kube.active_gateway_metric(
            A,
            "causeway_peer_tx_bytes_total",
            &[("remote_cluster", "site-b")],
        )
        .unwrap_or_else(|e| panic!("site-a's active gateway: {e}"))
    };
    let tx_before = tx_to_b(&kube);
    let out = run(
        &config,
        &[
            "benchmark",
            "site-a",
            "site-b",
            "--seconds",
            "1",
            "-o",
            "json",
        ],
    );
    let tunnel_bytes = tx_to_b(&kube) - tx_before;
    assert!(out.status.success(), "{}", describe(&out));
    let result: BenchResult = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("benchmark -o json ({e}):\n{}", describe(&out)));
    assert_eq!(
        (result.from.as_str(), result.to.as_str()),
        ("site-a", "site-b")
    );
    assert!(
        result.bytes >= 1 << 20 && result.seconds >= 0.9,
        "a 1-second benchmark moved {} bytes in {} s: {result:?}",
        result.bytes,
        result.seconds
    );
    let rate = result.bytes as f64 * 8.0 / result.seconds;
    assert!(
        (result.bits_per_second - rate).abs() <= 0.01 * rate,
        "bits_per_second {} is not bytes * 8 / seconds = {rate}",
        result.bits_per_second
    );
    // Each acknowledged byte went through the tunnel once, with TCP, IP and WireGuard
    // headers (under 10% at this MTU) and the RTT probes on top, and not much more.
    let sent = result.bytes as f64;
    assert!(
        tunnel_bytes >= sent && tunnel_bytes <= 1.15 * sent + f64::from(1 << 20),
        "site-a's gateway counted {tunnel_bytes} bytes to site-b for a benchmark of {} bytes",
        result.bytes
    );
    eprintln!(
        "benchmark -o json: {} bytes acknowledged in {:.2} s; site-a's gateway sent {} bytes \
         to site-b meanwhile ({:.3}x)",
        result.bytes,
        result.seconds,
        tunnel_bytes,
        tunnel_bytes / sent
    );
    let rtt = result.rtt.expect("idle RTT figures");
    assert!(
        rtt.min_ms <= rtt.avg_ms && rtt.avg_ms <= rtt.p99_ms,
        "{rtt:?}"
    );

    // Diagnose, healthy: every cluster's DNS answers what its ServiceImport promises.
    let diagnose = |extra: &[&str]| {
        let mut args = vec!["--context", "site-a", "--context", "site-b", "diagnose"];
        args.extend_from_slice(extra);
        run(&config, &args)
    };
    let out = diagnose(&[]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert!(
        !text(&out.stdout).contains("dns-answer"),
        "{}",
        describe(&out)
    );

    // Site-b's controller, its DNS server, stopped: site-b's gateway gets no answer.
    kube.stop_controller(B).unwrap_or_else(|e| fail(e));
    let finding = kube
        .wait_for("diagnose to find site-b's DNS answer wrong", WAIT, |_| {
            let out = diagnose(&[]);
            let stdout = text(&out.stdout);
            let line = stdout.lines().find(|l| {
                l.contains("dns-answer") && l.contains(&format!("serviceimport/{NS}/{SVC}"))
            });
            match (out.status.code(), line) {
                (Some(1), Some(line)) => Ok(line.to_owned()),
                _ => Err(describe(&out)),
            }
        })
        .unwrap_or_else(|e| fail(e));
    for says in [
        "cluster site-b resolves echo.prod.svc.clusterset.local wrongly",
        &format!("expected {pod_ip}"),
        "causeway-dns Service",
    ] {
        assert!(finding.contains(says), "{says:?} not in {finding}");
    }
    eprintln!("diagnose, site-b's DNS down:\n{finding}");
    let out = diagnose(&["-o", "json"]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let findings: Vec<Value> = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("diagnose -o json ({e}):\n{}", describe(&out)));
    let dns_findings: Vec<&Value> = findings
        .iter()
        .filter(|f| f["class"] == "dns-answer")
        .collect();
    assert_eq!(
        dns_findings.len(),
        1,
        "only site-b's answer is wrong: {findings:#?}"
    );
    assert_eq!(dns_findings[0]["context"], "site-b", "{findings:#?}");
    let out = diagnose(&["--no-dns"]);
    assert!(
        !text(&out.stdout).contains("dns-answer"),
        "{}",
        describe(&out)
    );
    kube.start_controller(B).unwrap_or_else(|e| fail(e));
    kube.wait_for("diagnose to be healthy again", WAIT, |_| {
        let out = diagnose(&[]);
        match out.status.code() {
            Some(0) => Ok(()),
            _ => Err(describe(&out)),
        }
    })
    .unwrap_or_else(|e| fail(e));

    // Withdrawn export: the named service no longer resolves in site-b.
    kube.block_on(exports.delete(SVC, &DeleteParams::default()))
        .expect("delete the ServiceExport");
    let service_arg = format!("{NS}/{SVC}");
    let rows = kube
        .wait_for("verify to fail site-b's DNS check", WAIT, |_| {
            let (code, rows) = verify_rows(&config, &["--service", &service_arg])?;
            let dns_failed = rows
                .iter()
                .any(|r| r.from == "site-b" && r.check == dns_check && r.outcome == Outcome::Fail);
            match (code, dns_failed) {
                (1, true) => Ok(rows),
                _ => Err(format!("exit {code}: {rows:#?}")),
            }
        })
        .unwrap_or_else(|e| fail(e));
    let dns = row(&rows, "site-b", &dns_check);
    assert!(dns.detail.contains("with no address"), "{dns:?}");
    assert!(
        dns.fix
            .as_deref()
            .is_some_and(|f| f.contains("clusterset.local")),
        "{dns:?}"
    );
    assert_eq!(row(&rows, "site-b", "tunnel").outcome, Outcome::Ok);

    // Site A's gateways stopped: site-b's fresh probes go unanswered, site-a has no gateway.
    for k in 0..CANDIDATES {
        kube.kill_gateway(A, k).unwrap_or_else(|e| fail(e));
    }
    let out = run(
        &config,
        &[
            "--context",
            "site-a",
            "--context",
            "site-b",
            "verify",
            "--no-dns",
        ],
    );
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("FAIL site-b -> site-a rtt: none of 5 probes"),
        "{stdout}"
    );
    assert!(stdout.contains("FAIL site-a -> * gateway: "), "{stdout}");
    assert!(stdout.contains("  fix: "), "{stdout}");
    eprintln!("verify, site-a's gateways stopped:\n{stdout}");

    // With a name to resolve again, diagnose says on stderr which cluster's DNS it could
    // not check through a gateway, and why. Its exit code depends on whether site-a's
    // objects already show the dead gateways (the Lease may not have expired yet).
    kube.wait_for("the ServiceExport to be created again", WAIT, |k| {
        k.block_on(exports.create(&pp, &ServiceExport::new(SVC, Default::default())))
            .map(drop)
            .map_err(|e| e.to_string())
    })
    .unwrap_or_else(|e| fail(e));
    let imports_a: Api<ServiceImport> = Api::namespaced(a.clone(), NS);
    kube.wait_for("site-a to import prod/echo again", WAIT, |k| {
        k.block_on(imports_a.get(SVC)).map_err(|e| e.to_string())
    })
    .unwrap_or_else(|e| fail(e));
    let out = diagnose(&[]);
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("DNS not checked for site-a: ")
            && stderr.contains("did not answer /verify"),
        "{}",
        describe(&out)
    );
}

#[test]
fn flags_and_contexts_are_checked_with_clear_messages() {
    let scratch = ScratchDir::new("cw-verify-flags").expect("scratch dir");
    let config = scratch.path().join("kubeconfig");
    // Nothing listens there: only the context lookup is exercised.
    std::fs::write(
        &config,
        "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: http://127.0.0.1:1\ncontexts:\n- name: site-a\n  context:\n    cluster: c\n    user: u\ncurrent-context: site-a\nusers:\n- name: u\n  user: {}\n",
    )
    .expect("write kubeconfig");
    for (args, says) in [
        (&["verify", "--bogus"][..], "unexpected argument '--bogus'"),
        (
            &["benchmark", "site-a", "site-b", "--seconds", "61"],
            "61 is not in 1..=60",
        ),
        (
            &["benchmark", "site-a", "site-b", "--streams", "9"],
            "9 is not in 1..=8",
        ),
        (
            &["benchmark", "site-a"],
            "required arguments were not provided",
        ),
    ] {
        let out = run(&config, args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", describe(&out));
        assert!(
            text(&out.stderr).contains(says),
            "{args:?}: {}",
            describe(&out)
        );
    }
    let out = run(&config, &["--context", "nope", "verify"]);
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("kubeconfig context \"nope\""), "{stderr}");
    let out = run(&config, &["verify", "--service", "no-slash"]);
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    assert!(
        text(&out.stderr).contains("write it as namespace/name"),
        "{}",
        describe(&out)
    );
}

/// A token of ServiceAccount `causeway/<account>` of site `i`, for `audience` (none: the
/// API server's own).
fn mint(kube: &KubeWorld, i: usize, account: &str, audience: Option<&str>) -> String {
    use causeway_tests::harness::control_plane::install;
    use causeway_tests::harness::kube::CLUSTER_NAMESPACE;
    let server = kube.cluster_api(i);
    let token = match audience {
        None => install::account_token(server, CLUSTER_NAMESPACE, account),
        Some(audience) => install::audience_token(server, CLUSTER_NAMESPACE, account, audience),
    };
    match token.unwrap_or_else(|e| panic!("mint a token of {account}: {e}")) {
        causeway_tests::harness::control_plane::Credentials::Token(token) => token,
        other => panic!("not a token: {other:?}"),
    }
}

#[test]
fn the_gateway_agent_answers_only_tokens_of_its_client_account() {
    use causeway_crds::names::{AGENT_CLIENT_ACCOUNT, AGENT_TOKEN_AUDIENCE, AGENT_TOKEN_HEADER};
    use causeway_tests::harness::kube::GATEWAY_METRICS_ADDR;
    use causeway_tests::harness::topology::http_get_with;

    let mut kube = KubeWorld::new(2).unwrap_or_else(|e| fail(e));
    for i in [A, B] {
        kube.start_site(i).unwrap_or_else(|e| fail(e));
    }
    kube.wait_ready(READY_TIMEOUT).unwrap_or_else(|e| fail(e));
    let active = kube
        .active_gateway(A)
        .expect("site-a has an active gateway");
    let agent = SocketAddr::new(
        kube.spec(A).candidate(active).node_ip().into(),
        GATEWAY_METRICS_ADDR.port(),
    );
    // What a pod of site-a asks its gateway's node for: the cluster's DNS answer for a
    // name and a TCP connect to it, from the node's network.
    let verify = "/verify?dns=kubernetes.default.svc.cluster.local:443";
    let benchmark = "/benchmark?cluster=site-b&seconds=1&streams=1";
    let once = |path: &str, headers: &[(&str, &str)]| {
        http_get_with(&kube.site(A).pod, agent, path, headers)
            .unwrap_or_else(|e| panic!("GET {path} from site-a's pod: {e}"))
    };
    // One source gets a few TokenReviews a second: past them, it waits its turn (429).
    let from_pod = |path: &str, headers: &[(&str, &str)]| {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let answer = once(path, headers);
            if answer.0 != 429 || Instant::now() > deadline {
                return answer;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    };

    // A pod floods made-up tokens: it is held to its own budget of TokenReviews...
    let mut answers = std::collections::BTreeMap::<u16, usize>::new();
    for n in 0..60 {
        let token = format!("made-up-{n}");
        *answers
            .entry(once(verify, &[(AGENT_TOKEN_HEADER, &token)]).0)
            .or_default() += 1;
    }
    eprintln!("60 made-up tokens from one pod: {answers:?}");
    let reviewed = answers.get(&401).copied().unwrap_or(0);
    assert!(
        answers.get(&429).copied().unwrap_or(0) > 0 && reviewed <= 20,
        "60 made-up tokens from one pod: {answers:?} (401 = reviewed by the API server)"
    );
    assert_eq!(answers.get(&200), None, "{answers:?}");

    // ...while an operator, through the pod proxy (another source), is answered at once.
    let scratch = ScratchDir::new("cw-agent-auth").expect("scratch dir");
    let operator = kubeconfig(&kube, scratch.path());
    let out = run(
        &operator,
        &["--context", "site-a", "--context", "site-b", "verify"],
    );
    assert!(
        out.status.success(),
        "the operator's verify: {}",
        describe(&out)
    );

    let route_agent = mint(&kube, A, "causeway-route-agent", None);
    let client_for_the_api = mint(&kube, A, AGENT_CLIENT_ACCOUNT, None);
    let route_agent_for_us = mint(&kube, A, "causeway-route-agent", Some(AGENT_TOKEN_AUDIENCE));
    let bearer = |t: &str| format!("Bearer {t}");
    let refused: [(&str, Vec<(&str, String)>); 6] = [
        ("no token", vec![]),
        (
            "a made-up token",
            vec![(AGENT_TOKEN_HEADER, "x.y.z".to_string())],
        ),
        (
            "the route agent's token",
            vec![("Authorization", bearer(&route_agent))],
        ),
        (
            "the route agent's token for the agent's audience",
            vec![(AGENT_TOKEN_HEADER, route_agent_for_us.clone())],
        ),
        (
            "the client account's token for the API server",
            vec![("Authorization", bearer(&client_for_the_api))],
        ),
        (
            "the client account's token for the API server, in our header",
            vec![(AGENT_TOKEN_HEADER, client_for_the_api.clone())],
        ),
    ];
    for (what, headers) in &refused {
        let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        for path in [verify, benchmark] {
            let (status, body) = from_pod(path, &headers);
            assert_eq!(status, 401, "{what} on {path}: {body}");
            assert!(
                body.contains("causeway-operator"),
                "{what}: the refusal names the fix: {body}"
            );
        }
    }
    // Prometheus scrapes without credentials, and so do the kubelet's probes.
    assert_eq!(from_pod("/metrics", &[]).0, 200, "/metrics stays open");

    // A token of the client account for the agent's audience: answered, straight to the port.
    let good = mint(&kube, A, AGENT_CLIENT_ACCOUNT, Some(AGENT_TOKEN_AUDIENCE));
    let (status, body) = from_pod(verify, &[("Authorization", &bearer(&good))]);
    assert_eq!(status, 200, "the agent client's token: {body}");
    assert!(
        body.contains("kubernetes.default.svc.cluster.local"),
        "{body}"
    );

    // Someone bound only to the viewer roles is told what to bind.
    let reader = scratch.path().join("reader.kubeconfig");
    kube.write_reader_kubeconfig(&reader)
        .unwrap_or_else(|e| fail(e));
    for args in [
        &["--context", "site-a", "verify"][..],
        &[
            "--context",
            "site-a",
            "benchmark",
            "site-a",
            "site-b",
            "--seconds",
            "1",
        ],
    ] {
        let out = run(&reader, args);
        assert!(
            !out.status.success(),
            "{args:?} as a reader: {}",
            describe(&out)
        );
        let said = text(&out.stderr) + &text(&out.stdout);
        assert!(
            said.contains("causeway-operator") && said.contains(AGENT_CLIENT_ACCOUNT),
            "{args:?} as a reader names the Role to bind: {}",
            describe(&out)
        );
    }
}
