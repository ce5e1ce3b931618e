//! Capped exponential backoff with jitter, shared by every retry (`retry`: the token
//! refresher, the bot zip, the adb device-list tracker) and every restart (`supervise`:
//! the bot and the daemons).
//!
//! Pure: the random source is a tiny xorshift generator seeded by the caller, so tests
//! can pin it. It is not for secrets; it only keeps a rack of Pis from retrying in step
//! after a server outage. No `rand` crate: the dependency list stays short.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The delays `base`, `2·base`, `4·base`, ... capped at `cap`, each drawn uniformly from
/// the upper half of its value ("equal jitter"), so a delay never exceeds its nominal
/// value and never falls below half of it.
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
    /// Failures since the last reset.
    attempt: u32,
    rng: u64,
}

impl Backoff {
    pub fn new(base: Duration, cap: Duration, seed: u64) -> Backoff {
        Backoff {
            base,
            cap,
            attempt: 0,
            // xorshift must never hold zero.
            rng: seed | 1,
        }
    }

    /// Seeded from the clock and the pid: different on every Pi and every start.
    pub fn with_entropy(base: Duration, cap: Duration) -> Backoff {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos() as u64;
        Backoff::new(base, cap, nanos ^ (u64::from(std::process::id()) << 32))
    }

    /// The un-jittered delay of the next attempt.
    pub fn nominal(&self) -> Duration {
        let factor = 1u32.checked_shl(self.attempt.min(31)).unwrap_or(u32::MAX);
        self.base.saturating_mul(factor).min(self.cap)
    }

    /// The delay to wait before the next attempt; each call doubles the next one.
    pub fn next_delay(&mut self) -> Duration {
        let nominal = self.nominal();
        self.attempt = self.attempt.saturating_add(1);
        let fraction = 0.5 + 0.5 * self.next_unit();
        nominal.mul_f64(fraction)
    }

    /// Back to the first delay, after a success.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    /// Uniform in [0, 1).
    fn next_unit(&mut self) -> f64 {
        let mut x = self.rng;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng = x;
        (x >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_within_their_jitter_band_up_to_the_cap() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(300), 42);
        let mut nominal = 1.0;
        for _ in 0..20 {
            let d = b.next_delay().as_secs_f64();
            assert!(d >= nominal / 2.0 && d <= nominal, "{d} vs {nominal}");
            nominal = (nominal * 2.0_f64).min(300.0);
        }
        assert_eq!(b.nominal(), Duration::from_secs(300));
    }

    #[test]
    fn reset_starts_over() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(300), 7);
        b.next_delay();
        b.next_delay();
        b.reset();
        assert!(b.next_delay() <= Duration::from_secs(1));
    }

    #[test]
    fn huge_attempt_counts_do_not_overflow() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(300), 1);
        for _ in 0..100 {
            b.next_delay();
        }
        assert!(b.next_delay() <= Duration::from_secs(300));
    }

    #[test]
    fn jitter_spreads_delays() {
        let mut a = Backoff::new(Duration::from_secs(8), Duration::from_secs(300), 1);
        let mut b = Backoff::new(Duration::from_secs(8), Duration::from_secs(300), 2);
        assert_ne!(a.next_delay(), b.next_delay());
    }
}
