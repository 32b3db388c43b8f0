//! The server on 127.0.0.1 port 0, asked real DNS messages over UDP and TCP.

use std::collections::BTreeSet;
use std::str::FromStr;

use super::*;
use crate::dns::zone::{build_zone, ZoneInput};
use causeway_crds::ServiceImport;
use hickory_server::proto::op::{Message, Query};
use hickory_server::proto::rr::{Name, RData, RecordType};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const WAIT: Duration = Duration::from_secs(5);
/// Endpoints of the headless service `big`: far more than 512 or 1232 bytes of answers.
const BIG: usize = 200;

fn import(name: &str, type_: &str, ports: serde_json::Value) -> ServiceImport {
    serde_json::from_value(json!({
        "apiVersion": "multicluster.x-k8s.io/v1alpha1",
        "kind": "ServiceImport",
        "metadata": {"name": name, "namespace": "prod"},
        "spec": {"type": type_, "ports": ports},
    }))
    .expect("a ServiceImport")
}

fn slice(svc: &str, cluster: &str, family: &str, endpoints: serde_json::Value) -> EndpointSlice {
    serde_json::from_value(json!({
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": format!("{svc}-{cluster}-{family}"),
            "namespace": "prod",
            "labels": {
                "multicluster.kubernetes.io/service-name": svc,
                "multicluster.kubernetes.io/source-cluster": cluster,
                "endpointslice.kubernetes.io/managed-by": "causeway.dev",
            },
        },
        "addressType": family,
        "endpoints": endpoints,
        "ports": [{"name": "pg", "port": 5432, "protocol": "TCP"}],
    }))
    .expect("an EndpointSlice")
}

fn zone(db_ip: &str) -> Zone {
    let imports = vec![
        import("db", "ClusterSetIP", json!([{"name": "pg", "port": 5432}])),
        import("pg", "Headless", json!([{"name": "pg", "port": 5432}])),
        import("big", "Headless", json!([])),
    ];
    let big: Vec<serde_json::Value> = (0..BIG)
        .map(|i| json!({"addresses": [format!("10.9.{}.{}", i / 250, i % 250 + 1)]}))
        .collect();
    let slices = vec![
        slice("db", "site-a", "IPv4", json!([{"addresses": [db_ip]}])),
        slice(
            "db",
            "site-a",
            "IPv6",
            json!([{"addresses": ["fd00:101::10"]}]),
        ),
        slice(
            "pg",
            "site-a",
            "IPv4",
            json!([{"addresses": ["10.1.0.5"], "hostname": "pg-0"}]),
        ),
        slice("big", "site-a", "IPv4", json!(big)),
    ];
    let (zone, problems) = build_zone(&ZoneInput {
        cluster_id: "site-a",
        imports: &imports,
        slices: &slices,
        healthy: &BTreeSet::new(),
        ttl: Duration::from_secs(5),
        serial: 1,
    });
    assert!(problems.is_empty(), "{problems:?}");
    zone
}

async fn start(zone: Option<Zone>) -> (DnsServer, SharedZone) {
    let shared: SharedZone = Arc::new(ArcSwapOption::from(zone.map(Arc::new)));
    let server = DnsServer::bind("127.0.0.1:0".parse().expect("an address"), shared.clone())
        .await
        .expect("bind 127.0.0.1:0");
    (server, shared)
}

fn query(name: &str, qtype: RecordType, edns: Option<u16>) -> Message {
    let mut message = Message::query();
    message.metadata.id = 4242;
    message.add_query(Query::query(Name::from_str(name).expect("a name"), qtype));
    if let Some(size) = edns {
        let mut e = Edns::new();
        e.set_max_payload(size);
        message.set_edns(e);
    }
    message
}

async fn udp(server: SocketAddr, message: &Message) -> Message {
    let socket = UdpSocket::bind("127.0.0.1:0").await.expect("bind a client");
    let bytes = message.to_vec().expect("encode");
    socket.send_to(&bytes, server).await.expect("send");
    let mut buf = vec![0u8; 65535];
    let n = tokio::time::timeout(WAIT, socket.recv(&mut buf))
        .await
        .expect("an answer in time")
        .expect("receive");
    Message::from_vec(&buf[..n]).expect("a DNS message")
}

async fn tcp(server: SocketAddr, message: &Message) -> Message {
    let stream = TcpStream::connect(server).await.expect("connect");
    ask_on(stream, message)
        .await
        .expect("an answer, not a closed connection")
}

fn data(message: &Message) -> Vec<String> {
    let mut out: Vec<String> = message.answers.iter().map(|r| r.data.to_string()).collect();
    out.sort();
    out
}

fn authority_is_soa(message: &Message) -> bool {
    matches!(message.authorities.as_slice(), [soa] if soa.record_type() == RecordType::SOA)
}

#[tokio::test]
async fn answers_over_udp_and_tcp() {
    let (server, _zone) = start(Some(zone("10.101.0.10"))).await;
    let addr = server.local_addr();
    for over_tcp in [false, true] {
        let ask = |name: &str, qtype| {
            let message = query(name, qtype, None);
            async move {
                if over_tcp {
                    tcp(addr, &message).await
                } else {
                    udp(addr, &message).await
                }
            }
        };
        let how = if over_tcp { "tcp" } else { "udp" };
        let a = ask("db.prod.svc.clusterset.local.", RecordType::A).await;
        assert_eq!(a.metadata.id, 4242, "{how}");
        assert_eq!(a.metadata.response_code, ResponseCode::NoError, "{how}");
        assert!(a.metadata.authoritative, "{how}: AA");
        assert!(!a.metadata.truncation, "{how}");
        assert_eq!(data(&a), vec!["10.101.0.10"], "{how}");
        assert_eq!(a.answers[0].ttl, 5, "{how}");

        let aaaa = ask("db.prod.svc.clusterset.local.", RecordType::AAAA).await;
        assert_eq!(data(&aaaa), vec!["fd00:101::10"], "{how}");

        let srv = ask("_pg._tcp.pg.prod.svc.clusterset.local.", RecordType::SRV).await;
        let [record] = srv.answers.as_slice() else {
            panic!("{how}: one SRV record, got {:?}", srv.answers);
        };
        let RData::SRV(srv) = &record.data else {
            panic!("{how}: SRV data, got {record}");
        };
        assert_eq!(
            (srv.priority, srv.weight, srv.port, srv.target.to_string()),
            (
                0,
                100,
                5432,
                "pg-0.site-a.pg.prod.svc.clusterset.local.".to_owned()
            ),
            "{how}"
        );

        let nx = ask("nope.prod.svc.clusterset.local.", RecordType::A).await;
        assert_eq!(nx.metadata.response_code, ResponseCode::NXDomain, "{how}");
        assert!(nx.metadata.authoritative, "{how}");
        assert!(
            nx.answers.is_empty() && authority_is_soa(&nx),
            "{how}: {nx:?}"
        );

        for (name, qtype) in [
            ("db.prod.svc.clusterset.local.", RecordType::TXT),
            ("prod.svc.clusterset.local.", RecordType::A),
        ] {
            let nodata = ask(name, qtype).await;
            assert_eq!(
                nodata.metadata.response_code,
                ResponseCode::NoError,
                "{how} {name}"
            );
            assert!(nodata.metadata.authoritative, "{how} {name}");
            assert!(
                nodata.answers.is_empty() && authority_is_soa(&nodata),
                "{how} {name}"
            );
        }

        let refused = ask("example.com.", RecordType::A).await;
        assert_eq!(
            refused.metadata.response_code,
            ResponseCode::Refused,
            "{how}"
        );
        assert!(!refused.metadata.authoritative, "{how}");
        assert!(refused.answers.is_empty(), "{how}");

        let version = ask("dns-version.clusterset.local.", RecordType::TXT).await;
        assert_eq!(data(&version), vec!["1.0.0"], "{how}");

        let case = ask("DB.prod.SVC.clusterset.LOCAL.", RecordType::A).await;
        assert_eq!(data(&case), vec!["10.101.0.10"], "{how}");
    }
    server.shutdown().await;
}

#[tokio::test]
async fn edns_is_echoed_and_large_answers_need_tcp() {
    let (server, _zone) = start(Some(zone("10.101.0.10"))).await;
    let addr = server.local_addr();
    let name = "big.prod.svc.clusterset.local.";

    let plain = udp(addr, &query(name, RecordType::A, None)).await;
    assert!(plain.metadata.truncation, "TC without EDNS");
    assert!(plain.edns.is_none(), "no EDNS asked, none answered");
    assert!(plain.answers.len() < BIG);

    let with_edns = udp(addr, &query(name, RecordType::A, Some(4096))).await;
    let edns = with_edns.edns.as_ref().expect("EDNS echoed");
    assert_eq!(edns.max_payload(), MAX_UDP_PAYLOAD);
    assert!(
        with_edns.metadata.truncation,
        "still too large for {MAX_UDP_PAYLOAD} bytes"
    );
    assert!(with_edns.answers.len() > plain.answers.len());

    let full = tcp(addr, &query(name, RecordType::A, None)).await;
    assert!(!full.metadata.truncation);
    assert_eq!(full.answers.len(), BIG);

    let small = udp(
        addr,
        &query("db.prod.svc.clusterset.local.", RecordType::A, Some(1232)),
    )
    .await;
    assert!(small.edns.is_some() && !small.metadata.truncation);
    server.shutdown().await;
}

#[tokio::test]
async fn other_opcodes_classes_and_edns_versions_are_refused_as_the_rfcs_say() {
    let (server, _zone) = start(Some(zone("10.101.0.10"))).await;
    let addr = server.local_addr();
    let name = "db.prod.svc.clusterset.local.";

    let mut notify = query(name, RecordType::SOA, None);
    notify.metadata.op_code = OpCode::Notify;
    assert_eq!(
        udp(addr, &notify).await.metadata.response_code,
        ResponseCode::NotImp
    );

    let mut chaos = Message::query();
    chaos.add_query({
        let mut q = Query::query(Name::from_str(name).expect("a name"), RecordType::A);
        q.set_query_class(DNSClass::CH);
        q
    });
    assert_eq!(
        udp(addr, &chaos).await.metadata.response_code,
        ResponseCode::Refused
    );

    let mut future_edns = query(name, RecordType::A, Some(1232));
    if let Some(edns) = future_edns.edns.as_mut() {
        edns.set_version(1);
    }
    // Code 16 reads back as BADSIG, its TSIG name: compare the number.
    let code = udp(addr, &future_edns).await.metadata.response_code;
    assert_eq!(u16::from(code), u16::from(ResponseCode::BADVERS), "{code}");

    let mut two = query(name, RecordType::A, None);
    two.add_query(Query::query(
        Name::from_str(name).expect("a name"),
        RecordType::AAAA,
    ));
    assert_eq!(
        udp(addr, &two).await.metadata.response_code,
        ResponseCode::FormErr
    );
    server.shutdown().await;
}

#[tokio::test]
async fn a_swapped_zone_answers_the_next_query_and_none_is_servfail() {
    let (server, shared) = start(None).await;
    let addr = server.local_addr();
    let name = "db.prod.svc.clusterset.local.";
    let before = udp(addr, &query(name, RecordType::A, None)).await;
    assert_eq!(before.metadata.response_code, ResponseCode::ServFail);

    shared.store(Some(Arc::new(zone("10.101.0.10"))));
    assert_eq!(
        data(&udp(addr, &query(name, RecordType::A, None)).await),
        vec!["10.101.0.10"]
    );
    shared.store(Some(Arc::new(zone("10.101.0.11"))));
    assert_eq!(
        data(&tcp(addr, &query(name, RecordType::A, None)).await),
        vec!["10.101.0.11"]
    );
    server.shutdown().await;
}

#[tokio::test]
async fn answers_rotate_so_clients_spread_over_endpoints() {
    let (server, _zone) = start(Some(zone("10.101.0.10"))).await;
    let addr = server.local_addr();
    let mut first = BTreeSet::new();
    for _ in 0..4 {
        let answer = tcp(
            addr,
            &query("big.prod.svc.clusterset.local.", RecordType::A, None),
        )
        .await;
        first.insert(answer.answers[0].data.to_string());
    }
    assert!(
        first.len() > 1,
        "the same first address every time: {first:?}"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn a_taken_port_is_an_error_with_the_fix() {
    let (server, _zone) = start(None).await;
    let taken = server.local_addr();
    let error = DnsServer::bind(taken, Arc::new(ArcSwapOption::empty()))
        .await
        .expect_err("the port is taken");
    let text = error.to_string();
    assert!(
        text.contains(&taken.to_string()) && text.contains("--dns-listen"),
        "{text}"
    );
    server.shutdown().await;
}

/// Opens a TCP connection from `source` (any 127/8 address is this host's).
async fn connect_from(source: [u8; 4], server: SocketAddr) -> io::Result<TcpStream> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind(SocketAddr::from((source, 0)))?;
    socket.connect(server).await
}

/// Sends one query on `stream`: `Some(answer)`, or `None` when the server closed it.
async fn ask_on(mut stream: TcpStream, message: &Message) -> Option<Message> {
    let bytes = message.to_vec().expect("encode");
    let len = u16::try_from(bytes.len()).expect("a small query");
    let exchange = async {
        stream.write_all(&len.to_be_bytes()).await.ok()?;
        stream.write_all(&bytes).await.ok()?;
        let mut len = [0u8; 2];
        stream.read_exact(&mut len).await.ok()?;
        let mut buf = vec![0u8; usize::from(u16::from_be_bytes(len))];
        stream.read_exact(&mut buf).await.ok()?;
        Message::from_vec(&buf).ok()
    };
    tokio::time::timeout(WAIT, exchange)
        .await
        .expect("an answer or a close in time")
}

#[tokio::test]
async fn tcp_clients_are_held_to_their_share_and_the_rest_are_still_answered() {
    let (server, _zone) = start(Some(zone("10.1.0.10"))).await;
    let addr = server.local_addr();
    let q = query("db.prod.svc.clusterset.local.", RecordType::A, None);
    let answered = |streams: Vec<TcpStream>| {
        let q = q.clone();
        async move {
            let asks = streams.into_iter().map(|s| {
                let q = q.clone();
                async move { ask_on(s, &q).await }
            });
            futures::future::join_all(asks)
                .await
                .into_iter()
                .flatten()
                .filter(|m| data(m) == ["10.1.0.10"])
                .count()
        }
    };

    // One client opens 60 connections and holds them.
    let mut hog = Vec::new();
    for _ in 0..60 {
        hog.push(connect_from([127, 0, 0, 1], addr).await.expect("connect"));
    }
    // Others, 10 addresses with 16 each: more than the server holds in all.
    let mut crowd = Vec::new();
    for host in 3..13u8 {
        for _ in 0..16 {
            crowd.push(
                connect_from([127, 0, 0, host], addr)
                    .await
                    .expect("connect"),
            );
        }
    }
    // The first client's connections were accepted first and are still held, so the
    // crowd has what is left of the total.
    let crowd_served = answered(crowd).await;
    assert_eq!(
        crowd_served,
        front::MAX_CONNECTIONS - front::MAX_PER_SOURCE,
        "of 160 from 10 addresses"
    );
    let hog_served = answered(hog).await;
    assert_eq!(hog_served, front::MAX_PER_SOURCE, "of 60 from one address");
    // Once they go, a new client is answered over TCP, and UDP never stopped.
    let fresh = connect_from([127, 0, 0, 2], addr).await.expect("connect");
    assert_eq!(answered(vec![fresh]).await, 1);
    assert_eq!(data(&udp(addr, &q).await), ["10.1.0.10"]);
    server.shutdown().await;
}
