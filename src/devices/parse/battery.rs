//! Parses `dumpsys battery`.
//!
//! The useful part is the `Current Battery Service state:` header and the `key: value`
//! lines under it, which phones indent by two spaces and some dumps kept by other labs
//! have at column 0. OEMs append sections of their own, sometimes with the same keys, so
//! reading stops where the block ends: in the indented layout at the first line that is
//! not indented, in the flush layout at the first line that is not `key: value` (a
//! section header such as `Battery History:`, or text without a colon). Keys are
//! matched whole (`level`, not `Capacity level`), and the value is whatever follows the
//! first `:` (Android 4.1 printed `voltage:4123` without a space).
//!
//! Units as adb.md gives them: `temperature` in tenths of °C, `voltage` in mV, percent
//! = 100·level/scale (scale 100 when absent). A `level` line is required; `present:
//! false` (a board without a battery) and `scale: 0` give no percent rather than a fake
//! 0 % that would trip the low-battery rule. `(UPDATES STOPPED -- ...)` means the values
//! were set by hand with `dumpsys battery set` and is reported as such.
//!
//! Pure: no shell, no knowledge of the phone.

use super::{excerpt, ParseError};

const WHAT: &str = "dumpsys battery";
const HEADER: &str = "Current Battery Service state:";

#[derive(Debug, Clone, PartialEq)]
pub struct Battery {
    pub percent: Option<f64>,
    pub temperature_celsius: Option<f64>,
    pub voltage_mv: Option<u32>,
    /// BatteryManager's status: 1 unknown, 2 charging, 3 discharging, 4 not charging, 5 full.
    pub status: Option<u8>,
    /// BatteryManager's health: 2 good, 3 overheat, 4 dead, 5 over-voltage, 6 failure, 7 cold.
    pub health: Option<u8>,
    /// On external power: any of `AC`, `USB`, `Wireless` or `Dock powered` is
    /// `true`; `None` when the dump names none of them.
    pub powered: Option<bool>,
    /// The values were faked with `dumpsys battery set`.
    pub updates_stopped: bool,
}

pub fn parse(text: &str) -> Result<Battery, ParseError> {
    let mut lines = text.lines().map(|l| l.trim_end_matches('\r'));
    if !lines.by_ref().any(|l| l.trim() == HEADER) {
        return Err(ParseError::new(
            WHAT,
            format!("no {HEADER:?} header in {}", excerpt(text)),
        ));
    }

    let mut level: Option<f64> = None;
    let mut scale: Option<f64> = None;
    let mut present = true;
    let mut battery = Battery {
        percent: None,
        temperature_celsius: None,
        voltage_mv: None,
        status: None,
        health: None,
        powered: None,
        updates_stopped: false,
    };
    // The first line of the block decides its layout.
    let mut indented: Option<bool> = None;
    for line in lines {
        if line.trim().is_empty() {
            continue;
        }
        let this_indented = line.starts_with(char::is_whitespace);
        let layout = *indented.get_or_insert(this_indented);
        if layout && !this_indented {
            break;
        }
        let line = line.trim();
        if !layout && !line.starts_with("(UPDATES STOPPED") {
            let is_pair = line
                .split_once(':')
                .is_some_and(|(k, v)| !k.trim().is_empty() && !v.trim().is_empty());
            if !is_pair {
                break;
            }
        }
        if line.starts_with("(UPDATES STOPPED") {
            battery.updates_stopped = true;
            continue;
        }
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        let number = |unit: &str| -> Result<f64, ParseError> {
            value
                .parse::<f64>()
                .ok()
                .filter(|v| v.is_finite())
                .ok_or_else(|| {
                    ParseError::new(WHAT, format!("{key} {} is not {unit}", excerpt(value)))
                })
        };
        match key.trim() {
            "level" => level = Some(number("a number")?),
            "scale" => scale = Some(number("a number")?),
            "present" => present = value != "false",
            "temperature" => battery.temperature_celsius = Some(number("tenths of °C")? / 10.0),
            "voltage" => battery.voltage_mv = Some(small_int(key, value)?),
            "status" => battery.status = Some(small_int(key, value)?),
            "health" => battery.health = Some(small_int(key, value)?),
            "AC powered" | "USB powered" | "Wireless powered" | "Dock powered" => {
                let on = match value {
                    "true" => true,
                    "false" => false,
                    _ => {
                        return Err(ParseError::new(
                            WHAT,
                            format!("{key} {} is not true or false", excerpt(value)),
                        ))
                    }
                };
                battery.powered = Some(battery.powered.unwrap_or(false) || on);
            }
            _ => {}
        }
    }

    let level = level.ok_or_else(|| ParseError::new(WHAT, "no level line"))?;
    let scale = scale.unwrap_or(100.0);
    battery.percent = (present && scale > 0.0).then(|| 100.0 * level / scale);
    Ok(battery)
}

fn small_int<T: std::str::FromStr>(key: &str, value: &str) -> Result<T, ParseError> {
    value.parse::<T>().map_err(|_| {
        ParseError::new(
            WHAT,
            format!("{key} {} is not a small whole number", excerpt(value)),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn power_is_any_of_the_three_sources_and_must_be_a_boolean() {
        let dump = |ac: &str, usb: &str| {
            format!("Current Battery Service state:\n  AC powered: {ac}\n  USB powered: {usb}\n  level: 50\n")
        };
        assert_eq!(parse(&dump("false", "true")).unwrap().powered, Some(true));
        assert_eq!(parse(&dump("false", "false")).unwrap().powered, Some(false));
        assert_eq!(
            parse("Current Battery Service state:\n  level: 50\n")
                .unwrap()
                .powered,
            None
        );
        let e = parse(&dump("maybe", "true")).unwrap_err();
        assert!(e.to_string().contains("AC powered"), "{e}");
    }

    #[test]
    fn a_block_at_column_0_is_read_up_to_the_next_section() {
        let b = parse(include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/adb/battery_flush_left.txt"
        )))
        .unwrap();
        assert_eq!(b.percent, Some(75.0));
        assert_eq!(b.temperature_celsius, Some(29.5));
        assert_eq!(b.voltage_mv, Some(4012));
        assert_eq!(b.status, Some(2));
        assert_eq!(b.health, Some(2));
    }

    #[test]
    fn the_indented_layout_still_stops_at_the_first_flush_line() {
        let text = "Current Battery Service state:\n  level: 40\nOEM:\n  level: 99\n";
        assert_eq!(parse(text).unwrap().percent, Some(40.0));
        let flush = "Current Battery Service state:\nlevel: 41\nOEM section:\nlevel: 99\n";
        assert_eq!(parse(flush).unwrap().percent, Some(41.0));
    }

    #[test]
    fn modern_phone() {
        let b = parse(include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/adb/battery_android14.txt"
        )))
        .unwrap();
        assert_eq!(
            b,
            Battery {
                percent: Some(85.0),
                temperature_celsius: Some(26.5),
                voltage_mv: Some(4213),
                status: Some(2),
                health: Some(2),
                powered: Some(true),
                updates_stopped: false,
            }
        );
    }

    #[test]
    fn oem_trailer_is_ignored_and_updates_stopped_is_seen() {
        let b = parse(include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/adb/battery_oem_trailer.txt"
        )))
        .unwrap();
        assert_eq!(b.percent, Some(12.0));
        assert_eq!(b.temperature_celsius, Some(44.5));
        assert_eq!(b.status, Some(3));
        assert!(b.updates_stopped);
    }

    #[test]
    fn old_voltage_form_without_space() {
        let b = parse(
            "Current Battery Service state:\n  level: 50\n  voltage:4123\n  temperature:300\n",
        )
        .unwrap();
        assert_eq!(b.voltage_mv, Some(4123));
        assert_eq!(b.temperature_celsius, Some(30.0));
    }

    #[test]
    fn percent_uses_scale() {
        let b = parse("Current Battery Service state:\n  level: 25\n  scale: 200\n").unwrap();
        assert_eq!(b.percent, Some(12.5));
    }

    #[test]
    fn missing_scale_means_100() {
        let b = parse("Current Battery Service state:\n  level: 40\n").unwrap();
        assert_eq!(b.percent, Some(40.0));
        assert_eq!(b.temperature_celsius, None);
        assert_eq!(b.voltage_mv, None);
    }

    #[test]
    fn zero_scale_gives_no_percent() {
        let b = parse("Current Battery Service state:\n  level: 40\n  scale: 0\n").unwrap();
        assert_eq!(b.percent, None);
    }

    #[test]
    fn absent_battery_gives_no_percent() {
        let b = parse("Current Battery Service state:\n  present: false\n  level: 0\n").unwrap();
        assert_eq!(b.percent, None);
    }

    #[test]
    fn negative_temperature() {
        let b = parse("Current Battery Service state:\n  level: 40\n  temperature: -52\n").unwrap();
        assert_eq!(b.temperature_celsius, Some(-5.2));
    }

    #[test]
    fn crlf_output() {
        let b = parse("Current Battery Service state:\r\n  level: 61\r\n  scale: 100\r\n  temperature: 310\r\n").unwrap();
        assert_eq!(b.percent, Some(61.0));
        assert_eq!(b.temperature_celsius, Some(31.0));
    }

    #[test]
    fn no_level_line_is_an_error() {
        let e = parse("Current Battery Service state:\n  scale: 100\n").unwrap_err();
        assert_eq!(e.to_string(), "dumpsys battery: no level line");
    }

    #[test]
    fn level_after_the_trailer_does_not_count() {
        let e =
            parse("Current Battery Service state:\n  scale: 100\nOEM:\n  level: 50\n").unwrap_err();
        assert_eq!(e.detail, "no level line");
    }

    #[test]
    fn missing_header_is_an_error() {
        let e = parse("Can't find service: battery\n").unwrap_err();
        assert!(
            e.detail
                .contains("no \"Current Battery Service state:\" header"),
            "{e}"
        );
        assert!(e.detail.contains("Can't find service"), "{e}");
    }

    #[test]
    fn bad_number_is_an_error_naming_the_key() {
        let e = parse("Current Battery Service state:\n  level: lots\n").unwrap_err();
        assert_eq!(e.detail, "level \"lots\" is not a number");
        let e = parse("Current Battery Service state:\n  level: 5\n  status: 300\n").unwrap_err();
        assert!(e.detail.starts_with("status \"300\""), "{e}");
    }

    #[test]
    fn garbage_never_panics() {
        for text in &crate::devices::parse::tests_support::hostile() {
            let _ = parse(text);
        }
    }
}
