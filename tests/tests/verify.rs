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
use causeway_tests::harness::control_plane::kubectl_causeway;
use causeway_tests::harness::kube::{
    Component, KubeWorld, CANDIDATES, CONTROLLER_DNS_PORT, READY_TIMEOUT,
};
use causeway_tests::harness::{HarnessError, ScratchDir};
use k8s_openapi::api::core::v1::{Namespace, Service};
use kube::api::{Api, DeleteParams, PostParams};
use serde::de::DeserializeOwned;
use serde_json::{json, Value};

const A: usize = 0;
const B: usize = 1;
const NS: &str = "prod";
const SVC: &str = "echo";
const PORT: u16 = 7000;
const WAIT: Duration = Duration::from_secs(30);
/// One plugin run's bound: verify takes about a second, a benchmark its seconds plus a few.
const RUN_TIMEOUT: Duration = Duration::from_secs(40);

fn fail(e: HarnessError) -> ! {
    panic!("{e}")
}

fn object<K: DeserializeOwned>(value: Value) -> K {
    serde_json::from_value(value).expect("a well-formed object")
}

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
        let namespaces: Api<Namespace> = Api::all(kube.cluster_client(i));
        kube.block_on(namespaces.create(&pp, &object(json!({"metadata": {"name": NS}}))))
            .expect("create namespace prod");
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
