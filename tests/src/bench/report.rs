//! What the benchmark measured, the ratios the issue asks for, the targets with
//! their PASS/MISS marks, and the printed tables. Pure: no I/O.

use serde::Serialize;

use super::iperf::IperfResult;
use super::stats::{difference, ratio, RttSummary};

/// Which datapath a configuration measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// iperf3 straight over the veth pair.
    RawVeth,
    /// Two `boringtun-cli` devices (the stock boringtun datapath).
    BoringtunCli,
    /// Two `causeway-gateway standalone` gateways.
    Causeway,
}

impl Kind {
    /// All configurations, in the order they are measured and printed.
    pub const ALL: [Kind; 3] = [Kind::RawVeth, Kind::BoringtunCli, Kind::Causeway];

    /// The column heading.
    pub fn label(self) -> &'static str {
        match self {
            Kind::RawVeth => "raw veth",
            Kind::BoringtunCli => "boringtun-cli",
            Kind::Causeway => "Causeway",
        }
    }
}

/// CPU used by the two tunnel processes during one iperf3 run, as % of one core.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CpuShare {
    /// The process in namespace A (iperf3 sender side).
    pub a_percent: f64,
    /// The process in namespace B (iperf3 receiver side).
    pub b_percent: f64,
    /// Both together.
    pub total_percent: f64,
}

/// One iperf3 run and the tunnel's CPU during it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StreamRun {
    /// What iperf3 measured.
    #[serde(flatten)]
    pub iperf: IperfResult,
    /// The tunnel processes' CPU (tunnel configurations only).
    pub tunnel_cpu: Option<CpuShare>,
}

/// Peak resident set size (VmHWM) of the two tunnel processes, in MiB.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RssPair {
    /// The process in namespace A.
    pub a_mib: f64,
    /// The process in namespace B.
    pub b_mib: f64,
}

impl RssPair {
    /// The larger of the two.
    pub fn max(&self) -> f64 {
        self.a_mib.max(self.b_mib)
    }
}

/// Everything measured for one configuration; `None` where a step failed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ConfigResult {
    /// Which configuration.
    pub kind: Kind,
    /// MTU of the interface the traffic entered (the veth, or the tunnel device).
    pub mtu: Option<u32>,
    /// Ping RTT, measured on an idle link before the iperf3 runs.
    pub rtt: Option<RttSummary>,
    /// Ping RTT with each request sent as soon as the previous reply came: what a chatty
    /// exchange (synchronous replication's commit round trips) sees, without the cost of
    /// waking idle CPUs that the spaced pings pay.
    pub rtt_back_to_back: Option<RttSummary>,
    /// `iperf3 -P 1`.
    pub one_stream: Option<StreamRun>,
    /// `iperf3 -P 4`.
    pub four_streams: Option<StreamRun>,
    /// Peak RSS of the tunnel processes after the runs (tunnel configurations only).
    pub peak_rss: Option<RssPair>,
    /// What went wrong, if anything.
    pub errors: Vec<String>,
}

impl ConfigResult {
    /// An empty result for `kind`.
    pub fn new(kind: Kind) -> ConfigResult {
        ConfigResult {
            kind,
            mtu: None,
            rtt: None,
            rtt_back_to_back: None,
            one_stream: None,
            four_streams: None,
            peak_rss: None,
            errors: Vec::new(),
        }
    }

    fn gbps(&self, four: bool) -> Option<f64> {
        self.run(four).map(|r| r.iperf.gbit_per_s)
    }

    fn retransmits(&self, four: bool) -> Option<f64> {
        self.run(four).map(|r| r.iperf.retransmits as f64)
    }

    fn cpu(&self, four: bool) -> Option<f64> {
        self.run(four)?.tunnel_cpu.as_ref().map(|c| c.total_percent)
    }

    fn run(&self, four: bool) -> Option<&StreamRun> {
        if four {
            self.four_streams.as_ref()
        } else {
            self.one_stream.as_ref()
        }
    }

    fn rtt_avg(&self) -> Option<f64> {
        self.rtt.as_ref().map(|r| r.avg_ms)
    }

    fn rtt_p99(&self) -> Option<f64> {
        self.rtt.as_ref().map(|r| r.p99_ms)
    }

    fn rtt_back_to_back(&self) -> Option<f64> {
        self.rtt_back_to_back.as_ref().map(|r| r.avg_ms)
    }
}

/// The three configurations, measured one after another on the same topology.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DatapathReport {
    /// iperf3 straight over the veth pair.
    pub raw_veth: ConfigResult,
    /// The stock boringtun device.
    pub boringtun_cli: ConfigResult,
    /// Causeway's gateways.
    pub causeway: ConfigResult,
}

impl DatapathReport {
    fn get(&self, kind: Kind) -> &ConfigResult {
        match kind {
            Kind::RawVeth => &self.raw_veth,
            Kind::BoringtunCli => &self.boringtun_cli,
            Kind::Causeway => &self.causeway,
        }
    }
}

/// Causeway divided by boringtun-cli (1.0 = the same; for throughput, higher is better).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct VsBoringtun {
    /// One-stream throughput ratio.
    pub one_stream_throughput: Option<f64>,
    /// Four-stream throughput ratio.
    pub four_stream_throughput: Option<f64>,
    /// One-stream retransmits ratio.
    pub one_stream_retransmits: Option<f64>,
    /// Four-stream retransmits ratio.
    pub four_stream_retransmits: Option<f64>,
    /// Average RTT ratio.
    pub rtt_avg: Option<f64>,
    /// p99 RTT ratio.
    pub rtt_p99: Option<f64>,
    /// Back-to-back average RTT ratio.
    pub rtt_back_to_back: Option<f64>,
    /// Tunnel CPU ratio during the one-stream run.
    pub one_stream_cpu: Option<f64>,
    /// Tunnel CPU ratio during the four-stream run.
    pub four_stream_cpu: Option<f64>,
    /// Peak RSS ratio (the larger of the two processes on each side).
    pub peak_rss: Option<f64>,
}

/// Causeway against the bare veth: throughput ratios and RTT added, in ms.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct VsRaw {
    /// One-stream throughput ratio.
    pub one_stream_throughput: Option<f64>,
    /// Four-stream throughput ratio.
    pub four_stream_throughput: Option<f64>,
    /// Average RTT minus raw veth's.
    pub added_rtt_avg_ms: Option<f64>,
    /// p99 RTT minus raw veth's.
    pub added_rtt_p99_ms: Option<f64>,
    /// Back-to-back average RTT minus raw veth's.
    pub added_rtt_back_to_back_ms: Option<f64>,
}

/// Causeway's figures as ratios, plus boringtun-cli's own added RTT for reference.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Comparison {
    /// Causeway / boringtun-cli.
    pub causeway_vs_boringtun_cli: VsBoringtun,
    /// Causeway against raw veth.
    pub causeway_vs_raw_veth: VsRaw,
    /// boringtun-cli against raw veth.
    pub boringtun_cli_vs_raw_veth: VsRaw,
}

/// Computes every ratio the table prints.
pub fn compare(report: &DatapathReport) -> Comparison {
    let raw = &report.raw_veth;
    let bt = &report.boringtun_cli;
    let cw = &report.causeway;
    let rss = |c: &ConfigResult| c.peak_rss.as_ref().map(RssPair::max);
    Comparison {
        causeway_vs_boringtun_cli: VsBoringtun {
            one_stream_throughput: ratio(cw.gbps(false), bt.gbps(false)),
            four_stream_throughput: ratio(cw.gbps(true), bt.gbps(true)),
            one_stream_retransmits: ratio(cw.retransmits(false), bt.retransmits(false)),
            four_stream_retransmits: ratio(cw.retransmits(true), bt.retransmits(true)),
            rtt_avg: ratio(cw.rtt_avg(), bt.rtt_avg()),
            rtt_p99: ratio(cw.rtt_p99(), bt.rtt_p99()),
            rtt_back_to_back: ratio(cw.rtt_back_to_back(), bt.rtt_back_to_back()),
            one_stream_cpu: ratio(cw.cpu(false), bt.cpu(false)),
            four_stream_cpu: ratio(cw.cpu(true), bt.cpu(true)),
            peak_rss: ratio(rss(cw), rss(bt)),
        },
        causeway_vs_raw_veth: vs_raw(cw, raw),
        boringtun_cli_vs_raw_veth: vs_raw(bt, raw),
    }
}

fn vs_raw(c: &ConfigResult, raw: &ConfigResult) -> VsRaw {
    VsRaw {
        one_stream_throughput: ratio(c.gbps(false), raw.gbps(false)),
        four_stream_throughput: ratio(c.gbps(true), raw.gbps(true)),
        added_rtt_avg_ms: difference(c.rtt_avg(), raw.rtt_avg()),
        added_rtt_p99_ms: difference(c.rtt_p99(), raw.rtt_p99()),
        added_rtt_back_to_back_ms: difference(c.rtt_back_to_back(), raw.rtt_back_to_back()),
    }
}

/// How a figure is held against its target.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "snake_case", tag = "op", content = "bound")]
pub enum Goal {
    /// value >= bound
    AtLeast(f64),
    /// value <= bound
    AtMost(f64),
    /// value < bound
    Below(f64),
}

impl Goal {
    /// Whether `value` meets the goal.
    pub fn met(self, value: f64) -> bool {
        match self {
            Goal::AtLeast(b) => value >= b,
            Goal::AtMost(b) => value <= b,
            Goal::Below(b) => value < b,
        }
    }

    fn describe(self, unit: &str) -> String {
        let (op, b) = match self {
            Goal::AtLeast(b) => (">=", b),
            Goal::AtMost(b) => ("<=", b),
            Goal::Below(b) => ("<", b),
        };
        if b == 0.0 && matches!(self, Goal::AtMost(_)) && unit.is_empty() {
            "= 0".to_string()
        } else if unit == "x" {
            format!("{op} {}x", num(b))
        } else if unit.is_empty() {
            format!("{op} {}", num(b))
        } else {
            format!("{op} {} {unit}", num(b))
        }
    }
}

/// One of the targets, the figure measured for it, and whether it was met.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Target {
    /// What is measured.
    pub figure: String,
    /// The measured value; `None` if it could not be measured.
    pub value: Option<f64>,
    /// Its unit (`x` for a ratio).
    pub unit: &'static str,
    /// The goal.
    pub goal: Goal,
    /// Whether the goal was met; `None` if there is no value.
    pub pass: Option<bool>,
}

impl Target {
    /// Holds `value` against `goal`.
    pub fn new(figure: &str, value: Option<f64>, unit: &'static str, goal: Goal) -> Target {
        Target {
            figure: figure.to_string(),
            value,
            unit,
            goal,
            pass: value.map(|v| goal.met(v)),
        }
    }

    /// `>= 8x: PASS`, `< 1 s: MISS`, or `... : n/a` when unmeasured.
    pub fn mark(&self) -> String {
        let verdict = match self.pass {
            Some(true) => "PASS",
            Some(false) => "MISS",
            None => "n/a",
        };
        format!("{}: {verdict}", self.goal.describe(self.unit))
    }
}

/// The datapath targets: 8x boringtun-cli both ways, RTT added no more than 0.1 ms.
pub fn datapath_targets(c: &Comparison) -> [Target; 3] {
    let bt = &c.causeway_vs_boringtun_cli;
    [
        Target::new(
            "1-stream throughput vs boringtun-cli",
            bt.one_stream_throughput,
            "x",
            Goal::AtLeast(8.0),
        ),
        Target::new(
            "4-stream throughput vs boringtun-cli",
            bt.four_stream_throughput,
            "x",
            Goal::AtLeast(8.0),
        ),
        Target::new(
            "RTT added over raw veth (avg)",
            c.causeway_vs_raw_veth.added_rtt_avg_ms,
            "ms",
            Goal::AtMost(0.1),
        ),
    ]
}

/// Peak RSS of one gateway with 100 peers configured and idle.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct IdleMemory {
    /// Peers the gateway listed in /metrics when measured.
    pub peers: usize,
    /// VmHWM, MiB.
    pub peak_rss_mib: f64,
    /// VmRSS at the same moment, MiB.
    pub rss_mib: f64,
    /// From spawn until /metrics listed every peer.
    pub settle_seconds: f64,
}

/// How fast a gateway handshakes with 100 peers from a cold start.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Handshakes {
    /// Peers that completed a handshake.
    pub peers: usize,
    /// From gateway spawn until /metrics showed a handshake with every peer.
    pub seconds: f64,
    /// From gateway spawn until the last simulated peer sent its handshake response.
    pub last_response_seconds: Option<f64>,
    /// VmHWM once all sessions are up, MiB.
    pub peak_rss_mib_established: Option<f64>,
}

/// Reconciling many remote CIDRs into kernel routes through the gateway's netlink layer.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RouteReconcile {
    /// Routes desired.
    pub routes: usize,
    /// Wall time of the first reconcile (empty table to all routes).
    pub seconds: f64,
    /// Netlink writes the first reconcile made.
    pub writes: u64,
    /// Routes carrying Causeway's protocol in the kernel afterwards.
    pub kernel_routes: usize,
    /// Wall time of the following reconcile with nothing to change.
    pub noop_seconds: f64,
    /// Netlink writes the no-op reconcile made (must be 0).
    pub noop_writes: u64,
}

/// The scale figures; `None` where a part failed.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ScaleReport {
    /// Memory with 100 idle peers.
    pub idle_memory: Option<IdleMemory>,
    /// Time to 100 handshakes.
    pub handshakes: Option<Handshakes>,
    /// Time to reconcile 10,000 routes.
    pub routes: Option<RouteReconcile>,
    /// What went wrong, if anything.
    pub errors: Vec<String>,
}

/// The scale targets.
pub fn scale_targets(s: &ScaleReport) -> [Target; 4] {
    [
        Target::new(
            "peak RSS, 100 idle peers",
            s.idle_memory.as_ref().map(|m| m.peak_rss_mib),
            "MiB",
            Goal::AtMost(30.0),
        ),
        Target::new(
            "time to all 100 handshakes",
            s.handshakes.as_ref().map(|h| h.seconds),
            "s",
            Goal::Below(1.0),
        ),
        Target::new(
            "reconcile 10,000 routes",
            s.routes.as_ref().map(|r| r.seconds),
            "s",
            Goal::Below(1.0),
        ),
        Target::new(
            "netlink writes on the following no-op reconcile",
            s.routes.as_ref().map(|r| r.noop_writes as f64),
            "",
            Goal::AtMost(0.0),
        ),
    ]
}

/// Renders rows as aligned columns: the first left-aligned, the rest right-aligned.
pub fn render_table(rows: &[Vec<String>]) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (c, cell) in row.iter().enumerate() {
            if c == 0 {
                line += &format!("{cell:<w$}", w = widths[0]);
            } else {
                line += &format!("  {cell:>w$}", w = widths[c]);
            }
        }
        out += line.trim_end();
        out.push('\n');
    }
    out
}

/// A number without needless decimals: 8 -> "8", 0.1 -> "0.1".
fn num(v: f64) -> String {
    let s = format!("{v:.3}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    s.to_string()
}

const NONE: &str = "-";

fn opt(v: Option<f64>, f: impl Fn(f64) -> String) -> String {
    v.map_or_else(|| NONE.to_string(), f)
}

fn gbps(v: f64) -> String {
    format!("{v:.2} Gbit/s")
}

fn ms(v: f64) -> String {
    format!("{v:.3} ms")
}

fn times(v: f64) -> String {
    format!("{v:.2}x")
}

fn added_ms(v: f64) -> String {
    format!("{v:+.3} ms")
}

/// The datapath table: one row per figure, one column per configuration, then the ratios.
pub fn datapath_table(report: &DatapathReport, c: &Comparison, seconds: u32) -> String {
    let bt = &c.causeway_vs_boringtun_cli;
    let raw = &c.causeway_vs_raw_veth;
    let [t1, t4, trtt] = datapath_targets(c);
    let per = |f: &dyn Fn(&ConfigResult) -> String| -> Vec<String> {
        Kind::ALL.iter().map(|&k| f(report.get(k))).collect()
    };
    let row = |label: &str, cells: Vec<String>, vs_bt: String, vs_raw: String, target: String| {
        let mut r = vec![label.to_string()];
        r.extend(cells);
        r.extend([vs_bt, vs_raw, target]);
        r
    };
    let mut rows = vec![row(
        "",
        Kind::ALL.iter().map(|k| k.label().to_string()).collect(),
        "Causeway/boringtun".into(),
        "Causeway/raw veth".into(),
        "target".into(),
    )];
    rows.push(row(
        "throughput, 1 stream",
        per(&|r| opt(r.gbps(false), gbps)),
        opt(bt.one_stream_throughput, times),
        opt(raw.one_stream_throughput, times),
        t1.mark(),
    ));
    rows.push(row(
        "throughput, 4 streams",
        per(&|r| opt(r.gbps(true), gbps)),
        opt(bt.four_stream_throughput, times),
        opt(raw.four_stream_throughput, times),
        t4.mark(),
    ));
    for (label, four, ratio) in [
        ("retransmits, 1 stream", false, bt.one_stream_retransmits),
        ("retransmits, 4 streams", true, bt.four_stream_retransmits),
    ] {
        rows.push(row(
            label,
            per(&|r| opt(r.retransmits(four), |v| format!("{v:.0}"))),
            opt(ratio, times),
            NONE.into(),
            String::new(),
        ));
    }
    rows.push(row(
        "ping RTT avg",
        per(&|r| opt(r.rtt_avg(), ms)),
        opt(bt.rtt_avg, times),
        opt(raw.added_rtt_avg_ms, added_ms),
        trtt.mark(),
    ));
    rows.push(row(
        "ping RTT p99",
        per(&|r| opt(r.rtt_p99(), ms)),
        opt(bt.rtt_p99, times),
        opt(raw.added_rtt_p99_ms, added_ms),
        String::new(),
    ));
    rows.push(row(
        "ping RTT avg, back to back",
        per(&|r| opt(r.rtt_back_to_back(), ms)),
        opt(bt.rtt_back_to_back, times),
        opt(raw.added_rtt_back_to_back_ms, added_ms),
        String::new(),
    ));
    rows.push(row(
        "ping replies",
        per(&|r| {
            r.rtt
                .as_ref()
                .map_or_else(|| NONE.into(), |s| format!("{}/{}", s.received, s.sent))
        }),
        String::new(),
        String::new(),
        String::new(),
    ));
    for (label, four, ratio) in [
        ("tunnel CPU, 1 stream (A+B)", false, bt.one_stream_cpu),
        ("tunnel CPU, 4 streams (A+B)", true, bt.four_stream_cpu),
    ] {
        rows.push(row(
            label,
            per(&|r| opt(r.cpu(four), |v| format!("{v:.0} %"))),
            opt(ratio, times),
            NONE.into(),
            String::new(),
        ));
    }
    rows.push(row(
        "tunnel peak RSS (A / B)",
        per(&|r| {
            r.peak_rss.as_ref().map_or_else(
                || NONE.into(),
                |p| format!("{:.1} / {:.1} MiB", p.a_mib, p.b_mib),
            )
        }),
        opt(bt.peak_rss, times),
        NONE.into(),
        String::new(),
    ));
    rows.push(row(
        "MTU",
        per(&|r| r.mtu.map_or_else(|| NONE.into(), |m| m.to_string())),
        String::new(),
        String::new(),
        String::new(),
    ));
    let mut out = format!(
        "== Datapath: TCP through a veth pair between two namespaces (iperf3, {seconds} s per run) ==\n"
    );
    out += &render_table(&rows);
    out += "Causeway/raw veth for RTT is the RTT Causeway adds, in ms. \
            Tunnel CPU is % of one core over the iperf3 run.\n";
    for r in Kind::ALL.iter().map(|&k| report.get(k)) {
        for e in &r.errors {
            out += &format!("{} FAILED: {e}\n", r.kind.label());
        }
    }
    out
}

/// The scale section: each figure with its target and mark.
pub fn scale_table(s: &ScaleReport) -> String {
    let [mem, hs, rt, noop] = scale_targets(s);
    let mut rows = vec![vec![
        String::new(),
        "measured".to_string(),
        "target".to_string(),
    ]];
    rows.push(vec![
        "peak RSS, 1 gateway, 100 peers configured and idle".into(),
        opt(mem.value, |v| format!("{v:.1} MiB")),
        mem.mark(),
    ]);
    rows.push(vec![
        "time until all 100 handshakes complete (from spawn)".into(),
        opt(hs.value, |v| format!("{v:.3} s")),
        hs.mark(),
    ]);
    if let Some(h) = &s.handshakes {
        rows.push(vec![
            "  last handshake response sent by the peers".into(),
            opt(h.last_response_seconds, |v| format!("{v:.3} s")),
            String::new(),
        ]);
        rows.push(vec![
            "  peak RSS with 100 sessions established".into(),
            opt(h.peak_rss_mib_established, |v| format!("{v:.1} MiB")),
            String::new(),
        ]);
    }
    rows.push(vec![
        "reconcile 10,000 remote CIDRs into routes".into(),
        opt(rt.value, |v| format!("{v:.3} s")),
        rt.mark(),
    ]);
    if let Some(r) = &s.routes {
        rows.push(vec![
            "  routes in the kernel / netlink writes".into(),
            format!("{} / {}", r.kernel_routes, r.writes),
            String::new(),
        ]);
        rows.push(vec![
            "  following no-op reconcile took".into(),
            format!("{:.3} s", r.noop_seconds),
            String::new(),
        ]);
    }
    rows.push(vec![
        "netlink writes on the following no-op reconcile".into(),
        opt(noop.value, |v| format!("{v:.0}")),
        noop.mark(),
    ]);
    let mut out = "== Scale ==\n".to_string();
    out += &render_table(&rows);
    for e in &s.errors {
        out += &format!("scale FAILED: {e}\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(gbps: f64, retransmits: u64, cpu: Option<f64>) -> StreamRun {
        StreamRun {
            iperf: IperfResult {
                streams: 1,
                gbit_per_s: gbps,
                retransmits,
                seconds: 10.0,
            },
            tunnel_cpu: cpu.map(|t| CpuShare {
                a_percent: t / 2.0,
                b_percent: t / 2.0,
                total_percent: t,
            }),
        }
    }

    fn rtt(avg_ms: f64) -> RttSummary {
        RttSummary {
            sent: 200,
            received: 200,
            avg_ms,
            p99_ms: avg_ms * 2.0,
            min_ms: avg_ms / 2.0,
            max_ms: avg_ms * 3.0,
        }
    }

    /// Back-to-back pings take a fifth of the spaced ones' RTT.
    fn config(kind: Kind, one: f64, four: f64, rtt_avg: f64, cpu: Option<f64>) -> ConfigResult {
        ConfigResult {
            kind,
            mtu: Some(1420),
            rtt: Some(rtt(rtt_avg)),
            rtt_back_to_back: Some(rtt(rtt_avg / 5.0)),
            one_stream: Some(run(one, 10, cpu)),
            four_streams: Some(run(four, 40, cpu)),
            peak_rss: cpu.map(|_| RssPair {
                a_mib: 6.0,
                b_mib: 8.0,
            }),
            errors: Vec::new(),
        }
    }

    fn sample() -> DatapathReport {
        DatapathReport {
            raw_veth: config(Kind::RawVeth, 26.8, 30.0, 0.05, None),
            boringtun_cli: config(Kind::BoringtunCli, 0.43, 0.65, 0.30, Some(150.0)),
            causeway: config(Kind::Causeway, 3.5, 5.0, 0.12, Some(120.0)),
        }
    }

    #[test]
    fn ratios_against_both_baselines() {
        let c = compare(&sample());
        let bt = &c.causeway_vs_boringtun_cli;
        assert!((bt.one_stream_throughput.unwrap() - 3.5 / 0.43).abs() < 1e-9);
        assert!((bt.four_stream_throughput.unwrap() - 5.0 / 0.65).abs() < 1e-9);
        assert!((bt.rtt_avg.unwrap() - 0.4).abs() < 1e-9);
        assert!((bt.one_stream_cpu.unwrap() - 0.8).abs() < 1e-9);
        assert_eq!(bt.peak_rss, Some(1.0));
        assert_eq!(bt.one_stream_retransmits, Some(1.0));
        let raw = &c.causeway_vs_raw_veth;
        assert!((raw.one_stream_throughput.unwrap() - 3.5 / 26.8).abs() < 1e-9);
        assert!((raw.added_rtt_avg_ms.unwrap() - 0.07).abs() < 1e-9);
        assert!((raw.added_rtt_p99_ms.unwrap() - 0.14).abs() < 1e-9);
        assert!((raw.added_rtt_back_to_back_ms.unwrap() - 0.014).abs() < 1e-9);
        assert!((bt.rtt_back_to_back.unwrap() - 0.4).abs() < 1e-9);
        let bt_raw = &c.boringtun_cli_vs_raw_veth;
        assert!((bt_raw.added_rtt_avg_ms.unwrap() - 0.25).abs() < 1e-9);
        assert!((bt_raw.added_rtt_back_to_back_ms.unwrap() - 0.05).abs() < 1e-9);
    }

    #[test]
    fn a_failed_configuration_leaves_its_ratios_empty() {
        let mut report = sample();
        report.causeway = ConfigResult::new(Kind::Causeway);
        report.causeway.errors.push("gateway exited".into());
        let c = compare(&report);
        assert_eq!(c.causeway_vs_boringtun_cli, VsBoringtun::default());
        assert_eq!(c.causeway_vs_raw_veth, VsRaw::default());
        let targets = datapath_targets(&c);
        assert!(targets.iter().all(|t| t.pass.is_none()));
        let table = datapath_table(&report, &c, 10);
        assert!(table.contains("Causeway FAILED: gateway exited"), "{table}");
        assert!(table.contains(">= 8x: n/a"), "{table}");
    }

    #[test]
    fn targets_are_marked() {
        let c = compare(&sample());
        let [one, four, rtt] = datapath_targets(&c);
        // 3.5 / 0.43 = 8.14x; 5.0 / 0.65 = 7.69x; 0.07 ms added.
        assert_eq!(one.pass, Some(true));
        assert_eq!(one.mark(), ">= 8x: PASS");
        assert_eq!(four.pass, Some(false));
        assert_eq!(four.mark(), ">= 8x: MISS");
        assert_eq!(rtt.mark(), "<= 0.1 ms: PASS");
        assert!(Goal::Below(1.0).met(0.999));
        assert!(!Goal::Below(1.0).met(1.0));
        assert!(Goal::AtMost(0.0).met(0.0));
    }

    #[test]
    fn datapath_table_shows_figures_and_ratios() {
        let report = sample();
        let table = datapath_table(&report, &compare(&report), 10);
        let line = |prefix: &str| {
            table
                .lines()
                .find(|l| l.starts_with(prefix))
                .unwrap_or_else(|| panic!("no {prefix:?} row in\n{table}"))
                .to_string()
        };
        let header = line(" ");
        assert!(header.contains("raw veth") && header.contains("Causeway/boringtun"));
        let one = line("throughput, 1 stream");
        for want in [
            "26.80 Gbit/s",
            "0.43 Gbit/s",
            "3.50 Gbit/s",
            "8.14x",
            "0.13x",
            ">= 8x: PASS",
        ] {
            assert!(one.contains(want), "{want:?} missing from {one:?}");
        }
        let rtt = line("ping RTT avg");
        assert!(
            rtt.contains("0.050 ms") && rtt.contains("+0.070 ms"),
            "{rtt}"
        );
        assert!(rtt.contains("<= 0.1 ms: PASS"), "{rtt}");
        // 0.010, 0.060 and 0.024 ms; Causeway adds 0.014 over raw veth; no target of its own.
        let busy = line("ping RTT avg, back to back");
        for want in ["0.010 ms", "0.060 ms", "0.024 ms", "0.40x", "+0.014 ms"] {
            assert!(busy.contains(want), "{want:?} missing from {busy:?}");
        }
        assert!(!busy.contains("PASS") && !busy.contains("MISS"), "{busy}");
        let cpu = line("tunnel CPU, 1 stream");
        assert!(cpu.contains("150 %") && cpu.contains("0.80x"), "{cpu}");
        let rss = line("tunnel peak RSS");
        assert!(rss.contains("6.0 / 8.0 MiB"), "{rss}");
        // Columns line up: every row is as wide as the header or narrower.
        let width = |l: &str| l.chars().count();
        assert!(table
            .lines()
            .skip(1)
            .take(12)
            .all(|l| width(l) <= width(&header)));
    }

    #[test]
    fn scale_table_marks_each_target() {
        let s = ScaleReport {
            idle_memory: Some(IdleMemory {
                peers: 100,
                peak_rss_mib: 12.25,
                rss_mib: 11.0,
                settle_seconds: 0.2,
            }),
            handshakes: Some(Handshakes {
                peers: 100,
                seconds: 1.25,
                last_response_seconds: Some(1.2),
                peak_rss_mib_established: Some(13.0),
            }),
            routes: Some(RouteReconcile {
                routes: 10_000,
                seconds: 0.4,
                writes: 10_000,
                kernel_routes: 10_000,
                noop_seconds: 0.05,
                noop_writes: 0,
            }),
            errors: vec![],
        };
        let table = scale_table(&s);
        assert!(
            table.contains("12.2 MiB") || table.contains("12.3 MiB"),
            "{table}"
        );
        assert!(table.contains("<= 30 MiB: PASS"), "{table}");
        assert!(
            table.contains("1.250 s") && table.contains("< 1 s: MISS"),
            "{table}"
        );
        assert!(
            table.contains("0.400 s") && table.contains("< 1 s: PASS"),
            "{table}"
        );
        assert!(table.contains("= 0: PASS"), "{table}");
        let empty = scale_table(&ScaleReport::default());
        assert!(empty.contains("<= 30 MiB: n/a"), "{empty}");
    }

    #[test]
    fn table_rendering_aligns_columns() {
        let rows = vec![
            vec!["a".to_string(), "1".into(), "x".into()],
            vec!["long label".to_string(), "12345".into(), "".into()],
        ];
        assert_eq!(
            render_table(&rows),
            "a               1  x\nlong label  12345\n"
        );
        assert_eq!(num(8.0), "8");
        assert_eq!(num(0.1), "0.1");
        assert_eq!(num(30.0), "30");
    }

    #[test]
    fn json_has_the_table_figures() {
        let report = sample();
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["causeway"]["kind"], "causeway");
        assert_eq!(json["causeway"]["one_stream"]["gbit_per_s"], 3.5);
        assert_eq!(json["causeway"]["one_stream"]["retransmits"], 10);
        assert_eq!(
            json["boringtun_cli"]["four_streams"]["tunnel_cpu"]["total_percent"],
            150.0
        );
        let c = serde_json::to_value(compare(&report)).unwrap();
        assert!(c["causeway_vs_raw_veth"]["added_rtt_avg_ms"]
            .as_f64()
            .is_some());
        let t = serde_json::to_value(&datapath_targets(&compare(&report))[0]).unwrap();
        assert_eq!(t["goal"]["op"], "at_least");
        assert_eq!(t["pass"], true);
    }
}
