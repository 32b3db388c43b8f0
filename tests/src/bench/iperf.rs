//! iperf3: its JSON report parsed into the figures the benchmark prints, and
//! bounded runs of its client and server inside the benchmark's namespaces.

use std::net::Ipv4Addr;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use serde::Serialize;

use crate::harness::{wait_until_ok, ChildGuard, Netns};

/// The TCP port iperf3 servers listen on inside the benchmark's namespaces.
pub const PORT: u16 = 5201;

/// What one iperf3 TCP test measured.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct IperfResult {
    /// Parallel streams (`-P`).
    pub streams: u32,
    /// Throughput the receiver saw, all streams together (`end.sum_received.bits_per_second`).
    pub gbit_per_s: f64,
    /// TCP retransmits on the sender, all streams together (`end.sum_sent.retransmits`).
    pub retransmits: u64,
    /// Length of the measured interval, in seconds (`end.sum_received.seconds`).
    pub seconds: f64,
}

/// Parses the report `iperf3 -J` prints for a TCP client run with `streams` streams.
///
/// iperf3 exits 0 and writes `{"error": ...}` when it could not run, so that key is checked first.
pub fn parse_report(json: &str, streams: u32) -> Result<IperfResult> {
    let doc: serde_json::Value =
        serde_json::from_str(json.trim()).context("iperf3 report is not JSON")?;
    if let Some(error) = doc.get("error").and_then(|e| e.as_str()) {
        bail!("iperf3: {error}");
    }
    let end = doc
        .get("end")
        .ok_or_else(|| anyhow!("iperf3 report has no `end`"))?;
    let received = end
        .get("sum_received")
        .ok_or_else(|| anyhow!("iperf3 report has no `end.sum_received` (not a TCP test?)"))?;
    let bits = received
        .get("bits_per_second")
        .and_then(|v| v.as_f64())
        .ok_or_else(|| anyhow!("iperf3 report has no `end.sum_received.bits_per_second`"))?;
    let seconds = received
        .get("seconds")
        .and_then(|v| v.as_f64())
        .unwrap_or(0.0);
    let retransmits = end
        .get("sum_sent")
        .and_then(|s| s.get("retransmits"))
        .and_then(|v| v.as_u64())
        .ok_or_else(|| anyhow!("iperf3 report has no `end.sum_sent.retransmits`"))?;
    Ok(IperfResult {
        streams,
        gbit_per_s: bits / 1e9,
        retransmits,
        seconds,
    })
}

/// Whether `ss -Htln` output lists a listener on `port`.
pub fn ss_lists_port(ss_output: &str, port: u16) -> bool {
    let suffix = format!(":{port}");
    ss_output.lines().any(|line| {
        // State Recv-Q Send-Q Local-Address:Port Peer-Address:Port ...
        line.split_whitespace()
            .nth(3)
            .is_some_and(|local| local.ends_with(&suffix))
    })
}

/// Starts `iperf3 -s` bound to `bind` in `ns` and waits until it listens.
pub fn start_server(ns: &Netns, bind: Ipv4Addr) -> Result<ChildGuard> {
    let mut server = ns.spawn(Command::new("iperf3").args([
        "-s",
        "-B",
        &bind.to_string(),
        "-p",
        &PORT.to_string(),
    ]))?;
    wait_until_ok(
        &format!("iperf3 server listening on {bind}:{PORT} in {}", ns.name()),
        Duration::from_secs(10),
        || {
            if !server.is_running() {
                return Err(format!("iperf3 server exited: {}", server.log_tail(5)));
            }
            let ss = ns
                .exec_ok("ss", ["-Htln"])
                .map_err(|e| format!("ss: {e}"))?;
            if ss_lists_port(&ss, PORT) {
                Ok(())
            } else {
                Err("not listening yet".into())
            }
        },
    )?;
    Ok(server)
}

/// Runs an iperf3 TCP client in `ns` against `server` for `seconds` with `streams` streams.
///
/// Bounded: the client is killed if it has not finished `seconds + 30` seconds after starting,
/// or as soon as `interrupted` is set.
pub fn run_client(
    ns: &Netns,
    server: Ipv4Addr,
    seconds: u32,
    streams: u32,
    report: &Path,
    interrupted: &AtomicBool,
) -> Result<IperfResult> {
    // A previous run's report must not be mistaken for this one's.
    let _ = std::fs::remove_file(report);
    let mut client = ns.spawn(Command::new("iperf3").args([
        "-c",
        &server.to_string(),
        "-p",
        &PORT.to_string(),
        "-t",
        &seconds.to_string(),
        "-P",
        &streams.to_string(),
        "--connect-timeout",
        "5000",
        "-J",
        "--logfile",
        &report.display().to_string(),
    ]))?;
    let started = Instant::now();
    let limit = Duration::from_secs(u64::from(seconds) + 30);
    let what = format!("iperf3 -c {server} -P {streams} -t {seconds} to finish");
    let status = wait_until_ok(&what, limit, || {
        if interrupted.load(Ordering::Relaxed) {
            return Ok(None);
        }
        match client.try_status() {
            Ok(Some(status)) => Ok(Some(status)),
            Ok(None) => Err(format!("still running after {:.1?}", started.elapsed())),
            Err(e) => Err(e.to_string()),
        }
    })?
    .ok_or_else(|| anyhow!("interrupted"))?;
    let text = std::fs::read_to_string(report)
        .with_context(|| format!("reading iperf3 report {}", report.display()))?;
    parse_report(&text, streams).with_context(|| {
        format!(
            "iperf3 client ({status}); log: {}",
            client.log_tail(5).replace('\n', " | ")
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shape of `iperf3 -J -P 4` (3.12), trimmed to what matters.
    const FOUR_STREAMS: &str = r#"{
        "start": {"connected": [], "version": "iperf 3.12"},
        "intervals": [],
        "end": {
            "streams": [],
            "sum_sent": {"start": 0, "end": 10.000041, "seconds": 10.000041,
                         "bytes": 8053063680, "bits_per_second": 6442424.5e3,
                         "retransmits": 31234, "sender": true},
            "sum_received": {"start": 0, "end": 10.000402, "seconds": 10.000402,
                             "bytes": 8051000000, "bits_per_second": 6440541000.0,
                             "sender": true},
            "cpu_utilization_percent": {"host_total": 99.0}
        }
    }"#;

    #[test]
    fn receiver_throughput_and_sender_retransmits() {
        let r = parse_report(FOUR_STREAMS, 4).unwrap();
        assert_eq!(r.streams, 4);
        assert!((r.gbit_per_s - 6.440541).abs() < 1e-9, "{}", r.gbit_per_s);
        assert_eq!(r.retransmits, 31234);
        assert!((r.seconds - 10.000402).abs() < 1e-9);
    }

    #[test]
    fn error_reports_are_errors() {
        // What iperf3 3.12 writes (with exit status 0!) when the server is not there.
        let json = r#"{"start": {"connected": []}, "intervals": [], "end": {},
                      "error": "unable to connect to server: Connection refused"}"#;
        let err = parse_report(json, 1).unwrap_err().to_string();
        assert!(err.contains("Connection refused"), "{err}");
        assert!(parse_report("", 1).is_err());
        assert!(parse_report(r#"{"end": {}}"#, 1)
            .unwrap_err()
            .to_string()
            .contains("sum_received"));
    }

    #[test]
    fn listener_is_found_by_local_port() {
        let ss = "LISTEN 0      4096     10.2.0.1:5201      0.0.0.0:*\n\
                  LISTEN 0      4096    127.0.0.1:9469      0.0.0.0:*\n";
        assert!(ss_lists_port(ss, 5201));
        assert!(ss_lists_port(ss, 9469));
        assert!(!ss_lists_port(ss, 520));
        assert!(!ss_lists_port("", 5201));
        // The peer column must not count.
        assert!(!ss_lists_port(
            "ESTAB 0 0 10.1.0.1:40000 10.2.0.1:5201\n",
            5201
        ));
    }
}
