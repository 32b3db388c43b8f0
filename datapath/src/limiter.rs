//! Per-source token buckets for handshake initiations.
//!
//! boringtun's cookie limiter counts initiations globally and, under load, demands a
//! cookie; a sender that answers cookies passes it and then costs an X25519 exchange per
//! initiation on the packet thread. A per-source bucket in front of that exchange caps
//! what any one address can buy, whatever it does with cookies. The figures are Linux
//! WireGuard's: 20 initiations a second, a burst of 5, IPv6 sources grouped by /64.

use causeway_wire::net::source_group;
use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Instant;

/// Initiations a second one source may have attributed, once its burst is spent.
pub const INITIATIONS_PER_SECOND: f64 = 20.0;
/// Initiations one source may send at once.
pub const BURST: f64 = 5.0;
/// Sources tracked at most; beyond it, only sources whose bucket is not yet full again
/// are kept.
pub const MAX_SOURCES: usize = 16_384;

/// A token bucket: up to `burst` tokens, refilled at `rate` a second, one taken per use.
#[derive(Debug, Clone, Copy)]
pub struct TokenBucket {
    tokens: f64,
    at: Instant,
}

impl TokenBucket {
    /// A bucket holding `burst` tokens at `now`.
    pub fn full(burst: f64, now: Instant) -> TokenBucket {
        TokenBucket {
            tokens: burst,
            at: now,
        }
    }

    /// The tokens it would hold at `now`.
    fn level(&self, now: Instant, rate: f64, burst: f64) -> f64 {
        let refill = now.saturating_duration_since(self.at).as_secs_f64() * rate;
        (self.tokens + refill).min(burst)
    }

    /// Takes a token at `now`, if one is there.
    pub fn take(&mut self, now: Instant, rate: f64, burst: f64) -> bool {
        self.tokens = self.level(now, rate, burst);
        self.at = now;
        let taken = self.tokens >= 1.0;
        if taken {
            self.tokens -= 1.0;
        }
        taken
    }
}

/// Token buckets by source; owned by the one packet thread, so it takes no lock.
#[derive(Debug)]
pub struct SourceLimiter {
    buckets: HashMap<IpAddr, TokenBucket>,
    rate: f64,
    burst: f64,
}

impl Default for SourceLimiter {
    /// Linux WireGuard's figures for handshake initiations.
    fn default() -> SourceLimiter {
        SourceLimiter::new(INITIATIONS_PER_SECOND, BURST)
    }
}

impl SourceLimiter {
    /// Buckets of `burst` tokens refilled at `rate` a second, one per source.
    pub fn new(rate: f64, burst: f64) -> SourceLimiter {
        SourceLimiter {
            buckets: HashMap::new(),
            rate,
            burst,
        }
    }

    /// Whether an initiation from `source` at `now` may go on to the costly work; takes
    /// a token if so.
    pub fn allow(&mut self, source: IpAddr, now: Instant) -> bool {
        let key = source_group(source);
        if self.buckets.len() >= MAX_SOURCES && !self.buckets.contains_key(&key) {
            self.prune(now);
            if self.buckets.len() >= MAX_SOURCES {
                // As many sources as this, all active within a fifth of a second: the
                // global cookie limiter still stands in front, and a legitimate peer
                // must not be locked out because strangers filled the table.
                return true;
            }
        }
        self.buckets
            .entry(key)
            .or_insert(TokenBucket::full(self.burst, now))
            .take(now, self.rate, self.burst)
    }

    /// Sources tracked now.
    pub fn len(&self) -> usize {
        self.buckets.len()
    }

    /// Whether no source is tracked.
    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }

    /// Forgets sources whose bucket would be full again by `now`: they lose nothing.
    fn prune(&mut self, now: Instant) {
        let (rate, burst) = (self.rate, self.burst);
        self.buckets
            .retain(|_, b| b.level(now, rate, burst) < burst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn one_source_gets_its_burst_then_twenty_a_second() {
        let mut limiter = SourceLimiter::default();
        let t0 = Instant::now();
        let a = ip("198.18.0.66");
        let allowed = (0..100).filter(|_| limiter.allow(a, t0)).count();
        assert_eq!(allowed, 5, "the burst");
        // A second later: twenty more, not a hundred.
        let t1 = t0 + Duration::from_secs(1);
        let allowed = (0..100).filter(|_| limiter.allow(a, t1)).count();
        assert_eq!(allowed, 5, "refilled only up to the burst");
        // Over ten seconds at 1,000 a second: about twenty a second get through.
        let mut allowed = 0;
        for ms in 0..10_000u64 {
            allowed += usize::from(limiter.allow(a, t1 + Duration::from_millis(ms)));
        }
        assert!((195..=206).contains(&allowed), "{allowed} in 10 s");
    }

    #[test]
    fn other_sources_are_not_held_back_by_a_flooding_one() {
        let mut limiter = SourceLimiter::default();
        let now = Instant::now();
        for _ in 0..1000 {
            limiter.allow(ip("198.18.0.66"), now);
        }
        assert!(limiter.allow(ip("198.18.0.2"), now), "a peer's initiation");
        // One IPv6 host is its whole /64; the next /64 is someone else.
        let allowed = (0..50)
            .filter(|i| limiter.allow(ip(&format!("2001:db8:0:1::{i:x}")), now))
            .count();
        assert_eq!(allowed, 5);
        assert!(limiter.allow(ip("2001:db8:0:2::1"), now));
        // On a dual-stack socket IPv4 peers arrive IPv4-mapped: each is still itself,
        // not one /64 with every other IPv4 address.
        for _ in 0..1000 {
            limiter.allow(ip("::ffff:198.18.0.66"), now);
        }
        assert!(
            limiter.allow(ip("::ffff:198.18.0.3"), now),
            "another IPv4 peer"
        );
        assert!(
            !limiter.allow(ip("198.18.0.66"), now),
            "the same flooder, unmapped"
        );
    }

    #[test]
    fn the_table_stays_bounded_and_forgets_only_sources_that_lose_nothing() {
        let mut limiter = SourceLimiter::default();
        let t0 = Instant::now();
        for i in 0..MAX_SOURCES as u32 {
            limiter.allow(IpAddr::from((0x0a00_0000u32 + i).to_be_bytes()), t0);
        }
        let flooder = ip("198.18.0.66");
        assert_eq!(limiter.len(), MAX_SOURCES);
        // Full of sources that each just spent a token: a new one is let through
        // untracked rather than locked out.
        assert!(limiter.allow(flooder, t0));
        assert_eq!(limiter.len(), MAX_SOURCES);
        // Once their buckets have refilled they are forgotten, and the newcomer tracked.
        let later = t0 + Duration::from_secs(1);
        assert!(limiter.allow(flooder, later));
        assert_eq!(limiter.len(), 1);
        let allowed = (0..100).filter(|_| limiter.allow(flooder, later)).count();
        assert_eq!(allowed, 4, "the rest of its burst");
    }
}
