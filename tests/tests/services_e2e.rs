//! End-to-end test of cross-cluster service discovery: a PostgreSQL primary in site A,
//! exported as a headless service, and a standby in site B that knows it only by its
//! `clusterset.local` name — resolved by site B's controller, the way CoreDNS would
//! forward it. Everything else is Kubernetes mode as in `kube_e2e`: a broker and a real API
//! server per cluster, real controllers, gateways and route agents.

use causeway_crds::mcs::CONDITION_CONFLICT;
use causeway_crds::{ServiceExport, ServiceImport};
use causeway_tests::fixtures::{create_namespace, fail, object};
use causeway_tests::harness::control_plane::workload::Backend;
use causeway_tests::harness::kube::{Component, KubeWorld, READY_TIMEOUT};
use causeway_tests::harness::postgres::Postgres;
use causeway_tests::harness::{Netns, ScratchDir};
use hickory_proto::op::{Message, Query, ResponseCode};
use hickory_proto::rr::{Name, RecordType};
use k8s_openapi::api::core::v1::Service;
use kube::api::{Api, PostParams};
use serde_json::json;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

const A: usize = 0;
const B: usize = 1;
const NS: &str = "prod";
const SVC: &str = "pg";
const WAIT: Duration = Duration::from_secs(30);
/// Where each controller serves `clusterset.local`, inside its worker's namespace: the
/// chart's port (its non-root controller cannot bind 53; CoreDNS forwards to it there).
const DNS_PORT: u16 = causeway_tests::harness::kube::CONTROLLER_DNS_PORT;

/// Points the resolver of every process started in `ns` (through `ip netns exec`, which
/// bind-mounts `/etc/netns/<name>/resolv.conf`) at `nameserver`; removed on drop.
struct Resolver {
    dir: PathBuf,
}

impl Resolver {
    fn point(ns: &Netns, nameserver: IpAddr) -> Resolver {
        let dir = PathBuf::from("/etc/netns").join(ns.name());
        std::fs::create_dir_all(&dir).expect("create /etc/netns/<name>");
        let resolver = Resolver { dir };
        std::fs::write(
            resolver.dir.join("resolv.conf"),
            format!("nameserver {nameserver}\noptions timeout:1 attempts:3\n"),
        )
        .expect("write resolv.conf");
        resolver
    }
}

impl Drop for Resolver {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// One DNS question over UDP from inside `ns`: the rcode and the sorted answers.
fn ask(
    ns: &Netns,
    server: SocketAddr,
    name: &str,
    qtype: RecordType,
) -> Result<(ResponseCode, Vec<String>), String> {
    let mut query = Message::query();
    query.metadata.id = 42;
    query.add_query(Query::query(
        Name::from_str(name).map_err(|e| e.to_string())?,
        qtype,
    ));
    let bytes = query.to_vec().map_err(|e| e.to_string())?;
    let socket = ns
        .try_run(|| UdpSocket::bind("0.0.0.0:0"))
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    socket
        .set_read_timeout(Some(Duration::from_millis(500)))
        .map_err(|e| e.to_string())?;
    socket.send_to(&bytes, server).map_err(|e| e.to_string())?;
    let mut buf = vec![0u8; 4096];
    let n = socket
        .recv(&mut buf)
        .map_err(|e| format!("no answer: {e}"))?;
    let message = Message::from_vec(&buf[..n]).map_err(|e| e.to_string())?;
    let mut data: Vec<String> = message.answers.iter().map(|r| r.data.to_string()).collect();
    data.sort();
    Ok((message.metadata.response_code, data))
}

fn headless_service() -> Service {
    object(json!({
        "metadata": {"name": SVC, "namespace": NS},
        "spec": {"clusterIP": "None", "selector": {"app": SVC},
                 "ports": [{"name": "postgresql", "port": 5432, "protocol": "TCP"}]}
    }))
}

/// The StatefulSet's pod pg-0 at `ip` (its hostname is what the DNS name is made of).
fn pg_0(ip: Ipv4Addr) -> Backend {
    Backend {
        ip: ip.into(),
        hostname: Some("pg-0".into()),
        ready: true,
    }
}

#[test]
fn a_standby_in_site_b_follows_its_primary_in_site_a_by_dns_name_alone() {
    let mut kube = KubeWorld::new(2).unwrap_or_else(|e| fail(e));
    for i in [A, B] {
        let listen = format!("0.0.0.0:{DNS_PORT}");
        kube.set_extra_args(Component::Controller(i), &["--dns-listen", &listen]);
        kube.start_site(i).unwrap_or_else(|e| fail(e));
    }
    kube.wait_ready(READY_TIMEOUT).unwrap_or_else(|e| fail(e));
    let dns_b = SocketAddr::new(kube.spec(B).worker_pod_gateway_ip().into(), DNS_PORT);
    let _resolver = Resolver::point(&kube.site(B).pod, dns_b.ip());
    kube.publish_dns_service(B).unwrap_or_else(|e| fail(e));

    // Site A: the namespace, a headless Service, its StatefulSet's pod pg-0 as a Pod object
    // in the site's pod namespace (the real EndpointSlice controller slices it), and the
    // export.
    // Site B has the namespace too (namespace sameness).
    let pp = PostParams::default();
    for i in [A, B] {
        create_namespace(&kube, i, NS);
    }
    let a = kube.cluster_client(A);
    let services: Api<Service> = Api::namespaced(a.clone(), NS);
    let exports: Api<ServiceExport> = Api::namespaced(a.clone(), NS);
    let primary_ip = kube.spec(A).pod_ip();
    kube.block_on(services.create(&pp, &headless_service()))
        .expect("create Service");
    kube.set_service_backends(A, NS, SVC, &[pg_0(primary_ip)])
        .unwrap_or_else(|e| fail(e));
    kube.block_on(exports.create(&pp, &ServiceExport::new(SVC, Default::default())))
        .expect("create ServiceExport");

    // Site B imports it and its DNS answers the StatefulSet pod's name.
    let imports_b: Api<ServiceImport> = Api::namespaced(kube.cluster_client(B), NS);
    kube.wait_for("site-b to import prod/pg", WAIT, |k| {
        k.block_on(imports_b.get(SVC)).map_err(|e| e.to_string())
    })
    .unwrap_or_else(|e| fail(e));
    let name = format!("pg-0.site-a.{SVC}.{NS}.svc.clusterset.local");
    let wait_answer = |kube: &mut KubeWorld, ip: Ipv4Addr| {
        let what = format!("{name} to resolve to {ip} in site-b's pod");
        kube.wait_for(&what, WAIT, |k| {
            match ask(&k.site(B).pod, dns_b, &name, RecordType::A)? {
                (ResponseCode::NoError, answers) if answers == [ip.to_string()] => Ok(()),
                other => Err(format!("{other:?}")),
            }
        })
        .unwrap_or_else(|e| fail(e));
    };
    wait_answer(&mut kube, primary_ip);
    let (code, _) = ask(
        &kube.site(B).pod,
        dns_b,
        &format!("nope.{SVC}.{NS}.svc.clusterset.local"),
        RecordType::A,
    )
    .expect("an answer");
    assert_eq!(code, ResponseCode::NXDomain);

    // PostgreSQL: the standby is configured with the name only.
    let scratch = ScratchDir::new("cw-svc-e2e").expect("scratch dir");
    let primary = Postgres::start_primary(&kube.site(A).pod, primary_ip.into(), scratch.path())
        .unwrap_or_else(|e| fail(e));
    let replica = Postgres::start_replica(
        &kube.site(B).pod,
        kube.spec(B).pod_ip().into(),
        &name,
        scratch.path(),
    )
    .unwrap_or_else(|e| fail(e));
    primary
        .sql("CREATE TABLE accounts (id int PRIMARY KEY, owner text, balance numeric)")
        .unwrap_or_else(|e| fail(e));
    primary
        .sql("INSERT INTO accounts SELECT g, 'owner-' || g, g * 10 FROM generate_series(1, 2000) g")
        .unwrap_or_else(|e| fail(e));
    let lsn = primary.current_lsn().unwrap_or_else(|e| fail(e));
    replica
        .wait_replayed(&lsn, WAIT)
        .unwrap_or_else(|e| fail(e));
    assert_eq!(
        primary
            .table_checksum("accounts")
            .unwrap_or_else(|e| fail(e)),
        replica
            .table_checksum("accounts")
            .unwrap_or_else(|e| fail(e)),
        "checksums differ after the first load"
    );

    // The primary's pod is rescheduled with a new IP (the same name, pg-0); the
    // EndpointSlice controller updates the slice.
    let moved_ip = Ipv4Addr::new(10, 1, 1, 11);
    kube.site(A)
        .pod
        .add_addr("eth0", format!("{moved_ip}/24").parse().expect("literal"))
        .expect("add the new pod address");
    let primary = primary
        .move_to(&kube.site(A).pod, moved_ip.into())
        .unwrap_or_else(|e| fail(e));
    kube.set_service_backends(A, NS, SVC, &[pg_0(moved_ip)])
        .unwrap_or_else(|e| fail(e));
    wait_answer(&mut kube, moved_ip);
    primary
        .sql("UPDATE accounts SET balance = balance + 1 WHERE id % 3 = 0")
        .unwrap_or_else(|e| fail(e));
    primary
        .sql("INSERT INTO accounts SELECT g, 'owner-' || g, g FROM generate_series(2001, 3000) g")
        .unwrap_or_else(|e| fail(e));
    let lsn = primary.current_lsn().unwrap_or_else(|e| fail(e));
    replica
        .wait_replayed(&lsn, Duration::from_secs(60))
        .unwrap_or_else(|e| {
            panic!(
                "the standby did not follow the moved primary by name: {e}\n{}",
                replica.log_tail(20)
            )
        });
    let (pa, pb) = (
        primary
            .table_checksum("accounts")
            .unwrap_or_else(|e| fail(e)),
        replica
            .table_checksum("accounts")
            .unwrap_or_else(|e| fail(e)),
    );
    assert_eq!(pa, pb, "checksums differ after the move");
    let rows = primary.replication_status().unwrap_or_else(|e| fail(e));
    assert!(
        rows.iter().any(|r| r.state == "streaming"),
        "the standby is not streaming from the moved primary: {rows:?}"
    );
    eprintln!(
        "standby followed {name}: {} -> {moved_ip}, checksum {pa} on both sites",
        primary_ip
    );

    // Site B exports a different kind of service under the same name: its export is
    // in conflict (site A's is older) and the name keeps resolving to site A's primary.
    let b = kube.cluster_client(B);
    let services_b: Api<Service> = Api::namespaced(b.clone(), NS);
    let exports_b: Api<ServiceExport> = Api::namespaced(b.clone(), NS);
    let clusterip: Service = object(json!({
        "metadata": {"name": SVC, "namespace": NS},
        "spec": {"clusterIP": "10.102.0.50", "ports": [{"name": "postgresql", "port": 5432, "protocol": "TCP"}]}
    }));
    kube.block_on(services_b.create(&pp, &clusterip))
        .expect("create site-b's Service");
    kube.block_on(exports_b.create(&pp, &ServiceExport::new(SVC, Default::default())))
        .expect("create site-b's ServiceExport");
    let condition = kube
        .wait_for("site-b's ServiceExport to carry Conflict=True", WAIT, |k| {
            let export = k.block_on(exports_b.get(SVC)).map_err(|e| e.to_string())?;
            let conflict = export
                .status
                .iter()
                .flat_map(|s| s.conditions.iter())
                .find(|c| c.type_ == CONDITION_CONFLICT)
                .cloned()
                .ok_or("no Conflict condition")?;
            match conflict.status.as_str() {
                "True" => Ok(conflict),
                _ => Err(format!("{conflict:?}")),
            }
        })
        .unwrap_or_else(|e| fail(e));
    assert!(
        condition.message.contains("site-a"),
        "the condition names the winning cluster: {condition:?}"
    );
    eprintln!(
        "site-b's export: {}: {}",
        condition.reason, condition.message
    );
    wait_answer(&mut kube, moved_ip);
    primary
        .sql("INSERT INTO accounts VALUES (3001, 'after-conflict', 1)")
        .unwrap_or_else(|e| fail(e));
    let lsn = primary.current_lsn().unwrap_or_else(|e| fail(e));
    replica
        .wait_replayed(&lsn, WAIT)
        .unwrap_or_else(|e| fail(e));
}
