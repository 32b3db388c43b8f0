//! `kubectl causeway benchmark`: throughput and latency between two clusters' gateways,
//! through the tunnel. The active gateway of the first cluster runs it (its agent's
//! `GET /benchmark`, reached through the API server's pod proxy) against the second
//! cluster's active gateway, and streams NDJSON [`BenchLine`]s; this module holds those
//! wire types, the bounds both sides enforce, and the pure figures and progress text.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::verify::RttFigures;

/// Longest benchmark a gateway runs.
pub const MAX_SECONDS: u32 = 60;
/// Most parallel TCP streams a gateway opens.
pub const MAX_STREAMS: u32 = 8;
/// Default duration.
pub const DEFAULT_SECONDS: u32 = 10;
/// Default stream count.
pub const DEFAULT_STREAMS: u32 = 1;

/// What a benchmark is asked to do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BenchParams {
    /// The remote cluster's ID.
    pub cluster: String,
    /// How long the throughput phase lasts.
    pub seconds: u32,
    /// Parallel TCP streams.
    pub streams: u32,
}

/// Why benchmark parameters are refused.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum BenchParamError {
    /// No remote cluster named.
    #[error("benchmark needs cluster=<remote cluster ID>")]
    NoCluster,
    /// A value out of bounds or not a number.
    #[error("{name}={value:?} is not allowed: give a whole number from 1 to {max}")]
    Bound {
        /// The parameter.
        name: &'static str,
        /// What was given.
        value: String,
        /// The largest allowed.
        max: u32,
    },
}

impl BenchParams {
    /// Checks the bounds: 1..=[`MAX_SECONDS`] seconds, 1..=[`MAX_STREAMS`] streams.
    pub fn new(cluster: &str, seconds: u32, streams: u32) -> Result<BenchParams, BenchParamError> {
        if cluster.is_empty() {
            return Err(BenchParamError::NoCluster);
        }
        let check = |name, value: u32, max| match value {
            1.. if value <= max => Ok(value),
            _ => Err(BenchParamError::Bound {
                name,
                value: value.to_string(),
                max,
            }),
        };
        Ok(BenchParams {
            cluster: cluster.to_owned(),
            seconds: check("seconds", seconds, MAX_SECONDS)?,
            streams: check("streams", streams, MAX_STREAMS)?,
        })
    }

    /// Parses the agent's query parameters (`cluster`, `seconds`, `streams`).
    pub fn from_query(query: &str) -> Result<BenchParams, BenchParamError> {
        let (mut cluster, mut seconds, mut streams) = (String::new(), None, None);
        for (k, v) in form_urlencoded::parse(query.as_bytes()) {
            match &*k {
                "cluster" => cluster = v.into_owned(),
                "seconds" => seconds = Some(v.into_owned()),
                "streams" => streams = Some(v.into_owned()),
                _ => {}
            }
        }
        let number = |name, value: Option<String>, default, max| match value {
            None => Ok(default),
            Some(v) => v.parse::<u32>().map_err(|_| BenchParamError::Bound {
                name,
                value: v,
                max,
            }),
        };
        let seconds = number("seconds", seconds, DEFAULT_SECONDS, MAX_SECONDS)?;
        let streams = number("streams", streams, DEFAULT_STREAMS, MAX_STREAMS)?;
        BenchParams::new(&cluster, seconds, streams)
    }

    /// The agent path asking for this benchmark.
    pub fn path(&self) -> String {
        let query: String = form_urlencoded::Serializer::new(String::new())
            .append_pair("cluster", &self.cluster)
            .append_pair("seconds", &self.seconds.to_string())
            .append_pair("streams", &self.streams.to_string())
            .finish();
        format!("/benchmark?{query}")
    }
}

/// One NDJSON line of `GET /benchmark`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum BenchLine {
    /// The idle round trips, measured before the throughput phase.
    #[serde(rename_all = "camelCase")]
    Latency {
        /// Probes sent.
        probes_sent: u32,
        /// Their figures; `None`: none answered.
        rtt: Option<RttFigures>,
    },
    /// About twice a second during the throughput phase.
    #[serde(rename_all = "camelCase")]
    Progress {
        /// Seconds since the streams started.
        elapsed_seconds: f64,
        /// Bytes the streams have written so far.
        bytes: u64,
    },
    /// The last line of a benchmark that ran.
    #[serde(rename_all = "camelCase")]
    Result(BenchResult),
    /// The last line of one that could not run.
    #[serde(rename_all = "camelCase")]
    Error {
        /// What went wrong and what to do.
        message: String,
    },
}

/// The figures of a finished benchmark.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BenchResult {
    /// The cluster the gateway ran from (filled in by the plugin).
    #[serde(default)]
    pub from: String,
    /// The remote cluster.
    pub to: String,
    /// The remote gateway's benchmark sink, `ip:port`.
    pub target: String,
    /// Parallel TCP streams.
    pub streams: u32,
    /// Seconds from the first connect to the last byte acknowledged by the sink.
    pub seconds: f64,
    /// Bytes the sink acknowledged having received.
    pub bytes: u64,
    /// `bytes * 8 / seconds`.
    pub bits_per_second: f64,
    /// Round trips on an idle tunnel.
    pub rtt: Option<RttFigures>,
    /// Round trips while the streams ran.
    pub rtt_under_load: Option<RttFigures>,
}

impl BenchResult {
    /// Throughput in Gbit/s.
    pub fn gbit_per_second(&self) -> f64 {
        self.bits_per_second / 1e9
    }
}

/// `bytes` over `elapsed` in bit/s; 0 for no time.
pub fn bits_per_second(bytes: u64, elapsed: Duration) -> f64 {
    match elapsed.as_secs_f64() {
        s if s > 0.0 => bytes as f64 * 8.0 / s,
        _ => 0.0,
    }
}

/// A rate for people: `940 Mbit/s`, `2.31 Gbit/s`.
pub fn human_rate(bits_per_second: f64) -> String {
    match bits_per_second {
        b if b >= 1e9 => format!("{:.2} Gbit/s", b / 1e9),
        b if b >= 1e6 => format!("{:.0} Mbit/s", b / 1e6),
        b => format!("{:.0} kbit/s", b / 1e3),
    }
}

/// One progress line for a terminal (a bar, redrawn with `\r`) or a log (plain text).
pub fn progress_text(
    from: &str,
    to: &str,
    elapsed: f64,
    total: u32,
    bytes: u64,
    bar: bool,
) -> String {
    let rate = human_rate(bits_per_second(
        bytes,
        Duration::from_secs_f64(elapsed.max(0.0)),
    ));
    let fraction = (elapsed / f64::from(total.max(1))).clamp(0.0, 1.0);
    if !bar {
        return format!("{from} -> {to}: {elapsed:.1}/{total} s, {rate}");
    }
    const WIDTH: usize = 30;
    let filled = (fraction * WIDTH as f64).round() as usize;
    format!(
        "{from} -> {to} [{}{}] {:>3.0}% {elapsed:>4.1}/{total} s {rate}",
        "#".repeat(filled),
        " ".repeat(WIDTH - filled),
        fraction * 100.0,
    )
}

/// The final figures as a few lines of text.
pub fn summary(r: &BenchResult) -> String {
    let rtt = |label: &str, f: &Option<RttFigures>| match f {
        Some(f) => format!(
            "{label}: min {:.3} ms, avg {:.3} ms, p99 {:.3} ms ({} probes)\n",
            f.min_ms, f.avg_ms, f.p99_ms, f.samples
        ),
        None => format!("{label}: no probe answered\n"),
    };
    format!(
        "{} -> {} ({}), {} stream{}, {:.1} s\nthroughput: {:.3} Gbit/s ({} bytes)\n{}{}",
        r.from,
        r.to,
        r.target,
        r.streams,
        if r.streams == 1 { "" } else { "s" },
        r.seconds,
        r.gbit_per_second(),
        r.bytes,
        rtt("rtt (idle)", &r.rtt),
        rtt("rtt (under load)", &r.rtt_under_load),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_are_enforced_with_a_clear_message() {
        assert_eq!(
            BenchParams::from_query("cluster=site-b").unwrap(),
            BenchParams {
                cluster: "site-b".into(),
                seconds: DEFAULT_SECONDS,
                streams: DEFAULT_STREAMS
            }
        );
        let p = BenchParams::from_query("cluster=site-b&seconds=60&streams=8").unwrap();
        assert_eq!((p.seconds, p.streams), (60, 8));
        assert_eq!(
            BenchParams::from_query(&p.path()["/benchmark?".len()..]),
            Ok(p)
        );
        for (query, says) in [
            (
                "cluster=site-b&seconds=61",
                "seconds=\"61\" is not allowed: give a whole number from 1 to 60",
            ),
            ("cluster=site-b&streams=0", "streams=\"0\""),
            ("cluster=site-b&streams=many", "streams=\"many\""),
            ("seconds=5", "cluster=<remote cluster ID>"),
        ] {
            let e = BenchParams::from_query(query).unwrap_err().to_string();
            assert!(e.contains(says), "{query}: {e}");
        }
    }

    #[test]
    fn lines_round_trip_as_ndjson() {
        let lines = [
            BenchLine::Progress {
                elapsed_seconds: 0.5,
                bytes: 1000,
            },
            BenchLine::Error {
                message: "no".into(),
            },
        ];
        for line in lines {
            let text = serde_json::to_string(&line).unwrap();
            assert!(!text.contains('\n'));
            assert_eq!(serde_json::from_str::<BenchLine>(&text).unwrap(), line);
        }
        let text = r#"{"kind":"progress","elapsedSeconds":1.0,"bytes":5}"#;
        assert!(matches!(
            serde_json::from_str::<BenchLine>(text).unwrap(),
            BenchLine::Progress { bytes: 5, .. }
        ));
    }

    #[test]
    fn rates_and_progress_read_well() {
        assert_eq!(human_rate(2.314e9), "2.31 Gbit/s");
        assert_eq!(human_rate(940e6), "940 Mbit/s");
        assert_eq!(bits_per_second(125_000_000, Duration::from_secs(1)), 1e9);
        assert_eq!(bits_per_second(5, Duration::ZERO), 0.0);
        let bar = progress_text("site-a", "site-b", 5.0, 10, 625_000_000, true);
        assert!(
            bar.contains(&format!("[{}{}]", "#".repeat(15), " ".repeat(15))),
            "{bar}"
        );
        assert!(
            bar.contains(" 50%") && bar.ends_with("1.00 Gbit/s"),
            "{bar}"
        );
        assert_eq!(
            progress_text("site-a", "site-b", 5.0, 10, 625_000_000, false),
            "site-a -> site-b: 5.0/10 s, 1.00 Gbit/s"
        );
    }
}
