//! The round budget: every deadline of a device round, derived from `--interrogate-every`
//! in this one place.
//!
//! A round must end well before the next one starts, or rounds would queue behind a hung
//! phone: one phone's round gets three quarters of the interval (at most 20 s), and its
//! script is read until nine tenths of that, so that what did arrive is kept before the
//! phone's deadline cuts the connection. An iPhone round is a listing then the phones'
//! queries in parallel, two tool runs in a row, so each tool run gets 0.375 of the
//! interval (at most 5 s). A single socket read never waits longer than a phone's round.
//! A new transport's handshake may keep it `offline` for a round before the offline
//! rule counts it. The adb server is probed every round; one that has not answered
//! [`SERVER_SILENT_ROUNDS`] probes in a row is killed and started again: one silent
//! round can be a busy host, the second is reported, the third is the deadline.
//!
//! Pure: durations in, durations out.

use std::time::Duration;

/// The longest a phone's round may take, whatever the interval.
const MAX_PHONE: Duration = Duration::from_secs(20);
/// The longest one iPhone tool run may take.
const MAX_IOS_TOOL: Duration = Duration::from_secs(5);
/// The longest one connect or read to the adb server may take.
const MAX_IO: Duration = Duration::from_secs(5);

/// Probes in a row the adb server may fail before it is killed and started again.
pub const SERVER_SILENT_ROUNDS: u32 = 3;

/// The deadlines of one round.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    /// One Android phone's whole round.
    pub phone: Duration,
    /// How long a phone's script output is read before the round keeps what came.
    pub script: Duration,
    /// One connect or read to the adb server.
    pub io: Duration,
    /// One iPhone tool run.
    pub ios_tool: Duration,
    /// How long a new transport may stay `offline` (its handshake under way) before
    /// the offline rule counts it: one interval, at least a second.
    pub offline_settle: Duration,
}

impl Budget {
    /// The budget of rounds that start every `interval`.
    pub fn of(interval: Duration) -> Budget {
        let phone = interval.mul_f64(0.75).min(MAX_PHONE);
        Budget {
            phone,
            script: phone.mul_f64(0.9),
            io: MAX_IO.min(phone),
            ios_tool: interval.mul_f64(0.375).min(MAX_IOS_TOOL),
            offline_settle: interval.max(Duration::from_secs(1)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_phone_round_is_shorter_than_the_interval_and_capped() {
        let b = Budget::of(Duration::from_secs(2));
        assert_eq!(b.phone, Duration::from_millis(1500));
        assert_eq!(b.script, Duration::from_millis(1350));
        assert_eq!(b.io, Duration::from_millis(1500));
        assert_eq!(Budget::of(Duration::from_secs(300)).phone, MAX_PHONE);
        assert_eq!(Budget::of(Duration::from_secs(300)).io, MAX_IO);
    }

    #[test]
    fn two_ios_tool_runs_fit_in_the_interval_and_are_capped() {
        assert_eq!(Budget::of(Duration::from_secs(30)).ios_tool, MAX_IOS_TOOL);
        assert_eq!(
            Budget::of(Duration::from_secs(8)).ios_tool,
            Duration::from_secs(3)
        );
        for secs in [1, 2, 5, 8, 13, 30, 300] {
            let interval = Duration::from_secs(secs);
            let b = Budget::of(interval);
            assert!(b.ios_tool * 2 < interval, "{secs}");
            assert!(b.script < b.phone && b.phone < interval, "{secs}");
        }
    }
}
