//! Pure arithmetic over samples: percentiles, RTT summaries, CPU shares from
//! `/proc/<pid>/stat`, memory from `/proc/<pid>/status`, and ratios.

use std::time::Duration;

use serde::Serialize;

/// The `p`-th percentile (0 < p <= 100) by the nearest-rank method; `None` for no samples.
///
/// Nearest rank never interpolates, so the p99 of 200 samples is the second-largest one.
pub fn percentile(samples: &[f64], p: f64) -> Option<f64> {
    if samples.is_empty() || !(p > 0.0 && p <= 100.0) {
        return None;
    }
    let mut sorted = samples.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = (p / 100.0 * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// Arithmetic mean; `None` for no samples.
pub fn mean(samples: &[f64]) -> Option<f64> {
    (!samples.is_empty()).then(|| samples.iter().sum::<f64>() / samples.len() as f64)
}

/// Ping round-trip times, in milliseconds.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RttSummary {
    /// Echo requests sent.
    pub sent: u32,
    /// Echo replies received.
    pub received: u32,
    /// Mean of the replies' round trips.
    pub avg_ms: f64,
    /// 99th percentile (nearest rank).
    pub p99_ms: f64,
    /// Fastest reply.
    pub min_ms: f64,
    /// Slowest reply.
    pub max_ms: f64,
}

impl RttSummary {
    /// Summarises the replies' RTTs out of `sent` requests; `None` if no reply came back.
    pub fn from_samples(sent: u32, rtts: &[Duration]) -> Option<RttSummary> {
        let ms: Vec<f64> = rtts.iter().map(|d| d.as_secs_f64() * 1e3).collect();
        Some(RttSummary {
            sent,
            received: u32::try_from(ms.len()).unwrap_or(u32::MAX),
            avg_ms: mean(&ms)?,
            p99_ms: percentile(&ms, 99.0)?,
            min_ms: ms.iter().copied().reduce(f64::min)?,
            max_ms: ms.iter().copied().reduce(f64::max)?,
        })
    }
}

/// CPU time (user + system, in clock ticks) from the text of `/proc/<pid>/stat`.
///
/// The command name (field 2) is in parentheses and may itself contain spaces or
/// parentheses, so fields are counted from the last `)`: utime and stime are
/// fields 14 and 15.
pub fn parse_stat_cpu_ticks(stat: &str) -> Option<u64> {
    let after_comm = &stat[stat.rfind(')')? + 1..];
    // after_comm starts with field 3 (state).
    let fields: Vec<&str> = after_comm.split_whitespace().collect();
    let utime: u64 = fields.get(14 - 3)?.parse().ok()?;
    let stime: u64 = fields.get(15 - 3)?.parse().ok()?;
    Some(utime + stime)
}

/// A `Vm*` value in KiB from the text of `/proc/<pid>/status`, e.g. `VmHWM`.
pub fn parse_status_kib(status: &str, key: &str) -> Option<u64> {
    status.lines().find_map(|line| {
        let (name, rest) = line.split_once(':')?;
        if name != key {
            return None;
        }
        let mut parts = rest.split_whitespace();
        let value = parts.next()?.parse().ok()?;
        matches!(parts.next(), Some("kB") | None).then_some(value)
    })
}

/// CPU used over a wall-clock interval as a percentage of one core (200 = two cores busy).
pub fn cpu_percent(
    ticks_before: u64,
    ticks_after: u64,
    ticks_per_second: u64,
    wall: Duration,
) -> f64 {
    if ticks_per_second == 0 || wall.is_zero() {
        return 0.0;
    }
    let cpu_seconds = ticks_after.saturating_sub(ticks_before) as f64 / ticks_per_second as f64;
    cpu_seconds / wall.as_secs_f64() * 100.0
}

/// `a / b`, or `None` when either is missing or `b` is not a positive number.
pub fn ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 && a.is_finite() && b.is_finite() => Some(a / b),
        _ => None,
    }
}

/// `a - b`, or `None` when either is missing.
pub fn difference(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    Some(a? - b?)
}

/// KiB to MiB.
pub fn kib_to_mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentile() {
        let samples: Vec<f64> = (1..=200).map(f64::from).collect();
        assert_eq!(percentile(&samples, 99.0), Some(198.0));
        assert_eq!(percentile(&samples, 50.0), Some(100.0));
        assert_eq!(percentile(&samples, 100.0), Some(200.0));
        assert_eq!(percentile(&[7.0], 99.0), Some(7.0));
        // Order of the input does not matter.
        assert_eq!(percentile(&[3.0, 1.0, 2.0], 50.0), Some(2.0));
        // A tiny percentile is the minimum, not index -1.
        assert_eq!(percentile(&[3.0, 1.0, 2.0], 0.1), Some(1.0));
        assert_eq!(percentile(&[], 99.0), None);
        assert_eq!(percentile(&[1.0], 0.0), None);
        assert_eq!(percentile(&[1.0], 101.0), None);
    }

    #[test]
    fn rtt_summary_in_milliseconds() {
        let rtts: Vec<Duration> = [50, 60, 70, 400]
            .iter()
            .map(|&us| Duration::from_micros(us))
            .collect();
        let s = RttSummary::from_samples(5, &rtts).unwrap();
        assert_eq!((s.sent, s.received), (5, 4));
        assert!((s.avg_ms - 0.145).abs() < 1e-9, "{}", s.avg_ms);
        assert!((s.p99_ms - 0.4).abs() < 1e-9);
        assert!((s.min_ms - 0.05).abs() < 1e-9);
        assert!((s.max_ms - 0.4).abs() < 1e-9);
        assert_eq!(RttSummary::from_samples(3, &[]), None);
    }

    #[test]
    fn stat_ticks_survive_odd_command_names() {
        // Fields after the name: state ppid pgrp session tty tpgid flags minflt
        // cminflt majflt cmajflt utime(14) stime(15) cutime cstime ...
        let stat = "4242 (causeway gw) (x)) S 1 4242 4242 0 -1 4194560 900 0 0 0 \
                    1234 567 8 9 20 0 5 0 100 10000000 500 18446744073709551615";
        assert_eq!(parse_stat_cpu_ticks(stat), Some(1234 + 567));
        assert_eq!(parse_stat_cpu_ticks("4242 (short) S 1 2"), None);
        assert_eq!(parse_stat_cpu_ticks("garbage"), None);
    }

    #[test]
    fn status_values_in_kib() {
        let status = "Name:\tcauseway-gatewa\nVmPeak:\t  123456 kB\nVmHWM:\t    8812 kB\nVmRSS:\t    8000 kB\n";
        assert_eq!(parse_status_kib(status, "VmHWM"), Some(8812));
        assert_eq!(parse_status_kib(status, "VmRSS"), Some(8000));
        assert_eq!(parse_status_kib(status, "VmSwap"), None);
        // A key must match whole, not as a prefix.
        assert_eq!(parse_status_kib("VmHWMx:\t1 kB\n", "VmHWM"), None);
    }

    #[test]
    fn cpu_share_of_one_core() {
        // 250 ticks at 100 Hz over 2 s is 1.25 core-seconds per second.
        let pct = cpu_percent(1000, 1250, 100, Duration::from_secs(2));
        assert!((pct - 125.0).abs() < 1e-9, "{pct}");
        assert_eq!(cpu_percent(10, 5, 100, Duration::from_secs(1)), 0.0);
        assert_eq!(cpu_percent(0, 100, 100, Duration::ZERO), 0.0);
        assert_eq!(cpu_percent(0, 100, 0, Duration::from_secs(1)), 0.0);
    }

    #[test]
    fn ratios_and_differences() {
        assert_eq!(
            ratio(Some(3.44), Some(0.43)).map(|r| (r * 100.0).round()),
            Some(800.0)
        );
        assert_eq!(ratio(Some(1.0), Some(0.0)), None);
        assert_eq!(ratio(None, Some(1.0)), None);
        assert_eq!(ratio(Some(1.0), None), None);
        assert_eq!(ratio(Some(f64::NAN), Some(1.0)), None);
        let added = difference(Some(0.09), Some(0.05)).unwrap();
        assert!((added - 0.04).abs() < 1e-12);
        assert_eq!(difference(None, Some(0.05)), None);
        assert_eq!(kib_to_mib(30 * 1024), 30.0);
    }
}
