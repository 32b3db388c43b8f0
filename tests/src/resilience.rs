//! The resilience scenarios of issue #8, each on a world of its own: a gateway crash and a
//! graceful hand-over, a synchronous PostgreSQL standby across a crash, a key rotation and
//! a roaming gateway. Each returns its [`Figure`]; the `failover` e2e tests assert them and
//! `causeway-resilience` prints them as one table.
//!
//! Every world is two sites of [`KubeWorld`]; traffic is a [`UdpProbe`] (a datagram every
//! 10 ms, echoed) for the gap and a paced TCP [`Stream`] for "no connection dropped".

use crate::fixtures::{pod_addr, wait_kube_reachable};
use crate::harness::kube::{Component, KubeWorld, CANDIDATES, CLUSTER_NAMESPACE, READY_TIMEOUT};
use crate::harness::postgres::Postgres;
use crate::harness::traffic::{Echo, ProbeReport, Stream, UdpProbe};
use crate::harness::HarnessError;
use causeway_crds::ClusterEndpoint;
use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

/// Site A (the one whose gateway fails, rotates) and site B.
pub const A: usize = 0;
/// Site B.
pub const B: usize = 1;
/// The bound on a crash's gap.
pub const CRASH_GAP: Duration = Duration::from_secs(1);
/// The bound on a graceful hand-over's gap.
pub const GRACEFUL_GAP: Duration = Duration::from_millis(200);
/// The bound on a key rotation's gap.
pub const ROTATION_GAP: Duration = Duration::from_secs(1);
/// The bound on the time until a roaming gateway's traffic resumes.
pub const ROAMING_GAP: Duration = Duration::from_secs(2);
/// How long any one stage of a scenario may take (far above what it needs).
pub const STAGE: Duration = Duration::from_secs(30);
/// How long no commit may be acknowledged for the primary to count as stalled (its
/// synchronous standby cut off); commits are sent every 5 ms.
const STALL: Duration = Duration::from_millis(500);
/// Echoes the probe must get after an event before the scenario counts as recovered (1 s).
const RECOVERED: u64 = 100;
/// Chunks the TCP stream sends at most per second (16 KiB each).
const STREAM_PACE: Duration = Duration::from_millis(20);
/// How long one read or write of the TCP stream may wait: well above any gap TCP rides out.
const STREAM_TIMEOUT: Duration = Duration::from_secs(15);

/// One scenario's figures.
#[derive(Debug, Clone)]
pub struct Figure {
    /// What happened.
    pub scenario: &'static str,
    /// The largest gap the probe saw.
    pub gap: Duration,
    /// The bound the issue sets on it.
    pub bound: Duration,
    /// Rows the client saw committed and rows present on the standby, where rows were written.
    pub rows: Option<(u64, u64)>,
    /// Connections (TCP stream, replication session) that broke or reconnected.
    pub dropped: u64,
    /// The probe's report and anything else worth reading.
    pub detail: String,
}

impl Figure {
    /// `Err` naming each figure that missed its bound.
    pub fn check(&self) -> Result<(), String> {
        let mut missed = Vec::new();
        if self.gap >= self.bound {
            missed.push(format!("gap {:?} is not under {:?}", self.gap, self.bound));
        }
        if let Some((acked, present)) = self.rows {
            if acked != present || acked == 0 {
                missed.push(format!(
                    "{acked} rows acknowledged but {present} present on the standby"
                ));
            }
        }
        if self.dropped > 0 {
            missed.push(format!("{} connections dropped", self.dropped));
        }
        match missed.is_empty() {
            true => Ok(()),
            false => Err(format!(
                "{}: {} ({})",
                self.scenario,
                missed.join("; "),
                self.detail
            )),
        }
    }
}

impl fmt::Display for Figure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let rows = self
            .rows
            .map_or_else(|| "-".to_string(), |(a, p)| format!("{a}/{p}"));
        let verdict = if self.check().is_ok() { "ok" } else { "MISSED" };
        write!(
            f,
            "{:<34} {:>9.0?} {:>7} {:>13} {:>8}  {verdict}",
            self.scenario,
            self.gap,
            format!("<{:?}", self.bound),
            rows,
            self.dropped,
        )
    }
}

/// The table's header line, matching [`Figure`]'s `Display`.
pub fn table_header() -> String {
    format!(
        "{:<34} {:>9} {:>7} {:>13} {:>8}  verdict",
        "scenario", "gap", "bound", "rows ack/pres", "dropped"
    )
}

/// Waits until the probe has `more` echoes beyond `from`.
fn wait_echoes(
    kube: &mut KubeWorld,
    probe: &UdpProbe,
    more: u64,
    what: &str,
) -> Result<u64, HarnessError> {
    let from = probe.received();
    kube.wait_for(what, STAGE, |_| match probe.received() {
        n if n >= from + more => Ok(n),
        n => Err(format!("{} echoes since", n - from)),
    })
}

/// Waits until the stream has verified `more` chunks beyond what it has now.
fn wait_chunks(
    kube: &mut KubeWorld,
    stream: &Stream,
    more: u64,
    what: &str,
) -> Result<u64, HarnessError> {
    let from = stream.chunks();
    kube.wait_for(what, STAGE, |_| match stream.chunks() {
        n if n >= from + more => Ok(n),
        n if stream.ended() => Err(format!("the stream ended after {n} chunks")),
        n => Err(format!("{n} chunks")),
    })
}

/// Waits until site `i`'s active gateway is candidate `k`.
fn wait_active(kube: &mut KubeWorld, i: usize, k: usize) -> Result<(), HarnessError> {
    let what = format!(
        "{} to take the gateway Lease over",
        kube.spec(i).candidate(k).node_name()
    );
    kube.wait_for(&what, STAGE, |w| match w.try_active_gateway(i) {
        Ok(Some(now)) if now == k => Ok(()),
        other => Err(format!("active candidate {other:?}")),
    })
}

/// A world of two sites with echo servers in both pods, a probe and a stream from A to B.
struct Traffic {
    probe: UdpProbe,
    stream: Stream,
    _echo: Vec<Echo>,
}

fn traffic(kube: &mut KubeWorld, from: usize, to: usize) -> Result<Traffic, HarnessError> {
    let echo = [A, B]
        .iter()
        .map(|&i| {
            Echo::start(&kube.site(i).pod, pod_addr(kube.site(i)))
                .map_err(crate::harness::io_context("echo server in a pod"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    wait_kube_reachable(kube, from, to, STAGE)?;
    wait_kube_reachable(kube, to, from, STAGE)?;
    let stream = Stream::start_paced(
        &kube.site(A).pod,
        pod_addr(kube.site(B)),
        STREAM_TIMEOUT,
        STREAM_PACE,
    )
    .map_err(crate::harness::io_context("TCP stream from A to B"))?;
    let probe = UdpProbe::start(&kube.site(from).pod, pod_addr(kube.site(to)))
        .map_err(crate::harness::io_context("UDP probe"))?;
    wait_echoes(kube, &probe, RECOVERED, "the probe to get its first echoes")?;
    wait_chunks(kube, &stream, 10, "the TCP stream to carry data")?;
    Ok(Traffic {
        probe,
        stream,
        _echo: echo,
    })
}

/// After an event: waits until probe and stream carry on, then stops both.
fn recovered(
    kube: &mut KubeWorld,
    t: Traffic,
    scenario: &'static str,
    bound: Duration,
) -> Result<(Figure, ProbeReport), HarnessError> {
    wait_echoes(kube, &t.probe, RECOVERED, "the probe's echoes to resume")?;
    wait_chunks(kube, &t.stream, 10, "the TCP stream to carry on")?;
    let report = t.probe.finish();
    let stream = t.stream.finish();
    let dropped = u64::from(stream.is_err());
    let mut detail = format!("probe: {report}");
    match stream {
        Ok(n) => detail += &format!("; TCP stream: {n} chunks verified, unbroken"),
        Err(e) => detail += &format!("; TCP stream broke: {e}"),
    }
    let figure = Figure {
        scenario,
        gap: report.largest_gap,
        bound,
        rows: None,
        dropped,
        detail,
    };
    eprintln!("{scenario}: {}", figure.detail);
    Ok((figure, report))
}

fn fail_with_logs(kube: &KubeWorld, figure: Figure) -> Figure {
    if figure.check().is_err() {
        eprintln!("{}", kube.logs());
    }
    figure
}

/// Site A's active gateway is killed with SIGKILL mid-traffic; the standby takes over.
pub fn gateway_crash() -> Result<Figure, HarnessError> {
    let mut kube = KubeWorld::start(2)?;
    let t = traffic(&mut kube, A, B)?;
    let old = kube
        .active_gateway(A)
        .ok_or_else(|| HarnessError::Topology("site-a has no active gateway".into()))?;
    let killed = Instant::now();
    kube.kill_gateway(A, old)?;
    wait_active(&mut kube, A, (old + 1) % CANDIDATES)?;
    eprintln!(
        "gateway crash: the standby holds the Lease {:?} after the kill",
        killed.elapsed()
    );
    let (figure, _) = recovered(&mut kube, t, "gateway crash (kill -9)", CRASH_GAP)?;
    Ok(fail_with_logs(&kube, figure))
}

/// Site A's active gateway is stopped with SIGTERM: it resigns, drains, and hands over.
pub fn graceful_handover() -> Result<Figure, HarnessError> {
    let mut kube = KubeWorld::start(2)?;
    let t = traffic(&mut kube, A, B)?;
    let old = kube
        .active_gateway(A)
        .ok_or_else(|| HarnessError::Topology("site-a has no active gateway".into()))?;
    let status = kube.stop_gateway(A, old)?;
    if !status.is_some_and(|s| s.success()) {
        return Err(HarnessError::Topology(format!(
            "the leaving gateway exited {status:?}, not 0"
        )));
    }
    wait_active(&mut kube, A, (old + 1) % CANDIDATES)?;
    let (figure, _) = recovered(&mut kube, t, "graceful hand-over (SIGTERM)", GRACEFUL_GAP)?;
    Ok(fail_with_logs(&kube, figure))
}

/// How the standby in [`standby_across_a_crash`] replicates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replication {
    /// `synchronous_standby_names` names the standby: a commit waits for it.
    Synchronous,
    /// The default streaming standby: commits do not wait, so losing site A loses
    /// what had not crossed yet. The scenario's check must fail on it.
    Asynchronous,
}

/// A PostgreSQL primary in site A with a synchronous standby in site B under a continuous
/// write load; site A's active gateway is killed mid-load, and the replication session
/// must not reconnect. Then site A is lost (its other gateway, then the primary, killed)
/// and the standby promoted: every row the client saw committed must be on it.
pub fn synchronous_standby_across_a_crash() -> Result<Figure, HarnessError> {
    standby_across_a_crash(Replication::Synchronous)
}

/// [`synchronous_standby_across_a_crash`] with the standby replicating as `replication` says.
pub fn standby_across_a_crash(replication: Replication) -> Result<Figure, HarnessError> {
    let mut kube = KubeWorld::start(2)?;
    let echo = Echo::start(&kube.site(B).pod, pod_addr(kube.site(B)))
        .map_err(crate::harness::io_context("echo server in site-b's pod"))?;
    wait_kube_reachable(&mut kube, A, B, STAGE)?;
    let mut primary = Postgres::start_primary(
        &kube.site(A).pod,
        kube.spec(A).pod_ip().into(),
        kube.site(A).dir(),
    )?;
    let standby = Postgres::start_replica(
        &kube.site(B).pod,
        kube.spec(B).pod_ip().into(),
        &primary.host_port(),
        kube.site(B).dir(),
    )?;
    if replication == Replication::Synchronous {
        primary.require_synchronous_standby(&standby, STAGE)?;
    }
    primary.sql("CREATE TABLE acked (id bigint PRIMARY KEY, at timestamptz DEFAULT now())")?;
    let session = primary.replication_session(&standby)?;
    let probe = UdpProbe::start(&kube.site(A).pod, pod_addr(kube.site(B)))
        .map_err(crate::harness::io_context("UDP probe"))?;
    let load = primary.start_write_load("acked")?;
    let before = 200;
    kube.wait_for(
        "the write load to commit its first rows",
        STAGE,
        |_| match load.acknowledged() {
            n if n >= before => Ok(()),
            _ if load.ended() => Err("the write load ended".to_string()),
            n => Err(format!("{n} rows")),
        },
    )?;
    let old = kube
        .active_gateway(A)
        .ok_or_else(|| HarnessError::Topology("site-a has no active gateway".into()))?;
    kube.kill_gateway(A, old)?;
    let at_kill = load.acknowledged();
    wait_active(&mut kube, A, (old + 1) % CANDIDATES)?;
    kube.wait_for(
        "the write load to commit rows after the takeover",
        STAGE,
        |_| match load.acknowledged() {
            n if n >= at_kill + 200 => Ok(()),
            _ if load.ended() => Err("the write load ended".to_string()),
            n => Err(format!("{} rows since the kill", n - at_kill)),
        },
    )?;
    wait_echoes(&mut kube, &probe, RECOVERED, "the probe's echoes to resume")?;
    let after = primary.replication_session(&standby)?;
    let report = probe.finish();
    drop(echo);

    // Zero RPO, proven the hard way: site A is lost. Its other gateway dies too, so the
    // standby hears nothing more; a synchronous primary stops acknowledging commits
    // (asynchronous replication would go on acknowledging, and fail here); then the
    // primary crashes and the standby is promoted. Every commit the client saw
    // acknowledged must be on the promoted standby - nothing is waited for or replayed
    // from the dead primary.
    let new = (old + 1) % CANDIDATES;
    kube.kill_gateway(A, new)?;
    let cut = load.acknowledged();
    let mut last = (cut, Instant::now());
    // Either commits stop (synchronous), or more than 100 go on being acknowledged with
    // nowhere to replicate to: then the rows check below must find them missing.
    let stalled = kube.wait_for(
        "commits to stop being acknowledged once the standby is cut off",
        STAGE,
        |_| {
            let now = load.acknowledged();
            if now != last.0 {
                last = (now, Instant::now());
            }
            match last.1.elapsed() {
                quiet if quiet >= STALL => Ok(now),
                _ if now > cut + 100 => Ok(now),
                _ => Err(format!("{} commits since the cut", now - cut)),
            }
        },
    )?;
    primary.crash()?;
    let (acked, load_result) = load.finish();
    standby.promote()?;
    let top = acked.last().copied().unwrap_or(0);
    let contiguous = acked.iter().copied().eq(1..=top);
    let present: u64 = standby
        .sql(&format!(
            "SELECT count(*) FROM acked WHERE id BETWEEN 1 AND {top}"
        ))?
        .parse()
        .map_err(|_| HarnessError::Topology("count(*) is not a number".into()))?;
    // The write stall across the gateway failover, as the database saw it: each row's
    // `at` is its transaction's start, and the next one starts when the previous commit
    // returned, so the longest step between neighbours is the longest wait for a commit.
    let stall_ms = standby.sql(&format!(
        "SELECT coalesce(round(extract(epoch FROM max(gap)) * 1000), 0) FROM \
         (SELECT at - lag(at) OVER (ORDER BY id) AS gap FROM acked \
          WHERE id BETWEEN {} AND {}) steps",
        at_kill.saturating_sub(50).max(1),
        at_kill + 200
    ))?;
    let reconnected = session.is_none() || session != after;
    let mut detail = format!(
        "probe: {report}; write stall across the gateway failover {stall_ms} ms; {} rows acknowledged ({at_kill} before the gateway crash, {} while the standby was cut off), {present} present on the standby promoted after the primary crashed; replication session {} -> {}",
        acked.len(),
        acked.len().saturating_sub(cut),
        session.as_deref().unwrap_or("none"),
        after.as_deref().unwrap_or("none"),
    );
    // The primary's crash ends the load with an error; one before it is a failure.
    let load_failed_early = load_result.is_err() && acked.len() < stalled;
    if let Err(e) = &load_result {
        detail += &format!("; the write load ended: {e}");
    }
    if !contiguous {
        detail += "; acknowledged ids are not 1..n";
    }
    if stalled > cut + 100 {
        detail += &format!(
            "; {} commits acknowledged with the standby cut off: replication is not synchronous",
            stalled - cut
        );
    }
    let figure = Figure {
        scenario: match replication {
            Replication::Synchronous => "sync standby across a crash",
            Replication::Asynchronous => "async standby across a crash",
        },
        gap: report.largest_gap,
        bound: CRASH_GAP,
        rows: Some((acked.len() as u64, if contiguous { present } else { 0 })),
        dropped: u64::from(reconnected) + u64::from(load_failed_early),
        detail,
    };
    eprintln!("{}: {}", figure.scenario, figure.detail);
    // The asynchronous run is meant to miss; its logs would only bury the figures.
    match replication {
        Replication::Synchronous => Ok(fail_with_logs(&kube, figure)),
        Replication::Asynchronous => Ok(figure),
    }
}

/// Site A's active gateway's key Secret gets a new key mid-traffic.
pub fn key_rotation() -> Result<Figure, HarnessError> {
    let mut kube = KubeWorld::start(2)?;
    let t = traffic(&mut kube, A, B)?;
    let k = kube
        .active_gateway(A)
        .ok_or_else(|| HarnessError::Topology("site-a has no active gateway".into()))?;
    let node = kube.spec(A).candidate(k).node_name();
    let public = kube.rotate_gateway_key(A, k)?;
    let mirrors: ::kube::Api<ClusterEndpoint> =
        ::kube::Api::namespaced(kube.cluster_client(B), CLUSTER_NAMESPACE);
    let site_a = kube.spec(A).cluster_id();
    kube.wait_for(
        "site-b's mirror of site-a to list the rotated key",
        STAGE,
        |w| {
            let mirror = w
                .block_on(mirrors.get(&site_a))
                .map_err(|e| e.to_string())?;
            match mirror.spec.gateways.iter().find(|g| g.node_name == node) {
                Some(g) if g.public_key == public => Ok(()),
                Some(g) => Err(format!("still {}", g.public_key)),
                None => Err(format!("{node} not listed")),
            }
        },
    )?;
    let gateway = Component::Gateway(A, k);
    kube.wait_for(
        "the rotated gateway to retire its old key (every remote cluster switched)",
        STAGE,
        |w| match w.full_log(gateway).contains("the old one is retired") {
            true => Ok(()),
            false => Err("not yet".to_string()),
        },
    )?;
    let (figure, _) = recovered(&mut kube, t, "key rotation", ROTATION_GAP)?;
    Ok(fail_with_logs(&kube, figure))
}

/// Site B's active gateway's underlay address changes (it listens on the wildcard address);
/// site A must follow it from its authenticated packets, with nobody changing any object.
pub fn roaming() -> Result<Figure, HarnessError> {
    let mut kube = KubeWorld::new(2)?;
    for k in 0..CANDIDATES {
        kube.set_wildcard_listen(B, k);
    }
    for i in [A, B] {
        kube.start_site(i)?;
    }
    kube.wait_ready(READY_TIMEOUT)?;
    // The roaming side sends: its packets from the new address are what A learns it from.
    let t = traffic(&mut kube, B, A)?;
    let k = kube
        .active_gateway(B)
        .ok_or_else(|| HarnessError::Topology("site-b has no active gateway".into()))?;
    let from = kube.spec(B).candidate(k).underlay_ip();
    let to = Ipv4Addr::new(198, 18, 0, 200 + kube.spec(B).index() as u8);
    kube.move_underlay(B, k, from, to)?;
    let site_b = kube.spec(B).cluster_id();
    let endpoint = SocketAddr::new(to.into(), crate::harness::topology::GATEWAY_PORT).to_string();
    kube.wait_for(
        "site-a's active gateway to follow site-b's gateway to its new address",
        STAGE,
        |w| {
            w.active_gateway_metric(
                A,
                "causeway_peer_info",
                &[("remote_cluster", &site_b), ("endpoint", &endpoint)],
            )
            .map(drop)
            .map_err(|e| format!("still the old endpoint: {e}"))
        },
    )?;
    let (figure, _) = recovered(
        &mut kube,
        t,
        "roaming (underlay address moves)",
        ROAMING_GAP,
    )?;
    Ok(fail_with_logs(&kube, figure))
}

/// A scenario: builds its world, runs, and returns its figure.
pub type Scenario = fn() -> Result<Figure, HarnessError>;

/// Every scenario, by the name `causeway-resilience --only` takes.
pub const SCENARIOS: [(&str, Scenario); 5] = [
    ("crash", gateway_crash),
    ("graceful", graceful_handover),
    ("postgres", synchronous_standby_across_a_crash),
    ("rotation", key_rotation),
    ("roaming", roaming),
];
