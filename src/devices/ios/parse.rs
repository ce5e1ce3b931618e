//! Pure parsers for what libimobiledevice's tools print on stdout.
//!
//! - `idevice_id -l`: one UDID per line (`00008030-001A2D3E0E38802E`, or the 40 hex
//!   digits of older phones). Releases that also list network phones add ` (USB)` or
//!   ` (Network)` after the UDID; only the first word counts.
//! - `ideviceinfo -u <udid> [-q <domain>] -k <key>`: the value alone, then a newline
//!   (`iPhone14,2`, `17.1`, `87`). When lockdownd has no such value the tool prints
//!   nothing and still exits 0, which is why an empty answer is an error here.
//!
//! Failures of the tools themselves (non-zero exit, `ERROR: ...` texts) are the runner's
//! business, not this module's. Must not: do I/O, log, or know which phone the text came
//! from (the caller adds the UDID when it reports the error).

use crate::devices::parse::{excerpt, ParseError};

/// The UDIDs `idevice_id -l` listed, sorted and distinct (a phone on USB and on the
/// network appears twice with the newer tools). An empty output is an empty list: the
/// tool reports a missing usbmuxd through its exit code, not through its stdout.
pub fn device_list(stdout: &str) -> Result<Vec<String>, ParseError> {
    let mut udids = Vec::new();
    for line in stdout.lines() {
        let Some(udid) = line.split_whitespace().next() else {
            continue;
        };
        if !udid.chars().all(|c| c.is_ascii_hexdigit() || c == '-')
            || !udid.contains(|c: char| c.is_ascii_hexdigit())
        {
            return Err(ParseError::new(
                "idevice_id -l",
                format!(
                    "expected one UDID (hex digits and dashes) per line, got {}",
                    excerpt(line)
                ),
            ));
        }
        udids.push(udid.to_string());
    }
    udids.sort();
    udids.dedup();
    Ok(udids)
}

/// The value `ideviceinfo -k <key>` printed: one non-empty line, trimmed.
pub fn value(key: &'static str, stdout: &str) -> Result<String, ParseError> {
    let trimmed = stdout.trim();
    if trimmed.is_empty() {
        return Err(ParseError::new(
            key,
            "no value: the phone did not report it (ideviceinfo printed nothing)",
        ));
    }
    if trimmed.contains('\n') {
        return Err(ParseError::new(
            key,
            format!("expected a single line, got {}", excerpt(trimmed)),
        ));
    }
    Ok(trimmed.to_string())
}

/// `BatteryCurrentCapacity`: a whole percentage, 0 to 100.
pub fn battery_percent(stdout: &str) -> Result<u8, ParseError> {
    const KEY: &str = "BatteryCurrentCapacity";
    let text = value(KEY, stdout)?;
    match text.parse::<u8>() {
        Ok(percent) if percent <= 100 => Ok(percent),
        _ => Err(ParseError::new(
            KEY,
            format!(
                "expected a whole percentage 0..=100, got {}",
                excerpt(&text)
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::parse::tests_support::hostile;

    #[test]
    fn list_of_several_phones() {
        let out = "00008030-001A2D3E0E38802E\n00008101-000C19A82E10001E\nabcdef0123456789abcdef0123456789abcdef01\n";
        assert_eq!(
            device_list(out).unwrap(),
            vec![
                "00008030-001A2D3E0E38802E",
                "00008101-000C19A82E10001E",
                "abcdef0123456789abcdef0123456789abcdef01",
            ]
        );
    }

    #[test]
    fn list_ignores_blank_lines_and_carriage_returns() {
        let out = "\n00008030-001A2D3E0E38802E\r\n\n   \n";
        assert_eq!(device_list(out).unwrap(), vec!["00008030-001A2D3E0E38802E"]);
    }

    #[test]
    fn empty_list_is_no_phone() {
        assert_eq!(device_list("").unwrap(), Vec::<String>::new());
    }

    #[test]
    fn list_with_connection_suffixes_counts_each_phone_once() {
        let out = "00008030-001A2D3E0E38802E (USB)\n00008030-001A2D3E0E38802E (Network)\n";
        assert_eq!(device_list(out).unwrap(), vec!["00008030-001A2D3E0E38802E"]);
    }

    #[test]
    fn list_with_an_error_text_on_stdout_is_an_error() {
        let e = device_list("ERROR: Unable to retrieve device list!\n").unwrap_err();
        assert_eq!(e.what, "idevice_id -l");
        assert!(e.detail.contains("\"ERROR: Unable"), "{e}");
        assert!(device_list("-\n").is_err());
    }

    #[test]
    fn value_is_trimmed() {
        assert_eq!(value("ProductType", "iPhone14,2\n").unwrap(), "iPhone14,2");
        assert_eq!(value("ProductVersion", "  17.1 \r\n").unwrap(), "17.1");
    }

    #[test]
    fn empty_value_is_an_error_naming_the_key() {
        for out in ["", "\n", "  \r\n"] {
            let e = value("ProductType", out).unwrap_err();
            assert_eq!(e.what, "ProductType");
            assert!(e.detail.starts_with("no value"), "{e}");
        }
    }

    #[test]
    fn value_on_several_lines_is_an_error() {
        assert!(value("ProductType", "iPhone14,2\niPhone15,3\n").is_err());
    }

    #[test]
    fn battery_percentages() {
        assert_eq!(battery_percent("87\n").unwrap(), 87);
        assert_eq!(battery_percent("0\n").unwrap(), 0);
        assert_eq!(battery_percent("100\n").unwrap(), 100);
    }

    #[test]
    fn battery_out_of_range_or_not_a_number_is_an_error() {
        for out in [
            "101\n",
            "-1\n",
            "87.5\n",
            "full\n",
            "",
            "256\n",
            "99999999999\n",
        ] {
            let e = battery_percent(out).unwrap_err();
            assert_eq!(e.what, "BatteryCurrentCapacity", "{out:?}");
        }
    }

    #[test]
    fn hostile_inputs_never_panic() {
        for text in hostile() {
            let _ = device_list(&text);
            let _ = value("ProductType", &text);
            let _ = battery_percent(&text);
        }
    }
}
