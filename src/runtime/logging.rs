//! Log lines for `kubectl logs`: one line per event, UTC to the millisecond, then the
//! level, the module and the message.
//!
//! env_logger does the filtering (`RUST_LOG`, default `info`); we only format. Its
//! timestamp support would pull in a date crate, so the UTC civil date is computed here
//! from the Unix time, which is a few lines of arithmetic.

use std::io::Write;
use std::time::{SystemTime, UNIX_EPOCH};

/// Installs the logger. Call once, first thing in `main`.
pub fn init() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .format(|buf, record| {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default();
            let target = record.target();
            let module = target
                .strip_prefix("test_machine_monitor::")
                .unwrap_or(target);
            // A message with embedded newlines would split one event over several lines.
            let message = record.args().to_string().replace('\n', "\\n");
            writeln!(
                buf,
                "{} {:<5} {}: {}",
                utc_timestamp(now.as_millis()),
                record.level(),
                module,
                message
            )
        })
        .init();
}

/// `2026-11-26T17:31:15.123Z` for a Unix time in milliseconds.
pub fn utc_timestamp(unix_millis: u128) -> String {
    let millis = (unix_millis % 1000) as u32;
    let secs = (unix_millis / 1000) as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to a proleptic Gregorian (year, month, day).
/// The era-based method: 400-year eras of 146097 days, years starting in March.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epoch() {
        assert_eq!(utc_timestamp(0), "1970-01-01T00:00:00.000Z");
    }

    #[test]
    fn leap_day_and_millis() {
        // 2024-02-29T23:59:59.999Z
        assert_eq!(utc_timestamp(1_709_251_199_999), "2024-02-29T23:59:59.999Z");
        assert_eq!(utc_timestamp(1_709_251_200_000), "2024-03-01T00:00:00.000Z");
    }

    #[test]
    fn century_rules() {
        // 2000-03-01 follows a leap day (divisible by 400); 2100-03-01 does not.
        assert_eq!(utc_timestamp(951_868_800_000), "2000-03-01T00:00:00.000Z");
        assert_eq!(utc_timestamp(4_107_542_400_000), "2100-03-01T00:00:00.000Z");
        assert_eq!(
            utc_timestamp(1_798_675_200_000 + 45_296_789),
            "2026-12-31T12:34:56.789Z"
        );
    }
}
